"""The attach engine: ADD, DEL, CHECK, GC and STATUS of sandboxes, checkpointed step by step.

Called by the daemon (runtime requests), and by recovery and GC. For an ADD it resolves the
delegates and checks that every plugin they name can be run (a refusal records nothing), then makes
two commits whatever the number of networks: every intent before the first delegate runs (refused,
with nothing committed, when a PCI device a delegate is handed is recorded for another sandbox: the
check runs in that commit, so two ADDs cannot both take one VF; only then are such a device's host
name and MAC looked at and committed, a third commit that ADDs without a device never make), and every
result with the history lines and the finish before the runtime hears "success", so at every instant
the checkpoint covers whatever may exist on the node (invariants 2-4); one whose network-status
write failed commits once more before it answers, the mark by which even a restarted daemon
retries that write (``app.attach.status_retries``). The intents' commit is synced
while the first plugin starts: that plugin is spawned once they are committed and handed its input
(all it acts on) only once they are on disk, so its exec and start-up no longer wait for the disk.
Delegates run one after another, or, with ``parallelDelegates``, the cluster network first and then
the others concurrently. A failed delegate makes the engine undo the delegates already run, newest
first (after a parallel ADD: the others concurrently, then the cluster network), through the one
teardown path that DEL, recovery and GC also use (``app.attach.teardown``):
it replays the recorded configuration, arguments and result, never re-resolving. An attachment
leaves the checkpoint only when its DEL succeeded, or when its DEL can never run (plugin refused by
name, recorded config unparsable; the reason goes to the history), or when its ADD failed before any
plugin executed (invariants 5 and 5b). A non-CNI exception is logged with its traceback and counted.

Owns the order of steps and commits only: history lines and metrics come from
``app.attach.recording``, the DELs from ``app.attach.teardown``, a recorded call rebuilt for DEL and
CHECK from ``app.attach.replay``, a DEL of a sandbox only upstream Multus knows from
``app.attach.upstream_delete``. Also the primitives hot-plug (``app.attach.hotplug``) builds on: one
delegate attached to, checked in, or detached from a running sandbox under the same rules. Never
imports the watch package or HTTP code; operations on one container ID are serialised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from app.attach import (
    device_info,
    errors,
    logcontext,
    netns,
    recording,
    replay,
    result_facts,
    teardown,
    upstream_delete,
    vfs,
)
from app.attach.cluster import (
    PARALLEL_DELEGATES_ANNOTATION,
    ClusterUnavailableError,
    StatusPublisher,
)
from app.attach.crashpoints import DISARMED, CrashPoints, Point
from app.attach.errors import MultusCode, SandboxNotRunningError, as_cni_error, combine
from app.attach.locks import SandboxLocks
from app.attach.network_status import DelegateOutcome, interface_events, status_entries
from app.attach.network_status import render as render_status
from app.attach.networks import DelegatePlan, NetworkResolver
from app.attach.recording import UnitOfWork
from app.attach.requests import Command, NodeRequest, SandboxRequest, Trigger
from app.attach.result_facts import RESULT_VERSION
from app.attach.status_retries import StatusRetries, StatusRetrySettings
from app.attach.vfs import HostDevices
from app.cni import api, results
from app.cni.invoke import Exec, SubprocessExec
from app.cni.types import (
    Attachment,
    CniError,
    ContainerId,
    ErrorCode,
    IfName,
    JsonObject,
    NetworkConfigList,
    NotExecutedError,
    RuntimeConf,
)
from app.store import checkpoints
from app.store.database import Database, StorageError
from app.store.mirror_records import PodRecord
from app.store.records import (
    AttachmentRecord,
    DelegateIntent,
    HistoryEntry,
    PodIdentity,
    SandboxIntent,
    SandboxRecord,
    SandboxSummary,
)

log = logging.getLogger(__name__)
_compact_json = json.JSONEncoder(separators=(",", ":")).encode
"""``json.dumps(..., separators=(",", ":"))`` without building an encoder per call."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    delegate_timeout: float = 60.0
    extra_cni_path: tuple[str, ...] = ()
    """Plugin directories searched after the request's ``binDir`` (upstream: the daemon's CNI_PATH)."""
    sysfs_root: Path = Path("/sys")
    """Where PCI devices (SR-IOV VFs) are looked up; tests point it at a fake tree."""
    node_name: str = ""
    """Recorded with every history line (``MULTUS_NODE_NAME``, else the hostname)."""
    plugin_env: Mapping[str, str] = field(default_factory=dict)
    """Environment every plugin inherits besides the CNI_* variables (e.g. PATH)."""
    chroot_dir: str = ""
    """Root new delegates run in (daemon-config ``chrootDir``); DEL replays the recorded one."""
    parallel_delegates: bool = False
    """Daemon-config ``parallelDelegates``: after the cluster network, run the others concurrently."""


