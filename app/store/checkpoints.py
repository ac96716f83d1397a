"""Per-sandbox, per-delegate intents and results of CNI calls: the checkpoint.

Written by ``app.attach`` before a delegate runs (intent) and after it returns (result); read by
DEL, CHECK, recovery and GC, which replay what is recorded here and never re-resolve networks.
Functions take a unit of work's ``Connection`` and run inside the writer's transaction
(``Database.write``) or a reader's; they know no CNI rules. Every statement is constant SQL text
run on the connection's SQLite cursor (``records_sql.cursor_of``: no statement compilation, no
result objects), inside the unit's transaction and savepoint; never begins, commits or rolls back.
A sandbox row disappears only when its last attachment has been removed, that is, after every
delegate's DEL succeeded. Sandboxes are listed in the order they were recorded (their rowid,
``ORDER BY rowid`` below), never by their UTC timestamps: a clock stepped back must not make an
older sandbox of a pod pass for its newest (invariant 12). In Kubernetes mode a running sandbox
also carries whether its network-status is not written yet (its ADD's write failed), set and
cleared by ``app.attach.status_retries`` off the hot path, and read at start-up to write what a
previous run left unwritten.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from app.store.database import Connection
from app.store.records import (
    AttachmentRecord,
    DelegateFacts,
    DelegateIntent,
    PodIdentity,
    SandboxIntent,
    SandboxRecord,
    SandboxSummary,
)
from app.store.records_sql import cursor_of, json_list, json_object, read_stamp, stamp


class SandboxExistsError(Exception):
    """An ADD was asked for a container ID that already has a checkpoint."""

    def __init__(self, container_id: str, state: str) -> None:
        super().__init__(f"container {container_id} already has a recorded attachment (state {state!r})")
        self.container_id = container_id
        self.state = state


class DeviceInUseError(Exception):
    """An attachment about to be recorded names a device another sandbox's attachment records."""

    def __init__(
        self, device_id: str, *, container_id: str, ifname: str, network_name: str, state: str
    ) -> None:
        super().__init__(
            f"device {device_id} is recorded for container {container_id} interface {ifname}"
            f" (state {state!r})"
        )
        self.device_id = device_id
        self.container_id = container_id
        self.ifname = ifname
        self.network_name = network_name
        self.state = state


class UnknownAttachmentError(LookupError):
    """A write names a (container ID, interface) the checkpoint does not hold."""


def _now() -> datetime:
    return datetime.now(UTC)


# Sandboxes are listed ``ORDER BY rowid``: the order they were inserted. SQLite gives a new row one
# more than the largest rowid in the table, so of the rows present a later one always has the
# larger: "oldest first" and "the newest of a pod" hold whatever the wall clock did between two
# ADDs, where ``created_at`` (UTC, for people) follows its steps. The store never runs ``VACUUM``,
# which may renumber the rowids of a table keyed by text, as this one is.

_SANDBOX_STATE_SQL = "SELECT state FROM sandboxes WHERE container_id = ?"


_INSERT_SANDBOX_SQL = (
    "INSERT INTO sandboxes (container_id, state, netns, netns_id, ifname, cni_version, pod_namespace,"
    " pod_name, pod_uid, boot_id, created_at, updated_at, parallel, default_networks)"
    " VALUES (?, 'adding', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (container_id) DO NOTHING"
)
_INSERT_ATTACHMENT_SQL = (
    "INSERT INTO attachments (container_id, ifname, position, is_master, network_name, plugin_types, config,"
    " cni_args, capability_args, cni_path, device, ips, macs, device_ids, root, state, result, last_error,"
    " created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', '[]', ?, ?, 'intent', NULL, NULL, ?, ?)"
)
_SET_RESULT_SQL = (
    "UPDATE attachments SET result = ?, ips = ?, macs = ?, device_ids = ?, state = 'added',"
    " last_error = NULL, updated_at = ? WHERE container_id = ? AND ifname = ?"
)
_SET_ERROR_SQL = "UPDATE attachments SET last_error = ?, updated_at = ? WHERE container_id = ? AND ifname = ?"
_SET_SANDBOX_STATE_SQL = "UPDATE sandboxes SET state = ?, updated_at = ? WHERE container_id = ?"
_SET_ATTACHMENTS_STATE_SQL = "UPDATE attachments SET state = ?, updated_at = ? WHERE container_id = ?"
_REMOVE_ATTACHMENT_SQL = "DELETE FROM attachments WHERE container_id = ? AND ifname = ?"
_SET_DEVICE_SQL = (
    "UPDATE attachments SET device = ?, updated_at = ?"
    " WHERE container_id = ? AND ifname = ? AND state = 'intent'"
)
_ANY_ATTACHMENT_SQL = "SELECT 1 FROM attachments WHERE container_id = ? LIMIT 1"
_REMOVE_SANDBOX_SQL = "DELETE FROM sandboxes WHERE container_id = ?"


