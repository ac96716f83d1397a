"""Writing what one watch saw into the SQLite mirror, and telling whoever waits for it.

A ``MirrorWriter`` belongs to one watch loop. Each relist snapshot and each batch of watch
events becomes ONE unit of work on the store's single writer, together with the watch's new
resourceVersion: the stored position never runs ahead of the stored objects, so a daemon killed
at any point resumes without missing a change. After the commit it updates the ``MirrorState``
and wakes ``Arrivals`` waiters. It holds the current position in memory (``resource_version``);
it never talks to the API and never decides when to relist.

An event that changes nothing the mirror keeps (most often the echo of the daemon's own
network-status PATCH: only the pod's resourceVersion moved) is not written. Such events, and
bookmarks, only move the position, and a position alone is persisted at most every
``WatchSettings.position_persist_interval`` seconds: a daemon killed meanwhile resumes slightly
earlier and sees those events again, which changes nothing. This keeps an fsync'd commit per ADD
off the single writer that the checkpoints share.

The writer also holds in memory every record the mirror holds in its scope, exactly as committed
(``held``): the pod and NAD sources answer an ADD from it without a read of the store. Until a
relist has been written since start-up (a watch resumed from a stored position), it knows only
the objects it has seen written or skipped since, and ``held`` says when the store must be asked.

Last, it keeps the *sightings*: objects a live GET found (an ADD's pod the watch had not brought
yet) while the mirror held no such object, or held a predecessor of another UID. The watch is then
behind the API, and the mirror's silence about that pod proves nothing (invariant 10): GC is told
of the sighting as of a mirrored pod. A sighting ends once the watch has caught up with it: an
event of that object with its UID is received (its later deletion then reaches the mirror in
order), or a relist whose LIST began after the GET answered is written (it shows the pod as it is,
or its absence). Nor does one begin for an object the watch has already seen deleted: the GET's
answer is often handled after commits the watch made meanwhile (its ADDED and DELETED, even a
successor's ADDED), and such a sighting would hold a gone pod present, or hide its successor
behind the gone UID, until the next relist. A pod writer remembers the last
``RECENT_DELETIONS_KEPT`` pods (namespace, name, UID) its commits removed or replaced (an event,
or a relist that no longer shows them); a UID is never reused, so no order of resourceVersions is
needed to know that such a pod is gone for good. (Only pods are sighted: ``fetch_nad``'s answer
is never kept.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from app import metrics
from app.store import mirror
from app.store.database import Database, Work
from app.store.mirror_records import NadRecord, ObjectKey, PodRecord
from app.watch.arrivals import Arrivals
from app.watch.readiness import MirrorState
from app.watch.resources import Bookmark, Delete, Record, Upsert, WatchItem, WatchTarget

log = logging.getLogger(__name__)

S = TypeVar("S")

RECENT_DELETIONS_KEPT = 1024
"""Deleted objects a writer remembers to refuse a late sighting of (see the module's doc): far more
than a node's pods deleted while one GET's answer waits to be handled."""


def _together(units: Sequence[Callable[[S], object]]) -> Callable[[S], None]:
    """Several units of work as one, committed together."""

    def run(session: S) -> None:
        for unit in units:
            unit(session)

    return run


class MirrorWriter:
    def __init__(
        self,
        *,
        database: Database,
        target: WatchTarget,
        state: MirrorState,
        arrivals: Arrivals | None = None,
        persist_interval: float = 5.0,
        listeners: list[Callable[[str, str], None]] | None = None,
    ) -> None:
        self._db = database
        self._persist_interval = persist_interval
        self.target = target
        self.state = state
        self._arrivals = arrivals
        self.resource_version = ""
        """Where the next watch starts; empty: relist first."""
        self.writes = 0
        """Units committed so far: a loop that sees this grow made progress."""
        self.echoes_skipped = 0
        """Events not written because they changed nothing the mirror keeps."""
        self._known: dict[ObjectKey, Record] = {}
        """What the mirror holds of each object, as committed (this scope only)."""
        self._complete = False
        """``_known`` is all the mirror holds in this scope: a relist has been written since start."""
        self._persisted_at = 0.0
        self._listeners = listeners if listeners is not None else []
        """Called with (namespace, name) of every object a commit wrote (the daemon's hot-plug)."""
        self._sightings: dict[ObjectKey, tuple[Record, float]] = {}
        """Objects a live GET found that the watch has not caught up with: the record, and when
        (monotonic) the GET answered. One per name, so no more than the names asked for."""
        self._deleted: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        """(namespace, name, uid) of the last ``RECENT_DELETIONS_KEPT`` pods commits removed."""

    async def load_position(self) -> str:
        """The stored resourceVersion to resume from, or "" when the stored scope differs."""
        stored = await self._db.read(partial(mirror.get_watch_state, key=self.target.key))
        if stored is None or not stored.resource_version:
            self.resource_version = ""
        elif stored.scope != self.target.scope:
            log.info(
                "watch %s: stored scope %r differs from %r, relisting",
                self.target.key,
                stored.scope,
                self.target.scope,
            )
            self.resource_version = ""
        else:
            self.resource_version = stored.resource_version
        return self.resource_version

    def held(self, key: ObjectKey) -> tuple[bool, Record | None]:
        """What the mirror holds for ``key``, from memory: ``(True, record)``, ``(True, None)`` when
        the mirror holds no such object, or ``(False, None)`` when memory cannot tell (no relist
        written since start, and the object not seen since): then read the store."""
        record = self._known.get(key)
        return (record is not None or self._complete), record

    def note_sighting(self, record: Record, *, answered_at: float) -> None:
        """A live GET answered ``record`` at ``answered_at`` (``time.monotonic``): unless the mirror
        holds it already, it is a sighting until the watch catches up with it (``sightings``)."""
        if self.target.kind == "pods" and not isinstance(record, PodRecord):
            return
        if (
            isinstance(record, PodRecord)
            and self.target.node_name
            and record.node_name != self.target.node_name
        ):
            return  # not an object of this watch's scope: the mirror will never hold it
        held = self._known.get(record.key)
        if held is not None and held.uid == record.uid:
            return
        if (*record.key, record.uid) in self._deleted:
            return  # the watch has caught up with it already: it saw the object deleted
        self._sightings[record.key] = (record, answered_at)

    def sightings(self) -> list[Record]:
        """The objects live GETs found that the mirror does not hold yet (see the module's doc)."""
        return [record for record, _ in self._sightings.values()]

    def _note_gone(self, record: Record | None) -> None:
        """``record`` (when there is one) has left the mirror for good: remember it was deleted."""
        if record is None or not record.uid or self.target.kind != "pods":
            return  # only pods are ever sighted
        self._deleted[(*record.key, record.uid)] = None
        if len(self._deleted) > RECENT_DELETIONS_KEPT:
            self._deleted.popitem(last=False)

    def _note_replaced(self, before: Mapping[ObjectKey, Record], after: Mapping[ObjectKey, Record]) -> None:
        """Remember the objects of ``before`` that ``after`` no longer holds, or holds under another UID."""
        if self.target.kind != "pods":
            return
        for key, record in before.items():
            now = after.get(key)
            if now is None or now.uid != record.uid:
                self._note_gone(record)

    def _caught_up(self, records: Iterable[Record], *, listed_at: float | None = None) -> None:
        """End the sightings the watch has caught up with: ``records`` were received (by event or
        LIST), and a LIST that began at ``listed_at`` shows everything a GET answered before."""
        if not self._sightings:
            return
        for record in records:
            seen = self._sightings.get(record.key)
            if seen is not None and seen[0].uid == record.uid:
                del self._sightings[record.key]
        if listed_at is not None:
            for key, (_, answered_at) in list(self._sightings.items()):
                if answered_at <= listed_at:
                    del self._sightings[key]

    def forget_position(self) -> None:
        """The position expired (410) or the server has not reached it: the next start relists."""
        self.resource_version = ""

    async def write_snapshot(
        self, records: Sequence[Record], resource_version: str, *, listed_at: float | None = None
    ) -> None:
        """A complete relist: the mirror (in this target's scope) becomes exactly ``records``.

        ``listed_at``: when (``time.monotonic``) its LIST began, which ends the sightings of GETs
        answered before it; None ends none but those of objects ``records`` hold."""
        relisting = self._replace_unit(records)
        relisted = partial(
            mirror.record_relist,
            key=self.target.key,
            scope=self.target.scope,
            resource_version=resource_version,
            at=datetime.now(UTC),
        )

        def committed() -> None:
            self.resource_version = resource_version
            self.writes += 1
            self._persisted_at = time.monotonic()
            known = {record.key: record for record in records}
            self._note_replaced(self._known, known)
            self._known = known
            self._complete = True
            self._caught_up(records, listed_at=listed_at)
            self.state.note_relist(resource_version)
            metrics.WATCH_RELISTS.labels(self.target.kind).inc()
            metrics.MIRRORED_OBJECTS.labels(self.target.key).set(len(self._known))
            if self._arrivals is not None:
                self._arrivals.arrived(record.key for record in records)
            self._notify([record.key for record in records])

        await self._commit(_together([relisting, relisted]), then=committed)

    async def write_batch(self, items: Sequence[WatchItem]) -> None:
        """Apply watch events in order and move the position to the last item's resourceVersion."""
        if not items:
            return
        received = [item for item in items if not isinstance(item, Bookmark)]
        for item in items:
            metrics.WATCH_EVENTS.labels(self.target.kind, type(item).__name__.lower()).inc()
        changes = self._changes(received)
        self.echoes_skipped += len(received) - len(changes)
        position = items[-1].resource_version or self.resource_version
        upserted = [item.record for item in received if isinstance(item, Upsert)]
        if not changes and (
            position == self.resource_version
            or time.monotonic() - self._persisted_at < self._persist_interval
        ):
            self.resource_version = position
            self._caught_up(upserted)
            self.state.note_progress(position, events=len(received))
            return
        now = datetime.now(UTC)
        units: list[Callable[..., object]] = [self._change_unit(change) for change in changes]
        units.append(
            partial(
                mirror.record_progress,
                key=self.target.key,
                resource_version=position,
                events=len(changes),
                at=now if changes else None,
            )
        )

        def committed() -> None:
            self.resource_version = position
            self.writes += 1
            self._persisted_at = time.monotonic()
            for change in changes:
                if isinstance(change, Upsert):
                    held = self._known.get(change.record.key)
                    if held is not None and held.uid != change.record.uid:
                        self._note_gone(held)
                    self._known[change.record.key] = change.record
                else:
                    self._note_gone(self._known.pop(change.key, None))
            self._caught_up(upserted)
            metrics.MIRRORED_OBJECTS.labels(self.target.key).set(len(self._known))
            self.state.note_progress(position, events=len(received))
            if self._arrivals is not None:
                self._arrivals.arrived(change.record.key for change in changes if isinstance(change, Upsert))
            self._notify([change.record.key for change in changes if isinstance(change, Upsert)])

        await self._commit(_together(units), then=committed)

    async def _commit(self, unit: Work[None], *, then: Callable[[], None]) -> None:
        """Write ``unit``, then run ``then``; cancelled meanwhile, still finish both, then re-raise.

        The commit is shielded: cancelling a ``Database.write`` in flight cancels the writer's
        future, which the writer thread then fails to complete (and dies of). Finishing the commit
        and ``then`` keeps the in-memory position equal to the stored one, and leaves no task behind.
        """
        commit = asyncio.create_task(
            self._db.write(unit, durable=False),  # a cache of the API: losing it costs a relist
            name=f"watch.{self.target.key}.commit",
        )
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            await asyncio.wait([commit])
            if not commit.cancelled() and commit.exception() is None:
                then()
            raise
        then()

    def _notify(self, keys: Sequence[ObjectKey]) -> None:
        for listener in self._listeners:
            for namespace, name in keys:
                try:
                    listener(namespace, name)
                except Exception:  # a listener's bug must not stop the mirror
                    log.exception("mirror listener failed for %s/%s", namespace, name)

    def _changes(self, received: Sequence[Upsert | Delete]) -> list[Upsert | Delete]:
        """The events that change what the mirror holds, in order: an upsert carrying exactly what
        the mirror holds at that point (its resourceVersion aside) is an echo, and left out."""
        changes: list[Upsert | Delete] = []
        batch: dict[ObjectKey, Record | None] = {}  # what this batch's earlier changes leave held
        for item in received:
            if isinstance(item, Delete):
                batch[item.key] = None
                changes.append(item)
                continue
            record = item.record
            held = batch[record.key] if record.key in batch else self._known.get(record.key)
            if held is not None and replace(held, resource_version=record.resource_version) == record:
                continue
            batch[record.key] = record
            changes.append(item)
        return changes

    def _replace_unit(self, records: Sequence[Record]) -> Callable[..., object]:
        if self.target.kind == "pods":
            pods = [record for record in records if isinstance(record, PodRecord)]
            return partial(mirror.replace_pods, snapshot=pods)
        nads = [record for record in records if isinstance(record, NadRecord)]
        return partial(mirror.replace_nads, snapshot=nads, namespace=self.target.namespace)

    def _change_unit(self, change: Upsert | Delete) -> Callable[..., object]:
        if isinstance(change, Upsert):
            record = change.record
            if isinstance(record, PodRecord):
                return partial(mirror.upsert_pod, pod=record)
            return partial(mirror.upsert_nad, nad=record)
        return self._delete_unit(change.key)

    def _delete_unit(self, key: ObjectKey) -> Callable[..., object]:
        remove = mirror.delete_pod if self.target.kind == "pods" else mirror.delete_nad
        return partial(remove, namespace=key[0], name=key[1])
