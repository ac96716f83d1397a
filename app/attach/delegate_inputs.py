"""What a delegate receives from a network selection: capability args, CNI_ARGS, ``args.cni``, ``deviceID``.

Called by network resolution (``app.attach.networks``) on ADD, once per delegate, with a validated
``NetworkSelection``; DEL, CHECK and GC replay the checkpoint instead. Every rule is upstream
Multus's (``pkg/types/conf.go``), and its error texts are kept verbatim (``CniError`` code 7).
Pure: no I/O, inputs are never mutated (configurations are copied, then re-encoded).

One decision differs from upstream: the runtime's ``runtimeConfig`` keys other than the six
capabilities pass through to delegates (upstream's typed struct drops them).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

from app.attach import device_info
from app.attach.selection import NetworkSelection
from app.cni import conf as cniconf
from app.cni import results
from app.cni.types import CniError, ErrorCode, JsonObject

CAPABILITY_IPS: Final = "ips"
CAPABILITY_MAC: Final = "mac"
CAPABILITY_INFINIBAND_GUID: Final = "infinibandGUID"
CAPABILITY_PORT_MAPPINGS: Final = "portMappings"
CAPABILITY_BANDWIDTH: Final = "bandwidth"
CAPABILITY_DEVICE_ID: Final = "deviceID"
CAPABILITY_DEVICE_INFO_FILE: Final = "CNIDeviceInfoFile"

MAX_NESTING: Final = 64
"""Levels of arrays and objects a delegate configuration built from a NAD or a selection may nest
(the shim protocol's bound too). Real ones nest about five. Python's parser is bounded by the stack
in use when it runs, not by a number: a configuration accepted at ADD, nested nearly as deep as the
ADD's stack allowed, may fail to parse when a DEL, recovery or GC reads the recorded bytes from a
deeper stack, and a recorded configuration that does not parse is forgotten without its DEL."""


def capability_args_for(
    selection: NetworkSelection, runtime_config: Mapping[str, Any], *, resource_device_id: str = ""
) -> JsonObject:
    """The runtime's ``runtimeConfig`` overlaid with the element's requests, keyed by capability name.

    libcni later keeps, per plugin, only the capabilities it declares. ``resource_device_id`` (from
    the NAD's ``resourceName``) wins over the element's ``deviceID``. Upstream applies no overlay
    to the master delegate (a default-network annotation): whether to call this for it is the
    caller's decision.
    """
    merged: JsonObject = copy.deepcopy(dict(runtime_config))
    if selection.port_mappings:
        merged[CAPABILITY_PORT_MAPPINGS] = [dict(entry) for entry in selection.port_mappings]
    if selection.bandwidth is not None:
        merged[CAPABILITY_BANDWIDTH] = dict(selection.bandwidth)
    if selection.ips:
        merged[CAPABILITY_IPS] = list(selection.ips)
    if selection.mac:
        merged[CAPABILITY_MAC] = selection.mac
    if selection.infiniband_guid:
        merged[CAPABILITY_INFINIBAND_GUID] = selection.infiniband_guid
    device_id = resource_device_id or selection.device_id
    if device_id:
        merged[CAPABILITY_DEVICE_ID] = device_id
    return merged


def cni_device_info_path(
    *, network_name: str, container_id: str, ifname: str, base_dir: str = device_info.DEFAULT_DIR
) -> str:
    """``runtimeConfig.CNIDeviceInfoFile`` for a delegate given a device id (``/`` in the name → ``-``)."""
    return device_info.cni_file_path(
        base_dir, network_name=network_name, container_id=container_id, ifname=ifname
    )


def cni_args_for(
    selection: NetworkSelection, base_pairs: Sequence[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    """The delegate's CNI_ARGS: ``base_pairs``, then ``MAC=<mac>`` and ``IP=<ip>,<ip>`` when requested."""
    pairs = list(base_pairs)
    if selection.mac:
        pairs.append(("MAC", selection.mac))
    if selection.ips:
        pairs.append(("IP", ",".join(selection.ips)))
    return tuple(pairs)


def inject_cni_args(conf: bytes | Mapping[str, Any], cni_args: Mapping[str, Any]) -> bytes:
    """The delegate conf with ``cni_args`` merged into ``args.cni`` (each plugin of a conflist).

    Keys from the annotation overwrite the conf's own ``args.cni`` keys; other keys stay. Output is
    compact JSON with sorted keys, as Go re-marshals it.
    """
    document = _conf_document(conf)
    for plugin in _plugins_of(document, step="addCNIArgsInConfList()"):
        _merge_args(plugin, cni_args)
    check_nesting(document, what="the delegate configuration with the selection's cni-args")
    return cniconf.encode(document, what="delegate configuration with cni-args")


def check_nesting(document: object, *, what: str) -> None:
    """Refuse (code 7) a decoded configuration nested deeper than ``MAX_NESTING``; ``what`` names it.
    Walked without recursion, so any depth the parser took is measured."""
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Sequence[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_NESTING:
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"{what} nests arrays and objects more than {MAX_NESTING} levels deep",
                "real configurations nest a few levels",
            )
        stack.extend((child, depth + 1) for child in children)


def inject_device_id(conf: bytes | Mapping[str, Any], device_id: str) -> bytes:
    """The delegate conf with top-level ``deviceID`` and ``pciBusID`` set (each plugin of a conflist)."""
    document = _conf_document(conf)
    for plugin in _plugins_of(document, step="addDeviceIDInConfList:"):
        plugin["deviceID"] = device_id
        plugin["pciBusID"] = device_id
    return cniconf.encode(document, what="delegate configuration with deviceID")


def _conf_document(conf: bytes | Mapping[str, Any]) -> JsonObject:
    if isinstance(conf, bytes):
        try:
            document = results.parse_json(conf)
        except (ValueError, RecursionError) as err:
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG, f"delegate configuration is not JSON: {err}"
            ) from err
    else:
        document = copy.deepcopy(dict(conf))
    if not isinstance(document, dict):
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, "delegate configuration must be a JSON object")
    return document


def _plugins_of(document: JsonObject, *, step: str) -> list[JsonObject]:
    """The objects to edit: the conf itself when it has a ``type``, else each of its ``plugins``."""
    if has_type(document):
        return [document]
    plugins = document.get("plugins")
    if plugins is None:
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"{step} unable to get plugin list")
    if not isinstance(plugins, list):
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"{step} unable to typecast plugin list")
    for index, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"{step} unable to typecast plugin #{index}")
    return plugins


def has_type(document: Mapping[str, Any]) -> bool:
    """True when a delegate conf is a single plugin (a non-empty ``type``), False for a conflist."""
    kind = document.get("type")
    return isinstance(kind, str) and kind != ""


def _merge_args(plugin: JsonObject, cni_args: Mapping[str, Any]) -> None:
    args = plugin.setdefault("args", {})
    if not isinstance(args, dict):
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG, '"args" of the delegate configuration must be an object'
        )
    existing = args.get("cni")
    if existing is None:
        args["cni"] = copy.deepcopy(dict(cni_args))
    elif isinstance(existing, dict):
        existing.update(copy.deepcopy(dict(cni_args)))
    else:
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG, '"args.cni" of the delegate configuration must be an object'
        )