def begin_add(connection: Connection, sandbox: SandboxIntent) -> None:
    """Record a sandbox whose ADD starts now (state ``adding``)."""
    now = stamp(_now())
    pod = sandbox.pod
    cursor = cursor_of(connection)
    cursor.execute(
        _INSERT_SANDBOX_SQL,
        (
            sandbox.container_id,
            sandbox.netns,
            sandbox.netns_id,
            sandbox.ifname,
            sandbox.cni_version,
            pod.namespace,
            pod.name,
            pod.uid,
            sandbox.boot_id,
            now,
            now,
            int(sandbox.parallel),
            sandbox.default_networks,
        ),
    )
    if cursor.rowcount == 0:
        (state,) = cursor.execute(_SANDBOX_STATE_SQL, (sandbox.container_id,)).fetchone()
        raise SandboxExistsError(sandbox.container_id, state)


_DEVICE_HOLDERS_SQL = (
    "SELECT container_id, ifname, network_name, state, device_ids, device FROM attachments"
    " WHERE container_id != ? AND ((device_ids IS NOT NULL AND device_ids != '[]') OR device IS NOT NULL)"
    " ORDER BY id"
)


def check_devices_free(connection: Connection, *, container_id: str, device_ids: Iterable[str]) -> None:
    """Raise ``DeviceInUseError`` when an attachment of another container than ``container_id``
    records one of ``device_ids`` (its device IDs, or its host device's PCI address), whatever its
    state: recorded means possibly present. Compared case-insensitively (PCI addresses are hex).

    Run in the unit of work that records the new intents, so two ADDs naming one device cannot
    both pass: the writer runs one unit at a time."""
    wanted = {device_id.lower() for device_id in device_ids}
    if not wanted:
        return
    for holder, ifname, network_name, state, recorded, device in cursor_of(connection).execute(
        _DEVICE_HOLDERS_SQL, (container_id,)
    ):
        held = {item.lower() for item in _strings(recorded)}
        if device is not None:
            held.add(str(json.loads(device).get("pci", "")).lower())
        taken = sorted(wanted & held)
        if taken:
            raise DeviceInUseError(
                taken[0], container_id=holder, ifname=ifname, network_name=network_name, state=state
            )


def record_intent(connection: Connection, intent: DelegateIntent) -> None:
    """Record a delegate about to run (state ``intent``): config, args, runtimeConfig and root."""
    now = stamp(_now())
    cursor_of(connection).execute(
        _INSERT_ATTACHMENT_SQL,
        (
            intent.container_id,
            intent.ifname,
            intent.position,
            int(intent.is_master),
            intent.network_name,
            ",".join(intent.plugin_types),
            intent.config,
            json_list([list(pair) for pair in intent.cni_args]),
            json_object(intent.capability_args),
            json_list(intent.cni_path),
            None if intent.device is None else json_object(intent.device),
            json_list(intent.device_ids),
            intent.root,
            now,
            now,
        ),
    )


