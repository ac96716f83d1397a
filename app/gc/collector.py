"""The garbage collector: find recorded sandboxes that are provably orphaned and tear them down.

Run by the daemon periodically and on demand (``multusctl gc``, ``POST /gc``), after start-up
recovery. A sandbox is collected only when this node recorded it and one of these proves it dead
(invariant 10): it belongs to an earlier boot; its network namespace is gone (missing, not
merely unreadable); the pod mirror, synced since start-up, no longer has its pod on this node (or
has a pod of that name with another UID: a recreated pod's predecessor is an orphan, invariant 8),
unless the runtime named it by a static pod's UID (``is_static_pod_uid``: the API's word proves
nothing about a pod the kubelet runs from its manifest), and the API, asked for that pod itself once
the mirror's word has held for the grace, confirms it (a node name that is not this node's makes
the mirror sync without this node's pods: the API still has them, wherever it says they run; once
it has not answered, or the daemon stops, a pass asks it no more); or an ADD/DEL of it stopped half
way and nobody holds it. Sandboxes with an operation in flight are skipped (invariant 9), and a
half-done one is torn down only once no plugin process of its attachments runs (``app.cni.reaper``,
under its lock): start-up recovery leaves one whose process would not die to GC, which must not DEL
it while that process may still be attaching. A netns path that cannot be looked at is warned about
once, and again only once what is there changes.

A running sandbox is never torn down, but a hot-plugged delegate of one whose hot-unplug DEL, or
whose undo after a failed hot-plug ADD, failed (an attachment left ``intent`` or ``deleting`` in a
``ready`` sandbox: possibly present, invariant 4) has that DEL retried on the passes, as
recovery does at start-up (``AttachEngine.settle_partial_attachments``), under the same backoff:
it must not wait for the pod's end or the daemon's next restart (invariant 5).

One orphan's failure does not hold up the others: a teardown that fails (a DEL left pending, or an
unexpected exception, logged and counted) is retried on a later pass, after an interval that
doubles with each failure up to a few minutes, and never given up (invariant 5); meanwhile the
report lists it as deferred, and orphans not failing go first, so a DEL that hangs until the
delegate timeout holds the others up only on the passes that retry it. The intervals are kept in
memory only: a restarted daemon's first pass tries every orphan again.

Teardown goes through the engine's DEL path (one teardown for DEL, rollback, recovery and GC).
After it, two last-resort sweeps: host-side veths named in the removed results that still exist
(the link of that name only if it has the MAC the result recorded: a name can come back on another
sandbox's veth; and none that a recorded result names, nor while an ADD without its result runs:
name and MAC can come back together; one whose removal fails is tried again on every pass while
the daemon runs), and host-local leases of containers we attached but no longer record
(``app.gc.leases``), each container's removed under its sandbox lock.
A pass that finds nothing to do costs a few queries (the sandboxes, the pending hot-plug DELs, the
lease proofs) and one stat per sandbox; the lease directories are read again only while a removed
attachment's proof is kept. Leases nothing proves ours (another CNI user's) cost one history
query per container, once, not one per lease on every pass.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Container, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from app import metrics
from app.attach import errors as attach_errors
from app.attach import logcontext, netns, status_retries
from app.attach.cluster import ClusterUnavailableError
from app.attach.engine import AttachEngine
from app.attach.netns import HostVeth, HostVethRemoval, NetnsLook, NetnsState
from app.attach.requests import Trigger
from app.cni import reaper
from app.cni.invoke import delegate_marker
from app.cni.types import CniError, ErrorCode
from app.gc import leases
from app.settings import DEFAULT_POD_GONE_GRACE
from app.store import checkpoints, lease_proofs
from app.store.database import Connection, Database
from app.store.records import AttachmentRecord, SandboxRecord, SandboxSummary

log = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 10.0
"""How long an orphan whose teardown failed waits before its next try (about one pass)."""
RETRY_MAX_SECONDS = 300.0
"""The longest it waits, however often it failed: it is retried for ever (invariant 5)."""


class PodPresence(Protocol):
    async def pods_on_node(self) -> Mapping[tuple[str, str], str] | None:
        """{(namespace, name): uid} of this node's pods, or None while the mirror is not synced
        since start-up (then it proves nothing)."""
        ...

    async def gone_from_api(self, namespace: str, name: str, uid: str) -> bool:
        """Whether the API, asked now for the pod itself, confirms the mirror's word: it has no pod
        of that name, or only one of another UID than ``uid`` (when known). False when it still
        has the pod, wherever it runs; ``ClusterUnavailableError`` when it cannot be asked (no
        answer, a 5xx, a refusal): nothing is proven either way then."""
        ...


@dataclass(frozen=True, slots=True)
class Orphan:
    container_id: str
    reason: str
    pod: str


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """A sandbox whose pod the API says is gone (or replaced) for less than the grace so far: not
    collected yet (``POD_EVIDENCE``)."""

    container_id: str
    reason: str
    pod: str
    confirmed_in_seconds: float


@dataclass(frozen=True, slots=True)
class Deferral:
    """An orphan this pass did not try, because its teardown failed lately."""

    container_id: str
    failures: int
    retry_in_seconds: float


@dataclass
class GcReport:
    examined: int = 0
    orphans: list[Orphan] = field(default_factory=list)
    collected: list[Orphan] = field(default_factory=list)
    deferred: list[Deferral] = field(default_factory=list)
    failed: list[tuple[str, CniError]] = field(default_factory=list)
    host_links_removed: list[str] = field(default_factory=list)
    leases_removed: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)
    """``<containerID>/<ifname>`` of the hot-plugged delegates of running sandboxes whose pending
    DEL this pass completed (logged; a failed one is in ``failed``)."""
    unconfirmed: list[Unconfirmed] = field(default_factory=list)
    """Sandboxes whose pod the API has said is gone or replaced for less than the grace so far."""
    disputed: list[Orphan] = field(default_factory=list)
    """Sandboxes the mirror has said, for the grace, are a gone or replaced pod's, which the API,
    asked for the pod itself, still has (``PodPresence.gone_from_api``): kept."""
    unanswered: list[Orphan] = field(default_factory=list)
    """Sandboxes the mirror has said, for the grace, are a gone or replaced pod's, whose pod the API
    could not be asked about: kept, nothing proven (a later pass asks again)."""
    dry_run: bool = False
    duration_ms: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "dryRun": self.dry_run,
            "examined": self.examined,
            "orphans": [
                {"containerID": o.container_id, "reason": o.reason, "pod": o.pod} for o in self.orphans
            ],
            "collected": [o.container_id for o in self.collected],
            "deferred": [
                {
                    "containerID": d.container_id,
                    "failures": d.failures,
                    "retryInSeconds": round(d.retry_in_seconds, 3),
                }
                for d in self.deferred
            ],
            "failed": [{"containerID": cid, "error": e.to_json()} for cid, e in self.failed],
            "unconfirmed": [
                {
                    "containerID": u.container_id,
                    "reason": u.reason,
                    "pod": u.pod,
                    "confirmedInSeconds": round(u.confirmed_in_seconds, 3),
                }
                for u in self.unconfirmed
            ],
            "disputed": [
                {"containerID": d.container_id, "reason": d.reason, "pod": d.pod} for d in self.disputed
            ],
            "unanswered": [
                {"containerID": u.container_id, "reason": u.reason, "pod": u.pod} for u in self.unanswered
            ],
            "hostLinksRemoved": self.host_links_removed,
            "leasesRemoved": self.leases_removed,
            "durationMs": round(self.duration_ms, 3),
        }


POD_EVIDENCE = frozenset({"pod-gone", "pod-replaced"})
"""The reasons only the API's word proves, which GC takes once it has held for the grace
(``gcPodGoneGraceSeconds``): a pod's absence is not always its end. A static pod's mirror pod
deleted through the API leaves the pod running (the kubelet runs it from its manifest, and makes a
new mirror pod at its next sync), and a sighting or relist seen in an unlucky order may tell a
moment's wrong UID; collecting then would tear a live pod's networks down. A missed DEL waits that
much longer to be collected, nothing else."""


class PodEvidence:
    """Since when each sandbox's pod has been seen gone or replaced, pass after pass; forgotten as
    soon as a pass sees it otherwise (the pod is back, the sandbox collected or gone)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._since: dict[str, tuple[str, float]] = {}

    def remaining(self, container_id: str, reason: str, grace: float) -> float:
        """Seconds before ``reason`` (seen now) has held for ``grace``; 0 once it has."""
        now = self._clock()
        seen = self._since.get(container_id)
        if seen is None or seen[0] != reason:
            seen = self._since[container_id] = (reason, now)
        return max(0.0, seen[1] + grace - now)

    def forget_all_but(self, container_ids: set[str]) -> None:
        for container_id in self._since.keys() - container_ids:
            del self._since[container_id]


