"""The Kubernetes mirror: this node's pods, NetworkAttachmentDefinitions, and each watch's position.

Written only by ``app.watch`` (events, relists, resourceVersions) inside ``Database.write``; read
by the watch package's pod and NAD sources and by GC. A cache of the API, never the truth
(invariant 1): losing it costs a relist, never a leak. Functions take a Session and know no
Kubernetes rules: callers decide which annotations to keep and what a relist covers. Callers
should write a batch of changes together with the watch's new resourceVersion in one unit of
work, so the stored position never runs ahead of the stored objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.store.mirror_records import (
    MirrorCounts,
    NadRecord,
    ObjectKey,
    PodRecord,
    ReplaceOutcome,
    WatchState,
)
from app.store.models import MirroredNad, MirroredPod, WatchStateRow
from app.store.records_sql import cursor_of

_UPSERT_POD = (
    f"INSERT INTO {MirroredPod.__tablename__}"
    " (namespace, name, uid, node_name, resource_version, annotations)"
    " VALUES (:namespace, :name, :uid, :node_name, :resource_version, :annotations)"
    " ON CONFLICT (namespace, name) DO UPDATE SET uid = excluded.uid, node_name = excluded.node_name,"
    " resource_version = excluded.resource_version, annotations = excluded.annotations"
)
"""Upserts are plain SQL (``executemany``): a relist of 1,000 pods built SQLAlchemy statements
of 200 rows each, costlier in CPU and in the memory a start-up leaves behind."""
_UPSERT_NAD = (
    f"INSERT INTO {MirroredNad.__tablename__}"
    " (namespace, name, uid, resource_version, config, resource_name)"
    " VALUES (:namespace, :name, :uid, :resource_version, :config, :resource_name)"
    " ON CONFLICT (namespace, name) DO UPDATE SET uid = excluded.uid,"
    " resource_version = excluded.resource_version, config = excluded.config,"
    " resource_name = excluded.resource_name"
)
_GET_POD = (
    f"SELECT uid, node_name, resource_version, annotations FROM {MirroredPod.__tablename__}"
    " WHERE namespace = ? AND name = ?"
)
_POD_UIDS = f"SELECT namespace, name, uid FROM {MirroredPod.__tablename__}"
_GET_NAD = (
    f"SELECT uid, resource_version, config, resource_name FROM {MirroredNad.__tablename__}"
    " WHERE namespace = ? AND name = ?"
)


# pods


def upsert_pod(session: Session, pod: PodRecord) -> None:
    """Insert or replace the pod named ``pod.namespace``/``pod.name``."""
    _upsert_pods(session, [pod])


def delete_pod(session: Session, namespace: str, name: str) -> bool:
    """Forget a pod; True when it was mirrored."""
    result = session.execute(
        delete(MirroredPod).where(MirroredPod.namespace == namespace, MirroredPod.name == name)
    )
    return bool(getattr(result, "rowcount", 0))


def replace_pods(session: Session, snapshot: Iterable[PodRecord]) -> ReplaceOutcome:
    """A relist: make the mirrored pods exactly ``snapshot`` (upsert all, delete the absent)."""
    pods = list(snapshot)
    _upsert_pods(session, pods)
    listed = {pod.key for pod in pods}
    stored = session.execute(select(MirroredPod.namespace, MirroredPod.name))
    absent = tuple((namespace, name) for namespace, name in stored if (namespace, name) not in listed)
    for namespace, name in absent:
        delete_pod(session, namespace, name)
    return ReplaceOutcome(upserted=len(pods), deleted=absent)


def get_pod(session: Session, namespace: str, name: str) -> PodRecord | None:
    """One pod, in plain SQL (every ADD asks: the ORM's identity lookup costs several times more)."""
    row = cursor_of(session).execute(_GET_POD, (namespace, name)).fetchone()
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


def list_pods(session: Session) -> list[PodRecord]:
    """Every mirrored pod, by namespace and name (GC, tools, tests)."""
    rows = session.execute(select(MirroredPod).order_by(MirroredPod.namespace, MirroredPod.name)).scalars()
    return [_pod_record(row) for row in rows]


def pod_uids(session: Session) -> dict[ObjectKey, str]:
    """(namespace, name) → uid of every mirrored pod, in plain SQL (every GC pass asks)."""
    return {(namespace, name): uid for namespace, name, uid in cursor_of(session).execute(_POD_UIDS)}


def _upsert_pods(session: Session, pods: list[PodRecord]) -> None:
    cursor_of(session).executemany(_UPSERT_POD, [_pod_values(pod) for pod in pods])


def _pod_values(pod: PodRecord) -> dict[str, str]:
    return {
        "namespace": pod.namespace,
        "name": pod.name,
        "uid": pod.uid,
        "node_name": pod.node_name,
        "resource_version": pod.resource_version,
        "annotations": json.dumps(dict(pod.annotations), sort_keys=True),
    }


def _pod_record(row: MirroredPod) -> PodRecord:
    return PodRecord(
        namespace=row.namespace,
        name=row.name,
        uid=row.uid,
        node_name=row.node_name,
        resource_version=row.resource_version,
        annotations=json.loads(row.annotations),
    )


# NetworkAttachmentDefinitions


def upsert_nad(session: Session, nad: NadRecord) -> None:
    """Insert or replace the NAD named ``nad.namespace``/``nad.name``."""
    _upsert_nads(session, [nad])


def delete_nad(session: Session, namespace: str, name: str) -> bool:
    """Forget a NAD; True when it was mirrored."""
    result = session.execute(
        delete(MirroredNad).where(MirroredNad.namespace == namespace, MirroredNad.name == name)
    )
    return bool(getattr(result, "rowcount", 0))


def replace_nads(
    session: Session, snapshot: Iterable[NadRecord], *, namespace: str | None = None
) -> ReplaceOutcome:
    """A relist: make the mirrored NADs (of ``namespace`` only, when given) exactly ``snapshot``."""
    nads = list(snapshot)
    _upsert_nads(session, nads)
    listed = {nad.key for nad in nads}
    query = select(MirroredNad.namespace, MirroredNad.name)
    if namespace is not None:
        query = query.where(MirroredNad.namespace == namespace)
    stored = session.execute(query)
    absent = tuple((namespace, name) for namespace, name in stored if (namespace, name) not in listed)
    for nad_namespace, name in absent:
        delete_nad(session, nad_namespace, name)
    return ReplaceOutcome(upserted=len(nads), deleted=absent)


def get_nad(session: Session, namespace: str, name: str) -> NadRecord | None:
    """One NAD, in plain SQL (every ADD asks, once per network from a NAD)."""
    row = cursor_of(session).execute(_GET_NAD, (namespace, name)).fetchone()
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


def list_nads(session: Session) -> list[NadRecord]:
    """Every mirrored NAD, by namespace and name (tools, tests)."""
    rows = session.execute(select(MirroredNad).order_by(MirroredNad.namespace, MirroredNad.name)).scalars()
    return [_nad_record(row) for row in rows]


def _upsert_nads(session: Session, nads: list[NadRecord]) -> None:
    cursor_of(session).executemany(_UPSERT_NAD, [_nad_values(nad) for nad in nads])


def _nad_values(nad: NadRecord) -> dict[str, str]:
    return {
        "namespace": nad.namespace,
        "name": nad.name,
        "uid": nad.uid,
        "resource_version": nad.resource_version,
        "config": nad.config,
        "resource_name": nad.resource_name,
    }


def _nad_record(row: MirroredNad) -> NadRecord:
    return NadRecord(
        namespace=row.namespace,
        name=row.name,
        uid=row.uid,
        resource_version=row.resource_version,
        config=row.config,
        resource_name=row.resource_name,
    )


# watch state


def get_watch_state(session: Session, key: str) -> WatchState | None:
    row = session.get(WatchStateRow, key)
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


def set_watch_state(session: Session, state: WatchState) -> None:
    """Write ``state`` as the whole row for ``state.key``."""
    row = session.get(WatchStateRow, state.key)
    if row is None:
        row = WatchStateRow(key=state.key)
        session.add(row)
    row.scope = state.scope
    row.resource_version = state.resource_version
    row.synced_at = state.synced_at
    row.last_event_at = state.last_event_at
    row.relists = state.relists
    row.events = state.events


def record_relist(session: Session, key: str, *, scope: str, resource_version: str, at: datetime) -> None:
    """A relist of ``key`` was written: resume from ``resource_version``, one more relist counted."""
    row = _watch_row(session, key)
    row.scope = scope
    row.resource_version = resource_version
    row.synced_at = at
    row.relists += 1


def record_progress(
    session: Session, key: str, *, resource_version: str, events: int, at: datetime | None
) -> None:
    """A batch of ``events`` watch events (or a bookmark: 0 events) was written up to ``resource_version``."""
    row = _watch_row(session, key)
    row.resource_version = resource_version
    row.events += events
    if at is not None:
        row.last_event_at = at


def forget_resource_version(session: Session, key: str) -> None:
    """Make the next start of ``key`` relist (its history expired, or its scope changed)."""
    row = session.get(WatchStateRow, key)
    if row is not None:
        row.resource_version = ""


def _watch_row(session: Session, key: str) -> WatchStateRow:
    row = session.get(WatchStateRow, key)
    if row is None:
        row = WatchStateRow(key=key, scope="", resource_version="", relists=0, events=0)
        session.add(row)
    return row


# counts


def counts(session: Session) -> MirrorCounts:
    pods = session.execute(select(func.count()).select_from(MirroredPod)).scalar_one()
    nads = session.execute(select(func.count()).select_from(MirroredNad)).scalar_one()
    return MirrorCounts(pods=int(pods), nads=int(nads))