class AttachEngine:
    def __init__(
        self,
        *,
        db: Database,
        resolver: NetworkResolver,
        boot_id: str,
        settings: EngineSettings | None = None,
        executor: Exec | None = None,
        crash_points: CrashPoints = DISARMED,
        status: StatusPublisher | None = None,
        status_retry: StatusRetrySettings | None = None,
    ) -> None:
        self._db = db
        self._resolver = resolver
        self._boot_id = boot_id
        self._settings = settings or EngineSettings()
        self._exec: Exec = executor or SubprocessExec()
        self._crash = crash_points
        self._status = status
        self._devices = HostDevices(self._settings.sysfs_root)
        self._teardown = teardown.Teardown(
            db=db,
            crash=crash_points,
            devices=self._devices,
            cni_config=self._cni_config,
            recorded=self._recorded,
            boot_id=boot_id,
        )
        self.locks = SandboxLocks()
        self.status_retries = (
            StatusRetries(publisher=status, db=db, locks=self.locks, boot_id=boot_id, settings=status_retry)
            if status is not None and status_retry is not None
            else None
        )
        """Network-status writes that failed at ADD, retried in the background (None: not retried)."""
        self._added_listeners: list[Callable[[str, str], None]] = []

    def on_sandbox_added(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(namespace, name)`` with the pod of each successful ADD, once its final
        commit is done and its lock released (hot-plug looks at the pod again: its annotation may
        have changed after the ADD read it). It must not block."""
        self._added_listeners.append(listener)

    @property
    def boot_id(self) -> str:
        return self._boot_id

    @staticmethod
    def _request_context(request: SandboxRequest, *, ifname: str = "", network: str = "") -> dict[str, str]:
        return logcontext.fields(
            request.container_id,
            command=str(request.command),
            pod=request.pod,
            ifname=ifname or request.ifname,
            network=network,
        )

    def _recorded(self, entry: HistoryEntry) -> UnitOfWork:
        """``entry`` stamped with this node's name, as a unit of work appending it to the history."""
        return recording.history_unit(entry, node=self._settings.node_name)

    # ---- public verbs -------------------------------------------------------------------------

    async def add(self, request: SandboxRequest) -> JsonObject:
        """Attach every network of the sandbox; return the master delegate's result in CNI 1.1.0."""
        async with self.locks.hold(request.container_id):
            started = time.monotonic()
            try:
                answer = await self._add_locked(request, started)
            except Exception as exc:
                err = errors.unexpected(exc, step="add", context=self._request_context(request))
                await self._db.write(
                    self._recorded(recording.request_entry(request=request, started=started, error=err))
                )
                if err is exc:
                    raise
                raise err from exc
        for listener in self._added_listeners:
            try:
                listener(request.pod.namespace, request.pod.name)
            except Exception:  # the ADD is committed: its answer stands whatever a listener does
                log.exception("a listener of finished ADDs failed for container %s", request.container_id)
        return answer

    async def delete(self, request: SandboxRequest) -> None:
        """Detach everything the checkpoint holds for the sandbox; succeed if nothing is recorded."""
        await self.delete_unless(request, unless=None)

    async def delete_unless(
        self, request: SandboxRequest, *, unless: Callable[[SandboxRecord], bool] | None
    ) -> bool:
        """``delete``, except that nothing at all is done (False) when the sandbox recorded under
        the ID satisfies ``unless``, judged under the sandbox's lock, so that no ADD can come
        between the judgment and the DEL (the spool's replay: a DEL spooled before a sandbox
        reusing the ID was added); True once the DEL ran."""
        async with self.locks.hold(request.container_id):
            if unless is not None:
                recorded = await self.load_sandbox(request.container_id)
                if recorded is not None and unless(recorded):
                    return False
            started = time.monotonic()
            record = await self._teardown.load_and_begin(request.container_id)
            errors: list[CniError] = []
            units: list[UnitOfWork] = []
            if record is not None:
                errors, units = await self._teardown.prepare(record, trigger=request.trigger)
            else:
                errors, units = await upstream_delete.delete_from_upstream_cache(
                    request=request,
                    cni=self._cni_config(self._cni_path(request.conf.bin_dir)),
                    recorded=self._recorded,
                )
            error = combine(errors) if errors else None
            units.append(
                self._recorded(recording.request_entry(request=request, started=started, error=error))
            )
            await self._db.write(recording.together(units), durable=False)
            if error is not None:
                raise error
            return True

    async def check(self, request: SandboxRequest) -> None:
        """Verify the sandbox: every interface the runtime's prevResult names is in the netns, and
        so is every one of each attachment whose ADD result is recorded, whose delegate CHECK then
        passes. One a hot-plug left partial (no result, or its DEL pending) is not checked. A netns
        path that holds another namespace than the one recorded at ADD, or a sandbox of an earlier
        boot, fails (the sandbox's namespace is gone): nothing looks into another sandbox's. The
        interface of a VF handed over as a DPDK device has no netdev to look for."""
        await self._locked_and_recorded(request, self._check_locked)

    async def _locked_and_recorded(
        self, request: SandboxRequest, step: Callable[[SandboxRequest], Awaitable[None]]
    ) -> None:
        """Run ``step`` holding the sandbox's lock; its request line goes to the history, its CNI
        error (if any) to the caller."""
        async with self.locks.hold(request.container_id):
            started = time.monotonic()
            error: CniError | None = None
            try:
                await step(request)
            except CniError as err:
                error = err
            await self._db.write(
                self._recorded(recording.request_entry(request=request, started=started, error=error))
            )
            if error is not None:
                raise error

    async def status(self, request: NodeRequest) -> None:
        """STATUS: can an ADD be served? Looks the cluster network's plugins up, and asks them (1.1.0).

        What keeps every ADD from being served before a plugin runs (the cluster network cannot be
        resolved, a plugin of it cannot be found or started) is code 50, plugin not available, the
        reason in its message: the codes CNI 1.1 gives STATUS. A plugin's own answer keeps its code.
        """
        try:
            net = await self._cluster_network(request)
        except CniError as err:
            raise _not_available(err) from err
        try:
            await api.status_network_list(cni=self._cni_config(self._cni_path(request.conf.bin_dir)), net=net)
        except NotExecutedError as err:
            raise _not_available(err) from err

    async def _cluster_network(self, request: NodeRequest) -> NetworkConfigList:
        """The network an ADD of ``request``'s configuration would give the runtime (STATUS, GC)."""
        return (await self._resolver.resolve(_status_probe(request))).plans[0].net

    async def gc(self, request: NodeRequest) -> None:
        """CNI GC: tear down every recorded sandbox whose attachment the runtime no longer lists.

        The runtime lists only the attachments it has heard back about, so a sandbox with an
        operation in flight at any moment of the pass is left alone: an ADD running when the GC
        was sent, which may answer while the pass tears down others, is a live pod's (invariant 9).
        One sandbox's failure, a surprise included, does not keep the others from being collected;
        the runtime hears every failure, and the GC has its history line whatever happened.
        """
        started = time.monotonic()
        valid = {(a.container_id, a.ifname) for a in request.valid_attachments}
        failures: list[CniError] = []
        with self.locks.operations_seen() as in_flight:
            sandboxes = await self._db.read(checkpoints.sandbox_summaries)
            for sandbox in sandboxes:
                if (sandbox.container_id, sandbox.ifname) in valid or sandbox.container_id in in_flight:
                    continue
                failures.extend(await self._collect_for_runtime(sandbox.container_id))
        failures.extend(await self._forward_gc(request))
        error = combine(failures) if failures else None
        entry = recording.entry(
            command=Command.GC,
            step="request",
            trigger=request.trigger,
            started=started,
            error=error,
            result=None,
        )
        await self._db.write(self._recorded(entry))
        if error is not None:
            raise error

    async def _collect_for_runtime(self, container_id: str) -> list[CniError]:
        """Tear down one sandbox for the runtime's GC; return why it is still recorded, if it is. A
        surprise (a bug, a failed write) is logged with its container and counted, and becomes
        that sandbox's error: the pass goes on to the others."""
        try:
            record, failed = await self.tear_down_if(container_id, trigger=Trigger.GC)
        except Exception as exc:
            context = logcontext.fields(container_id, command=str(Command.DEL), trigger=str(Trigger.GC))
            return [errors.unexpected(exc, step="gc", context=context)]
        if record is not None and not failed:
            recording.sandboxes_reclaimed(1)
        return failed

    async def _forward_gc(self, request: NodeRequest) -> list[CniError]:
        """GC forwarded to the cluster network's plugins (CNI 1.1: a plugin that delegates must),
        with the runtime's valid attachments: the cluster network runs under the runtime's
        container ID and interface name. Every attachment still recorded is listed too (a pending
        DEL is ours to retry, and a network also selected as ``net1`` shares the cluster network's
        IPAM). Skipped by ``api`` below 1.1.0 and with ``disableGC``."""
        try:
            cluster_network = await self._cluster_network(request)
            recorded = await self._db.read(checkpoints.list_sandboxes)
            kept = {(a.container_id, a.ifname) for a in request.valid_attachments} | {
                (sandbox.container_id, attachment.ifname)
                for sandbox in recorded
                for attachment in sandbox.attachments
            }
            await api.gc_network_list(
                cni=self._cni_config(self._cni_path(request.conf.bin_dir)),
                net=cluster_network,
                valid_attachments=[
                    Attachment(ContainerId(container), IfName(ifname)) for container, ifname in sorted(kept)
                ],
            )
        except Exception as exc:  # a surprise too: the GC's teardowns are done and get their line
            return [errors.unexpected(exc, step="gc", context=logcontext.fields("", command=str(Command.GC)))]
        return []

    async def tear_down(self, container_id: str, *, trigger: Trigger) -> list[CniError]:
        """DEL a recorded sandbox from its checkpoint alone (recovery, GC, operator); return the
        errors of the delegates whose DEL failed (they stay recorded, pending)."""
        _, errors = await self.tear_down_if(container_id, trigger=trigger)
        return errors

    async def tear_down_if(
        self,
        container_id: str,
        *,
        trigger: Trigger,
        condition: Callable[[SandboxRecord], bool] | None = None,
    ) -> tuple[SandboxRecord | None, list[CniError]]:
        """``tear_down``, only if ``condition`` holds for the sandbox as recorded once its lock is
        held (a decision taken on an earlier read, such as GC's, may no longer hold: an ADD in flight
        then may have answered since). Return the record torn down (None when nothing was) and the
        errors of the delegates whose DEL failed."""
        async with self.locks.hold(container_id):
            record = await self._db.read(partial(checkpoints.load_sandbox, container_id=container_id))
            if record is None or (condition is not None and not condition(record)):
                return None, []
            return record, await self._teardown.run(record, trigger=trigger)

    # ---- ADD ----------------------------------------------------------------------------------

    async def _add_locked(self, request: SandboxRequest, started: float) -> JsonObject:
        resolution = await self._resolver.resolve(request)
        plans = resolution.plans
        cni_path = self._cni_path(request.conf.bin_dir)
        self._preflight(request=request, plans=plans, cni_path=cni_path)
        parallel = self._parallel(request, resolution.pod)
        userspace = self._devices.userspace_probe()  # one view of the drivers for the whole ADD
        intents = [
            self._delegate_intent(
                request=request,
                plan=plan,
                cni_path=cni_path,
                device=vfs.unknown_device(plan.net, plan.capability_args, userspace),
                root=self._settings.chroot_dir,
                userspace=userspace,
            )
            for plan in plans
        ]
        claims = _device_claims(plans, userspace)
        intents_on_disk = await self._commit_intent(
            request,
            [
                *_devices_free(request.container_id, claims),
                partial(
                    checkpoints.begin_add,
                    sandbox=self._sandbox_intent(
                        request, parallel=parallel, default_networks=resolution.default_networks
                    ),
                ),
                *(partial(checkpoints.record_intent, intent=intent) for intent in intents),
            ],
            claims=claims,
        )
        if intents_on_disk.done():
            self._intents_synced(intents_on_disk)
        else:
            intents_on_disk.add_done_callback(self._intents_synced)  # before any plugin's wait for it
        try:
            intents = await self._record_devices_once_free(
                request=request, plans=plans, intents=intents, userspace=userspace
            )
            resolution.stage_device_info()  # named by the committed intents: every DEL removes them
            outcomes, finish = await self._run_delegates(
                request=request,
                plans=plans,
                intents=intents,
                started=started,
                parallel=parallel,
                intents_on_disk=intents_on_disk,
            )
            await intents_on_disk  # long done: the first plugin read its input after it
            await self._commit_and_publish(
                finish, container_id=request.container_id, pod=resolution.pod, outcomes=outcomes
            )
        except Exception as exc:
            intents_on_disk.add_done_callback(_retrieved)  # a sync error, if any, is part of ``exc``
            failure = _storage_failure(intents_on_disk) or exc  # the cause of "not given its input"
            error = errors.unexpected(failure, step="add", context=self._request_context(request))
            await self._roll_back(request.container_id)
            raise error from exc
        return next(outcome.result for outcome in outcomes if outcome.is_master)

    def _intents_synced(self, _future: asyncio.Future[None]) -> None:
        self._crash.reached(Point.ADD_INTENTS_SYNCED)

    async def _commit_and_publish(
        self,
        finish: UnitOfWork,
        *,
        container_id: str,
        pod: PodRecord | None,
        outcomes: Sequence[DelegateOutcome],
    ) -> None:
        """Commit the ADD's results and finish; while the commit is on its way to disk, publish the
        pod's network-status; once it is committed, hand the AddedInterface events to their poster
        (an ADD whose commit failed is rolled back: it announces no interface). The answer waits for
        the status and the commit.

        A commit that fails after the status went out rolls the ADD back under an annotation naming
        the interfaces removed, as every DEL leaves it (no DEL edits it, upstream's neither). A
        status write that failed is handed to the background retries once that commit is done
        (the sandbox is ``ready``), marked in the checkpoint before the runtime hears success."""
        committing = self._db.submit_write(finish)
        unwritten: ClusterUnavailableError | None = None
        try:
            if pod is not None:
                unwritten = await self._publish_status(pod, outcomes)
        finally:
            await committing
        if pod is not None and self._status is not None:
            self._status.emit_interface_events(pod, interface_events(outcomes))
        if unwritten is not None and pod is not None and self.status_retries is not None:
            await self.status_retries.retry_later(
                container_id=container_id, pod=pod, retry_after=getattr(unwritten, "retry_after", None)
            )
        self._crash.reached(Point.ADD_BEFORE_ANSWER)

    def _preflight(
        self, *, request: SandboxRequest, plans: Sequence[DelegatePlan], cni_path: tuple[str, ...]
    ) -> None:
        """Refuse, before anything is recorded, an ADD some delegate of which could not even start:
        a plugin ``type`` that is not a file name or is not on the path, a bad name (invariant 5b)."""
        cni = self._cni_config(cni_path)
        for plan in plans:
            rt = self._runtime_conf(container_id=request.container_id, netns_path=request.netns, plan=plan)
            try:
                api.preflight_add(cni=cni, net=plan.net, rt=rt)
            except CniError as err:
                raise err.with_context(
                    f'error adding container to network "{plan.network_name}" as {plan.ifname}'
                ) from err

    def _parallel(self, request: SandboxRequest, pod: PodRecord | None) -> bool:
        """Whether this ADD runs its non-cluster delegates concurrently (config, then the pod's say).

        An annotation that is neither ``"true"`` nor ``"false"`` is refused (logged, naming it) and
        the delegates run one after another whatever the config says: the pod said something about
        it, and ``"False"`` or ``"no"`` most likely meant an opt-out that running them together
        would override."""
        wanted = pod.annotations.get(PARALLEL_DELEGATES_ANNOTATION) if pod is not None else None
        if wanted is None:
            return self._settings.parallel_delegates
        context = self._request_context(request)
        if wanted not in ("true", "false"):
            log.warning(
                'annotation %s=%r refused: it must be "true" or "false"; delegates run one after another',
                PARALLEL_DELEGATES_ANNOTATION,
                wanted,
                extra=context,
            )
            return False
        if wanted == "true" and not self._settings.parallel_delegates:
            log.warning(
                "annotation %s refused: the daemon config does not set parallelDelegates; "
                "delegates run one after another",
                PARALLEL_DELEGATES_ANNOTATION,
                extra=context,
            )
            return False
        return wanted == "true"

    async def _publish_status(
        self, pod: PodRecord, outcomes: Sequence[DelegateOutcome]
    ) -> ClusterUnavailableError | None:
        """network-status, once every delegate has succeeded; return why it was not written, when it
        is to be retried (None: written, or no retries).

        The AddedInterface events are the caller's to hand to their poster, after the status is
        written and the ADD committed: posting an event never delays the answer (upstream posts them
        first).
        A failure to write the status does not undo a working attachment: it is logged, the pod
        keeps its interfaces, and the caller has the write retried in the background
        (``status_retries``), across restarts, until it lands or becomes moot (upstream fails the
        ADD and leaves the delegates in place).
        This write supersedes a retry pending for the pod (an older sandbox's), and waits for one
        in flight, so that the older value never lands after it.
        """
        if self._status is None:
            return None
        entries = status_entries(outcomes)
        unwritten: ClusterUnavailableError | None = None
        if entries:
            retries = self.status_retries
            try:
                if retries is None:
                    await self._status.publish_network_status(pod, render_status(entries))
                else:
                    retries.supersede(pod)
                    async with retries.turn(pod):
                        await self._status.publish_network_status(pod, render_status(entries))
            except ClusterUnavailableError as exc:
                log.error(
                    "network-status of pod %s/%s not written: %s%s",
                    pod.namespace,
                    pod.name,
                    exc,
                    "; retried in the background" if retries is not None else "",
                    extra={"pod": f"{pod.namespace}/{pod.name}", "command": "ADD"},
                )
                if retries is not None:
                    unwritten = exc
        return unwritten

    async def _run_delegates(
        self,
        *,
        request: SandboxRequest,
        plans: Sequence[DelegatePlan],
        intents: Sequence[DelegateIntent],
        started: float,
        parallel: bool,
        intents_on_disk: asyncio.Future[None],
    ) -> tuple[list[DelegateOutcome], UnitOfWork]:
        """Run the delegates (all intents committed; no plugin reads its input before they are on
        disk); return their outcomes in plan order, and every result, the request's history line
        and the finish as one unit for the caller to commit.

        Sequential: in order, stopping at the first failure. Parallel: the cluster network first,
        then the others concurrently, every one that has started left to finish (a plugin killed
        halfway is not waited for, so the rollback's DEL could run beside it), and none started
        once one has failed (one still waiting for a slot under ``maxConcurrentDelegates``: it is
        dropped as never executed, as in sequential mode); the error raised is the first failure in
        plan order of a delegate that ran. On a failure, what did run is committed with the error
        before it is raised, so the rollback replays real results.
        """
        pending: list[UnitOfWork] = []
        outcomes: dict[int, DelegateOutcome] = {}
        begun: set[int] = set()
        failed = False
        turned_away: set[int] = set()

        def run(index: int, wanted: Callable[[], bool] | None = None) -> Awaitable[None]:
            return self._run_one(
                request,
                plans[index],
                intents[index],
                pending,
                outcomes,
                index,
                begun,
                intents_on_disk,
                wanted,
            )

        async def run_beside_others(index: int) -> None:
            nonlocal failed

            def wanted() -> bool:
                if failed:
                    turned_away.add(index)
                return not failed

            try:
                await run(index, wanted)
            except Exception:
                failed = True
                raise

        try:
            if parallel:
                first = [index for index, plan in enumerate(plans) if plan.is_master]
                rest = [index for index in range(len(plans)) if index not in first]
                for index in first:
                    await run(index)
                done = await asyncio.gather(
                    *(run_beside_others(index) for index in rest), return_exceptions=True
                )
                failures = [
                    item
                    for index, item in zip(rest, done, strict=True)
                    if isinstance(item, BaseException) and index not in turned_away
                ]
                if failures:
                    raise failures[0]
            else:
                for index in range(len(plans)):
                    await run(index)
            await self._apply_default_routes(request, plans)
        except Exception:
            never_started = [plan for index, plan in enumerate(plans) if index not in begun]
            if never_started:  # known not to have run: nothing of them can exist (invariant 5b)
                for plan in never_started:
                    _remove_staged_device_info(request, plan)
                pending.append(
                    partial(
                        checkpoints.remove_attachments,
                        container_id=request.container_id,
                        ifnames=[plan.ifname for plan in never_started],
                    )
                )
            await self._db.write(recording.together(pending))
            raise
        ordered = [outcomes[index] for index in sorted(outcomes)]
        answer = next((outcome.result for outcome in ordered if outcome.is_master), None)
        if answer is None:
            await self._db.write(recording.together(pending))
            raise CniError(ErrorCode.INTERNAL, "no cluster network delegate was run")
        pending.append(partial(checkpoints.finish_add, container_id=request.container_id))
        pending.append(
            self._recorded(
                recording.request_entry(request=request, started=started, error=None, result=answer)
            )
        )
        return ordered, recording.together(pending)

    async def _run_one(
        self,
        request: SandboxRequest,
        plan: DelegatePlan,
        intent: DelegateIntent,
        pending: list[UnitOfWork],
        outcomes: dict[int, DelegateOutcome],
        index: int,
        begun: set[int],
        intents_on_disk: asyncio.Future[None],
        wanted: Callable[[], bool] | None = None,
    ) -> None:
        """One delegate's ADD; what to commit about it goes to ``pending``, its outcome to ``outcomes``."""
        begun.add(index)
        self._crash.reached(Point.ADD_AFTER_INTENT)
        step_started = time.monotonic()
        result = await self._run_delegate_add(
            request=request,
            plan=plan,
            intent=intent,
            step_started=step_started,
            units=pending,
            input_after=intents_on_disk,
            wanted=wanted,
        )
        self._crash.reached(Point.ADD_AFTER_EXEC)
        pending.extend(
            self._result_units(request=request, intent=intent, result=result, started=step_started)
        )
        outcomes[index] = DelegateOutcome(
            network_name=plan.network_name,
            result=results.convert_decoded(result, RESULT_VERSION),
            is_master=plan.is_master,
            device_info=device_info.read_for_status(plan.capability_args),
            ifname=plan.ifname,
        )

    async def _apply_default_routes(self, request: SandboxRequest, plans: Sequence[DelegatePlan]) -> None:
        """Honour ``default-route`` selections: each requested gateway becomes the sandbox's only
        default route of its family (upstream leaves the old one in place; see its PR #1552)."""
        for plan in plans:
            for gateway in plan.default_route:
                try:
                    await netns.set_default_route(request.netns, gateway=gateway, ifname=plan.ifname)
                except Exception as exc:
                    raise CniError(
                        ErrorCode.INVALID_NETWORK_CONFIG,
                        f"cannot set the default route via {gateway} on {plan.ifname}",
                        f'network "{plan.network_name}": {exc}',
                    ) from exc

    async def _commit_intent(
        self, request: SandboxRequest, units: Sequence[UnitOfWork], *, claims: _DeviceClaims
    ) -> asyncio.Future[None]:
        """Commit the ADD's intents; return once they are committed, with a future done once they
        are on disk (``Database.write_then_sync``). Refused, nothing committed, when a device the
        delegates are handed (``claims``) is recorded for another sandbox."""
        try:
            _, on_disk = await self._db.write_then_sync(recording.together(units))
            return on_disk
        except checkpoints.DeviceInUseError as exc:
            raise _device_in_use(exc, claims) from exc
        except checkpoints.SandboxExistsError as exc:
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT,
                f"container {request.container_id} is already attached (state {exc.state})",
                "the runtime must DEL a sandbox before adding it again",
            ) from exc

    async def _record_devices_once_free(
        self,
        *,
        request: SandboxRequest,
        plans: Sequence[DelegatePlan],
        intents: Sequence[DelegateIntent],
        userspace: vfs.BoundToUserspace,
    ) -> list[DelegateIntent]:
        """The intents with the name and MAC of their host devices as they are now, committed (on
        disk) before any delegate runs (invariant 2), so that DEL gets them back (``app.attach.vfs``).

        Called once the intents, holding only the devices' PCI addresses, are committed: that
        commit proved no other sandbox records the devices (invariant 8b), so none is being moved
        or renamed by another sandbox's DEL any more. Looked at before it, a device whose holder's
        DEL was finishing could be seen in passing: under its in-pod name (which this sandbox's
        DEL would then restore it to) or in the holder's namespace (then nothing is known, and a
        device this sandbox's DEL leaves in its namespace would go unnoticed). An ADD without a
        device pays nothing: no look, no commit."""
        learnt: dict[str, DelegateIntent] = {}
        for plan, intent in zip(plans, intents, strict=True):
            if intent.device is None:
                continue
            device = await self._devices.snapshot(plan.net, plan.capability_args, userspace)
            if device != intent.device:
                learnt[intent.ifname] = self._delegate_intent(
                    request=request,
                    plan=plan,
                    cni_path=intent.cni_path,
                    device=device,
                    root=intent.root,
                    userspace=userspace,
                )
        if not learnt:
            return list(intents)
        await self._db.write(
            recording.together(
                [
                    partial(
                        checkpoints.record_device,
                        container_id=request.container_id,
                        ifname=ifname,
                        device=intent.device,
                    )
                    for ifname, intent in learnt.items()
                ]
            )
        )
        return [learnt.get(intent.ifname, intent) for intent in intents]

    async def _run_delegate_add(
        self,
        *,
        request: SandboxRequest,
        plan: DelegatePlan,
        intent: DelegateIntent,
        step_started: float,
        units: list[UnitOfWork],
        input_after: asyncio.Future[None] | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> JsonObject:
        """The delegate's ADD; on failure, what to record about it is appended to ``units``. Its
        plugins read no input before ``input_after`` is done, and none starts once ``wanted`` says no.

        A failure before any of its plugins executed leaves nothing on the node: the attachment
        is dropped from the checkpoint (the history keeps the error), so no DEL ever waits for it.
        """
        try:
            return await api.add_network_list(
                cni=self._cni_config(
                    intent.cni_path, root=intent.root, input_after=input_after, wanted=wanted
                ),
                net=plan.net,
                rt=self._runtime_conf(container_id=request.container_id, netns_path=request.netns, plan=plan),
            )
        except Exception as exc:
            context = self._request_context(request, ifname=plan.ifname, network=plan.network_name)
            error = errors.unexpected(exc, step="delegate-add", context=context)
            entry = recording.delegate_entry(
                request=request, intent=intent, started=step_started, error=error
            )
            if isinstance(exc, NotExecutedError):
                log.warning(
                    "delegate of network %s was never executed; dropped from the checkpoint: %s",
                    plan.network_name,
                    error,
                    extra=context,
                )
                _remove_staged_device_info(request, plan)
                units.append(
                    partial(
                        checkpoints.remove_attachments,
                        container_id=request.container_id,
                        ifnames=[plan.ifname],
                    )
                )
            else:
                failure = exc.failure if isinstance(exc, api.ListAddError) else None
                units.append(
                    partial(
                        checkpoints.record_error,
                        container_id=request.container_id,
                        ifname=plan.ifname,
                        error=errors.attachment_error(error, failure=failure),
                    )
                )
            units.append(self._recorded(entry))
            raise error.with_context(
                f'error adding container to network "{plan.network_name}" as {plan.ifname}'
            ) from exc

    def _result_units(
        self, *, request: SandboxRequest, intent: DelegateIntent, result: JsonObject, started: float
    ) -> list[UnitOfWork]:
        facts = result_facts.delegate_facts(
            capability_args=intent.capability_args,
            device=intent.device,
            result=result,
            handed=intent.device_ids,
        )
        entry = recording.delegate_entry(
            request=request, intent=intent, started=started, error=None, facts=facts
        )
        return [
            partial(
                checkpoints.record_result,
                container_id=request.container_id,
                ifname=intent.ifname,
                result=_compact_json(result),
                facts=facts,
            ),
            self._recorded(entry),
        ]

    async def _roll_back(self, container_id: str) -> None:
        record = await self._db.read(partial(checkpoints.load_sandbox, container_id=container_id))
        if record is not None:
            errors = await self._teardown.run(record, trigger=Trigger.ROLLBACK)
            for error in errors:
                log.error(
                    "rollback of container %s left an attachment pending: %s",
                    container_id,
                    error,
                    extra=logcontext.fields(container_id, command="DEL", pod=record.pod),
                )

    # ---- CHECK --------------------------------------------------------------------------------

    async def _check_locked(self, request: SandboxRequest) -> None:
        expected = _runtime_prev_result(request)
        record = await self._db.read(partial(checkpoints.load_sandbox, container_id=request.container_id))
        if record is None or record.state != "ready":
            raise CniError(
                ErrorCode.UNKNOWN_CONTAINER,
                f"container {request.container_id} has no completed ADD on this node",
                "" if record is None else f"checkpoint state is {record.state!r}",
            )
        links = await self._own_links(record, needed_for="CHECK needs to list the sandbox's interfaces")
        if expected is not None:
            _check_interfaces_present(
                owner="the runtime's prevResult",
                result=expected,
                links=links,
                netns_path=record.netns,
                source="it gives",
            )
        for attachment in record.attachments:
            if attachment.state in checkpoints.PARTIAL_STATES:
                # A hot-plug ADD that left no result, or a hot-unplug whose DEL is pending: nothing
                # to check against (CHECK's prevResult is the ADD result), and GC retries its DEL.
                continue
            await self._check_attachment(record=record, attachment=attachment, links=links)

    async def _check_delegate_locked(self, request: SandboxRequest) -> None:
        record = await self._hotplug_target(request)
        attachment = record.attachment(request.ifname)
        if attachment is None or attachment.state in checkpoints.PARTIAL_STATES:
            raise CniError(
                ErrorCode.UNKNOWN_CONTAINER,
                f'interface "{request.ifname}" (CNI_IFNAME) has no completed ADD in container '
                f"{record.container_id}",
                "the checkpoint records no attachment of that name"
                if attachment is None
                else f"its attachment's state is {attachment.state!r}",
            )
        links = await self._own_links(record, needed_for="CHECK needs to list the sandbox's interfaces")
        await self._check_attachment(record=record, attachment=attachment, links=links)

    async def _check_attachment(
        self, *, record: SandboxRecord, attachment: AttachmentRecord, links: Mapping[str, netns.Link]
    ) -> None:
        result: JsonObject = json.loads(attachment.result or "{}")
        _check_interfaces_present(
            owner=f'network "{attachment.network_name}"',
            result=results.convert(result, RESULT_VERSION),
            links=links,
            netns_path=record.netns,
            source="the ADD result recorded",
            without_netdev=frozenset({attachment.ifname})
            if self._handed_over_for_dpdk(attachment)
            else frozenset(),
        )
        net, rt = replay.recorded_call(record, attachment, netns_path=record.netns)
        if not results.version_at_least(net.cni_version, "0.4.0"):
            return
        try:
            await api.check_network_list(
                cni=self._cni_config(attachment.cni_path, root=attachment.root),
                net=net,
                rt=rt,
                prev_result=result,
            )
        except Exception as exc:
            raise as_cni_error(exc).with_context(
                f'network "{attachment.network_name}" ({attachment.ifname}) failed CHECK'
            ) from exc

    async def _own_links(self, record: SandboxRecord, *, needed_for: str) -> dict[str, netns.Link]:
        """The interfaces in the sandbox's own namespace, before CHECK or a hot-plug works in it:
        the namespace at its path must be the one recorded at ADD (``netns_id``, compared on the
        one opened), of today's boot (each died with its boot, and namespaces are numbered afresh
        at each: whatever the path holds now is another sandbox's, even showing the recorded
        identity). Else code 101 (gone); 11 when it cannot be looked at (it may be the pod's)."""
        if record.boot_id and record.boot_id != self._boot_id:
            raise SandboxNotRunningError(
                MultusCode.NETNS_GONE,
                f"network namespace {record.netns} is gone",
                "the sandbox is of an earlier boot, whose namespaces are all gone",
            )
        try:
            return await netns.list_links(record.netns, identity=record.netns_id)
        except netns.NetnsGoneError as exc:
            raise SandboxNotRunningError(
                MultusCode.NETNS_GONE, f"network namespace {record.netns} is gone", str(exc)
            ) from exc
        except netns.NetnsUnreadableError as exc:  # not gone: it may well be the live pod's
            raise CniError(ErrorCode.TRY_AGAIN_LATER, str(exc.strerror), needed_for) from exc

    def _handed_over_for_dpdk(self, attachment: AttachmentRecord) -> bool:
        """True when the attachment's host device is a VF that had no netdev at ADD and is bound to
        a user-space (DPDK) driver: the interface its result names (sriov-cni's, in DPDK mode) has
        no netdev anywhere. One recorded with a netdev (a kernel VF) has lost it if rebound so."""
        device = attachment.device or {}
        pci = device.get("pci", "")
        return bool(pci) and not device.get("ifname") and self._devices.userspace_driver(pci) is not None

    # ---- building blocks ----------------------------------------------------------------------

    def _cni_path(self, bin_dir: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys([bin_dir, *self._settings.extra_cni_path]))

    def _cni_config(
        self,
        cni_path: Sequence[str],
        *,
        root: str | None = None,
        input_after: asyncio.Future[None] | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> api.CniConfig:
        """How to run plugins: in ``root`` (an attachment's recorded one), else in today's ``chrootDir``;
        none reads its input before ``input_after`` is done, none starts once ``wanted`` says no."""
        return api.CniConfig(
            path=tuple(cni_path),
            timeout=self._settings.delegate_timeout,
            exec=self._exec,
            base_env=self._settings.plugin_env,
            chroot_dir=self._settings.chroot_dir if root is None else root,
            input_after=input_after,
            wanted=wanted,
        )

    @staticmethod
    def _runtime_conf(*, container_id: str, netns_path: str, plan: DelegatePlan) -> RuntimeConf:
        return RuntimeConf(
            container_id=ContainerId(container_id),
            netns=netns_path,
            ifname=plan.ifname,
            args=plan.cni_args,
            capability_args=plan.capability_args,
        )

    def _sandbox_intent(
        self, request: SandboxRequest, *, parallel: bool, default_networks: int
    ) -> SandboxIntent:
        return SandboxIntent(
            container_id=request.container_id,
            netns=request.netns,
            ifname=request.ifname,
            cni_version=request.conf.stdin_cni_version,
            pod=request.pod,
            boot_id=self._boot_id,
            netns_id=netns.netns_identity(request.netns),
            parallel=parallel,
            default_networks=default_networks,
        )

    @staticmethod
    def _delegate_intent(
        *,
        request: SandboxRequest,
        plan: DelegatePlan,
        cni_path: tuple[str, ...],
        device: Mapping[str, str] | None,
        root: str,
        userspace: vfs.BoundToUserspace,
    ) -> DelegateIntent:
        return DelegateIntent(
            container_id=request.container_id,
            ifname=plan.ifname,
            position=plan.position,
            is_master=plan.is_master,
            network_name=plan.network_name,
            plugin_types=tuple(plan.net.plugin_types),
            config=plan.net.raw,
            cni_args=plan.cni_args,
            capability_args=plan.capability_args,
            cni_path=cni_path,
            device=device,
            device_ids=result_facts.device_ids(
                capability_args=plan.capability_args,
                device=device,
                result=None,
                handed=[
                    address for _, address in vfs.pci_addresses(plan.net, plan.capability_args, userspace)
                ],
            ),
            root=root,
        )

    # ---- hot-plug: one delegate of a running sandbox (``app.attach.hotplug``) -----------------
    #
    # A hot-plugged delegate is recorded exactly like one attached at ADD (intent before it runs,
    # result after), so the runtime's DEL, rollback, recovery and GC tear it down with the rest.

    @property
    def status_publisher(self) -> StatusPublisher | None:
        """Where network-status and pod events go (None in static mode)."""
        return self._status

    async def load_sandbox(self, container_id: str) -> SandboxRecord | None:
        """The checkpoint of ``container_id`` as recorded now (None when nothing is)."""
        return await self._db.read(partial(checkpoints.load_sandbox, container_id=container_id))

    async def sandbox_summaries(self) -> list[SandboxSummary]:
        """Every recorded sandbox, without its attachments."""
        return await self._db.read(checkpoints.sandbox_summaries)

    async def sandboxes_of_pod(self, namespace: str, name: str) -> list[SandboxSummary]:
        """The sandboxes recorded for pod ``namespace/name`` (any state), oldest first."""
        return await self._db.read(partial(checkpoints.sandboxes_of_pod, namespace=namespace, name=name))

    async def attach_delegate(self, request: SandboxRequest, plan: DelegatePlan) -> JsonObject:
        """Add one delegate to the running sandbox ``request.container_id`` under ``plan.ifname``;
        return its result in CNI 1.1.0. Refused (nothing recorded) for a sandbox that is not
        ``ready``, another pod's sandbox, or an interface name the checkpoint or the netns holds.
        A failed delegate is DELed again at once (its attachment stays recorded if that fails).
        The refusal of a sandbox that no longer runs (``SandboxNotRunningError``) is recorded in
        the history for ``/delegate``, not for native hot-plug, which gives that hot-plug up."""
        async with self.locks.hold(request.container_id):
            started = time.monotonic()
            try:
                return await self._attach_delegate_locked(request, plan, started)
            except CniError as err:
                if not (isinstance(err, SandboxNotRunningError) and request.trigger is Trigger.HOTPLUG):
                    await self._db.write(
                        self._recorded(recording.request_entry(request=request, started=started, error=err))
                    )
                raise

    async def detach_delegate(self, request: SandboxRequest) -> None:
        """DEL exactly the attachment ``request.ifname`` of a running sandbox, from its recorded
        call; succeed when no such attachment, or no running sandbox, is recorded. The cluster
        network's, and a sandbox of another pod than CNI_ARGS names, are refused."""
        await self._locked_and_recorded(request, self._detach_delegate_locked)

    async def check_delegate(self, request: SandboxRequest) -> None:
        """CHECK exactly the attachment ``request.ifname`` of a running sandbox (``/delegate``), as
        ``check`` checks each: its interfaces are in the netns and its delegate CHECK passes, from
        its recorded call with its recorded result as prevResult; the sandbox's other attachments
        are not looked at. Code 3 when no completed ADD of that interface is recorded (none, its
        hot-plug ADD left no result, its DEL is pending: CHECK needs the ADD result), as for a
        sandbox not ``ready``; a sandbox of another pod than CNI_ARGS names is refused (code 4)."""
        await self._locked_and_recorded(request, self._check_delegate_locked)

    async def settle_partial_attachments(
        self, *, trigger: Trigger, skip: Collection[str] = ()
    ) -> list[CniError]:
        """DEL every attachment of a ``ready`` sandbox whose hot-plug ADD or DEL did not finish
        (intent without result means possibly present); return the DELs that failed. Sandboxes
        in ``skip`` (a plugin process of theirs may still run) are left as recorded."""
        errors: list[CniError] = []
        for listed in await self._db.read(checkpoints.list_partial):
            if listed.container_id in skip:
                continue
            async with self.locks.hold(listed.container_id):
                record = await self.load_sandbox(listed.container_id)
                if record is None or record.state != "ready":
                    continue
                partial_ones = [a for a in record.attachments if a.state in checkpoints.PARTIAL_STATES]
                errors.extend(await self._detach_recorded(record, partial_ones, trigger=trigger))
        return errors

    async def record_request_error(self, request: SandboxRequest, error: CniError, *, started: float) -> None:
        """A history line for an operation refused before the engine was asked to run it."""
        await self._db.write(
            self._recorded(recording.request_entry(request=request, started=started, error=error))
        )

    async def _attach_delegate_locked(
        self, request: SandboxRequest, plan: DelegatePlan, started: float
    ) -> JsonObject:
        record = await self._hotplug_target(request)
        request = replace(request, netns=record.netns)
        held = record.attachment(plan.ifname)
        if held is not None:
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT,
                f'interface "{plan.ifname}" (CNI_IFNAME) is already attached to container '
                f"{record.container_id}",
                f'the checkpoint records it for network "{held.network_name}"',
            )
        links = await self._own_links(
            record, needed_for="a hot-plugged delegate needs to know the sandbox's interface names"
        )
        if plan.ifname in links:
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT,
                f'interface "{plan.ifname}" (CNI_IFNAME) already exists in network namespace {record.netns}',
                "a hot-plugged delegate needs an interface name the sandbox does not have",
            )
        position = max((a.position for a in record.attachments), default=0) + 1
        plan = replace(plan, position=position, is_master=False)
        self._preflight(request=request, plans=[plan], cni_path=self._cni_path(request.conf.bin_dir))
        userspace = self._devices.userspace_probe()
        intent = self._delegate_intent(
            request=request,
            plan=plan,
            cni_path=self._cni_path(request.conf.bin_dir),
            device=vfs.unknown_device(plan.net, plan.capability_args, userspace),
            root=self._settings.chroot_dir,
            userspace=userspace,
        )
        claims = _device_claims([plan], userspace)
        try:
            await self._db.write(
                recording.together(
                    [
                        *_devices_free(request.container_id, claims),
                        partial(checkpoints.record_intent, intent=intent),
                    ]
                )
            )
        except checkpoints.DeviceInUseError as exc:
            raise _device_in_use(exc, claims) from exc
        try:
            [intent] = await self._record_devices_once_free(
                request=request, plans=[plan], intents=[intent], userspace=userspace
            )
        except Exception as exc:
            error = errors.unexpected(exc, step="hotplug", context=self._request_context(request))
            await self._undo_attach(request.container_id, plan.ifname)
            raise error from exc
        self._crash.reached(Point.ADD_AFTER_INTENT)
        step_started = time.monotonic()
        failed: list[UnitOfWork] = []
        try:
            result = await self._run_delegate_add(
                request=request, plan=plan, intent=intent, step_started=step_started, units=failed
            )
        except CniError:
            await self._db.write(recording.together(failed))
            await self._undo_attach(request.container_id, plan.ifname)
            raise
        self._crash.reached(Point.ADD_AFTER_EXEC)
        answer = results.convert_decoded(result, RESULT_VERSION)
        units = self._result_units(request=request, intent=intent, result=result, started=step_started)
        units.append(
            self._recorded(
                recording.request_entry(request=request, started=started, error=None, result=answer)
            )
        )
        await self._db.write(recording.together(units))
        return answer

    async def _undo_attach(self, container_id: str, ifname: str) -> None:
        record = await self.load_sandbox(container_id)
        attachment = record.attachment(ifname) if record is not None else None
        if record is None or attachment is None:
            return
        for error in await self._detach_recorded(record, [attachment], trigger=Trigger.ROLLBACK):
            log.error("rollback of hot-plugged %s/%s left it pending: %s", container_id, ifname, error)

    async def _detach_delegate_locked(self, request: SandboxRequest) -> None:
        """DEL one attachment of a running sandbox. Nothing to remove is success (a DEL must
        terminate, invariant 5b): no sandbox recorded, one not ``ready`` (its runtime DEL, pending,
        or recovery of its half-done ADD tears it down whole, and a delegate of that ADD may still
        run: invariant 9), or no such interface recorded. Refused, as retrying changes nothing while
        the sandbox runs and succeeds once it is gone: another pod's sandbox, the cluster network."""
        record = await self.load_sandbox(request.container_id)
        if record is None or record.state != "ready":
            log.info(
                "hot-unplug DEL of %s: no running sandbox (%s); nothing to remove",
                request.ifname,
                "none recorded" if record is None else f"checkpoint state is {record.state!r}",
                extra=self._request_context(request),
            )
            return
        attachment = record.attachment(request.ifname)
        if attachment is None:
            return  # whatever pod CNI_ARGS name: nothing of that name is there (docs/protocol.md)
        self._check_same_pod(request, record)
        if attachment.is_master:
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT,
                f'interface "{request.ifname}" (CNI_IFNAME) is the cluster network of container '
                f"{record.container_id}",
                "only the runtime's DEL of the sandbox removes it",
            )
        await self._db.write(
            partial(checkpoints.begin_detach, container_id=record.container_id, ifname=attachment.ifname)
        )
        errors = await self._detach_recorded(record, [attachment], trigger=request.trigger)
        if errors:
            raise errors[0]

    async def _detach_recorded(
        self, record: SandboxRecord, attachments: Sequence[AttachmentRecord], *, trigger: Trigger
    ) -> list[CniError]:
        """DEL ``attachments`` of ``record`` newest first; forget those whose DEL succeeded."""
        errors, units = await self._teardown.detach(record, attachments, trigger=trigger)
        await self._db.write(recording.together(units))
        return errors

    async def _hotplug_target(self, request: SandboxRequest) -> SandboxRecord:
        """The running sandbox a hot-plug ADD names, or the CNI error saying why there is none."""
        record = await self.load_sandbox(request.container_id)
        if record is None or record.state != "ready":
            raise SandboxNotRunningError(
                ErrorCode.UNKNOWN_CONTAINER,
                f"unknown container {request.container_id} (CNI_CONTAINERID): "
                "no running sandbox on this node",
                "" if record is None else f"checkpoint state is {record.state!r}",
            )
        self._check_same_pod(request, record)
        return record

    @staticmethod
    def _check_same_pod(request: SandboxRequest, record: SandboxRecord) -> None:
        """Refuse (code 4) a hot-plug whose CNI_ARGS name another pod than the sandbox's."""
        pod = request.pod
        for field_name, given, recorded in (
            ("K8S_POD_NAMESPACE", pod.namespace, record.pod.namespace),
            ("K8S_POD_NAME", pod.name, record.pod.name),
            ("K8S_POD_UID", pod.uid, record.pod.uid),
        ):
            if given and recorded and given != recorded:
                raise CniError(
                    ErrorCode.INVALID_ENVIRONMENT,
                    f"CNI_ARGS {field_name}={given} does not match container {request.container_id}",
                    f"the sandbox was added for {field_name}={recorded}",
                )