def orphan_reason(
    sandbox: SandboxSummary,
    *,
    boot_id: str,
    pods: Mapping[tuple[str, str], str] | None,
    look: Callable[[str], NetnsLook] = netns.look,
) -> str | None:
    """Why ``sandbox`` is provably orphaned, or None if nothing proves it. Its netns (seen through
    ``look``) proves it only when provably gone: a path that cannot be looked at (permission
    denied, an I/O error) proves nothing, the namespace may be a live pod's."""
    if sandbox.state != "ready":
        return f"unfinished-{'add' if sandbox.state == 'adding' else 'del'}"
    if sandbox.boot_id != boot_id:
        return "earlier-boot"
    if look(sandbox.netns).state is NetnsState.GONE:
        return "netns-gone"
    if pods is not None and sandbox.pod.name and not is_static_pod_uid(sandbox.pod.uid):
        uid = pods.get((sandbox.pod.namespace, sandbox.pod.name))
        if uid is None:
            return "pod-gone"
        if sandbox.pod.uid and uid and uid != sandbox.pod.uid:
            return "pod-replaced"
    return None


_STATIC_POD_UID = re.compile(r"[0-9a-f]{32}")
"""The UID the kubelet gives a pod of its own manifest (file or URL) that names none: the MD5 of
it, in hex. The API server issues UUIDs (``8-4-4-4-12``), so no pod the API holds has one."""


