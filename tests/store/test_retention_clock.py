"""History retention after the wall clock jumped (invariant 12): a pass prunes every line older than
the cutoff, whatever order the clock wrote them in, and each of its writes costs the writer what it
deletes, not the history's size.

A node whose clock ran ahead (a wrong RTC at boot, until NTP stepped it back) records lines dated
in the future before lines of the right time: in id order (the order lines were recorded) the
oldest lines by time come after them. Walking the ids, every batch of a pass scanned those future
lines again before reaching one it could delete: with the default 1,000,000 lines, tens to
hundreds of milliseconds of the writer per batch of 100, ADDs and DELs queued behind it; and a
line older than the cutoff but recorded after the newest one (a backward step) waited for the
next pass. The work is counted in SQLite's virtual machine steps (its progress handler), not in
time.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.store import retention
from app.store.database import Database

NOW = datetime(2026, 3, 1, tzinfo=UTC)
FUTURE_LINES = 40_000
"""Lines recorded while the clock was a year ahead."""
STEPS_PER_CALL = 1_000
"""SQLite virtual machine steps between two calls of the progress handler."""

_COLUMNS = (
    'at, command, step, "trigger", outcome, container_id, netns, ifname, network_name, plugin_types,'
    " pod_namespace, pod_name, pod_uid, ips, macs"
)


def _line(at: datetime, index: int) -> tuple[str, ...]:
    naive = at.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
    return (
        naive,
        "ADD",
        "request",
        "runtime",
        "success",
        f"c{index}",
        "",
        "eth0",
        "net",
        "bridge",
        "ns",
        "pod",
        "uid",
        "[]",
        "[]",
    )


def _record(path: Path, lines: list[tuple[str, ...]]) -> None:
    with sqlite3.connect(path) as raw:
        raw.executemany(f"INSERT INTO history ({_COLUMNS}) VALUES ({', '.join('?' * 15)})", lines)


def _ages(path: Path) -> list[str]:
    with sqlite3.connect(path) as raw:
        return [str(at) for (at,) in raw.execute("SELECT at FROM history ORDER BY id")]


def _count_writer_steps(db: Database) -> list[int]:
    """Have the writer's connection count its virtual machine steps (in thousands) from now on."""
    calls = [0]

    def count() -> int:
        calls[0] += 1
        return 0  # go on

    def install(connection: Any) -> None:
        connection.set_progress_handler(count, STEPS_PER_CALL)

    db.write_sync(install)
    calls[0] = 0
    return calls


async def test_a_pass_after_the_clock_ran_ahead_costs_the_writer_what_it_deletes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Database.open(path).close()
    ahead = [_line(NOW + timedelta(days=365, seconds=index), index) for index in range(FUTURE_LINES)]
    old = [
        _line(NOW - timedelta(days=40) + timedelta(seconds=index), FUTURE_LINES + index)
        for index in range(300)
    ]
    recent = [_line(NOW - timedelta(minutes=index), FUTURE_LINES + 300 + index) for index in range(10)]
    _record(path, ahead + old + recent)
    db = Database.open(path)
    try:
        steps = _count_writer_steps(db)

        report = await retention.prune(
            db, retention.Retention(max_age=timedelta(days=30), max_rows=None), now=NOW
        )

        assert report.deleted_by_age == 300
        assert report.batches == 4
        assert steps[0] * STEPS_PER_CALL < FUTURE_LINES // 2, (
            f"the pass's 4 writes took {steps[0] * STEPS_PER_CALL} steps: the future lines were walked"
        )
    finally:
        db.close()
    assert len(_ages(path)) == FUTURE_LINES + 10


async def test_a_line_older_than_the_cutoff_recorded_after_a_newer_one_goes_in_the_same_pass(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    Database.open(path).close()
    # the clock stepped back two months between the first two lines
    _record(path, [_line(NOW - timedelta(days=31), 0), _line(NOW - timedelta(days=90), 1), _line(NOW, 2)])
    db = Database.open(path)
    try:
        report = await retention.prune(
            db, retention.Retention(max_age=timedelta(days=30), max_rows=None), now=NOW
        )
    finally:
        db.close()

    assert report.deleted_by_age == 2
    assert _ages(path) == [NOW.replace(tzinfo=None).isoformat(" ")]
