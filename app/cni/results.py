"""CNI result formats: version numbers, shape validation, decoding plugin output, conversion between versions.

Pure functions over plain JSON objects, called by ``app.cni.api`` (decode each plugin's stdout,
convert ``prevResult`` and the final result to the list's version) and by callers that print a result
in the runtime's version. Never performs I/O and never mutates its arguments.

Formats: 0.1.0/0.2.0 carry ``ip4``/``ip6``; 0.3.0 to 0.4.0 carry ``interfaces``, ``ips`` (each with
``version``) and ``routes``; 1.0.0/1.1.0 drop ``version`` from ``ips`` and 1.1.0 adds interface
``mtu``/``socketPath``/``pciID`` and route ``mtu``/``advmss``/``priority``/``table``/``scope``.
Conversions follow the Go library (``pkg/types/{020,040,100}``); keys unknown to a format are kept
wherever the result keeps its shape, except the 1.1.0 interface fields: a 0.3.x/0.4.0 result's are
unknown to its format (unchecked, whatever their type) and never carried into 1.x, as Go's types
drop them; an interface's null field is left out (a null ``name`` becomes ""), as Go reads and writes
it. When the shape changes (0.1/0.2 ↔ 0.3+), the address-carrying keys (``ip4``/``ip6`` or
``interfaces``/``ips``/``routes``) are rebuilt, never copied across.

Error codes: a version outside ``SUPPORTED_VERSIONS``, or a result that cannot be expressed in the target
version (``cannot convert: no valid IP addresses``), is code 1; a result of the wrong shape is code 6,
as is one whose integer field holds a number Go's ``int`` does not (Go's decoder refuses it). A number
no float64 holds (``1e999``) is refused in a field Go's types declare and left out where they declare
none (Go skips such a field unread; kept, it could never be written as JSON again).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

from app.cni.types import CniError, ErrorCode, JsonObject

SUPPORTED_VERSIONS: Final = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION: Final = "1.1.0"

_VERSION = re.compile(r"([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?")
_RICH_FROM: Final = (0, 3, 0)
_NO_IP_VERSION_FROM: Final = (1, 0, 0)
_INTERFACE_FIELDS_1_1: Final = ("mtu", "socketPath", "pciID")
_ROUTE_FIELDS_1_1: Final = ("mtu", "advmss", "priority", "table", "scope")
_SHAPE_KEYS: Final = ("interfaces", "ips", "routes", "ip4", "ip6")
"""Keys that carry addresses in one format or the other: rebuilt, never copied, when the format changes."""
_STDOUT_TAIL = 512
_GO_INT_MIN: Final = -(2**63)
_GO_INT_MAX: Final = 2**63 - 1
"""The range of Go's ``int`` (64 bits where Multus runs): every integer field of a result's Go types."""

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- versions -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def parse_version(version: str) -> tuple[int, int, int]:
    """``"1.0.0"`` → ``(1, 0, 0)``; ``""`` means 0.1.0 (spec); malformed → CniError code 1.

    Cached: a handful of distinct versions are parsed many times per request."""
    if version == "":
        return (0, 1, 0)
    match = _VERSION.fullmatch(version)
    if match is None:
        raise CniError(
            ErrorCode.INCOMPATIBLE_VERSION, f'invalid version "{version}": expected MAJOR.MINOR.PATCH'
        )
    major, minor, patch = (int(part) if part else 0 for part in match.groups())
    return (major, minor, patch)


def version_at_least(version: str, minimum: str) -> bool:
    """True when ``version`` is ``minimum`` or newer (``""`` counts as 0.1.0)."""
    return parse_version(version) >= parse_version(minimum)


@functools.lru_cache(maxsize=64)
def supported_version(version: str) -> str:
    """``version`` itself if this library implements it (``""`` becomes 0.1.0), else CniError code 1."""
    normalized = version or "0.1.0"
    if normalized not in SUPPORTED_VERSIONS:
        raise CniError(
            ErrorCode.INCOMPATIBLE_VERSION,
            f'unsupported CNI version "{version}": supported versions are {", ".join(SUPPORTED_VERSIONS)}',
        )
    return normalized


@functools.lru_cache(maxsize=64)
def _is_rich(version: str) -> bool:
    return parse_version(version) >= _RICH_FROM


@functools.lru_cache(maxsize=64)
def _has_ip_version_field(version: str) -> bool:
    return _RICH_FROM <= parse_version(version) < _NO_IP_VERSION_FROM


# --- decoding ---------------------------------------------------------------------------------------


def decode_result(stdout: bytes, *, version: str, plugin: str, to_version: str | None = None) -> JsonObject:
    """The result a plugin printed, validated, in its own version (or in ``to_version`` if given).

    ``version`` is the configuration's ``cniVersion``; it replaces a missing or empty ``cniVersion``,
    or one that is not a string, as the Go library does. Bad JSON or a bad shape raises CniError
    code 6 naming ``plugin`` and the field; an unsupported ``cniVersion`` raises code 1.
    ``to_version`` is ``convert(decode_result(...), to_version)`` without validating and copying
    again the object this call has just decoded and validated.
    """
    document, beyond_float64 = _load_json(stdout, plugin=plugin)
    if document is None:  # Go accepts a plugin printing "null" as an empty result
        document = {}
    if not isinstance(document, dict):
        raise CniError(
            ErrorCode.DECODING_FAILURE,
            f'plugin "{plugin}" printed a result that is not a JSON object but {json_kind(document)}',
        )
    result: JsonObject = document
    result["cniVersion"] = _result_version(result.get("cniVersion"), config_version=version, plugin=plugin)
    _validate_or_raise(result, prefix=f'plugin "{plugin}" printed an invalid result')
    result = _nulls_absent(result)
    if beyond_float64:
        _drop_numbers_beyond_float64(result)
    if to_version is None:
        return result
    target = supported_version(to_version)
    converted = _converter(result["cniVersion"], target)(result, target)
    converted["cniVersion"] = target
    return converted


def _nulls_absent(result: JsonObject) -> JsonObject:
    """``result`` without its null top-level fields: Go reads a null list or object as absent (an
    empty value) and prints it so, and every reader here may then take a field it finds as what
    the specification says it is (a list of ``ips``, not None). The object itself when it has none."""
    if None not in result.values():
        return result
    return {key: value for key, value in result.items() if value is not None}


def _result_version(declared: object, *, config_version: str, plugin: str) -> str:
    """The version a plugin's result is in: its own ``cniVersion`` if a non-empty string, else the
    configuration's, which replaces it as libcni's ``fixupResultVersion`` replaces any other value
    (absent, null, empty, a number, a boolean, a list or an object). A number no float64 holds is
    refused: the map libcni reads it into first holds none."""
    if isinstance(declared, _NumberBeyondFloat64):
        raise CniError(
            ErrorCode.DECODING_FAILURE,
            f'plugin "{plugin}" printed an invalid result: cniVersion: {_must("a string", declared)}',
        )
    if not isinstance(declared, str) or declared == "":
        return _supported_for(config_version, f'plugin "{plugin}" was configured with')
    _supported_for(declared, f'plugin "{plugin}" printed a result with')
    return declared


_LISTLESS_VERSION_INFO: Final = {"0.1.0": ("0.1.0",), "0.2.0": ("0.1.0", "0.2.0")}
"""What an answer without ``supportedVersions`` (or with an empty list) supports, by its ``cniVersion``:
Go's ``PluginDecoder`` reads a 0.2.0 one as 0.1.0 and 0.2.0 (and this library a 0.1.0 one as 0.1.0)."""


