"""Start-up recovery: settle every sandbox a previous run of the daemon left unsettled.

Run by the daemon after the store is open and before ``/readyz`` reports ready, so no ADD can
interleave with it. Three cases, each torn down through the engine's one DEL path with the
recorded configuration (invariants 4-6, 11):

- an ADD that did not finish (state ``adding``: intents without results, or results without the
  final commit): the runtime never heard "success", so everything it may have attached is rolled
  back, newest delegate first;
- a DEL that did not finish (state ``deleting``): it is finished;
- a sandbox recorded during an earlier boot: its netns died with that boot, but IPAM leases and
  other on-disk state did not, so its delegates are DELed too;
- a running sandbox with a hot-plugged delegate whose ADD or DEL did not finish (an intent without
  result is possibly present): that delegate alone is DELed; hot-plug attaches it again if the pod
  still asks for it.

A killed run may also have left a device-info file half-written (a temporary never renamed,
``app.attach.device_info``): it is removed first, before any ADD can write one.

A sandbox whose teardown fails stays recorded (pending, with its error) and does not stop the
others; GC retries it later. So does one whose teardown raised what no DEL path expects (a bug, a
failed write): logged with its container, counted, and left for GC, never cancelling the others'
DELs nor keeping the daemon from starting (a crash loop would leave the node without any
network). Only a store that cannot be read at all fails recovery. Sandboxes are torn down
concurrently, a few at a time. Once the daemon is stopping (``stop``), no further sandbox's
teardown begins: those under way go on (until the stop's grace ends), the rest stay recorded, as
they were, for the next daemon's recovery.

Before any of that, plugin processes the previous run started for these attachments and that still
run (the daemon died, they did not: each leads its own session) are killed and waited for
(``app.cni.reaper``), so no DEL races an ADD still in progress (invariant 9). A sandbox with such a
process that would not die is left recorded, untouched, for GC to retry. The kill is done holding
the locks of those sandboxes: the daemon serves DELs before recovery, and the plugin of a runtime
DEL (after a reboot, of the last boot's sandboxes) carries the same marker as an orphan; recovery
waits for such a DEL to end rather than kill its plugin under it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app import metrics
from app.attach import device_info, logcontext
from app.attach import errors as attach_errors
from app.attach.engine import AttachEngine
from app.attach.locks import SandboxLocks
from app.attach.requests import Trigger
from app.cni import reaper
from app.cni.invoke import delegate_marker
from app.cni.types import CniError, ErrorCode
from app.store import checkpoints
from app.store.database import Database
from app.store.records import SandboxRecord

log = logging.getLogger(__name__)

CONCURRENCY = 8
"""Sandboxes torn down at once during recovery."""


@dataclass
class RecoveryReport:
    """What recovery did. ``rolled_back``, ``deletes_finished`` and ``earlier_boot`` count the
    sandboxes torn down (each once, whether its teardown left errors or not); ``failed`` holds one
    line per error, a sandbox with several errors appearing several times, and those left untouched
    because a plugin process of theirs would not die, counted nowhere else; ``left`` the sandboxes
    whose teardown did not begin because the daemon was stopping."""

    rolled_back: int = 0
    deletes_finished: int = 0
    earlier_boot: int = 0
    failed: list[tuple[str, CniError]] = field(default_factory=list)
    duration_ms: float = 0.0
    orphans_killed: list[reaper.Orphan] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def reason(sandbox: SandboxRecord, boot_id: str) -> str:
    """Why recovery acts on ``sandbox``: ``adding``, ``deleting`` or ``earlier-boot``."""
    if sandbox.state == "adding":
        return "adding"
    if sandbox.state == "deleting":
        return "deleting"
    if sandbox.boot_id != boot_id:
        return "earlier-boot"
    raise ValueError(f"sandbox {sandbox.container_id} is settled")


async def recover(
    *,
    engine: AttachEngine,
    db: Database,
    device_info_dir: str | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> RecoveryReport:
    """Settle every unsettled sandbox, and remove the device-info temporaries a killed run left
    under ``device_info_dir``; return what was done. Once ``stop`` says the daemon is stopping, no
    further sandbox's teardown begins (``left``)."""
    started = time.monotonic()
    report = RecoveryReport()
    if device_info_dir is not None:
        await asyncio.to_thread(device_info.remove_leftover_temporaries, device_info_dir)
    unsettled = await db.read(
        lambda connection: checkpoints.list_unsettled(connection, boot_id=engine.boot_id)
    )
    partial = await db.read(checkpoints.list_partial)
    stuck = await _reap_orphans(engine.locks, unsettled, partial, report)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def settle(sandbox: SandboxRecord) -> None:
        if sandbox.container_id in stuck:
            error = CniError(
                ErrorCode.TRY_AGAIN_LATER,
                f"container {sandbox.container_id}: a plugin process of the previous run would not die",
                "not torn down while it may still be running",
            )
            log.error("recovery left container %s pending: %s", sandbox.container_id, error)
            report.failed.append((sandbox.container_id, error))
            return
        why = reason(sandbox, engine.boot_id)
        async with gate:
            if stop():
                report.left.append(sandbox.container_id)
                return
            settled, errors = await _tear_down(engine, sandbox)
        if not settled:  # a DEL served meanwhile (the runtime's, after a reboot) settled it already
            return
        metrics.RECOVERY_ACTIONS.labels(why, "error" if errors else "ok").inc()
        if why == "adding":
            report.rolled_back += 1
        elif why == "deleting":
            report.deletes_finished += 1
        else:
            report.earlier_boot += 1
        for error in errors:
            log.error(
                "recovery left container %s pending (%s): %s",
                sandbox.container_id,
                why,
                error,
                extra=logcontext.fields(
                    sandbox.container_id, command="DEL", trigger="recovery", pod=sandbox.pod
                ),
            )
            report.failed.append((sandbox.container_id, error))

    async with asyncio.TaskGroup() as tasks:
        for sandbox in unsettled:
            tasks.create_task(settle(sandbox), name=f"recover-{sandbox.container_id[:12]}")
    try:
        hotplug_errors = (
            [] if stop() else await engine.settle_partial_attachments(trigger=Trigger.RECOVERY, skip=stuck)
        )
    except Exception:  # a surprise: the GC passes retry what is still pending
        log.exception("recovery: pending DELs of hot-plugged delegates not all settled, left to GC")
        hotplug_errors = []
    for error in hotplug_errors:
        log.error("recovery left a hot-plugged attachment pending: %s", error)
    report.duration_ms = (time.monotonic() - started) * 1000
    if unsettled:
        if report.orphans_killed:
            log.info("recovery: killed %d orphaned plugin processes first", len(report.orphans_killed))
        log.info(
            "recovery: %d rolled back, %d deletes finished, %d from an earlier boot, %d failed, in %.0f ms",
            report.rolled_back,
            report.deletes_finished,
            report.earlier_boot,
            len(report.failed),
            report.duration_ms,
        )
    if report.left:
        log.warning(
            "recovery: stopping: %d sandboxes left recorded for the next daemon's recovery", len(report.left)
        )
    return report


