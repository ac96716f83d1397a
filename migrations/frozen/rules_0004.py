"""Revision 0004's facts of an attachment (IPs, sandbox MACs, device IDs), frozen as it derived them.

Copied from ``app.attach.result_facts`` (``delegate_facts``, ``addresses``, ``device_ids``) and the
part of ``app.cni.results`` they reach (a 0.1.0/0.2.0 result's validation and conversion to
``ips``), as they were at commit ce6b4e2 (2026-12-05), which wrote revision 0004. It must never
follow later changes of those modules: a store upgraded from 0003 by any release gets the facts the
0004 release recorded. So, unlike today's ``result_facts``:

- a runtimeConfig ``deviceID`` is always listed (today one that is a PCI address no plugin takes is
  dropped; 0004 had no idea of what a plugin takes);
- a value that is not a text is written as Python writes it (``str``): a null ``address``, ``mac``,
  ``pciID``, ``deviceID`` or host ``pci`` gives ``"None"``, an address missing from an ``ips``
  entry gives ``""`` (device ids drop empty texts, IPs do not);
- a 0.1.0/0.2.0 result is validated by the rules of then (an empty ``gateway``/``gw`` is no IP
  address, a route's integer field any integer).

One departure, where 0004 as written did not compute anything: a result whose ``ips`` or
``interfaces`` is neither a list nor another iterable (null, a number, a boolean) raised TypeError
and aborted the upgrade (the daemon could not start). No store was ever upgraded so, so here such a
field holds nothing, as ``result_facts`` reads it since 47b4d58/701bc40.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

Facts = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
"""(ips, macs, device_ids) of one attachment."""

_SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
_VERSION = re.compile(r"([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?")
_ROUTE_INT_FIELDS = ("mtu", "advmss", "priority", "table", "scope")


class _UnreadableError(Exception):
    """What ``app.cni.results`` raised as CniError: a version or result it could not read."""


def facts(*, capability_args: Mapping[str, Any], device: Mapping[str, Any] | None, result: Any) -> Facts:
    """``result_facts.delegate_facts`` of ce6b4e2 (``result``: a decoded object, else None)."""
    ips, macs = _addresses(result)
    return ips, macs, _device_ids(capability_args=capability_args, device=device, result=result)


def _addresses(result: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not result:
        return (), ()
    try:
        rich = _parse_version(str(result.get("cniVersion", ""))) >= (0, 3, 0)
        current = result if rich else _legacy_to_rich(result)
    except _UnreadableError:
        return (), ()
    ips = tuple(
        str(ip.get("address", "")) for ip in _iterated(current.get("ips", [])) if isinstance(ip, dict)
    )
    macs = tuple(
        str(iface.get("mac", ""))
        for iface in _iterated(current.get("interfaces", []))
        if isinstance(iface, dict) and iface.get("sandbox") and iface.get("mac")
    )
    return ips, macs


def _device_ids(
    *, capability_args: Mapping[str, Any], device: Mapping[str, Any] | None, result: Any
) -> tuple[str, ...]:
    found = [str(capability_args.get("deviceID", ""))]
    if device is not None:
        found.append(str(device.get("pci", "")))
    for interface in _iterated((result or {}).get("interfaces", [])):
        if isinstance(interface, dict):
            found.append(str(interface.get("pciID", "")))
    return tuple(dict.fromkeys(item for item in found if item))


def _iterated(value: object) -> Iterable[object]:
    """``value`` as ce6b4e2 iterated it (a text, an object: their characters, keys); nothing where
    it raised TypeError (the one departure, above)."""
    return value if isinstance(value, str | list | dict) else ()


# --- app.cni.results of ce6b4e2: versions, a 0.1.0/0.2.0 result's validation and conversion ---------


def _parse_version(version: str) -> tuple[int, int, int]:
    if version == "":
        return (0, 1, 0)
    match = _VERSION.fullmatch(version)
    if match is None:
        raise _UnreadableError(version)
    major, minor, patch = (int(part) if part else 0 for part in match.groups())
    return (major, minor, patch)


def _legacy_to_rich(result: Mapping[str, Any]) -> dict[str, Any]:
    """``results.convert(result, "1.1.0")`` of a result below 0.3.0: its ``ips`` only (the one field
    read after it: ``interfaces`` are rebuilt from ``ip4``/``ip6``, which carry none)."""
    declared = result.get("cniVersion", "")
    if not isinstance(declared, str) or (declared or "0.1.0") not in _SUPPORTED_VERSIONS:
        raise _UnreadableError(declared)
    for key in ("ip4", "ip6"):
        if result.get(key) is not None:
            _check_legacy_ip(result[key])
    if result.get("dns") is not None:
        _check_dns(result["dns"])
    ips = [{"address": result[key]["ip"]} for key in ("ip4", "ip6") if isinstance(result.get(key), dict)]
    return {"ips": ips}


def _check_legacy_ip(value: object) -> None:
    config = _object(value)
    if "ip" not in config:
        raise _UnreadableError("ip")
    _cidr(config["ip"])
    if config.get("gateway") is not None:
        _ip(config["gateway"])
    for route in _optional_list(config, "routes"):
        route = _object(route)
        if "dst" not in route:
            raise _UnreadableError("dst")
        _cidr(route["dst"])
        if route.get("gw") is not None:
            _ip(route["gw"])
        for key in _ROUTE_INT_FIELDS:
            value = route.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise _UnreadableError(key)


def _check_dns(value: object) -> None:
    dns = _object(value)
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
        raise _UnreadableError(key)
    return value


def _object(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _UnreadableError("an object")
    return value


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _UnreadableError("a string")
    return value


def _ip(value: object) -> None:
    if _parse_ip(_string(value)) is None:
        raise _UnreadableError("an IP address")


def _cidr(value: object) -> None:
    text = _string(value)
    address_text, slash, prefix_text = text.partition("/")
    if not slash or not prefix_text.isascii() or not prefix_text.isdigit() or len(prefix_text) > 3:
        raise _UnreadableError("a CIDR")
    address = _parse_ip(address_text)
    if address is None or int(prefix_text) > address.max_prefixlen:
        raise _UnreadableError("a CIDR")


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if "%" in text or "/" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
