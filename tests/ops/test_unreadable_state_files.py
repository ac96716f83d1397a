"""multusctl reading the state file itself (no daemon answering) on a corrupt database, or on one
of an older schema than its own, names the problem (exit 1) and leaves the file as it was.

Both were tracebacks or riddles: a malformed page reached by a read raised SQLAlchemy's or the
driver's ``DatabaseError`` past multusctl (a corrupt database is exactly what crash forensics
meets); an older revision (the daemon, which upgrades it at start, not started since multusctl was
upgraded) answered ``attachments`` with "no such column" and ``show`` with a driver traceback.
"""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path

import pytest

from app.cli import main as cli
from app.store import checkpoints, history, schema
from app.store.database import Database
from app.store.records import HistoryEntry, PodIdentity
from tests.store.migrating import migrate

CONTAINER = "c" * 64
READS = (("attachments",), ("history",), ("show", CONTAINER[:12]), ("status",))


def _state_dir(tmp_path: Path) -> Path:
    """A state dir whose database has a history line."""
    state = tmp_path / "state"
    db = Database.open(state / "state.db")
    entry = HistoryEntry(
        command="ADD",
        step="request",
        trigger="runtime",
        outcome="ok",
        container_id=CONTAINER,
        network_name="default/net",
        pod=PodIdentity("ns", "web", "uid"),
    )
    db.write_sync(partial(history.append, entry=entry))
    db.close()
    return state


def _multusctl(tmp_path: Path, state: Path, *args: str) -> int:
    sockets = tmp_path / "no-daemon"
    sockets.mkdir(exist_ok=True)
    return cli.main(["--socket-dir", str(sockets), "--state-dir", str(state), *args])


def _corrupt_the_checkpoint_and_the_history(path: Path) -> None:
    """Overwrite the root pages of ``sandboxes`` and ``history`` (the schema still reads)."""
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        roots = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name IN ('sandboxes', 'history')"
        ).fetchall()
    with path.open("r+b") as file:
        for (root,) in roots:
            file.seek((root - 1) * page_size)
            file.write(b"\xde\xad" * (page_size // 2))


@pytest.mark.parametrize("args", READS)
def test_a_corrupt_database_is_named_corrupt_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    state = _state_dir(tmp_path)
    _corrupt_the_checkpoint_and_the_history(state / "state.db")
    before = (state / "state.db").read_bytes()

    code = _multusctl(tmp_path, state, *args)

    error = capsys.readouterr().err
    assert code == 1, error
    assert f"state database {state / 'state.db'} is corrupt (" in error
    assert "Traceback" not in error
    assert (state / "state.db").read_bytes() == before


@pytest.mark.parametrize("args", READS)
def test_a_database_of_an_older_schema_names_both_revisions_or_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    state = _state_dir(tmp_path)
    migrate(state / "state.db", down_to="0004")
    before = (state / "state.db").read_bytes()

    code = _multusctl(tmp_path, state, *args)

    error = capsys.readouterr().err
    assert "Traceback" not in error
    if code != 0:
        assert code == 1, error
        assert f"is at schema revision '0004', older than this release's {schema.head_revision()!r}" in error
        assert "the daemon upgrades it when it starts" in error
    assert (state / "state.db").read_bytes() == before


def test_the_checkpoint_reads_refuse_revision_0004_so_the_older_schema_test_tests_something(
    tmp_path: Path,
) -> None:
    state = _state_dir(tmp_path)
    migrate(state / "state.db", down_to="0004")
    db = Database.open(state / "state.db", read_only=True)
    try:
        with pytest.raises(sqlite3.OperationalError):
            db.read_sync(partial(checkpoints.load_sandbox, container_id=CONTAINER))
    finally:
        db.close()
