"""Network selection: the pod annotations that pick networks, parsed into ``NetworkSelection`` values.

Owns the parsing of ``k8s.v1.cni.cncf.io/networks`` and ``v1.multus-cni.io/default-network`` and
the validation of each element. Called by network resolution (``app.attach.networks``) on ADD;
DEL, CHECK and GC replay the checkpoint instead. What a delegate receives from a selection is
``app.attach.delegate_inputs``; a NAD's ``spec.config`` is ``app.attach.nad_config``; Go's
``encoding/json`` rules are ``app.attach.gojson``. Pure: no I/O, no Kubernetes client, no SQL;
inputs are never mutated.

Wire compatibility: every rule is upstream Multus's (``pkg/k8sclient``), and every upstream error
text is kept verbatim inside the message so users can search for it. Errors are ``CniError`` code 7;
the message starts with ``annotation <key>: `` and, when an element is at fault, ``details`` names
it (``element 1, network default/macvlan``). Decoding follows Go's ``encoding/json``: keys match
case-insensitively, ``null`` leaves a field unset, type errors read ``json: cannot unmarshal <kind>
into Go struct field ...``; syntax errors carry Python's wording.

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
  (Go decodes it to a nil IP and counts it as an IPv6 gateway). A gateway is kept as Go prints it:
  an IPv4-mapped address (``::ffff:10.0.0.1``) is the IPv4 address it maps, as it is to upstream,
  whose default route through it is an IPv4 one (taken as written, it became an IPv6 route the
  kernel refused, and the ADD failed).
- ``ipam-claim-reference`` is accepted (must be a string) and kept on the selection, but not passed
  to the delegate, as upstream. It is not refused: OVN-Kubernetes reads it from the pod's annotation
  itself (KubeVirt persistent IPs), so refusing it would break working clusters.
- A negative ``bandwidth`` rate or burst is refused. Upstream's ``BandwidthEntry`` holds ``int``s and
  passes ``-1`` on; the bandwidth plugin decodes ``uint64``s, so it failed the ADD with code 999
  ("failed to parse network configuration"), and the rollback's DEL the same way.
- Integral floats in ``cni-args`` (``1.0``, ``1e3``) are passed as integers, as Go's float64
  re-encoding does, so plugins decoding into integer fields accept them; integers keep every digit.
- ``name`` and ``namespace`` must be Kubernetes object names (a DNS-1123 subdomain, a DNS-1123
  label), in both forms; upstream checks only the comma form's. No NAD can have another name, and
  the name becomes a path of the API request that looks a NAD up: ``"../../other/..."`` reached
  another namespace's NAD past ``namespaceIsolation``. Messages quote at most ``_SHOWN_MAX``
  characters of a name, MAC address, IP address or gateway (an annotation may hold 256 KiB), and
  escape a lone surrogate (a ``\\ud800`` escape) in it.
- ``interface`` must also be a name the CNI spec and Linux accept (no NUL, ``:``, ``.``/``..``,
  control character, ``%``), and not ``lo``: every network namespace already has it, a plugin
  refuses to create it, and its rollback DEL then fails for ever (the loopback cannot be deleted).
- A pod selects at most ``max_networks`` networks (``maxNetworksPerPod``, default
  ``DEFAULT_MAX_NETWORKS``); upstream has no bound. The count is taken before any element is
  decoded, so a selection of thousands of networks costs a scan of the value, not thousands of NAD
  lookups and delegates. The default-network annotation is counted the same way (one network).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from app.attach import gojson
from app.attach.cluster import DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION
from app.cni import names, results
from app.cni.types import CniError, ErrorCode, JsonObject

_JSON_MARKERS: Final = '[{"'
_DNS1123_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_IFNAME_MAX_BYTES: Final = 15
_IFNAME_FORBIDDEN: Final = frozenset(" \t\n\v\f\r/")
_DNS1123_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_OBJECT_NAME_MAX: Final = 253
_NAMESPACE_MAX: Final = 63
_LOOPBACK: Final = "lo"
_SHOWN_MAX: Final = 100
"""How much of a user's text an error message quotes (an annotation may hold 256 KiB)."""
DEFAULT_MAX_NETWORKS: Final = 256
"""``maxNetworksPerPod`` when unset. Far above any real pod (a few, tens for SR-IOV or KubeVirt);
and a pod's network-status, about 0.3-1 KiB per network, must fit in the 256 KiB the API server
allows a pod's annotations."""


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


