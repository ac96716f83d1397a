"""Revision 0004's facts of an attachment (IPs, sandbox MACs, device IDs): main's rules at 0e91690.

No release shipped the rules 0004 was written with for good: each release ran 0004 with its own
``app.attach.result_facts``, and the last to run it is main at 0e91690. A store that has not run 0004
yet (an upgrade from an older release) must get exactly what that release computes, bugs it fixed
staying fixed (a null ``address``, ``mac``, ``pciID`` or host ``pci`` written as the text "None", the
IPs of a 0.2.0 result with an empty ``gateway`` dropped). So this is a copy, as it was at 0e91690, of:

- ``app.attach.result_facts``: ``delegate_facts``, ``addresses``, ``device_ids`` (0004 hands no PCI
  device: ``handed`` is empty, so a runtimeConfig ``deviceID`` that is a PCI address is never listed
  here; 0011 lists it where a plugin takes it) and ``_objects``;
- ``app.attach.vfs.PCI_ADDRESS``;
- what ``addresses`` reaches of ``app.cni.results``: ``version_at_least``/``parse_version``, and
  ``convert`` of a 0.1.0/0.2.0 result to 1.1.0 (``supported_version``, the 0.1.0/0.2.0 validation:
  ``_validate_legacy_ip``, ``_validate_route``, ``_check_ip``, ``_int``, ``_validate_dns``...,
  ``_legacy_to_rich``), whose CniError is ``UnreadableResultError`` here.

Left out: error messages (any of them meant "no addresses") and the shortcuts that decide nothing
(a plain IPv4 text accepted by regular expression before the full parse, which accepts it too). It
must never follow later changes of those modules: ``tests/store/test_frozen_migrations.py`` pins
the rows it writes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

Facts = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
"""(ips, macs, device_ids) of one attachment."""

PCI_ADDRESS = re.compile(
    r"(?:[0-9a-fA-F]{4}|[1-9a-fA-F][0-9a-fA-F]{4,7}):[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
)
_SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
_VERSION = re.compile(r"([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?")
_RICH_FROM = (0, 3, 0)
_ROUTE_INT_FIELDS = ("mtu", "advmss", "priority", "table", "scope")
_GO_INT_MIN = -(2**63)
_GO_INT_MAX = 2**63 - 1
_MISSING = object()


class UnreadableResultError(Exception):
    """Where ``app.cni.results`` raised CniError: a result ``addresses`` reads nothing from."""


def delegate_facts(
    *, capability_args: Mapping[str, Any], device: Mapping[str, Any] | None, result: object
) -> Facts:
    """``result_facts.delegate_facts`` (no ``handed``): (ips, macs, device_ids)."""
    ips, macs = addresses(result)
    return ips, macs, device_ids(capability_args=capability_args, device=device, result=result)


def addresses(result: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``result_facts.addresses``: (IPs, MACs of sandbox interfaces), only texts."""
    if not isinstance(result, dict) or not result:
        return (), ()
    try:
        rich = _parse_version(str(result.get("cniVersion", ""))) >= _RICH_FROM
        current = result if rich else _legacy_to_rich(result)
    except UnreadableResultError:
        return (), ()
    ips = tuple(ip["address"] for ip in _objects(current.get("ips")) if isinstance(ip.get("address"), str))
    macs = tuple(
        iface["mac"]
        for iface in _objects(current.get("interfaces"))
        if iface.get("sandbox") and isinstance(iface.get("mac"), str) and iface["mac"]
    )
    return ips, macs


def device_ids(
    *, capability_args: Mapping[str, Any], device: Mapping[str, Any] | None, result: object
) -> tuple[str, ...]:
    """``result_facts.device_ids`` with nothing ``handed``: the runtimeConfig ``deviceID`` unless it
    is a PCI address (none is handed), the recorded host device, any ``pciID`` of the result; each
    a non-empty text, once."""
    runtime_device = capability_args.get("deviceID")
    if isinstance(runtime_device, str) and PCI_ADDRESS.fullmatch(runtime_device):
        runtime_device = None  # ``runtime_device if runtime_device in handed else None``, handed empty
    found: list[object] = [runtime_device]
    if device is not None:
        found.append(device.get("pci"))
    if isinstance(result, dict):
        found.extend(interface.get("pciID") for interface in _objects(result.get("interfaces")))
    return tuple(dict.fromkeys(item for item in found if isinstance(item, str) and item))