def decode_version_info(stdout: bytes, *, plugin: str) -> JsonObject:
    """A VERSION answer ``{"cniVersion", "supportedVersions"}``; a 0.1.0 or 0.2.0 answer without the
    list supports the versions up to its own."""
    document, beyond_float64 = _load_json(stdout, plugin=plugin)
    if not isinstance(document, dict):
        raise CniError(
            ErrorCode.DECODING_FAILURE, f'plugin "{plugin}" printed version info that is not a JSON object'
        )
    info: JsonObject = document
    _check_version_info(info, plugin=plugin)
    if beyond_float64:
        _drop_numbers_beyond_float64(info)
    declared = info["cniVersion"]
    if not info.get("supportedVersions") and declared in _LISTLESS_VERSION_INFO:
        info["supportedVersions"] = list(_LISTLESS_VERSION_INFO[declared])
    return info


def _check_version_info(info: JsonObject, *, plugin: str) -> None:
    declared = info.get("cniVersion")
    if not isinstance(declared, str) or not declared:
        raise CniError(
            ErrorCode.DECODING_FAILURE, f'plugin "{plugin}" version info: missing field cniVersion'
        )
    supported = info.get("supportedVersions")
    if not supported and declared in _LISTLESS_VERSION_INFO:
        return
    if (
        not isinstance(supported, list)
        or not supported
        or not all(isinstance(item, str) for item in supported)
    ):
        raise CniError(
            ErrorCode.DECODING_FAILURE,
            f'plugin "{plugin}" version info: supportedVersions must be a non-empty list of strings',
        )


