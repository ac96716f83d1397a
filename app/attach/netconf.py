"""The Multus network configuration of one request: the shim's conf merged with daemon-config.

Upstream Multus overlays the daemon's own configuration file over each request's stdin conf
(daemon keys win) and reads the Multus ``NetConf`` keys from the result, so ``clusterNetwork``,
``defaultNetworks``, ``confDir``, ``binDir``... may come from either. This module does the merge
and validates every key, naming it in the error (CNI code 7); a key is read whatever its case, as
upstream's Go decoder reads it. ``runtimeConfig`` is checked too, each
capability the CNI conventions define against the type the plugins decode it into (and ``ips`` and
``mac`` as they parse them): it goes to the delegates that declare the capability, recorded in
their intents, and a value a plugin cannot decode failed the ADD with the plugin's code 999 and
then every DEL of it, replayed from the checkpoint, the same way. An empty value of a key upstream
reads is left out as upstream leaves it out; keys it does not read are kept (upstream drops them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.attach import gojson, selection
from app.attach.selection import DEFAULT_MAX_NETWORKS
from app.cni.types import CniError, ErrorCode, JsonObject

DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_CONF_DIR = "/etc/cni/multus/net.d"
DEFAULT_CNI_DIR = "/var/lib/cni/multus"
DEFAULT_MULTUS_NAMESPACE = "kube-system"
DEFAULT_MAX_NETWORKS_PER_POD = DEFAULT_MAX_NETWORKS
_BANDWIDTH_FIELDS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")


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
        runtime_config=reader.runtime_config("runtimeConfig"),
        auxiliary_cni_chain_name=reader.string("auxiliaryCNIChainName", ""),
        max_networks_per_pod=reader.positive_integer("maxNetworksPerPod", DEFAULT_MAX_NETWORKS_PER_POD),
        raw=dict(merged),
    )


class _Keys:
    """Typed reads of a configuration object, raising CNI code 7 errors that name the key.

    Keys are matched as upstream reads them: it re-encodes the merged map (Go sorts its keys) and
    decodes that into its ``NetConf``, whose fields match a key whatever its case. So a key is
    read under any spelling (``ConfDir``, ``defaultnetworks``), the last spelling in sorted order
    winning, and null reads as absent, as ``app.settings`` reads daemon-config itself."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self._obj = {gojson.fold(key): obj[key] for key in sorted(obj) if obj[key] is not None}

    def get(self, key: str) -> Any:
        """The value of ``key`` under any spelling; None when absent or null."""
        return self._obj.get(gojson.fold(key))

    def _fail(self, key: str, expected: str) -> CniError:
        value = json.dumps(self.get(key))
        return CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"invalid multus configuration: key {key!r} must be {expected}",
            f"got {value[:200]}",
        )

    def string(self, key: str, default: str) -> str:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value or default

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def positive_integer(self, key: str, default: int) -> int:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type: 300.0 is 300
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self._fail(key, "a positive integer")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def comma_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(key)
        if value is None or value == "":
            return default
        if not isinstance(value, str):
            raise self._fail(key, "a comma-separated string")
        return tuple(item.strip() for item in value.split(",") if item.strip())

    def object(self, key: str) -> JsonObject:
        value = self.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._fail(key, "an object")
        return dict(value)

    def runtime_config(self, key: str) -> JsonObject:
        value = self.object(key)
        for capability, check in _CAPABILITY_CHECKS.items():
            problem = check(value.get(capability))
            if problem is not None:
                raise CniError(
                    ErrorCode.INVALID_NETWORK_CONFIG,
                    f"invalid multus configuration: key '{key}.{capability}' must be {problem[0]}",
                    f"got {json.dumps(problem[1])[:200]}",
                )
        return {
            capability: given
            for capability, given in value.items()
            if not (capability in _UPSTREAM_RUNTIME_CONFIG and given in (None, [], ""))
        }

    def objects(self, key: str) -> tuple[JsonObject, ...]:
        value = self.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self._fail(key, "a list of objects")
        return tuple(dict(item) for item in value)


# ---- runtimeConfig: the CNI conventions' capabilities, as Go plugins decode them -------------------

_UPSTREAM_RUNTIME_CONFIG = frozenset(
    ("portMappings", "bandwidth", "ips", "mac", "infinibandGUID", "deviceID", "CNIDeviceInfoFile")
)
"""The ``runtimeConfig`` keys upstream Multus reads (its ``types.RuntimeConfig``). It hands a
delegate only those of them that hold something: one the runtime sends null, ``[]`` or ``""``
(``portMappings`` of a pod without ports, say) is left out, so that a
delegate declaring the capability keeps the ``runtimeConfig`` of its own configuration, if any,
as libcni keeps it when no capability applies. Other keys are handed on as given."""

