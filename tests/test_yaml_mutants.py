"""Rule files are read without YAML 1.1's surprises, pinned where mutation testing of core/_yaml.py found no test
looking: a date stays the text it is written as (a rule or an example compares it as text), and the line of a node
is found for every kind of path."""

from __future__ import annotations

import pytest

from imt_cds.core._yaml import YAMLError, line_of, load_yaml


def test_dates_and_times_stay_text_and_only_true_and_false_are_booleans():
    assert load_yaml("d: 2024-05-29\nt: 2024-05-29T10:00:00Z\nb: no\nc: True\ne: off\n") == {
        "d": "2024-05-29", "t": "2024-05-29T10:00:00Z", "b": "no", "c": True, "e": "off"}


DOCUMENT = "# a comment first\nname: x\nrules:\n  - id: a\n    when: {all: [1, 2]}\n  - id: b\n"


def test_the_line_of_a_path_is_its_node_or_its_nearest_existing_ancestor():
    from imt_cds.core._yaml import line_of

    assert [line_of(DOCUMENT, path) for path in (None, "", "nothing", "name", "rules", "rules[1]", "rules[1].id",
                                                 "rules[5]", "rules[0].when.all[1]", "rules[0].nothing",
                                                 "rules.id", "name.first", "rules[0].when.all.x",
                                                 "nothing.rules", "rules[2]", "rules[0].nothing.id")] == [
        2, 2, 2, 2, 3, 6, 6, 3, 5, 4, 3, 2, 5, 2, 3, 4]  # a name inside a list or a scalar: the list's or scalar's line
    assert line_of("a: [", "a") is None and line_of("", "a") is None


def test_a_key_written_twice_is_refused_but_a_merge_key_may_override_and_equal_text_of_other_types_differs():
    import pytest
    import yaml

    with pytest.raises(yaml.YAMLError) as caught:
        load_yaml("a: 1\nb:\n  c: 1\n  c: 2\n")
    assert caught.value.problem_mark.line + 1 == 4 and "first on line 3" in caught.value.problem
    assert load_yaml("x: &x {a: 1}\ny:\n  <<: *x\n  a: 2\n") == {"x": {"a": 1}, "y": {"a": 2}}
    assert load_yaml("1: a\n'1': b\n") == {1: "a", "1": "b"}


def test_a_key_written_twice_after_a_merge_key_is_refused_and_so_is_a_merge_key_written_twice():
    with pytest.raises(YAMLError, match=r"the key 'b' is written twice in one mapping \(first on line 4\)"):
        load_yaml("x: &x {a: 1}\ny:\n  <<: *x\n  b: 1\n  b: 2\n")
    with pytest.raises(YAMLError, match=r"the key '<<' is written twice in one mapping \(first on line 4\)"):
        load_yaml("x: &x {a: 1}\nz: &z {c: 1}\ny:\n  <<: *x\n  <<: *z\n")
    # Several maps are merged with one merge key, and a merged key may still be overridden.
    assert load_yaml("x: &x {a: 1}\nz: &z {c: 1}\ny:\n  <<: [*x, *z]\n  a: 2\n")["y"] == {"a": 2, "c": 1}


@pytest.mark.parametrize("text", ["when: &w {all: [*w]}\n", "a: &a {b: *a}\n", "a: &a [1, *a]\n"])
def test_a_document_that_contains_itself_is_refused(text):
    with pytest.raises(YAMLError, match="recursive"):
        load_yaml(text)


def test_a_duplicate_after_a_key_that_is_not_text_is_still_named():
    """A complex key (`? [x]`) is refused by PyYAML anyway (a list cannot be a key); the keys after it are still
    checked, so the author is told about the duplicate too, not only about the complex key."""
    with pytest.raises(YAMLError, match=r"the key 'b' is written twice in one mapping \(first on line 3\)"):
        load_yaml("? [x]\n: 1\nb: 1\nb: 2\n")


def test_the_line_of_a_key_written_twice_is_that_of_the_first():
    """line_of reads the document without constructing it, so it meets duplicates the loader refuses; it points at
    the first, where the loader's message says the key was first written."""
    assert line_of("a: 1\nb: 2\na: 3\n", "a") == 1
