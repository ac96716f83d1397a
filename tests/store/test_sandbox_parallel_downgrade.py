"""Downgrading 0006 (``sandboxes.parallel``) and 0007 (``sandboxes.default_networks``) must keep every
recorded attachment.

``attachments.container_id`` references ``sandboxes`` with ON DELETE CASCADE and every connection
has ``foreign_keys=ON``: a downgrade that rebuilds ``sandboxes`` (drop and re-create) deletes the
whole checkpoint's attachments, and with them the only record of what to DEL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.store.database import Database
from tests.store.migrating import migrate


def _insert(connection: sqlite3.Connection, table: str, values: dict[str, object]) -> None:
    columns = list(connection.execute(f"PRAGMA table_info({table})"))
    row: dict[str, object] = {
        column[1]: 0 if any(kind in column[2].upper() for kind in ("INT", "BOOL")) else "x"
        for column in columns
    }
    row.update(values)
    connection.execute(
        f"INSERT INTO {table} ({','.join(row)}) VALUES ({','.join('?' * len(row))})", list(row.values())
    )


def _sandbox_columns_and_attachments(path: Path) -> tuple[set[str], list[tuple[str, str]]]:
    with sqlite3.connect(path) as connection:
        columns = {column[1] for column in connection.execute("PRAGMA table_info(sandboxes)")}
        attachments = connection.execute("SELECT container_id, ifname FROM attachments").fetchall()
    return columns, attachments


@pytest.mark.parametrize(
    ("down_to", "dropped"), [("0006", {"default_networks"}), ("0005", {"default_networks", "parallel"})]
)
def test_downgrading_a_sandbox_column_keeps_the_attachments(
    tmp_path: Path, down_to: str, dropped: set[str]
) -> None:
    path = tmp_path / "state.db"
    Database.open(path).close()
    with sqlite3.connect(path) as connection:
        _insert(connection, "sandboxes", {"container_id": "c1", "state": "ready", "default_networks": 1})
        _insert(connection, "attachments", {"container_id": "c1", "ifname": "eth0", "state": "added"})

    migrate(path, down_to=down_to)

    columns, attachments = _sandbox_columns_and_attachments(path)
    assert not columns & dropped
    assert attachments == [("c1", "eth0")]

    migrate(path)  # and back up: the sandbox recorded before 0007 reads as not known (NULL)

    columns, attachments = _sandbox_columns_and_attachments(path)
    assert columns >= dropped
    assert attachments == [("c1", "eth0")]
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT default_networks FROM sandboxes").fetchall() == [(None,)]
