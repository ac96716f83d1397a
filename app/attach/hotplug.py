"""Hot-plug: networks added to and removed from running sandboxes, one delegate at a time.

Two ways in, one engine path. ``serve_delegate`` answers upstream's ``POST /delegate`` (what
multus-dynamic-networks-controller, DNC, sends: one delegate conf, ``CNI_IFNAME``, pod identity in
CNI_ARGS, optional interface attributes). ``HotplugReconciler`` is the daemon's own hot-plug
(daemon-config ``hotplugNetworks``): it compares each running pod's ``k8s.v1.cni.cncf.io/networks``
annotation with the sandbox's checkpoint and attaches or detaches the difference. Both go through
``AttachEngine.attach_delegate`` / ``detach_delegate``: intent committed before the delegate runs,
result after, under the sandbox's lock; so the runtime's final DEL, rollback, recovery and GC tear
a hot-plugged delegate down like any other, and a kill -9 in the middle leaves an intent that
recovery DELs (``settle_partial_attachments``).

Called by the daemon's socket server (``/delegate``) and by the daemon's wiring of the mirror's pod
events (``HotplugReconciler.pod_changed``) and of the engine's finished ADDs (``sandbox_added``).
Never imports the watch package or HTTP code; never detaches an attachment it cannot match
unambiguously; never touches the cluster network's delegate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from app import metrics
from app.attach import delegate_inputs, netconf, netns, status_retries
from app.attach import selection as sel
from app.attach.cluster import (
    NETWORKS_ANNOTATION,
    ClusterUnavailableError,
    InterfaceEvent,
    NetworkEvents,
    StatusPublisher,
    StatusWriteRefusedError,
)
from app.attach.engine import AttachEngine
from app.attach.errors import SandboxNotRunningError, as_cni_error
from app.attach.locks import SandboxLocks
from app.attach.netconf import MultusNetConf
from app.attach.network_status import DelegateOutcome, interface_events, render
from app.attach.networks import DelegatePlan, NadNotFoundError, NetworkResolver, delegate_cni_args
from app.attach.requests import Command, SandboxRequest, Trigger
from app.cni import conf as cniconf
from app.cni.types import CniError, ContainerId, ErrorCode, IfName, JsonObject, NetworkConfigList
from app.store.mirror_records import PodRecord
from app.store.records import AttachmentRecord, SandboxRecord, SandboxSummary

log = logging.getLogger(__name__)

ObjectKey = tuple[str, str]

ADDED = "AddedInterface"
REMOVED = "RemovedInterface"
FAILED_ADDING = "FailedAddingInterface"
NO_NETWORK_FOUND = "NoNetworkFound"
FAILED_REMOVING = "FailedRemovingInterface"
DEFAULT_ROUTE_NOT_APPLIED = "DefaultRouteNotApplied"
"""A hot-plugged selection's ``default-route``: the interface is added, the pod's route kept."""


class PodEvents(NetworkEvents, Protocol):
    """Events about a pod beyond ``AddedInterface`` (the watch package's publisher implements it)."""

    def emit_pod_event(self, pod: PodRecord, *, reason: str, warning: bool, message: str) -> None:
        """Queue one core/v1 Event about ``pod``; never blocks and never fails the caller."""
        ...


# ---- POST /delegate ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InterfaceAttributes:
    """``interfaceAttributes`` of a ``/delegate`` request: applied as an annotation element's are."""

    ips: tuple[str, ...] = ()
    mac: str = ""
    cni_args: JsonObject | None = None


@dataclass(frozen=True, slots=True)
class DelegateCall:
    """One ``/delegate`` request, decoded: the sandbox request and the delegate conf it carries."""

    request: SandboxRequest
    net: NetworkConfigList | None
    """None for DEL, CHECK and STATUS, which replay the checkpoint instead."""
    attributes: InterfaceAttributes = field(default_factory=InterfaceAttributes)


MULTUS_TYPES = frozenset({"multus", "multus-shim"})


def delegate_conf(stdin: bytes, conf: Mapping[str, Any]) -> NetworkConfigList:
    """The delegate configuration of a ``/delegate`` request; a Multus conf is refused (code 7)."""
    if (isinstance(conf.get("type"), str) and conf["type"] in MULTUS_TYPES) or any(
        key in conf for key in ("delegates", "clusterNetwork", "defaultNetworks")
    ):
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "request field 'config' is a Multus configuration, not a delegate configuration",
            "/delegate runs one delegate: send its network configuration (a NAD's spec.config)",
        )
    if not isinstance(conf.get("name"), str) or not conf.get("name"):
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG, "delegate configuration (request field 'config') has no 'name'"
        )
    return cniconf.load_network_list(stdin, source="request field 'config'")


async def serve_delegate(
    engine: AttachEngine, call: DelegateCall, *, status: StatusPublisher | None = None
) -> JsonObject | None:
    """Run one ``/delegate`` request; ADD returns the delegate's result (CNI 1.1.0).

    ADD posts one ``AddedInterface`` event and writes no network-status (DNC writes it; a second
    writer would race its PUT)."""
    request = call.request
    outcome = "error"
    try:
        if request.command is Command.ADD:
            answer = await _delegate_add(engine, call, status=status)
            outcome = "ok"
            return answer
        if request.command is Command.DEL:
            await engine.detach_delegate(request)
        elif request.command is Command.CHECK:
            await engine.check_delegate(request)
        outcome = "ok"
        return None
    finally:
        metrics.HOTPLUG_OPERATIONS.labels("delegate", request.command, outcome).inc()


