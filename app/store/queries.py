"""The operator's read model: what ``multusctl`` and the daemon's query API show, as JSON documents.

Owns the documents' shapes (the TypedDicts below; README "Operating" documents them for scripts,
and tests/ops pins their keys) and the read-only functions that build them from the checkpoint,
the history and the mirror. Called by ``app.daemon.query_server`` over its read-only connection
while the daemon runs, and by ``app.cli`` through ``read_file`` when it does not, so both paths
answer with the same documents. Never writes, never creates a file: ``read_file`` opens SQLite
with ``mode=ro``. Its own reads (counts, container ID prefixes, the watches) are plain SQL on the
unit's cursor (``records_sql.cursor_of``): the daemon that serves it never imports SQLAlchemy.
Times are RFC 3339 UTC strings (``...Z``); absent values are ``null``, never missing keys.
Delegate results are passed through untouched: IPs, MACs and device IDs are the facts the engine
recorded on each attachment (``AttachmentRecord.facts``), so this module knows no CNI rules and
``attachments`` and ``history`` show the same device IDs.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypedDict, TypeVar

from app.store import checkpoints, history, schema
from app.store.database import Connection, Database, file_uri
from app.store.filters import AttachmentFilter, HistoryFilter
from app.store.records import AttachmentRecord, HistoryEntry, HistoryLine, SandboxRecord
from app.store.records_sql import cursor_of, read_stamp

T = TypeVar("T")

AMBIGUOUS_SHOWN = 5
"""Candidates named when a container ID prefix matches several containers."""
FILE_BUSY_TIMEOUT_MS = 2_000
"""How long a file reader waits for a lock held by another process before giving up."""


class StoreReadError(RuntimeError):
    """The state database cannot be read: missing, locked, corrupt, or of a newer schema."""


class NotFoundError(LookupError):
    """No sandbox and no history for the container asked for."""


class AmbiguousError(LookupError):
    """A container ID prefix matches several containers."""


# ---- documents ------------------------------------------------------------------------------------


class ErrorDoc(TypedDict):
    code: int | None
    msg: str | None
    details: str | None


class HistoryDoc(TypedDict):
    id: int
    at: str | None
    durationMs: float | None
    node: str
    command: str
    step: str
    trigger: str
    outcome: str
    pod: str
    namespace: str
    podName: str
    podUID: str
    container: str
    containerID: str
    netns: str
    interface: str
    network: str
    plugins: str
    ips: list[str]
    macs: list[str]
    deviceIDs: list[str]
    error: ErrorDoc | None


class AttachmentDoc(TypedDict):
    pod: str
    namespace: str
    podName: str
    podUID: str
    container: str
    containerID: str
    netns: str
    sandboxState: str
    interface: str
    position: int
    master: bool
    network: str
    plugins: str
    state: str
    addresses: str
    ips: list[str]
    macs: list[str]
    deviceIDs: list[str]
    lastError: object
    createdAt: str | None
    updatedAt: str | None


class DelegateDoc(TypedDict):
    interface: str
    position: int
    master: bool
    network: str
    plugins: str
    state: str
    ips: list[str]
    macs: list[str]
    deviceIDs: list[str]
    device: dict[str, str] | None
    config: object
    cniArgs: list[list[str]]
    runtimeConfig: object
    cniPath: list[str]
    result: object
    lastError: object
    createdAt: str | None
    updatedAt: str | None


class CheckpointDoc(TypedDict):
    state: str
    netns: str
    ifname: str
    cniVersion: str
    bootID: str
    createdAt: str | None
    updatedAt: str | None
    delegates: list[DelegateDoc]


class SandboxDoc(TypedDict):
    containerID: str
    pod: str
    namespace: str
    podName: str
    podUID: str
    checkpoint: CheckpointDoc | None
    history: list[HistoryDoc]


class HistoryStatsDoc(TypedDict):
    rows: int
    oldest: str | None
    newest: str | None


class StoreDoc(TypedDict):
    path: str
    bytes: int
    schemaRevision: str | None
    sandboxes: dict[str, int]
    attachments: dict[str, int]
    history: HistoryStatsDoc


class WatchDoc(TypedDict):
    key: str
    scope: str
    synced: bool
    syncedAt: str | None
    lastEventAt: str | None
    lagSeconds: float | None
    resourceVersion: str
    relists: int
    events: int


class MirrorDoc(TypedDict):
    pods: int
    nads: int
    watches: list[WatchDoc]


class StoreStatus(TypedDict):
    """The part of ``status`` read from the database (no path or size: those are the caller's)."""

    schemaRevision: str | None
    sandboxes: dict[str, int]
    attachments: dict[str, int]
    history: HistoryStatsDoc
    mirror: MirrorDoc | None


class DaemonDoc(TypedDict):
    pid: int
    version: str
    startedAt: str
    socket: str
    querySocket: str


class RetentionDoc(TypedDict):
    maxAgeHours: float
    maxRows: int
    lastPrune: dict[str, object] | None


class StatusDoc(TypedDict):
    source: str
    node: str
    ready: bool
    readyReason: str | None
    daemon: DaemonDoc | None
    store: StoreDoc
    mirror: MirrorDoc | None
    lastGc: dict[str, object] | None
    retention: RetentionDoc


# ---- queries ----------------------------------------------------------------------------------------


def history_lines(connection: Connection, where: HistoryFilter) -> list[HistoryDoc]:
    """``multusctl history``: matching lines, newest first, all of them at once (``where.limit``,
    0: all; the file reader's way). The query API reads them a page at a time: ``history_page``."""
    return [history_doc(line) for line in history.query(connection, where)]


def history_page(
    connection: Connection, where: HistoryFilter, *, before_id: int | None, size: int
) -> list[HistoryDoc]:
    """At most ``size`` lines of ``history_lines``, those older than line ``before_id`` if given."""
    return [history_doc(line) for line in history.page(connection, where, before_id=before_id, size=size)]


def attachments(connection: Connection, where: AttachmentFilter) -> list[AttachmentDoc]:
    """``multusctl attachments``: what the checkpoint holds now, oldest sandbox first."""
    docs = []
    for sandbox in checkpoints.list_sandboxes(connection):
        if not _pod_matches(sandbox, where):
            continue
        for attachment in sandbox.attachments:
            if where.network is None or history.matching_networks([attachment.network_name], where.network):
                docs.append(_attachment_doc(sandbox, attachment))
    return docs


def sandbox(connection: Connection, container: str) -> SandboxDoc:
    """``multusctl show``: one container (ID or unique prefix): its checkpoint and its history."""
    document, _newest = sandbox_page(connection, container, size=0)
    return document


def sandbox_page(connection: Connection, container: str, *, size: int) -> tuple[SandboxDoc, int | None]:
    """``sandbox`` with the first ``size`` lines of its history (0: all), and the id of the
    container's newest line as this read saw it: the bound of the next pages
    (``container_history_page``), so that they show the history as it was with this checkpoint."""
    container_id = _resolve_container(connection, container)
    record = checkpoints.load_sandbox(connection, container_id)
    newest = history.newest_of_container(connection, container_id)
    lines = history.lines_of_container(connection, container_id, up_to_id=newest, size=size)
    pod = record.pod if record is not None else history.pod_of_container(connection, container_id)
    document: SandboxDoc = {
        "containerID": container_id,
        "pod": _pod_name(pod.namespace, pod.name),
        "namespace": pod.namespace,
        "podName": pod.name,
        "podUID": pod.uid,
        "checkpoint": None if record is None else _checkpoint_doc(record),
        "history": [history_doc(line) for line in lines],
    }
    return document, newest


def container_history_page(
    connection: Connection, container_id: str, *, after_id: int, up_to_id: int, size: int
) -> list[HistoryDoc]:
    """The next ``size`` lines of a ``sandbox_page``'s history: after line ``after_id``, up to
    line ``up_to_id``, oldest first."""
    lines = history.lines_of_container(
        connection, container_id, after_id=after_id, up_to_id=up_to_id, size=size
    )
    return [history_doc(line) for line in lines]


def store_status(connection: Connection, *, now: datetime) -> StoreStatus:
    """The database's part of ``multusctl status``."""
    rows, oldest, newest = history.summary(connection)
    return {
        "schemaRevision": schema.current_revision(connection),
        "sandboxes": _sandbox_counts(connection),
        "attachments": checkpoints.attachment_counts(connection),
        "history": {"rows": rows, "oldest": timestamp(oldest), "newest": timestamp(newest)},
        "mirror": _mirror(connection, now=now),
    }


def status_doc(
    *,
    source: str,
    node: str,
    ready: bool,
    ready_reason: str | None,
    daemon: DaemonDoc | None,
    db_path: Path,
    db_bytes: int,
    store: StoreStatus,
    last_gc: dict[str, object] | None,
    retention: RetentionDoc,
) -> StatusDoc:
    """``multusctl status``, assembled the same way by the query API and by the file reader."""
    return {
        "source": source,
        "node": node,
        "ready": ready,
        "readyReason": ready_reason,
        "daemon": daemon,
        "store": {
            "path": str(db_path),
            "bytes": db_bytes,
            "schemaRevision": store["schemaRevision"],
            "sandboxes": store["sandboxes"],
            "attachments": store["attachments"],
            "history": store["history"],
        },
        "mirror": store["mirror"],
        "lastGc": last_gc,
        "retention": retention,
    }


def read_file(path: str | os.PathLike[str], work: Callable[[Connection], T]) -> tuple[T, int]:
    """Open the state database read-only, run ``work``, close; return its value and the files' size.

    For ``multusctl`` when the daemon is not answering. Refuses a missing file, a schema newer
    than this release and a database locked by another process with ``StoreReadError``; a read
    that fails on a corrupt file, or on an older schema lacking what it reads, is one too, named so.
    """
    db_path = Path(path)
    if not db_path.is_file():
        raise StoreReadError(f"there is no state database at {db_path}")
    _probe(db_path)
    try:
        db = Database.open(db_path, read_only=True)
    except schema.SchemaError as exc:
        raise StoreReadError(f"cannot read {db_path}: {exc}") from exc
    except sqlite3.OperationalError as exc:
        raise StoreReadError(_operational_message(db_path, exc)) from exc
    try:
        return db.read_sync(work), db.size_bytes()
    except sqlite3.Error as exc:
        raise StoreReadError(_read_failure(db, exc)) from exc
    finally:
        db.close()


def _read_failure(db: Database, exc: sqlite3.Error) -> str:
    """What stopped a read of the file: corrupt, locked, or of an older schema than this release
    reads (the daemon upgrades it when it starts; multusctl never writes it)."""
    reason = str(exc)
    if _is_corruption(exc):
        return _corrupt_message(db.path, reason)
    head = schema.head_revision()
    try:
        revision = db.read_sync(schema.current_revision)
    except sqlite3.Error:
        revision = None
    if revision is not None and revision != head and revision in schema.known_revisions():
        return (
            f"state database {db.path} is at schema revision {revision!r}, older than this release's "
            f"{head!r}: the daemon upgrades it when it starts; multusctl, which never writes it, "
            f"cannot read it as it is ({reason})"
        )
    return _reason_message(db.path, reason)


def _corrupt_message(db_path: Path, reason: str) -> str:
    return f"state database {db_path} is corrupt ({reason}); multusctl leaves it as it is"


def _is_corruption(exc: sqlite3.Error) -> bool:
    """SQLite's DatabaseError proper (a malformed image, not a database): not an OperationalError
    (locked, busy, a missing column or table), which subclasses it."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def _probe(db_path: Path) -> None:
    """Fail within ``FILE_BUSY_TIMEOUT_MS`` on a database another process keeps locked (the
    store's own connections would wait ``BUSY_TIMEOUT_MS``, sized for the daemon's writes)."""
    try:
        probe = sqlite3.connect(f"{file_uri(db_path)}?mode=ro", uri=True, timeout=FILE_BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise StoreReadError(f"cannot open state database {db_path}: {exc}") from exc
    try:
        probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        message = (
            _corrupt_message(db_path, str(exc)) if _is_corruption(exc) else _reason_message(db_path, str(exc))
        )
        raise StoreReadError(message) from exc
    finally:
        probe.close()


def _operational_message(db_path: Path, exc: sqlite3.OperationalError) -> str:
    return _reason_message(db_path, str(exc))


def _reason_message(db_path: Path, reason: str) -> str:
    if "locked" in reason or "busy" in reason:
        return f"state database {db_path} is locked by another process ({reason}); try again"
    return f"cannot read state database {db_path}: {reason}"


# ---- documents from records ------------------------------------------------------------------------


def history_doc(line: HistoryLine) -> HistoryDoc:
    entry: HistoryEntry = line.entry
    failed = entry.error_code is not None or entry.error_msg is not None
    return {
        "id": line.id,
        "at": timestamp(entry.at),
        "durationMs": entry.duration_ms,
        "node": entry.node,
        "command": entry.command,
        "step": entry.step,
        "trigger": entry.trigger,
        "outcome": entry.outcome,
        "pod": _pod_name(entry.pod.namespace, entry.pod.name),
        "namespace": entry.pod.namespace,
        "podName": entry.pod.name,
        "podUID": entry.pod.uid,
        "container": entry.container_id[:12],
        "containerID": entry.container_id,
        "netns": entry.netns,
        "interface": entry.ifname,
        "network": entry.network_name,
        "plugins": ",".join(entry.plugin_types),
        "ips": list(entry.ips),
        "macs": list(entry.macs),
        "deviceIDs": list(entry.device_ids),
        "error": {"code": entry.error_code, "msg": entry.error_msg, "details": entry.error_details}
        if failed
        else None,
    }


def _attachment_doc(sandbox: SandboxRecord, attachment: AttachmentRecord) -> AttachmentDoc:
    ips, macs = list(attachment.facts.ips), list(attachment.facts.macs)
    return {
        "pod": _pod_name(sandbox.pod.namespace, sandbox.pod.name),
        "namespace": sandbox.pod.namespace,
        "podName": sandbox.pod.name,
        "podUID": sandbox.pod.uid,
        "container": sandbox.container_id[:12],
        "containerID": sandbox.container_id,
        "netns": sandbox.netns,
        "sandboxState": sandbox.state,
        "interface": attachment.ifname,
        "position": attachment.position,
        "master": attachment.is_master,
        "network": attachment.network_name,
        "plugins": ",".join(attachment.plugin_types),
        "state": attachment.state,
        "addresses": ",".join(ips) or "-",
        "ips": ips,
        "macs": macs,
        "deviceIDs": list(attachment.facts.device_ids),
        "lastError": _json_or_text(attachment.last_error),
        "createdAt": timestamp(attachment.created_at),
        "updatedAt": timestamp(attachment.updated_at),
    }


def _checkpoint_doc(record: SandboxRecord) -> CheckpointDoc:
    return {
        "state": record.state,
        "netns": record.netns,
        "ifname": record.ifname,
        "cniVersion": record.cni_version,
        "bootID": record.boot_id,
        "createdAt": timestamp(record.created_at),
        "updatedAt": timestamp(record.updated_at),
        "delegates": [_delegate_doc(attachment) for attachment in record.attachments],
    }


def _delegate_doc(attachment: AttachmentRecord) -> DelegateDoc:
    ips, macs = list(attachment.facts.ips), list(attachment.facts.macs)
    return {
        "interface": attachment.ifname,
        "position": attachment.position,
        "master": attachment.is_master,
        "network": attachment.network_name,
        "plugins": ",".join(attachment.plugin_types),
        "state": attachment.state,
        "ips": ips,
        "macs": macs,
        "deviceIDs": list(attachment.facts.device_ids),
        "device": None if attachment.device is None else dict(attachment.device),
        "config": _json_or_text(attachment.config.decode("utf-8", "replace")),
        "cniArgs": [list(pair) for pair in attachment.cni_args],
        "runtimeConfig": dict(attachment.capability_args),
        "cniPath": list(attachment.cni_path),
        "result": _json_or_text(attachment.result),
        "lastError": _json_or_text(attachment.last_error),
        "createdAt": timestamp(attachment.created_at),
        "updatedAt": timestamp(attachment.updated_at),
    }


def _json_or_text(value: str | None) -> object:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def timestamp(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``, microseconds kept."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _pod_name(namespace: str, name: str) -> str:
    return f"{namespace}/{name}".strip("/")


def _pod_matches(sandbox: SandboxRecord, where: AttachmentFilter) -> bool:
    if where.namespace is not None and sandbox.pod.namespace != where.namespace:
        return False
    return where.pod is None or sandbox.pod.name == where.pod


def _resolve_container(connection: Connection, container: str) -> str:
    """The one container ID ``container`` names (itself or a unique prefix), from checkpoint or history."""
    candidates = set(_sandboxes_with_prefix(connection, container, limit=AMBIGUOUS_SHOWN + 1))
    candidates |= set(history.containers_with_prefix(connection, container, limit=AMBIGUOUS_SHOWN + 1))
    if container in candidates:
        return container
    if not candidates:
        raise NotFoundError(f"no sandbox and no history for container {container!r}")
    if len(candidates) > 1:
        shown = sorted(candidates)[:AMBIGUOUS_SHOWN]
        raise AmbiguousError(
            f"container {container!r} is ambiguous: it begins {', '.join(shown)}"
            f"{' and more' if len(candidates) > AMBIGUOUS_SHOWN else ''}; give more of the ID"
        )
    return candidates.pop()


_SANDBOXES_WITH_PREFIX = (
    "SELECT container_id FROM sandboxes WHERE container_id >= ? AND container_id < ? LIMIT ?"
)
_SANDBOX_COUNTS = "SELECT state, count(*) FROM sandboxes GROUP BY state"
_HAS_WATCH_STATE = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'watch_state'"
_MIRROR_POD_COUNT = "SELECT count(*) FROM mirror_pods"
_MIRROR_NAD_COUNT = "SELECT count(*) FROM mirror_nads"
_WATCHES = (
    'SELECT "key", scope, resource_version, synced_at, last_event_at, relists, events'
    ' FROM watch_state ORDER BY "key"'
)


def _sandboxes_with_prefix(connection: Connection, prefix: str, *, limit: int) -> list[str]:
    rows = cursor_of(connection).execute(_SANDBOXES_WITH_PREFIX, (prefix, prefix + "\U0010ffff", limit))
    return [str(value) for (value,) in rows.fetchall()]


def _sandbox_counts(connection: Connection) -> dict[str, int]:
    rows = cursor_of(connection).execute(_SANDBOX_COUNTS).fetchall()
    return {str(state): int(count) for state, count in rows}


def _mirror(connection: Connection, *, now: datetime) -> MirrorDoc | None:
    """The Kubernetes mirror's counts and each watch's position; None when there is no mirror."""
    cursor = cursor_of(connection)
    if cursor.execute(_HAS_WATCH_STATE).fetchone() is None:
        return None
    (pods,) = cursor.execute(_MIRROR_POD_COUNT).fetchone()
    (nads,) = cursor.execute(_MIRROR_NAD_COUNT).fetchone()
    watches = cursor.execute(_WATCHES).fetchall()
    return {"pods": int(pods), "nads": int(nads), "watches": [_watch_doc(row, now=now) for row in watches]}


def _watch_doc(row: tuple[str, str, str, str | None, str | None, int, int], *, now: datetime) -> WatchDoc:
    key, scope, resource_version, synced_text, last_event_text, relists, events = row
    synced_at = None if synced_text is None else read_stamp(synced_text)
    last_event_at = None if last_event_text is None else read_stamp(last_event_text)
    heard = [moment for moment in (synced_at, last_event_at) if moment is not None]
    return {
        "key": key,
        "scope": scope,
        "synced": synced_at is not None,
        "syncedAt": timestamp(synced_at),
        "lastEventAt": timestamp(last_event_at),
        "lagSeconds": round((now - max(heard)).total_seconds(), 3) if heard else None,
        "resourceVersion": resource_version,
        "relists": relists,
        "events": events,
    }