def record_result(
    connection: Connection, *, container_id: str, ifname: str, result: str, facts: DelegateFacts | None = None
) -> None:
    """Record the result a delegate printed (state ``added``) and the facts the caller derived from it."""
    facts = facts or DelegateFacts()
    params = (
        result,
        json_list(facts.ips),
        json_list(facts.macs),
        json_list(facts.device_ids),
        stamp(_now()),
        container_id,
        ifname,
    )
    _expect_changed(connection, _SET_RESULT_SQL, params, container_id, ifname)


def record_error(connection: Connection, *, container_id: str, ifname: str, error: str) -> None:
    """Record why the last operation on an attachment failed; its state is left as it was."""
    params = (error, stamp(_now()), container_id, ifname)
    _expect_changed(connection, _SET_ERROR_SQL, params, container_id, ifname)


def finish_add(connection: Connection, container_id: str) -> None:
    """Mark a sandbox's ADD complete (state ``ready``)."""
    _expect_changed(connection, _SET_SANDBOX_STATE_SQL, ("ready", stamp(_now()), container_id), container_id)


def begin_delete(connection: Connection, container_id: str) -> None:
    """Mark a sandbox and all its attachments as being deleted (pending until removed)."""
    params = ("deleting", stamp(_now()), container_id)
    _expect_changed(connection, _SET_SANDBOX_STATE_SQL, params, container_id)
    cursor_of(connection).execute(_SET_ATTACHMENTS_STATE_SQL, params)


def begin_delete_and_load(connection: Connection, container_id: str) -> SandboxRecord | None:
    """``load_sandbox`` and ``begin_delete`` in one unit: the sandbox as recorded before this DEL
    began (its state ``deleting``, its attachments in the states they had: one already ``deleting``
    tells a DEL an earlier run began, whose plugins may still run), marked as being deleted; None,
    with nothing written, when no sandbox is recorded for ``container_id``.

    A DEL's first commit and the checkpoint it replays, in one trip to the writer instead of a
    reader's answer followed by the writer's."""
    record = load_sandbox(connection, container_id)
    if record is None:
        return None
    begin_delete(connection, container_id)
    return replace(record, state="deleting")


def record_device(
    connection: Connection, *, container_id: str, ifname: str, device: Mapping[str, str] | None
) -> None:
    """Record the host device of an attachment still an intent, as it is now (its name and MAC
    once its PCI address proved it free): an UPDATE, so the attachment never leaves the table (the
    ``removed_attachments`` trigger copies a row that does, for GC's lease proofs)."""
    _expect_changed(
        connection,
        _SET_DEVICE_SQL,
        (None if device is None else json_object(device), stamp(_now()), container_id, ifname),
        container_id,
        ifname,
    )


def remove_attachments(connection: Connection, *, container_id: str, ifnames: Iterable[str]) -> None:
    """Forget attachments whose DEL succeeded."""
    cursor_of(connection).executemany(_REMOVE_ATTACHMENT_SQL, [(container_id, ifname) for ifname in ifnames])


def finish_delete(connection: Connection, container_id: str) -> bool:
    """Forget the sandbox if no attachment of it remains; True when it is gone."""
    cursor = cursor_of(connection)
    if cursor.execute(_ANY_ATTACHMENT_SQL, (container_id,)).fetchone() is not None:
        return False
    cursor.execute(_REMOVE_SANDBOX_SQL, (container_id,))
    return True


def _expect_changed(
    connection: Connection, sql: str, params: Sequence[object], container_id: str, ifname: str | None = None
) -> None:
    if cursor_of(connection).execute(sql, params).rowcount == 0:
        _missing(container_id, ifname)


_SANDBOX_COLUMNS = (
    "container_id, state, netns, ifname, cni_version, pod_namespace, pod_name, pod_uid, boot_id,"
    " created_at, updated_at, netns_id, parallel, default_networks"
)
"""What a ``SandboxRecord`` is made of, in ``_sandbox_from_columns``' order."""
_ATTACHMENT_COLUMNS = (
    "container_id, ifname, position, is_master, network_name, plugin_types, config, cni_args,"
    " capability_args, cni_path, state, result, last_error, created_at, updated_at, device, ips, macs,"
    " device_ids, root"
)
"""What an ``AttachmentRecord`` is made of, in ``_attachment_from_columns``' order."""
_SUMMARY_COLUMNS = "container_id, state, netns, ifname, pod_namespace, pod_name, pod_uid, boot_id"
"""What a ``SandboxSummary`` is made of, in ``_summary``'s order."""

