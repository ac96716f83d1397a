"""History lines and metrics of the engine's steps: one builder per kind of line, metrics observed once.

Called by the attach engine (``app.attach.engine``) and the upstream-cache DEL
(``app.attach.upstream_delete``) to describe a whole CNI operation (``step="request"``) or one
delegate's ADD or DEL (``step="delegate"``), and to turn a line into the unit of work that appends
it to the history. It observes the operation and delegate metrics when a line is built for commit;
it never runs a delegate, reads the store or decides an outcome: callers pass what happened.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from app import metrics
from app.attach import result_facts
from app.attach.requests import Command, SandboxRequest, Trigger
from app.cni.types import CniError, JsonObject
from app.store import history
from app.store.database import Work
from app.store.records import AttachmentRecord, DelegateFacts, DelegateIntent, HistoryEntry, SandboxRecord

UnitOfWork = Work[object]


def history_unit(entry: HistoryEntry, *, node: str = "") -> UnitOfWork:
    """The unit of work appending ``entry`` to the history, stamped with ``node`` (the node that ran
    the step) where given; its metrics are observed now."""
    observe(entry)
    return partial(history.append, entry=entry, node=node or None)


def observe(entry: HistoryEntry) -> None:
    """Count a history line in the metrics: operation latency and errors, or delegate latency."""
    seconds = (entry.duration_ms or 0.0) / 1000
    if entry.step == "request":
        metrics.labelled(metrics.CNI_OPERATION_SECONDS, entry.command, entry.outcome).observe(seconds)
        if entry.error_code is not None:
            metrics.labelled(metrics.CNI_ERRORS, entry.command, str(entry.error_code)).inc()
    elif entry.step == "delegate":
        plugins = ",".join(entry.plugin_types)
        metrics.labelled(metrics.DELEGATE_SECONDS, entry.command, plugins, entry.outcome).observe(seconds)


def sandboxes_reclaimed(count: int) -> None:
    """Count sandboxes garbage collection tore down whole (the runtime's CNI GC; the periodic
    passes count theirs with their report)."""
    metrics.GC_RECLAIMED.labels("sandbox").inc(count)


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.monotonic()`` reading), rounded to microseconds."""
    return round((time.monotonic() - started) * 1000, 3)


def entry(
    *,
    command: Command,
    step: str,
    trigger: Trigger,
    started: float,
    error: CniError | None,
    result: JsonObject | None,
    **identity: Any,
) -> HistoryEntry:
    """A history line: what ran, for whom (``identity``), how long, its addresses or its error."""
    ips, macs = result_facts.addresses(result)
    return HistoryEntry(
        command=command,
        step=step,
        trigger=trigger,
        outcome="ok" if error is None else "error",
        duration_ms=elapsed_ms(started),
        ips=ips,
        macs=macs,
        **identity,
        **error_fields(error),
    )


def error_fields(error: CniError | None) -> dict[str, Any]:
    """The history columns of an error (none when ``error`` is None)."""
    if error is None:
        return {}
    return {"error_code": error.code, "error_msg": error.msg, "error_details": error.details or None}


def request_entry(
    *, request: SandboxRequest, started: float, error: CniError | None, result: JsonObject | None = None
) -> HistoryEntry:
    """The history line of a whole CNI operation."""
    return entry(
        command=request.command,
        step="request",
        trigger=request.trigger,
        started=started,
        error=error,
        result=result,
        container_id=request.container_id,
        netns=request.netns,
        ifname=request.ifname,
        pod=request.pod,
    )


def delegate_entry(
    *,
    request: SandboxRequest,
    intent: DelegateIntent,
    started: float,
    error: CniError | None,
    facts: DelegateFacts | None = None,
) -> HistoryEntry:
    """The history line of one delegate's ADD; ``facts`` are its result's, None when it failed."""
    return _delegate_line(
        command=Command.ADD,
        trigger=request.trigger,
        started=started,
        error=error,
        facts=facts or DelegateFacts(device_ids=intent.device_ids),
        container_id=request.container_id,
        netns=request.netns,
        ifname=intent.ifname,
        network_name=intent.network_name,
        plugin_types=intent.plugin_types,
        pod=request.pod,
    )


def teardown_entry(
    *,
    record: SandboxRecord,
    attachment: AttachmentRecord,
    trigger: Trigger,
    started: float,
    error: CniError | None,
) -> HistoryEntry:
    """The history line of one delegate's DEL (runtime DEL, rollback, recovery, GC, spool), with the
    facts recorded on the attachment."""
    return _delegate_line(
        command=Command.DEL,
        trigger=trigger,
        started=started,
        error=error,
        facts=attachment.facts,
        container_id=record.container_id,
        netns=record.netns,
        ifname=attachment.ifname,
        network_name=attachment.network_name,
        plugin_types=attachment.plugin_types,
        pod=record.pod,
    )


def _delegate_line(
    *,
    command: Command,
    trigger: Trigger,
    started: float,
    error: CniError | None,
    facts: DelegateFacts,
    **identity: Any,
) -> HistoryEntry:
    return HistoryEntry(
        command=command,
        step="delegate",
        trigger=trigger,
        outcome="ok" if error is None else "error",
        duration_ms=elapsed_ms(started),
        ips=facts.ips,
        macs=facts.macs,
        device_ids=facts.device_ids,
        **identity,
        **error_fields(error),
    )


def together(units: Sequence[UnitOfWork]) -> UnitOfWork:
    """Several units of work as one, committed together."""

    def run(connection: Any) -> None:
        for unit in units:
            unit(connection)

    return run