def is_static_pod_uid(uid: str) -> bool:
    """Whether the runtime named the pod by a UID the kubelet made for a static pod. The API's word
    proves nothing about such a pod: the kubelet runs it whether or not the API holds a mirror pod
    of it (one the API refused, in a namespace that does not exist or referring to a Secret, never
    comes), and under another UID when it does. Only its netns or the boot proves it gone."""
    return _STATIC_POD_UID.fullmatch(uid) is not None


def host_veths(record: SandboxRecord) -> list[HostVeth]:
    """Host-side interfaces named in the record's results, with the MAC that ties each to it: not
    in the sandbox, not a bridge. A result that does not parse names none (its DEL forgot it)."""
    veths: list[HostVeth] = []
    for attachment in record.attachments:
        host_side = _host_interfaces(attachment.result)
        if host_side:
            bridges = _bridge_names(attachment.config)
            veths.extend(veth for veth in host_side if veth.name not in bridges)
    return veths


def _host_interfaces(result_text: str | None) -> list[HostVeth]:
    """The host-side interfaces (not in the sandbox) a recorded result names, bridges included;
    none when it does not parse."""
    try:
        result = json.loads(result_text) if result_text else {}
    except ValueError:
        return []
    found = []
    for interface in result.get("interfaces", []) if isinstance(result, dict) else []:
        if isinstance(interface, dict) and not interface.get("sandbox"):
            name, mac = interface.get("name"), interface.get("mac")
            if isinstance(name, str) and name:
                found.append(HostVeth(name, mac if isinstance(mac, str) else ""))
    return found


def _bridge_names(config: bytes) -> set[str]:
    net = leases.recorded_network(config)
    plugins = net.plugins if net is not None else ()
    return {str(p["bridge"]) for p in plugins if isinstance(p.get("bridge"), str)}


