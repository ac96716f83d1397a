"""The state database: pragmas, migrations, the single writer, durability and refusal rules."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from app.store import checkpoints, history, lease_proofs, queries, schema
from app.store.database import Connection, Database, DatabaseLockedError
from app.store.models import METADATA
from app.store.records import DelegateIntent, HistoryEntry, PodIdentity, SandboxIntent


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


def _sandbox(container_id: str) -> SandboxIntent:
    return SandboxIntent(
        container_id, "/var/run/netns/x", "eth0", "1.0.0", PodIdentity("ns", "pod", "uid"), "boot"
    )


def _intent(container_id: str, ifname: str = "eth0") -> DelegateIntent:
    return DelegateIntent(
        container_id=container_id,
        ifname=ifname,
        position=0,
        is_master=True,
        network_name="net",
        plugin_types=("bridge",),
        config=b'{"cniVersion":"1.0.0"}',
        cni_args=(("K8S_POD_NAME", "pod"),),
        capability_args={"portMappings": [{"hostPort": 80}]},
        cni_path=("/opt/cni/bin",),
        root="/hostroot",
    )


def _begin_c1_with_one_intent(connection: Connection) -> None:
    checkpoints.begin_add(connection, _sandbox("c1"))
    checkpoints.record_intent(connection, _intent("c1"))


def test_connections_use_wal_full_sync_and_foreign_keys(db_path: Path) -> None:
    db = Database.open(db_path)
    try:
        pragmas = db.read_sync(
            lambda connection: [
                connection.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys")
            ]
        )
        assert pragmas == ["wal", 2, 1]  # synchronous 2: FULL
    finally:
        db.close()


def test_models_describe_exactly_what_the_migrations_create(db_path: Path) -> None:
    db = Database.open(db_path)
    try:
        engine = create_engine(f"sqlite:///{db_path}")
        try:
            with engine.connect() as connection:
                differences = compare_metadata(MigrationContext.configure(connection), METADATA)
        finally:
            engine.dispose()
        assert differences == []
    finally:
        db.close()


def test_opening_twice_runs_no_migration_the_second_time_and_keeps_data(db_path: Path) -> None:
    db = Database.open(db_path)
    db.write_sync(lambda s: checkpoints.begin_add(s, _sandbox("c1")))
    db.close()

    db = Database.open(db_path)
    try:
        assert db.read_sync(lambda s: checkpoints.load_sandbox(s, "c1")) is not None
        assert db.read_sync(schema.current_revision) == schema.head_revision()
    finally:
        db.close()


def test_migration_rerun_after_a_crash_before_the_stamp_succeeds(db_path: Path) -> None:
    db = Database.open(db_path)
    db.close()
    with sqlite3.connect(db_path) as raw:  # tables exist, but the revision was never recorded
        raw.execute("DROP TABLE alembic_version")

    db = Database.open(db_path)
    try:
        assert db.read_sync(schema.current_revision) == schema.head_revision()
    finally:
        db.close()


def test_a_database_from_a_newer_release_is_refused_naming_both_versions(db_path: Path) -> None:
    Database.open(db_path).close()
    with sqlite3.connect(db_path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999_future'")

    with pytest.raises(schema.SchemaError) as refused:
        Database.open(db_path)

    assert "9999_future" in str(refused.value)
    assert schema.head_revision() in str(refused.value)
    assert "newer multus-py" in str(refused.value)
    assert "not a multus-py database" in str(refused.value)
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchone() == ("9999_future",)


def test_a_second_writer_is_refused_while_the_first_holds_the_database(db_path: Path) -> None:
    first = Database.open(db_path)
    try:
        with pytest.raises(DatabaseLockedError):
            Database.open(db_path)
        reader = Database.open(db_path, read_only=True)
        reader.close()
    finally:
        first.close()


def test_read_only_open_refuses_writes(db_path: Path) -> None:
    Database.open(db_path).close()
    reader = Database.open(db_path, read_only=True)
    try:
        with pytest.raises(PermissionError):
            reader.write_sync(lambda s: None)
    finally:
        reader.close()


@pytest.mark.parametrize("directory", ["with %41 a percent", "with ?a query", "with #a fragment"])
async def test_a_state_dir_holding_what_a_uri_gives_meaning_to_opens_that_file_for_writes_and_reads(
    tmp_path: Path, directory: str
) -> None:
    """The daemon writes, multusctl and the query API read the one file of a ``stateDir`` named
    with ``%``, ``?`` or ``#``: not a file cut at the ``?`` or an empty one its escape makes."""
    db_path = tmp_path / directory / "state.db"
    db = Database.open(db_path, migrate_in_child=True)
    try:
        await db.write(lambda s: checkpoints.begin_add(s, _sandbox("c1")))
        reader = Database.open(db_path, read_only=True)
        try:
            found = reader.read_sync(lambda s: checkpoints.load_sandbox(s, "c1"))
        finally:
            reader.close()
        read, _size = queries.read_file(db_path, lambda s: checkpoints.load_sandbox(s, "c1"))
    finally:
        db.close()

    assert found is not None
    assert found.state == "adding"
    assert read is not None
    assert read.state == "adding"
    assert os.listdir(tmp_path) == [directory], "no file cut short beside it"
    assert all(name.startswith("state.db") for name in os.listdir(tmp_path / directory))


