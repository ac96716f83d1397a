"""The Kubernetes mirror: this node's pods, NetworkAttachmentDefinitions, and each watch's position.

Written only by ``app.watch`` (events, relists, resourceVersions) inside ``Database.write``; read
by the watch package's pod and NAD sources and by GC. A cache of the API, never the truth
(invariant 1): losing it costs a relist, never a leak. Functions take a Core ``Connection`` and know no
Kubernetes rules: callers decide which annotations to keep and what a relist covers. Callers
should write a batch of changes together with the watch's new resourceVersion in one unit of
work, so the stored position never runs ahead of the stored objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update

from app.store.mirror_records import (
    CONFIG_SOURCE_ANNOTATION,
    MirrorCounts,
    NadRecord,
    ObjectKey,
    PodRecord,
    ReplaceOutcome,
    WatchState,
)
from app.store.models import MIRROR_NADS, MIRROR_PODS, WATCH_STATE
from app.store.records_sql import cursor_of

_UPSERT_POD = (
    f"INSERT INTO {MIRROR_PODS.name}"
    " (namespace, name, uid, node_name, resource_version, annotations)"
    " VALUES (:namespace, :name, :uid, :node_name, :resource_version, :annotations)"
    " ON CONFLICT (namespace, name) DO UPDATE SET uid = excluded.uid, node_name = excluded.node_name,"
    " resource_version = excluded.resource_version, annotations = excluded.annotations"
)
"""Upserts are plain SQL (``executemany``): a relist of 1,000 pods built SQLAlchemy statements
of 200 rows each, costlier in CPU and in the memory a start-up leaves behind."""
_UPSERT_NAD = (
    f"INSERT INTO {MIRROR_NADS.name}"
    " (namespace, name, uid, resource_version, config, resource_name)"
    " VALUES (:namespace, :name, :uid, :resource_version, :config, :resource_name)"
    " ON CONFLICT (namespace, name) DO UPDATE SET uid = excluded.uid,"
    " resource_version = excluded.resource_version, config = excluded.config,"
    " resource_name = excluded.resource_name"
)
_GET_POD = (
    f"SELECT uid, node_name, resource_version, annotations FROM {MIRROR_PODS.name}"
    " WHERE namespace = ? AND name = ?"
)
_POD_UIDS = (
    "SELECT namespace, name, CASE WHEN coalesce(json_extract(annotations,"
    f" '$.\"{CONFIG_SOURCE_ANNOTATION}\"'), 'api') = 'api' THEN uid ELSE '' END"
    f" FROM {MIRROR_PODS.name}"
)
"""(namespace, name, uid) of every mirrored pod; a static pod's uid as '' (its mirror pod's UID is
not the one the runtime names it by)."""
_GET_NAD = (
    f"SELECT uid, resource_version, config, resource_name FROM {MIRROR_NADS.name}"
    " WHERE namespace = ? AND name = ?"
)


# pods


def upsert_pod(connection: Connection, pod: PodRecord) -> None:
    """Insert or replace the pod named ``pod.namespace``/``pod.name``."""
    _upsert_pods(connection, [pod])


def delete_pod(connection: Connection, namespace: str, name: str) -> bool:
    """Forget a pod; True when it was mirrored."""
    result = connection.execute(
        delete(MIRROR_PODS).where(MIRROR_PODS.c.namespace == namespace, MIRROR_PODS.c.name == name)
    )
    return bool(getattr(result, "rowcount", 0))


def replace_pods(connection: Connection, snapshot: Iterable[PodRecord]) -> ReplaceOutcome:
    """A relist: make the mirrored pods exactly ``snapshot`` (upsert all, delete the absent)."""
    pods = list(snapshot)
    _upsert_pods(connection, pods)
    listed = {pod.key for pod in pods}
    stored = connection.execute(select(MIRROR_PODS.c.namespace, MIRROR_PODS.c.name))
    absent = tuple((namespace, name) for namespace, name in stored if (namespace, name) not in listed)
    for namespace, name in absent:
        delete_pod(connection, namespace, name)
    return ReplaceOutcome(upserted=len(pods), deleted=absent)


def get_pod(connection: Connection, namespace: str, name: str) -> PodRecord | None:
    """One pod, in plain SQL (every ADD asks: a SQLAlchemy statement costs several times more)."""
    row = cursor_of(connection).execute(_GET_POD, (namespace, name)).fetchone()
    if row is None:
        return None
    uid, node_name, resource_version, annotations = row
    return PodRecord(
        namespace=namespace,
        name=name,
        uid=uid,
        node_name=node_name,
        resource_version=resource_version,
        annotations=json.loads(annotations),
    )


def list_pods(connection: Connection) -> list[PodRecord]:
    """Every mirrored pod, by namespace and name (GC, tools, tests)."""
    rows = connection.execute(select(MIRROR_PODS).order_by(MIRROR_PODS.c.namespace, MIRROR_PODS.c.name))
    return [_pod_record(row) for row in rows]


def pod_uids(connection: Connection) -> dict[ObjectKey, str]:
    """(namespace, name) → uid of every mirrored pod, in plain SQL (every GC pass asks); '' for a
    static pod, whose API UID differs from the runtime's (``PodRecord.is_static``): nothing to
    compare, so GC never takes it for a recreated pod."""
    return {(namespace, name): uid for namespace, name, uid in cursor_of(connection).execute(_POD_UIDS)}


def _upsert_pods(connection: Connection, pods: list[PodRecord]) -> None:
    cursor_of(connection).executemany(_UPSERT_POD, [_pod_values(pod) for pod in pods])


def _pod_values(pod: PodRecord) -> dict[str, str]:
    return {
        "namespace": pod.namespace,
        "name": pod.name,
        "uid": pod.uid,
        "node_name": pod.node_name,
        "resource_version": pod.resource_version,
        "annotations": json.dumps(dict(pod.annotations), sort_keys=True),
    }


def _pod_record(row: Row[Any]) -> PodRecord:
    return PodRecord(
        namespace=row.namespace,
        name=row.name,
        uid=row.uid,
        node_name=row.node_name,
        resource_version=row.resource_version,
        annotations=json.loads(row.annotations),
    )


# NetworkAttachmentDefinitions


def upsert_nad(connection: Connection, nad: NadRecord) -> None:
    """Insert or replace the NAD named ``nad.namespace``/``nad.name``."""
    _upsert_nads(connection, [nad])


def delete_nad(connection: Connection, namespace: str, name: str) -> bool:
    """Forget a NAD; True when it was mirrored."""
    result = connection.execute(
        delete(MIRROR_NADS).where(MIRROR_NADS.c.namespace == namespace, MIRROR_NADS.c.name == name)
    )
    return bool(getattr(result, "rowcount", 0))


def replace_nads(
    connection: Connection, snapshot: Iterable[NadRecord], *, namespace: str | None = None
) -> ReplaceOutcome:
    """A relist: make the mirrored NADs (of ``namespace`` only, when given) exactly ``snapshot``."""
    nads = list(snapshot)
    _upsert_nads(connection, nads)
    listed = {nad.key for nad in nads}
    query = select(MIRROR_NADS.c.namespace, MIRROR_NADS.c.name)
    if namespace is not None:
        query = query.where(MIRROR_NADS.c.namespace == namespace)
    stored = connection.execute(query)
    absent = tuple((namespace, name) for namespace, name in stored if (namespace, name) not in listed)
    for nad_namespace, name in absent:
        delete_nad(connection, nad_namespace, name)
    return ReplaceOutcome(upserted=len(nads), deleted=absent)


def get_nad(connection: Connection, namespace: str, name: str) -> NadRecord | None:
    """One NAD, in plain SQL (every ADD asks, once per network from a NAD)."""
    row = cursor_of(connection).execute(_GET_NAD, (namespace, name)).fetchone()
    if row is None:
        return None
    uid, resource_version, config, resource_name = row
    return NadRecord(
        namespace=namespace,
        name=name,
        uid=uid,
        resource_version=resource_version,
        config=config,
        resource_name=resource_name,
    )


def list_nads(connection: Connection) -> list[NadRecord]:
    """Every mirrored NAD, by namespace and name (tools, tests)."""
    rows = connection.execute(select(MIRROR_NADS).order_by(MIRROR_NADS.c.namespace, MIRROR_NADS.c.name))
    return [_nad_record(row) for row in rows]


def _upsert_nads(connection: Connection, nads: list[NadRecord]) -> None:
    cursor_of(connection).executemany(_UPSERT_NAD, [_nad_values(nad) for nad in nads])


def _nad_values(nad: NadRecord) -> dict[str, str]:
    return {
        "namespace": nad.namespace,
        "name": nad.name,
        "uid": nad.uid,
        "resource_version": nad.resource_version,
        "config": nad.config,
        "resource_name": nad.resource_name,
    }


def _nad_record(row: Row[Any]) -> NadRecord:
    return NadRecord(
        namespace=row.namespace,
        name=row.name,
        uid=row.uid,
        resource_version=row.resource_version,
        config=row.config,
        resource_name=row.resource_name,
    )


# watch state

_WATCH_ROW = select(WATCH_STATE)


def get_watch_state(connection: Connection, key: str) -> WatchState | None:
    row = connection.execute(_WATCH_ROW.where(WATCH_STATE.c.key == key)).first()
    if row is None:
        return None
    return WatchState(
        key=row.key,
        scope=row.scope,
        resource_version=row.resource_version,
        synced_at=row.synced_at,
        last_event_at=row.last_event_at,
        relists=row.relists,
        events=row.events,
    )


def set_watch_state(connection: Connection, state: WatchState) -> None:
    """Write ``state`` as the whole row for ``state.key``."""
    _ensure_watch_row(connection, state.key)
    _update_watch_row(
        connection,
        state.key,
        scope=state.scope,
        resource_version=state.resource_version,
        synced_at=state.synced_at,
        last_event_at=state.last_event_at,
        relists=state.relists,
        events=state.events,
    )


def record_relist(
    connection: Connection, key: str, *, scope: str, resource_version: str, at: datetime
) -> None:
    """A relist of ``key`` was written: resume from ``resource_version``, one more relist counted."""
    _ensure_watch_row(connection, key)
    _update_watch_row(
        connection,
        key,
        scope=scope,
        resource_version=resource_version,
        synced_at=at,
        relists=WATCH_STATE.c.relists + 1,
    )


def record_progress(
    connection: Connection, key: str, *, resource_version: str, events: int, at: datetime | None
) -> None:
    """A batch of ``events`` watch events (or a bookmark: 0 events) was written up to ``resource_version``."""
    _ensure_watch_row(connection, key)
    values: dict[str, Any] = {"resource_version": resource_version, "events": WATCH_STATE.c.events + events}
    if at is not None:
        values["last_event_at"] = at
    _update_watch_row(connection, key, **values)


def forget_resource_version(connection: Connection, key: str) -> None:
    """Make the next start of ``key`` relist (its history expired, or its scope changed)."""
    _update_watch_row(connection, key, resource_version="")


def _ensure_watch_row(connection: Connection, key: str) -> None:
    """Insert an empty row for ``key`` unless one is there."""
    if connection.execute(select(WATCH_STATE.c.key).where(WATCH_STATE.c.key == key)).first() is None:
        connection.execute(
            insert(WATCH_STATE).values(key=key, scope="", resource_version="", relists=0, events=0)
        )


def _update_watch_row(connection: Connection, key: str, **values: Any) -> None:
    connection.execute(update(WATCH_STATE).where(WATCH_STATE.c.key == key).values(**values))


# counts


def counts(connection: Connection) -> MirrorCounts:
    pods = connection.execute(select(func.count()).select_from(MIRROR_PODS)).scalar_one()
    nads = connection.execute(select(func.count()).select_from(MIRROR_NADS)).scalar_one()
    return MirrorCounts(pods=int(pods), nads=int(nads))