_DeviceClaims = Mapping[str, tuple[str, str, DelegatePlan]]
"""PCI address (lower case) -> (field handing it, address as given, plan) of an ADD's devices."""


def _device_claims(plans: Sequence[DelegatePlan], userspace: vfs.BoundToUserspace) -> _DeviceClaims:
    """Every PCI address the plans hand their delegates (``app.attach.vfs.pci_addresses``, the
    drivers seen through ``userspace``: a host-device in DPDK mode takes its PCI device).

    Raises code 7 when two of the plans name one device: a device goes to one delegate at a time,
    and the second plugin would fail for it (its netdev already moved) or share it (a DPDK VF)."""
    claims: dict[str, tuple[str, str, DelegatePlan]] = {}
    for plan in plans:
        for field_name, address in vfs.pci_addresses(plan.net, plan.capability_args, userspace):
            claimed = claims.setdefault(address.lower(), (field_name, address, plan))
            if claimed[2] is not plan:
                first_field, _, first = claimed
                raise CniError(
                    ErrorCode.INVALID_NETWORK_CONFIG,
                    f"PCI device {address} is handed to two delegates: {first_field} of network "
                    f"{first.network_name!r} as {first.ifname} and {field_name} of network "
                    f"{plan.network_name!r} as {plan.ifname}",
                    "a device is attached to one delegate at a time",
                )
    return claims