class GarbageCollector:
    def __init__(
        self,
        *,
        engine: AttachEngine,
        db: Database,
        pods: PodPresence | None = None,
        clock: Callable[[], float] = time.monotonic,
        remove_host_veths: Callable[[list[HostVeth]], Awaitable[HostVethRemoval]] = netns.delete_host_veths,
        pod_gone_grace: float = DEFAULT_POD_GONE_GRACE,
    ) -> None:
        self._engine = engine
        self._pod_gone_grace = pod_gone_grace
        self._pod_evidence = PodEvidence(clock)
        self._db = db
        self._pods = pods
        self._pass = asyncio.Lock()
        self._lease_dirs: set[Path] = set()
        self._lease_listings = leases.LeaseListings()
        self._unproven: set[str] = set()
        """Unrecorded containers holding a lease that nothing proved ours when last looked up
        (``_proven_by_history``), as long as they stay so."""
        self._retries: TeardownRetries[str] = TeardownRetries(clock)
        self._netns = NetnsWarnings()
        self._host_veths: dict[HostVeth, int] = {}
        """Host veths of collected sandboxes still to remove, with their failed removals so far:
        each pass tries them until they are gone (in memory only, see ``_sweep_host_veths``)."""
        self._remove_host_veths = remove_host_veths

    async def run_once(
        self, *, dry_run: bool = False, retry_now: bool = False, stop: Callable[[], bool] = lambda: False
    ) -> GcReport:
        """One pass: find orphans, tear them down (unless ``dry_run``), sweep leftovers. An orphan
        whose teardown failed lately is left for a later pass (``deferred``), unless ``retry_now``
        (an operator's pass: someone asked for it now, and waits for its answer); a dry run reports
        the same orphans and deferrals, and tries nothing (nor moves a retry). Once ``stop()`` is
        true (the daemon is stopping) no further teardown or sweep begins: a shutdown's grace would
        cancel it half way, and what is left the next daemon's recovery and passes take on."""
        async with self._pass:
            started = time.monotonic()
            report = GcReport(dry_run=dry_run)
            summaries = await self._db.read(checkpoints.sandbox_summaries)
            live_pods = await self._pods.pods_on_node() if self._pods is not None else None
            report.examined = len(summaries)
            evidenced: set[str] = set()
            # False once the API did not answer this pass: each question would wait out the request
            # timeout in turn, holding the pass (and ``multusctl gc``, and a stopping daemon's grace).
            api_answers = True
            for sandbox in summaries:
                if self._engine.locks.busy(sandbox.container_id):
                    evidenced.add(sandbox.container_id)  # no look this time: what was seen still counts
                    continue
                why = orphan_reason(
                    sandbox, boot_id=self._engine.boot_id, pods=live_pods, look=self._netns.look
                )
                if why is None:
                    continue
                pod = f"{sandbox.pod.namespace}/{sandbox.pod.name}".strip("/")
                if why in POD_EVIDENCE:
                    evidenced.add(sandbox.container_id)
                    left = self._pod_evidence.remaining(sandbox.container_id, why, self._pod_gone_grace)
                    if left > 0:
                        report.unconfirmed.append(Unconfirmed(sandbox.container_id, why, pod, left))
                        continue
                    assert self._pods is not None  # no pod evidence without a mirror
                    identity = sandbox.pod
                    if not api_answers or stop():
                        report.unanswered.append(Orphan(sandbox.container_id, why, pod))
                        continue
                    try:
                        gone = await self._pods.gone_from_api(identity.namespace, identity.name, identity.uid)
                    except ClusterUnavailableError as exc:
                        api_answers = False
                        log.info(
                            "gc: kept container %s: the API could not be asked for pod %s: %s",
                            sandbox.container_id,
                            pod,
                            exc,
                        )
                        report.unanswered.append(Orphan(sandbox.container_id, why, pod))
                        continue
                    if not gone:
                        report.disputed.append(Orphan(sandbox.container_id, why, pod))
                        continue
                report.orphans.append(Orphan(sandbox.container_id, why, pod))
            self._pod_evidence.forget_all_but(evidenced)
            self._netns.forget_all_but(sandbox.netns for sandbox in summaries)
            self._retries.forget_all_but(sandbox.container_id for sandbox in summaries)
            report.deferred = [] if retry_now else _deferred(self._retries, report.orphans)
            if not dry_run:
                waiting = {deferral.container_id for deferral in report.deferred}
                due = [orphan for orphan in report.orphans if orphan.container_id not in waiting]
                for orphan in sorted(due, key=lambda o: self._retries.failures(o.container_id)):
                    if stop():
                        break
                    await self._collect_one(orphan, report, pods=live_pods)
                if not stop():
                    await self._settle_partial(report, retry_now=retry_now)
                    await self._sweep_host_veths(report)
            if not stop():
                await self._sweep_leases(report, dry_run=dry_run)
            report.duration_ms = (time.monotonic() - started) * 1000
            if not dry_run:
                _observe(report)
                await self._update_gauges()
            if report.orphans or report.leases_removed:
                log.info("gc: %s", json.dumps(report.as_json()))
            return report

    async def _collect_one(
        self, orphan: Orphan, report: GcReport, *, pods: Mapping[tuple[str, str], str] | None
    ) -> None:
        """``_collect``, whatever it raises: one orphan's surprise (a bug, a failed write) is logged
        with its container and counted, and the pass goes on to the others; every failure puts the
        orphan's next try off (``TeardownRetries``), a success or a sandbox no longer orphaned
        forgets its failures."""
        try:
            failed = await self._collect(orphan, report, pods=pods)
        except Exception as exc:  # the next pass retries it; the others must not wait for that
            context = logcontext.fields(orphan.container_id, command="DEL", trigger="gc")
            report.failed.append(
                (orphan.container_id, attach_errors.unexpected(exc, step="gc", context=context))
            )
            failed = True
        if failed:
            self._retries.failed(orphan.container_id)
        else:
            self._retries.forget(orphan.container_id)

    async def _collect(
        self, orphan: Orphan, report: GcReport, *, pods: Mapping[tuple[str, str], str] | None
    ) -> bool:
        """Tear ``orphan`` down if it still is one under its lock: the summaries were read before,
        and an ADD in flight then (``adding``) may have answered since (invariant 10). The API's
        word proves it only if the pass took it, once held for the grace: a sandbox found
        half-done that has become ``ready`` since is a live pod's, whose absence from the mirror
        has held for no grace yet. True when a DEL of it failed and stays pending."""

        def still_orphaned(record: SandboxRecord) -> bool:
            why = orphan_reason(
                record.summary(), boot_id=self._engine.boot_id, pods=pods, look=self._netns.look
            )
            if why in POD_EVIDENCE:
                return orphan.reason in POD_EVIDENCE
            return why is not None

        if orphan.reason.startswith("unfinished-"):
            refusal = await self._reap_leftover_plugins(orphan.container_id)
            if refusal is not None:
                log.warning(
                    "gc left container %s pending (%s): %s", orphan.container_id, orphan.reason, refusal
                )
                report.failed.append((orphan.container_id, refusal))
                return True
        record, errors = await self._engine.tear_down_if(
            orphan.container_id, trigger=Trigger.GC, condition=still_orphaned
        )
        if record is None:
            return False
        if errors:
            for error in errors:
                log.warning(
                    "gc left container %s pending (%s): %s",
                    orphan.container_id,
                    orphan.reason,
                    error,
                    extra=logcontext.fields(orphan.container_id, command="DEL", trigger="gc", pod=record.pod),
                )
            report.failed.extend((orphan.container_id, error) for error in errors)
            return True
        report.collected.append(orphan)
        for attachment in record.attachments:
            self._lease_dirs |= leases.host_local_dirs(attachment.config, attachment.root)
        for veth in host_veths(record):
            self._host_veths.setdefault(veth, 0)
        return False

    async def _reap_leftover_plugins(self, container_id: str) -> CniError | None:
        """Kill and wait for the plugin processes still running for a half-done sandbox's
        attachments (one start-up recovery found would not die, left to GC), under its lock, so
        no operation of ours is in flight: none of its DELs may run while one may (invariant 9).
        A sandbox no longer half-done under the lock (an ADD in flight when the pass read the
        checkpoint has answered since) is a live pod's: what carries its markers now (a process its
        plugin left running for the pod) is not killed. The error that keeps the sandbox pending
        when one still runs, else None."""
        async with self._engine.locks.hold(container_id):
            record = await self._db.read(partial(checkpoints.load_sandbox, container_id=container_id))
            if record is None or record.state == "ready":
                return None
            markers = {delegate_marker(container_id, a.ifname) for a in record.attachments}
            try:
                killed = await reaper.reap(markers)
            except reaper.ReapError as exc:
                return CniError(
                    ErrorCode.TRY_AGAIN_LATER,
                    f"container {container_id}: a plugin process of an earlier operation would not die",
                    f"not torn down while it may still be running: {exc}",
                )
        if killed:
            metrics.ORPHANS_REAPED.inc(len(killed))
            log.warning(
                "gc killed %d leftover plugin processes of container %s before its teardown",
                len(killed),
                container_id,
            )
        return None

    async def _settle_partial(self, report: GcReport, *, retry_now: bool) -> None:
        """Retry the pending DELs of hot-plugged delegates of running sandboxes (``intent`` or
        ``deleting`` in a ``ready`` sandbox), through the engine's one path for them, which takes
        each sandbox's lock and reads it again under it. A sandbox with an operation in flight is
        left to it, one whose DEL failed lately waits as an orphan does (``TeardownRetries``).
        Costs one query a pass while there is none."""
        waiting = await self._db.read(checkpoints.list_partial)
        if not waiting:
            return
        skip = {
            sandbox.container_id
            for sandbox in waiting
            if self._engine.locks.busy(sandbox.container_id)
            or (not retry_now and self._retries.waiting(sandbox.container_id))
        }
        tried = {sandbox.container_id: sandbox for sandbox in waiting if sandbox.container_id not in skip}
        if not tried:
            return
        try:
            await self._engine.settle_partial_attachments(trigger=Trigger.GC, skip=skip)
        except Exception:  # a surprise (a bug, a failed write): what is still pending is retried
            log.exception("gc: pending DELs of hot-plugged delegates not all retried")
        still = {sandbox.container_id: sandbox for sandbox in await self._db.read(checkpoints.list_partial)}
        for container_id, before in tried.items():
            after = still.get(container_id)
            left = (
                {a.ifname for a in after.attachments if a.state in checkpoints.PARTIAL_STATES}
                if after
                else set()
            )
            for attachment in before.attachments:
                if attachment.state in checkpoints.PARTIAL_STATES and attachment.ifname not in left:
                    report.detached.append(f"{container_id}/{attachment.ifname}")
                    log.info(
                        "gc completed the pending DEL of hot-plugged %s of container %s",
                        attachment.ifname,
                        container_id,
                        extra=logcontext.fields(
                            container_id,
                            command="DEL",
                            trigger="gc",
                            pod=before.pod,
                            ifname=attachment.ifname,
                        ),
                    )
            if after is None or not left:
                self._retries.forget(container_id)
                continue
            self._retries.failed(container_id)
            report.failed.extend(
                (container_id, _pending_error(a)) for a in after.attachments if a.ifname in left
            )

    async def _sweep_host_veths(self, report: GcReport) -> None:
        """Remove the host veths the collected sandboxes' results name that are still there (a DEL
        without a namespace leaves them while their namespace lives on, held by a process, or until
        the kernel's cleanup of it runs). Only the link with the recorded name and MAC goes: the
        name alone may be another sandbox's veth by now. A removal that fails is tried again on
        every pass until it succeeds or the veth is gone; none is given up. Kept in memory: a
        daemon stopped meanwhile forgets them (the checkpoint no longer names them).

        Nor does a veth go that another sandbox may have been given since under the same name and
        MAC (a plugin naming host veths for their pod, whose MAC comes back with the name, as
        systemd's ``MACAddressPolicy=persistent`` gives a veth): one a recorded result names is
        that sandbox's, and is forgotten; none goes while an ADD that may have made one without
        its result recorded yet runs (``_host_veth_claims``)."""
        if not self._host_veths:
            return
        claimed, adding = await self._db.read(_host_veth_claims)
        for veth in [veth for veth in self._host_veths if (veth.name, veth.mac.lower()) in claimed]:
            del self._host_veths[veth]
            log.info("gc: host veth %s (%s) is a recorded sandbox's now: left to it", veth.name, veth.mac)
        if not self._host_veths or any(self._engine.locks.busy(container) for container in adding):
            return
        try:
            outcome = await self._remove_host_veths(list(self._host_veths))
        except Exception:  # a surprise (a bug, a reply pyroute2 cannot decode): the leases still go
            log.exception("gc: host veths of collected sandboxes not removed, tried again next pass")
            return
        report.host_links_removed.extend(veth.name for veth in outcome.removed)
        failures = {veth: error for veth, error in outcome.failed}
        for veth in list(self._host_veths):
            error = failures.get(veth)
            if error is None:
                del self._host_veths[veth]
                continue
            self._host_veths[veth] += 1
            log.log(
                logging.WARNING if self._host_veths[veth] == 1 else logging.DEBUG,
                "gc: host veth %s (%s) of a collected sandbox not removed, tried again next pass: %s",
                veth.name,
                veth.mac,
                error,
            )

    async def _sweep_leases(self, report: GcReport, *, dry_run: bool) -> None:
        """Remove the leases of containers we attached and no longer record (``app.gc.leases``);
        then forget the removed attachments none of whose directories holds a lease of theirs."""
        configs, removed, live = await self._db.read(_lease_evidence)
        removed_dirs, candidates, unwritten = await asyncio.to_thread(
            self._unrecorded_leases, configs, removed, live
        )
        if unwritten:
            dropped = await asyncio.to_thread(leases.remove_unwritten, unwritten, dry_run=dry_run)
            report.leases_removed.extend(str(lease.path) for lease in dropped)
        proven = {row.container_id for row in removed}
        ours_ids = proven | await self._proven_by_history(
            {lease.container_id for lease in candidates} - proven
        )
        ours = [lease for lease in candidates if lease.container_id in ours_ids]
        gone = await self._remove_unrecorded(ours, dry_run=dry_run)
        report.leases_removed.extend(str(lease.path) for lease in gone)
        if not dry_run:
            await self._forget_settled(removed, removed_dirs)

    def _unrecorded_leases(
        self,
        configs: set[tuple[bytes, str]],
        removed: list[lease_proofs.RemovedAttachment],
        live: set[str],
    ) -> tuple[dict[int, set[Path]], list[leases.Lease], list[leases.Lease]]:
        """In a worker thread (every recorded config parsed, lease directories listed, new lease
        files read: thousands of files on a busy node's first pass, which must not hold up the
        event loop): the lease directories of each removed attachment, the leases of containers
        not in ``live``, and the lease files naming no container, in every directory known.

        A directory stays known while a recorded or removed attachment names it, or while it holds
        a lease of a container not live; one that has neither is forgotten (with its listing), so
        the directories of networks long deleted are not listed on every pass for the daemon's
        life. A lease appearing there later is an ADD's of ours, whose config names it again."""
        named: set[Path] = set()
        for config, root in configs:
            named |= leases.host_local_dirs(config, root)
        removed_dirs = {row.id: leases.host_local_dirs(row.config, row.root) for row in removed}
        for dirs in removed_dirs.values():
            named |= dirs
        candidates: list[leases.Lease] = []
        unwritten: list[leases.Lease] = []
        holding: set[Path] = set()
        for directory in sorted(named | self._lease_dirs):
            listed = self._lease_listings.leases(directory)
            found = [lease for lease in listed if lease.container_id and lease.container_id not in live]
            if found:
                holding.add(directory)
                candidates.extend(found)
            unwritten.extend(lease for lease in listed if not lease.container_id)
        self._lease_dirs = named | holding
        self._lease_listings.forget_all_but(self._lease_dirs)
        return removed_dirs, candidates, unwritten

    async def _proven_by_history(self, unproven: set[str]) -> set[str]:
        """Those of ``unproven`` (containers holding a lease, unrecorded, no removed attachment
        proving it ours) that the history proves ours, in one read for all of them. A container
        found unproven is not looked up again while it stays a candidate: what could prove it later
        is a removed attachment (an ADD of ours records it first, and its removal writes the row),
        read on every pass. So the leases of other CNI users (a node migrated from upstream Multus,
        a data dir shared with another runtime) cost no query per lease per pass."""
        for_history = unproven - self._unproven
        found = (
            await self._db.read(partial(_added_by_us, container_ids=for_history)) if for_history else set()
        )
        self._unproven = (self._unproven & unproven) | (for_history - found)
        return found

    async def _remove_unrecorded(self, ours: list[leases.Lease], *, dry_run: bool) -> list[leases.Lease]:
        """Remove ``ours``, each container's under its sandbox lock and only if it is still
        unrecorded then: an ADD may have begun since ``live`` was read, taken a lease and written
        its history (its intent is committed before its plugin runs, invariants 2 and 9). A dry
        run makes the same checks and removes nothing, so it lists what a pass would remove."""
        by_container: dict[str, list[leases.Lease]] = {}
        for lease in ours:
            by_container.setdefault(lease.container_id, []).append(lease)
        removed: list[leases.Lease] = []
        for container_id, its_leases in by_container.items():
            if self._engine.locks.busy(container_id):
                continue
            async with self._engine.locks.hold(container_id):
                record = await self._db.read(partial(checkpoints.load_sandbox, container_id=container_id))
                if record is None:
                    removed.extend(await asyncio.to_thread(leases.remove, its_leases, dry_run=dry_run))
        return removed

    async def _forget_settled(
        self, removed: list[lease_proofs.RemovedAttachment], removed_dirs: Mapping[int, set[Path]]
    ) -> None:
        """Forget the removed attachments none of whose lease directories holds a lease of their
        container now, read afresh (a listing reused from an earlier pass may predate a lease
        whose directory's mtime did not move): the proof goes only with the last lease it proves."""
        if not removed:
            return
        holders = await asyncio.to_thread(_lease_holders, set().union(*removed_dirs.values()))
        settled = [
            row.id for row in removed if not any(row.container_id in holders[d] for d in removed_dirs[row.id])
        ]
        if settled:
            await self._db.write(partial(lease_proofs.forget, ids=settled), durable=False)

    async def _update_gauges(self) -> None:
        by_state = await self._db.read(checkpoints.attachment_counts)
        for state in ("intent", "added", "deleting"):
            metrics.ATTACHMENTS.labels(state).set(by_state.get(state, 0))
        metrics.STORE_BYTES.set(self._db.size_bytes())