def parse_json(data: bytes) -> object:
    """``json.loads`` as strict as Go's decoder: ``NaN`` and ``Infinity`` are not JSON, nor is a number
    no float64 holds (``1e999``) JSON Go can decode into a generic value (ValueError)."""
    return _STRICT_DECODER.decode(_text_of(data))


def _text_of(data: bytes | str) -> str:
    return (
        data.decode(json.detect_encoding(data), "surrogatepass")
        if isinstance(data, bytes | bytearray)
        else data
    )


def _load_json(stdout: bytes, *, plugin: str) -> tuple[object, bool]:
    """A plugin's output parsed, and whether it holds a number no float64 holds (``1e999``). Go
    decodes the output into its types: such a number in a field a type declares fails (a float64
    holds none of them, an int neither), one in a field it does not declare is skipped unread. So
    it is kept as a ``_NumberBeyondFloat64`` for the field rules to refuse, and the caller then
    drops those left (``_drop_numbers_beyond_float64``), which no JSON text could express again."""
    try:
        try:
            return parse_json(stdout), False
        except _BeyondFloat64Error:  # rare: parsed a second time, keeping such numbers aside
            return _BEYOND_FLOAT64_DECODER.decode(_text_of(stdout)), True
    except (ValueError, RecursionError) as err:
        raise CniError(
            ErrorCode.DECODING_FAILURE,
            f'plugin "{plugin}" printed output that is not valid JSON: {err}',
            _tail(stdout),
        ) from err


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


class _BeyondFloat64Error(ValueError):
    """A JSON number no float64 holds."""


def finite_float(text: str) -> float:
    """A JSON number with a fraction or an exponent; one beyond float64's range is refused (ValueError)
    as Go's decoder refuses it: kept as an infinity, it could never be encoded again."""
    value = float(text)
    if math.isinf(value):
        raise _BeyondFloat64Error(f"json: cannot unmarshal number {text} into Go value of type float64")
    return value