async def _delegate_add(
    engine: AttachEngine, call: DelegateCall, *, status: StatusPublisher | None
) -> JsonObject:
    request, net, attributes = call.request, call.net, call.attributes
    if net is None:
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, "request field 'config' is required for ADD")
    element = sel.NetworkSelection(
        name=net.name,
        namespace=request.pod.namespace,
        ips=attributes.ips,
        mac=attributes.mac,
        cni_args=attributes.cni_args,
    )
    if attributes.cni_args is not None:
        data = delegate_inputs.inject_cni_args(net.raw, attributes.cni_args)
        net = cniconf.load_network_list(data, source="request field 'config'")
    plan = DelegatePlan(
        position=1,
        network_name=net.name,
        net=net,
        ifname=request.ifname,
        is_master=False,
        # the caller addressed this one delegate: its CNI_ARGS are handed on whole, as to a master
        cni_args=delegate_inputs.cni_args_for(element, delegate_cni_args(request.cni_args, master=True)),
        capability_args=delegate_inputs.capability_args_for(element, request.conf.runtime_config),
    )
    answer = await engine.attach_delegate(request, plan)
    if status is not None:
        pod = PodRecord(namespace=request.pod.namespace, name=request.pod.name, uid=request.pod.uid)
        outcome = DelegateOutcome(
            network_name=net.name, result=answer, is_master=False, ifname=request.ifname
        )
        status.emit_interface_events(pod, interface_events([outcome]))
    return answer


# ---- native hot-plug ----------------------------------------------------------------------------


def daemon_conf(daemon_config: Mapping[str, Any]) -> MultusNetConf:
    """The Multus configuration native hot-plug resolves networks with: the daemon's own keys."""
    version = daemon_config.get("cniVersion")
    return netconf.parse(
        netconf.merge({"name": "multus-cni-network"}, daemon_config),
        stdin_cni_version=version if isinstance(version, str) else "1.0.0",
    )


@dataclass(frozen=True, slots=True)
class Refusal:
    """A selection the reconciler will not add, and why."""

    network: str
    ifname: str
    """The interface the selection names; "" when it names none."""
    error: CniError


@dataclass(frozen=True, slots=True)
class Changes:
    """What reconciling one sandbox against its pod's annotation means."""

    add: tuple[tuple[sel.NetworkSelection, IfName], ...] = ()
    """In annotation order, each with the interface name it gets."""
    remove: tuple[AttachmentRecord, ...] = ()
    """Newest first."""
    refused: tuple[Refusal, ...] = ()


def managed_attachments(record: SandboxRecord, *, default_networks: int) -> list[AttachmentRecord]:
    """The attachments the ``networks`` annotation governs: those of a NAD (``<ns>/<name>``), but
    not the cluster network, nor a ``defaultNetworks`` one (positions 1..n, n as recorded at ADD:
    ``SandboxRecord.default_networks``, never today's config, invariant 6). What ``POST
    /delegate`` attached is named by its conf (a CNI network name has no ``/``) and left to its
    caller."""
    return sorted(
        (
            a
            for a in record.attachments
            if not a.is_master and a.position > default_networks and "/" in a.network_name
        ),
        key=lambda a: a.position,
    )


def plan_changes(
    record: SandboxRecord,
    selections: Sequence[sel.NetworkSelection],
    *,
    default_networks: int,
    present: Collection[str] = (),
) -> Changes:
    """Match the annotation's selections with the recorded attachments, as DNC keys them
    (``<ns>/<nad>/<ifname>`` when an interface is named, else ``<ns>/<nad>``).

    A named selection matches the attachment of that name; a nameless one the oldest unmatched
    attachment of its NAD (the one ADD gave it) whose name no selection asks for: an explicitly
    requested name wins over whatever name a nameless selection's attachment holds (generated or
    named by an earlier annotation, the checkpoint cannot tell), so ``slow@net3`` edited into
    ``hot-a@net3, slow`` detaches ``slow`` from net3, attaches ``hot-a`` as net3 and ``slow`` again
    under a generated name, instead of refusing ``hot-a@net3`` until the next edit. An interface
    name is needed to tell two attachments of one NAD apart, so a nameless selection of a NAD
    selected more than once is not added but refused (until the annotation changes); a selection
    whose name an attachment the annotation does not govern holds (the cluster network, a
    ``defaultNetworks`` one, one ``POST /delegate`` attached) is refused too, and so is an interface
    name more than one selection names (ADD refuses that annotation: neither is added, nor is the
    second one run to fail). Nothing refused ever causes a detach: only attachments no selection
    matches are removed.

    Only an ``added`` attachment satisfies a selection: one whose hot-plug ADD or DEL did not finish
    (its undo or DEL failed: possibly present, invariant 4) is DELed again and then added again,
    so the annotation is not taken as satisfied by an interface that is not attached.

    A generated ``net<n>`` avoids every name the checkpoint holds and those in ``present`` (the
    interfaces in the sandbox's netns, which the engine refuses to reuse), those of the attachments
    being removed included: their DEL may fail, or be pending already (a stuck unplug), and a new
    network given one of their names would fail with it for as long as it stays stuck. Only a
    selection that names such an interface itself asks for it.
    """
    managed = managed_attachments(record, default_networks=default_networks)
    managed_names = {a.ifname for a in managed if a.state == "added"}
    matched: set[str] = set()
    adds: list[tuple[int, sel.NetworkSelection, str]] = []
    refused: list[Refusal] = []
    conflicts: list[tuple[int, sel.NetworkSelection, AttachmentRecord]] = []
    counts: dict[str, int] = {}
    naming: dict[str, list[str]] = {}
    refused_names: set[str] = set()
    for selection in selections:
        counts[selection.qualified_name] = counts.get(selection.qualified_name, 0) + 1
        if selection.interface:
            naming.setdefault(selection.interface, []).append(selection.qualified_name)
    for index, selection in enumerate(selections):
        if not selection.interface:
            continue
        held = record.attachment(selection.interface)
        networks = naming[selection.interface]
        if len(networks) > 1:  # refused once, as ADD refuses it; an attachment one of them selects stays
            if held is not None and held.ifname in managed_names and held.network_name in networks:
                matched.add(held.ifname)
            if selection.interface not in refused_names:
                refused_names.add(selection.interface)
                refused.append(_requested_twice(selection.interface, networks))
            continue
        if held is None:
            adds.append((index, selection, selection.interface))
        elif held.ifname in managed_names and held.network_name == selection.qualified_name:
            matched.add(held.ifname)
        else:
            conflicts.append((index, selection, held))
    # An interface name one selection asks for is that selection's: a nameless selection does not
    # take the attachment holding it (even its own NAD's, which a named one of that NAD matched
    # already), so an attachment of another network under that name is re-attached under a
    # generated name. The annotation's owner chose the name; the nameless one has no say in it.
    claimed = {ifname for ifname, networks in naming.items() if len(networks) == 1}
    for index, selection in enumerate(selections):
        if selection.interface:
            continue
        candidate = next(
            (
                a
                for a in managed
                if a.ifname in managed_names
                and a.ifname not in matched
                and a.ifname not in claimed
                and a.network_name == selection.qualified_name
            ),
            None,
        )
        if candidate is not None:
            matched.add(candidate.ifname)
        elif counts[selection.qualified_name] > 1:
            refused.append(
                Refusal(
                    selection.qualified_name,
                    "",
                    CniError(
                        ErrorCode.INVALID_NETWORK_CONFIG,
                        f"network {selection.qualified_name} is selected more than once: "
                        "an interface name is needed to tell its attachments apart",
                        'name the interface of each selection ("<nad>@<ifname>" or "interface")',
                    ),
                )
            )
        else:
            adds.append((index, selection, ""))
    removals = [a for a in reversed(managed) if a.ifname not in matched]
    removed = {a.ifname for a in removals}
    for index, selection, held in conflicts:
        if held.ifname in removed:  # its name is freed first: removals run before additions
            adds.append((index, selection, selection.interface))
            continue
        refused.append(
            Refusal(
                selection.qualified_name,
                selection.interface,
                CniError(
                    ErrorCode.INVALID_NETWORK_CONFIG,
                    f'interface "{selection.interface}" is already used by network "{held.network_name}"',
                    f"network {selection.qualified_name} cannot be added under that name",
                ),
            )
        )
    return Changes(
        add=_named(
            record,
            [(s, i) for _, s, i in sorted(adds, key=lambda a: a[0])],
            present=present,
            reserved=refused_names,
        ),
        remove=tuple(removals),
        refused=tuple(refused),
    )


