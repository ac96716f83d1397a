"""Wake-ups for callers waiting for one object to reach the mirror.

The pod source registers interest in a (namespace, name) before it reads the mirror, so nothing
committed in between is missed; the mirror writer calls ``arrived`` with the keys it has just
committed. Waiting is on an asyncio.Event, never a polling sleep. Only keys someone waits for
cost anything; no I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from app.store.mirror_records import ObjectKey


class Arrivals:
    def __init__(self) -> None:
        self._waiting: dict[ObjectKey, set[asyncio.Event]] = {}

    @contextmanager
    def expect(self, key: ObjectKey) -> Iterator[asyncio.Event]:
        """An event set once ``key`` has been written to the mirror (while the block runs)."""
        event = asyncio.Event()
        self._waiting.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiting.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiting[key]

    def arrived(self, keys: Iterable[ObjectKey]) -> None:
        if not self._waiting:
            return
        for key in keys:
            for event in self._waiting.get(key, ()):
                event.set()

    @property
    def waiting(self) -> int:
        return sum(len(waiters) for waiters in self._waiting.values())
