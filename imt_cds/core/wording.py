"""How a fact's value and a finding's reason read in text.

One wording for every renderer (the consult note, the HTML report, the FHIR narratives, the CDS Hooks cards and
``rules why``), so that a reader who meets a rationale in the EHR and again in an audit report sees the same sentence.
Renderers that add markup (Markdown, HTML) escape these strings themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["derived_index", "display_value", "enum_words", "plural", "reason_text"]


def display_value(value: Any) -> str:
    """A fact's value as a reader expects it: ``true``/``false``, ``3`` for 3.0, sets in braces, and "null" said
    to mean not recorded (the rules' own wording is ``= null``)."""
    if value is None:
        return "null (not recorded)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        return "{" + ", ".join(map(str, value)) + "}" if value else "{} (none recorded)"
    return str(value)


def derived_index(document: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    """An assessment document's derived facts by name (a name derived for several reasons has several), in document
    order: how a renderer unfolds a reason ``X holds`` into the facts that derived X."""
    index: dict[str, list[Mapping[str, Any]]] = {}
    for fact in document["derived_facts"]:
        index.setdefault(fact["name"], []).append(fact)
    return index


def reason_text(reason: Mapping[str, Any], *, fact: Callable[[str], str] = str,
                value: Callable[[Any], str] = display_value, text: Callable[[str], str] = str) -> str:
    """One reason of a finding or derived fact, in its JSON form (``Reason.to_dict()``), as a sentence.

    A renderer that adds markup passes formatters, so that the sentence stays the same words: ``fact`` for the
    identifiers (a fact's path, a parameter's name), ``value`` for the fact's value (given the raw value; the default
    is ``display_value``), ``text`` for the rest that comes from data (the rule's test, a derived fact's reasons)."""
    if "fact" in reason:
        parameter = f", parameter {fact(reason['parameter'])}" if reason.get("parameter") else ""
        return (f"{fact(reason['fact'])} is {value(reason['actual'])} (rule needs {text(reason['expected'])}"
                f"{parameter})")
    if reason.get("holds"):
        why = f": {', '.join(text(r) for r in reason['reasons'])}" if reason.get("reasons") else ""
        return f"{reason['derived']} holds{why}"
    return f"{reason['derived']} does not hold (required to be absent)"


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """``1 flag``, ``2 flags``, ``0 flags`` (``plural_noun`` for irregular plurals)."""
    return f"{count} {noun if count == 1 else plural_noun or noun + 's'}"


# Enum values whose words are not the value with spaces for underscores.
_ENUM_WORDS = {"abdominal_pelvic": "abdominal/pelvic", "head_neck": "head and neck"}


def enum_words(value: str) -> str:
    """An enum value of the input contract as words in a sentence (``resectable_only_with_mutilation`` ->
    ``resectable only with mutilation``). Reasons keep the raw value, which is what the rule tests name."""
    return _ENUM_WORDS.get(value, value.replace("_", " "))
