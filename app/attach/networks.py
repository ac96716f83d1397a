"""Network resolution: which delegates an ADD runs, in which order, under which interface names.

Called by the engine for ADD only; DEL, CHECK, recovery and GC replay the checkpoint instead.
The list is upstream's: the cluster network (``clusterNetwork``, or the first of ``delegates``)
first as the master delegate on the runtime's ``CNI_IFNAME``, then ``defaultNetworks`` (not for
pods in ``systemNamespaces``); every other delegate gets ``net<position>``. Each delegate's
CNI_ARGS and runtimeConfig are decided here, so the engine can record them before running it.
Resolution has no side effects; errors are CNI code 7 naming the network and the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.attach.netconf import MultusNetConf
from app.attach.requests import SandboxRequest
from app.cni import conf as cniconf
from app.cni.types import CniError, ErrorCode, IfName, NetworkConfigList

POD_ARG_KEYS = ("K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID")


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


@dataclass(frozen=True, slots=True)
class _Network:
    name: str
    net: NetworkConfigList


class NetworkResolver:
    """Resolves a request's networks from configuration files (static mode).

    Parsed files are cached by (mtime, size), so a request costs a directory listing and a stat
    per file, not a parse; an edited file is reloaded.
    """

    def __init__(self) -> None:
        self._file_cache: dict[str, tuple[tuple[int, int], NetworkConfigList]] = {}

    async def resolve(self, request: SandboxRequest) -> list[DelegatePlan]:
        networks = self._networks(request)
        cni_args = delegate_cni_args(request.cni_args)
        plans = [
            DelegatePlan(
                position=position,
                network_name=network.name,
                net=network.net,
                ifname=request.ifname if position == 0 else IfName(f"net{position}"),
                is_master=position == 0,
                cni_args=cni_args,
                capability_args=dict(request.conf.runtime_config),
            )
            for position, network in enumerate(networks)
        ]
        check_unique_ifnames(plans)
        return plans

    def _networks(self, request: SandboxRequest) -> list[_Network]:
        conf = request.conf
        networks = self._cluster_networks(conf)
        if request.pod.namespace not in conf.system_namespaces:
            networks.extend(self._reference(name, conf) for name in conf.default_networks)
        return networks

    def _cluster_networks(self, conf: MultusNetConf) -> list[_Network]:
        if conf.cluster_network:
            return [self._reference(conf.cluster_network, conf)]
        if conf.delegates:
            return [self._inline(index, delegate) for index, delegate in enumerate(conf.delegates)]
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "multus configuration names no cluster network",
            "set 'clusterNetwork' (or 'delegates') in daemon-config.json or the shim's conf",
        )

    def _reference(self, reference: str, conf: MultusNetConf) -> _Network:
        """A network named by ``clusterNetwork``/``defaultNetworks``: a path, or a name in confDir."""
        if "/" in reference:
            net = self._from_path(reference)
        else:
            found = cniconf.find_by_name(conf.conf_dir, reference, loader=self._load_file_cached)
            if found is None:
                raise CniError(
                    ErrorCode.INVALID_NETWORK_CONFIG,
                    f'network "{reference}" not found',
                    f"no configuration named {reference!r} in confDir {conf.conf_dir}",
                )
            net = found
        return _Network(name=net.name, net=net)

    def _from_path(self, path: str) -> NetworkConfigList:
        if os.path.isdir(path):
            found = cniconf.first_in_dir(path, loader=self._load_file_cached)
            if found is None:
                raise CniError(
                    ErrorCode.INVALID_NETWORK_CONFIG,
                    f"no network configuration found in {path}",
                    "expected a *.conf, *.json or *.conflist file",
                )
            return found
        return self._load_file_cached(path)

    def _load_file_cached(self, path: str) -> NetworkConfigList:
        try:
            info = os.stat(path)
        except OSError as exc:
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"cannot read network configuration {path}",
                exc.strerror or "",
            ) from exc
        key = (info.st_mtime_ns, info.st_size)
        cached = self._file_cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        net = cniconf.load_file(path)
        self._file_cache[path] = (key, net)
        return net

    @staticmethod
    def _inline(index: int, delegate: Mapping[str, Any]) -> _Network:
        data = json.dumps(delegate, sort_keys=True).encode()
        net = cniconf.load_network_list(data, source=f"delegates[{index}]")
        return _Network(name=net.name, net=net)


def delegate_cni_args(runtime_args: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """CNI_ARGS for delegates: upstream's order, then the runtime's other keys (upstream drops them)."""
    given = dict(runtime_args)
    pairs = [("IgnoreUnknown", "true")]
    pairs.extend((key, given[key]) for key in POD_ARG_KEYS if key in given)
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