def _observe(report: GcReport) -> None:
    metrics.GC_PASS_SECONDS.observe(report.duration_ms / 1000)
    for kind, count in (
        ("sandbox", len(report.collected)),
        ("host_link", len(report.host_links_removed)),
        ("lease", len(report.leases_removed)),
    ):
        if count:
            metrics.GC_RECLAIMED.labels(kind).inc(count)


def _pending_error(attachment: AttachmentRecord) -> CniError:
    """The error a pending DEL of ``attachment`` recorded, or one saying that it is pending."""
    try:
        recorded = CniError.from_json(json.loads(attachment.last_error or "null"))
    except ValueError:
        recorded = None
    if recorded is not None:
        return recorded
    return CniError(
        ErrorCode.TRY_AGAIN_LATER,
        f"the DEL of hot-plugged {attachment.ifname} of container {attachment.container_id} is pending",
    )


def _host_veth_claims(connection: Connection) -> tuple[set[tuple[str, str]], set[str]]:
    """The host veths (name, MAC in lower case) the recorded results name, and the containers with
    an attachment whose ADD has no result recorded (``intent``: its plugin may be making one)."""
    claimed: set[tuple[str, str]] = set()
    adding: set[str] = set()
    for record in checkpoints.list_sandboxes(connection):
        for attachment in record.attachments:
            claimed.update((veth.name, veth.mac.lower()) for veth in _host_interfaces(attachment.result))
            if attachment.state == "intent":
                adding.add(record.container_id)
    return claimed, adding


