"""History retention with ages beyond the calendar: nothing is that old, so nothing is pruned by
age, and the pass (and the daemon's start-up, which builds the bounds) goes on without an error.

``historyMaxAgeHours`` takes any number >= 0 (0: kept). A very large one, an operator's "keep it
all" (99999999 hours, some 11,000 years), put the cutoff before year 1: every retention pass raised
``OverflowError`` (the daemon's task crashed each interval, nothing pruned by rows either); a
larger one (1e12) could not even be made a ``timedelta``, and the daemon failed at start-up.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from app.store import history, retention
from app.store.database import Database
from app.store.records import HistoryEntry, PodIdentity


def _history_of(path: Path, lines: int) -> Database:
    db = Database.open(path)
    for index in range(lines):
        entry = HistoryEntry(
            command="ADD",
            step="request",
            trigger="runtime",
            outcome="ok",
            container_id=f"{index:064d}",
            pod=PodIdentity("ns", f"pod{index}", "uid"),
            at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=index),
        )
        db.write_sync(partial(history.append, entry=entry))
    return db


def _rows(db: Database) -> int:
    return db.read_sync(lambda connection: history.summary(connection)[0])


@pytest.mark.parametrize("hours", [99_999_999.0, 1e12, float("inf")])
async def test_an_age_beyond_the_calendar_prunes_nothing_by_age_and_still_bounds_the_rows(
    tmp_path: Path, hours: float
) -> None:
    db = _history_of(tmp_path / "state.db", 5)
    try:
        limits = retention.Retention.from_limits(max_age_hours=hours, max_rows=3)

        report = await retention.prune(db, limits, now=datetime(2026, 6, 1, tzinfo=UTC))

        assert (report.deleted_by_age, report.deleted_by_rows) == (0, 2)
        assert _rows(db) == 3
    finally:
        db.close()


async def test_an_ordinary_age_still_prunes_the_older_lines(tmp_path: Path) -> None:
    db = _history_of(tmp_path / "state.db", 5)
    try:
        limits = retention.Retention.from_limits(max_age_hours=1, max_rows=0)

        report = await retention.prune(db, limits, now=datetime(2026, 1, 1, 1, 2, 30, tzinfo=UTC))

        assert (report.deleted_by_age, report.deleted_by_rows) == (3, 0), "lines at 0:00, 0:01, 0:02"
        assert _rows(db) == 2
    finally:
        db.close()
