"""The Kubernetes mirror: this node's pods, NetworkAttachmentDefinitions, and each watch's position.

Written only by ``app.watch`` (events, relists, resourceVersions) inside ``Database.write``; read
by the watch package's pod and NAD sources and by GC. A cache of the API, never the truth
(invariant 1): losing it costs a relist, never a leak. Functions take a unit of work's
``Connection`` and run plain SQL on its cursor (``app.store.records_sql``), and know no Kubernetes
rules: callers decide which annotations to keep and what a relist covers. Callers should write a
batch of changes together with the watch's new resourceVersion in one unit of work, so the stored
position never runs ahead of the stored objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from app.store.database import Connection
from app.store.mirror_records import (
    CONFIG_SOURCE_ANNOTATION,
    MirrorCounts,
    NadRecord,
    ObjectKey,
    PodRecord,
    ReplaceOutcome,
    WatchState,
)
from app.store.records_sql import cursor_of, json_object, read_stamp, stamp

_UPSERT_POD = (
    "INSERT INTO mirror_pods"
    " (namespace, name, uid, node_name, resource_version, annotations)"
    " VALUES (:namespace, :name, :uid, :node_name, :resource_version, :annotations)"
    " ON CONFLICT (namespace, name) DO UPDATE SET uid = excluded.uid, node_name = excluded.node_name,"
    " resource_version = excluded.resource_version, annotations = excluded.annotations"
)
"""Upserts run as one ``executemany``: a relist of 1,000 pods is one prepared statement."""
_UPSERT_NAD = (
    "INSERT INTO mirror_nads"
    " (namespace, name, uid, resource_version, config, resource_name)"
    " VALUES (:namespace, :name, :uid, :resource_version, :config, :resource_name)"
    " ON CONFLICT (namespace, name) DO UPDATE SET uid = excluded.uid,"
    " resource_version = excluded.resource_version, config = excluded.config,"
    " resource_name = excluded.resource_name"
)
_POD_COLUMNS = "namespace, name, uid, node_name, resource_version, annotations"
"""A ``PodRecord``'s columns, in ``_pod_record``'s order."""
_GET_POD = f"SELECT {_POD_COLUMNS} FROM mirror_pods WHERE namespace = ? AND name = ?"
_LIST_PODS = f"SELECT {_POD_COLUMNS} FROM mirror_pods ORDER BY namespace, name"
_POD_KEYS = "SELECT namespace, name FROM mirror_pods"
_DELETE_POD = "DELETE FROM mirror_pods WHERE namespace = ? AND name = ?"
_COUNT_PODS = "SELECT count(*) FROM mirror_pods"
_POD_UIDS = (
    "SELECT namespace, name, CASE WHEN coalesce(json_extract(annotations,"
    f" '$.\"{CONFIG_SOURCE_ANNOTATION}\"'), 'api') = 'api' THEN uid ELSE '' END"
    " FROM mirror_pods"
)
"""(namespace, name, uid) of every mirrored pod; a static pod's uid as '' (its mirror pod's UID is
not the one the runtime names it by)."""
_NAD_COLUMNS = "namespace, name, uid, resource_version, config, resource_name"
"""A ``NadRecord``'s columns, in ``NadRecord``'s order."""
_GET_NAD = f"SELECT {_NAD_COLUMNS} FROM mirror_nads WHERE namespace = ? AND name = ?"
_LIST_NADS = f"SELECT {_NAD_COLUMNS} FROM mirror_nads ORDER BY namespace, name"
_NAD_KEYS = "SELECT namespace, name FROM mirror_nads"
_NAD_KEYS_OF_NAMESPACE = "SELECT namespace, name FROM mirror_nads WHERE namespace = ?"
_DELETE_NAD = "DELETE FROM mirror_nads WHERE namespace = ? AND name = ?"
_COUNT_NADS = "SELECT count(*) FROM mirror_nads"


# pods


def upsert_pod(connection: Connection, pod: PodRecord) -> None:
    """Insert or replace the pod named ``pod.namespace``/``pod.name``."""
    _upsert_pods(connection, [pod])


def delete_pod(connection: Connection, namespace: str, name: str) -> bool:
    """Forget a pod; True when it was mirrored."""
    cursor = cursor_of(connection)
    cursor.execute(_DELETE_POD, (namespace, name))
    return cursor.rowcount > 0


def replace_pods(connection: Connection, snapshot: Iterable[PodRecord]) -> ReplaceOutcome:
    """A relist: make the mirrored pods exactly ``snapshot`` (upsert all, delete the absent)."""
    pods = list(snapshot)
    _upsert_pods(connection, pods)
    listed = {pod.key for pod in pods}
    cursor = cursor_of(connection)
    stored = cursor.execute(_POD_KEYS).fetchall()
    absent = tuple((namespace, name) for namespace, name in stored if (namespace, name) not in listed)
    if absent:
        cursor.executemany(_DELETE_POD, absent)
    return ReplaceOutcome(upserted=len(pods), deleted=absent)


def get_pod(connection: Connection, namespace: str, name: str) -> PodRecord | None:
    """One pod (every ADD asks)."""
    row = cursor_of(connection).execute(_GET_POD, (namespace, name)).fetchone()
    return None if row is None else _pod_record(*row)


def list_pods(connection: Connection) -> list[PodRecord]:
    """Every mirrored pod, by namespace and name (GC, tools, tests)."""
    return [_pod_record(*row) for row in cursor_of(connection).execute(_LIST_PODS)]


def _pod_record(
    namespace: str, name: str, uid: str, node_name: str, resource_version: str, annotations: str
) -> PodRecord:
    """A pod from its columns (``_POD_COLUMNS``' order)."""
    return PodRecord(
        namespace=namespace,
        name=name,
        uid=uid,
        node_name=node_name,
        resource_version=resource_version,
        annotations=json.loads(annotations),
    )


def pod_uids(connection: Connection) -> dict[ObjectKey, str]:
    """(namespace, name) → uid of every mirrored pod (every GC pass asks); '' for a static pod,
    whose API UID differs from the runtime's (``PodRecord.is_static``): nothing to compare, so GC
    never takes it for a recreated pod."""
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
        "annotations": json_object(pod.annotations),
    }


