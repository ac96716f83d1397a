"""Revision 0011's device IDs of an attachment: main's rules at 0e91690, frozen.

0011 first shipped in main at 0e91690, the last release to run it, with that release's
``app.cni.conf``, ``app.attach.vfs`` and ``app.attach.result_facts``. A store that has not run 0011
yet (an upgrade from an older release) must get exactly what that release computes, bugs it fixed
staying fixed (host-device's own order of devices: a netdev it names by ``device``, ``hwaddr`` or
``kernelpath`` before its PCI device, the ``runtimeConfig`` of its own configuration; a
runtimeConfig ``deviceID`` that is a PCI address no plugin takes left unlisted). So this is a copy,
as it was at 0e91690, of:

- what ``app.cni.conf.load_network_list`` checks before it returns a list (``_parse``,
  ``_network_list``: ``_network_name`` with ``app.cni.names.check_network_name``, ``_plugins``,
  ``_check_plugin``, ``_dns``, ``_capabilities``, ``_conf_version``/``_cni_version``/
  ``_version_list`` with ``app.cni.results.parse_version``/``supported_version``, ``_flag``; numbers
  decoded by ``_number_as_libcni_writes_it``, whose value no rule here reads: only its refusal of
  one beyond float64 matters), its CniError being ``UndecodableConfigError`` here; and the plugins
  it returns;
- ``app.attach.vfs.pci_addresses`` as 0011 calls it (no ``userspace`` probe: a PCI device of a
  host-device that also names a netdev counts as a netdev driver's), with ``_runtime_device_id``,
  ``_host_device_pci``, ``PCI_ADDRESS`` and ``app.cni.conf.runtime_config``;
- ``app.attach.result_facts.device_ids`` and ``_objects``.

Left out: error messages, the cache of loaded lists, the fields a loaded list carries that
``pci_addresses`` never reads. It must never follow later changes of those modules:
``tests/store/test_frozen_migrations.py`` pins the rows it writes.
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
HOST_DEVICE = "host-device"
HOST_DEVICE_NETDEV_FIELDS = ("device", "hwaddr", "kernelpath")
_SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
_VERSION = re.compile(r"([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?")
_IDENTIFIER = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")


class UndecodableConfigError(Exception):
    """Where ``app.cni.conf.load_network_list`` raised CniError: a configuration that adds nothing."""


def pci_addresses(config: bytes, capability_args: Mapping[str, Any]) -> list[str]:
    """The addresses of ``vfs.pci_addresses(load_network_list(config), capability_args)``, in its
    order; ``UndecodableConfigError`` where ``load_network_list`` raised CniError."""
    handed = capability_args.get("deviceID")
    named: dict[str, None] = {}
    for plugin in _network_plugins(config):
        capabilities = plugin.get("capabilities")
        declared = isinstance(capabilities, Mapping) and capabilities.get("deviceID") is True
        if plugin.get("type") == HOST_DEVICE:
            taken = _host_device_pci(plugin, _runtime_device_id(plugin, capability_args))
            if taken is not None:
                named.setdefault(taken)
            continue
        value = plugin.get("deviceID")
        if isinstance(value, str) and PCI_ADDRESS.fullmatch(value):
            named.setdefault(value)
        if declared and isinstance(handed, str) and PCI_ADDRESS.fullmatch(handed):
            named.setdefault(handed)
            continue
        value = plugin.get("pciBusID")
        if isinstance(value, str) and PCI_ADDRESS.fullmatch(value):
            named.setdefault(value)
    return list(named)


def _runtime_device_id(plugin: Mapping[str, Any], capability_args: Mapping[str, Any]) -> object:
    """The ``runtimeConfig.deviceID`` ``plugin`` reads: the runtime's when it declares that
    capability, its own configuration's when no capability it declares is supplied."""
    granted = _runtime_config(plugin, capability_args)
    read = granted if granted else plugin.get("runtimeConfig")
    return read.get("deviceID") if isinstance(read, Mapping) else None