_SANDBOX_BY_ID_SQL = f"SELECT {_SANDBOX_COLUMNS} FROM sandboxes WHERE container_id = ?"
_ATTACHMENTS_OF_SQL = (
    f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments WHERE container_id = ? ORDER BY position"
)


def load_sandbox(connection: Connection, container_id: str) -> SandboxRecord | None:
    """The sandbox recorded for ``container_id`` with its attachments (by position), None if none is.

    Read by every DEL and rollback: two indexed lookups, the rows turned into records as the
    driver returns them."""
    cursor = cursor_of(connection)
    sandbox = cursor.execute(_SANDBOX_BY_ID_SQL, (container_id,)).fetchone()
    if sandbox is None:
        return None
    return _with_attachments(cursor, sandbox)


def _with_attachments(cursor: sqlite3.Cursor, sandbox: Sequence[Any]) -> SandboxRecord:
    """The sandbox of a ``_SANDBOX_COLUMNS`` row with its attachments, by position."""
    attachments = cursor.execute(_ATTACHMENTS_OF_SQL, (sandbox[0],)).fetchall()
    return _sandbox_from_columns(
        *sandbox, attachments=[_attachment_from_columns(*row) for row in attachments]
    )


def _sandbox_from_columns(
    container_id: str,
    state: str,
    netns: str,
    ifname: str,
    cni_version: str,
    pod_namespace: str,
    pod_name: str,
    pod_uid: str,
    boot_id: str,
    created_at: str,
    updated_at: str,
    netns_id: str,
    parallel: int,
    default_networks: int | None,
    *,
    attachments: Iterable[AttachmentRecord],
) -> SandboxRecord:
    """A sandbox from its columns as the driver returns them (``_SANDBOX_COLUMNS``' order)."""
    return SandboxRecord(
        container_id=container_id,
        state=state,
        netns=netns,
        ifname=ifname,
        cni_version=cni_version,
        pod=PodIdentity(pod_namespace, pod_name, pod_uid),
        boot_id=boot_id,
        created_at=read_stamp(created_at),
        updated_at=read_stamp(updated_at),
        attachments=tuple(attachments),
        netns_id=netns_id,
        parallel=bool(parallel),
        default_networks=default_networks,
    )


def _attachment_from_columns(
    container_id: str,
    ifname: str,
    position: int,
    is_master: int,
    network_name: str,
    plugin_types: str,
    config: bytes,
    cni_args: str,
    capability_args: str,
    cni_path: str,
    state: str,
    result: str | None,
    last_error: str | None,
    created_at: str,
    updated_at: str,
    device: str | None,
    ips: str | None,
    macs: str | None,
    device_ids: str | None,
    root: str,
) -> AttachmentRecord:
    """An attachment from its columns as the driver returns them (``_ATTACHMENT_COLUMNS``' order)."""
    return AttachmentRecord(
        container_id=container_id,
        ifname=ifname,
        position=position,
        is_master=bool(is_master),
        network_name=network_name,
        plugin_types=tuple(filter(None, plugin_types.split(","))),
        config=config,
        cni_args=tuple((str(k), str(v)) for k, v in json.loads(cni_args)),
        capability_args=json.loads(capability_args),
        cni_path=tuple(json.loads(cni_path)),
        state=state,
        result=result,
        last_error=last_error,
        created_at=read_stamp(created_at),
        updated_at=read_stamp(updated_at),
        device=None if device is None else json.loads(device),
        facts=DelegateFacts(ips=_strings(ips), macs=_strings(macs), device_ids=_strings(device_ids)),
        root=root,
    )