_Problem = tuple[str, object] | None
"""What a value must be, and the part of it that is not; None when it is fine."""
_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = (0, 2**64 - 1)


def _integer(value: object, bounds: tuple[int, int] = _INT64) -> bool:
    """A JSON number Go decodes into an integer field: integral as written, within its range
    (``1.0`` is a float to Python and to Go's decoder alike, which refuses it for an int)."""
    return value is None or (
        isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]
    )


def _string(value: object) -> bool:
    return value is None or isinstance(value, str)


def _strings(value: object) -> bool:
    return value is None or (isinstance(value, list) and all(_string(item) for item in value))


def _object_of(fields: dict[str, Callable[[object], bool]], what: str) -> Callable[[object], _Problem]:
    """A check of an object whose ``fields`` Go decodes with these checks: a key matches a field
    whatever its case, as in Go's decoder; other keys are ignored, as Go ignores them; null is the
    zero value."""
    by_folded_name = {gojson.fold(name): valid for name, valid in fields.items()}

    def check(value: object) -> _Problem:
        if value is None:
            return None
        if not isinstance(value, dict):
            return what, value
        for name, item in value.items():
            valid = by_folded_name.get(gojson.fold(name))
            if valid is not None and not valid(item):
                return what, {name: item}
        return None

    return check


def _list_of(item_check: Callable[[object], _Problem], what: str) -> Callable[[object], _Problem]:
    def check(value: object) -> _Problem:
        if value is None:
            return None
        if not isinstance(value, list):
            return what, value
        for item in value:
            if item_check(item) is not None:
                return what, item
        return None

    return check


def _string_check(what: str) -> Callable[[object], _Problem]:
    return lambda value: None if _string(value) else (what, value)


def _strings_check(what: str) -> Callable[[object], _Problem]:
    return lambda value: None if _strings(value) else (what, value)


def _ips(value: object) -> _Problem:
    what = "a list of IP addresses, each with or without a prefix length"
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return what, value
    problem = selection.check_address_requests(ips=value, mac="")
    return None if problem is None else (what, problem[1])


def _mac(value: object) -> _Problem:
    what = "a MAC address"
    if value is None:
        return None
    if not isinstance(value, str) or selection.check_address_requests(ips=(), mac=value) is not None:
        return what, value
    return None


_PORT_MAPPING = _object_of(
    {"hostPort": _integer, "containerPort": _integer, "protocol": _string, "hostIP": _string},
    "a list of port mappings (integer hostPort and containerPort, string protocol and hostIP)",
)
_IP_RANGE = _object_of(
    {"subnet": _string, "rangeStart": _string, "rangeEnd": _string, "gateway": _string},
    "a list of range sets (lists of objects with string subnet, rangeStart, rangeEnd and gateway)",
)
_CAPABILITY_CHECKS: dict[str, Callable[[object], _Problem]] = {
    "portMappings": _list_of(_PORT_MAPPING, "a list of port mappings"),
    "ipRanges": _list_of(_list_of(_IP_RANGE, "a range set"), "a list of range sets"),
    "bandwidth": _object_of(
        {name: lambda value: _integer(value, _UINT64) for name in _BANDWIDTH_FIELDS},
        "an object of non-negative integer ingressRate, ingressBurst, egressRate and egressBurst",
    ),
    "dns": _object_of(
        {"servers": _strings, "searches": _strings, "options": _strings},
        "an object of string lists servers, searches and options",
    ),
    "ips": _ips,
    "mac": _mac,
    "infinibandGUID": _string_check("a string"),
    "deviceID": _string_check("a string"),
    "cgroupPath": _string_check("a string"),
    "aliases": _strings_check("a list of strings"),
}
"""Each capability of the CNI conventions (``CONVENTIONS.md``) and its check: a value the plugins
that declare it could not decode is refused before any delegate is recorded."""


def undecodable_capability(capability: str, value: object) -> _Problem:
    """What makes ``value`` of ``capability`` one a plugin declaring it cannot decode (what it must
    be, and the part of it that is not), or None. As the ADD's checks, but a ``mac`` need only be a
    string: plugins decode it as one, and parse it only at ADD, to set it."""
    if capability == "mac":
        return _string_check("a string")(value)
    check = _CAPABILITY_CHECKS.get(capability)
    return None if check is None else check(value)
