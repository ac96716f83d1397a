"""A database at the state path that is not multus-py's is refused, untouched; ours always opens.

Some other program's SQLite file (a wrong ``stateDir`` or database path in daemon-config) has tables
of its own and no ``alembic_version``: migrating it would add our tables to it and switch it to WAL.
The daemon refuses it at start-up with a ``SchemaError`` naming the path (it exits 1, as for a
corrupt file), and the file keeps every byte.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.store import checkpoints, schema
from app.store.database import Database
from app.store.records import PodIdentity, SandboxIntent


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "state.db"
    path.parent.mkdir()
    return path


def _foreign(db_path: Path, *statements: str) -> bytes:
    with sqlite3.connect(db_path) as raw:
        for statement in statements:
            raw.execute(statement)
    raw.close()
    return db_path.read_bytes()


FOREIGN = {
    "another program's tables": (
        "CREATE TABLE bookmarks (id INTEGER PRIMARY KEY, url TEXT)",
        "INSERT INTO bookmarks (url) VALUES ('https://example.org')",
    ),
    "a table named as one of ours": ("CREATE TABLE history (id INTEGER PRIMARY KEY, command TEXT)",),
    "a view only": ("CREATE VIEW answer AS SELECT 42",),
    "another alembic project's, at base": (
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)",
        "CREATE TABLE bookmarks (id INTEGER PRIMARY KEY, url TEXT)",
    ),
}


@pytest.mark.parametrize("statements", list(FOREIGN.values()), ids=list(FOREIGN))
@pytest.mark.parametrize("migrate_in_child", [False, True], ids=["in-process", "daemon"])
def test_another_programs_database_is_refused_naming_the_path_and_left_unchanged(
    db_path: Path, statements: tuple[str, ...], migrate_in_child: bool
) -> None:
    before = _foreign(db_path, *statements)

    with pytest.raises(schema.SchemaError) as refused:  # what the daemon's start-up reports (exit 1)
        Database.open(db_path, migrate_in_child=migrate_in_child)

    assert str(db_path) in str(refused.value)
    assert "multus-py" in str(refused.value)
    assert db_path.read_bytes() == before
    assert not db_path.with_name("state.db-wal").exists()
    db_path.unlink()
    Database.open(db_path).close()  # the lock was released


def test_our_tables_beside_another_programs_without_a_revision_are_refused(db_path: Path) -> None:
    Database.open(db_path).close()
    with sqlite3.connect(db_path) as raw:
        raw.execute("DROP TABLE alembic_version")
        raw.execute("CREATE TABLE bookmarks (id INTEGER PRIMARY KEY, url TEXT)")
    raw.close()
    before = db_path.read_bytes()

    with pytest.raises(schema.SchemaError, match="bookmarks"):
        Database.open(db_path)

    assert db_path.read_bytes() == before


def test_an_empty_file_at_the_path_becomes_a_new_database(db_path: Path) -> None:
    db_path.write_bytes(b"")

    db = Database.open(db_path)
    try:
        assert db.read_sync(schema.current_revision) == schema.head_revision()
    finally:
        db.close()


def test_our_database_without_its_revision_stamp_is_migrated_and_keeps_its_checkpoint(db_path: Path) -> None:
    """Our own tables, every one, and no ``alembic_version`` (the stamp lost: dropped by hand, or a
    release that crashed before it): the revisions are safe to rerun, and refusing would strand the
    checkpoint, the only record of what to clean up."""
    db = Database.open(db_path)
    intent = SandboxIntent("c1", "/var/run/netns/x", "eth0", "1.0.0", PodIdentity("ns", "pod", "uid"), "boot")
    db.write_sync(lambda s: checkpoints.begin_add(s, intent))
    db.close()
    with sqlite3.connect(db_path) as raw:
        raw.execute("DROP TABLE alembic_version")
    raw.close()

    db = Database.open(db_path)
    try:
        assert db.read_sync(schema.current_revision) == schema.head_revision()
        assert db.read_sync(lambda s: checkpoints.load_sandbox(s, "c1")) is not None
    finally:
        db.close()
