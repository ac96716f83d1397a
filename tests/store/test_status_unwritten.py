"""The checkpoint's "network-status not written yet" mark (revision 0009): what a restart retries.

Real SQLite files, real alembic migrations; no daemon. The mark is what lets a restarted daemon
write a status that failed at ADD (``app.attach.status_retries``); the engine's and the daemon's
side are tested in ``tests/watch/test_status_write_retries.py`` and ``tests/e2e``.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from functools import partial
from pathlib import Path

from app.store import checkpoints, schema
from app.store.database import Connection, Database
from app.store.records import PodIdentity, SandboxIntent
from tests.store.builders import delegate_intent, record_running
from tests.store.migrating import migrate


def _sandbox(container_id: str, pod: str, uid: str = "") -> SandboxIntent:
    return SandboxIntent(
        container_id, "/var/run/netns/x", "eth0", "1.0.0", PodIdentity("ns", pod, uid or f"uid-{pod}"), "boot"
    )


def _marked_ids(connection: Connection) -> list[str]:
    query = "SELECT container_id FROM sandboxes WHERE status_unwritten ORDER BY created_at"
    return [str(row[0]) for row in connection.execute(query)]


def _retried(db: Database, *, limit: int = 100) -> list[str]:
    return [s.container_id for s in db.read_sync(partial(checkpoints.status_unwritten, limit=limit))]


def test_a_new_sandbox_is_not_marked_and_only_a_ready_one_can_be(db: Database) -> None:
    db.write_sync(partial(record_running, sandbox=_sandbox("c1", "a")))
    db.write_sync(partial(checkpoints.begin_add, sandbox=_sandbox("c2", "b")))  # its ADD still runs

    assert db.read_sync(_marked_ids) == []
    assert db.write_sync(partial(checkpoints.mark_status_unwritten, container_id="c1")) is True
    assert db.write_sync(partial(checkpoints.mark_status_unwritten, container_id="c2")) is False
    assert db.write_sync(partial(checkpoints.mark_status_unwritten, container_id="gone")) is False
    assert db.read_sync(_marked_ids) == ["c1"]
    assert _retried(db) == ["c1"]

    db.write_sync(partial(checkpoints.clear_status_unwritten, container_id="c1"))
    assert db.read_sync(_marked_ids) == []
    assert _retried(db) == []


def test_the_mark_leaves_with_the_sandbox_its_del_removes(db: Database) -> None:
    db.write_sync(partial(record_running, sandbox=_sandbox("c1", "a")))
    db.write_sync(partial(checkpoints.mark_status_unwritten, container_id="c1"))

    def delete(connection: Connection) -> bool:
        checkpoints.begin_delete(connection, "c1")
        checkpoints.remove_attachments(connection, container_id="c1", ifnames=["eth0"])
        return checkpoints.finish_delete(connection, "c1")

    assert db.write_sync(delete) is True
    assert db.read_sync(_marked_ids) == []
    assert _retried(db) == []


def test_a_sandbox_being_deleted_is_not_retried(db: Database) -> None:
    db.write_sync(partial(record_running, sandbox=_sandbox("c1", "a")))
    db.write_sync(partial(checkpoints.mark_status_unwritten, container_id="c1"))
    db.write_sync(partial(checkpoints.begin_delete, container_id="c1"))  # its DEL failed: pending

    assert _retried(db) == []


def test_only_the_newest_sandbox_of_a_pod_is_retried_never_an_older_one_over_it(db: Database) -> None:
    """The pod's newer sandbox may have written its status since (an ADD's successful write leaves
    an older sandbox's mark alone: it adds nothing to the hot path)."""
    db.write_sync(partial(record_running, sandbox=_sandbox("older", "p")))
    db.write_sync(partial(checkpoints.mark_status_unwritten, container_id="older"))
    db.write_sync(partial(record_running, sandbox=_sandbox("other-pod", "q")))
    db.write_sync(partial(checkpoints.mark_status_unwritten, container_id="other-pod"))
    db.write_sync(partial(record_running, sandbox=_sandbox("newer", "p")))  # its status was written

    assert _retried(db) == ["other-pod"]

    db.write_sync(partial(checkpoints.mark_status_unwritten, container_id="newer"))  # or failed too
    assert _retried(db) == ["other-pod", "newer"]


def test_at_most_the_newest_marked_sandboxes_are_read_oldest_first(db: Database) -> None:
    for index in range(5):
        db.write_sync(partial(record_running, sandbox=_sandbox(f"c{index}", f"p{index}")))
        db.write_sync(partial(checkpoints.mark_status_unwritten, container_id=f"c{index}"))

    assert _retried(db, limit=3) == ["c2", "c3", "c4"]
    assert _retried(db) == ["c0", "c1", "c2", "c3", "c4"]


def _rows(path: Path) -> tuple[set[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """(the columns of ``sandboxes``, its rows' (container, state), the attachments' (container, ifname))."""
    with sqlite3.connect(path) as raw:
        columns = {str(column[1]) for column in raw.execute("PRAGMA table_info(sandboxes)")}
        sandboxes = raw.execute("SELECT container_id, state FROM sandboxes ORDER BY container_id").fetchall()
        attachments = raw.execute(
            "SELECT container_id, ifname FROM attachments ORDER BY container_id"
        ).fetchall()
    return columns, sandboxes, attachments


def test_upgrading_from_0008_keeps_every_sandbox_and_marks_none(db_path: Path) -> None:
    db = Database.open(db_path)
    db.write_sync(partial(record_running, sandbox=_sandbox("c1", "a")))
    db.write_sync(
        partial(checkpoints.begin_add, sandbox=dataclasses.replace(_sandbox("c2", "b"), parallel=True))
    )
    db.write_sync(partial(checkpoints.record_intent, intent=delegate_intent("c2")))
    db.close()
    migrate(db_path, down_to="0008")
    columns, sandboxes, attachments = _rows(db_path)
    assert "status_unwritten" not in columns
    assert (sandboxes, attachments) == ([("c1", "ready"), ("c2", "adding")], [("c1", "eth0"), ("c2", "eth0")])

    db = Database.open(db_path)  # the daemon's start: migrated to head
    try:
        assert db.read_sync(schema.current_revision) == schema.head_revision()
        assert db.read_sync(_marked_ids) == []
        record = db.read_sync(partial(checkpoints.load_sandbox, container_id="c2"))
        assert record is not None
        assert (record.state, record.parallel, [a.ifname for a in record.attachments]) == (
            "adding",
            True,
            ["eth0"],
        )
        db.write_sync(partial(checkpoints.mark_status_unwritten, container_id="c1"))
        assert _retried(db) == ["c1"]
    finally:
        db.close()
    assert _rows(db_path)[1:] == ([("c1", "ready"), ("c2", "adding")], [("c1", "eth0"), ("c2", "eth0")])


def test_upgrading_again_after_a_kill_before_the_stamp_succeeds(db_path: Path) -> None:
    Database.open(db_path).close()
    with sqlite3.connect(db_path) as raw:  # 0009 ran, its stamp was not written
        raw.execute("UPDATE alembic_version SET version_num = '0008'")

    migrate(db_path)

    assert "status_unwritten" in _rows(db_path)[0]
