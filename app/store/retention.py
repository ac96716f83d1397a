"""History retention: delete lines older than ``historyMaxAgeHours`` and beyond ``historyMaxRows``.

Run by the daemon in the background (``prune``, one pass at a time; the daemon repeats it every
``historyPruneIntervalSeconds``). Finding what to delete is a read on a reader thread; deleting is a
series of small writes, ``batch`` oldest lines each, so an attach never waits behind more than one
batch in the writer's queue (the writer commits a batch together with whatever it has queued,
without weakening durability). Only the history table is touched: the checkpoint (sandboxes,
attachments), ``removed_attachments`` (GC's proof that a leftover lease is ours, so pruning a
container's lines never leaks its lease) and the mirror are never pruned here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from app.store import history
from app.store.database import Database

BATCH = 100
"""Lines deleted per write: about 2.5 ms of the writer's time on a million-row history (bench.history)."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history to keep; None for no bound."""

    max_age: timedelta | None
    max_rows: int | None
    batch: int = BATCH

    @classmethod
    def from_limits(cls, *, max_age_hours: float, max_rows: int) -> Retention:
        """From daemon-config's ``historyMaxAgeHours`` and ``historyMaxRows`` (0: unbounded).

        An age longer than ``timedelta`` can hold (some 2.7 million years) bounds nothing: None."""
        return cls(
            max_age=_age(max_age_hours) if max_age_hours > 0 else None,
            max_rows=max_rows if max_rows > 0 else None,
        )


def _age(hours: float) -> timedelta | None:
    try:
        return timedelta(hours=hours)
    except OverflowError:
        return None


@dataclass(frozen=True, slots=True)
class PruneReport:
    deleted_by_age: int
    deleted_by_rows: int
    batches: int
    duration_ms: float
    finished_at: datetime

    def as_json(self) -> dict[str, object]:
        return {
            "at": self.finished_at.isoformat().replace("+00:00", "Z"),
            "deletedByAge": self.deleted_by_age,
            "deletedByRows": self.deleted_by_rows,
            "batches": self.batches,
            "durationMs": round(self.duration_ms, 3),
        }


async def prune(
    db: Database,
    retention: Retention,
    *,
    now: datetime | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> PruneReport:
    """One retention pass: lines older than ``max_age`` (from ``now``), then those beyond
    ``max_rows``, oldest first, ``retention.batch`` per write. ``stop`` is asked between writes."""
    started = time.monotonic()
    by_age = by_rows = batches = 0
    cutoff = None if retention.max_age is None else _cutoff(now or datetime.now(UTC), retention.max_age)
    if cutoff is not None:
        bound = await db.read(partial(history.last_id_if_any_before, cutoff=cutoff))
        if bound is not None:
            by_age, count = await _delete_up_to(db, bound, before=cutoff, batch=retention.batch, stop=stop)
            batches += count
    if retention.max_rows is not None and not stop():
        bound = await db.read(partial(history.last_id_beyond, max_rows=retention.max_rows))
        if bound is not None:
            by_rows, count = await _delete_up_to(db, bound, before=None, batch=retention.batch, stop=stop)
            batches += count
    return PruneReport(
        deleted_by_age=by_age,
        deleted_by_rows=by_rows,
        batches=batches,
        duration_ms=(time.monotonic() - started) * 1000,
        finished_at=datetime.now(UTC),
    )


def _cutoff(now: datetime, max_age: timedelta) -> datetime | None:
    """The time before which lines are older than ``max_age``; None when that is before year 1
    (``historyMaxAgeHours`` of more than 2,000 years): no line is that old."""
    try:
        return now - max_age
    except OverflowError:
        return None


async def _delete_up_to(
    db: Database, bound: int, *, before: datetime | None, batch: int, stop: Callable[[], bool]
) -> tuple[int, int]:
    """Delete lines up to id ``bound``, one batch per write; return (lines deleted, writes)."""
    deleted = writes = 0
    while not stop():
        count = await db.write(
            partial(history.delete_oldest, up_to_id=bound, before=before, batch=batch), durable=False
        )
        writes += 1
        deleted += count
        if count < batch:
            break
        await asyncio.sleep(0)  # let queued attaches reach the writer before the next batch
    return deleted, writes