_SANDBOXES_SQL = f"SELECT {_SANDBOX_COLUMNS} FROM sandboxes ORDER BY rowid"
_SANDBOXES_IN_STATES_SQL = (
    f"SELECT {_SANDBOX_COLUMNS} FROM sandboxes WHERE state IN (SELECT value FROM json_each(?)) ORDER BY rowid"
)
_ALL_ATTACHMENTS_SQL = f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments ORDER BY position"


def list_sandboxes(connection: Connection, *, states: Sequence[str] | None = None) -> list[SandboxRecord]:
    """Every recorded sandbox (optionally only those in ``states``), oldest first."""
    cursor = cursor_of(connection)
    by_container: dict[str, list[AttachmentRecord]] = {}
    for row in cursor.execute(_ALL_ATTACHMENTS_SQL).fetchall():
        by_container.setdefault(row[0], []).append(_attachment_from_columns(*row))
    if states is None:
        sandboxes = cursor.execute(_SANDBOXES_SQL).fetchall()
    else:
        sandboxes = cursor.execute(_SANDBOXES_IN_STATES_SQL, (json_list(states),)).fetchall()
    return [_sandbox_from_columns(*row, attachments=by_container.get(row[0], ())) for row in sandboxes]


_UNSETTLED_SQL = (
    f"SELECT {_SANDBOX_COLUMNS} FROM sandboxes WHERE state != 'ready' OR boot_id != ? ORDER BY rowid"
)


def list_unsettled(connection: Connection, *, boot_id: str) -> list[SandboxRecord]:
    """Sandboxes recovery must act on: an ADD or DEL that did not finish, or from another boot."""
    cursor = cursor_of(connection)
    return [_with_attachments(cursor, row) for row in cursor.execute(_UNSETTLED_SQL, (boot_id,)).fetchall()]


_SUMMARIES_SQL = f"SELECT {_SUMMARY_COLUMNS} FROM sandboxes"


def sandbox_summaries(connection: Connection) -> list[SandboxSummary]:
    """Every sandbox without its attachments: what GC examines on every pass."""
    return [_summary(*row) for row in cursor_of(connection).execute(_SUMMARIES_SQL).fetchall()]


def _summary(
    container_id: str,
    state: str,
    netns: str,
    ifname: str,
    pod_namespace: str,
    pod_name: str,
    pod_uid: str,
    boot_id: str,
) -> SandboxSummary:
    """A sandbox's identity columns (``_SUMMARY_COLUMNS``' order) as a summary."""
    return SandboxSummary(
        container_id=container_id,
        state=state,
        netns=netns,
        ifname=ifname,
        pod=PodIdentity(pod_namespace, pod_name, pod_uid),
        boot_id=boot_id,
    )


_ATTACHMENT_COUNTS_SQL = "SELECT state, count(*) FROM attachments GROUP BY state"
_CONTAINER_IDS_SQL = "SELECT container_id FROM sandboxes"


def attachment_counts(connection: Connection) -> dict[str, int]:
    """Attachments recorded, by state."""
    rows = cursor_of(connection).execute(_ATTACHMENT_COUNTS_SQL).fetchall()
    return {str(state): int(count) for state, count in rows}


def container_ids(connection: Connection) -> set[str]:
    return {row[0] for row in cursor_of(connection).execute(_CONTAINER_IDS_SQL).fetchall()}


def _missing(container_id: str, ifname: str | None) -> None:
    where = container_id if ifname is None else f"{container_id} interface {ifname}"
    raise UnknownAttachmentError(f"no checkpoint for container {where}")


def _strings(value: str | None) -> tuple[str, ...]:
    """A JSON list of strings as recorded; () for a row written before its facts were derived."""
    return () if value is None or value == "[]" else tuple(str(item) for item in json.loads(value))


# ---- hot-plug: one attachment of a ready sandbox -------------------------------------------------

PARTIAL_STATES = ("intent", "deleting")
"""Attachment states that, in a ``ready`` sandbox, mean a hot-plug ADD or DEL did not finish."""

