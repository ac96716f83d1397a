"""Per-sandbox, per-delegate intents and results of CNI calls: the checkpoint.

Written by ``app.attach`` before a delegate runs (intent) and after it returns (result); read by
DEL, CHECK, recovery and GC, which replay what is recorded here and never re-resolve networks.
Functions take a Session and run inside the writer's transaction (``Database.write``); they know
no CNI rules. A sandbox row disappears only when its last attachment has been removed, that is,
after every delegate's DEL succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload

from app.store.models import AttachmentRow, Sandbox
from app.store.records import (
    AttachmentRecord,
    DelegateIntent,
    PodIdentity,
    SandboxIntent,
    SandboxRecord,
)


class SandboxExistsError(Exception):
    """An ADD was asked for a container ID that already has a checkpoint."""

    def __init__(self, container_id: str, state: str) -> None:
        super().__init__(f"container {container_id} already has a recorded attachment (state {state!r})")
        self.container_id = container_id
        self.state = state


class UnknownAttachmentError(LookupError):
    """A write names a (container ID, interface) the checkpoint does not hold."""


def _now() -> datetime:
    return datetime.now(UTC)


def begin_add(session: Session, sandbox: SandboxIntent) -> None:
    """Record a sandbox whose ADD starts now (state ``adding``)."""
    existing = session.get(Sandbox, sandbox.container_id)
    if existing is not None:
        raise SandboxExistsError(sandbox.container_id, existing.state)
    now = _now()
    session.add(
        Sandbox(
            container_id=sandbox.container_id,
            state="adding",
            netns=sandbox.netns,
            ifname=sandbox.ifname,
            cni_version=sandbox.cni_version,
            pod_namespace=sandbox.pod.namespace,
            pod_name=sandbox.pod.name,
            pod_uid=sandbox.pod.uid,
            boot_id=sandbox.boot_id,
            created_at=now,
            updated_at=now,
        )
    )


def record_intent(session: Session, intent: DelegateIntent) -> None:
    """Record a delegate about to run (state ``intent``): config, args and runtimeConfig."""
    now = _now()
    session.add(
        AttachmentRow(
            container_id=intent.container_id,
            ifname=intent.ifname,
            position=intent.position,
            is_master=intent.is_master,
            network_name=intent.network_name,
            plugin_types=",".join(intent.plugin_types),
            config=intent.config,
            cni_args=json.dumps([list(pair) for pair in intent.cni_args]),
            capability_args=json.dumps(dict(intent.capability_args), sort_keys=True),
            cni_path=json.dumps(list(intent.cni_path)),
            state="intent",
            created_at=now,
            updated_at=now,
        )
    )


def record_result(session: Session, *, container_id: str, ifname: str, result: str) -> None:
    """Record the result a delegate printed (state ``added``)."""
    row = _attachment(session, container_id, ifname)
    row.result = result
    row.state = "added"
    row.last_error = None
    row.updated_at = _now()


def record_error(session: Session, *, container_id: str, ifname: str, error: str) -> None:
    """Record why the last operation on an attachment failed; its state is left as it was."""
    row = _attachment(session, container_id, ifname)
    row.last_error = error
    row.updated_at = _now()


def finish_add(session: Session, container_id: str) -> None:
    """Mark a sandbox's ADD complete (state ``ready``)."""
    sandbox = _sandbox(session, container_id)
    sandbox.state = "ready"
    sandbox.updated_at = _now()


def begin_delete(session: Session, container_id: str) -> None:
    """Mark a sandbox and all its attachments as being deleted (pending until removed)."""
    sandbox = _sandbox(session, container_id)
    now = _now()
    sandbox.state = "deleting"
    sandbox.updated_at = now
    for row in sandbox.attachments:
        row.state = "deleting"
        row.updated_at = now


def remove_attachments(session: Session, *, container_id: str, ifnames: Iterable[str]) -> None:
    """Forget attachments whose DEL succeeded."""
    names = list(ifnames)
    if names:
        session.execute(
            delete(AttachmentRow).where(
                AttachmentRow.container_id == container_id, AttachmentRow.ifname.in_(names)
            )
        )


def finish_delete(session: Session, container_id: str) -> bool:
    """Forget the sandbox if no attachment of it remains; True when it is gone."""
    session.expire_all()
    sandbox = session.get(Sandbox, container_id)
    if sandbox is None:
        return True
    if sandbox.attachments:
        return False
    session.delete(sandbox)
    return True


def load_sandbox(session: Session, container_id: str) -> SandboxRecord | None:
    sandbox = session.execute(
        select(Sandbox).where(Sandbox.container_id == container_id).options(selectinload(Sandbox.attachments))
    ).scalar_one_or_none()
    return None if sandbox is None else _sandbox_record(sandbox)


def list_sandboxes(session: Session, *, states: Sequence[str] | None = None) -> list[SandboxRecord]:
    query = select(Sandbox).options(selectinload(Sandbox.attachments)).order_by(Sandbox.created_at)
    if states is not None:
        query = query.where(Sandbox.state.in_(list(states)))
    return [_sandbox_record(sandbox) for sandbox in session.execute(query).scalars()]


def _sandbox(session: Session, container_id: str) -> Sandbox:
    sandbox = session.get(Sandbox, container_id)
    if sandbox is None:
        raise UnknownAttachmentError(f"no checkpoint for container {container_id}")
    return sandbox


def _attachment(session: Session, container_id: str, ifname: str) -> AttachmentRow:
    row = session.execute(
        select(AttachmentRow).where(
            AttachmentRow.container_id == container_id, AttachmentRow.ifname == ifname
        )
    ).scalar_one_or_none()
    if row is None:
        raise UnknownAttachmentError(f"no checkpoint for container {container_id} interface {ifname}")
    return row


def _sandbox_record(sandbox: Sandbox) -> SandboxRecord:
    return SandboxRecord(
        container_id=sandbox.container_id,
        state=sandbox.state,
        netns=sandbox.netns,
        ifname=sandbox.ifname,
        cni_version=sandbox.cni_version,
        pod=PodIdentity(sandbox.pod_namespace, sandbox.pod_name, sandbox.pod_uid),
        boot_id=sandbox.boot_id,
        created_at=sandbox.created_at,
        updated_at=sandbox.updated_at,
        attachments=tuple(_attachment_record(row) for row in sandbox.attachments),
    )


def _attachment_record(row: AttachmentRow) -> AttachmentRecord:
    return AttachmentRecord(
        container_id=row.container_id,
        ifname=row.ifname,
        position=row.position,
        is_master=row.is_master,
        network_name=row.network_name,
        plugin_types=tuple(filter(None, row.plugin_types.split(","))),
        config=row.config,
        cni_args=tuple((str(k), str(v)) for k, v in json.loads(row.cni_args)),
        capability_args=json.loads(row.capability_args),
        cni_path=tuple(json.loads(row.cni_path)),
        state=row.state,
        result=row.result,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