def _requested_twice(ifname: str, networks: Sequence[str]) -> Refusal:
    """The refusal of an interface name more than one selection names (ADD's refusal of the same
    annotation, ``networks.check_unique_ifnames``)."""
    return Refusal(
        networks[0],
        ifname,
        CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f'interface name "{ifname}" requested twice',
            f"networks {networks[0]!r} and {networks[1]!r} both use it",
        ),
    )


def _named(
    record: SandboxRecord,
    adds: Sequence[tuple[sel.NetworkSelection, str]],
    *,
    present: Collection[str],
    reserved: Collection[str],
) -> tuple[tuple[sel.NetworkSelection, IfName], ...]:
    """Each addition with its interface: the one it names, else ``net<n>`` for the next free n
    (neither recorded, even by an attachment being removed, nor ``present`` in the netns, nor
    ``reserved``: named by refused selections, whose owner means them for those)."""
    taken = {a.ifname for a in record.attachments}
    taken.update(reserved)
    taken.update(present)
    taken.update(ifname for _, ifname in adds if ifname)
    position = max((a.position for a in record.attachments), default=0)
    named: list[tuple[sel.NetworkSelection, IfName]] = []
    for selection, ifname in adds:
        if not ifname:
            position += 1
            while f"net{position}" in taken:
                position += 1
            ifname = f"net{position}"
            taken.add(ifname)
        named.append((selection, IfName(ifname)))
    return tuple(named)


