"""The child that migrates the state database runs the daemon's own code, wherever it was started."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.store import schema
from app.store.database import Database


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
