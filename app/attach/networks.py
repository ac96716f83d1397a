"""Network resolution: which delegates an ADD runs, in which order, under which interface names.

Called by the engine for ADD only; DEL, CHECK, recovery and GC replay the checkpoint instead.
The list is upstream's: the cluster network first, as the master delegate on the runtime's
``CNI_IFNAME`` (``v1.multus-cni.io/default-network`` on the pod, else ``clusterNetwork``, else the
first of ``delegates``), then ``defaultNetworks`` (not for pods in ``systemNamespaces``), then the
pod's ``k8s.v1.cni.cncf.io/networks`` selections. Every delegate but the master is named
``net<position>`` unless its selection names an interface.

A network reference (``clusterNetwork``, ``defaultNetworks``) is a path (file or directory), or a
name: a NetworkAttachmentDefinition in ``multusNamespace`` first, then a conf file in ``confDir``.
Annotation selections name NADs only; a NAD with an empty ``spec.config`` stands for the conf file
of its name in ``confDir``. ``namespaceIsolation`` holds both annotations to the pod's namespace and
``globalNamespaces``, the default-network annotation also to ``multusNamespace`` (upstream leaves
that annotation unchecked). The ``default-route`` gateways of both annotations count together: more
than one of an address family is refused (upstream's ECMP error). A NAD the mirror lacks (and, for
a reference, no conf file of its name) is asked of the API once before the ADD fails
(``NadSource.fetch_nad``): one created just before its pod may not be mirrored yet; a NAD in the
mirror costs no request.

Each delegate's CNI_ARGS, runtimeConfig (capability args), ``args.cni`` and device ID are decided
here and baked into the configuration bytes the engine records before running it, as is the
whole chain of a conf file (a conflist's ``<dir>/<name>/*.conf`` plugins) and the
``auxiliaryCNIChainName`` delegate appended last (``app.attach.disk_chains``). Errors are CNI
errors naming the network (code 7 for configuration, 11 when the Kubernetes API or the kubelet
cannot answer). No side effect: a device-plugin device's device-info file is to be copied to the
delegate's ``CNIDeviceInfoFile`` (``app.attach.device_info``), which the recorded runtimeConfig
names, so the teardown removes it; the resolution lists those copies and the engine makes them
(``Resolution.stage_device_info``) only once the intents naming the files are committed, so a
refused ADD (preflight, a sandbox already attached) never writes or overwrites one.

What one ADD may make the daemon hold and run is bounded before anything is recorded or run
(code 7 naming the network, the field and the bound): a NAD's ``spec.config`` and conflist
(``app.attach.nad_config``), the plugins of every network (``nad_config.MAX_PLUGINS``), the bytes
of all the ADD's delegate configurations together (``MAX_ADD_CONFIG_BYTES``, charged as each
network resolves, so a refused ADD holds at most that much), and a conf file's size
(``MAX_CONF_FILE_BYTES``, read from its ``stat`` before it is read). A conf file is read and
parsed once per (mtime, size), also when it is refused: an unchanged broken file is not read again.

Static mode (no Kubernetes configured) passes no ``ClusterSources``: pods, NADs and annotations
are then out of reach, and only conf files resolve.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

from app.attach import delegate_inputs, device_info, disk_chains, nad_config
from app.attach import selection as sel
from app.attach.cluster import (
    DEFAULT_NETWORK_ANNOTATION,
    NETWORKS_ANNOTATION,
    ClusterUnavailableError,
    NadSource,
    NetworkEvents,
    PodSource,
)
from app.attach.devices import (
    DeviceAllocator,
    DeviceDataError,
    DeviceLookupError,
    DeviceSource,
    build_allocator,
)
from app.attach.netconf import MultusNetConf
from app.attach.requests import SandboxRequest
from app.cni import conf as cniconf
from app.cni.types import CniError, ErrorCode, IfName, NetworkConfigList
from app.store.mirror_records import NadRecord, PodRecord

log = logging.getLogger(__name__)

POD_ARG_KEYS = ("K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID")

MAX_ADD_CONFIG_BYTES: Final = 8 * 1024 * 1024
"""Bytes of all of one ADD's delegate configurations (what its intents record). 256 networks of
32 KiB each, ten times a real NAD; without it 256 NADs of ``nad_config.MAX_CONFIG_BYTES`` would
be 32 MiB in one commit, held several times over (parsed, stdin, the checkpoint row)."""

MAX_CONF_FILE_BYTES: Final = cniconf.MAX_CONF_FILE_BYTES
"""Bytes of one conf file an admin writes (``confDir``, ``clusterNetwork``): checked on its
``stat``, so a huge file is never read on the event loop (real ones are well under 10 KiB), and
again while it is read (``cniconf.read_regular_file``)."""


_conf_dir_readings: ContextVar[dict[str, cniconf.ConfDirReading] | None] = ContextVar(
    "conf_dir_readings", default=None
)
"""The ``confDir`` readings of the resolution running in this task (None: outside ``resolve``): a
request naming N networks of ``confDir`` lists it once and loads each file once, not N times."""


@dataclass(frozen=True, slots=True)
class DelegatePlan:
    """One delegate of an ADD, fully decided: what runs, as which interface, with which inputs."""

    position: int
    network_name: str
    net: NetworkConfigList
    ifname: IfName
    is_master: bool
    cni_args: tuple[tuple[str, str], ...]
    capability_args: Mapping[str, Any]
    default_route: tuple[str, ...] = ()
    """Gateways the pod asked this network to carry its default route(s) through."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """What an ADD will run, and the pod it runs for (None in static mode)."""

    plans: list[DelegatePlan]
    pod: PodRecord | None = None
    default_networks: int = 0
    """How many of ``plans`` are ``defaultNetworks`` (those right after the cluster network's; none
    for a pod in ``systemNamespaces``), recorded with the sandbox for hot-plug."""
    device_info_dir: str = device_info.DEFAULT_DIR
    device_plugin_copies: tuple[tuple[str, str, str], ...] = ()
    """(resource, device id, CNIDeviceInfoFile) of each delegate given a device-plugin device."""

    def stage_device_info(self) -> None:
        """Copy the device plugins' device-info files to the delegates' ``CNIDeviceInfoFile``: only
        after the intents naming those files are committed (else nothing would ever remove them)."""
        for resource, device_id, cni_path in self.device_plugin_copies:
            device_info.stage_from_device_plugin(
                base_dir=self.device_info_dir, resource=resource, device_id=device_id, cni_path=cni_path
            )


@dataclass(frozen=True, slots=True)
class ClusterSources:
    """The Kubernetes side, as the engine sees it (implemented by the watch package)."""

    pods: PodSource
    nads: NadSource
    devices: DeviceSource | None = None
    events: NetworkEvents | None = None
    """Where a NAD lookup miss is reported (upstream's ``NoNetworkFound`` Warning on the pod)."""


@dataclass(frozen=True, slots=True)
class _Network:
    name: str
    """The name network-status shows: ``<ns>/<nad>`` for NADs, the conf's ``name`` for files."""
    net: NetworkConfigList
    selection: sel.NetworkSelection | None = None
    resource_name: str = ""
    where: str = ""
    """How errors name its configuration: ``network-attachment-definition <ns>/<name>: spec.config``
    for a NAD's, else ``network "<name>"``."""

    def described(self) -> str:
        return self.where or f'network "{self.name}"'


@dataclass
class _Decided:
    """A network's delegate inputs once the device id and the selection's requests are applied."""

    net: NetworkConfigList
    cni_args: tuple[tuple[str, str], ...]
    capability_args: dict[str, Any] = field(default_factory=dict)
    device_plugin_copy: tuple[str, str, str] | None = None
    """(resource, device id, CNIDeviceInfoFile) when the device plugin's device-info file is to be copied."""


class _ConfigBudget:
    """The running total of an ADD's delegate configuration bytes, charged network by network."""

    def __init__(self) -> None:
        self.total = 0

    def charge(self, network: _Network) -> None:
        nad_config.check_plugin_count(len(network.net.plugins), where=network.described())
        self.total += len(network.net.raw)
        check_add_config_bytes(self.total, where=network.described())


FILE_CACHE_PRUNE_AT = 64
"""Parsed conf files the resolver keeps before it first looks for removed ones among them."""


class NetworkResolver:
    """Resolves a request's networks from conf files and, when given, the Kubernetes mirror.

    Parsed files are cached by (mtime, size), so a request costs a directory listing and a stat
    per file, not a parse; an edited file is reloaded.
    """

    def __init__(
        self, *, cluster: ClusterSources | None = None, device_info_dir: str = device_info.DEFAULT_DIR
    ) -> None:
        self._cluster = cluster
        self._device_info_dir = device_info_dir
        self._file_cache: dict[str, tuple[tuple[int, int], NetworkConfigList | CniError]] = {}
        self._file_cache_prune_at = FILE_CACHE_PRUNE_AT

    @property
    def kubernetes(self) -> bool:
        return self._cluster is not None

    async def resolve(self, request: SandboxRequest) -> Resolution:
        readings = _conf_dir_readings.set({})
        try:
            return await self._resolve(request)
        finally:
            _conf_dir_readings.reset(readings)

    async def _resolve(self, request: SandboxRequest) -> Resolution:
        pod = await self._pod(request)
        networks, default_networks = await self._networks(request, pod)
        allocator = await self._allocator(networks, pod)
        pod_uid = pod.uid if pod is not None else ""
        master_args = delegate_cni_args(request.cni_args, master=True, pod_uid=pod_uid)
        other_args = delegate_cni_args(request.cni_args, master=False, pod_uid=pod_uid)
        plans = []
        staging: list[tuple[str, str, str]] = []
        decided_bytes = 0
        for position, network in enumerate(networks):
            ifname = self._ifname(network, position, request)
            base_args = master_args if position == 0 else other_args
            decided = self._decide(network, position, base_args, request, allocator, ifname=ifname)
            decided_bytes += len(decided.net.raw)  # the selection's cni-args and device id added
            check_add_config_bytes(decided_bytes, where=network.described())
            if decided.device_plugin_copy is not None:
                staging.append(decided.device_plugin_copy)
            plans.append(
                DelegatePlan(
                    position=position,
                    network_name=network.name,
                    net=decided.net,
                    ifname=ifname,
                    is_master=position == 0,
                    cni_args=decided.cni_args,
                    capability_args=decided.capability_args,
                    default_route=network.selection.default_route if network.selection else (),
                )
            )
        check_unique_ifnames(plans)
        return Resolution(
            plans=plans,
            pod=pod,
            default_networks=default_networks,
            device_info_dir=self._device_info_dir,
            device_plugin_copies=tuple(staging),
        )

    # ---- the pod ------------------------------------------------------------------------------

    async def _pod(self, request: SandboxRequest) -> PodRecord | None:
        if self._cluster is None or not request.pod.name:
            return None
        where = f"{request.pod.namespace}/{request.pod.name}"
        try:
            pod = await self._cluster.pods.get_pod(
                request.pod.namespace, request.pod.name, uid=request.pod.uid
            )
        except ClusterUnavailableError as exc:
            raise CniError(
                ErrorCode.TRY_AGAIN_LATER, f"cannot read pod {where} from the Kubernetes API", str(exc)
            ) from exc
        if pod is None:
            raise CniError(
                ErrorCode.TRY_AGAIN_LATER,
                f"pod {where} not found",
                "neither the pod mirror nor a live GET knows it; nothing was attached",
            )
        if not pod.is_pod_of(request.pod.uid):
            raise CniError(
                ErrorCode.UNKNOWN_CONTAINER,
                f'expected pod UID "{request.pod.uid}" but got "{pod.uid}" from Kube API',
                f"pod {where} was replaced; this sandbox belongs to its predecessor",
            )
        return pod

    # ---- which networks -----------------------------------------------------------------------

    async def _networks(self, request: SandboxRequest, pod: PodRecord | None) -> tuple[list[_Network], int]:
        """The request's networks in ADD order, and how many of them are ``defaultNetworks``."""
        conf = request.conf
        budget = _ConfigBudget()
        networks = await self._cluster_networks(conf, pod)
        for network in networks:
            budget.charge(network)
        namespace = pod.namespace if pod is not None else request.pod.namespace
        defaults: list[_Network] = []
        if namespace not in conf.system_namespaces:
            for name in conf.default_networks:
                defaults.append(await self._reference(name, conf, pod))
                budget.charge(defaults[-1])
            networks.extend(defaults)
        if pod is not None:
            selections = sel.parse_networks(
                pod.annotations.get(NETWORKS_ANNOTATION, ""),
                pod_namespace=pod.namespace,
                max_networks=conf.max_networks_per_pod,
            )
            # upstream counts the gateways of every delegate, the default-network annotation's too
            requested = [network.selection for network in networks if network.selection is not None]
            sel.check_default_routes([*requested, *selections])
            for selection in selections:  # charged one by one: a refused ADD holds at most the bound
                networks.append(await self._selected(selection, conf, pod))
                budget.charge(networks[-1])
        if conf.auxiliary_cni_chain_name:
            chain = disk_chains.auxiliary_chain(
                chain=conf.auxiliary_cni_chain_name,
                cluster_network=conf.cluster_network,
                cni_version=conf.cni_version,
            )
            if chain is not None:
                networks.append(_Network(name=chain.name, net=chain))
                budget.charge(networks[-1])
        for network in networks:  # a NAD's spec.config was checked as it was read (nad_config)
            if not network.where:
                nad_config.check_not_multus_network(network.net, where=network.described())
        return networks, len(defaults)

    async def _cluster_networks(self, conf: MultusNetConf, pod: PodRecord | None) -> list[_Network]:
        # upstream tests presence, not emptiness: a present but empty annotation fails the ADD
        if pod is not None and DEFAULT_NETWORK_ANNOTATION in pod.annotations:
            override = pod.annotations[DEFAULT_NETWORK_ANNOTATION]
            selection = sel.parse_default_network(override, multus_namespace=conf.multus_namespace)
            _check_isolation(
                conf,
                pod,
                selection,
                permitted=(conf.multus_namespace,),
                annotation=DEFAULT_NETWORK_ANNOTATION,
            )
            nad = await self._nad(selection.namespace, selection.name, pod)
            replacement = await self._from_nad(nad, conf, selection=selection)
            if conf.cluster_network or not conf.delegates:
                return [replacement]
            # upstream replaces the list's index 0 only: an inline list's other delegates stay
            return [replacement, *(self._inline(index, d) for index, d in enumerate(conf.delegates) if index)]
        if conf.cluster_network:
            return [await self._reference(conf.cluster_network, conf, pod)]
        if conf.delegates:
            return [self._inline(index, delegate) for index, delegate in enumerate(conf.delegates)]
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "multus configuration names no cluster network",
            "set 'clusterNetwork' (or 'delegates') in daemon-config.json or the shim's conf",
        )

    async def _reference(self, reference: str, conf: MultusNetConf, pod: PodRecord | None) -> _Network:
        """``clusterNetwork``/``defaultNetworks``: a path, a NAD in multusNamespace, or a confDir name.

        A name missing as a NAD but found in confDir is the usual case of a file-backed cluster
        network, not a problem: upstream posts its ``NoNetworkFound`` Warning on every pod for it;
        here the Warning comes only when the name is found neither way (and the ADD fails)."""
        if "/" in reference:
            from_path = self._from_path(reference)
            return _Network(name=from_path.name, net=from_path)
        if self._cluster is not None:
            nad = await _mirrored_nad(self._cluster.nads, namespace=conf.multus_namespace, name=reference)
            if nad is not None:
                return await self._from_nad(nad, conf)
        net = self._by_name(conf.conf_dir, reference)
        if net is None and self._cluster is not None:
            nad = await _fetch_nad(self._cluster.nads, namespace=conf.multus_namespace, name=reference)
            if nad is not None:
                return await self._from_nad(nad, conf)
        if net is None:
            self._not_found(pod, conf.multus_namespace, reference)
            where = f"NAD {conf.multus_namespace}/{reference} or " if self._cluster is not None else ""
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f'network "{reference}" not found',
                f"no {where}configuration named {reference!r} in confDir {conf.conf_dir}",
            )
        return _Network(name=net.name, net=net)

    async def _selected(
        self,
        selection: sel.NetworkSelection,
        conf: MultusNetConf,
        pod: PodRecord,
        *,
        report_missing: bool = True,
    ) -> _Network:
        """A network the pod's annotation asks for: always a NAD. ``report_missing``: post the
        ``NoNetworkFound`` Warning when it does not exist (hot-plug posts its own, once)."""
        _check_isolation(conf, pod, selection, permitted=(), annotation=NETWORKS_ANNOTATION)
        nad = await self._nad(selection.namespace, selection.name, pod if report_missing else None)
        return await self._from_nad(nad, conf, selection=selection)

    async def _nad(self, namespace: str, name: str, pod: PodRecord | None) -> NadRecord:
        if self._cluster is None:
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"network-attachment-definition {namespace}/{name} requested",
                "Kubernetes is not configured (static mode): only conf files resolve",
            )
        nad = await _mirrored_nad(self._cluster.nads, namespace=namespace, name=name)
        if nad is None:
            nad = await _fetch_nad(self._cluster.nads, namespace=namespace, name=name)
        if nad is None:
            self._not_found(pod, namespace, name)
            raise NadNotFoundError(namespace, name)
        return nad

    def _not_found(self, pod: PodRecord | None, namespace: str, name: str) -> None:
        if pod is not None and self._cluster is not None and self._cluster.events is not None:
            self._cluster.events.emit_network_not_found(
                pod, namespace=namespace, name=name, error=nad_not_found(name)
            )

    async def _from_nad(
        self, nad: NadRecord, conf: MultusNetConf, *, selection: sel.NetworkSelection | None = None
    ) -> _Network:
        name = f"{nad.namespace}/{nad.name}"
        if nad_config.falls_back_to_conf_dir(nad.config):
            net = self._by_name(conf.conf_dir, nad.name)
            if net is None:
                raise CniError(
                    ErrorCode.INVALID_NETWORK_CONFIG,
                    f"network-attachment-definition {name} has no spec.config",
                    f"no network available in the name {nad.name} in cni dir {conf.conf_dir}",
                )
        else:
            data = nad_config.nad_network_config(nad.name, nad.config, namespace=nad.namespace)
            net = cniconf.load_network_list(data, source=f"network-attachment-definition {name}")
        return _Network(
            name=name,
            net=net,
            selection=selection,
            resource_name=nad.resource_name,
            where=f"network-attachment-definition {name}: spec.config" if nad.config else "",
        )

    # ---- delegate inputs ----------------------------------------------------------------------

    async def _allocator(self, networks: Sequence[_Network], pod: PodRecord | None) -> DeviceAllocator | None:
        resources = sorted({network.resource_name for network in networks if network.resource_name})
        if not resources or pod is None:
            return None
        if self._cluster is None or self._cluster.devices is None:
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"networks need device resources {resources}",
                "no kubelet pod-resources socket is configured",
            )
        try:
            return await build_allocator(
                self._cluster.devices,
                namespace=pod.namespace,
                pod=pod.name,
                uid=pod.uid,
                resources=resources,
            )
        except DeviceDataError as exc:
            raise CniError(
                exc.code, f"device ids of pod {pod.namespace}/{pod.name} are unusable", str(exc)
            ) from exc
        except DeviceLookupError as exc:
            raise CniError(
                ErrorCode.TRY_AGAIN_LATER,
                f"cannot get device ids of pod {pod.namespace}/{pod.name}",
                str(exc),
            ) from exc

    def _decide(
        self,
        network: _Network,
        position: int,
        base_args: tuple[tuple[str, str], ...],
        request: SandboxRequest,
        allocator: DeviceAllocator | None,
        *,
        ifname: str,
    ) -> _Decided:
        runtime_config = dict(request.conf.runtime_config)
        selection = network.selection
        device_id = allocator.next_id(network.resource_name) if allocator and network.resource_name else None
        data = network.net.raw
        try:
            if selection is not None and selection.cni_args:
                data = delegate_inputs.inject_cni_args(data, selection.cni_args)
            if device_id:
                data = delegate_inputs.inject_device_id(data, device_id)
        except CniError as err:  # a configuration the selection's cni-args or device id cannot go into
            raise CniError(err.code, f"{network.described()}: {err.msg}", err.details) from None
        net = network.net if data is network.net.raw else cniconf.load_network_list(data, source=network.name)
        cni_args = delegate_inputs.cni_args_for(selection, base_args) if selection is not None else base_args
        if position == 0:  # upstream overlays no requests on the master's runtimeConfig
            capability_args = runtime_config
        elif selection is None:
            capability_args = runtime_config
            if device_id:
                capability_args[delegate_inputs.CAPABILITY_DEVICE_ID] = device_id
        else:
            capability_args = delegate_inputs.capability_args_for(
                selection, runtime_config, resource_device_id=device_id or ""
            )
        decided = _Decided(net=net, cni_args=cni_args, capability_args=capability_args)
        if capability_args.get(delegate_inputs.CAPABILITY_DEVICE_ID):
            # upstream: any delegate with a deviceID gets its own device-info file path (replacing
            # one the runtime passed), and a device-plugin device has the plugin's file copied there
            cni_path = device_info.cni_file_path(
                self._device_info_dir,
                network_name=network.name,
                container_id=request.container_id,
                ifname=ifname,
            )
            capability_args[delegate_inputs.CAPABILITY_DEVICE_INFO_FILE] = cni_path
            if device_id:
                decided.device_plugin_copy = (network.resource_name, device_id, cni_path)
        return decided

    @staticmethod
    def _ifname(network: _Network, position: int, request: SandboxRequest) -> IfName:
        if network.selection is not None and network.selection.interface:
            return IfName(network.selection.interface)
        return request.ifname if position == 0 else IfName(f"net{position}")

    # ---- conf files ---------------------------------------------------------------------------

    def _by_name(self, conf_dir: str, name: str) -> NetworkConfigList | None:
        readings = _conf_dir_readings.get()
        if readings is None:
            return cniconf.find_by_name(conf_dir, name, loader=self._load_file)
        reading = readings.get(conf_dir)
        if reading is None:
            reading = readings[conf_dir] = cniconf.ConfDirReading(conf_dir, self._load_file)
        return reading.find(name)

    def _from_path(self, path: str) -> NetworkConfigList:
        if os.path.isdir(path):
            found = cniconf.first_in_dir(path, loader=self._load_file)
            if found is None:
                raise CniError(
                    ErrorCode.INVALID_NETWORK_CONFIG,
                    f"no network configuration found in {path}",
                    "expected a *.conf, *.json or *.conflist file",
                )
            return found
        return self._load_file(path)

    def _load_file_cached(self, path: str, info: os.stat_result) -> NetworkConfigList:
        """The file's network, read and parsed once per (mtime, size); its error too, so an
        unchanged broken file costs each ADD a ``stat``, not a read and a parse."""
        key = (info.st_mtime_ns, info.st_size)
        cached = self._file_cache.get(path)
        if cached is None or cached[0] != key:
            try:
                loaded: NetworkConfigList | CniError = cniconf.load_file(path)
            except CniError as err:
                if err.code in (ErrorCode.IO_FAILURE, ErrorCode.TRY_AGAIN_LATER):
                    raise  # a permission fixed later, a shortage past, change neither mtime nor size
                loaded = err
            cached = self._file_cache[path] = (key, loaded)
            if len(self._file_cache) > self._file_cache_prune_at:
                self._forget_removed_files()
        if isinstance(cached[1], CniError):
            refused = cached[1]
            raise type(refused)(refused.code, refused.msg, refused.details)
        return cached[1]

    def _forget_removed_files(self) -> None:
        """Drop the cached files no longer there (a file is only looked up while a directory lists
        it or a setting names it, so a removed one's entry would stay for the daemon's life). Run
        as the cache outgrows twice what it kept last time: a ``stat`` per entry, now and then."""
        for path in [path for path in self._file_cache if not os.path.exists(path)]:
            del self._file_cache[path]
        self._file_cache_prune_at = max(FILE_CACHE_PRUNE_AT, 2 * len(self._file_cache))

    def _load_file(self, path: str) -> NetworkConfigList:
        """A conf file's network; a conflist with on-disk plugins gets them appended (not cached:
        the plugin directory may change without the conflist changing)."""
        info = _stat_conf_file(path)
        if not path.endswith(".conflist"):
            return self._load_file_cached(path, info)
        try:
            net: NetworkConfigList | None = self._load_file_cached(path, info)
        except CniError:
            net = None  # perhaps a conflist whose plugins are all on disk
        if net is not None and not os.path.isdir(os.path.join(os.path.dirname(path), net.name)):
            return net
        return disk_chains.load_conflist_file(path, _read(path))

    @staticmethod
    def _inline(index: int, delegate: Mapping[str, Any]) -> _Network:
        if delegate_inputs.has_type(delegate) and "plugins" in delegate:
            # one plugin, as upstream's LoadDelegateNetConf reads it (app.cni: a "plugins" key is a list)
            delegate = {key: value for key, value in delegate.items() if key != "plugins"}
        data = json.dumps(delegate, sort_keys=True).encode()
        net = cniconf.load_network_list(data, source=f"delegates[{index}]")
        return _Network(name=net.name, net=net)

    # ---- hot-plug (``app.attach.hotplug``) ----------------------------------------------------

    async def plan_hotplug(
        self, request: SandboxRequest, pod: PodRecord, selection: sel.NetworkSelection, *, ifname: IfName
    ) -> DelegatePlan:
        """The delegate one selection adds to a running pod, as ADD would have decided it (the
        engine assigns its position). A NAD with a ``resourceName`` is refused unless the selection
        names a ``deviceID``: the pod's devices were allocated when it was created. A missing NAD
        raises ``NadNotFoundError`` without the ``NoNetworkFound`` Warning: the reconciler retries
        such a pod for as long as it stays so, and posts that Warning once, not on every try."""
        network = await self._selected(selection, request.conf, pod, report_missing=False)
        if network.resource_name and not selection.device_id:
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f'network "{network.name}" needs a device (resourceName {network.resource_name}) '
                "and cannot be hot-plugged without one",
                "device-plugin devices are allocated when the pod is created; "
                "name one with deviceID in the selection",
            )
        base_args = delegate_cni_args(request.cni_args, master=False, pod_uid=pod.uid)
        decided = self._decide(network, 1, base_args, request, None, ifname=ifname)
        return DelegatePlan(
            position=1,
            network_name=network.name,
            net=decided.net,
            ifname=ifname,
            is_master=False,
            cni_args=decided.cni_args,
            capability_args=decided.capability_args,
        )


