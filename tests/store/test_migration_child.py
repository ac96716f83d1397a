"""The child that migrates the state database runs the daemon's own code, wherever it was started,
and says in one line why a migration failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.store import schema
from app.store.database import Database
from tests.store.damaging import damage_table
from tests.store.migrating import migrate


def test_the_migration_child_runs_this_code_not_an_app_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "elsewhere"
    for package in ("app", "migrations"):
        (decoy / package).mkdir(parents=True)
        (decoy / package / "__init__.py").write_text("raise SystemExit('a decoy package was imported')\n")
    monkeypatch.chdir(decoy)

    db = Database.open(tmp_path / "state.db", migrate_in_child=True)
    try:
        assert db.read_sync(schema.current_revision) == schema.head_revision()
    finally:
        db.close()


def _a_revision_0003_database_with_its_attachments_damaged(path: Path) -> None:
    """A database the next migration (0004, which reads every attachment) cannot read through."""
    Database.open(path).close()
    migrate(path, down_to="0003")
    damage_table(path, "attachments")


def test_a_migration_sqlite_refuses_names_the_revision_it_stopped_at_and_sqlites_error_not_a_traceback(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    _a_revision_0003_database_with_its_attachments_damaged(path)

    with pytest.raises(schema.SchemaError) as refused:
        Database.open(path, migrate_in_child=True)

    message = str(refused.value)
    assert message == (
        f"migrating state database {path} failed: stopped at schema revision '0003' on the way to"
        f" {schema.head_revision()!r}: database disk image is malformed"
    )


def test_a_downgrade_sqlite_refuses_names_the_revision_it_stopped_at_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's ``python -m app.store.schema PATH --downgrade-to REV`` on a damaged file printed
    SQLAlchemy's traceback; it ends as the migration child does: one line, exit 1."""
    path = tmp_path / "state.db"
    Database.open(path).close()
    migrate(path, down_to="0003")
    damage_table(path, "history")  # 0003's downgrade rebuilds the history table: reads it

    status = schema.main([str(path), "--downgrade-to", "0002"])

    assert status == 1
    assert capsys.readouterr().err.startswith(
        "error: stopped at schema revision '0003' on the way down to '0002': "
    )