def parse_networks(
    value: str, *, pod_namespace: str, max_networks: int = DEFAULT_MAX_NETWORKS
) -> list[NetworkSelection]:
    """The networks a ``k8s.v1.cni.cncf.io/networks`` value selects, in order; ``""`` selects none.

    JSON (a list of objects) when the value contains ``[``, ``{`` or ``"``; otherwise the comma form
    ``[<namespace>/]<name>[@<ifname>]``. Elements without a namespace get ``pod_namespace``. More
    than ``max_networks`` elements are refused before any is decoded.
    """
    if value == "":
        return []

    def too_many(count: int) -> CniError:
        return _annotation_error(
            NETWORKS_ANNOTATION,
            f"the annotation selects {count} networks; a pod may select at most {max_networks}",
            "maxNetworksPerPod in daemon-config.json sets the bound",
        )

    return _parse(
        value,
        default_namespace=pod_namespace,
        annotation=NETWORKS_ANNOTATION,
        max_elements=max_networks,
        too_many=too_many,
    )


def parse_default_network(value: str, *, multus_namespace: str) -> NetworkSelection:
    """The single network of a ``v1.multus-cni.io/default-network`` value (namespace defaults to multus's)."""
    annotation = DEFAULT_NETWORK_ANNOTATION
    if value == "":
        raise _annotation_error(
            annotation, 'parsePodNetworkAnnotation: pod annotation does not have "network" as key'
        )

    def too_many(_count: int) -> CniError:
        return _annotation_error(
            annotation,
            "tryLoadK8sPodDefaultNetwork: more than one default network is specified: " + _shown(value),
        )

    selections = _parse(
        value, default_namespace=multus_namespace, annotation=annotation, max_elements=1, too_many=too_many
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


def _parse(
    value: str,
    *,
    default_namespace: str,
    annotation: str,
    max_elements: int,
    too_many: Callable[[int], CniError],
) -> list[NetworkSelection]:
    value = gojson.without_surrogates(value)
    if any(marker in value for marker in _JSON_MARKERS):
        elements = _decode_json_form(
            value, annotation=annotation, max_elements=max_elements, too_many=too_many
        )
    else:
        count = value.count(",") + 1
        if count > max_elements:
            raise too_many(count)
        elements = _decode_comma_form(value, annotation=annotation)
    return [
        _validated(element, index=index, default_namespace=default_namespace, annotation=annotation)
        for index, element in enumerate(elements)
    ]


def _annotation_error(annotation: str, text: str, details: str = "") -> CniError:
    return CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"annotation {annotation}: {text}", details)


def _shown(text: str) -> str:
    """``text`` as a message quotes it: at most ``_SHOWN_MAX`` characters of it, escaped when it
    holds what cannot be encoded or logged (the JSON form's ``\\ud800`` decodes to a lone
    surrogate, which the history line recording the refusal could not store)."""
    return names.printable(_shortened(text))


def _shortened(text: str) -> str:
    """At most ``_SHOWN_MAX`` characters of ``text``, for ``gojson.quote`` (which escapes the rest)."""
    return text if len(text) <= _SHOWN_MAX else text[:_SHOWN_MAX] + f"... ({len(text)} characters)"


# --- comma form ---------------------------------------------------------------------------------------


def _decode_comma_form(value: str, *, annotation: str) -> list[dict[str, Any]]:
    elements: list[dict[str, Any]] = []
    for index, item in enumerate(value.split(",")):
        try:
            namespace, name, ifname = _parse_object_name(gojson.trim(item))
        except gojson.DecodeError as err:
            where = f"item {index}: {gojson.quote(_shortened(gojson.trim(item)))}"
            raise _annotation_error(annotation, f"parsePodNetworkAnnotation: {err}", where) from None
        elements.append({"name": name, "namespace": namespace, "interface": ifname})
    return elements


