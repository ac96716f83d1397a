"""One operation per sandbox at a time: per-container-ID locks.

ADD, DEL, CHECK, recovery and GC for the same container ID never interleave (CNI spec; our
invariant 9); different sandboxes proceed in parallel. GC asks ``busy`` to skip sandboxes with an
operation in flight. Locks exist only while someone holds or waits for them, so memory stays flat.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class SandboxLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, container_id: str) -> AsyncIterator[None]:
        """Hold the lock of ``container_id`` for the duration of the block."""
        lock = self._locks.setdefault(container_id, asyncio.Lock())
        self._users[container_id] = self._users.get(container_id, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[container_id] -= 1
            if self._users[container_id] == 0:
                del self._users[container_id]
                del self._locks[container_id]

    def busy(self, container_id: str) -> bool:
        """True while an operation on ``container_id`` runs or waits."""
        return container_id in self._users

    def __len__(self) -> int:
        return len(self._users)
