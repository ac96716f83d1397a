"""Teardown: the one DEL path of recorded attachments, replayed from the checkpoint.

Used by the engine for the runtime's DEL, rollback of a failed ADD, recovery, GC, spool replay and
hot-plug detach, so every way an attachment leaves the node is the same code (invariants 4-6).
A teardown marks the sandbox ``deleting`` (committed before any DEL runs), kills what an earlier
run of the daemon may still run for its attachments (an ADD it never finished, a DEL it began:
invariant 9), DELs its attachments
newest first with their recorded config, arguments, result and root (today's ``chrootDir`` where
the recorded root is gone: ``root_for_del``), and returns what the caller
commits: the attachments whose DEL succeeded are removed; a DEL that failed for a reason that may
pass stays pending with its error recorded (invariant 5); a DEL that can never run is completed
with its reason in the history (invariant 5b); one that failed in the namespace only for want of the
pod's interface (host-device's, once its device is out of the pod) is replayed without a namespace.
A sandbox whose ADD ran its delegates in parallel
(recorded with it) has them DELed in parallel, the cluster network's last. Never resolves
networks, never reads settings.

A teardown's commits are not durable (``Database.write(durable=False)``: no sync of the WAL, so no
wait for the disk): a crash of the daemon or of its whole tree loses none of them, and a power loss,
which may undo the last of them, can only bring back a sandbox its DEL had removed, which then is
a sandbox of an earlier boot and DELed again at start-up (invariant 11; DEL is idempotent).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from app import metrics
from app.attach import device_info, logcontext, masquerade, netns, recording, replay, vfs
from app.attach import errors as attach_errors
from app.attach.crashpoints import CrashPoints, Point
from app.attach.errors import UndeletableError, as_cni_error, never_runnable
from app.attach.recording import UnitOfWork
from app.attach.requests import Trigger
from app.attach.vfs import HOST_DEVICE, HostDevices
from app.cni import api, invoke, reaper
from app.cni.types import CniError, ErrorCode, NetworkConfigList, PluginExitError, RefusedAlikeError
from app.store import checkpoints
from app.store.database import Database
from app.store.records import AttachmentRecord, HistoryEntry, SandboxRecord

log = logging.getLogger(__name__)


def root_for_del(record: SandboxRecord, attachment: AttachmentRecord) -> str | None:
    """Where the attachment's DEL runs: the root its ADD ran in (``chrootDir``; "" the daemon's
    own), unless that root is no longer a directory at all (the host root unmounted, a daemon
    restarted with another ``chrootDir`` or none): then None, today's ``chrootDir``. Kept, such a
    DEL could only fail for as long as the node runs (invariant 5b); a root that is today's too
    still fails, naming it, until it is back."""
    root = attachment.root
    if not root or os.path.isdir(root):
        return root
    log.warning(
        "the chrootDir %s that %s of container %s was added in is gone: its DEL runs in today's",
        root,
        attachment.ifname,
        record.container_id,
        extra=logcontext.fields(record.container_id, command="DEL", pod=record.pod),
    )
    return None


def _may_run_for_an_earlier_run(attachment: AttachmentRecord) -> bool:
    """A plugin an earlier run of the daemon started for the attachment may still run (the daemon
    died, its plugins did not: each leads its own session), judged on the attachment as recorded
    before this teardown began:

    - neither a result nor an error recorded: its ADD was cut short by a daemon that died (this
      daemon records one or the other for every delegate that ran, before it lets go of the
      sandbox's lock; a DEL that failed since records its error);
    - ``deleting``: a DEL of it had begun and not finished. A daemon killed in the middle of a
      teardown leaves running every DEL it had started (a parallel teardown runs the other
      networks' DELs together). A DEL of this daemon's own that failed leaves it so too (this
      daemon waits for its plugins before it lets go of the lock): its retry pays a scan that
      finds nothing."""
    return (attachment.result is None and attachment.last_error is None) or attachment.state == "deleting"


async def _reap_earlier_runs_plugins(
    record: SandboxRecord, attachments: Sequence[AttachmentRecord]
) -> CniError | None:
    """Kill, and wait for, what an earlier run may still run for ``attachments`` (an ADD it never
    finished, a DEL it began); the error to keep them pending with when some of it would not die,
    else None.

    Start-up recovery reaps these too, but the daemon serves DELs before it has run, and a DEL
    of such a sandbox can be the first request a restarted daemon serves. A teardown of recorded
    ADDs that no DEL began before it (nearly all) scans nothing."""
    markers = [
        invoke.delegate_marker(record.container_id, attachment.ifname)
        for attachment in attachments
        if _may_run_for_an_earlier_run(attachment)
    ]
    if not markers:
        return None
    try:
        await reaper.reap(markers)
    except reaper.ReapError as exc:
        error = CniError(
            ErrorCode.TRY_AGAIN_LATER,
            f"container {record.container_id}: a plugin process an earlier run left running would not die",
            f"nothing is DELed while it may still run: {exc}",
        )
        log.error("%s", error, extra=logcontext.fields(record.container_id, command="DEL", pod=record.pod))
        return error
    return None


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
    boot_id: str
    """Today's kernel boot: a sandbox of another one has no namespace left to enter."""

    async def run(self, record: SandboxRecord, *, trigger: Trigger) -> list[CniError]:
        """DEL every attachment of ``record``, newest first; forget those whose DEL succeeded."""
        errors, units = await self.prepare(record, trigger=trigger)
        await self.db.write(recording.together(units), durable=False)
        return errors

    async def load_and_begin(self, container_id: str) -> SandboxRecord | None:
        """The sandbox's record (None if nothing is recorded), marked as being deleted in the same
        commit: a runtime DEL reads and begins with one trip to the store, not two. Its attachments
        are as recorded before (``checkpoints.begin_delete_and_load``)."""
        record = await self.db.write(
            partial(checkpoints.begin_delete_and_load, container_id=container_id), durable=False
        )
        if record is not None:
            self.crash.reached(Point.DEL_AFTER_BEGIN)
        return record

    async def prepare(
        self, record: SandboxRecord, *, trigger: Trigger
    ) -> tuple[list[CniError], list[UnitOfWork]]:
        """Run the DELs of a teardown; return its errors and what the caller must commit."""
        if record.state != "deleting":
            await self.db.write(
                partial(checkpoints.begin_delete, container_id=record.container_id), durable=False
            )
            self.crash.reached(Point.DEL_AFTER_BEGIN)
        errors, units = await self.detach(record, record.attachments, trigger=trigger)
        units.append(partial(checkpoints.finish_delete, container_id=record.container_id))
        return errors, units

    async def detach(
        self, record: SandboxRecord, attachments: Sequence[AttachmentRecord], *, trigger: Trigger
    ) -> tuple[list[CniError], list[UnitOfWork]]:
        """DEL ``attachments`` of ``record`` newest first; return the errors and what the caller must
        commit (the history lines, and the removal of those whose DEL succeeded).

        A sandbox whose ADD ran in parallel (``record.parallel``) is taken down the same way in
        reverse: every delegate but the cluster network's concurrently, each left to finish whatever
        the others do, then the cluster network's. What is recorded, and in which order, is the
        same as one after another (newest first).

        An ADD of an earlier run of the daemon that never finished, or a DEL it began, may still have
        a plugin running (the daemon died, its plugin did not): that is killed and waited for first
        (invariant 9), and while it will not die nothing of the sandbox is DELed (code 11, retried)."""
        survivor = await _reap_earlier_runs_plugins(record, attachments)
        if survivor is not None:
            return [survivor], []
        newest_first = sorted(attachments, key=lambda a: a.position, reverse=True)
        outcomes: list[tuple[CniError | None, list[UnitOfWork]]]
        if record.parallel and len(newest_first) > 1:
            others = [attachment for attachment in newest_first if not attachment.is_master]
            masters = [attachment for attachment in newest_first if attachment.is_master]
            concurrent = await asyncio.gather(
                *(self._one_alone(record, attachment, trigger) for attachment in others),
                return_exceptions=True,  # each left to finish: none is cancelled by another's failure
            )
            by_ifname: dict[str, tuple[CniError | None, list[UnitOfWork]]] = {}
            for attachment, outcome in zip(others, concurrent, strict=True):
                if isinstance(outcome, BaseException):
                    raise outcome  # not a DEL failure (those are errors returned): a bug, or cancelled
                by_ifname[attachment.ifname] = outcome
            for attachment in masters:
                by_ifname[attachment.ifname] = await self._one_alone(record, attachment, trigger)
            outcomes = [by_ifname[attachment.ifname] for attachment in newest_first]
        else:
            outcomes = [await self._one_alone(record, attachment, trigger) for attachment in newest_first]
        removed: list[str] = []
        units: list[UnitOfWork] = []
        errors: list[CniError] = []
        for attachment, (error, its_units) in zip(newest_first, outcomes, strict=True):
            units.extend(its_units)
            if error is None:
                removed.append(attachment.ifname)
            else:
                errors.append(error)
        units.append(
            partial(checkpoints.remove_attachments, container_id=record.container_id, ifnames=removed)
        )
        return errors, units

    async def _one_alone(
        self, record: SandboxRecord, attachment: AttachmentRecord, trigger: Trigger
    ) -> tuple[CniError | None, list[UnitOfWork]]:
        """``one`` with a list of units of its own (the concurrent DELs must not interleave theirs)."""
        units: list[UnitOfWork] = []
        error = await self.one(record=record, attachment=attachment, trigger=trigger, units=units)
        return error, units

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
        try:
            await self.del_attachment(record, attachment)
            self.crash.reached(CRASH_POINT_AFTER_DEL[trigger])
        except Exception as exc:
            context = logcontext.fields(
                record.container_id,
                command="DEL",
                pod=record.pod,
                ifname=attachment.ifname,
                network=attachment.network_name,
            )
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
                        error=attach_errors.attachment_error(
                            error, failure=attach_errors.recorded_add_failure(attachment.last_error)
                        ),
                    )
                )
        entry = recording.teardown_entry(
            record=record, attachment=attachment, trigger=trigger, started=started, error=error
        )
        units.append(self.recorded(entry))
        return None if abandoned else error

    async def _pod_unseen(self, record: SandboxRecord, attachment: AttachmentRecord, netns_path: str) -> bool:
        """True when the DEL's plugins will not see the pod's interface (no namespace given, its path
        gone, or the namespace there without an interface of that name: deleted by hand, or taken
        with its host end), so a masquerading plugin will leave its rules (``app.attach.masquerade``);
        False for a sandbox of an earlier boot, whose rules went with that boot, and when the
        namespace cannot be looked into (the plugin may well see it). Asked before the DEL, which
        removes the interface it sees."""
        if record.boot_id and record.boot_id != self.boot_id:
            return False
        if not netns_path:
            return True
        try:
            links = await netns.list_links(netns_path, identity=record.netns_id)
        except netns.NetnsGoneError:
            return True
        except Exception as exc:  # netlink's own errors are no OSError: a look must never fail a DEL (5b)
            log.debug("cannot look into %s before the DEL of %s: %s", netns_path, attachment.ifname, exc)
            return False
        return attachment.ifname not in links

    async def _failed_for_want_of_the_interface(
        self,
        record: SandboxRecord,
        attachment: AttachmentRecord,
        net: NetworkConfigList,
        netns_path: str,
        failed: ExceptionGroup[Exception],
    ) -> bool:
        """Whether a DEL in ``netns_path`` failed only because a plugin moving a device wants the
        pod's interface, which is not there: the list runs host-device, or the host device recorded
        for it has a netdev in the host now (its name before the ADD known or not) or is provably in
        the namespace under another name (its host name: host-device killed between its move and its
        rename, ``vfs.stranded_in``; ``ensure_returned`` then takes it back); a plugin exited
        non-zero by itself, none was killed or timed out; and the namespace (still the recorded
        one) holds no interface named as the attachment, or is gone now. The reference host-device
        fails so for ever ("failed to find "net1": Link not found") once its device is out of the
        pod: a DEL of it that a crash left unrecorded after it moved the device back, an ADD killed
        before it moved the device in. Such a DEL is replayed without a namespace (as for a
        namespace gone, invariant 5b), which still releases what a plugin releases there, and its
        host device must still be back."""
        errors = failed.exceptions
        device = attachment.device or {}
        out_of_the_pod = HOST_DEVICE in net.plugin_types or bool(
            device.get("pci") and self.devices.netdev_names(device["pci"])
        )
        if (
            not netns_path
            or not (out_of_the_pod or device.get("pci"))
            or not all(isinstance(error, PluginExitError | RefusedAlikeError) for error in errors)
            or not any(isinstance(error, PluginExitError) for error in errors)
        ):
            return False
        try:
            links = await netns.sandbox_links(netns_path, identity=record.netns_id)
        except netns.NetnsGoneError:
            return out_of_the_pod
        except Exception as exc:  # netlink's own errors are no OSError: cannot tell, so keep the failure
            log.debug("cannot look into %s after a failed DEL of %s: %s", netns_path, attachment.ifname, exc)
            return False
        if any(link.name == attachment.ifname for link in links):
            return False
        # its device left in the pod under its host name: ``ensure_returned`` takes it back
        return out_of_the_pod or vfs.stranded_in(links, device, attachment.ifname)

    async def del_attachment(self, record: SandboxRecord, attachment: AttachmentRecord) -> None:
        """The delegate's DEL, replayed from the checkpoint; then its host device must be back and
        the device-info file made for it is removed.

        Raises ``UndeletableError`` when the recorded config or result cannot be read back.
        """
        netns_path = replay.netns_for_del(record, boot_id=self.boot_id)
        try:
            net, rt = replay.recorded_call(record, attachment, netns_path=netns_path)
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
        cni = self.cni_config(attachment.cni_path, root=root_for_del(record, attachment))
        unseen = masquerade.masquerading(net) and await self._pod_unseen(record, attachment, netns_path)
        delete = partial(
            api.del_network_list,
            cni=cni,
            net=net,
            prev_result=prepared,
            prev_result_prepared=True,
            add_failure=None
            if attachment.result
            else attach_errors.recorded_add_failure(attachment.last_error),
        )
        try:
            await delete(rt=rt)
        except ExceptionGroup as failed:
            if not await self._failed_for_want_of_the_interface(record, attachment, net, netns_path, failed):
                raise
            log.info(
                "the DEL of %s in %s failed with no %s there (%s): DELed again without a namespace",
                attachment.network_name,
                netns_path,
                attachment.ifname,
                "; ".join(str(error) for error in failed.exceptions),
                extra=logcontext.fields(record.container_id, command="DEL", ifname=attachment.ifname),
            )
            await delete(rt=dataclasses.replace(rt, netns=""))
        if unseen:
            await masquerade.remove(
                masquerade.chains(net, container_id=record.container_id, result=prev_result),
                root=cni.chroot_dir,
                context=logcontext.fields(record.container_id, command="DEL", ifname=attachment.ifname),
                search_path=cni.base_env.get("PATH", invoke.DEFAULT_BASE_ENV["PATH"]).split(":"),
            )
        if attachment.device is not None and await self.devices.ensure_returned(
            attachment.device, netns_path=netns_path, netns_identity=record.netns_id
        ):
            metrics.GC_RECLAIMED.labels("vf").inc()
        device_info.remove_for_attachment(attachment)