class _NumberBeyondFloat64:
    """A number no float64 holds in a plugin's output, as its text, until the output is validated."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _float_or_beyond(text: str) -> float | _NumberBeyondFloat64:
    value = float(text)
    return _NumberBeyondFloat64(text) if math.isinf(value) else value


def _drop_numbers_beyond_float64(document: JsonObject) -> None:
    """Remove from a validated document each ``_NumberBeyondFloat64`` (the object key holding it, or
    the list item): validation refused those in fields Go's types declare, so these stand where Go
    reads nothing, and kept they could not be written as JSON again."""
    stack: list[object] = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in [key for key, value in item.items() if isinstance(value, _NumberBeyondFloat64)]:
                del item[key]
            stack.extend(item.values())
        elif isinstance(item, list):
            item[:] = [value for value in item if not isinstance(value, _NumberBeyondFloat64)]
            stack.extend(item)


_STRICT_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_float=finite_float)
"""One decoder for every parse (``json.loads`` with an argument builds a new one per call)."""
_BEYOND_FLOAT64_DECODER: Final = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_float_or_beyond
)
"""The decoder for a plugin's output holding a number no float64 holds (``_load_json``)."""


def _tail(data: bytes) -> str:
    return data[-_STDOUT_TAIL:].decode("utf-8", "replace")


def _supported_for(version: str, context: str) -> str:
    try:
        return supported_version(version)
    except CniError as err:
        raise CniError(err.code, f"{context} {err.msg}") from err


# --- conversion -------------------------------------------------------------------------------------


def convert(result: JsonObject, to_version: str) -> JsonObject:
    """``result`` expressed in ``to_version`` (``""`` means 0.1.0); a new object, the input is untouched.

    The source version is ``result["cniVersion"]`` (absent means 0.1.0). The source is validated
    first, so a malformed result raises CniError code 6 rather than converting into nonsense. The
    new object shares with the input what the conversion leaves as it is (results are read, never
    modified, once decoded).
    """
    target = supported_version(to_version)
    declared = result.get("cniVersion", "")
    if not isinstance(declared, str):
        raise CniError(
            ErrorCode.DECODING_FAILURE, f"invalid result: cniVersion: {_must('a string', declared)}"
        )
    source = _supported_for(declared, "cannot convert a result with")
    _validate_or_raise(result, prefix="invalid result", version=source)
    converted = _converter(source, target)(_nulls_absent(result), target)
    converted["cniVersion"] = target
    return converted


def convert_decoded(result: JsonObject, to_version: str) -> JsonObject:
    """``convert`` for a result ``decode_result`` has returned (validated, its ``cniVersion`` set): the
    same new object, without validating it a second time."""
    target = supported_version(to_version)
    converted = _converter(result["cniVersion"], target)(result, target)
    converted["cniVersion"] = target
    return converted


def _converter(source: str, target: str) -> Callable[[JsonObject, str], JsonObject]:
    """The conversion from ``source`` to ``target``: it returns a new top-level object and never
    modifies its input (nested objects it leaves unchanged are shared, not copied)."""
    if _is_rich(source):
        return _rich_to_rich if _is_rich(target) else _rich_to_legacy
    return _legacy_to_rich if _is_rich(target) else _legacy_to_legacy


def _legacy_to_legacy(result: JsonObject, target: str) -> JsonObject:
    return dict(result)


def _rich_to_rich(result: JsonObject, target: str) -> JsonObject:
    """1.x ↔ 1.y copies; to 0.3/0.4 adds ``version`` and drops 1.1.0 interface fields; to 1.x drops
    ``version``, and from 0.3/0.4 the 1.1.0 interface fields too (Go's 0.4.0 interface has none to give).
    Interfaces come out as Go's type reads them (``_go_interface``)."""
    converted = dict(result)
    from_one = not _has_ip_version_field(result.get("cniVersion", ""))
    to_zero = _has_ip_version_field(target)
    ips = result.get("ips")
    if isinstance(ips, list):
        converted["ips"] = [_ip_for(ip, to_zero=to_zero, from_one=from_one) for ip in ips]
    interfaces = result.get("interfaces")
    if isinstance(interfaces, list):
        # routes keep their 1.1.0 fields: Go's 0.4.0 result shares the 1.1.0 route type
        dropped = _INTERFACE_FIELDS_1_1 if to_zero or not from_one else ()
        converted["interfaces"] = [_go_interface(item, dropped) for item in interfaces]
    return converted


