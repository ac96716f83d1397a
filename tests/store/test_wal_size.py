"""The write-ahead log does not keep the size of the largest transaction it ever held.

SQLite's auto-checkpoint copies the log into the database and starts it over from its beginning,
but never shrinks the file: one large transaction (a relist of many pods, a migration) left the
daemon a log of that size for its whole life. Real SQLite file and writer thread; the limit is
lowered so that a small transaction shows it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.store import database
from app.store.database import Connection, Database

LIMIT = 256 * 1024
PODS = 1500
"""Pods of 4 KiB written in one transaction: past SQLite's auto-checkpoint (1,000 pages of 4 KiB),
so the log is checkpointed after that commit and started over by the next one."""


def _many_pods(connection: Connection) -> None:
    connection.executemany(
        "INSERT INTO mirror_pods (namespace, name, uid, node_name, resource_version, annotations)"
        " VALUES ('ns', ?, 'uid', 'node', '1', ?)",
        [(f"pod{index}", "x" * 4096) for index in range(PODS)],
    )


def test_the_wal_is_cut_back_after_a_large_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "WAL_SIZE_LIMIT", LIMIT)
    wal = tmp_path / "state.db-wal"
    db = Database.open(tmp_path / "state.db")
    try:
        db.write_sync(_many_pods)
        assert os.stat(wal).st_size > 4 * PODS * 1024, "the transaction went through the log"

        db.write_sync(lambda connection: connection.execute("DELETE FROM mirror_pods WHERE name = 'pod0'"))

        assert os.stat(wal).st_size <= LIMIT
    finally:
        db.close()