# NetworkAttachmentDefinitions


def upsert_nad(connection: Connection, nad: NadRecord) -> None:
    """Insert or replace the NAD named ``nad.namespace``/``nad.name``."""
    _upsert_nads(connection, [nad])


def delete_nad(connection: Connection, namespace: str, name: str) -> bool:
    """Forget a NAD; True when it was mirrored."""
    cursor = cursor_of(connection)
    cursor.execute(_DELETE_NAD, (namespace, name))
    return cursor.rowcount > 0


def replace_nads(
    connection: Connection, snapshot: Iterable[NadRecord], *, namespace: str | None = None
) -> ReplaceOutcome:
    """A relist: make the mirrored NADs (of ``namespace`` only, when given) exactly ``snapshot``."""
    nads = list(snapshot)
    _upsert_nads(connection, nads)
    listed = {nad.key for nad in nads}
    cursor = cursor_of(connection)
    if namespace is None:
        stored = cursor.execute(_NAD_KEYS).fetchall()
    else:
        stored = cursor.execute(_NAD_KEYS_OF_NAMESPACE, (namespace,)).fetchall()
    absent = tuple(
        (nad_namespace, name) for nad_namespace, name in stored if (nad_namespace, name) not in listed
    )
    if absent:
        cursor.executemany(_DELETE_NAD, absent)
    return ReplaceOutcome(upserted=len(nads), deleted=absent)


def get_nad(connection: Connection, namespace: str, name: str) -> NadRecord | None:
    """One NAD (every ADD asks, once per network from a NAD)."""
    row = cursor_of(connection).execute(_GET_NAD, (namespace, name)).fetchone()
    return None if row is None else NadRecord(*row)


def list_nads(connection: Connection) -> list[NadRecord]:
    """Every mirrored NAD, by namespace and name (tools, tests)."""
    return [NadRecord(*row) for row in cursor_of(connection).execute(_LIST_NADS)]


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