@pytest.mark.parametrize("migrate_in_child", [False, True])
def test_a_relative_path_beginning_with_file_colon_opens_that_file_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrate_in_child: bool
) -> None:
    """SQLite built with SQLITE_USE_URI (Debian's is) reads a file name beginning with ``file:`` as a
    URI even when ``sqlite3.connect`` is not asked for one: ``file:state.db`` would be ``state.db``,
    written beside the file that was locked and checked (SQLAlchemy made the path absolute)."""
    monkeypatch.chdir(tmp_path)
    db = Database.open(Path("file:state.db"), migrate_in_child=migrate_in_child)
    try:
        db.write_sync(lambda s: checkpoints.begin_add(s, _sandbox("c1")))
    finally:
        db.close()

    assert not (tmp_path / "state.db").exists()
    reader = Database.open(tmp_path / "file:state.db", read_only=True)
    try:
        found = reader.read_sync(lambda s: checkpoints.load_sandbox(s, "c1"))
    finally:
        reader.close()
    assert found is not None


async def test_a_write_is_visible_to_another_connection_when_it_returns(db_path: Path) -> None:
    db = Database.open(db_path)
    try:
        await db.write(lambda s: checkpoints.begin_add(s, _sandbox("c1")))
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as other:
            assert other.execute("SELECT state FROM sandboxes").fetchall() == [("adding",)]
    finally:
        db.close()


async def test_concurrent_writes_are_group_committed_and_a_failing_one_spoils_none_other(
    db_path: Path,
) -> None:
    db = Database.open(db_path)
    try:

        def failing(connection: Connection) -> None:
            checkpoints.begin_add(connection, _sandbox("bad"))
            raise RuntimeError("this unit fails after writing")

        outcomes = await asyncio.gather(
            *[db.write(partial(checkpoints.begin_add, sandbox=_sandbox(f"c{i}"))) for i in range(40)],
            db.write(failing),
            *[db.write(partial(checkpoints.record_intent, intent=_intent(f"c{i}"))) for i in range(40)],
            return_exceptions=True,
        )

        assert [o for o in outcomes if isinstance(o, BaseException)] == [outcomes[40]]
        assert isinstance(outcomes[40], RuntimeError)
        sandboxes = db.read_sync(checkpoints.list_sandboxes)
        assert sorted(s.container_id for s in sandboxes) == sorted(f"c{i}" for i in range(40))
        assert all(len(s.attachments) == 1 for s in sandboxes)
        batches, jobs = db.commit_stats
        assert jobs == 81
        assert batches < jobs, "concurrent writes should share commits"
    finally:
        db.close()