def _go_interface(item: object, dropped: Sequence[str]) -> object:
    """An ``interfaces`` entry as Go's type reads it, without the ``dropped`` fields: a null field
    is its zero value, which Go writes as absent (``name`` as "", the one field it always writes),
    so no reader finds a null ``mac`` or ``name`` and takes it for text; the entry itself where
    nothing changes."""
    if not isinstance(item, dict) or (item.keys().isdisjoint(dropped) and None not in item.values()):
        return item
    return {
        key: "" if value is None else value
        for key, value in item.items()
        if key not in dropped and (value is not None or key == "name")
    }


def _ip_for(ip: object, *, to_zero: bool, from_one: bool) -> object:
    """An ``ips`` entry in the target format: ``version`` dropped (1.x), or added where a 1.x source
    has none to give (0.3/0.4); the entry itself where nothing changes."""
    if not isinstance(ip, dict):
        return ip
    if not to_zero:
        return _without(ip, ("version",))
    if from_one or "version" not in ip:
        return {**ip, "version": str(_family(_cidr(ip["address"], "address")))}
    return ip


def _without(item: object, fields: Sequence[str]) -> object:
    """``item`` (an object) without ``fields``: itself when it has none of them, else a copy."""
    if not isinstance(item, dict) or item.keys().isdisjoint(fields):
        return item
    return {key: value for key, value in item.items() if key not in fields}


def _rich_to_legacy(result: JsonObject, target: str) -> JsonObject:
    """First IPv4 → ``ip4``, first IPv6 → ``ip6``; routes follow their ``dst`` family, only ``dst``/``gw``.

    The family is the address's, whatever a 0.x ``version`` says (Go's 0.4.0 → 0.2.0 goes by
    ``version`` and drops an address whose ``version`` is neither "4" nor "6", or is missing)."""
    legacy: JsonObject = {key: value for key, value in result.items() if key not in _SHAPE_KEYS}
    by_family: dict[int, JsonObject] = {}
    for ip in _items(result.get("ips")):
        family = _family(_cidr(ip["address"], "address"))
        if family not in by_family:
            by_family[family] = _legacy_ip(ip)
    if not by_family:
        raise CniError(ErrorCode.INCOMPATIBLE_VERSION, "cannot convert: no valid IP addresses")
    for route in _items(result.get("routes")):
        config = by_family.get(_family(_cidr(route["dst"], "dst")))
        if config is not None:
            config.setdefault("routes", []).append(_legacy_route(route))
    for family, key in ((4, "ip4"), (6, "ip6")):
        if family in by_family:
            legacy[key] = by_family[family]
    legacy.setdefault("dns", {})
    return legacy


def _legacy_ip(ip: JsonObject) -> JsonObject:
    config: JsonObject = {"ip": ip["address"]}
    if ip.get("gateway") is not None:
        config["gateway"] = ip["gateway"]
    return config


def _legacy_route(route: JsonObject) -> JsonObject:
    kept: JsonObject = {"dst": route["dst"]}
    if route.get("gw") is not None:
        kept["gw"] = route["gw"]
    return kept


def _legacy_to_rich(result: JsonObject, target: str) -> JsonObject:
    """``ip4`` then ``ip6`` become ``ips`` (no ``interface`` index); their routes are concatenated,
    each with its ``dst`` and ``gw`` only, as Go's 0.2 → 0.4 conversion copies them."""
    rich: JsonObject = {key: value for key, value in result.items() if key not in _SHAPE_KEYS}
    ips: list[JsonObject] = []
    routes: list[JsonObject] = []
    for family, key in ((4, "ip4"), (6, "ip6")):
        config = result.get(key)
        if not isinstance(config, dict):
            continue
        ip: JsonObject = {"address": config["ip"]}
        if config.get("gateway") is not None:
            ip["gateway"] = config["gateway"]
        if _has_ip_version_field(target):
            ip["version"] = str(family)
        ips.append(ip)
        routes.extend(_legacy_route(route) for route in _items(config.get("routes")))
    if ips:
        rich["ips"] = ips
    if routes:
        rich["routes"] = routes
    return rich


