"""A bounded, thread-safe LRU cache keyed by (canonical input sha256, rulebook sha256).

An EHR re-evaluates the same chart every time it is opened; the engine's answer for the same canonical input and
the same rulebook cannot differ (everything but ``evaluated_at`` is a pure function of the two), so it can be
reused. The engine stores the engine's firings for the key (the assessment is a pure function of facts and
firings). Off by default in the library (``Engine(cache_size=0)``); the batch command and the service turn it on.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import InvalidSettingError

__all__ = ["CacheStats", "MemoCache"]

V = TypeVar("V")


@dataclass(frozen=True)
class CacheStats:
    size: int
    capacity: int
    hits: int
    misses: int


class MemoCache(Generic[V]):
    def __init__(self, capacity: int):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise InvalidSettingError("capacity", capacity, "a whole number of entries, 1 or more")
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str], V] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get(self, key: tuple[str, str]) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return value

    def put(self, key: tuple[str, str], value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._entries), self._capacity, self._hits, self._misses)