def _parse_object_name(item: str) -> tuple[str, str, str]:
    """``parsePodNetworkObjectName``: ``[<ns>/]<name>[@<ifname>]`` → (namespace, name, ifname)."""
    slash_items = item.split("/")
    if len(slash_items) > 2:
        raise gojson.DecodeError("parsePodNetworkObjectName: Invalid network object (failed at '/')")
    namespace = gojson.trim(slash_items[0]) if len(slash_items) == 2 else ""
    at_items = slash_items[-1].split("@")
    if len(at_items) > 2:
        raise gojson.DecodeError("parsePodNetworkObjectName: Invalid network object (failed at '@')")
    name = gojson.trim(at_items[0])
    ifname = gojson.trim(at_items[1]) if len(at_items) == 2 else ""
    for part in (namespace, name):
        if part and not _DNS1123_LABEL.fullmatch(part):
            raise gojson.DecodeError(
                "parsePodNetworkObjectName: Failed to parse: one or more items did not match comma-delimited "
                "format (must consist of lower case alphanumeric characters). Must start and end with an "
                f"alphanumeric character), mismatch @ '{part}'"
            )
    _check_ifname(ifname)
    return namespace, name, ifname


def _check_ifname(ifname: str) -> None:
    too_long = len(ifname.encode("utf-8", "surrogatepass")) > _IFNAME_MAX_BYTES
    if too_long or any(char in _IFNAME_FORBIDDEN for char in ifname):
        raise gojson.DecodeError(
            "parsePodNetworkObjectName: Failed to parse interface name: must be less than 15 chars and "
            f"not contain '/' or spaces. interface name '{_shown(ifname)}'"
        )


# --- JSON form: decoding as Go's encoding/json does ------------------------------------------------


_JSON_PREFIX: Final = (
    "parsePodNetworkAnnotation: failed to parse pod Network Attachment Selection Annotation JSON format: "
)
_ELEMENT: Final = "NetworkSelectionElement"


def _decode_json_form(
    value: str, *, annotation: str, max_elements: int, too_many: Callable[[int], CniError]
) -> list[dict[str, Any]]:
    try:
        document = gojson.loads(value)
    except (ValueError, RecursionError) as err:
        raise _annotation_error(annotation, _JSON_PREFIX + str(err)) from None
    if gojson.is_array(document) and len(document) > max_elements:
        raise too_many(len(document))
    try:
        return _decode_list(document)
    except gojson.DecodeError as err:
        raise _annotation_error(annotation, _JSON_PREFIX + str(err), err.where) from None
    except RecursionError:
        raise _annotation_error(annotation, _JSON_PREFIX + "exceeded max depth") from None


def _decode_list(document: object) -> list[dict[str, Any]]:
    if not gojson.is_array(document):
        raise gojson.DecodeError(
            f"json: cannot unmarshal {gojson.kind(document)} into Go value of type []*types.{_ELEMENT}"
        )
    elements: list[dict[str, Any]] = []
    for index, item in enumerate(document):
        try:
            elements.append(_decode_element(item))
        except gojson.DecodeError as err:
            raise gojson.DecodeError(str(err), f"element {index}") from None
    return elements


def _decode_element(item: object) -> dict[str, Any]:
    if item is None:
        raise gojson.DecodeError("null is not a network selection element")
    if not isinstance(item, gojson.Pairs):
        raise gojson.DecodeError(
            f"json: cannot unmarshal {gojson.kind(item)} into Go value of type types.{_ELEMENT}"
        )
    element: dict[str, Any] = {}
    for key, value in item:
        field = _FIELD_BY_FOLDED_KEY.get(gojson.fold(key)) if key not in _DECODERS else key
        if field is None:
            continue  # unknown keys are ignored, as upstream
        if value is None:
            # Go: null sets a list, object or pointer to nil, and leaves a string as it was.
            if field not in _STRING_FIELDS:
                element.pop(field, None)
            continue
        element[field] = _DECODERS[field](value, field)
    return element