def _items(value: object) -> list[JsonObject]:
    """The objects of a validated JSON list (absent or null → none)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


# --- shape validation ---------------------------------------------------------------------------------


class _ShapeError(Exception):
    """A field of the wrong shape; turned into CniError code 6 by the public functions."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


def _validate_or_raise(result: JsonObject, *, prefix: str, version: str | None = None) -> None:
    try:
        _validate(result, version or result["cniVersion"])
    except _ShapeError as err:
        raise CniError(ErrorCode.DECODING_FAILURE, f"{prefix}: {err}") from None


def _validate(result: JsonObject, version: str) -> None:
    if _is_rich(version):
        _validate_rich(result, with_ip_version=_has_ip_version_field(version))
    else:
        for key in ("ip4", "ip6"):
            _optional(result, key, key, _validate_legacy_ip)
    _optional(result, "dns", "dns", _validate_dns)


def _validate_rich(result: JsonObject, *, with_ip_version: bool) -> None:
    # the 0.3.x/0.4.0 results (those with ``version`` on ips) have interfaces of name, mac, sandbox only
    interface_rules = _INTERFACE_RULES_0_X if with_ip_version else _INTERFACE_RULES
    interfaces = _optional_list(result, "interfaces", "interfaces")
    for index, interface in enumerate(interfaces):
        if not isinstance(interface, dict):
            _object(interface, _field("interfaces", index))
        _check_fields(interface, interface_rules, "interfaces", index)
    for index, ip in enumerate(_optional_list(result, "ips", "ips")):
        if not _plain_ip(ip, with_version=with_ip_version):
            _validate_ip(ip, f"ips[{index}]", with_version=with_ip_version)
    for index, route in enumerate(_optional_list(result, "routes", "routes")):
        _validate_route(route, "routes", index)


def _check_fields(
    obj: JsonObject, rules: dict[str, Callable[[object, str], object]], prefix: str, index: int | None = None
) -> None:
    """Run each rule on its field of ``obj`` that is present and not null (Go reads null as absent),
    the field named ``<prefix>[<index>].<key>``. One pass over ``obj``: a string, or an integer Go's
    ``int`` holds, where one is due is accepted without calling its rule (what nearly every field
    of a plugin's result is), and a field's name is only spelt out for a rule that runs."""
    for key, value in obj.items():
        check = rules.get(key)
        if check is None or value is None:
            continue
        if (check is _string and value.__class__ is str) or (
            check is _int and value.__class__ is int and _GO_INT_MIN <= value <= _GO_INT_MAX
        ):
            continue
        check(value, f"{_field(prefix, index)}.{key}")


def _field(prefix: str, index: int | None) -> str:
    """How an error names the item ``index`` of list ``prefix`` (or ``prefix`` itself without one)."""
    return prefix if index is None else f"{prefix}[{index}]"


def _plain_ip(value: object, *, with_version: bool) -> bool:
    """True for an ``ips`` entry ``_validate_ip`` accepts at a glance: an IPv4 CIDR, an IPv4 gateway
    or none, an interface index Go's ``int`` holds or none, a string ``version`` or none. Anything else (an
    IPv6 address, a wrong shape) gets the full check, and its error."""
    if not isinstance(value, dict):
        return False
    address = value.get("address")
    gateway = value.get("gateway")
    interface = value.get("interface")
    return (
        isinstance(address, str)
        and _IPV4_CIDR.fullmatch(address) is not None
        and (gateway is None or (isinstance(gateway, str) and _IPV4.fullmatch(gateway) is not None))
        and (interface is None or (interface.__class__ is int and _GO_INT_MIN <= interface <= _GO_INT_MAX))
        and (not with_version or isinstance(value.get("version"), str | None))
    )


