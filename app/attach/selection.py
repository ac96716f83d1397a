"""Network selection: the pod annotations that pick networks, and what a delegate receives from them.

Owns the parsing of ``k8s.v1.cni.cncf.io/networks`` and ``v1.multus-cni.io/default-network`` into
``NetworkSelection`` values, the rules that turn one selection into a delegate's inputs (capability
args, CNI_ARGS, ``args.cni``, ``deviceID``), and the reading of a NetworkAttachmentDefinition's
``spec.config``. Called by network resolution on ADD; DEL, CHECK and GC replay the checkpoint instead.
Pure: no I/O, no Kubernetes client, no SQL; inputs are never mutated.

Wire compatibility: every rule is upstream Multus's (``pkg/k8sclient``, ``pkg/types/conf.go``, the
network-attachment-definition client), and every upstream error text is kept verbatim inside the
message so users can search for it. Errors are ``CniError`` code 7; the message starts with
``annotation <key>: `` (or ``network-attachment-definition <ns>/<name>: ``) and, when an element
is at fault, ``details`` names it (``element 1, network default/macvlan``). Decoding follows Go's
``encoding/json``: keys match case-insensitively, ``null`` leaves a field unset, type errors read
``json: cannot unmarshal <kind> into Go struct field ...``; syntax errors carry Python's wording.

Decisions where upstream panics, fails late or silently does something surprising:

- an empty network name (``"a,,b"``, ``"ns/"``, ``{"name": ""}``) is refused here; upstream fails
  later looking up a NAD named ``""``. A ``null`` element is refused (upstream panics), as is an
  empty list for the default-network annotation (upstream indexes ``networks[0]`` and panics).
- ``interface`` in the JSON form gets the comma form's check (≤ 15 bytes, no ``/`` or whitespace);
  upstream passes it on and libcni refuses the same names later, with a vaguer message.
- ``ips: []`` and ``portMappings: []`` mean "no request" (upstream's empty-but-present lists add
  ``IP=`` with an empty value to CNI_ARGS and wipe the runtime's ``portMappings``); ``default-route:
  []`` means no request too (upstream marks every delegate for default-route filtering, a filter
  that is a no-op at upstream HEAD anyway). An empty string in ``default-route`` is refused
  (Go decodes it to a nil IP and counts it as an IPv6 gateway).
- ``ipam-claim-reference`` is accepted (must be a string) and kept on the selection, but not passed
  to the delegate, as upstream. It is not refused: OVN-Kubernetes reads it from the pod's annotation
  itself (KubeVirt persistent IPs), so refusing it would break working clusters.
- Integral floats in ``cni-args`` (``1.0``, ``1e3``) are passed as integers, as Go's float64
  re-encoding does, so plugins decoding into integer fields accept them; integers keep every digit.
- The runtime's ``runtimeConfig`` keys other than the six capabilities pass through to delegates
  (upstream's typed struct drops them).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from app.attach.cluster import DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION
from app.cni import conf as cniconf
from app.cni import results
from app.cni.types import CniError, ErrorCode, JsonObject

_JSON_MARKERS: Final = '[{"'
_DNS1123_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_IFNAME_MAX_BYTES: Final = 15
_IFNAME_FORBIDDEN: Final = frozenset(" \t\n\v\f\r/")
_GO_SPACE: Final = (
    "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
"""Go's ``unicode.IsSpace`` set, which ``strings.TrimSpace`` strips."""
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_INT64: Final = range(-(2**63), 2**63)
_EXACT_FLOAT_INT: Final = 2**53
_DEVICE_INFO_DIR: Final = "/var/run/k8s.cni.cncf.io/devinfo/cni"

CAPABILITY_IPS: Final = "ips"
CAPABILITY_MAC: Final = "mac"
CAPABILITY_INFINIBAND_GUID: Final = "infinibandGUID"
CAPABILITY_PORT_MAPPINGS: Final = "portMappings"
CAPABILITY_BANDWIDTH: Final = "bandwidth"
CAPABILITY_DEVICE_ID: Final = "deviceID"
CAPABILITY_DEVICE_INFO_FILE: Final = "CNIDeviceInfoFile"