_SET_ATTACHMENT_STATE_SQL = (
    "UPDATE attachments SET state = ?, updated_at = ? WHERE container_id = ? AND ifname = ?"
)
_PARTIAL_SQL = (
    f"SELECT {_SANDBOX_COLUMNS} FROM sandboxes WHERE state = 'ready' AND container_id IN"
    " (SELECT DISTINCT container_id FROM attachments WHERE state IN ("
    + ", ".join(f"'{state}'" for state in PARTIAL_STATES)
    + ")) ORDER BY rowid"
)
_SANDBOXES_OF_POD_SQL = (
    f"SELECT {_SUMMARY_COLUMNS} FROM sandboxes WHERE pod_namespace = ? AND pod_name = ? ORDER BY rowid"
)


def begin_detach(connection: Connection, *, container_id: str, ifname: str) -> None:
    """Mark one attachment of a running sandbox as being deleted (pending until removed)."""
    params = ("deleting", stamp(_now()), container_id, ifname)
    _expect_changed(connection, _SET_ATTACHMENT_STATE_SQL, params, container_id, ifname)


def list_partial(connection: Connection) -> list[SandboxRecord]:
    """``ready`` sandboxes holding an attachment whose hot-plug ADD or DEL did not finish."""
    cursor = cursor_of(connection)
    return [_with_attachments(cursor, row) for row in cursor.execute(_PARTIAL_SQL).fetchall()]


def sandboxes_of_pod(connection: Connection, *, namespace: str, name: str) -> list[SandboxSummary]:
    """The sandboxes recorded for pod ``namespace/name`` (any state), oldest first: the last one is
    the pod's newest (hot-plug's), whatever the clock did."""
    rows = cursor_of(connection).execute(_SANDBOXES_OF_POD_SQL, (namespace, name)).fetchall()
    return [_summary(*row) for row in rows]


# ---- network-status not yet written (Kubernetes mode) --------------------------------------------

_MARK_STATUS_UNWRITTEN_SQL = (
    "UPDATE sandboxes SET status_unwritten = 1 WHERE container_id = ? AND state = 'ready'"
)
_CLEAR_STATUS_UNWRITTEN_SQL = (
    "UPDATE sandboxes SET status_unwritten = 0 WHERE container_id = ? AND status_unwritten IS 1"
)
_STATUS_UNWRITTEN_SQL = (
    "SELECT sandboxes.container_id, sandboxes.state, sandboxes.netns, sandboxes.ifname,"
    " sandboxes.pod_namespace, sandboxes.pod_name, sandboxes.pod_uid, sandboxes.boot_id FROM sandboxes"
    " WHERE sandboxes.status_unwritten IS 1 AND sandboxes.state = 'ready' AND sandboxes.pod_name != ''"
    " AND NOT EXISTS (SELECT newer.container_id FROM sandboxes AS newer"
    " WHERE newer.pod_namespace = sandboxes.pod_namespace AND newer.pod_name = sandboxes.pod_name"
    " AND newer.rowid > sandboxes.rowid)"
    " ORDER BY sandboxes.rowid DESC LIMIT ?"
)


def mark_status_unwritten(connection: Connection, container_id: str) -> bool:
    """Record that the network-status of running sandbox ``container_id`` is not written yet (its
    ADD's write failed; the background retries have it). False when no ``ready`` sandbox is
    recorded under the ID (nothing is then marked)."""
    return bool(cursor_of(connection).execute(_MARK_STATUS_UNWRITTEN_SQL, (container_id,)).rowcount)


def clear_status_unwritten(connection: Connection, container_id: str) -> None:
    """Record that sandbox ``container_id``'s network-status was written (or needs no write any more)."""
    cursor_of(connection).execute(_CLEAR_STATUS_UNWRITTEN_SQL, (container_id,))


def status_unwritten(connection: Connection, *, limit: int) -> list[SandboxSummary]:
    """The ``ready`` sandboxes whose network-status is marked unwritten, each the newest sandbox
    recorded for its pod (an older one's status must never land over a newer one's, which may have
    been written since): the newest ``limit`` of them, oldest first."""
    rows = cursor_of(connection).execute(_STATUS_UNWRITTEN_SQL, (limit,)).fetchall()
    return [_summary(*row) for row in reversed(rows)]