def _check_isolation(
    conf: MultusNetConf,
    pod: PodRecord,
    selection: sel.NetworkSelection,
    *,
    permitted: tuple[str, ...],
    annotation: str,
) -> None:
    """With ``namespaceIsolation``, refuse a selection of a NAD outside the pod's namespace, the
    ``globalNamespaces`` and ``permitted`` (the default-network annotation's own namespace,
    ``multusNamespace``, where its NADs live; upstream applies no isolation to that annotation)."""
    if not conf.namespace_isolation or selection.namespace == pod.namespace:
        return
    if selection.namespace in conf.global_namespaces or selection.namespace in permitted:
        return
    raise CniError(
        ErrorCode.INVALID_NETWORK_CONFIG,
        "GetNetworkDelegates: namespace isolation enabled, annotation violates permission, "
        f"pod is in namespace {pod.namespace} but refers to target namespace {selection.namespace}",
        f"annotation {annotation}, network {selection.qualified_name}",
    )


async def _mirrored_nad(nads: NadSource, *, namespace: str, name: str) -> NadRecord | None:
    """A NAD from the mirror; None also when the mirror has not synced within its wait (the
    caller then tries a conf file of that name and asks the API once, as for a NAD not mirrored
    yet, rather than fail the ADD on a mirror that may never sync while the API answers GETs)."""
    try:
        return await nads.get_nad(namespace, name)
    except ClusterUnavailableError as exc:
        log.warning("network-attachment-definition %s/%s: %s", namespace, name, exc)
        return None


