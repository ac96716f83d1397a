"""The Multus network configuration of one request: the shim's conf merged with daemon-config.

Upstream Multus overlays the daemon's own configuration file over each request's stdin conf
(daemon keys win) and reads the Multus ``NetConf`` keys from the result, so ``clusterNetwork``,
``defaultNetworks``, ``confDir``, ``binDir``... may come from either. This module does the merge
and validates every key, naming it in the error (CNI code 7).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.attach.selection import DEFAULT_MAX_NETWORKS
from app.cni.types import CniError, ErrorCode, JsonObject

DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_CONF_DIR = "/etc/cni/multus/net.d"
DEFAULT_CNI_DIR = "/var/lib/cni/multus"
DEFAULT_MULTUS_NAMESPACE = "kube-system"
DEFAULT_MAX_NETWORKS_PER_POD = DEFAULT_MAX_NETWORKS


@dataclass(frozen=True, slots=True)
class MultusNetConf:
    """Validated Multus keys of a merged request configuration."""

    name: str
    cni_version: str
    stdin_cni_version: str
    cluster_network: str = ""
    default_networks: tuple[str, ...] = ()
    delegates: tuple[JsonObject, ...] = ()
    conf_dir: str = DEFAULT_CONF_DIR
    bin_dir: str = DEFAULT_BIN_DIR
    cni_dir: str = DEFAULT_CNI_DIR
    multus_namespace: str = DEFAULT_MULTUS_NAMESPACE
    system_namespaces: tuple[str, ...] = ("kube-system",)
    namespace_isolation: bool = False
    global_namespaces: tuple[str, ...] = ("default",)
    runtime_config: Mapping[str, Any] = field(default_factory=dict)
    auxiliary_cni_chain_name: str = ""
    """Upstream's ``auxiliaryCNIChainName``: a chain from ``<dir(clusterNetwork)>/<name>/*.conf``."""
    max_networks_per_pod: int = DEFAULT_MAX_NETWORKS_PER_POD
    """multus-py ``maxNetworksPerPod``: how many networks a pod's ``k8s.v1.cni.cncf.io/networks``
    annotation may select; more are refused at ADD, before any is looked up (upstream: no bound)."""
    raw: Mapping[str, Any] = field(default_factory=dict)


def merge(stdin_conf: Mapping[str, Any], daemon_config: Mapping[str, Any]) -> JsonObject:
    """Overlay the daemon's configuration over a request's conf, key by key (daemon keys win)."""
    merged = dict(stdin_conf)
    merged.update(daemon_config)
    return merged


def parse(merged: Mapping[str, Any], *, stdin_cni_version: str) -> MultusNetConf:
    """Validate the Multus keys of a merged configuration."""
    reader = _Keys(merged)
    return MultusNetConf(
        name=reader.string("name", ""),
        cni_version=reader.string("cniVersion", stdin_cni_version),
        stdin_cni_version=stdin_cni_version,
        cluster_network=reader.string("clusterNetwork", ""),
        default_networks=reader.strings("defaultNetworks"),
        delegates=reader.objects("delegates"),
        conf_dir=reader.string("confDir", DEFAULT_CONF_DIR),
        bin_dir=reader.string("binDir", DEFAULT_BIN_DIR),
        cni_dir=reader.string("cniDir", DEFAULT_CNI_DIR),
        multus_namespace=reader.string("multusNamespace", DEFAULT_MULTUS_NAMESPACE),
        system_namespaces=reader.strings("systemNamespaces", ("kube-system",)),
        namespace_isolation=reader.boolean("namespaceIsolation", False),
        global_namespaces=reader.comma_list("globalNamespaces", ("default",)),
        runtime_config=reader.object("runtimeConfig"),
        auxiliary_cni_chain_name=reader.string("auxiliaryCNIChainName", ""),
        max_networks_per_pod=reader.positive_integer("maxNetworksPerPod", DEFAULT_MAX_NETWORKS_PER_POD),
        raw=dict(merged),
    )


class _Keys:
    """Typed reads of a configuration object, raising CNI code 7 errors that name the key."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self._obj = obj

    def _fail(self, key: str, expected: str) -> CniError:
        value = json.dumps(self._obj.get(key))
        return CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"invalid multus configuration: key {key!r} must be {expected}",
            f"got {value[:200]}",
        )

    def string(self, key: str, default: str) -> str:
        value = self._obj.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value or default

    def boolean(self, key: str, default: bool) -> bool:
        value = self._obj.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def positive_integer(self, key: str, default: int) -> int:
        value = self._obj.get(key)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type: 300.0 is 300
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self._fail(key, "a positive integer")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self._obj.get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def comma_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._obj.get(key)
        if value is None or value == "":
            return default
        if not isinstance(value, str):
            raise self._fail(key, "a comma-separated string")
        return tuple(item.strip() for item in value.split(",") if item.strip())

    def object(self, key: str) -> JsonObject:
        value = self._obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._fail(key, "an object")
        return dict(value)

    def objects(self, key: str) -> tuple[JsonObject, ...]:
        value = self._obj.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self._fail(key, "a list of objects")
        return tuple(dict(item) for item in value)
