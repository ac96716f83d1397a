"""The state database's file put back at its path after it was replaced or its directory removed.

Real SQLite file and store threads, in this process (the daemon's periodic check is
``tests/e2e/test_state_file_removed.py``'s subject): what the open connection holds is written
back, a file that replaced it is kept beside it (the daemon's own, still in place, is not), every
connection reads the file put back (a read-only database of the same process's too, as the query
API's), and nothing is written while another process holds the lock a removed directory took with it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from app import metrics
from app.store.database import Connection, Database


def _add_pod(name: str) -> Callable[[Connection], None]:
    def add(connection: Connection) -> None:
        connection.execute(
            "INSERT INTO mirror_pods (namespace, name, uid, node_name, resource_version, annotations)"
            " VALUES ('ns', ?, 'uid', 'node', '1', '{}')",
            (name,),
        )

    return add


def _pods(connection: Connection) -> set[str]:
    return {row[0] for row in connection.execute("SELECT name FROM mirror_pods")}


def _failures() -> float:
    return (
        metrics.REGISTRY.get_sample_value("multus_py_store_file_restores_total", {"outcome": "failed"}) or 0.0
    )


def test_a_replaced_state_db_is_put_back_and_every_connection_reads_it(db: Database, db_path: Path) -> None:
    db.write_sync(_add_pod("before"))
    assert db.read_sync(_pods) == {"before"}  # a spare connection, on the file as it was
    stranger = db_path.with_name("other")
    stranger.write_bytes(b"not ours")
    os.rename(stranger, db_path)

    assert db.keep_file_in_place()

    db.write_sync(_add_pod("after"))
    assert db.read_sync(_pods) == {"before", "after"}
    assert asyncio.run(db.read(_pods)) == {"before", "after"}
    (displaced,) = db_path.parent.glob("state.db.displaced-*")
    assert displaced.read_bytes() == b"not ours"
    assert oct(db_path.stat().st_mode & 0o777) == "0o600"
    assert db.keep_file_in_place()  # nothing to do any more
    db.close()
    with closing(sqlite3.connect(db_path)) as connection:
        assert _pods(connection) == {"before", "after"}


def test_the_state_db_is_not_put_back_while_another_process_holds_the_new_lock(
    db: Database, db_path: Path
) -> None:
    db.write_sync(_add_pod("kept"))
    shutil.rmtree(db_path.parent)
    db_path.parent.mkdir()
    other = os.open(db_path.with_name("state.db.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another daemon, as the lock sees it
        failures = _failures()
        assert not db.keep_file_in_place()
        assert _failures() == failures + 1
        assert not db_path.exists()
    finally:
        os.close(other)
    assert db.keep_file_in_place()
    db.close()
    with closing(sqlite3.connect(db_path)) as connection:
        assert _pods(connection) == {"kept"}


@pytest.mark.parametrize("companion", ["-wal", "-shm", ".lock"])
def test_the_state_db_still_in_place_is_not_kept_as_displaced_when_a_companion_went(
    db: Database, db_path: Path, companion: str
) -> None:
    db.write_sync(_add_pod("kept"))
    db_path.with_name(db_path.name + companion).unlink()

    assert db.keep_file_in_place()

    assert not list(db_path.parent.glob("state.db.displaced-*"))  # not a stale copy of the checkpoint
    db.write_sync(_add_pod("after"))
    assert db.read_sync(_pods) == {"kept", "after"}
    db.close()
    with closing(sqlite3.connect(db_path)) as connection:
        assert _pods(connection) == {"kept", "after"}


def test_a_read_only_database_of_the_same_process_reads_the_file_put_back(
    db: Database, db_path: Path
) -> None:
    db.write_sync(_add_pod("before"))
    query = Database.open(db_path, read_only=True)  # as the daemon's query API holds one
    try:
        assert query.read_sync(_pods) == {"before"}
        assert asyncio.run(query.read(_pods)) == {"before"}
        db_path.unlink()

        assert db.keep_file_in_place()
        db.write_sync(_add_pod("after"))

        assert query.read_sync(_pods) == {"before", "after"}
        assert asyncio.run(query.read(_pods)) == {"before", "after"}
    finally:
        query.close()


async def test_a_connection_made_while_the_file_is_gone_creates_no_empty_database_at_its_path(
    tmp_path: Path,
) -> None:
    """Between a removal and the put-back, a connection made anew (a reader after an error, a
    ``read_sync`` without a spare) must fail rather than create an empty ``state.db`` there: SQLite
    creates a missing file by default, and the put-back would then find a "replacement" to keep
    aside, beside an old WAL it could be read with."""
    path = tmp_path / "state" / "state.db"
    db = Database.open(path)
    try:
        await db.write(_add_pod("before"))
        path.unlink()

        with pytest.raises(sqlite3.OperationalError):
            db.read_sync(_pods)

        assert not path.exists()
        assert db.keep_file_in_place()
        assert db.read_sync(_pods) == {"before"}
    finally:
        db.close()


def test_a_copy_a_put_back_cut_short_left_is_named_at_open_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon killed between the copy and the rename leaves the copy, while the file at the path
    was gone: it may hold the only checkpoint of that time, so the next daemon says so and leaves it
    (a put-back of its own writes a file of its own, never over it)."""
    path = tmp_path / "state.db"
    left = tmp_path / "state.db.restoring-1765000000000000000"
    left.write_bytes(b"the checkpoint of that time")

    db = Database.open(path)
    try:
        assert db.keep_file_in_place()
    finally:
        db.close()

    assert left.read_bytes() == b"the checkpoint of that time"
    assert [r.getMessage() for r in caplog.records if left.name in r.getMessage() and r.levelname == "ERROR"]