def _devices_free(container_id: str, claims: _DeviceClaims) -> list[UnitOfWork]:
    """The unit refusing the commit of intents whose devices another sandbox's attachment records
    (none when no device is named: an ADD without one pays nothing)."""
    if not claims:
        return []
    return [partial(checkpoints.check_devices_free, container_id=container_id, device_ids=list(claims))]


def _device_in_use(exc: checkpoints.DeviceInUseError, claims: _DeviceClaims) -> CniError:
    field_name, address, plan = claims[exc.device_id]
    return CniError(
        ErrorCode.INVALID_NETWORK_CONFIG,
        f"PCI device {address} ({field_name} of network {plan.network_name!r} as {plan.ifname}) "
        "is in use by another sandbox on this node",
        f"container {exc.container_id} holds it as {exc.ifname} (attachment state {exc.state}); "
        "a device is attached to one sandbox at a time",
    )


def _storage_failure(future: asyncio.Future[None]) -> StorageError | None:
    """The storage failure ``future`` (the intents' sync) ended with, if it has: no plugin was then
    given its input, and the ADD fails as an I/O failure naming the state database, not as the
    plugins' internal error."""
    if not future.done() or future.cancelled():
        return None
    failure = future.exception()
    return failure if isinstance(failure, StorageError) else None


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark the future's error as seen (asyncio logs those never retrieved)."""
    if not future.cancelled():
        future.exception()


