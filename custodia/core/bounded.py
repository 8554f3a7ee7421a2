"""A small per-process map that forgets its oldest entries beyond a size (thread-safe)."""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock
from typing import Generic, TypeVar

V = TypeVar("V")


class Bounded(Generic[V]):
    """Entries by key, at most ``size`` of them: the oldest insertion goes first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, V] = OrderedDict()
        self._lock = Lock()

    def get(self, key: str) -> V | None:
        """Return the entry under ``key`` (None if there is none)."""
        return self._items.get(key)

    def put(self, key: str, value: V) -> None:
        """Store ``value`` under ``key``, forgetting the oldest entries beyond the size."""
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def forget(self, key: str) -> None:
        """Drop the entry under ``key`` if there is one."""
        with self._lock:
            self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)
