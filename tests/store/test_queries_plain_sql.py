"""The operator's read model on the rows other modules wrote: what its own SQL reads.

``app.store.queries`` reads the sandboxes' counts, the container ID prefixes and the mirror's
watches in plain SQL on the unit's cursor; the rows are written by the store's own modules. These
pin what tests/ops meets only in part: each watch, in key order, with its stored times read back
to the microsecond and a never-synced one as nulls; a database without the mirror's tables; the
counts by state in state order; a container ID that is also the prefix of others.
"""

from __future__ import annotations

import ast
import sqlite3
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

import app.store.queries
from app.store import checkpoints, mirror, queries
from app.store.database import Connection, Database
from app.store.mirror_records import NadRecord, PodRecord, WatchState
from app.store.records import PodIdentity, SandboxIntent

NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def _begin(connection: Connection, container_id: str) -> None:
    pod = PodIdentity("ns", f"pod-{container_id}", f"uid-{container_id}")
    sandbox = SandboxIntent(container_id, "/var/run/netns/x", "eth0", "1.0.0", pod, "boot")
    checkpoints.begin_add(connection, sandbox)


def _ready(connection: Connection, container_id: str) -> None:
    _begin(connection, container_id)
    checkpoints.finish_add(connection, container_id)


def test_each_watch_is_shown_in_key_order_with_its_times_to_the_microsecond(db: Database) -> None:
    synced = NOW - timedelta(seconds=90, microseconds=5)
    heard = NOW - timedelta(seconds=1, microseconds=250_000)
    pods = WatchState("pods", "node=n1", "41", synced_at=synced, last_event_at=heard, relists=2, events=7)
    db.write_sync(partial(mirror.set_watch_state, state=pods))
    db.write_sync(partial(mirror.set_watch_state, state=WatchState("nads", "all", "9")))
    db.write_sync(partial(mirror.upsert_pod, pod=PodRecord("ns", "a", "uid-a")))
    db.write_sync(partial(mirror.upsert_pod, pod=PodRecord("ns", "b", "uid-b")))
    db.write_sync(partial(mirror.upsert_nad, nad=NadRecord("ns", "net", "uid-net")))

    status = db.read_sync(partial(queries.store_status, now=NOW))

    assert status["mirror"] == {
        "pods": 2,
        "nads": 1,
        "watches": [
            {
                "key": "nads",
                "scope": "all",
                "synced": False,
                "syncedAt": None,
                "lastEventAt": None,
                "lagSeconds": None,
                "resourceVersion": "9",
                "relists": 0,
                "events": 0,
            },
            {
                "key": "pods",
                "scope": "node=n1",
                "synced": True,
                "syncedAt": queries.timestamp(synced),
                "lastEventAt": queries.timestamp(heard),
                "lagSeconds": 1.25,
                "resourceVersion": "41",
                "relists": 2,
                "events": 7,
            },
        ],
    }
    assert status["mirror"]["watches"][1]["syncedAt"] == "2024-05-06T07:06:39.123451Z"


def test_a_watch_heard_only_at_its_relist_lags_from_it(db: Database) -> None:
    at = NOW - timedelta(seconds=3)
    db.write_sync(partial(mirror.record_relist, key="pods", scope="node=n1", resource_version="5", at=at))

    status = db.read_sync(partial(queries.store_status, now=NOW))

    assert status["mirror"] is not None
    (watch,) = status["mirror"]["watches"]
    shown = (watch["synced"], watch["lastEventAt"], watch["lagSeconds"], watch["relists"])
    assert shown == (True, None, 3.0, 1)


def test_a_database_without_the_mirrors_tables_shows_no_mirror(db: Database, db_path: Path) -> None:
    db.close()
    with sqlite3.connect(db_path) as connection:
        connection.execute("DROP TABLE watch_state")

    status, _size = queries.read_file(db_path, partial(queries.store_status, now=NOW))

    assert status["mirror"] is None


def test_sandboxes_are_counted_by_state_in_state_order(db: Database) -> None:
    for container_id in ("c3", "c1", "c2"):
        db.write_sync(partial(_ready, container_id=container_id))
    db.write_sync(partial(_begin, container_id="c4"))
    db.write_sync(partial(checkpoints.begin_delete, container_id="c1"))

    status = db.read_sync(partial(queries.store_status, now=NOW))

    assert list(status["sandboxes"].items()) == [("adding", 1), ("deleting", 1), ("ready", 2)]


def test_an_empty_checkpoint_counts_no_sandboxes(db: Database) -> None:
    assert db.read_sync(partial(queries.store_status, now=NOW))["sandboxes"] == {}


def test_a_container_is_found_by_its_id_though_it_begins_others_and_by_a_unique_prefix(db: Database) -> None:
    for container_id in ("abc", "abc1", "abc2", "abd"):
        db.write_sync(partial(_ready, container_id=container_id))

    assert db.read_sync(partial(queries.sandbox, container="abc"))["containerID"] == "abc"
    assert db.read_sync(partial(queries.sandbox, container="abd"))["containerID"] == "abd"
    assert db.read_sync(partial(queries.sandbox, container="abc2"))["podName"] == "pod-abc2"
    with pytest.raises(queries.AmbiguousError, match=r"it begins abc, abc1, abc2, abd; give more"):
        db.read_sync(partial(queries.sandbox, container="ab"))
    with pytest.raises(queries.NotFoundError):
        db.read_sync(partial(queries.sandbox, container="abe"))


def test_a_prefix_of_many_containers_names_the_first_few_and_more(db: Database) -> None:
    ids = [f"f{index}{'0' * 10}" for index in range(queries.AMBIGUOUS_SHOWN + 2)]
    for container_id in reversed(ids):
        db.write_sync(partial(_ready, container_id=container_id))

    with pytest.raises(queries.AmbiguousError) as raised:
        db.read_sync(partial(queries.sandbox, container="f"))

    shown = ", ".join(ids[: queries.AMBIGUOUS_SHOWN])
    assert f"it begins {shown} and more; give more of the ID" in str(raised.value)


def test_the_read_model_imports_no_sqlalchemy_and_no_tables() -> None:
    source = Path(app.store.queries.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)

    assert not {name for name in imported if name.split(".")[0] == "sqlalchemy"}
    assert "app.store.models" not in imported
