"""Facts derived from a delegate's CNI result and inputs: its IPs, sandbox MACs and device IDs.

The one place the daemon's rules for these facts live. Called by the engine when it records a
delegate's intent and commits its result (the facts are stored on the attachment, so queries never
re-parse results), and by the history-line builders (``app.attach.recording``). The schema
migrations 0004 and 0011 do not call it: they run a frozen copy of it (``migrations/frozen``), so a
change here never changes what an upgrade records. Pure: no I/O, never mutates the result,
never raises on a malformed result (a result it cannot read yields no addresses rather than
failing the operation being recorded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.attach import vfs
from app.cni import results
from app.cni.types import CniError, JsonObject
from app.store.records import DelegateFacts

RESULT_VERSION = "1.1.0"
"""Version of the result handed back to the shim (upstream's daemon answers in 1.1.0)."""


def delegate_facts(
    *,
    capability_args: Mapping[str, Any],
    device: Mapping[str, str] | None,
    result: JsonObject | None,
    handed: Sequence[str] = (),
) -> DelegateFacts:
    """Everything recorded about a delegate once its result is known."""
    ips, macs = addresses(result)
    return DelegateFacts(
        ips=ips,
        macs=macs,
        device_ids=device_ids(capability_args=capability_args, device=device, result=result, handed=handed),
    )


def addresses(result: JsonObject | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(IPs, MACs of sandbox interfaces) of a result, for the history: only texts, whatever else a
    malformed result holds where they are due."""
    if not isinstance(result, dict) or not result:
        return (), ()
    try:
        rich = results.version_at_least(str(result.get("cniVersion", "")), "0.3.0")
        current = result if rich else results.convert(result, RESULT_VERSION)
    except CniError:
        return (), ()
    ips = tuple(ip["address"] for ip in _objects(current.get("ips")) if isinstance(ip.get("address"), str))
    macs = tuple(
        iface["mac"]
        for iface in _objects(current.get("interfaces"))
        if iface.get("sandbox") and isinstance(iface.get("mac"), str) and iface["mac"]
    )
    return ips, macs


def device_ids(
    *,
    capability_args: Mapping[str, Any],
    device: Mapping[str, str] | None,
    result: JsonObject | None,
    handed: Sequence[str] = (),
) -> tuple[str, ...]:
    """Device ids a delegate used: the PCI devices it was ``handed`` (``app.attach.vfs.pci_addresses``
    of its configuration and runtimeConfig: every one, as each was claimed for it), the runtimeConfig
    ``deviceID`` unless it is a PCI address none of its plugins takes (host-device naming its netdev
    by ``device``, that device not bound to a user-space driver: recorded, it would hold that VF
    against other sandboxes), the recorded host
    device, and any ``pciID`` its result reports (each a non-empty text; a null is none, not
    ``"None"``)."""
    runtime_device = capability_args.get("deviceID")
    if isinstance(runtime_device, str) and vfs.PCI_ADDRESS.fullmatch(runtime_device):
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
