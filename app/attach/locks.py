"""One operation per sandbox at a time: per-container-ID locks.

ADD, DEL, CHECK, recovery and GC for the same container ID never interleave (CNI spec; our
invariant 9); different sandboxes proceed in parallel. GC asks ``busy`` to skip sandboxes with an
operation in flight, and the runtime's CNI GC asks ``operations_seen`` for those with one in flight
at any moment of its pass. Locks exist only while someone holds or waits for them, so memory stays
flat.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager


class SandboxLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        self._watchers: list[set[str]] = []

    @asynccontextmanager
    async def hold(self, container_id: str) -> AsyncIterator[None]:
        """Hold the lock of ``container_id`` for the duration of the block."""
        lock = self._locks.setdefault(container_id, asyncio.Lock())
        self._users[container_id] = self._users.get(container_id, 0) + 1
        for seen in self._watchers:
            seen.add(container_id)
        try:
            async with lock:
                yield
        finally:
            self._users[container_id] -= 1
            if self._users[container_id] == 0:
                del self._users[container_id]
                del self._locks[container_id]

    @asynccontextmanager
    async def hold_all(self, container_ids: Collection[str]) -> AsyncIterator[None]:
        """Hold the locks of all of ``container_ids`` for the block, taken one after another in
        sorted order. Only one caller takes more than one (start-up recovery, as it kills the
        plugins an earlier run left): with every other holder taking a single lock, no wait can
        close a circle."""
        async with AsyncExitStack() as held:
            for container_id in sorted(container_ids):
                await held.enter_async_context(self.hold(container_id))
            yield

    def busy(self, container_id: str) -> bool:
        """True while an operation on ``container_id`` runs or waits."""
        return container_id in self._users

    @contextmanager
    def operations_seen(self) -> Iterator[set[str]]:
        """Within the block, a set of the container IDs with an operation running or waiting when it
        began, to which every container ID whose operation begins while it lasts is added."""
        seen = set(self._users)
        self._watchers.append(seen)
        try:
            yield seen
        finally:
            # by identity: two passes' sets may be equal (both empty on an idle node), and
            # ``list.remove`` would drop the other pass's
            self._watchers = [watcher for watcher in self._watchers if watcher is not seen]

    def __len__(self) -> int:
        return len(self._users)
