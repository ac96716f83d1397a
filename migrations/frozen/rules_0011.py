"""Revision 0011's device IDs of an attachment, frozen as it derived them when it was written.

Copied at commit c11d96a (2026-12-07), which wrote revision 0011, from ``app.cni.conf``
(``load_network_list``: when a recorded configuration decodes, and its plugins), ``app.attach.vfs``
(``PCI_ADDRESS``, ``pci_addresses``) and ``app.attach.result_facts`` (``device_ids``). It must
never follow later changes of those modules: a store upgraded from 0010 by any release gets the
device IDs the 0011 release recorded. So, unlike today's ``vfs`` and ``result_facts``:

- host-device is read as any other plugin: its ``deviceID``, then its ``pciBusID`` or instead the
  runtimeConfig ``deviceID`` it declares the capability for (today a host-device naming a netdev by
  ``device``, ``hwaddr`` or ``kernelpath`` takes no PCI device, and one reads the ``runtimeConfig``
  of its own configuration when no capability it declares is supplied);
- the runtimeConfig ``deviceID`` is always listed (today one that is a PCI address no plugin takes
  is dropped).

Only adding ids, 0011 keeps every id a row records whatever these rules say.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

PCI_ADDRESS = re.compile(
    r"(?:[0-9a-fA-F]{4}|[1-9a-fA-F][0-9a-fA-F]{4,7}):[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
)
_SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
_VERSION = re.compile(r"([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?")
_NETWORK_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")


class UndecodableConfigError(ValueError):
    """A recorded configuration ``app.cni.conf.load_network_list`` refused (CniError then)."""


def pci_addresses(config: bytes, capability_args: Mapping[str, Any]) -> list[str]:
    """``vfs.pci_addresses`` of a recorded configuration (its addresses, in order); raises
    ``UndecodableConfigError`` where ``load_network_list`` refused the configuration."""
    return _pci_addresses(network_plugins(config), capability_args)


def device_ids(
    *,
    capability_args: Mapping[str, Any],
    device: Mapping[str, Any] | None,
    result: object,
    handed: Sequence[str],
) -> tuple[str, ...]:
    """``result_facts.device_ids``: the PCI devices ``handed``, the runtimeConfig ``deviceID``, the
    recorded host device, any ``pciID`` of the result; each a non-empty text, once."""
    found: list[object] = [*handed, capability_args.get("deviceID")]
    if device is not None:
        found.append(device.get("pci"))
    if isinstance(result, dict):
        interfaces = result.get("interfaces")
        if isinstance(interfaces, list):
            found.extend(item.get("pciID") for item in interfaces if isinstance(item, dict))
    return tuple(dict.fromkeys(item for item in found if isinstance(item, str) and item))


def _pci_addresses(plugins: Sequence[Mapping[str, Any]], capability_args: Mapping[str, Any]) -> list[str]:
    handed = capability_args.get("deviceID")
    if not (isinstance(handed, str) and PCI_ADDRESS.fullmatch(handed)):
        handed = None
    named: dict[str, str] = {}
    for plugin in plugins:
        value = plugin.get("deviceID")
        if isinstance(value, str) and PCI_ADDRESS.fullmatch(value):
            named.setdefault(value, "deviceID")
        capabilities = plugin.get("capabilities")
        if handed is not None and isinstance(capabilities, Mapping) and capabilities.get("deviceID") is True:
            named.setdefault(handed, "runtimeConfig.deviceID")
            continue
        value = plugin.get("pciBusID")
        if isinstance(value, str) and PCI_ADDRESS.fullmatch(value):
            named.setdefault(value, "pciBusID")
    return list(named)


# --- app.cni.conf.load_network_list of c11d96a: whether it decodes, and its plugins -----------------


def network_plugins(data: bytes) -> list[Mapping[str, Any]]:
    """The plugins of a conf (a list of one) or conflist; ``UndecodableConfigError`` where
    ``load_network_list`` raised CniError."""
    try:
        document = _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except (ValueError, RecursionError) as err:
        raise UndecodableConfigError(f"not JSON: {err}") from err
    if not isinstance(document, dict):
        raise UndecodableConfigError("not an object")
    if "name" not in document:
        raise UndecodableConfigError('missing "name"')
    name = _string(document["name"])
    if not name or not _NETWORK_NAME.fullmatch(name):
        raise UndecodableConfigError("network name")
    plugins, is_single = _plugins(document)
    if is_single or "cniVersions" not in document:
        _supported(_string(document["cniVersion"]) if "cniVersion" in document else "")
    else:
        _check_version_lists(document)
    for key in ("disableCheck", "disableGC"):
        value = document.get(key, False)
        if not (isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false"))):
            raise UndecodableConfigError(key)
    return plugins


def _plugins(document: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], bool]:
    if "plugins" not in document:
        if "type" not in document:
            raise UndecodableConfigError("no type")
        _check_plugin(document)
        return [document], True
    plugins = document["plugins"]
    if not isinstance(plugins, list) or not plugins:
        raise UndecodableConfigError("plugins")
    for plugin in plugins:
        if not isinstance(plugin, dict):
            raise UndecodableConfigError("plugin")
        _check_plugin(plugin)
    return plugins, False


def _check_plugin(plugin: Mapping[str, Any]) -> None:
    if "type" not in plugin or not _string(plugin["type"]):
        raise UndecodableConfigError("type")
    for key in ("name", "cniVersion"):
        if plugin.get(key) is not None:
            _string(plugin[key])
    capabilities = plugin.get("capabilities")
    if capabilities is not None and not _all_flags(capabilities):
        raise UndecodableConfigError("capabilities")
    ipam = plugin.get("ipam")
    if ipam is not None:
        if not isinstance(ipam, dict):
            raise UndecodableConfigError("ipam")
        if ipam.get("type") is not None:
            _string(ipam["type"])
    prev_result = plugin.get("prevResult")
    if prev_result is not None and not isinstance(prev_result, dict):
        raise UndecodableConfigError("prevResult")
    dns = plugin.get("dns")
    if dns is not None:
        if not isinstance(dns, dict):
            raise UndecodableConfigError("dns")
        if dns.get("domain") is not None:
            _string(dns["domain"])
        for key in ("nameservers", "search", "options"):
            items = dns.get(key)
            if items is None:
                continue
            if not isinstance(items, list):
                raise UndecodableConfigError(f"dns.{key}")
            for item in items:
                if item is not None:
                    _string(item)


def _all_flags(capabilities: object) -> bool:
    """``capabilities`` is an object of booleans."""
    return isinstance(capabilities, dict) and all(isinstance(on, bool) for on in capabilities.values())


def _check_version_lists(document: Mapping[str, Any]) -> None:
    """A conflist's ``cniVersions`` (and ``cniVersion``): one of them must be supported."""
    declared = _string(document["cniVersion"]) if "cniVersion" in document else ""
    listed = document["cniVersions"]
    if not isinstance(listed, list):
        raise UndecodableConfigError("cniVersions")
    for item in listed:
        _parse_version(_string(item))
    candidates = [*listed, *([declared] if declared else [])]
    if not any(version in _SUPPORTED_VERSIONS for version in candidates):
        raise UndecodableConfigError("no supported version")


def _supported(version: str) -> None:
    if (version or "0.1.0") not in _SUPPORTED_VERSIONS:
        raise UndecodableConfigError(f"unsupported version {version!r}")


def _parse_version(version: str) -> None:
    if version != "" and _VERSION.fullmatch(version) is None:
        raise UndecodableConfigError(f"invalid version {version!r}")


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise UndecodableConfigError("not a string")
    return value


def _not_json(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _finite_number(text: str) -> float:
    """A number with a fraction or an exponent; one beyond float64 is refused, as Go refuses it
    (no rule here reads a number's value: only the refusal matters)."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} beyond float64")
    return value


_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite_number)
