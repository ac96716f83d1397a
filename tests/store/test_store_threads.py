"""The store's threads: the writer's savepoints around units of work, the readers, what a failed
commit or read leaves behind, and plain SQL's timestamps against SQLAlchemy's."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import DateTime
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite import DATETIME

from app import metrics
from app.store import checkpoints, database, records_sql
from app.store.database import READERS, Connection, Database
from app.store.records import DelegateFacts, DelegateIntent, PodIdentity, SandboxIntent


def _sandbox(container_id: str) -> SandboxIntent:
    return SandboxIntent(
        container_id, "/var/run/netns/x", "eth0", "1.0.0", PodIdentity("ns", "pod", "uid"), "boot", "4:42"
    )


def _intent(container_id: str, ifname: str, position: int, **extra: Any) -> DelegateIntent:
    return DelegateIntent(
        container_id=container_id,
        ifname=ifname,
        position=position,
        is_master=position == 0,
        network_name=f"ns/net{position}",
        plugin_types=("bridge", "tuning"),
        config=b'{"cniVersion":"1.0.0","name":"net"}',
        cni_args=(("K8S_POD_NAME", "pod"), ("IgnoreUnknown", "true")),
        capability_args={"portMappings": [{"hostPort": 80}]},
        cni_path=("/opt/cni/bin", "/usr/lib/cni"),
        root="/hostroot",
        **extra,
    )


def _pod(connection: Connection, name: str) -> None:
    connection.execute(
        "INSERT INTO mirror_pods (namespace, name, uid, node_name, resource_version, annotations)"
        " VALUES ('ns', ?, ?, '', '', '{}')",
        (name, f"uid-{name}"),
    )


def _pod_names(connection: Connection) -> list[str]:
    return sorted(name for (name,) in connection.execute("SELECT name FROM mirror_pods"))


async def _one_batch(db: Database, *units: Any, commits: bool = True) -> list[Any]:
    """Run ``units`` as concurrent writes in a single batch (the writer is held busy until all of
    them are queued behind it); ``commits``: whether that batch is expected to commit."""
    busy, release = threading.Event(), threading.Event()

    def hold(connection: Connection) -> None:
        busy.set()
        release.wait(10)

    held = asyncio.ensure_future(db.write(hold))
    await asyncio.to_thread(busy.wait, 10)
    batches_before = db.commit_stats[0]  # the batch of ``hold`` is not counted yet
    writes = [asyncio.ensure_future(db.write(unit)) for unit in units]
    await asyncio.sleep(0)
    release.set()
    await held
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert db.commit_stats[0] == batches_before + 1 + commits, "the units were not committed in one batch"
    return outcomes


def _synchronous(connection: Connection) -> int:
    """The ``synchronous`` level the unit's transaction commits with: 2 FULL (synced), 1 NORMAL."""
    level: int = records_sql.cursor_of(connection).execute("PRAGMA synchronous").fetchone()[0]
    return level


async def test_a_write_that_need_not_be_durable_commits_unsynced_and_the_next_durable_one_synced(
    db: Database,
) -> None:
    assert await db.write(_synchronous) == 2
    assert await db.write(_synchronous, durable=False) == 1
    assert await db.write(_synchronous, durable=False) == 1
    assert await db.write(_synchronous) == 2
    assert await asyncio.to_thread(db.write_sync, _synchronous, durable=False) == 1


@contextlib.asynccontextmanager
async def _writer_busy(db: Database) -> AsyncIterator[None]:
    """The writer busy with a unit of its own while the block queues writes: once the block ends,
    they are committed in one batch."""
    busy, release = threading.Event(), threading.Event()

    def hold(connection: Connection) -> None:
        busy.set()
        release.wait(10)

    held = asyncio.ensure_future(db.write(hold, durable=False))
    await asyncio.to_thread(busy.wait, 10)
    try:
        yield
        await asyncio.sleep(0)
    finally:
        release.set()
        await held