class OrderedStatusPublisher:
    """A ``StatusPublisher`` whose network-status writes of one pod take turns: the engine's (an
    ADD's) and the reconciler's. With ``hotplugNetworks`` the engine and the reconciler share one
    (``app.daemon.wiring``).

    The reconciler writes through ``publish_if``: what to write is decided inside the pod's turn,
    so a newer sandbox whose ADD began before that is seen (and the write dropped), and one whose
    ADD begins after it writes after it. An older sandbox's interfaces can thus never overwrite
    the status a newer sandbox's ADD wrote, whichever write the API server takes longer over.
    """

    def __init__(self, publisher: StatusPublisher) -> None:
        self._publisher = publisher
        self._turns = SandboxLocks()  # keyed by pod, not container ID; same lifetime rules

    async def publish_network_status(self, pod: PodRecord, status_json: str) -> bool:
        async with self._turns.hold(status_retries.pod_key(pod)):
            return await self._publisher.publish_network_status(pod, status_json)

    async def publish_if(
        self,
        pod: PodRecord,
        compose: Callable[[], Awaitable[str | None]],
        *,
        then: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """In the pod's turn, write what ``compose`` returns; nothing when it returns None. Once the
        write is done, and still in the turn, await ``then``: what must follow the write before any
        other write of the pod (also when there was no pod to write to: nothing is left to write).
        Return whether anything was written."""
        async with self._turns.hold(status_retries.pod_key(pod)):
            status_json = await compose()
            if status_json is None:
                return False
            written = await self._publisher.publish_network_status(pod, status_json)
            if then is not None:
                await then()
            return written

    def emit_interface_events(self, pod: PodRecord, events: Sequence[InterfaceEvent]) -> None:
        self._publisher.emit_interface_events(pod, events)


@dataclass(frozen=True, slots=True)
class ReconcilerSettings:
    backoff_initial: float = 1.0
    """Delay before the first retry of a pod whose annotation could not be satisfied."""
    backoff_max: float = 60.0
    """Retries back off exponentially up to this many seconds."""
    busy_retry: float = 0.2
    """Delay before looking again at a sandbox another operation holds."""
    resync_interval: float = 60.0
    """Every running pod is reconciled again this often, whatever the mirror reported (closes the
    window where a runtime ADD read the annotation just before it changed)."""
    refused_backoff_max: float = status_retries.REFUSED_MAX_DELAY
    """A network-status write the API server refuses for good (403: RBAC missing) is sent again
    after a delay doubling from ``backoff_initial`` up to this many seconds; no pass (a resync, a
    pod event) sends it sooner."""


RefusalKey = tuple[str, str, str, str]
"""A refusal as met in one sandbox: container ID, network, interface ("" when none), message."""


@dataclass
class _Retry:
    failures: int
    last_error: str
    warned: frozenset[str] = frozenset()
    """The Warning events (messages) the pod's last pass posted: a retry that fails the same way
    posts none of them again."""
    refused: frozenset[RefusalKey] = frozenset()
    """The refusals the pod's last pass met: recorded in the history (and announced) when first
    met, not again while every pass meets them."""
    awaits_change: bool = False
    """Only refusals were left, which only an edit of the annotation clears: no timer retries the
    pod; its next event (or the resync) does."""
    networks: str | None = None
    """The pod's ``k8s.v1.cni.cncf.io/networks`` annotation as the failed pass read it (None: the
    pass read none): an edit of it starts the backoff afresh, the failures of what the pod asked
    before not counted against what it asks now."""


@dataclass(frozen=True, slots=True)
class _Refusal:
    """The API server refused a pod's network-status write for good (``StatusWriteRefusedError``)."""

    reason: str
    """What it answered (logged once: a refusal with the same reason is not logged again)."""
    times: int
    """Writes refused in a row."""
    resend_at: float
    """Before this (monotonic), no pass sends the write again."""
    error: CniError
    """What each pass of the pod returns until then."""


class _StatusRefusedError(CniError):
    """A pass's error when only its network-status write is left, refused for good: the pod is
    looked at again when the refusal's backoff ends (``_Refusal.resend_at``), not sooner."""


class HotplugReconciler:
    """Reconciles the ``networks`` annotation of this node's running pods with their checkpoints.

    ``pod_changed`` (called for every pod the mirror writes, never blocking) queues the pod, and so
    does ``sandbox_added`` (called after each ADD: a change that came while the ADD ran and before
    it recorded its sandbox found nothing to reconcile then); ``run`` works the queue one sandbox at
    a time, in arrival order, and queues every pod that has a running sandbox at start (changes
    made while the daemon was down) and every ``resync_interval``. Each pod is read from the mirror
    as it is, never waited for nor asked of the API: one the mirror lacks (deleted, its sandbox not
    DELed yet) is done at once, and a pod the watch brings later is queued by its commit. A pod
    whose sandbox another operation holds is looked at again shortly; one that cannot be satisfied
    is retried with exponential backoff, unless all that is left are refusals only an edit of its
    annotation clears (``Changes.refused``, an annotation that does not parse): such a pod waits
    for its next change (or the resync), and a refusal met again on the pod's next pass is neither
    recorded in the history nor announced again; ``pending`` says which pods wait and why. A
    network-status write the API server refuses for good (403) backs off to
    ``refused_backoff_max`` (minutes) and is logged once per pod and reason, as the ADD's
    background retries do it. At start, every pod with a running sandbox has its network-status
    written once from the checkpoint (what a previous daemon attached or detached may not have
    reached the annotation).
    """

    def __init__(
        self,
        *,
        engine: AttachEngine,
        resolver: NetworkResolver,
        pods: status_retries.PodMirror,
        conf: MultusNetConf,
        status: OrderedStatusPublisher | None = None,
        events: PodEvents | None = None,
        settings: ReconcilerSettings | None = None,
    ) -> None:
        self._engine = engine
        self._resolver = resolver
        self._pods = pods
        self._conf = conf
        self._status = status
        self._events = events
        self._settings = settings or ReconcilerSettings()
        self._queue: dict[ObjectKey, None] = {}
        self._due: dict[ObjectKey, float] = {}
        self._retries: dict[ObjectKey, _Retry] = {}
        self._warned_before: frozenset[str] = frozenset()
        self._warned_now: set[str] = set()
        """The Warning events of the pass in hand: those of the pod's previous pass, and its own."""
        self._refused_before: frozenset[RefusalKey] = frozenset()
        self._refused_now: set[RefusalKey] = set()
        """The refusals of the pass in hand: those of the pod's previous pass, and its own."""
        self._networks_now: str | None = None
        """The networks annotation the pass in hand read (None until it reads one)."""
        self._unpublished: set[ObjectKey] = set()
        """Pods whose network-status write failed after a change, or whose status a previous daemon
        may have left unwritten: written (again) on their next pass."""
        self._refusals: dict[ObjectKey, _Refusal] = {}
        """Pods whose last network-status write the API server refused for good."""
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._resync_at = 0.0
        self.passes = 0
        """Pods reconciled so far (tests wait on it)."""
        self.deferred = 0
        """Times a pod was put back because another operation held its sandbox."""

    @property
    def pending(self) -> Mapping[ObjectKey, str]:
        """Pods whose annotation is not satisfied yet, with the last error."""
        return {key: retry.last_error for key, retry in self._retries.items()}

    def pod_changed(self, namespace: str, name: str) -> None:
        """Queue pod ``namespace/name`` for reconciliation; never blocks."""
        self._queue[(namespace, name)] = None
        self._wake.set()

    def sandbox_added(self, namespace: str, name: str) -> None:
        """An ADD of pod ``namespace/name`` finished (``AttachEngine.on_sandbox_added``): queue the
        pod, whose annotation may have changed after the ADD read it. Before the ADD recorded its
        sandbox, a pass for that change found none to reconcile; never blocks."""
        if name:
            self.pod_changed(namespace, name)

    async def resync(self) -> None:
        """Queue every pod that has a running sandbox on this node."""
        for summary in await self._engine.sandbox_summaries():
            if summary.state == "ready" and summary.pod.name:
                self.pod_changed(summary.pod.namespace, summary.pod.name)

    def stop(self) -> None:
        """Make ``run`` return once the pod in hand (if any) is reconciled."""
        self._stopping.set()
        self._wake.set()

    async def run(self, *, ready: Callable[[], Awaitable[None]] | None = None) -> None:
        """Reconcile queued pods (after ``ready``, e.g. the mirror's first sync) until ``stop``."""
        if ready is not None and not await self._ready_or_stopped(ready()):
            return
        await self._inherit_statuses()
        while (key := await self._next()) is not None:
            await self._reconcile_key(key)

    async def _inherit_statuses(self) -> None:
        """Have every running pod's network-status written once from its checkpoint: a daemon
        stopped between a hot-plug's commit and its status write (or while that write was retried)
        left the annotation stale, and with nothing left to attach no later pass would write it.
        The start-up resync queues these pods; an unchanged value is a no-op write."""
        for summary in await self._engine.sandbox_summaries():
            if summary.state == "ready" and summary.pod.name:
                self._unpublished.add((summary.pod.namespace, summary.pod.name))

    async def _ready_or_stopped(self, ready: Awaitable[None]) -> bool:
        waiting = asyncio.ensure_future(ready)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, stopping):
                task.cancel()
            await asyncio.gather(waiting, stopping, return_exceptions=True)
        return not self._stopping.is_set()

    async def _next(self) -> ObjectKey | None:
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= self._resync_at:
                self._resync_at = now + self._settings.resync_interval
                await self.resync()
            for key, due in list(self._due.items()):
                if due <= now:
                    del self._due[key]
                    self._queue[key] = None
            if self._queue:
                key = next(iter(self._queue))
                del self._queue[key]
                return key
            self._wake.clear()
            delay = min([*self._due.values(), self._resync_at]) - now
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
        return None

    async def _reconcile_key(self, key: ObjectKey) -> None:
        previous = self._retries.get(key)
        self._warned_before = previous.warned if previous is not None else frozenset()
        self._warned_now = set()
        self._refused_before = previous.refused if previous is not None else frozenset()
        self._refused_now = set()
        self._networks_now = None
        try:
            error, retried = await self._reconcile(*key)
        except _SandboxBusyError:
            self.deferred += 1
            self._due[key] = time.monotonic() + self._settings.busy_retry
            return
        except Exception as exc:  # one pod's surprise must not stop the others
            log.exception("hot-plug of pod %s/%s failed", *key)
            error = retried = as_cni_error(exc)
        self.passes += 1
        if error is None:
            self._retries.pop(key, None)
        else:
            # a pod waiting for an edit starts its backoff afresh once a retry is due again, and so
            # does a pod whose annotation was edited since its last failed pass
            edited = previous is not None and previous.networks != self._networks_now
            retry = _Retry(
                (previous.failures if previous is not None and not edited else 0) + 1
                if retried is not None
                else 0,
                f"{error.msg}: {error.details}" if error.details else error.msg,
                frozenset(self._warned_now),
                frozenset(self._refused_now),
                awaits_change=retried is None,
                networks=self._networks_now,
            )
            self._retries[key] = retry
            refusal = self._refusals.get(key)
            if retried is None:
                # Only an edit of the annotation can clear it: that edit's pod event (or the
                # resync) looks again, and a pass meeting the same refusals records nothing.
                self._due.pop(key, None)
                if previous is None or not previous.awaits_change or previous.last_error != retry.last_error:
                    log.warning(
                        "hot-plug of pod %s/%s waits for a change of its annotation: %s",
                        *key,
                        retry.last_error,
                    )
            elif isinstance(retried, _StatusRefusedError) and refusal is not None:
                # Nothing but the refused write is left: it is sent again once its backoff ends
                # (logged by _publish, once per reason).
                self._due[key] = refusal.resend_at
            else:
                delay = status_retries.doubled_delay(
                    self._settings.backoff_initial, retry.failures, cap=self._settings.backoff_max
                )
                self._due[key] = time.monotonic() + delay
                reason = f"{retried.msg}: {retried.details}" if retried.details else retried.msg
                log.warning("hot-plug of pod %s/%s retried in %.1f s: %s", *key, delay, reason)
        metrics.HOTPLUG_PENDING.set(len(self._retries))

    async def reconcile(self, namespace: str, name: str) -> CniError | None:
        """Bring pod ``namespace/name``'s running sandbox in line with its annotation once; return
        the first error that leaves the annotation unsatisfied (None when satisfied)."""
        error, _ = await self._reconcile(namespace, name)
        return error

    async def _reconcile(self, namespace: str, name: str) -> tuple[CniError | None, CniError | None]:
        """``reconcile``'s error, and the first error a timer is to retry: None when only refusals
        are left (an annotation that does not parse, a selection ``plan_changes`` refuses), which
        no retry clears, only an edit of the annotation, whose pod event queues the pod (so does
        the resync). A delegate's failure, a NAD not found, a status write are retried."""
        pod = await self._pods.mirrored_pod(namespace, name)
        if pod is None:
            self._forget_status((namespace, name))
            return None, None
        record = await self._running_sandbox(pod)
        if record is None:
            self._forget_status((namespace, name))
            return None, None
        base = self._request(record, pod)
        started = time.monotonic()
        self._networks_now = pod.annotations.get(NETWORKS_ANNOTATION, "")
        try:
            selections = sel.parse_networks(
                self._networks_now,
                pod_namespace=pod.namespace,
                max_networks=self._conf.max_networks_per_pod,
            )
        except CniError as err:
            if self._first_refusal(record.container_id, Refusal("", "", err)):
                # no interface: the sandbox's CNI_IFNAME is the cluster network's, not refused
                request = _with(base, command=Command.ADD, ifname="")
                await self._engine.record_request_error(request, err, started=started)
                self._event(
                    pod, FAILED_ADDING, f"pod [{namespace}/{name}]: invalid network selection: {err.msg}"
                )
                metrics.HOTPLUG_OPERATIONS.labels("native", "ADD", "error").inc()
            return err, None
        default_networks = self._default_networks(record, pod)
        changes = plan_changes(record, selections, default_networks=default_networks)
        if any(not selection.interface for selection, _ in changes.add):  # a net<n> name is generated
            changes = plan_changes(
                record, selections, default_networks=default_networks, present=await _links(record)
            )
        if not changes.add and not changes.remove and not changes.refused:
            if (namespace, name) in self._unpublished:
                written = await self._publish(record.container_id, pod)
                return written, written
            return None, None
        if _namespace_gone(record, boot_id=self._engine.boot_id):
            self._gone(pod, record.container_id, why="its network namespace is gone")
            return None, None
        refused: list[CniError] = [
            await self._refuse(base, pod, r) if self._first_refusal(record.container_id, r) else r.error
            for r in changes.refused
        ]
        errors: list[CniError | None] = []
        changed = False
        for attachment in changes.remove:
            error = await self._detach(base, pod, attachment)
            if isinstance(error, _Gone):
                self._gone(pod, record.container_id, why="it is no longer running")
                return None, None
            changed = changed or error is None
            errors.append(error)
        for selection, ifname in changes.add:
            error = await self._attach(base, pod, selection, ifname)
            if isinstance(error, _Gone):
                self._gone(pod, record.container_id, why="it is no longer running")
                return None, None
            changed = changed or error is None
            errors.append(error)
        if changed or (namespace, name) in self._unpublished:
            errors.append(await self._publish(record.container_id, pod))
        retried = next((error for error in errors if error is not None), None)
        return next(iter(refused), retried), retried

    def _first_refusal(self, container_id: str, refusal: Refusal) -> bool:
        """Count ``refusal`` of sandbox ``container_id`` among the pass's; True unless the pod's
        previous pass met it already (then it was recorded and announced: an unchanged annotation
        is refused the same way on each pod event and resync, for as long as the pod lives)."""
        key = (container_id, refusal.network, refusal.ifname, refusal.error.msg)
        self._refused_now.add(key)
        return key not in self._refused_before

    def _gone(self, pod: PodRecord, container_id: str, *, why: str) -> None:
        """The sandbox stopped running, before its hot-plug or while it was under way (the runtime's
        DEL took its lock in between, or its network namespace went: ``_namespace_gone``): nothing
        is left to change, announce or retry. The pod's next sandbox, if it gets one, is looked at
        after its ADD (``sandbox_added``), which attaches what the annotation names then."""
        log.info(
            "hot-plug of pod %s/%s given up: sandbox %s: %s",
            pod.namespace,
            pod.name,
            container_id,
            why,
        )
        self._forget_status((pod.namespace, pod.name))

    async def _stopped_running(self, container_id: str) -> bool:
        """Whether sandbox ``container_id`` has stopped running: no longer recorded ``ready``, or
        its network namespace is gone (``_namespace_gone``)."""
        record = await self._engine.load_sandbox(container_id)
        return (
            record is None or record.state != "ready" or _namespace_gone(record, boot_id=self._engine.boot_id)
        )

    def _forget_status(self, key: ObjectKey) -> None:
        """The pod is gone or runs no sandbox: no status of it is left to write."""
        self._unpublished.discard(key)
        self._refusals.pop(key, None)

    def _default_networks(self, record: SandboxRecord, pod: PodRecord) -> int:
        """How many ``defaultNetworks`` attachments the sandbox's ADD made, as recorded with it; for a
        sandbox recorded before revision 0007 (None), what today's config would give the pod."""
        if record.default_networks is not None:
            return record.default_networks
        if pod.namespace in self._conf.system_namespaces:
            return 0
        return len(self._conf.default_networks)

    async def _running_sandbox(self, pod: PodRecord) -> SandboxRecord | None:
        """The pod's newest ``ready`` sandbox; ``_SandboxBusyError`` while an operation holds any of
        its sandboxes (an ADD in flight may have read the annotation before this change)."""
        summaries = await self._pod_sandboxes(pod)
        busy = next((s.container_id for s in summaries if self._engine.locks.busy(s.container_id)), None)
        if busy is not None:
            raise _SandboxBusyError(busy)
        ready = [s for s in summaries if s.state == "ready"]
        if not ready:
            return None
        record = await self._engine.load_sandbox(ready[-1].container_id)
        return record if record is not None and record.state == "ready" else None

    async def _pod_sandboxes(self, pod: PodRecord) -> list[SandboxSummary]:
        """The sandboxes recorded for ``pod`` (not for a predecessor of another UID), oldest first.

        Without the static pod exception GC and the pod source make (a static pod's mirror pod has
        another UID than the runtime's ``K8S_POD_UID``), on purpose: a static pod is never
        hot-plugged. The kubelet runs it from its manifest, and its mirror pod can be seen through
        the API but not used to control it (Kubernetes documentation, "Static Pods"): an edited
        mirror annotation changes nothing the kubelet runs, and an edited manifest makes the
        kubelet replace the pod, whose new sandbox's ADD attaches the networks it names.

        A sandbox the runtime named by name only (no ``K8S_POD_UID``, as older runtimes send) is
        the pod's whose UID its delegates were given (``SandboxRecord.pod_uid_given``): without it, a pod
        recreated under its name (a StatefulSet's, force-deleted) took its predecessor's sandbox,
        still recorded until the runtime's DEL, for its own: its networks were hot-plugged there,
        and that sandbox's network-status written on the new pod."""
        sandboxes = []
        for summary in await self._engine.sandboxes_of_pod(pod.namespace, pod.name):
            uid = summary.pod.uid
            if not uid and pod.uid:
                record = await self._engine.load_sandbox(summary.container_id)
                uid = record.pod_uid_given() if record is not None else ""
            if not (uid and pod.uid and uid != pod.uid):
                sandboxes.append(summary)
        return sandboxes

    def _request(self, record: SandboxRecord, pod: PodRecord) -> SandboxRequest:
        uid = record.pod.uid or pod.uid
        return SandboxRequest(
            command=Command.ADD,
            container_id=ContainerId(record.container_id),
            netns=record.netns,
            ifname=IfName(record.ifname),
            cni_args=(
                ("IgnoreUnknown", "1"),
                ("K8S_POD_NAMESPACE", pod.namespace),
                ("K8S_POD_NAME", pod.name),
                ("K8S_POD_INFRA_CONTAINER_ID", record.container_id),
                ("K8S_POD_UID", uid),
            ),
            pod=record.pod,
            conf=self._conf,
            trigger=Trigger.HOTPLUG,
        )

    async def _refuse(self, base: SandboxRequest, pod: PodRecord, refusal: Refusal) -> CniError:
        """Record and announce ``refusal``: its history line names the interface the selection
        names, none for a nameless one (not the sandbox's ``CNI_IFNAME``, the cluster network's)."""
        request = _with(base, command=Command.ADD, ifname=refusal.ifname)
        await self._engine.record_request_error(request, refusal.error, started=time.monotonic())
        interface = f"interface {refusal.ifname}" if refusal.ifname else "an interface"
        self._event(
            pod,
            FAILED_ADDING,
            f"pod [{pod.namespace}/{pod.name}]: failed adding {interface} to network: "
            f"{_bare(refusal.network)}: {refusal.error.msg}",
        )
        metrics.HOTPLUG_OPERATIONS.labels("native", "ADD", "error").inc()
        return refusal.error

    async def _detach(
        self, base: SandboxRequest, pod: PodRecord, attachment: AttachmentRecord
    ) -> CniError | _Gone | None:
        """Hot-unplug ``attachment``; its error, ``_GONE`` when the sandbox stopped running before
        it could (the runtime's DEL removed everything, or removes it: no RemovedInterface of
        ours), else None."""
        request = _with(base, command=Command.DEL, ifname=attachment.ifname)
        where = f"pod [{pod.namespace}/{pod.name}]"
        try:
            await self._engine.detach_delegate(request)
            if await self._stopped_running(base.container_id):
                return _GONE
        except CniError as err:
            self._event(
                pod,
                FAILED_REMOVING,
                f"{where}: failed removing interface {attachment.ifname} from network: "
                f"{_bare(attachment.network_name)}: {err.msg}",
            )
            metrics.HOTPLUG_OPERATIONS.labels("native", "DEL", "error").inc()
            return err
        self._event(
            pod,
            REMOVED,
            f"{where}: removed interface {attachment.ifname} from network: {_bare(attachment.network_name)}",
        )
        metrics.HOTPLUG_OPERATIONS.labels("native", "DEL", "ok").inc()
        return None

    async def _attach(
        self, base: SandboxRequest, pod: PodRecord, selection: sel.NetworkSelection, ifname: IfName
    ) -> CniError | _Gone | None:
        """Hot-plug ``selection`` as ``ifname``; its error, ``_GONE`` when the sandbox stopped
        running before it could (no FailedAddingInterface for a pod being deleted, nor for a
        sandbox whose namespace went: the engine's code 101, which a delegate may answer too, for
        its own reasons), else None. A hot-plug given up before any delegate ran for it writes no
        history line (the engine's refusal, ``SandboxNotRunningError``, is not recorded either),
        as none is written for a sandbox found stopped when the pass began: nothing was tried on
        a running sandbox, and its owner's annotation was not refused."""
        request = _with(base, command=Command.ADD, ifname=ifname)
        where = f"pod [{pod.namespace}/{pod.name}]"
        try:
            try:
                plan = await self._resolver.plan_hotplug(request, pod, selection, ifname=ifname)
            except CniError as err:
                if await self._stopped_running(base.container_id):
                    return _GONE
                await self._engine.record_request_error(request, err, started=time.monotonic())
                raise
            await self._engine.attach_delegate(request, plan)
        except CniError as err:
            if isinstance(err, SandboxNotRunningError) or await self._stopped_running(base.container_id):
                return _GONE
            if isinstance(err, NadNotFoundError):
                self._warn_not_found(pod, err)
            self._event(
                pod,
                FAILED_ADDING,
                f"{where}: failed adding interface {ifname} to network: {selection.name}"
                f"{_attributes(selection)}: {err.msg}",
            )
            metrics.HOTPLUG_OPERATIONS.labels("native", "ADD", "error").inc()
            return err
        self._event(
            pod,
            ADDED,
            f"{where}: added interface {ifname} to network: {selection.name}{_attributes(selection)}",
        )
        if selection.default_route:
            # A running pod's default route is not moved under it: its open connections use the
            # route it started with. The owner asked for it, so say it was not done.
            log.warning(
                "hot-plug of pod %s/%s: default-route %s of network %s not applied to %s",
                pod.namespace,
                pod.name,
                ",".join(selection.default_route),
                selection.qualified_name,
                ifname,
            )
            self._event(
                pod,
                DEFAULT_ROUTE_NOT_APPLIED,
                f"{where}: default-route {','.join(selection.default_route)} of network: "
                f"{selection.name} is not applied to interface {ifname} added to a running pod",
                warning=True,
            )
        metrics.HOTPLUG_OPERATIONS.labels("native", "ADD", "ok").inc()
        return None

    async def _publish(self, container_id: str, pod: PodRecord) -> CniError | None:
        """Write the pod's network-status from the checkpoint of sandbox ``container_id``, in the
        pod's turn with the ADDs' writes, unless it is no longer the pod's current sandbox. A failed
        write is remembered and returned, so the pod is retried (with backoff) until the annotation
        shows what is attached.

        The sandbox's lock is not held: the pod's turn alone orders the writes (what to write is
        read from the checkpoint inside it). Held across the PATCH (up to ``status_deadline``), it
        made the runtime's DEL of that sandbox wait on the API server, for nothing: no DEL edits
        the annotation, and a DEL that begins first makes this write moot (``_current_status``).
        Nor is it taken inside the turn: an ADD waits for the pod's turn holding its sandbox's
        lock, so that order could deadlock with a container ID ADDed again.

        A write that landed clears the sandbox's ``status_unwritten`` mark (its ADD's write failed),
        in the pod's turn right after the write (``StatusRetries.written_elsewhere`` says why that is
        safe), so that a restart does not write it once more.

        A write the API server refused for good (``StatusWriteRefusedError``: 403, RBAC missing)
        is not sent again before its backoff ends (``_refused``), whatever pass comes first (a
        resync, a pod event); a 429, a 5xx or no answer is sent again at the pod's next pass."""
        key = (pod.namespace, pod.name)
        self._unpublished.discard(key)
        if self._status is None:
            return None
        refusal = self._refusals.get(key)
        if refusal is not None and time.monotonic() < refusal.resend_at:
            self._unpublished.add(key)
            return refusal.error
        try:
            await self._status.publish_if(
                pod,
                partial(self._current_status, container_id, pod),
                then=partial(self._status_written, container_id),
            )
        except StatusWriteRefusedError as exc:
            self._unpublished.add(key)
            return self._refused(key, exc, previous=refusal)
        except ClusterUnavailableError as exc:
            self._refusals.pop(key, None)
            log.error("network-status of pod %s/%s not written: %s", pod.namespace, pod.name, exc)
            self._unpublished.add(key)
            return CniError(
                ErrorCode.TRY_AGAIN_LATER,
                f"network-status of pod {pod.namespace}/{pod.name} not written",
                str(exc),
            )
        self._refusals.pop(key, None)
        return None

    def _refused(
        self, key: ObjectKey, exc: StatusWriteRefusedError, *, previous: _Refusal | None
    ) -> CniError:
        """Remember a write refused for good: sent again after a delay doubling from
        ``backoff_initial`` up to ``refused_backoff_max``, logged only when the reason is new."""
        times = previous.times + 1 if previous is not None else 1
        delay = status_retries.doubled_delay(
            self._settings.backoff_initial, times, cap=self._settings.refused_backoff_max
        )
        reason = str(exc)
        if previous is None or previous.reason != reason:
            status_retries.log_refusal(log, *key, reason, self._settings.refused_backoff_max)
        error = _StatusRefusedError(
            ErrorCode.TRY_AGAIN_LATER, f"network-status of pod {key[0]}/{key[1]} refused", reason
        )
        self._refusals[key] = _Refusal(reason, times, time.monotonic() + delay, error)
        return error

    async def _status_written(self, container_id: str) -> None:
        """Sandbox ``container_id``'s network-status landed: clear its mark, if the engine keeps any
        (its background retries set it when an ADD's write failed)."""
        retries = self._engine.status_retries
        if retries is not None:
            await retries.written_elsewhere(container_id=container_id)

    async def _current_status(self, container_id: str, pod: PodRecord) -> str | None:
        """network-status of sandbox ``container_id`` as recorded, or None when it is not the pod's
        current sandbox any more: gone, no longer ``ready``, or a newer one is recorded that is being
        added or runs (its ADD writes the pod's status)."""
        summaries = await self._pod_sandboxes(pod)
        ids = [s.container_id for s in summaries]
        if container_id not in ids or any(
            s.state != "deleting" for s in summaries[ids.index(container_id) + 1 :]
        ):
            return None
        record = await self._engine.load_sandbox(container_id)
        if record is None or record.state != "ready":
            return None
        # No entry to show (no delegate printed a sandbox interface): an empty list replaces the
        # pod's previous value, which may name interfaces detached since.
        return status_retries.recorded_status(record) or render([])

    def _warn_not_found(self, pod: PodRecord, missing: NadNotFoundError) -> None:
        """Upstream's ``NoNetworkFound`` Warning for a selected NAD that does not exist, posted as
        ``_event`` posts a Warning: not again while the pod's retries find it missing."""
        first = self._new_warning(f"{NO_NETWORK_FOUND}: {missing.namespace}/{missing.name}")
        if first and self._events is not None:
            self._events.emit_network_not_found(
                pod, namespace=missing.namespace, name=missing.name, error=missing.details
            )

    def _event(self, pod: PodRecord, reason: str, message: str, *, warning: bool | None = None) -> None:
        """Post an event, a Warning when ``warning`` says so (by default, when ``reason`` is a
        failure); a Warning the pod's previous pass posted already is not posted again (a
        pod that cannot be satisfied is retried for as long as it stays so, and each Event is a new
        object on the API server: one per retry per failure, for ever, otherwise)."""
        if warning is None:
            warning = reason.startswith("Failed")
        if warning and not self._new_warning(message):
            return
        if self._events is not None:
            self._events.emit_pod_event(pod, reason=reason, warning=warning, message=message)

    def _new_warning(self, seen: str) -> bool:
        """Count Warning ``seen`` among the pass's; True unless the pod's previous pass posted it."""
        self._warned_now.add(seen)
        return seen not in self._warned_before


