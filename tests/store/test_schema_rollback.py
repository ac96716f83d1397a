"""Rolling a node back to an older multus-py across a schema change: the database records, per
revision, the oldest revision whose code may use it; older code runs on a newer database that says
it may, refuses one that does not, and ``--downgrade-to`` takes a database back.

"Older code" is this code run with a migrations directory that ends at an older revision (a copy
of the first revisions' scripts), which is all the schema check knows of a release."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from app.store import schema
from app.store.database import Database

FIRST_RECORDING_REVISION = "0010"
"""The revision that created ``schema_compatibility``: migrations from 0009 on declare themselves."""

FUTURE_REVISION = """\
\"\"\"A revision newer than this release, written for a test.\"\"\"

from alembic import op

revision = "0099"
down_revision = {head!r}
branch_labels = None
depends_on = None

previous_code_compatible = {compatible!r}


def upgrade() -> None:
    op.execute("CREATE TABLE IF NOT EXISTS future_things (id INTEGER PRIMARY KEY)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS future_things")
"""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


def _migrations_up_to(directory: Path, last: str) -> Path:
    """A copy of this release's migrations holding revisions up to ``last`` only."""
    numbered = "[0-9][0-9][0-9][0-9]_*"
    shutil.copytree(schema.MIGRATIONS_DIR, directory, ignore=shutil.ignore_patterns("__pycache__", numbered))
    for script in sorted((schema.MIGRATIONS_DIR / "versions").glob(f"{numbered}.py")):
        if script.name[:4] <= last:
            shutil.copy(script, directory / "versions" / script.name)
    return directory


def _run_as_release_with(monkeypatch: pytest.MonkeyPatch, migrations_dir: Path) -> None:
    """Make ``app.store.schema`` the schema check and migrator of a release with these migrations."""
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", migrations_dir)


