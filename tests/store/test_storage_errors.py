"""A state database that cannot take a write (a full disk, an I/O error) is named as such to the
engine, which answers the runtime with a CNI error naming it (code 5), never an internal error."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.attach import errors
from app.cni.types import ErrorCode
from app.store.database import Connection, Database, StorageError
from tests.store.damaging import damage_table


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database.open(tmp_path / "state.db")
    yield db
    db.close()


def _fill(connection: Connection) -> None:
    connection.execute("CREATE TABLE IF NOT EXISTS filler (data BLOB)")
    connection.execute("INSERT INTO filler VALUES (zeroblob(1000000))")


def _full_database(database: Database) -> None:
    """The writer's connection may not grow the file any more: SQLite answers SQLITE_FULL, as on a
    full disk."""
    pages = database.write_sync(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    database.write_sync(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchone())


def test_a_write_the_full_database_cannot_take_fails_as_a_storage_error(database: Database) -> None:
    _full_database(database)

    with pytest.raises(StorageError) as raised:
        database.write_sync(_fill)

    assert raised.value.errno == errno.ENOSPC
    assert "full" in str(raised.value)


async def test_the_engine_answers_a_storage_error_as_an_io_failure_naming_the_state_database(
    database: Database,
) -> None:
    _full_database(database)

    with pytest.raises(StorageError) as raised:
        await database.write(_fill)
    error = errors.as_cni_error(raised.value)

    assert error.code == ErrorCode.IO_FAILURE
    assert "state database" in error.msg
    assert "full" in error.msg


def _damage_the_history(path: Path) -> None:
    """Overwrite the page of the history table (a disk or a file system that returned other bytes)."""
    Database.open(path).close()
    damage_table(path, "history")


def _append_a_line(connection: Connection) -> None:
    connection.execute(
        'INSERT INTO history (at, command, step, "trigger", outcome, container_id, netns, ifname,'
        " network_name, plugin_types, pod_namespace, pod_name, pod_uid, ips, macs)"
        " VALUES ('2026-01-01 00:00:00', 'ADD', 'request', 'runtime', 'success', 'c', '', 'eth0', 'n',"
        " 'bridge', 'ns', 'pod', 'uid', '[]', '[]')"
    )


async def test_a_damaged_page_fails_the_write_and_the_read_as_an_io_failure_naming_the_state_database(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    _damage_the_history(path)
    db = Database.open(path)
    try:
        with pytest.raises(StorageError) as written:
            await db.write(_append_a_line)
        with pytest.raises(StorageError) as read:
            await db.read(lambda c: c.execute("SELECT * FROM history").fetchall())
        await db.write(lambda c: c.execute("INSERT INTO watch_state VALUES ('k', '', '', NULL, NULL, 0, 0)"))
    finally:
        db.close()

    for raised in (written, read):
        error = errors.as_cni_error(raised.value)
        assert raised.value.errno == errno.EIO
        assert (error.code, error.msg) == (
            ErrorCode.IO_FAILURE,
            "[Errno 5] state database: database disk image is malformed",
        )