async def _tear_down(engine: AttachEngine, sandbox: SandboxRecord) -> tuple[bool, list[CniError]]:
    """``engine.tear_down`` of one sandbox, whatever it raises: whether it was still recorded (a DEL
    the daemon served before recovery may have removed it), and the errors. A surprise (a bug, a
    failed write) becomes that sandbox's error, logged with its container and counted, and the
    sandbox stays recorded for GC to retry."""
    try:
        record, errors = await engine.tear_down_if(sandbox.container_id, trigger=Trigger.RECOVERY)
    except Exception as exc:
        context = logcontext.fields(sandbox.container_id, command="DEL", trigger="recovery", pod=sandbox.pod)
        return True, [attach_errors.unexpected(exc, step="recovery", context=context)]
    return record is not None, errors


async def _reap_orphans(
    locks: SandboxLocks, unsettled: list[SandboxRecord], partial: list[SandboxRecord], report: RecoveryReport
) -> set[str]:
    """Kill what still runs for the attachments about to be torn down (every attachment of an
    unsettled sandbox, the unfinished hot-plugged ones of a running sandbox), holding those
    sandboxes' locks: a DEL the daemon serves meanwhile runs plugins with the same markers, and is
    waited for, never killed. Return the container IDs of those with a process that would not die."""
    attachments = [
        (sandbox.container_id, attachment.ifname)
        for sandbox in unsettled
        for attachment in sandbox.attachments
    ] + [
        (sandbox.container_id, attachment.ifname)
        for sandbox in partial
        for attachment in sandbox.attachments
        if attachment.state in checkpoints.PARTIAL_STATES
    ]
    markers = {delegate_marker(container_id, ifname) for container_id, ifname in attachments}
    async with locks.hold_all({container_id for container_id, _ in attachments}):
        try:
            report.orphans_killed = await reaper.reap(markers)
            stuck: set[str] = set()
        except reaper.ReapError as exc:
            log.error("recovery: %s", exc)
            stuck = {orphan.container_id for orphan in exc.survivors}
    metrics.ORPHANS_REAPED.inc(len(report.orphans_killed))
    return stuck