@dataclass(frozen=True, slots=True)
class NetworkSelection:
    """One element of a selection annotation, validated, with its namespace defaulted.

    ``interface`` is ``interface``, else the legacy ``interfaceRequest``; ``""`` lets the resolver
    name it (``net<position>``). ``port_mappings`` entries and ``bandwidth`` hold exactly the keys
    of upstream's ``PortMapEntry``/``BandwidthEntry`` (in their order); ``cni_args`` is None when
    the element had none (``{}`` is a request too: it adds an empty ``args.cni``). Mappings are
    shared, never copied on read: treat them as read-only (and a selection holding one is not
    hashable).
    """

    name: str
    namespace: str
    interface: str = ""
    ips: tuple[str, ...] = ()
    mac: str = ""
    infiniband_guid: str = ""
    port_mappings: tuple[JsonObject, ...] = ()
    bandwidth: JsonObject | None = None
    device_id: str = ""
    cni_args: JsonObject | None = None
    default_route: tuple[str, ...] = ()
    ipam_claim_reference: str = ""
    """Kept for callers that look; never delivered to the delegate (as upstream)."""

    @property
    def qualified_name(self) -> str:
        """``<namespace>/<name>``: the delegate's name in network-status and events."""
        return f"{self.namespace}/{self.name}"


# --- the annotations ------------------------------------------------------------------------------


def parse_networks(value: str, *, pod_namespace: str) -> list[NetworkSelection]:
    """The networks a ``k8s.v1.cni.cncf.io/networks`` value selects, in order; ``""`` selects none.

    JSON (a list of objects) when the value contains ``[``, ``{`` or ``"``; otherwise the comma form
    ``[<namespace>/]<name>[@<ifname>]``. Elements without a namespace get ``pod_namespace``.
    """
    if value == "":
        return []
    return _parse(value, default_namespace=pod_namespace, annotation=NETWORKS_ANNOTATION)


def parse_default_network(value: str, *, multus_namespace: str) -> NetworkSelection:
    """The single network of a ``v1.multus-cni.io/default-network`` value (namespace defaults to multus's)."""
    annotation = DEFAULT_NETWORK_ANNOTATION
    if value == "":
        raise _annotation_error(
            annotation, 'parsePodNetworkAnnotation: pod annotation does not have "network" as key'
        )
    selections = _parse(value, default_namespace=multus_namespace, annotation=annotation)
    if len(selections) > 1:
        raise _annotation_error(
            annotation, f"tryLoadK8sPodDefaultNetwork: more than one default network is specified: {value}"
        )
    if not selections:
        raise _annotation_error(annotation, "tryLoadK8sPodDefaultNetwork: no default network is specified")
    return selections[0]


def check_default_routes(selections: Iterable[NetworkSelection]) -> None:
    """Refuse more than one IPv4 or more than one IPv6 ``default-route`` gateway across all selections."""
    families = [_family(gateway) for selection in selections for gateway in selection.default_route]
    if families.count(4) > 1 or families.count(6) > 1:
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "multus does not support ECMP for default-route",
            f"{families.count(4)} IPv4 and {families.count(6)} IPv6 default-route gateways requested",
        )


def _parse(value: str, *, default_namespace: str, annotation: str) -> list[NetworkSelection]:
    value = _without_surrogates(value)
    if any(marker in value for marker in _JSON_MARKERS):
        elements = _decode_json_form(value, annotation=annotation)
    else:
        elements = _decode_comma_form(value, annotation=annotation)
    return [
        _validated(element, index=index, default_namespace=default_namespace, annotation=annotation)
        for index, element in enumerate(elements)
    ]


def _annotation_error(annotation: str, text: str, details: str = "") -> CniError:
    return CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"annotation {annotation}: {text}", details)


# --- comma form ---------------------------------------------------------------------------------------


def _decode_comma_form(value: str, *, annotation: str) -> list[dict[str, Any]]:
    elements: list[dict[str, Any]] = []
    for index, item in enumerate(value.split(",")):
        try:
            namespace, name, ifname = _parse_object_name(_go_trim(item))
        except _ParseError as err:
            where = f"item {index}: {_go_quote(_go_trim(item))}"
            raise _annotation_error(annotation, f"parsePodNetworkAnnotation: {err}", where) from None
        elements.append({"name": name, "namespace": namespace, "interface": ifname})
    return elements