def _recorded_by_revision(db_path: Path, revision: str, *, table: str, column: str) -> None:
    """Sandbox ``c1`` with one intent, in the database as ``revision`` left it (before ``column``)."""
    db = Database.open(db_path)
    db.write_sync(_begin_c1_with_one_intent)
    db.close()
    with sqlite3.connect(db_path) as raw:
        raw.execute("DROP TRIGGER tr_attachments_removed")  # revision 0008's, which reads every column
        raw.execute("DROP TABLE removed_attachments")
        raw.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        raw.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def test_attachments_recorded_before_the_root_column_replay_in_the_daemons_own_root(db_path: Path) -> None:
    _recorded_by_revision(db_path, "0004", table="attachments", column="root")

    db = Database.open(db_path)
    try:
        record = db.read_sync(lambda s: checkpoints.load_sandbox(s, "c1"))
    finally:
        db.close()
    assert record is not None
    assert [(a.ifname, a.root) for a in record.attachments] == [("eth0", "")]


def test_sandboxes_recorded_before_the_parallel_column_are_deleted_one_after_another(db_path: Path) -> None:
    _recorded_by_revision(db_path, "0005", table="sandboxes", column="parallel")

    db = Database.open(db_path)
    try:
        record = db.read_sync(lambda s: checkpoints.load_sandbox(s, "c1"))
        listed = db.read_sync(lambda s: checkpoints.list_sandboxes(s))
    finally:
        db.close()
    assert record is not None
    assert record.parallel is False
    assert [sandbox.parallel for sandbox in listed] == [False]


def test_a_sandbox_whose_delegates_ran_in_parallel_is_recorded_so(db_path: Path) -> None:
    db = Database.open(db_path)
    try:
        db.write_sync(lambda s: checkpoints.begin_add(s, dataclasses.replace(_sandbox("c1"), parallel=True)))
        db.write_sync(lambda s: checkpoints.begin_add(s, _sandbox("c2")))
        loaded = [db.read_sync(partial(checkpoints.load_sandbox, container_id=c)) for c in ("c1", "c2")]
        listed = db.read_sync(lambda s: checkpoints.list_sandboxes(s))
    finally:
        db.close()
    assert [record.parallel for record in loaded if record is not None] == [True, False]
    assert [(sandbox.container_id, sandbox.parallel) for sandbox in listed] == [("c1", True), ("c2", False)]


def test_sandboxes_recorded_before_the_default_networks_column_read_as_not_known(db_path: Path) -> None:
    _recorded_by_revision(db_path, "0006", table="sandboxes", column="default_networks")

    db = Database.open(db_path)
    try:
        record = db.read_sync(lambda s: checkpoints.load_sandbox(s, "c1"))
        listed = db.read_sync(lambda s: checkpoints.list_sandboxes(s))
    finally:
        db.close()
    assert record is not None
    assert record.default_networks is None  # hot-plug then counts today's defaultNetworks
    assert [(a.ifname, a.state) for a in record.attachments] == [("eth0", "intent")]
    assert [sandbox.default_networks for sandbox in listed] == [None]


def test_the_number_of_default_networks_an_add_made_is_recorded(db_path: Path) -> None:
    db = Database.open(db_path)
    try:
        for container, defaults in (("c1", 2), ("c2", 0), ("c3", None)):
            sandbox = dataclasses.replace(_sandbox(container), default_networks=defaults)
            db.write_sync(partial(checkpoints.begin_add, sandbox=sandbox))
        loaded = [db.read_sync(partial(checkpoints.load_sandbox, container_id=c)) for c in ("c1", "c2", "c3")]
        listed = db.read_sync(lambda s: checkpoints.list_sandboxes(s))
    finally:
        db.close()
    assert [record.default_networks for record in loaded if record is not None] == [2, 0, None]
    assert [(s.container_id, s.default_networks) for s in listed] == [("c1", 2), ("c2", 0), ("c3", None)]


def test_checkpoint_round_trip_keeps_every_field_of_the_intent(db_path: Path) -> None:
    db = Database.open(db_path)
    try:
        db.write_sync(_begin_c1_with_one_intent)
        db.write_sync(
            lambda s: checkpoints.record_result(s, container_id="c1", ifname="eth0", result='{"ips":[]}')
        )
        record = db.read_sync(lambda s: checkpoints.load_sandbox(s, "c1"))
    finally:
        db.close()
    assert record is not None
    attachment = record.attachments[0]
    intent = _intent("c1")
    assert attachment.config == intent.config
    assert attachment.cni_args == intent.cni_args
    assert attachment.capability_args == intent.capability_args
    assert attachment.cni_path == intent.cni_path
    assert attachment.root == intent.root == "/hostroot"
    assert (attachment.state, attachment.result) == ("added", '{"ips":[]}')
    assert record.pod == PodIdentity("ns", "pod", "uid")
    assert record.created_at.tzinfo is not None