def _objects(value: object) -> list[Mapping[str, Any]]:
    """The objects of ``value`` if it is a list (a malformed result may hold anything there)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


# --- app.cni.results at 0e91690: versions, a 0.1.0/0.2.0 result's validation and conversion ---------


def _parse_version(version: str) -> tuple[int, int, int]:
    if version == "":
        return (0, 1, 0)
    match = _VERSION.fullmatch(version)
    if match is None:
        raise UnreadableResultError(version)
    major, minor, patch = (int(part) if part else 0 for part in match.groups())
    return (major, minor, patch)


def _legacy_to_rich(result: Mapping[str, Any]) -> Mapping[str, Any]:
    """``results.convert(result, "1.1.0")`` of a result whose version reads below 0.3.0: its
    ``cniVersion`` a supported text, the result valid as 0.1.0/0.2.0; then ``ip4`` and ``ip6``
    become ``ips`` (the one field read after it: ``interfaces`` is not carried across formats)."""
    declared = result.get("cniVersion", "")
    if not isinstance(declared, str):
        raise UnreadableResultError("cniVersion")
    if (declared or "0.1.0") not in _SUPPORTED_VERSIONS:
        raise UnreadableResultError(declared)
    for key in ("ip4", "ip6"):
        if result.get(key) is not None:
            _validate_legacy_ip(result[key])
    if result.get("dns") is not None:
        _validate_dns(result["dns"])
    configs = [result.get(key) for key in ("ip4", "ip6")]
    return {"ips": [{"address": config["ip"]} for config in configs if isinstance(config, dict)]}


def _validate_legacy_ip(value: object) -> None:
    config = _object(value)
    if "ip" not in config:
        raise UnreadableResultError("ip")
    _cidr(config["ip"])
    if config.get("gateway") is not None:
        _check_ip(config["gateway"])
    for route in _optional_list(config, "routes"):
        _validate_route(route)


def _validate_route(value: object) -> None:
    route = _object(value)
    dst = route.get("dst", _MISSING)
    if dst is _MISSING:
        raise UnreadableResultError("dst")
    _cidr(dst)
    if route.get("gw") is not None:
        _check_ip(route["gw"])
    for key in _ROUTE_INT_FIELDS:
        if route.get(key) is not None:
            _int(route[key])


def _validate_dns(value: object) -> None:
    dns = _object(value)
    if not dns:
        return
    if dns.get("domain") is not None:
        _string(dns["domain"])
    for key in ("nameservers", "search", "options"):
        for item in _optional_list(dns, key):
            _string(item)


def _optional_list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise UnreadableResultError(key)
    return value


def _object(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise UnreadableResultError("an object")
    return value


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise UnreadableResultError("a string")
    return value


def _int(value: object) -> None:
    """An integer Go's ``int`` holds."""
    if not isinstance(value, int) or isinstance(value, bool) or not _GO_INT_MIN <= value <= _GO_INT_MAX:
        raise UnreadableResultError("an integer")


def _check_ip(value: object) -> None:
    """An IP address, or an empty text (no address at all, as Go's ``net.IP`` decodes it)."""
    text = _string(value)
    if text and _parse_ip(text) is None:
        raise UnreadableResultError("an IP address")


def _cidr(value: object) -> None:
    text = _string(value)
    address_text, slash, prefix_text = text.partition("/")
    if not slash or not prefix_text.isascii() or not prefix_text.isdigit() or len(prefix_text) > 3:
        raise UnreadableResultError("a CIDR")
    address = _parse_ip(address_text)
    if address is None or int(prefix_text) > address.max_prefixlen:
        raise UnreadableResultError("a CIDR")


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if "%" in text or "/" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
