"""Checkpoint rows built for tests that need a sandbox recorded, not an ADD run: a delegate's
intent with plain defaults, and a sandbox recorded as an ADD that answered."""

from __future__ import annotations

import dataclasses

from app.store import checkpoints
from app.store.database import Connection
from app.store.records import DelegateIntent, SandboxIntent


def delegate_intent(container_id: str, **changes: object) -> DelegateIntent:
    """The intent of a bridge delegate on ``eth0`` (network ``net``), with ``changes`` applied."""
    intent = DelegateIntent(
        container_id=container_id,
        ifname="eth0",
        position=0,
        is_master=True,
        network_name="net",
        plugin_types=("bridge",),
        config=b'{"cniVersion":"1.0.0"}',
        cni_args=(),
        capability_args={},
        cni_path=("/opt/cni/bin",),
    )
    return dataclasses.replace(intent, **changes)  # type: ignore[arg-type]


def record_running(
    connection: Connection,
    sandbox: SandboxIntent,
    *,
    intent: DelegateIntent | None = None,
    result: str | None = None,
) -> None:
    """``sandbox`` recorded as an ADD that answered (state ``ready``) with one attachment: ``intent``
    (``delegate_intent``'s by default), with ``result`` if one is given."""
    checkpoints.begin_add(connection, sandbox)
    attachment = intent or delegate_intent(sandbox.container_id)
    checkpoints.record_intent(connection, attachment)
    if result is not None:
        checkpoints.record_result(
            connection, container_id=sandbox.container_id, ifname=attachment.ifname, result=result
        )
    checkpoints.finish_add(connection, sandbox.container_id)
