"""The watch cache: bounded per-resource change history, watchers, and fan-out of changes to them.

The store records every committed change here; each open watch request holds a ``Watcher`` whose
bounded queue this hub fills. Like the real API server's cacher, a watcher receives what its
namespace and selectors let through — an object that stops matching arrives as DELETED, one that
starts matching as ADDED — and a watcher that falls too far behind is closed rather than buffered
without end. A watch from a resourceVersion older than the retained history fails with 410
(``too old resource version``); one from a version not reached yet gets only the changes after it.
Synchronous, no I/O: the streaming handler awaits ``Watcher.wait``.
Part of the emulator, a test/demo tool.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from app.sandbox.objects import Change, StoredObject, watch_line
from app.sandbox.resources import Resource
from app.sandbox.selectors import FieldSelector, LabelSelector
from app.sandbox.status import too_old_resource_version

logger = logging.getLogger(__name__)

CloseReason = Literal["overflow", "dropped", "stopped", "finished"]


@dataclass(frozen=True, slots=True)
class WatchFilter:
    """What one watch request asked for."""

    resource: Resource
    namespace: str | None = None
    labels: LabelSelector = field(default_factory=LabelSelector)
    fields: FieldSelector = field(default_factory=FieldSelector)

    def matches(self, stored: StoredObject) -> bool:
        if self.namespace is not None and stored.namespace != self.namespace:
            return False
        metadata = stored.obj["metadata"]
        return self.labels.matches(metadata.get("labels")) and self.fields.matches(stored.obj)


class Watcher:
    """One open watch: pending watch lines (bounded) and a wake-up for the stream writing them."""

    def __init__(
        self, watch_filter: WatchFilter, *, queue_size: int, description: str = "", since: int = 0
    ) -> None:
        self.filter = watch_filter
        self.description = description
        self.since = since
        """Only changes newer than this are sent (as the cacher's watchers filter), even when this
        version lies in the future."""
        self._limit = queue_size
        self._pending: deque[bytes] = deque()
        self._wakeup = asyncio.Event()
        self.closed: CloseReason | None = None

    def __repr__(self) -> str:
        return f"<Watcher {self.filter.resource.plural} {self.description!r} closed={self.closed}>"

    def preload(self, lines: Iterable[bytes]) -> None:
        """Queue initial or replayed events; they raise the bound instead of counting against it."""
        before = len(self._pending)
        self._pending.extend(lines)
        self._limit += len(self._pending) - before

    def offer(self, change: Change) -> None:
        """Queue what this watcher sees of ``change``, given its filter (maybe nothing)."""
        if self.closed or change.resource_version <= self.since:
            return
        line = self.line_for(change)
        if line is None:
            return
        if len(self._pending) >= self._limit:
            logger.warning("closing watcher %r: %d events pending", self, len(self._pending))
            self.close("overflow")
            return
        self._pending.append(line)
        self._wakeup.set()

    def line_for(self, change: Change) -> bytes | None:
        """The watch line this watcher's filter makes of ``change``, or None when it sees nothing."""
        matches = self.filter.matches
        if change.type == "ADDED":
            return change.line if matches(change.obj) else None
        if change.type == "DELETED":
            return change.line if matches(change.obj) else None
        now_matches = matches(change.obj)
        before_matched = change.prev is not None and matches(change.prev)
        if now_matches and before_matched:
            return change.line
        if now_matches:
            return watch_line("ADDED", change.obj.raw)
        if before_matched and change.prev is not None:
            # As the cacher does: the previous content, stamped with this change's resourceVersion.
            return watch_line("DELETED", change.prev.at_resource_version(change.resource_version).raw)
        return None

    def drain(self) -> list[bytes]:
        lines = list(self._pending)
        self._pending.clear()
        return lines

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    async def wait(self) -> None:
        """Return once lines are pending or the watcher is closed."""
        if self._pending or self.closed:
            return
        self._wakeup.clear()
        await self._wakeup.wait()

    def close(self, reason: CloseReason) -> None:
        if self.closed is None:
            self.closed = reason
        self._wakeup.set()


class WatchHub:
    """Per-resource change history and the watchers subscribed to each resource."""

    def __init__(self, *, history_size: int, queue_size: int) -> None:
        self.history_size = history_size
        self.queue_size = queue_size
        self._history: dict[Resource, deque[Change]] = {}
        self._compacted: dict[Resource, int] = {}
        self._watchers: dict[Resource, set[Watcher]] = {}

    def compacted_resource_version(self, resource: Resource) -> int:
        """Every change of ``resource`` after this resourceVersion is still in the history."""
        return self._compacted.get(resource, 0)

    def changes_after(self, resource: Resource, resource_version: int) -> list[Change]:
        """The retained changes of ``resource`` newer than ``resource_version``, oldest first
        (complete only when ``resource_version`` is not older than the compacted version)."""
        history = self._history.get(resource, ())
        return [change for change in history if change.resource_version > resource_version]

    def record(self, change: Change, resource: Resource) -> None:
        """Append a committed change to the history and fan it out to the resource's watchers."""
        history = self._history.setdefault(resource, deque())
        history.append(change)
        while len(history) > self.history_size:
            self._compacted[resource] = history.popleft().resource_version
        for watcher in tuple(self._watchers.get(resource, ())):
            watcher.offer(change)

    def compact(self, resource_version: int) -> None:
        """Forget all history up to ``resource_version``, as etcd compaction does."""
        for resource in {*self._history, *self._compacted}:
            self._history[resource] = deque()
            self._compacted[resource] = resource_version

    def subscribe(
        self,
        watch_filter: WatchFilter,
        *,
        since: int | None,
        initial: Iterable[bytes] = (),
        description: str = "",
    ) -> Watcher:
        """A watcher that first gets ``initial`` lines, then changes after ``since`` (None: only new ones).

        Raises ``ApiError`` 410 (reason Expired) when ``since`` is older than the retained history.
        """
        resource = watch_filter.resource
        watcher = Watcher(watch_filter, queue_size=self.queue_size, description=description, since=since or 0)
        watcher.preload(initial)
        if since is not None:
            oldest = self.compacted_resource_version(resource)
            if since < oldest:
                raise too_old_resource_version(since, oldest)
            history = self._history.get(resource, ())
            replay = (watcher.line_for(change) for change in history if change.resource_version > since)
            watcher.preload(line for line in replay if line is not None)
        self._watchers.setdefault(resource, set()).add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        watcher.close("finished")
        self._watchers.get(watcher.filter.resource, set()).discard(watcher)

    def watchers(self) -> list[Watcher]:
        return [watcher for watchers in self._watchers.values() for watcher in watchers]

    def close_all(self, reason: CloseReason) -> int:
        """Close every watcher (their streams end); returns how many were open."""
        closed = 0
        for watcher in self.watchers():
            if watcher.closed is None:
                closed += 1
            watcher.close(reason)
        return closed