# watch state

_GET_WATCH = (
    'SELECT "key", scope, resource_version, synced_at, last_event_at, relists, events FROM watch_state'
    ' WHERE "key" = ?'
)
_ENSURE_WATCH = (
    "INSERT INTO watch_state (\"key\", scope, resource_version, relists, events) VALUES (?, '', '', 0, 0)"
    ' ON CONFLICT ("key") DO NOTHING'
)
"""An empty row for a key unless one is there (``synced_at`` and ``last_event_at`` NULL)."""
_SET_WATCH = (
    "UPDATE watch_state SET scope = ?, resource_version = ?, synced_at = ?, last_event_at = ?,"
    ' relists = ?, events = ? WHERE "key" = ?'
)
_RECORD_RELIST = (
    "UPDATE watch_state SET scope = ?, resource_version = ?, synced_at = ?, relists = relists + 1"
    ' WHERE "key" = ?'
)
_RECORD_PROGRESS = 'UPDATE watch_state SET resource_version = ?, events = events + ? WHERE "key" = ?'
_RECORD_PROGRESS_AT = (
    'UPDATE watch_state SET resource_version = ?, events = events + ?, last_event_at = ? WHERE "key" = ?'
)
_FORGET_RESOURCE_VERSION = "UPDATE watch_state SET resource_version = '' WHERE \"key\" = ?"


def get_watch_state(connection: Connection, key: str) -> WatchState | None:
    row = cursor_of(connection).execute(_GET_WATCH, (key,)).fetchone()
    if row is None:
        return None
    stored_key, scope, resource_version, synced_at, last_event_at, relists, events = row
    return WatchState(
        key=stored_key,
        scope=scope,
        resource_version=resource_version,
        synced_at=None if synced_at is None else read_stamp(synced_at),
        last_event_at=None if last_event_at is None else read_stamp(last_event_at),
        relists=relists,
        events=events,
    )


def set_watch_state(connection: Connection, state: WatchState) -> None:
    """Write ``state`` as the whole row for ``state.key``."""
    cursor = cursor_of(connection)
    cursor.execute(_ENSURE_WATCH, (state.key,))
    cursor.execute(
        _SET_WATCH,
        (
            state.scope,
            state.resource_version,
            _stamp_or_null(state.synced_at),
            _stamp_or_null(state.last_event_at),
            state.relists,
            state.events,
            state.key,
        ),
    )


def record_relist(
    connection: Connection, key: str, *, scope: str, resource_version: str, at: datetime
) -> None:
    """A relist of ``key`` was written: resume from ``resource_version``, one more relist counted."""
    cursor = cursor_of(connection)
    cursor.execute(_ENSURE_WATCH, (key,))
    cursor.execute(_RECORD_RELIST, (scope, resource_version, stamp(at), key))


def record_progress(
    connection: Connection, key: str, *, resource_version: str, events: int, at: datetime | None
) -> None:
    """A batch of ``events`` watch events (or a bookmark: 0 events) was written up to ``resource_version``."""
    cursor = cursor_of(connection)
    cursor.execute(_ENSURE_WATCH, (key,))
    if at is None:
        cursor.execute(_RECORD_PROGRESS, (resource_version, events, key))
    else:
        cursor.execute(_RECORD_PROGRESS_AT, (resource_version, events, stamp(at), key))


def forget_resource_version(connection: Connection, key: str) -> None:
    """Make the next start of ``key`` relist (its history expired, or its scope changed)."""
    cursor_of(connection).execute(_FORGET_RESOURCE_VERSION, (key,))


def _stamp_or_null(moment: datetime | None) -> str | None:
    return None if moment is None else stamp(moment)


# counts


def counts(connection: Connection) -> MirrorCounts:
    cursor = cursor_of(connection)
    (pods,) = cursor.execute(_COUNT_PODS).fetchone()
    (nads,) = cursor.execute(_COUNT_NADS).fetchone()
    return MirrorCounts(pods=int(pods), nads=int(nads))