def _lease_evidence(
    connection: Connection,
) -> tuple[set[tuple[bytes, str]], list[lease_proofs.RemovedAttachment], set[str]]:
    """Every distinct recorded (config, root), every removed attachment GC has not yet settled,
    and every recorded container ID, in one read."""
    return (
        lease_proofs.recorded_configs(connection),
        lease_proofs.removed(connection),
        checkpoints.container_ids(connection),
    )


def _added_by_us(connection: Connection, container_ids: set[str]) -> set[str]:
    """Those of ``container_ids`` the history shows a delegate of ours ran an ADD for."""
    return {cid for cid in container_ids if lease_proofs.added_by_us(connection, container_id=cid)}


def _lease_holders(directories: set[Path]) -> dict[Path, Container[str]]:
    """{directory: the container IDs holding a lease in it (any, when it cannot be read)}, read from
    the files now."""
    holders: dict[Path, Container[str]] = {}
    for directory in directories:
        found = leases.current(directory)
        holders[directory] = _EVERYONE if found is None else {lease.container_id for lease in found}
    return holders


class _Everyone:
    """What an unreadable lease directory may hold: a lease of any container (so no proof of one
    is forgotten while its directory cannot be read)."""

    def __contains__(self, _container_id: object) -> bool:
        return True


_EVERYONE = _Everyone()


