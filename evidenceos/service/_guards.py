"""In-memory guards for work that must not run twice at once in this daemon (one daemon owns a
data dir, so process memory is enough), and a small LRU for memoised pure results."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from evidenceos.errors import Aborted


class InflightSet:
    def __init__(self) -> None:
        self._held: set[Hashable] = set()
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, token: Hashable, busy_message: str) -> Iterator[None]:
        """Run the block holding ``token``; a second holder meanwhile gets ABORTED."""
        with self._lock:
            if token in self._held:
                raise Aborted(busy_message)
            self._held.add(token)
        try:
            yield
        finally:
            with self._lock:
                self._held.discard(token)


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A thread-safe LRU of at most ``size`` entries, for results of pure functions of the key
    (so an entry can never be stale: the same key always had the same value)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