def _type_error(value: object, field: str, go_type: str) -> gojson.DecodeError:
    return gojson.type_error(value, field, go_type=go_type, struct=_ELEMENT)


def _decode_string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _type_error(value, field, "string")
    return value


def _decode_strings(value: object, field: str) -> list[str]:
    if not gojson.is_array(value):
        raise _type_error(value, field, "[]string")
    return [_decode_string(item, field) if item is not None else "" for item in value]


def _decode_port_mappings(value: object, field: str) -> list[JsonObject | None]:
    if not gojson.is_array(value):
        raise _type_error(value, field, "[]*types.PortMapEntry")
    return [None if item is None else _decode_port_mapping(item, field) for item in value]


def _decode_port_mapping(item: object, field: str) -> JsonObject:
    if not isinstance(item, gojson.Pairs):
        raise _type_error(item, field, "types.PortMapEntry")
    given = gojson.struct_fields(item, ("hostPort", "containerPort", "protocol", "hostIP"))
    entry: JsonObject = {}
    for key in ("hostPort", "containerPort"):
        entry[key] = (
            gojson.decode_int(given[key], f"{field}.{key}", struct="PortMapEntry")
            if given.get(key) is not None
            else 0
        )
    for key in ("protocol", "hostIP"):
        text = _decode_string(given[key], f"{field}.{key}") if given.get(key) is not None else ""
        if text:
            entry[key] = text
    return entry


def _decode_bandwidth(value: object, field: str) -> JsonObject:
    keys = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
    if not isinstance(value, gojson.Pairs):
        raise _type_error(value, field, "types.BandwidthEntry")
    given = gojson.struct_fields(value, keys)
    entry = {
        key: gojson.decode_int(given[key], f"{field}.{key}", struct="BandwidthEntry")
        if given.get(key) is not None
        else 0
        for key in keys
    }
    for key, number in entry.items():
        if number < 0:
            raise gojson.DecodeError(
                f"{field}.{key}: {number} is negative; the bandwidth plugin reads rates and bursts "
                "as unsigned integers (uint64)"
            )
    return entry


def _decode_cni_args(value: object, field: str) -> JsonObject:
    if not isinstance(value, gojson.Pairs):
        raise _type_error(value, field, "map[string]interface {}")
    decoded = gojson.plain(value)
    assert isinstance(decoded, dict)
    problem = check_cni_args(decoded)
    if problem is not None:
        raise gojson.DecodeError(f"{field}.{problem[0]}: {problem[1]}")
    return decoded


def _decode_gateways(value: object, field: str) -> list[str]:
    if not gojson.is_array(value):
        raise _type_error(value, field, "[]net.IP")
    gateways: list[str] = []
    for item in value:
        if item is None:
            raise gojson.DecodeError("default-route: null is not an IP address")
        if not isinstance(item, str):
            raise _type_error(item, field, "net.IP")
        if item == "":
            raise gojson.DecodeError("default-route: empty IP address")
        parsed = results.parse_ip(item)
        if parsed is None:
            raise gojson.DecodeError(f"invalid IP address: {_shown(item)}")
        gateways.append(_go_ip_text(parsed))
    return gateways