async def test_a_batch_holding_one_durable_write_is_committed_durably(db: Database) -> None:
    async with _writer_busy(db):
        batches_before = db.commit_stats[0]
        mixed = [
            asyncio.ensure_future(db.write(_synchronous, durable=False)),
            asyncio.ensure_future(db.write(_synchronous)),
            asyncio.ensure_future(db.write(_synchronous, durable=False)),
        ]
    assert await asyncio.gather(*mixed) == [2, 2, 2]
    assert db.commit_stats[0] == batches_before + 2, "the three writes were not committed in one batch"
    assert await db.write(_synchronous, durable=False) == 1


def _record_syncs(monkeypatch: pytest.MonkeyPatch, *, failing: bool = False) -> list[str]:
    """What ``os.fdatasync``/``os.fsync`` are called on from now on (paths), optionally failing with EIO."""
    synced: list[str] = []

    def recording(real: Any) -> Any:
        def sync(fd: int) -> None:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            if failing:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real(fd)

        return sync

    monkeypatch.setattr(os, "fdatasync", recording(os.fdatasync))
    monkeypatch.setattr(os, "fsync", recording(os.fsync))
    return synced


async def test_write_then_sync_answers_once_committed_and_then_once_the_wal_is_on_disk(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _record_syncs(monkeypatch)
    wal = f"{db.path}-wal"

    level, on_disk = await db.write_then_sync(_synchronous)
    await on_disk
    assert level == 1  # committed unsynced: the sync is ours, after the commit
    assert synced == [wal, str(db.path.parent)]  # a WAL seen for the first time: its directory too

    synced.clear()
    _, on_disk = await db.write_then_sync(_synchronous)
    await on_disk
    assert synced == [wal]
    assert await db.write(_synchronous) == 2


async def test_a_wal_sync_that_fails_reaches_the_caller_and_the_writer_goes_on(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record_syncs(monkeypatch, failing=True)

    _, on_disk = await db.write_then_sync(_synchronous)
    with pytest.raises(OSError, match="Input/output error"):
        await on_disk
    monkeypatch.undo()
    synced = _record_syncs(monkeypatch)
    assert await db.write(_synchronous) == 2
    _, on_disk = await db.write_then_sync(_synchronous)
    await on_disk
    assert synced == [f"{db.path}-wal", str(db.path.parent)]  # opened afresh after the failure


async def test_write_then_sync_in_a_durable_batch_is_synced_by_the_commit(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _writer_busy(db):
        synced = _record_syncs(monkeypatch)
        written_then_synced = asyncio.ensure_future(db.write_then_sync(_synchronous))
        written = asyncio.ensure_future(db.write(_synchronous))
    (level, on_disk), durable_level = await asyncio.gather(written_then_synced, written)
    await on_disk
    assert (level, durable_level) == (2, 2)
    assert synced == []  # SQLite synced the batch itself


async def test_a_lone_unit_runs_without_a_savepoint_and_its_failure_leaves_nothing(db: Database) -> None:
    def mixed_then_fails(connection: Connection) -> None:
        _pod(connection, "lost")
        checkpoints.begin_add(connection, _sandbox("lost"))
        raise RuntimeError("fails after writing through both")

    def in_the_writers_savepoint(connection: Connection) -> bool:
        """RELEASE of the writer's savepoint ``unit`` succeeds only inside it."""
        try:
            records_sql.cursor_of(connection).execute("RELEASE unit")
        except sqlite3.OperationalError:
            return False
        return True

    with pytest.raises(RuntimeError, match="fails after writing"):
        await db.write(mixed_then_fails)
    assert await db.read(checkpoints.list_sandboxes) == []
    assert await db.read(_pod_names) == []
    assert await db.write(in_the_writers_savepoint) is False
    await db.write(lambda s: checkpoints.begin_add(s, _sandbox("after")))  # the writer goes on
    assert [s.container_id for s in await db.read(checkpoints.list_sandboxes)] == ["after"]


async def test_a_failing_unit_undoes_only_itself_beside_the_others_of_its_batch(db: Database) -> None:
    def duplicate_pod(connection: Connection) -> None:
        _pod(connection, "dup")
        _pod(connection, "dup")  # fails: the primary key is taken

    def mixed(connection: Connection) -> None:
        checkpoints.begin_add(connection, _sandbox("mixed"))
        _pod(connection, "mixed")
        checkpoints.record_intent(connection, _intent("mixed", "eth0", 0))

    def mixed_then_fails(connection: Connection) -> None:
        _pod(connection, "lost")
        checkpoints.begin_add(connection, _sandbox("lost"))
        raise RuntimeError("fails after writing through both")

    def kept(connection: Connection) -> None:
        _pod(connection, "kept")

    outcomes = await _one_batch(
        db,
        lambda s: checkpoints.begin_add(s, _sandbox("c1")),
        duplicate_pod,
        kept,
        mixed,
        mixed_then_fails,
        lambda s: checkpoints.begin_add(s, _sandbox("c2")),
    )

    assert [type(o) for o in outcomes] == [
        type(None),
        sqlite3.IntegrityError,
        type(None),
        type(None),
        RuntimeError,
        type(None),
    ]
    sandboxes = await db.read(checkpoints.list_sandboxes)
    assert sorted(s.container_id for s in sandboxes) == ["c1", "c2", "mixed"]
    assert [a.ifname for s in sandboxes if s.container_id == "mixed" for a in s.attachments] == ["eth0"]
    pods = await db.read(_pod_names)
    assert pods == ["kept", "mixed"]


async def test_each_unit_runs_in_its_threads_transaction(db: Database) -> None:
    seen: list[bool] = []

    def look(connection: Connection) -> None:
        seen.append(connection.in_transaction)

    def load_pods(connection: Connection) -> None:
        _pod(connection, "p1")
        _pod_names(connection)

    await db.write(load_pods)
    await _one_batch(db, look, lambda s: _pod(s, "p2"), look)
    await db.read(look)
    await db.read(_pod_names)
    for _ in range(READERS):
        await db.read(look)
    db.read_sync(look)

    assert seen == [True] * (4 + READERS)


async def test_a_units_statements_see_its_own_writes_before_they_are_committed(db: Database) -> None:
    def add(connection: Connection) -> list[str]:
        checkpoints.begin_add(connection, _sandbox("c1"))
        checkpoints.record_intent(connection, _intent("c1", "eth0", 0))
        return [cid for (cid,) in connection.execute("SELECT container_id FROM sandboxes")]

    assert await db.write(add) == ["c1"]


async def test_a_commit_that_fails_fails_its_whole_batch_and_the_writer_carries_on(db: Database) -> None:
    def orphan(connection: Connection) -> None:
        cursor = records_sql.cursor_of(connection)
        cursor.execute("PRAGMA defer_foreign_keys=ON")  # the missing sandbox is noticed at COMMIT
        checkpoints.record_intent(connection, _intent("no-such-sandbox", "eth0", 0))

    outcomes = await _one_batch(db, lambda s: checkpoints.begin_add(s, _sandbox("c1")), orphan, commits=False)

    assert all(isinstance(o, sqlite3.IntegrityError) for o in outcomes), outcomes
    assert await db.read(checkpoints.list_sandboxes) == []
    await db.write(lambda s: checkpoints.begin_add(s, _sandbox("c2")))
    assert [s.container_id for s in await db.read(checkpoints.list_sandboxes)] == ["c2"]


async def test_a_failing_read_leaves_every_reader_usable(db: Database) -> None:
    empty: dict[str, object] = {}
    await db.write(lambda s: checkpoints.begin_add(s, _sandbox("c1")))
    for _ in range(READERS):
        with pytest.raises(sqlite3.OperationalError):
            await db.read(lambda s: s.execute("SELECT * FROM no_such_table"))
        with pytest.raises(LookupError):
            await db.read(lambda s: (checkpoints.load_sandbox(s, "c1"), empty["missing"]))

    found = await asyncio.gather(*(db.read(lambda s: checkpoints.load_sandbox(s, "c1")) for _ in range(8)))
    assert all(record is not None and record.container_id == "c1" for record in found)


async def test_a_read_cancelled_while_queued_never_runs(db: Database) -> None:
    busy, release = threading.Barrier(READERS + 1), threading.Event()
    ran: list[str] = []

    def hold(connection: Connection) -> None:
        busy.wait(10)
        release.wait(10)

    def run_queued(connection: Connection) -> None:
        ran.append("queued")

    def run_after(connection: Connection) -> str:
        ran.append("after")
        return "done"

    held = [asyncio.ensure_future(db.read(hold)) for _ in range(READERS)]
    await asyncio.to_thread(busy.wait, 10)  # every reader is busy
    queued = asyncio.ensure_future(db.read(run_queued))
    await asyncio.sleep(0)
    queued.cancel()
    release.set()
    await asyncio.gather(*held)

    assert await db.read(run_after) == "done"
    assert queued.cancelled()
    assert ran == ["after"]


async def test_reads_see_each_write_as_soon_as_it_returns(db: Database) -> None:
    for index in range(20):
        await db.write(partial(checkpoints.begin_add, sandbox=_sandbox(f"c{index}")))
        assert await db.read(partial(checkpoints.load_sandbox, container_id=f"c{index}")) is not None


async def test_a_closed_database_refuses_reads_and_writes(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "state.db")
    db.close()
    with pytest.raises(RuntimeError):
        await db.read(checkpoints.list_sandboxes)
    with pytest.raises(RuntimeError):
        await db.write(lambda s: checkpoints.begin_add(s, _sandbox("c1")))
    with pytest.raises(RuntimeError):
        db.write_sync(lambda s: checkpoints.begin_add(s, _sandbox("c1")))


def test_writes_from_threads_and_from_two_event_loops_all_commit(db: Database) -> None:
    def loop_writes(prefix: str) -> None:
        async def run() -> None:
            await asyncio.gather(
                *(
                    db.write(partial(checkpoints.begin_add, sandbox=_sandbox(f"{prefix}{i}")))
                    for i in range(10)
                )
            )

        asyncio.run(run())

    threads = [threading.Thread(target=loop_writes, args=(prefix,)) for prefix in ("a", "b")]
    threads.append(
        threading.Thread(
            target=lambda: [
                db.write_sync(partial(checkpoints.begin_add, sandbox=_sandbox(f"t{i}"))) for i in range(10)
            ]
        )
    )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(db.read_sync(checkpoints.list_sandboxes)) == 30


async def test_the_checkpoint_read_in_plain_sql_matches_the_core_read(db: Database, tmp_path: Path) -> None:
    device = {"pciAddress": "0000:03:00.2", "name": "ens1f0v2", "mac": "aa:bb:cc:dd:ee:ff"}

    def begin(s: Connection) -> None:
        checkpoints.begin_add(s, _sandbox("c1"))
        checkpoints.record_intent(s, _intent("c1", "eth0", 0))
        checkpoints.record_intent(s, _intent("c1", "net1", 1, device=device, device_ids=("0000:03:00.2",)))
        checkpoints.record_intent(s, _intent("c1", "net2", 2))

    await db.write(begin)
    facts = DelegateFacts(ips=("10.0.0.5/24",), macs=("0a:58:0a:00:00:05",), device_ids=())

    def finish(s: Connection) -> None:
        checkpoints.record_result(s, container_id="c1", ifname="eth0", result='{"ips":[]}', facts=facts)
        checkpoints.record_error(s, container_id="c1", ifname="net2", error='{"code":11}')
        checkpoints.finish_add(s, "c1")

    await db.write(finish)
    with sqlite3.connect(tmp_path / "state.db") as raw:  # a row recorded before its facts were derived
        raw.execute("UPDATE attachments SET ips = NULL, macs = NULL, device_ids = NULL WHERE ifname = 'net2'")

    by_core = (await db.read(checkpoints.list_sandboxes))[0]
    by_reader = await db.read(lambda s: checkpoints.load_sandbox(s, "c1"))
    by_own_connection = db.read_sync(lambda s: checkpoints.load_sandbox(s, "c1"))

    assert by_reader == by_core == by_own_connection
    assert by_reader is not None
    assert by_reader.created_at.tzinfo is not None
    assert [a.is_master for a in by_reader.attachments] == [True, False, False]
    assert by_reader.attachments[1].device == device
    assert by_reader.attachments[2].facts == DelegateFacts()
    assert await db.read(lambda s: checkpoints.load_sandbox(s, "c2")) is None


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 6, 1, 1, 30, 0, 120, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    ],
)
def test_plain_sql_timestamps_are_what_sqlalchemy_stores_and_reads(moment: datetime) -> None:
    sqlite_datetime = DateTime().dialect_impl(sqlite.dialect())
    assert isinstance(sqlite_datetime, DATETIME)
    bind = sqlite_datetime.bind_processor(sqlite.dialect())
    result = sqlite_datetime.result_processor(sqlite.dialect(), None)
    assert bind is not None
    assert result is not None
    stored_by_sqlalchemy = bind(moment.astimezone(UTC).replace(tzinfo=None))
    read_by_sqlalchemy = result(stored_by_sqlalchemy)
    assert isinstance(read_by_sqlalchemy, datetime)

    assert records_sql.stamp(moment) == stored_by_sqlalchemy
    assert (
        records_sql.read_stamp(records_sql.stamp(moment)) == read_by_sqlalchemy.replace(tzinfo=UTC) == moment
    )


def test_plain_sql_json_is_what_json_dumps_writes() -> None:
    assert records_sql.json_list(()) == json.dumps([]) == "[]"
    assert records_sql.json_list(("a", "é\n")) == json.dumps(["a", "é\n"])
    assert records_sql.json_list([["K", "v"]]) == json.dumps([["K", "v"]])
    mapping = {"z": 1, "a": {"y": [1.5, None], "b": True}}
    assert records_sql.json_object(mapping) == json.dumps(mapping, sort_keys=True)


def _reader_threads() -> int:
    return sum(thread.name.startswith("store-reader") for thread in threading.enumerate())


def test_reader_threads_start_with_the_first_read_and_end_with_close(tmp_path: Path) -> None:
    Database.open(tmp_path / "state.db").close()
    before = _reader_threads()
    db = Database.open(tmp_path / "state.db", read_only=True)
    try:
        assert db.read_sync(checkpoints.list_sandboxes) == []
        assert _reader_threads() == before  # a one-shot reader such as multusctl starts none
        assert asyncio.run(db.read(checkpoints.list_sandboxes)) == []
        assert _reader_threads() == before + READERS
    finally:
        db.close()
    assert _reader_threads() == before


async def test_begin_delete_and_load_marks_the_sandbox_and_returns_it_as_it_was_recorded(
    db: Database,
) -> None:
    """One unit: the sandbox and its attachments marked ``deleting``; what is returned is the
    sandbox as recorded before (its state ``deleting``), its attachments in the states they had,
    which tell a DEL an earlier run began from one this DEL begins."""

    def add(s: Connection) -> None:
        checkpoints.begin_add(s, _sandbox("c1"))
        checkpoints.record_intent(s, _intent("c1", "eth0", 0))
        checkpoints.record_intent(s, _intent("c1", "net1", 1))
        checkpoints.finish_add(s, "c1")

    await db.write(add)

    returned = await db.write(partial(checkpoints.begin_delete_and_load, container_id="c1"))
    missing = await db.write(partial(checkpoints.begin_delete_and_load, container_id="c2"))

    recorded = await db.read(partial(checkpoints.load_sandbox, container_id="c1"))
    assert returned is not None
    assert recorded is not None
    assert returned.state == recorded.state == "deleting"
    assert [(a.ifname, a.state) for a in recorded.attachments] == [("eth0", "deleting"), ("net1", "deleting")]
    assert [(a.ifname, a.state) for a in returned.attachments] == [("eth0", "intent"), ("net1", "intent")]
    assert missing is None
    assert [s.container_id for s in await db.read(checkpoints.list_sandboxes)] == ["c1"]


async def test_a_failed_unsynced_commit_leaves_the_writer_able_to_commit_durably(db: Database) -> None:
    def orphan(connection: Connection) -> None:
        cursor = records_sql.cursor_of(connection)
        cursor.execute("PRAGMA defer_foreign_keys=ON")  # the missing sandbox is noticed at COMMIT
        checkpoints.record_intent(connection, _intent("no-such-sandbox", "eth0", 0))

    with pytest.raises(sqlite3.IntegrityError):  # a failed COMMIT leaves SQLite's transaction open
        await db.write(orphan, durable=False)

    await db.write(lambda s: checkpoints.begin_add(s, _sandbox("c1")))  # durable: synchronous=FULL again
    assert [s.container_id for s in await db.read(checkpoints.list_sandboxes)] == ["c1"]
    assert await db.read(lambda s: s.execute("SELECT count(*) FROM attachments").fetchone()[0]) == 0


async def test_a_writer_that_could_not_reconnect_after_an_unsynced_batch_commits_durably_once_it_can(
    tmp_path: Path,
) -> None:
    """A failed rollback makes the writer reconnect; should that fail too (the file unreachable for
    a moment), the next batch reconnects, even one that commits at another ``synchronous`` level."""
    path = tmp_path / "state.db"
    aside = tmp_path / "aside.db"
    db = Database.open(path)

    def breaks_its_connection_and_the_file(connection: Connection) -> None:
        connection.close()  # its rollback fails: the writer reconnects
        path.rename(aside)
        path.mkdir()  # and cannot open the file
        raise RuntimeError("the unit failed")

    try:
        with pytest.raises(sqlite3.Error):
            await db.write(breaks_its_connection_and_the_file, durable=False)
        path.rmdir()
        aside.rename(path)

        await db.write(lambda s: checkpoints.begin_add(s, _sandbox("c1")))
        assert await db.write(_synchronous) == 2
        assert [s.container_id for s in await db.read(checkpoints.list_sandboxes)] == ["c1"]
    finally:
        db.close()


def _closing_while_queued(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``close`` run to its end after a caller passed the open check, before its job is queued
    (a caller on the event loop racing ``close`` in the daemon's shutdown thread)."""
    real_job = database._Job

    def job_after_close(*args: Any, **kwargs: Any) -> database._Job:
        db.close()
        return real_job(*args, **kwargs)

    monkeypatch.setattr(database, "_Job", job_after_close)


@pytest.mark.parametrize("how", ["submit_write", "write_then_sync", "read"])
async def test_a_caller_racing_close_is_refused_rather_than_left_waiting_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    db = Database.open(tmp_path / "state.db")
    await db.read(lambda c: None)  # the reader threads are running
    _closing_while_queued(db, monkeypatch)

    async def call() -> object:
        if how == "submit_write":
            return await db.submit_write(lambda c: None)
        if how == "write_then_sync":
            return await db.write_then_sync(lambda c: None)
        return await db.read(lambda c: None)

    waiting = asyncio.ensure_future(call())
    await asyncio.sleep(0)  # the call runs up to its first wait: queued, or refused

    try:
        assert waiting.done(), "queued behind a closed database: nobody will ever answer"
        with pytest.raises(RuntimeError, match="closed"):
            waiting.result()
    finally:
        waiting.cancel()


_BASE_EXCEPTIONS = [SystemExit(3), GeneratorExit(), asyncio.CancelledError()]
"""Not ``Exception``s: what a unit of work may still raise (KeyboardInterrupt would stop pytest itself)."""
ANSWER_WITHIN = 30
"""Seconds an answer may take before a test calls it lost (a caller would wait for ever)."""


def _raising(exc: BaseException) -> Any:
    def unit(connection: Connection) -> None:
        _pod(connection, "never")
        raise exc

    return unit


@pytest.mark.parametrize("exc", _BASE_EXCEPTIONS, ids=lambda exc: type(exc).__name__)
async def test_a_unit_raising_a_base_exception_fails_its_caller_and_every_thread_serves_on(
    db: Database, exc: BaseException
) -> None:
    for _ in range(READERS + 1):  # enough to reach every reader
        with pytest.raises(database.WorkAbortedError) as read:
            await asyncio.wait_for(db.read(_raising(exc)), ANSWER_WITHIN)
        assert read.value.__cause__ is exc
    with pytest.raises(database.WorkAbortedError):
        await asyncio.wait_for(db.write(_raising(exc)), ANSWER_WITHIN)
    outcomes = await asyncio.wait_for(_one_batch(db, lambda s: _pod(s, "kept"), _raising(exc)), ANSWER_WITHIN)
    assert isinstance(outcomes[1], database.WorkAbortedError)

    assert await asyncio.wait_for(db.read(_pod_names), ANSWER_WITHIN) == ["kept"]
    await asyncio.wait_for(db.write(lambda s: _pod(s, "after")), ANSWER_WITHIN)
    assert await asyncio.wait_for(
        asyncio.gather(*(db.read(_pod_names) for _ in range(4))),
        ANSWER_WITHIN,
    )


class _FailingObserve:
    def observe(self, value: float) -> None:
        raise RuntimeError("the batching code itself failed")


async def test_a_failure_of_the_writers_own_code_after_a_commit_still_answers_and_the_writer_serves_on(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "STORE_BATCH_SIZE", _FailingObserve())
    await asyncio.wait_for(db.write(lambda s: _pod(s, "committed")), ANSWER_WITHIN)
    monkeypatch.undo()

    await asyncio.wait_for(db.write(lambda s: _pod(s, "after")), ANSWER_WITHIN)
    assert await db.read(_pod_names) == [
        "after",
        "committed",
    ]


class _LargeResult:
    """Stands for a large query result (only its lifetime matters)."""


async def test_a_result_handed_over_is_not_kept_alive_by_the_thread_that_made_it(db: Database) -> None:
    await db.read(lambda c: None)  # the readers are started: each waits for its next job from now on
    for run in (db.read, db.write, partial(db.write, durable=False)):
        result = await run(lambda c: _LargeResult())
        released = threading.Event()
        weakref.finalize(result, released.set)
        del result

        assert await asyncio.to_thread(released.wait, ANSWER_WITHIN), (
            f"{run} kept its result until its next job"
        )


def _os_name(thread: threading.Thread) -> str:
    return Path(f"/proc/self/task/{thread.native_id}/comm").read_text().strip()


async def test_the_store_threads_show_their_names_to_the_operating_system(db_path: Path) -> None:
    """``top -H``, ``ps -L`` and ``perf`` read a thread's name from ``/proc``, not Python's: every
    thread of the daemon showed as ``python``, so the writer's CPU could not be told from the loop's."""
    expected = {"store-writer", *(f"store-reader_{index}" for index in range(READERS))}
    before = set(threading.enumerate())
    db = Database.open(db_path)
    try:
        await db.write(lambda connection: None)
        await db.read(lambda connection: None)
        started = set(threading.enumerate()) - before
        # each thread names itself first thing in its run, which may come after start() returned
        # (a reader that served no job yet, on a loaded machine): waited for, never assumed
        deadline = asyncio.get_running_loop().time() + ANSWER_WITHIN
        while (shown := {_os_name(thread) for thread in started}) != expected:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)
    finally:
        db.close()

    assert shown == expected