class _ParseError(Exception):
    """Upstream's error text for one item or element; the caller adds the annotation's name.

    ``where`` names the element at fault (``element 1``) when the text itself does not.
    """

    def __init__(self, text: str, where: str = "") -> None:
        super().__init__(text)
        self.where = where


def _parse_object_name(item: str) -> tuple[str, str, str]:
    """``parsePodNetworkObjectName``: ``[<ns>/]<name>[@<ifname>]`` → (namespace, name, ifname)."""
    slash_items = item.split("/")
    if len(slash_items) > 2:
        raise _ParseError("parsePodNetworkObjectName: Invalid network object (failed at '/')")
    namespace = _go_trim(slash_items[0]) if len(slash_items) == 2 else ""
    at_items = slash_items[-1].split("@")
    if len(at_items) > 2:
        raise _ParseError("parsePodNetworkObjectName: Invalid network object (failed at '@')")
    name = _go_trim(at_items[0])
    ifname = _go_trim(at_items[1]) if len(at_items) == 2 else ""
    for part in (namespace, name):
        if part and not _DNS1123_LABEL.fullmatch(part):
            raise _ParseError(
                "parsePodNetworkObjectName: Failed to parse: one or more items did not match comma-delimited "
                "format (must consist of lower case alphanumeric characters). Must start and end with an "
                f"alphanumeric character), mismatch @ '{part}'"
            )
    _check_ifname(ifname)
    return namespace, name, ifname


def _check_ifname(ifname: str) -> None:
    too_long = len(ifname.encode("utf-8", "surrogatepass")) > _IFNAME_MAX_BYTES
    if too_long or any(char in _IFNAME_FORBIDDEN for char in ifname):
        raise _ParseError(
            "parsePodNetworkObjectName: Failed to parse interface name: must be less than 15 chars and "
            f"not contain '/' or spaces. interface name '{ifname}'"
        )


# --- JSON form: decoding as Go's encoding/json does ------------------------------------------------


_JSON_PREFIX: Final = (
    "parsePodNetworkAnnotation: failed to parse pod Network Attachment Selection Annotation JSON format: "
)
_ELEMENT: Final = "NetworkSelectionElement"


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs in document order, duplicates included (Go sees them all)."""


def _decode_json_form(value: str, *, annotation: str) -> list[dict[str, Any]]:
    try:
        document = json.loads(value, object_pairs_hook=_Pairs, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        raise _annotation_error(annotation, _JSON_PREFIX + str(err)) from None
    try:
        return _decode_list(document)
    except _ParseError as err:
        raise _annotation_error(annotation, _JSON_PREFIX + str(err), err.where) from None
    except RecursionError:
        raise _annotation_error(annotation, _JSON_PREFIX + "exceeded max depth") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def _decode_list(document: object) -> list[dict[str, Any]]:
    if not _is_array(document):
        raise _ParseError(
            f"json: cannot unmarshal {_go_kind(document)} into Go value of type []*types.{_ELEMENT}"
        )
    elements: list[dict[str, Any]] = []
    for index, item in enumerate(document):
        try:
            elements.append(_decode_element(item))
        except _ParseError as err:
            raise _ParseError(str(err), f"element {index}") from None
    return elements


def _decode_element(item: object) -> dict[str, Any]:
    if item is None:
        raise _ParseError("null is not a network selection element")
    if not isinstance(item, _Pairs):
        raise _ParseError(f"json: cannot unmarshal {_go_kind(item)} into Go value of type types.{_ELEMENT}")
    element: dict[str, Any] = {}
    for key, value in item:
        field = _FIELD_BY_FOLDED_KEY.get(_go_fold(key)) if key not in _DECODERS else key
        if field is None:
            continue  # unknown keys are ignored, as upstream
        if value is None:
            # Go: null sets a list, object or pointer to nil, and leaves a string as it was.
            if field not in _STRING_FIELDS:
                element.pop(field, None)
            continue
        element[field] = _DECODERS[field](value, field)
    return element


def _go_fold(key: str) -> str:
    """Go's case folding for field names: ASCII letters, plus the Kelvin sign and the long s."""
    return "".join(_FOLD_SPECIAL.get(char, char.upper() if char.isascii() else char) for char in key)


