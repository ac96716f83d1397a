"""The mirror tables in the state database: relists replace, watch positions persist, migrations rerun."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.store import mirror, schema
from app.store.database import Database
from app.store.mirror_records import MirrorCounts, NadRecord, PodRecord, ReplaceOutcome, WatchState
from app.store.models import METADATA


def pod(name: str, uid: str = "u", namespace: str = "default", **annotations: str) -> PodRecord:
    return PodRecord(namespace, name, uid, "node-a", "1", annotations)


def nad(namespace: str, name: str, config: str = "{}") -> NadRecord:
    return NadRecord(namespace, name, f"uid-{name}", "1", config, "")


def test_a_relist_upserts_what_it_lists_and_deletes_what_it_does_not(database: Database) -> None:
    database.write_sync(partial(mirror.upsert_pod, pod=pod("stale")))
    database.write_sync(partial(mirror.upsert_pod, pod=pod("kept", uid="old")))

    outcome = database.write_sync(
        partial(mirror.replace_pods, snapshot=[pod("kept", uid="new"), pod("added")])
    )

    assert outcome == ReplaceOutcome(upserted=2, deleted=(("default", "stale"),))
    assert [(p.name, p.uid) for p in database.read_sync(mirror.list_pods)] == [
        ("added", "u"),
        ("kept", "new"),
    ]


def test_lookups_answer_what_the_mirror_holds_and_none_for_what_it_does_not(database: Database) -> None:
    kept = pod("kept", uid="uid-1", namespace="team", **{"k8s.v1.cni.cncf.io/networks": "a"})
    database.write_sync(partial(mirror.replace_pods, snapshot=[kept, pod("other", uid="uid-2")]))
    database.write_sync(partial(mirror.replace_nads, snapshot=[nad("team", "net", '{"type": "bridge"}')]))

    assert database.read_sync(partial(mirror.get_pod, namespace="team", name="kept")) == kept
    assert database.read_sync(partial(mirror.get_pod, namespace="default", name="kept")) is None
    assert database.read_sync(partial(mirror.get_nad, namespace="team", name="net")) == nad(
        "team", "net", '{"type": "bridge"}'
    )
    assert database.read_sync(partial(mirror.get_nad, namespace="team", name="gone")) is None
    assert database.read_sync(mirror.pod_uids) == {("team", "kept"): "uid-1", ("default", "other"): "uid-2"}


def test_a_namespaced_nad_relist_leaves_other_namespaces_alone(database: Database) -> None:
    database.write_sync(partial(mirror.replace_nads, snapshot=[nad("a", "x"), nad("b", "y")]))

    outcome = database.write_sync(partial(mirror.replace_nads, snapshot=[], namespace="a"))

    assert outcome.deleted == (("a", "x"),)
    assert [(n.namespace, n.name) for n in database.read_sync(mirror.list_nads)] == [("b", "y")]


def test_pod_annotations_round_trip_as_given(database: Database) -> None:
    database.write_sync(partial(mirror.upsert_pod, pod=pod("p", **{"k8s.v1.cni.cncf.io/networks": "a,b"})))

    stored = database.read_sync(partial(mirror.get_pod, namespace="default", name="p"))

    assert stored == pod("p", **{"k8s.v1.cni.cncf.io/networks": "a,b"})
    assert database.read_sync(partial(mirror.get_pod, namespace="default", name="q")) is None
    assert database.read_sync(mirror.counts) == MirrorCounts(pods=1, nads=0)


def test_deleting_what_is_not_mirrored_says_so(database: Database) -> None:
    assert database.write_sync(partial(mirror.delete_pod, namespace="default", name="nope")) is False
    assert database.write_sync(partial(mirror.delete_nad, namespace="default", name="nope")) is False


def test_watch_positions_are_kept_with_their_counters(database: Database) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    database.write_sync(partial(mirror.record_relist, key="pods", scope="s", resource_version="10", at=at))
    database.write_sync(partial(mirror.record_progress, key="pods", resource_version="12", events=2, at=at))
    database.write_sync(partial(mirror.record_progress, key="pods", resource_version="15", events=0, at=None))

    state = database.read_sync(partial(mirror.get_watch_state, key="pods"))
    database.write_sync(partial(mirror.forget_resource_version, key="pods"))
    forgotten = database.read_sync(partial(mirror.get_watch_state, key="pods"))

    assert state == WatchState("pods", "s", "15", synced_at=at, last_event_at=at, relists=1, events=2)
    assert forgotten is not None
    assert forgotten.resource_version == ""
    assert forgotten.relists == 1


def test_a_whole_watch_state_can_be_set_and_read_back(database: Database) -> None:
    state = WatchState("nads/x", "nads namespace=x", "7", relists=3, events=9)

    database.write_sync(partial(mirror.set_watch_state, state=state))

    assert database.read_sync(partial(mirror.get_watch_state, key="nads/x")) == state
    assert database.read_sync(partial(mirror.get_watch_state, key="other")) is None


def test_the_models_describe_exactly_what_the_migrations_create(database: Database) -> None:
    engine = schema.alembic_engine(database.path)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, METADATA) == []
    finally:
        engine.dispose()


def test_the_mirror_migration_reruns_safely_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Database.open(path).close()
    with sqlite3.connect(path) as connection:  # as if killed after creating one table, before the stamp
        connection.execute("DROP TABLE mirror_nads")
        connection.execute("UPDATE alembic_version SET version_num = '0001'")

    database = Database.open(path)
    try:
        database.write_sync(partial(mirror.upsert_nad, nad=nad("a", "x")))
        assert database.read_sync(schema.current_revision) == schema.head_revision()
    finally:
        database.close()


def test_a_static_pod_is_mirrored_with_no_uid_gc_could_compare(database: Database) -> None:
    """The runtime names a static pod by the kubelet's own UID, the API's mirror pod by another:
    GC must not take the difference for a recreated pod (and tear a live pod's network down), so
    the UIDs it reads leave a static pod's out."""
    static = pod(
        "etcd-node-a", uid="mirror-uid", namespace="kube-system", **{"kubernetes.io/config.source": "file"}
    )
    database.write_sync(partial(mirror.replace_pods, snapshot=[static, pod("web", uid="uid-2")]))

    assert database.read_sync(mirror.pod_uids) == {
        ("kube-system", "etcd-node-a"): "",
        ("default", "web"): "uid-2",
    }
