"""The engine's memo cache, pinned where mutation testing of core/memo.py found no test looking: the smallest
capacity, the values refused as a capacity (a boolean is not a number of entries), and its statistics as a value."""

from __future__ import annotations

import dataclasses

import pytest

from imt_cds.core.errors import InvalidSettingError
from imt_cds.core.memo import MemoCache


def test_a_cache_of_one_entry_is_allowed_and_keeps_the_latest():
    cache: MemoCache[str] = MemoCache(1)
    cache.put(("a", "r"), "first")
    cache.put(("b", "r"), "second")
    assert (cache.get(("a", "r")), cache.get(("b", "r"))) == (None, "second")
    assert cache.stats().size == 1 and cache.stats().capacity == 1


@pytest.mark.parametrize("capacity", [0, -1, True, False, 2.5, "8", None])
def test_a_cache_capacity_that_is_not_a_whole_number_of_one_or_more_is_refused(capacity):
    with pytest.raises(InvalidSettingError) as raised:
        MemoCache(capacity)
    assert (raised.value.name, raised.value.value) == ("capacity", capacity)
    assert str(raised.value) == f"capacity must be a whole number of entries, 1 or more, not {capacity!r}"


def test_the_cache_statistics_are_a_value_that_cannot_be_changed():
    stats = MemoCache(4).stats()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.hits = 5