_FOLD_SPECIAL: Final = {"\u212a": "K", "\u017f": "S"}


def _go_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if _is_array(value):
        return "array"
    return "object"


def _is_array(value: object) -> TypeGuard[list[Any]]:
    return isinstance(value, list) and not isinstance(value, _Pairs)


def _type_error(value: object, field: str, go_type: str, struct: str = _ELEMENT) -> _ParseError:
    kind = _go_kind(value)
    return _ParseError(
        f"json: cannot unmarshal {kind} into Go struct field {struct}.{field} of type {go_type}"
    )


def _decode_string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _type_error(value, field, "string")
    return value


def _decode_strings(value: object, field: str) -> list[str]:
    if not _is_array(value):
        raise _type_error(value, field, "[]string")
    return [_decode_string(item, field) if item is not None else "" for item in value]


def _decode_int(value: object, field: str, struct: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(value, field, "int", struct)
    if isinstance(value, float) or value not in _INT64:
        literal = json.dumps(value)
        raise _ParseError(
            f"json: cannot unmarshal number {literal} into Go struct field {struct}.{field} of type int"
        )
    return value


def _decode_port_mappings(value: object, field: str) -> list[JsonObject | None]:
    if not _is_array(value):
        raise _type_error(value, field, "[]*types.PortMapEntry")
    return [None if item is None else _decode_port_mapping(item, field) for item in value]


def _decode_port_mapping(item: object, field: str) -> JsonObject:
    if not isinstance(item, _Pairs):
        raise _type_error(item, field, "types.PortMapEntry")
    given = _go_struct(item, ("hostPort", "containerPort", "protocol", "hostIP"))
    entry: JsonObject = {}
    for key in ("hostPort", "containerPort"):
        entry[key] = (
            _decode_int(given[key], f"{field}.{key}", "PortMapEntry") if given.get(key) is not None else 0
        )
    for key in ("protocol", "hostIP"):
        text = _decode_string(given[key], f"{field}.{key}") if given.get(key) is not None else ""
        if text:
            entry[key] = text
    return entry


def _decode_bandwidth(value: object, field: str) -> JsonObject:
    keys = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
    if not isinstance(value, _Pairs):
        raise _type_error(value, field, "types.BandwidthEntry")
    given = _go_struct(value, keys)
    return {
        key: _decode_int(given[key], f"{field}.{key}", "BandwidthEntry") if given.get(key) is not None else 0
        for key in keys
    }


def _go_struct(pairs: _Pairs, keys: Sequence[str]) -> dict[str, Any]:
    """The pairs that name one of ``keys`` (case-insensitively), later duplicates winning."""
    folded = {_go_fold(key): key for key in keys}
    found: dict[str, Any] = {}
    for key, value in pairs:
        canonical = key if key in keys else folded.get(_go_fold(key))
        if canonical is not None:
            found[canonical] = value
    return found


def _decode_cni_args(value: object, field: str) -> JsonObject:
    if not isinstance(value, _Pairs):
        raise _type_error(value, field, "map[string]interface {}")
    decoded = _plain(value)
    assert isinstance(decoded, dict)
    return decoded


def _plain(value: object) -> object:
    """A decoded JSON value with objects as dicts (last duplicate wins) and integral floats as ints."""
    if isinstance(value, _Pairs):
        return {key: _plain(item) for key, item in value}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_FLOAT_INT:
        return int(value)
    return value


def _decode_gateways(value: object, field: str) -> list[str]:
    if not _is_array(value):
        raise _type_error(value, field, "[]net.IP")
    gateways: list[str] = []
    for item in value:
        if item is None:
            raise _ParseError("default-route: null is not an IP address")
        if not isinstance(item, str):
            raise _type_error(item, field, "net.IP")
        if item == "":
            raise _ParseError("default-route: empty IP address")
        if results.parse_ip(item) is None:
            raise _ParseError(f"invalid IP address: {item}")
        gateways.append(item)
    return gateways


_DECODERS: Final[dict[str, Callable[[object, str], Any]]] = {
    "name": _decode_string,
    "namespace": _decode_string,
    "ips": _decode_strings,
    "mac": _decode_string,
    "infiniband-guid": _decode_string,
    "interface": _decode_string,
    "interfaceRequest": _decode_string,
    "portMappings": _decode_port_mappings,
    "bandwidth": _decode_bandwidth,
    "deviceID": _decode_string,
    "cni-args": _decode_cni_args,
    "default-route": _decode_gateways,
    "ipam-claim-reference": _decode_string,
}
_STRING_FIELDS: Final = frozenset(
    (
        "name",
        "namespace",
        "mac",
        "infiniband-guid",
        "interface",
        "interfaceRequest",
        "deviceID",
        "ipam-claim-reference",
    )
)
_FIELD_BY_FOLDED_KEY: Final = {_go_fold(field): field for field in _DECODERS}


# --- validation (parsePodNetworkAnnotation's loop, then ours) --------------------------------------


def _validated(
    element: Mapping[str, Any], *, index: int, default_namespace: str, annotation: str
) -> NetworkSelection:
    namespace = element.get("namespace") or default_namespace
    name = element.get("name", "")
    where = f"element {index}, network {namespace}/{name}"
    try:
        _check_mac(element.get("mac", ""), "parsePodNetworkAnnotation: failed to mac")
        _check_mac(
            element.get("infiniband-guid", ""),
            "parsePodNetworkAnnotation: failed to validate infiniband GUID",
        )
        for ip in element.get("ips") or ():
            _check_ip_request(ip)
        if not name:
            raise _ParseError("parsePodNetworkAnnotation: network name is empty")
        interface = element.get("interface") or element.get("interfaceRequest", "")
        _check_ifname(interface)
    except _ParseError as err:
        raise _annotation_error(annotation, str(err), where) from None
    return NetworkSelection(
        name=name,
        namespace=namespace,
        interface=interface,
        ips=tuple(element.get("ips") or ()),
        mac=element.get("mac", ""),
        infiniband_guid=element.get("infiniband-guid", ""),
        port_mappings=tuple(entry for entry in element.get("portMappings") or () if entry is not None),
        bandwidth=element.get("bandwidth"),
        device_id=element.get("deviceID", ""),
        cni_args=element.get("cni-args"),
        default_route=tuple(element.get("default-route") or ()),
        ipam_claim_reference=element.get("ipam-claim-reference", ""),
    )


def _check_mac(text: str, context: str) -> None:
    if text and not _is_go_mac(text):
        raise _ParseError(f"{context}: address {text}: invalid MAC address")


def _check_ip_request(text: str) -> None:
    if "/" in text:
        if results.parse_cidr(text) is None:
            raise _ParseError(f"failed to parse CIDR {_go_quote(text)}: invalid CIDR address: {text}")
    elif results.parse_ip(text) is None:
        raise _ParseError(f"failed to parse IP address {_go_quote(text)}")


def _is_go_mac(text: str) -> bool:
    """Go's ``net.ParseMAC``: 6, 8 or 20 bytes as ``xx:xx…``, ``xx-xx…`` or ``xxxx.xxxx…``."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) < 14:
        return False
    if data[2:3] in (b":", b"-"):
        return _is_grouped_hex(data, group=2, separator=data[2:3])
    if data[4:5] == b".":
        return _is_grouped_hex(data, group=4, separator=b".")
    return False


def _is_grouped_hex(data: bytes, *, group: int, separator: bytes) -> bool:
    stride = group + 1
    if (len(data) + 1) % stride:
        return False
    groups = (len(data) + 1) // stride
    if groups * group // 2 not in (6, 8, 20):
        return False
    for start in range(0, len(data), stride):
        digits, after = data[start : start + group], data[start + group : start + stride]
        if not all(chr(byte) in "0123456789abcdefABCDEF" for byte in digits) or after not in (b"", separator):
            return False
    return True


def _family(address: str) -> int:
    """4 or 6, as Go's ``To4() != nil`` decides (IPv4-mapped IPv6 counts as 4)."""
    parsed = results.parse_ip(address)
    if parsed is None:
        raise ValueError(f"not an IP address: {address!r}")
    return 6 if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is None else 4


# --- Go string helpers ---------------------------------------------------------------------------------


def _go_trim(text: str) -> str:
    return text.strip(_GO_SPACE)


def _without_surrogates(text: str) -> str:
    """Lone surrogates (``\\ud800`` escapes, a bad caller) become U+FFFD, as Go's decoder makes them."""
    return _SURROGATE.sub("\ufffd", text)


_GO_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _go_quote(text: str) -> str:
    """Go's ``%q`` (``strconv.Quote``)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


# --- what a delegate receives ------------------------------------------------------------------------


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


def cni_device_info_path(network_name: str, container_id: str, ifname: str) -> str:
    """``runtimeConfig.CNIDeviceInfoFile`` for a delegate given a device id (``/`` in the name → ``-``)."""
    filename = f"{network_name}-{container_id}_{ifname}".replace("/", "-")
    return f"{_DEVICE_INFO_DIR}/{filename}"


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
    return cniconf.encode(document, what="delegate configuration with cni-args")


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
    if _has_type(document):
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


def _has_type(document: Mapping[str, Any]) -> bool:
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


# --- NetworkAttachmentDefinition spec.config -------------------------------------------------------------


def falls_back_to_conf_dir(config: str) -> bool:
    """True when a NAD's ``spec.config`` is empty: the network is the confDir file named like the NAD."""
    return config == ""


def nad_network_config(nad_name: str, config: str, *, namespace: str = "") -> bytes:
    """The delegate configuration a NAD's non-empty ``spec.config`` defines (``GetCNIConfigFromSpec``).

    ``nad_name`` is the NAD's metadata.name, injected as ``name`` when the config has none or ``""``
    (the config is then re-encoded with sorted keys; otherwise its bytes are returned unchanged).
    A top-level ``type`` makes it a single plugin conf, its absence a conflist whose ``plugins``
    must be present and whose first plugin needs a ``type``. Errors name ``<namespace>/<nad_name>``.
    Raises ValueError for an empty config: see ``falls_back_to_conf_dir``.
    """
    if falls_back_to_conf_dir(config):
        raise ValueError("an empty spec.config names a confDir file; the caller resolves it")
    where = (
        f"network-attachment-definition {namespace}/{nad_name}"
        if namespace
        else f"network-attachment-definition {nad_name}"
    )
    document = _spec_document(config, where=where)
    data = config.encode("utf-8", "surrogatepass")
    if document.get("name") in (None, ""):
        document["name"] = nad_name
        data = cniconf.encode(document, what=f"{where} spec.config")
    _check_delegate_shape(document, where=where)
    return data


def _spec_document(config: str, *, where: str) -> JsonObject:
    prefix = f"{where}: GetCNIConfig: err in getCNIConfigFromSpec: failed to unmarshal Spec.Config"
    try:
        document = results.parse_json(config.encode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError) as err:
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"{prefix}: {err}") from None
    if not isinstance(document, dict):
        kind = "null" if document is None else _go_kind(document)
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"{prefix}: json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}",
        )
    return document


def _check_delegate_shape(document: JsonObject, *, where: str) -> None:
    """``LoadDelegateNetConf``'s checks; the full configuration check happens when the caller loads it."""
    for key in ("name", "type", "cniVersion"):
        value = document.get(key)
        if value is not None and not isinstance(value, str):
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"{where}: LoadDelegateNetConf: error unmarshalling delegate config: json: cannot unmarshal "
                f"{_go_kind(value)} into Go struct field NetConf.{key} of type string",
            )
    if _has_type(document):
        return
    plugins = document.get("plugins")
    prefix = f"{where}: LoadDelegateNetConf: failed with: LoadDelegateNetConfList"
    if not isinstance(plugins, list) or not plugins:
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG, f"{prefix}: delegate must have the 'type' or 'plugin' field"
        )
    first = plugins[0]
    if not isinstance(first, dict) or not _has_type(first):
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG, f"{prefix}: a plugin delegate must have the 'type' field"
        )