def _validate_ip(value: object, field: str, *, with_version: bool) -> None:
    """An ``ips`` entry. Its ``interface`` is an integer, not checked against ``interfaces``: Go
    decodes an ``*int`` and no more, so upstream takes an index out of range or negative (its
    network-status gives such an address to no entry). A 0.x ``version`` is any string: Go's
    ``IPConfig.Version`` is one and nothing checks it (wherever the family matters, it is taken
    from the address)."""
    ip = value if isinstance(value, dict) else _object(value, field)
    address = ip.get("address", _MISSING)
    if address is _MISSING:
        raise _ShapeError(f"{field}.address", "missing")
    _check_cidr(address, f"{field}.address")
    _optional_in(ip, "gateway", field, _check_ip)
    _optional_in(ip, "interface", field, _int)
    if with_version:  # any string, as Go's 0.4.0 IPConfig.Version; the family comes from the address
        _optional_in(ip, "version", field, _string)


def _validate_route(value: object, prefix: str, index: int | None = None) -> None:
    route = value if isinstance(value, dict) else _object(value, _field(prefix, index))
    dst = route.get("dst", _MISSING)
    if not (isinstance(dst, str) and _IPV4_CIDR.fullmatch(dst)):
        if dst is _MISSING:
            raise _ShapeError(f"{_field(prefix, index)}.dst", "missing")
        _cidr(dst, f"{_field(prefix, index)}.dst")
    _check_fields(route, _ROUTE_RULES, prefix, index)


def _check_cidr(value: object, field: str) -> None:
    """``_cidr`` without building the address where the text is a plain IPv4 CIDR."""
    if not (isinstance(value, str) and _IPV4_CIDR.fullmatch(value)):
        _cidr(value, field)


def _check_ip(value: object, field: str) -> None:
    """``_ip`` without building the address where the text is a plain IPv4 address. An empty text is
    no address at all, as Go's ``net.IP`` decodes it (nil): a gateway or ``gw`` left out."""
    if not (isinstance(value, str) and (_IPV4.fullmatch(value) or not value)):
        _ip(value, field)


def _validate_legacy_ip(value: object, field: str) -> None:
    config = _object(value, field)
    if "ip" not in config:
        raise _ShapeError(f"{field}.ip", "missing")
    _cidr(config["ip"], f"{field}.ip")
    _optional_in(config, "gateway", field, _check_ip)
    for index, route in enumerate(_optional_list(config, "routes", f"{field}.routes")):
        _validate_route(route, f"{field}.routes", index)


def _validate_dns(value: object, field: str) -> None:
    dns = _object(value, field)
    if not dns:
        return  # what most plugins print
    _optional_in(dns, "domain", field, _string)
    for key in ("nameservers", "search", "options"):
        for index, item in enumerate(_optional_list(dns, key, f"{field}.{key}")):
            _string(item, f"{field}.{key}[{index}]")


def _optional(obj: JsonObject, key: str, field: str, check: Callable[[object, str], object]) -> None:
    """Run ``check`` on ``obj[key]`` unless it is absent or null (Go reads null as absent)."""
    value = obj.get(key)
    if value is not None:
        check(value, field)


def _optional_in(obj: JsonObject, key: str, parent: str, check: Callable[[object, str], object]) -> None:
    """``_optional`` for ``obj[key]`` named ``<parent>.<key>``, the name built only for a present value."""
    value = obj.get(key)
    if value is not None:
        check(value, f"{parent}.{key}")