def _go_ip_text(address: results.Address) -> str:
    """An address as Go's ``net.IP.String()`` prints it: an IPv4-mapped IPv6 address is IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


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
_FIELD_BY_FOLDED_KEY: Final = {gojson.fold(field): field for field in _DECODERS}


# --- validation (parsePodNetworkAnnotation's loop, then ours) --------------------------------------


def _validated(
    element: Mapping[str, Any], *, index: int, default_namespace: str, annotation: str
) -> NetworkSelection:
    namespace = element.get("namespace") or default_namespace
    name = element.get("name", "")
    where = f"element {index}, network {_shown(namespace)}/{_shown(name)}"
    try:
        _check_mac(element.get("mac", ""), "parsePodNetworkAnnotation: failed to mac")
        _check_mac(
            element.get("infiniband-guid", ""),
            "parsePodNetworkAnnotation: failed to validate infiniband GUID",
        )
        for ip in element.get("ips") or ():
            _check_ip_request(ip)
        if not name:
            raise gojson.DecodeError("parsePodNetworkAnnotation: network name is empty")
        _check_object_names(namespace=namespace, name=name)
        interface = element.get("interface") or element.get("interfaceRequest", "")
        _check_ifname(interface)
        if interface:
            _check_interface_usable(interface)
    except gojson.DecodeError as err:
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


def _check_object_names(*, namespace: str, name: str) -> None:
    """Refuse what cannot name a NAD: it would only fail the lookup, after it became part of the
    API path that looks the NAD up (``..``, ``/``, ``?`` reached other objects)."""
    if len(namespace) > _NAMESPACE_MAX or not _DNS1123_LABEL.fullmatch(namespace):
        raise gojson.DecodeError(
            f"namespace {gojson.quote(_shortened(namespace))} is not a Kubernetes namespace name (a DNS-1123 "
            f"label: lower case alphanumeric characters or '-', at most {_NAMESPACE_MAX})"
        )
    if len(name) > _OBJECT_NAME_MAX or not _DNS1123_SUBDOMAIN.fullmatch(name):
        raise gojson.DecodeError(
            f"network name {gojson.quote(_shortened(name))} is not a network-attachment-definition name (a "
            f"DNS-1123 subdomain: lower case alphanumeric characters, '-' or '.', at most {_OBJECT_NAME_MAX})"
        )


def _check_interface_usable(ifname: str) -> None:
    """The CNI spec's and Linux's rules beyond upstream's check, and no ``lo``."""
    try:
        names.check_ifname(ifname)
    except CniError as err:
        raise gojson.DecodeError(f"interface name {gojson.quote(ifname)}: {err.msg}") from None
    if ifname == _LOOPBACK:
        raise gojson.DecodeError(
            'interface name "lo": every network namespace has its loopback interface already'
        )


def check_address_requests(*, ips: Iterable[str], mac: str) -> tuple[str, str] | None:
    """An element's rules for ``ips`` and ``mac`` applied to requests made elsewhere (``/delegate``'s
    ``interfaceAttributes``): None, or the field (``ips``, ``mac``) refused first and why."""
    try:
        for ip in ips:
            _check_ip_request(ip)
    except gojson.DecodeError as err:
        return "ips", str(err)
    try:
        _check_mac(mac, "failed to parse mac")
    except gojson.DecodeError as err:
        return "mac", str(err)
    return None


def check_cni_args(cni_args: Mapping[str, Any]) -> tuple[str, str] | None:
    """The CNI conventions' ``args.cni`` keys in ``cni-args`` (an element's, ``/delegate``'s
    ``interfaceAttributes``'): None, or the key refused first and why. ``ips`` (host-local's
    ``[]ip.IP``) and ``mac`` (bridge's and tuning's) reach the delegate as ``args.cni``; a value
    its plugins cannot decode fails their ADD and every DEL replaying it with code 999, so an
    attachment whose rollback failed could never be removed. Keys match whatever their case, as
    Go's decoder matches them; other keys are the plugins' own."""
    for key, value in cni_args.items():
        folded = gojson.fold(key)
        if value is None or folded not in ("IPS", "MAC"):
            continue
        if folded == "MAC":
            if not isinstance(value, str):
                return key, "must be a string"
            problem = check_address_requests(ips=(), mac=value)
        elif not isinstance(value, list) or not all(isinstance(ip, str) for ip in value):
            return key, "must be a list of IP addresses"
        else:
            problem = check_address_requests(ips=value, mac="")
        if problem is not None:
            return key, problem[1]
    return None


def _check_mac(text: str, context: str) -> None:
    if text and not _is_go_mac(text):
        raise gojson.DecodeError(f"{context}: address {_shown(text)}: invalid MAC address")


def _check_ip_request(text: str) -> None:
    if "/" in text:
        if results.parse_cidr(text) is None:
            raise gojson.DecodeError(
                f"failed to parse CIDR {gojson.quote(_shortened(text))}: invalid CIDR address: {_shown(text)}"
            )
    elif results.parse_ip(text) is None:
        raise gojson.DecodeError(f"failed to parse IP address {gojson.quote(_shortened(text))}")


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
