"""The pod's ``k8s.v1.cni.cncf.io/network-status`` value and ``AddedInterface`` events, from delegate results.

Called by the engine once every delegate of an ADD has succeeded; the daemon's status publisher
writes the string and posts the events. Pure: no I/O, no Kubernetes client, no SQL; results are
converted (``results.convert``), never mutated.

The value is byte-compatible with upstream Multus (network-attachment-definition client
``CreateNetworkStatuses`` and ``SetNetworkStatus``): each result is read as CNI 1.1.0; a result with
exactly one interface gives one entry, any other gives one entry per sandbox interface; entries are
``json.MarshalIndent(entry, "", "    ")`` joined as ``[e1,e2]``, with Go's HTML escaping. Key order
and omission rules are those of the Go ``NetworkStatus`` and ``DeviceInfo`` structs.

One deliberate deviation: a default route without ``gw`` adds nothing to ``gateway``, where upstream
writes ``"\\u003cnil\\u003e"`` (Go's text for a nil IP), which no consumer can parse as an address.
Upstream skips writing the annotation when there is no entry and for pods named like a system
namespace; those are the caller's decisions (``status_entries`` lets it see the entries).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from app.attach.cluster import InterfaceEvent
from app.cni import results
from app.cni.types import JsonObject

STATUS_VERSION: Final = "1.1.0"
"""The CNI version every result is read as (upstream converts to its current result type)."""

_DNS_LISTS: Final = ("nameservers", "search", "options")
DEVICE_INFO_OBJECTS: Final = {
    "pci": ("pci-address", "vhost-net", "rdma-device", "pf-pci-address", "representor-device"),
    "vdpa": ("parent-device", "driver", "path", "pci-address", "pf-pci-address", "representor-device"),
    "vhost-user": ("mode", "path"),
    "memif": ("role", "path", "mode"),
}
"""The device-info spec's (1.1.0) nested objects and their string fields, in the order of upstream's
``DeviceInfo`` struct (network-attachment-definition-client v1.7); other keys are dropped."""
_GO_HTML_ESCAPES: Final = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class DelegateOutcome:
    """One delegate that succeeded: its network's name (``<ns>/<nad>`` or a file conf's bare name),
    its result as the delegate printed it, whether it is the master (cluster-network) delegate, the
    ``CNIDeviceInfoFile`` contents if any, and the ``CNI_IFNAME`` it ran with (events only; when
    empty, the result's first sandbox interface names it)."""

    network_name: str
    result: JsonObject
    is_master: bool
    device_info: JsonObject | None = None
    ifname: str = ""


@dataclass(slots=True)
class _Entry:
    """One ``NetworkStatus`` entry while it is being filled in."""

    name: str
    default: bool = False
    interface: str = ""
    mac: str = ""
    mtu: int = 0
    ips: list[str] = field(default_factory=list)
    dns: JsonObject = field(default_factory=dict)
    device_info: JsonObject | None = None
    gateway: list[str] = field(default_factory=list)

    def take_interface(self, interface: JsonObject) -> None:
        self.interface = str(interface.get("name") or "")
        self.mac = str(interface.get("mac") or "")
        self.mtu = int(interface.get("mtu") or 0)

    def to_json(self) -> JsonObject:
        """The Go struct's fields in its order, ``omitempty`` ones left out when empty."""
        entry: JsonObject = {"name": self.name}
        optional: tuple[tuple[str, Any], ...] = (
            ("interface", self.interface),
            ("ips", self.ips),
            ("mac", self.mac),
            ("mtu", self.mtu),
            ("default", self.default),
        )
        entry.update((key, value) for key, value in optional if value)
        entry["dns"] = self.dns
        if self.device_info is not None:
            entry["device-info"] = self.device_info
        if self.gateway:
            entry["gateway"] = self.gateway
        return entry


# --- network-status ------------------------------------------------------------------------------


def network_status(outcomes: Sequence[DelegateOutcome]) -> str:
    """The annotation value for these delegates, in their order (``"[]"`` when none has an entry)."""
    return render(status_entries(outcomes))


def status_entries(outcomes: Sequence[DelegateOutcome]) -> list[JsonObject]:
    """The ``NetworkStatus`` entries, delegate by delegate, as ordered JSON objects."""
    return [entry.to_json() for outcome in outcomes for entry in _entries_for(outcome)]


def render(entries: Sequence[JsonObject]) -> str:
    """``[`` + entries as Go's ``MarshalIndent(entry, "", "    ")``, comma-joined, + ``]``."""
    return "[" + ",".join(_go_marshal_indent(entry) for entry in entries) + "]"


def _go_marshal_indent(value: JsonObject) -> str:
    return go_escaped(json.dumps(value, indent=4, ensure_ascii=False))


def go_escaped(text: str) -> str:
    """JSON text from ``json.dumps(..., ensure_ascii=False)`` as Go's encoder writes it: raw UTF-8,
    ``<``, ``>``, ``&``, U+2028 and U+2029 escaped, a lone surrogate replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text).translate(_GO_HTML_ESCAPES)


def _entries_for(outcome: DelegateOutcome) -> list[_Entry]:
    result = results.convert(outcome.result, STATUS_VERSION)
    interfaces = _items(result.get("interfaces"))
    if len(interfaces) == 1:
        return [_single_interface_entry(outcome, result, interfaces[0])]
    return _sandbox_entries(outcome, result, interfaces)


def _new_entry(outcome: DelegateOutcome, result: JsonObject, *, default: bool) -> _Entry:
    return _Entry(
        name=outcome.network_name,
        default=default,
        dns=_dns(result.get("dns")),
        device_info=_device_info(outcome.device_info),
        gateway=_default_gateways(result),
    )


def _single_interface_entry(outcome: DelegateOutcome, result: JsonObject, interface: JsonObject) -> _Entry:
    """``CreateNetworkStatus``: every address of the result, ``default`` for the master as is."""
    entry = _new_entry(outcome, result, default=outcome.is_master)
    if interface.get("sandbox"):
        entry.take_interface(interface)
    entry.ips = [go_ip_string(ip["address"]) for ip in _items(result.get("ips"))]
    return entry


def _sandbox_entries(
    outcome: DelegateOutcome, result: JsonObject, interfaces: Sequence[JsonObject]
) -> list[_Entry]:
    """One entry per sandbox interface; addresses follow their ``interface`` index."""
    ips = _items(result.get("ips"))
    gateway_index = _gateway_interface_index(ips) if outcome.is_master else None
    entries: list[_Entry] = []
    entry_by_index: dict[int, _Entry] = {}
    for index, interface in enumerate(interfaces):
        if not interface.get("sandbox"):
            continue
        first_sandbox = not entries
        default = outcome.is_master and (
            index == gateway_index if gateway_index is not None else first_sandbox
        )
        entry = _new_entry(outcome, result, default=default)
        entry.take_interface(interface)
        entries.append(entry)
        entry_by_index[index] = entry
    for ip in ips:
        target = entry_by_index.get(ip["interface"]) if ip.get("interface") is not None else _last(entries)
        if target is not None:
            target.ips.append(go_ip_string(ip["address"]))
    return entries


_NO_GATEWAY_INTERFACE: Final = -1
"""Upstream's ``gatewayInterfaceIndex`` answer for "no address has both": an address whose
``interface`` is -1 reads as that answer too, so the first sandbox entry is the default."""


def _gateway_interface_index(ips: Sequence[JsonObject]) -> int | None:
    """The ``interface`` of the first address that has both a gateway and an interface index; None
    when there is none, or when that index is -1 (upstream's sentinel for none). Any other index,
    out of range or negative, names no sandbox interface, so no entry is the default."""
    for ip in ips:
        if ip.get("gateway") and ip.get("interface") is not None:
            index = int(ip["interface"])
            return None if index == _NO_GATEWAY_INTERFACE else index
    return None


def _last(entries: Sequence[_Entry]) -> _Entry | None:
    return entries[-1] if entries else None


def _default_gateways(result: JsonObject) -> list[str]:
    """``gw`` of every default route, as Go prints IPs; a default route without ``gw`` adds nothing."""
    return [
        go_ip_string(route["gw"])
        for route in _items(result.get("routes"))
        if _is_default_route(route) and route.get("gw")
    ]


def _is_default_route(route: JsonObject) -> bool:
    """Upstream's test: no ``dst``, or a ``dst`` whose address is 0.0.0.0 or ``::`` (any prefix length)."""
    dst = route.get("dst")
    if dst is None:
        return True
    parsed = results.parse_cidr(dst)
    return parsed is not None and _go_ip(parsed[0]).is_unspecified


def _dns(value: object) -> JsonObject:
    """Upstream's ``DNS`` struct: nameservers, domain, search, options in that order, empty ones left out."""
    dns = value if isinstance(value, dict) else {}
    converted: JsonObject = {}
    for key in ("nameservers", "domain", "search", "options"):
        item = dns.get(key)
        if item:
            converted[key] = list(item) if key in _DNS_LISTS else item
    return converted


def _device_info(value: JsonObject | None) -> JsonObject | None:
    return None if value is None else device_info_document(value)


def device_info_document(value: JsonObject) -> JsonObject:
    """The ``DeviceInfo`` struct as Go re-encodes a device-info file: known string fields only, in order."""
    info = _string_fields(value, ("type", "version"))
    for key, fields in DEVICE_INFO_OBJECTS.items():
        nested = value.get(key)
        if isinstance(nested, dict):
            info[key] = _string_fields(nested, fields)
    return info


def _string_fields(value: JsonObject, keys: Sequence[str]) -> JsonObject:
    return {key: value[key] for key in keys if isinstance(value.get(key), str) and value[key]}


# --- AddedInterface events ------------------------------------------------------------------------------


def interface_events(outcomes: Sequence[DelegateOutcome]) -> list[InterfaceEvent]:
    """``Add <ifname> [<addr/prefix> ...] from <network>`` per delegate with interfaces or IPs."""
    events: list[InterfaceEvent] = []
    for outcome in outcomes:
        result = results.convert(outcome.result, STATUS_VERSION)
        interfaces, ips = _items(result.get("interfaces")), _items(result.get("ips"))
        if not interfaces and not ips:
            continue  # upstream: "some CNI plugin just return empty result"
        events.append(
            InterfaceEvent(
                ifname=outcome.ifname or _first_sandbox_name(interfaces),
                addresses=tuple(go_ipnet_string(ip["address"]) for ip in ips),
                network_name=outcome.network_name,
            )
        )
    return events


def _first_sandbox_name(interfaces: Sequence[JsonObject]) -> str:
    return next((str(item.get("name") or "") for item in interfaces if item.get("sandbox")), "")


# --- addresses as Go prints them ---------------------------------------------------------------------


def _go_ip(address: results.Address) -> results.Address:
    """IPv4-mapped IPv6 addresses are IPv4 to Go (``To4() != nil``)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def go_ip_string(text: str) -> str:
    """``net.IP.String()`` of an address or of a CIDR's address (the prefix length dropped)."""
    parsed = results.parse_cidr(text) if "/" in text else None
    address = parsed[0] if parsed is not None else results.parse_ip(text)
    return str(_go_ip(address)) if address is not None else text


def go_ipnet_string(text: str) -> str:
    """``IPNet.String()`` of a result address: host bits kept; a mapped IPv4 loses 96 bits of prefix."""
    parsed = results.parse_cidr(text)
    if parsed is None:
        return text
    address, prefix = parsed
    shown = _go_ip(address)
    if shown is not address:
        prefix = max(prefix - 96, 0)
    return f"{shown}/{prefix}"


def _items(value: object) -> list[JsonObject]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
