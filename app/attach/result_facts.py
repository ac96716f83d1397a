"""Facts read off a delegate's CNI result: its sandbox IPs and MACs, and the device IDs it used.

Called by the history-line builders (``app.attach.recording``) for every ADD and DEL step. Pure:
no I/O, never mutates the result, never raises on a malformed result (a result it cannot read
yields no facts rather than failing the operation that is being recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.cni import results
from app.cni.types import CniError, JsonObject

RESULT_VERSION = "1.1.0"
"""Version of the result handed back to the shim (upstream's daemon answers in 1.1.0)."""


def addresses(result: JsonObject | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(IPs, MACs of sandbox interfaces) of a result, for the history."""
    if not result:
        return (), ()
    try:
        rich = results.version_at_least(str(result.get("cniVersion", "")), "0.3.0")
        current = result if rich else results.convert(result, RESULT_VERSION)
    except CniError:
        return (), ()
    ips = tuple(str(ip.get("address", "")) for ip in current.get("ips", []) if isinstance(ip, dict))
    macs = tuple(
        str(iface.get("mac", ""))
        for iface in current.get("interfaces", [])
        if isinstance(iface, dict) and iface.get("sandbox") and iface.get("mac")
    )
    return ips, macs


def device_ids(
    *, capability_args: Mapping[str, Any], device: Mapping[str, str] | None, result: JsonObject | None
) -> tuple[str, ...]:
    """Device ids a delegate used: the runtimeConfig ``deviceID``, the recorded host device, and
    any ``pciID`` its result reports."""
    found = [str(capability_args.get("deviceID", ""))]
    if device is not None:
        found.append(str(device.get("pci", "")))
    for interface in (result or {}).get("interfaces", []):
        if isinstance(interface, dict):
            found.append(str(interface.get("pciID", "")))
    return tuple(dict.fromkeys(item for item in found if item))