def _runtime_config(plugin: Mapping[str, Any], capability_args: Mapping[str, Any]) -> dict[str, Any]:
    """``conf.runtime_config``: each capability ``plugin`` declares true and the runtime supplied."""
    capabilities = plugin.get("capabilities")
    if not isinstance(capabilities, dict):
        return {}
    return {
        capability: capability_args[capability]
        for capability, enabled in capabilities.items()
        if enabled is True and capability in capability_args
    }


def _host_device_pci(plugin: Mapping[str, Any], handed: object) -> str | None:
    """``vfs._host_device_pci`` without ``userspace``: the runtimeConfig ``deviceID`` it reads, else
    its ``pciBusID``; none when that is no PCI address or a netdev field is set."""
    address: object = handed
    if not (isinstance(handed, str) and handed):
        address = plugin.get("pciBusID")
    if not (isinstance(address, str) and PCI_ADDRESS.fullmatch(address)):
        return None
    if any(isinstance(plugin.get(name), str) and plugin[name] for name in HOST_DEVICE_NETDEV_FIELDS):
        return None
    return address


def device_ids(
    *,
    capability_args: Mapping[str, Any],
    device: Mapping[str, Any] | None,
    result: object,
    handed: Sequence[str],
) -> tuple[str, ...]:
    """``result_facts.device_ids``: the PCI devices ``handed``, the runtimeConfig ``deviceID`` unless
    it is a PCI address not handed, the recorded host device, any ``pciID`` of the result; each a
    non-empty text, once."""
    runtime_device = capability_args.get("deviceID")
    if isinstance(runtime_device, str) and PCI_ADDRESS.fullmatch(runtime_device):
        runtime_device = runtime_device if runtime_device in handed else None
    found: list[object] = [*handed, runtime_device]
    if device is not None:
        found.append(device.get("pci"))
    if isinstance(result, dict):
        found.extend(interface.get("pciID") for interface in _objects(result.get("interfaces")))
    return tuple(dict.fromkeys(item for item in found if isinstance(item, str) and item))


def _objects(value: object) -> list[Mapping[str, Any]]:
    """The objects of ``value`` if it is a list (a malformed result may hold anything there)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


# --- app.cni.conf.load_network_list at 0e91690: whether it decodes, and its plugins ------------------


def _network_plugins(data: bytes) -> list[Mapping[str, Any]]:
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
    if not name or not _IDENTIFIER.fullmatch(name):
        raise UndecodableConfigError("network name")
    plugins, is_single = _plugins(document)
    if is_single or "cniVersions" not in document:
        _conf_version(document)
    else:
        _cni_versions(document)
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
    if capabilities is not None and not (
        isinstance(capabilities, dict) and all(isinstance(on, bool) for on in capabilities.values())
    ):
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
        _dns(dns)


def _dns(dns: object) -> None:
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


def _conf_version(document: Mapping[str, Any]) -> None:
    """A single conf's (or a conflist's without ``cniVersions``) ``cniVersion``: supported."""
    declared = _string(document["cniVersion"]) if "cniVersion" in document else ""
    if (declared or "0.1.0") not in _SUPPORTED_VERSIONS:
        raise UndecodableConfigError(f"unsupported version {declared!r}")


def _cni_versions(document: Mapping[str, Any]) -> None:
    """A conflist's ``cniVersions`` (each a well-formed version) and ``cniVersion``: one supported."""
    declared = _string(document["cniVersion"]) if "cniVersion" in document else ""
    listed = document["cniVersions"]
    if not isinstance(listed, list):
        raise UndecodableConfigError("cniVersions")
    for item in listed:
        version = _string(item)
        if version != "" and _VERSION.fullmatch(version) is None:
            raise UndecodableConfigError(f"invalid version {version!r}")
    candidates = [*listed, *([declared] if declared else [])]
    if not any(version in _SUPPORTED_VERSIONS for version in candidates):
        raise UndecodableConfigError("no supported version")


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise UndecodableConfigError("not a string")
    return value


def _not_json(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _finite_number(text: str) -> float:
    """A number with a fraction or an exponent; one beyond float64 is refused, as Go refuses it
    (``results.finite_float``)."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} beyond float64")
    return value


_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite_number)