def _not_available(err: CniError) -> CniError:
    """``err``, which keeps every ADD from being served, as STATUS reports it (code 50)."""
    return CniError(ErrorCode.PLUGIN_NOT_AVAILABLE, f"cannot serve ADD: {err.msg}", err.details)


def _remove_staged_device_info(request: SandboxRequest, plan: DelegatePlan) -> None:
    """Remove the device-info file staged for a delegate that never ran, before the commit that
    drops it from the checkpoint: no DEL would remove it after (a crash between the two leaves it
    recorded, and its DEL removes nothing more)."""
    device_info.remove_ours(
        plan.capability_args,
        network_name=plan.network_name,
        container_id=request.container_id,
        ifname=plan.ifname,
    )


def _status_probe(request: NodeRequest) -> SandboxRequest:
    """A request shaped like an ADD of nobody, to resolve the cluster network for STATUS."""
    return SandboxRequest(
        command=Command.STATUS,
        container_id=ContainerId(""),
        netns="",
        ifname=IfName("eth0"),
        cni_args=(),
        pod=PodIdentity(
            namespace=request.conf.system_namespaces[0] if request.conf.system_namespaces else ""
        ),
        conf=request.conf,
        trigger=request.trigger,
    )


def _runtime_prev_result(request: SandboxRequest) -> JsonObject | None:
    """The ``prevResult`` the runtime's CHECK carries (the ADD result it was given), in CNI 1.1.0;
    None when it sent none. One that cannot be read is refused (code 6) before anything is looked at."""
    given = request.conf.raw.get("prevResult")
    if given is None:
        return None
    if not isinstance(given, dict):
        raise CniError(ErrorCode.DECODING_FAILURE, "network configuration key 'prevResult' must be an object")
    try:
        return results.convert(given, RESULT_VERSION)
    except CniError as err:
        raise CniError(
            ErrorCode.DECODING_FAILURE, f"network configuration key 'prevResult' cannot be read: {err.msg}"
        ) from err


def _check_interfaces_present(
    *,
    owner: str,
    result: JsonObject,
    links: Mapping[str, netns.Link],
    netns_path: str,
    source: str,
    without_netdev: frozenset[str] = frozenset(),
) -> None:
    """Every sandbox interface ``result`` names is in ``links``, with its MAC; but those named in
    ``without_netdev`` (a DPDK device's: no netdev exists to look at)."""
    for iface in result.get("interfaces", []):
        if not isinstance(iface, dict) or not iface.get("sandbox"):
            continue
        name = str(iface.get("name") or "")  # Go reads a null field as its zero value
        if name in without_netdev:
            continue
        link = links.get(name)
        if link is None:
            raise CniError(
                MultusCode.INTERFACE_MISSING,
                f'interface "{name}" of {owner} is missing',
                f"not found in network namespace {netns_path}",
            )
        recorded_mac = str(iface.get("mac") or "").lower()
        if recorded_mac and link.mac.lower() != recorded_mac:
            raise CniError(
                MultusCode.INTERFACE_MISSING,
                f'interface "{name}" of {owner} has MAC {link.mac}',
                f"{source} {recorded_mac}",
            )