async def _fetch_nad(nads: NadSource, *, namespace: str, name: str) -> NadRecord | None:
    """A NAD the mirror lacks, asked of the API once before the ADD fails for it: created just
    before its pod, it may not be mirrored yet (upstream reads NADs from its informer and fails)."""
    try:
        return await nads.fetch_nad(namespace, name)
    except ClusterUnavailableError as exc:
        raise CniError(
            ErrorCode.TRY_AGAIN_LATER,
            f"cannot read network-attachment-definition {namespace}/{name} from the Kubernetes API",
            str(exc),
        ) from exc


def _stat_conf_file(path: str) -> os.stat_result:
    """A conf file's ``stat``, refused (code 7) past ``MAX_CONF_FILE_BYTES``, or when it is no
    regular file (``/dev/zero``, a FIFO: ``cniconf.read_regular_file``), before it is read."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"cannot read network configuration {path}",
            exc.strerror or "",
        ) from exc
    if not stat.S_ISREG(info.st_mode):
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"network configuration {path} is not a regular file",
            "not read: a configuration is a file (a device, FIFO or directory is none)",
        )
    if info.st_size > MAX_CONF_FILE_BYTES:
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"network configuration {path} is {info.st_size} bytes; a conf file may be at most "
            f"{MAX_CONF_FILE_BYTES} bytes",
            "not read: real conf files are a few KiB",
        )
    return info


def check_add_config_bytes(total: int, *, where: str) -> None:
    """Refuse an ADD whose delegate configurations come to more than ``MAX_ADD_CONFIG_BYTES``."""
    if total > MAX_ADD_CONFIG_BYTES:
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"{where}: brings the ADD's delegate configurations to {total} bytes; one ADD may "
            f"record at most {MAX_ADD_CONFIG_BYTES} bytes",
            "the pod's networks are refused together; nothing was recorded or run",
        )


def _read(path: str) -> bytes:
    return cniconf.read_regular_file(path, limit=MAX_CONF_FILE_BYTES)


class NadNotFoundError(CniError):
    """A network-attachment-definition that neither the mirror nor the API has (code 7)."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"cannot find a network-attachment-definition ({name}) in namespace ({namespace})",
            nad_not_found(name),
        )
        self.namespace = namespace
        self.name = name