def retry_delay(failures: int) -> float:
    """How long an orphan waits for its next try after ``failures`` failed teardowns in a row."""
    return status_retries.doubled_delay(RETRY_FIRST_SECONDS, failures, cap=RETRY_MAX_SECONDS)


K = TypeVar("K", bound=Hashable)
"""What a teardown retried is known by: a container ID, a spool entry's path."""


@dataclass(slots=True)
class _Retry:
    failures: int
    due: float


class TeardownRetries(Generic[K]):
    """The teardowns that failed lately, and when each may be tried again: GC's orphans, by
    container ID; the spooled DELs kept after a failed replay, by entry (``app.daemon.spool``).

    Each failure doubles the wait (``retry_delay``), up to ``RETRY_MAX_SECONDS``; nothing is given
    up. In memory only: losing it (a restart) costs one more try of each at once.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._retries: dict[K, _Retry] = {}

    def failures(self, key: K) -> int:
        retry = self._retries.get(key)
        return 0 if retry is None else retry.failures

    def failed(self, key: K) -> float:
        """Note one more failure in a row of ``key``; the seconds before its next try."""
        failures = self.failures(key) + 1
        delay = retry_delay(failures)
        self._retries[key] = _Retry(failures, self._clock() + delay)
        return delay

    def forget(self, key: K) -> None:
        self._retries.pop(key, None)

    def next_try_in(self, key: K) -> float | None:
        """The seconds left while ``key``'s next try is not due yet; None once it is (or none failed)."""
        retry = self._retries.get(key)
        if retry is None:
            return None
        left = retry.due - self._clock()
        return left if left > 0 else None

    def waiting(self, key: K) -> bool:
        """True while ``key``'s next try is not due yet."""
        return self.next_try_in(key) is not None

    def forget_all_but(self, keys: Iterable[K]) -> None:
        """Forget those no longer there (a container DELed meanwhile by the runtime, an entry gone)."""
        keep = set(keys)
        for key in [k for k in self._retries if k not in keep]:
            del self._retries[key]


def _deferred(retries: TeardownRetries[str], orphans: Iterable[Orphan]) -> list[Deferral]:
    """Those of ``orphans`` not to be tried yet."""
    return [
        Deferral(orphan.container_id, retries.failures(orphan.container_id), left)
        for orphan in orphans
        if (left := retries.next_try_in(orphan.container_id)) is not None
    ]


class NetnsWarnings:
    """``netns.look``, warning of a path that cannot be looked at once, and again only once what is
    there changes (another error, or it could be looked at in between): not on every pass."""

    def __init__(self) -> None:
        self._unreadable: dict[str, int] = {}

    def look(self, path: str) -> NetnsLook:
        found = netns.look(path)
        if found.state is NetnsState.UNREADABLE:
            if self._unreadable.get(path) != found.error:
                log.warning("gc: %s: not taken as gone", found.describe(path))
                self._unreadable[path] = found.error
        elif self._unreadable.pop(path, None) is not None:
            log.info("gc: netns path %s can be looked at again: %s", path, found.state)
        return found

    def forget_all_but(self, paths: Iterable[str]) -> None:
        """Forget the paths no recorded sandbox has any more."""
        keep = set(paths)
        for path in [p for p in self._unreadable if p not in keep]:
            del self._unreadable[path]