def test_a_sandbox_is_forgotten_only_when_its_last_attachment_is_removed(db_path: Path) -> None:
    def begin_with_two_intents(s: Connection) -> None:
        checkpoints.begin_add(s, _sandbox("c1"))
        checkpoints.record_intent(s, _intent("c1", "eth0"))
        checkpoints.record_intent(s, _intent("c1", "net1"))

    def remove_then_finish_delete(s: Connection, ifname: str) -> bool:
        checkpoints.remove_attachments(s, container_id="c1", ifnames=[ifname])
        return checkpoints.finish_delete(s, "c1")

    db = Database.open(db_path)
    try:
        db.write_sync(begin_with_two_intents)
        gone = db.write_sync(partial(remove_then_finish_delete, ifname="net1"))
        assert gone is False
        assert db.read_sync(lambda s: checkpoints.load_sandbox(s, "c1")) is not None
        gone = db.write_sync(partial(remove_then_finish_delete, ifname="eth0"))
        assert gone is True
        assert db.read_sync(lambda s: checkpoints.load_sandbox(s, "c1")) is None
    finally:
        db.close()


def test_an_attachment_with_host_local_leaves_the_checkpoint_with_gcs_proof_in_the_same_commit(
    db_path: Path,
) -> None:
    """Whatever removes it (a DEL's removal, the sandbox's cascade), an attachment whose config names
    host-local leaves a ``removed_attachments`` row behind; one without host-local leaves none."""
    host_local = b'{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"host-local"}}'

    def begin_with_three_intents(s: Connection) -> None:
        checkpoints.begin_add(s, _sandbox("c1"))
        checkpoints.record_intent(s, dataclasses.replace(_intent("c1", "eth0"), config=host_local))
        checkpoints.record_intent(s, dataclasses.replace(_intent("c1", "net1"), config=host_local))
        checkpoints.record_intent(s, _intent("c1", "net2"))

    db = Database.open(db_path)
    try:
        db.write_sync(begin_with_three_intents)
        assert db.read_sync(lease_proofs.removed) == []
        db.write_sync(lambda s: checkpoints.remove_attachments(s, container_id="c1", ifnames=["net1"]))
        db.write_sync(lambda s: s.execute("DELETE FROM sandboxes WHERE container_id = 'c1'"))
        rows = db.read_sync(lease_proofs.removed)
        assert [(r.container_id, r.ifname, r.config, r.root) for r in rows] == [
            ("c1", "net1", host_local, "/hostroot"),
            ("c1", "eth0", host_local, "/hostroot"),
        ]
        db.write_sync(partial(lease_proofs.forget, ids=[rows[0].id]))
        assert [r.ifname for r in db.read_sync(lease_proofs.removed)] == ["eth0"]
    finally:
        db.close()


def test_a_second_add_of_a_recorded_container_is_refused_and_changes_nothing(db_path: Path) -> None:
    db = Database.open(db_path)
    try:
        db.write_sync(lambda s: checkpoints.begin_add(s, _sandbox("c1")))
        with pytest.raises(checkpoints.SandboxExistsError) as refused:
            db.write_sync(lambda s: checkpoints.begin_add(s, _sandbox("c1")))
        assert refused.value.state == "adding"
        assert len(db.read_sync(checkpoints.list_sandboxes)) == 1
    finally:
        db.close()


def test_history_keeps_entries_in_order_with_their_errors(db_path: Path) -> None:
    db = Database.open(db_path)
    try:
        db.write_sync(
            lambda s: history.append_all(
                s,
                [
                    HistoryEntry(
                        command="ADD", step="delegate", trigger="runtime", outcome="ok", container_id="c1"
                    ),
                    HistoryEntry(
                        command="ADD",
                        step="request",
                        trigger="runtime",
                        outcome="error",
                        container_id="c1",
                        error_code=11,
                        error_msg="busy",
                    ),
                ],
            )
        )
        entries = db.read_sync(lambda s: history.for_container(s, "c1"))
    finally:
        db.close()
    assert [(e.step, e.outcome, e.error_code) for e in entries] == [
        ("delegate", "ok", None),
        ("request", "error", 11),
    ]