def nad_not_found(name: str) -> str:
    """The API server's not-found text for NAD ``name``, as upstream quotes it."""
    return f'networkattachmentdefinition.k8s.cni.cncf.io "{name}" not found'


def delegate_cni_args(
    runtime_args: Sequence[tuple[str, str]], *, master: bool, pod_uid: str = ""
) -> tuple[tuple[str, str], ...]:
    """CNI_ARGS for a delegate, in upstream's order: ``IgnoreUnknown`` and the four ``K8S_POD_*``
    keys, each sent (empty when the runtime sent none; ``K8S_POD_UID`` then the resolved pod's
    ``pod_uid``, as upstream fills it from its informer). The runtime's other keys (``IP=``,
    ``MAC=``, its own) go to the ``master`` (the cluster network: what the runtime addressed) only,
    where upstream drops them for all: handed to a NAD's delegate, a runtime's ``IP=`` had every
    NAD's host-local ask for that address in its own range, and the ADD fail."""
    given = dict(runtime_args)
    if not given.get("K8S_POD_UID"):
        given["K8S_POD_UID"] = pod_uid
    pairs = [("IgnoreUnknown", "true")]
    pairs.extend((key, given.get(key, "")) for key in POD_ARG_KEYS)
    if master:
        pairs.extend(
            (key, value) for key, value in runtime_args if key not in POD_ARG_KEYS and key != "IgnoreUnknown"
        )
    return tuple(pairs)


def check_unique_ifnames(plans: Sequence[DelegatePlan]) -> None:
    seen: dict[str, str] = {}
    for plan in plans:
        if plan.ifname in seen:
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f'interface name "{plan.ifname}" requested twice',
                f"networks {seen[plan.ifname]!r} and {plan.network_name!r} both use it",
            )
        seen[plan.ifname] = plan.network_name
