"""Teardown: the one DEL path of recorded attachments, replayed from the checkpoint.

Used by the engine for the runtime's DEL, rollback of a failed ADD, recovery, GC, spool replay and
hot-plug detach, so every way an attachment leaves the node is the same code (invariants 4-6).
A teardown marks the sandbox ``deleting`` (committed before any DEL runs), DELs its attachments
newest first with their recorded config, arguments, result and root, and returns what the caller
commits: the attachments whose DEL succeeded are removed; a DEL that failed for a reason that may
pass stays pending with its error recorded (invariant 5); a DEL that can never run is completed
with its reason in the history (invariant 5b). Never resolves networks, never reads settings.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from app import metrics
from app.attach import device_info, logcontext, recording, replay
from app.attach import errors as attach_errors
from app.attach.crashpoints import CrashPoints, Point
from app.attach.errors import UndeletableError, as_cni_error, never_runnable
from app.attach.recording import UnitOfWork
from app.attach.requests import Trigger
from app.attach.vfs import HostDevices
from app.cni import api
from app.cni.types import CniError, ErrorCode
from app.store import checkpoints
from app.store.database import Database
from app.store.records import AttachmentRecord, HistoryEntry, SandboxRecord

log = logging.getLogger(__name__)

CRASH_POINT_AFTER_DEL = {
    Trigger.RUNTIME: Point.DEL_AFTER_EXEC,
    Trigger.OPERATOR: Point.DEL_AFTER_EXEC,
    Trigger.ROLLBACK: Point.ROLLBACK_AFTER_DEL,
    Trigger.RECOVERY: Point.GC_AFTER_DEL,
    Trigger.GC: Point.GC_AFTER_DEL,
    Trigger.SPOOL: Point.GC_AFTER_DEL,
    Trigger.DELEGATE: Point.DEL_AFTER_EXEC,
    Trigger.HOTPLUG: Point.DEL_AFTER_EXEC,
}
"""Where a test may kill the daemon after one delegate's DEL ran, by what asked for the teardown."""


@dataclass(frozen=True, slots=True)
class Teardown:
    """DELs of recorded attachments for one engine: its store, crash points, host devices, how it
    runs plugins (``cni_config(cni_path, root=...)``) and how it stamps history lines."""

    db: Database
    crash: CrashPoints
    devices: HostDevices
    cni_config: Callable[..., api.CniConfig]
    recorded: Callable[[HistoryEntry], UnitOfWork]

    async def run(self, record: SandboxRecord, *, trigger: Trigger) -> list[CniError]:
        """DEL every attachment of ``record``, newest first; forget those whose DEL succeeded."""
        errors, units = await self.prepare(record, trigger=trigger)
        await self.db.write(recording.together(units))
        return errors

    async def load_and_begin(self, container_id: str) -> SandboxRecord | None:
        """The sandbox's record (None if nothing is recorded), marked as being deleted in the same
        commit: a runtime DEL reads and begins with one trip to the store, not two."""
        record = await self.db.write(partial(checkpoints.begin_delete_and_load, container_id=container_id))
        if record is not None:
            self.crash.reached(Point.DEL_AFTER_BEGIN)
        return record

    async def prepare(
        self, record: SandboxRecord, *, trigger: Trigger
    ) -> tuple[list[CniError], list[UnitOfWork]]:
        """Run the DELs of a teardown; return its errors and what the caller must commit."""
        if record.state != "deleting":
            await self.db.write(partial(checkpoints.begin_delete, container_id=record.container_id))
            self.crash.reached(Point.DEL_AFTER_BEGIN)
        errors, units = await self.detach(record, record.attachments, trigger=trigger)
        units.append(partial(checkpoints.finish_delete, container_id=record.container_id))
        return errors, units

    async def detach(
        self, record: SandboxRecord, attachments: Sequence[AttachmentRecord], *, trigger: Trigger
    ) -> tuple[list[CniError], list[UnitOfWork]]:
        """DEL ``attachments`` of ``record`` newest first; return the errors and what the caller must
        commit (the history lines, and the removal of those whose DEL succeeded)."""
        removed: list[str] = []
        units: list[UnitOfWork] = []
        errors: list[CniError] = []
        for attachment in sorted(attachments, key=lambda a: a.position, reverse=True):
            error = await self.one(record=record, attachment=attachment, trigger=trigger, units=units)
            if error is None:
                removed.append(attachment.ifname)
            else:
                errors.append(error)
        units.append(
            partial(checkpoints.remove_attachments, container_id=record.container_id, ifnames=removed)
        )
        return errors, units

    async def one(
        self,
        *,
        record: SandboxRecord,
        attachment: AttachmentRecord,
        trigger: Trigger,
        units: list[UnitOfWork],
    ) -> CniError | None:
        """DEL one attachment; append what to record to ``units``; return its error, if any.

        A DEL that can never run (plugin refused by name, recorded config or result unparsable) is
        not an error: the reason goes to the history and the attachment is forgotten (invariant 5b).
        """
        started = time.monotonic()
        error: CniError | None = None
        abandoned = False
        context = logcontext.fields(
            record.container_id,
            command="DEL",
            pod=record.pod,
            ifname=attachment.ifname,
            network=attachment.network_name,
        )
        try:
            await self.del_attachment(record, attachment)
            self.crash.reached(CRASH_POINT_AFTER_DEL[trigger])
        except Exception as exc:
            abandoned = never_runnable(exc)
            cause = exc.error if isinstance(exc, UndeletableError) else exc
            error = attach_errors.unexpected(cause, step="delegate-del", context=context).with_context(
                f'error removing container from network "{attachment.network_name}" ({attachment.ifname})'
            )
            if abandoned:
                error = error.with_context("DEL can never run, attachment forgotten")
                log.warning("%s", error, extra=context)
                device_info.remove_for_attachment(attachment)
            else:
                units.append(
                    partial(
                        checkpoints.record_error,
                        container_id=record.container_id,
                        ifname=attachment.ifname,
                        error=json.dumps(error.to_json()),
                    )
                )
        entry = recording.teardown_entry(
            record=record, attachment=attachment, trigger=trigger, started=started, error=error
        )
        units.append(self.recorded(entry))
        return None if abandoned else error

    async def del_attachment(self, record: SandboxRecord, attachment: AttachmentRecord) -> None:
        """The delegate's DEL, replayed from the checkpoint; then its host device must be back and
        the device-info file made for it is removed.

        Raises ``UndeletableError`` when the recorded config or result cannot be read back.
        """
        try:
            net, rt = replay.recorded_call(record, attachment, netns_path=replay.netns_for_del(record))
            prev_result = json.loads(attachment.result) if attachment.result else None
            if prev_result is not None and not isinstance(prev_result, dict):
                raise CniError(ErrorCode.DECODING_FAILURE, "recorded result is not a JSON object")
            prepared = api.prev_result_for_del(net, prev_result)
        except (CniError, ValueError, RecursionError) as exc:
            raise UndeletableError(
                as_cni_error(exc).with_context("the checkpoint's record of this delegate is unreadable")
                if isinstance(exc, CniError)
                else CniError(ErrorCode.DECODING_FAILURE, f"recorded result does not parse: {exc}")
            ) from exc
        await api.del_network_list(
            cni=self.cni_config(attachment.cni_path, root=attachment.root),
            net=net,
            rt=rt,
            prev_result=prepared,
            prev_result_prepared=True,
        )
        if attachment.device is not None and await self.devices.ensure_returned(attachment.device):
            metrics.GC_RECLAIMED.labels("vf").inc()
        device_info.remove_for_attachment(attachment)