def _namespace_gone(record: SandboxRecord, *, boot_id: str) -> bool:
    """True when sandbox ``record``'s network namespace is provably gone: the sandbox is of an
    earlier boot (``boot_id`` is today's), or its path holds no namespace, or another one than its
    ADD recorded (what the engine refuses a hot-plug of, code 101). Its runtime's DEL is still to
    come (spooled, say, while the daemon could not take it; GC collects one whose namespace is
    gone), and the pod's next sandbox's ADD attaches what the annotation names: neither a retry
    nor an event of a hot-plug into it would tell its owner anything true. A path that cannot be
    looked at proves nothing (it may hold the live pod's namespace), nor does a delegate's own
    code 101."""
    if record.boot_id and record.boot_id != boot_id:
        return True
    found = netns.look(record.netns)
    if found.state is netns.NetnsState.GONE:
        return True
    return (
        found.state is netns.NetnsState.PRESENT
        and bool(record.netns_id)
        and found.identity != record.netns_id
    )


async def _links(record: SandboxRecord) -> frozenset[str]:
    """The interface names in the sandbox's netns, which a generated name must avoid; none when
    the netns is gone or cannot be looked at. Either way no name is taken on that guess: the
    attach that follows lists them again under the sandbox's lock, and is refused, saying why
    (gone; or cannot be looked at, try again later: it may well be the live pod's, whose names
    are then checked before anything runs)."""
    try:
        return frozenset(await netns.list_links(record.netns))
    except (netns.NetnsGoneError, netns.NetnsUnreadableError):
        return frozenset()


class _Gone:
    """What a hot-plug step returns when its sandbox stopped running under it."""


_GONE = _Gone()


class _SandboxBusyError(Exception):
    """Another operation holds the sandbox: look again shortly, without counting a failure."""


def _with(request: SandboxRequest, *, command: Command, ifname: str) -> SandboxRequest:
    return SandboxRequest(
        command=command,
        container_id=request.container_id,
        netns=request.netns,
        ifname=IfName(ifname),
        cni_args=request.cni_args,
        pod=request.pod,
        conf=request.conf,
        trigger=request.trigger,
    )


def _bare(network_name: str) -> str:
    """The NAD's name without its namespace, as DNC's events show it."""
    return network_name.rpartition("/")[2]


def _attributes(selection: sel.NetworkSelection) -> str:
    """DNC's ``(ips: [...], mac: ..., cni-args: ...)`` suffix, when the selection asks for any."""
    if not selection.ips and not selection.mac and selection.cni_args is None:
        return ""
    cni_args = json.dumps(selection.cni_args, sort_keys=True) if selection.cni_args is not None else "map[]"
    return f"(ips: [{' '.join(selection.ips)}], mac: {selection.mac}, cni-args: {cni_args})"
