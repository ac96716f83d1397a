"""Facts derived from a delegate's CNI result and inputs: its IPs, sandbox MACs and device IDs.

The one place these CNI rules live. Called by the engine when it records a delegate's intent and
commits its result (the facts are stored on the attachment, so queries never re-parse results),
by the history-line builders (``app.attach.recording``), and by the schema migration that
backfilled attachments recorded before the facts were. Pure: no I/O, never mutates the result,
never raises on a malformed result (a result it cannot read yields no addresses rather than
failing the operation being recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.cni import results
from app.cni.types import CniError, JsonObject
from app.store.records import DelegateFacts

RESULT_VERSION = "1.1.0"
"""Version of the result handed back to the shim (upstream's daemon answers in 1.1.0)."""


def delegate_facts(
    *, capability_args: Mapping[str, Any], device: Mapping[str, str] | None, result: JsonObject | None
) -> DelegateFacts:
    """Everything recorded about a delegate once its result is known."""
    ips, macs = addresses(result)
    return DelegateFacts(
        ips=ips,
        macs=macs,
        device_ids=device_ids(capability_args=capability_args, device=device, result=result),
    )


def addresses(result: JsonObject | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(IPs, MACs of sandbox interfaces) of a result, for the history."""
    if not result:
        return (), ()
    try:
        rich = results.version_at_least(str(result.get("cniVersion", "")), "0.3.0")
        current = result if rich else results.convert(result, RESULT_VERSION)
    except CniError:
        return (), ()
    ips = tuple(str(ip.get("address", "")) for ip in current.get("ips") or () if isinstance(ip, dict))
    macs = tuple(
        str(iface.get("mac", ""))
        for iface in current.get("interfaces") or ()
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
    for interface in (result or {}).get("interfaces") or ():
        if isinstance(interface, dict):
            found.append(str(interface.get("pciID", "")))
    return tuple(dict.fromkeys(item for item in found if item))