def _optional_list(obj: JsonObject, key: str, field: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _ShapeError(field, _must("a list", value))
    return value


def _object(value: object, field: str) -> JsonObject:
    if not isinstance(value, dict):
        raise _ShapeError(field, _must("an object", value))
    return value


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _ShapeError(field, _must("a string", value))
    return value


def _int(value: object, field: str) -> int:
    """An integer Go's ``int`` holds. One beyond it Go refuses (``cannot unmarshal number ... of type
    int``): the runtime would refuse the answer of an ADD that ran, so the ADD fails here instead
    and is rolled back."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise _ShapeError(field, _must("an integer", value))
    if not _GO_INT_MIN <= value <= _GO_INT_MAX:
        raise _ShapeError(field, f"{_shortened(str(value))} does not fit Go's int (64 bits)")
    return value


def _ip(value: object, field: str) -> Address:
    text = _string(value, field)
    address = parse_ip(text)
    if address is None:
        raise _ShapeError(field, f"{_quoted(text)} is not an IP address")
    return address


def _cidr(value: object, field: str) -> Address:
    text = _string(value, field)
    parsed = parse_cidr(text)
    if parsed is None:
        raise _ShapeError(field, f"{_quoted(text)} is not a CIDR (address/prefix)")
    return parsed[0]


_SHOWN_TEXT: Final = 64
"""How much of a refused value an error quotes: the message goes to the history and the runtime."""


def _quoted(text: str) -> str:
    """``text`` as JSON, at most ``_SHOWN_TEXT`` characters of it (a plugin's output may be MiBs)."""
    return json.dumps(text) if len(text) <= _SHOWN_TEXT else f"{json.dumps(text[:_SHOWN_TEXT])}..."


def _shortened(text: str) -> str:
    return text if len(text) <= _SHOWN_TEXT else f"{text[:_SHOWN_TEXT]}...({len(text)} characters)"


_MISSING: Final = object()
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4: Final = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
"""A dotted IPv4 address exactly as ``ipaddress`` (and so ``parse_ip``) accepts one: four decimal
octets of at most 255, no leading zeros. Texts it does not match take the general path."""
_IPV4_CIDR: Final = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}/(?:3[0-2]|[12]?[0-9])")
"""An IPv4 CIDR as ``parse_cidr`` accepts it, prefix without leading zeros (others: the general path)."""
_INTERFACE_RULES_0_X: Final[dict[str, Callable[[object, str], object]]] = {
    "name": _string,
    "mac": _string,
    "sandbox": _string,
}
"""Go's 0.3.x/0.4.0 ``Interface``: any other key is skipped unread, whatever its type."""
_INTERFACE_RULES: Final[dict[str, Callable[[object, str], object]]] = {
    **_INTERFACE_RULES_0_X,
    "socketPath": _string,
    "pciID": _string,
    "mtu": _int,  # Go's ``int``: a negative one decodes too
}
_ROUTE_RULES: Final[dict[str, Callable[[object, str], object]]] = {
    "gw": _check_ip,
    **dict.fromkeys(_ROUTE_FIELDS_1_1, _int),
}


def _must(expected: str, value: object) -> str:
    if isinstance(value, _NumberBeyondFloat64):
        return f"must be {expected}, got {_shortened(value.text)} (beyond float64)"
    return f"must be {expected}, got {json_kind(value)}"


def json_kind(value: object) -> str:
    """How an error message names a JSON value's type: ``null``, ``a boolean``, ``a number``, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | _NumberBeyondFloat64):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


# --- addresses ------------------------------------------------------------------------------------


def parse_ip(text: str) -> Address | None:
    """An IP address as Go's ``net.ParseIP`` reads it (no zone, no prefix), or None."""
    if "%" in text or "/" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_cidr(text: str) -> tuple[Address, int] | None:
    """``"10.1.0.5/24"`` → (address, prefix) as Go's ``net.ParseCIDR`` reads it (host bits kept), or None."""
    address_text, slash, prefix_text = text.partition("/")
    if not slash or not prefix_text.isascii() or not prefix_text.isdigit() or len(prefix_text) > 3:
        return None
    address = parse_ip(address_text)
    if address is None or int(prefix_text) > address.max_prefixlen:
        return None
    return address, int(prefix_text)


def _family(address: Address) -> int:
    """4 or 6 as Go's ``To4() != nil`` decides: IPv4-mapped IPv6 addresses count as IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return 6
    return 4