def test_the_revisions_read_as_text_agree_with_alembic() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(schema.MIGRATIONS_DIR))
    assert schema.head_revision() == script.get_heads()[0]
    assert sorted(schema.known_revisions()) == sorted(rev.revision for rev in script.walk_revisions())


def test_opening_a_current_database_does_not_import_alembic(db_path: Path) -> None:
    import subprocess
    import sys

    Database.open(db_path).close()
    probe = (
        "import sys\n"
        "from app.store.database import Database\n"
        f"Database.open({str(db_path)!r}).close()\n"
        "print(any(name.split('.')[0] == 'alembic' for name in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_a_write_cancelled_by_its_caller_does_not_break_the_writer(db_path: Path) -> None:
    db = Database.open(db_path)
    try:
        started, gate = threading.Event(), threading.Event()

        def slow(connection: Connection) -> None:
            started.set()
            gate.wait(10)

        blocked = asyncio.ensure_future(db.write(slow))
        await asyncio.to_thread(started.wait, 10)  # the writer is busy with ``slow``
        queued = asyncio.ensure_future(db.write(lambda s: checkpoints.begin_add(s, _sandbox("never"))))
        await asyncio.sleep(0)
        queued.cancel()
        blocked.cancel()  # too late: it is running, and will be committed
        await asyncio.sleep(0.05)  # the cancellations reach the writer's futures
        gate.set()
        await asyncio.gather(blocked, queued, return_exceptions=True)

        await asyncio.wait_for(db.write(lambda s: checkpoints.begin_add(s, _sandbox("after"))), 10)

        assert [s.container_id for s in db.read_sync(checkpoints.list_sandboxes)] == ["after"]
    finally:
        db.close()


@pytest.mark.parametrize("read_only", [False, True])
def test_a_file_that_is_not_a_database_is_refused_as_unusable_not_crashed_on(
    db_path: Path, read_only: bool
) -> None:
    db_path.parent.mkdir(parents=True)
    garbage = b"not an sqlite database, whatever wrote it\n" * 200
    db_path.write_bytes(garbage)

    with pytest.raises(schema.SchemaError) as refused:  # what the daemon's start-up reports (exit 1)
        Database.open(db_path, read_only=read_only)

    assert str(db_path) in str(refused.value)
    assert db_path.read_bytes() == garbage
    db_path.unlink()
    Database.open(db_path).close()  # the lock was released


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask a daemon usually runs under (files SQLite creates are ``0644`` by it)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _modes(db_path: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mode & 0o777 for path in db_path.parent.iterdir()}


@pytest.mark.usefixtures("usual_umask")
def test_the_database_and_its_wal_are_its_owners_alone_in_a_state_dir_readable_by_all(db_path: Path) -> None:
    """They record every delegate's configuration; SQLite made them 0644 in a state directory that
    existed (a hostPath kubelet made 0755), where upstream keeps its cache of them 0600."""
    db_path.parent.mkdir(mode=0o755)
    db = Database.open(db_path)
    try:
        db.write_sync(lambda s: checkpoints.begin_add(s, _sandbox("c1")))
        assert _modes(db_path) == {
            "state.db": 0o600,
            "state.db-wal": 0o600,
            "state.db-shm": 0o600,
            "state.db.lock": 0o600,
        }
    finally:
        db.close()


@pytest.mark.usefixtures("usual_umask")
def test_a_database_an_earlier_release_left_readable_by_all_is_made_its_owners_alone(db_path: Path) -> None:
    db_path.parent.mkdir(mode=0o755)
    Database.open(db_path).close()
    db_path.chmod(0o644)

    db = Database.open(db_path)
    try:
        db.write_sync(lambda s: checkpoints.begin_add(s, _sandbox("c1")))
        modes = _modes(db_path)
    finally:
        db.close()

    assert {name: modes[name] for name in ("state.db", "state.db-wal", "state.db-shm")} == {
        "state.db": 0o600,
        "state.db-wal": 0o600,
        "state.db-shm": 0o600,
    }