def _stamp(path: Path) -> str:
    with sqlite3.connect(path) as raw:
        return str(raw.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def _records(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as raw:
        return dict(raw.execute("SELECT revision, oldest_code_revision FROM schema_compatibility"))


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as raw:
        return {str(name) for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _record_a_sandbox(path: Path) -> None:
    """One sandbox with one attachment, in the columns every revision since 0005 has."""
    with sqlite3.connect(path) as raw:
        raw.execute(
            "INSERT INTO sandboxes (container_id, state, netns, netns_id, ifname, cni_version,"
            " pod_namespace, pod_name, pod_uid, boot_id, created_at, updated_at)"
            " VALUES ('c1', 'ready', '/run/netns/x', '1:2', 'eth0', '1.0.0', 'ns', 'pod', 'uid', 'boot',"
            " '2026-12-08 00:00:00.000000', '2026-12-08 00:00:00.000000')"
        )
        raw.execute(
            "INSERT INTO attachments (container_id, ifname, position, is_master, network_name, plugin_types,"
            " config, cni_args, capability_args, cni_path, state, created_at, updated_at)"
            " VALUES ('c1', 'eth0', 0, 1, 'net', 'bridge', X'7B7D', '[]', '{}', '[]', 'added',"
            " '2026-12-08 00:00:00.000000', '2026-12-08 00:00:00.000000')"
        )


def _attachments(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as raw:
        return [(str(c), str(i)) for c, i in raw.execute("SELECT container_id, ifname FROM attachments")]


def test_a_new_database_records_that_0010_and_0009_may_be_used_by_0008_code(db_path: Path) -> None:
    Database.open(db_path).close()

    records = _records(db_path)
    assert records[FIRST_RECORDING_REVISION] == "0008"
    assert schema.head_revision() in records


def test_migrating_an_existing_0008_store_writes_the_record_and_keeps_the_checkpoint(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as release_0008:
        _run_as_release_with(release_0008, _migrations_up_to(tmp_path / "m0008", "0008"))
        Database.open(db_path).close()
    assert _stamp(db_path) == "0008"
    _record_a_sandbox(db_path)

    Database.open(db_path).close()

    assert _stamp(db_path) == schema.head_revision()
    assert _records(db_path)[FIRST_RECORDING_REVISION] == "0008"
    assert _attachments(db_path) == [("c1", "eth0")]


def test_code_whose_head_is_the_recorded_oldest_revision_runs_on_the_newer_database(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    Database.open(db_path).close()
    newer = schema.head_revision()
    oldest = _records(db_path)[newer]
    _run_as_release_with(monkeypatch, _migrations_up_to(tmp_path / "older", oldest))
    assert schema.head_revision() == oldest

    with caplog.at_level(logging.WARNING, logger="app.store.schema"):
        db = Database.open(db_path, migrate_in_child=True)  # as the daemon opens it
    try:
        assert db.read_sync(schema.current_revision) == newer
    finally:
        db.close()

    [warning] = [r.getMessage() for r in caplog.records if r.name == "app.store.schema"]
    assert repr(newer) in warning
    assert repr(oldest) in warning
    assert _stamp(db_path) == newer  # left as the newer release wrote it


def test_code_older_than_the_recorded_oldest_revision_is_refused_naming_the_versions(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Database.open(db_path).close()
    newer = schema.head_revision()
    _run_as_release_with(monkeypatch, _migrations_up_to(tmp_path / "older", "0007"))

    with pytest.raises(schema.SchemaError) as refused:
        Database.open(db_path)

    message = str(refused.value)
    assert repr(newer) in message
    assert repr(_records(db_path)[newer]) in message
    assert "'0007'" in message
    assert "newer multus-py" in message
    assert "--downgrade-to 0007" in message
    assert _stamp(db_path) == newer


@pytest.mark.parametrize(("compatible", "runs"), [(True, True), (False, False)])
def test_a_newer_revision_is_used_only_when_it_declared_the_code_before_it_compatible(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compatible: bool, runs: bool
) -> None:
    head = schema.head_revision()
    with monkeypatch.context() as newer_release:
        newer = _migrations_up_to(tmp_path / "newer", head)
        future = FUTURE_REVISION.format(head=head, compatible=compatible)
        (newer / "versions" / "0099_future.py").write_text(future)
        _run_as_release_with(newer_release, newer)
        Database.open(db_path).close()
    assert _stamp(db_path) == "0099"
    assert _records(db_path)["0099"] == ("0008" if compatible else "0099")

    if runs:
        Database.open(db_path).close()
    else:
        with pytest.raises(schema.SchemaError, match=r"'0099'.*'0099' or later.*" + repr(head)):
            Database.open(db_path)
    assert _stamp(db_path) == "0099"


def test_a_rerun_after_a_crash_that_lost_the_stamp_rewrites_the_record(db_path: Path) -> None:
    Database.open(db_path).close()
    with sqlite3.connect(db_path) as raw:  # the record's table and rows exist, the stamp is gone
        raw.execute("DROP TABLE alembic_version")

    Database.open(db_path).close()

    assert _stamp(db_path) == schema.head_revision()
    assert _records(db_path)[FIRST_RECORDING_REVISION] == "0008"


def test_a_rerun_of_0010_over_its_table_writes_its_record(db_path: Path) -> None:
    Database.open(db_path).close()
    with sqlite3.connect(db_path) as raw:  # 0010's table exists without a row, the stamp says 0009
        raw.execute("DELETE FROM schema_compatibility")
        raw.execute("UPDATE alembic_version SET version_num = '0009'")

    Database.open(db_path).close()

    assert _records(db_path)[FIRST_RECORDING_REVISION] == "0008"


def test_downgrade_to_takes_the_database_back_keeping_the_checkpoint(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Database.open(db_path).close()
    _record_a_sandbox(db_path)

    assert schema.main(["--downgrade-to", "0008", str(db_path)]) == 0

    assert _stamp(db_path) == "0008"
    assert "schema_compatibility" not in _tables(db_path)
    assert _attachments(db_path) == [("c1", "eth0")]
    assert f"{schema.head_revision()} -> 0008" in capsys.readouterr().out
    _run_as_release_with(monkeypatch, _migrations_up_to(tmp_path / "m0008", "0008"))
    Database.open(db_path).close()  # what release 0008 needs; then back up, with the record
    monkeypatch.undo()
    Database.open(db_path).close()
    assert _records(db_path)[FIRST_RECORDING_REVISION] == "0008"
    assert _attachments(db_path) == [("c1", "eth0")]


def test_downgrade_to_is_refused_while_a_daemon_holds_the_database(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = Database.open(db_path)
    try:
        assert schema.main(["--downgrade-to", "0008", str(db_path)]) == 1
    finally:
        db.close()
    assert "in use by another process" in capsys.readouterr().err
    assert _stamp(db_path) == schema.head_revision()


@pytest.mark.parametrize("target", ["0099", "not-a-revision"])
def test_downgrade_to_a_revision_this_release_does_not_know_changes_nothing(
    db_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Database.open(db_path).close()

    assert schema.main(["--downgrade-to", target, str(db_path)]) == 1

    assert f"revision {target!r} is unknown" in capsys.readouterr().err
    assert _stamp(db_path) == schema.head_revision()


def test_every_migration_since_0009_declares_whether_the_code_before_it_may_use_its_schema() -> None:
    script = ScriptDirectory(str(schema.MIGRATIONS_DIR))
    chain = schema.known_revisions()
    for revision in chain[chain.index("0009") :]:
        declared = getattr(script.get_revision(revision).module, "previous_code_compatible", None)
        assert isinstance(declared, bool), f"migration {revision} declares no previous_code_compatible"
