"""In-memory guards for work that must not run twice at once in this daemon (one daemon owns a
data dir, so process memory is enough)."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

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
