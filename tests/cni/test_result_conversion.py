"""Result conversion between every pair of supported CNI versions (Go library rules), and its properties.

The table states, per (from, to) pair, which expected literal the representative result becomes;
the literals are written out in full below rather than computed.
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.cni import results
from app.cni.types import CniError, ErrorCode, JsonObject
from tests.cni.support import json_values, outcome_of

VERSIONS = results.SUPPORTED_VERSIONS
LEGACY = ("0.1.0", "0.2.0")
RICH_0X = ("0.3.0", "0.3.1", "0.4.0")
DNS = {"nameservers": ["10.1.0.10"], "search": ["svc.local"]}


def rich_1_1(version: str) -> JsonObject:
    """What a 1.1.0 plugin prints: 1.1.0 interface and route fields, two IPv4 and one IPv6 address."""
    return {
        "cniVersion": version,
        "interfaces": [
            {"name": "br0", "mac": "0a:58:0a:01:00:01"},
            {
                "name": "eth0",
                "mac": "0a:58:0a:01:00:05",
                "sandbox": "/var/run/netns/x",
                "mtu": 1450,
                "socketPath": "/run/vhost.sock",
                "pciID": "0000:00:1f.0",
            },
        ],
        "ips": [
            {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1},
            {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 1},
            {"address": "10.2.0.5/24", "interface": 1},
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.1.0.1", "priority": 100, "table": 5},
            {"dst": "::/0", "gw": "fd00::1", "mtu": 1400, "advmss": 1360, "scope": 0},
            {"dst": "10.96.0.0/12"},
        ],
        "dns": DNS,
    }


def rich_1_0(version: str) -> JsonObject:
    """The same network as a 1.0.0 result: no 1.1.0 fields."""
    return {
        "cniVersion": version,
        "interfaces": [
            {"name": "br0", "mac": "0a:58:0a:01:00:01"},
            {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/x"},
        ],
        "ips": [
            {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1},
            {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 1},
            {"address": "10.2.0.5/24", "interface": 1},
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
            {"dst": "::/0", "gw": "fd00::1"},
            {"dst": "10.96.0.0/12"},
        ],
        "dns": DNS,
    }


def rich_0_x(version: str) -> JsonObject:
    """The same network as a 0.3.x/0.4.0 result: ``version`` on every IP."""
    return {
        "cniVersion": version,
        "interfaces": [
            {"name": "br0", "mac": "0a:58:0a:01:00:01"},
            {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/x"},
        ],
        "ips": [
            {"version": "4", "address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1},
            {"version": "6", "address": "fd00::5/64", "gateway": "fd00::1", "interface": 1},
            {"version": "4", "address": "10.2.0.5/24", "interface": 1},
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
            {"dst": "::/0", "gw": "fd00::1"},
            {"dst": "10.96.0.0/12"},
        ],
        "dns": DNS,
    }


def rich_0_x_from_1_1(version: str) -> JsonObject:
    """A 1.1.0 result as 0.3.x/0.4.0: interface 1.1.0 fields dropped, routes kept whole (Go shares the
    route type between 0.4.0 and 1.1.0)."""
    return {**rich_0_x(version), "routes": rich_1_1(version)["routes"]}


def legacy(version: str) -> JsonObject:
    """The same network as a 0.1.0/0.2.0 result: first address of each family, routes by family."""
    return {
        "cniVersion": version,
        "ip4": {
            "ip": "10.1.0.5/24",
            "gateway": "10.1.0.1",
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "10.96.0.0/12"}],
        },
        "ip6": {"ip": "fd00::5/64", "gateway": "fd00::1", "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
        "dns": DNS,
    }


def from_legacy_0_x(version: str) -> JsonObject:
    """A legacy result raised to 0.3.x/0.4.0: ``ips`` with ``version``, no interfaces, routes concatenated."""
    return {
        "cniVersion": version,
        "ips": [
            {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "version": "4"},
            {"address": "fd00::5/64", "gateway": "fd00::1", "version": "6"},
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
            {"dst": "10.96.0.0/12"},
            {"dst": "::/0", "gw": "fd00::1"},
        ],
        "dns": DNS,
    }


def from_legacy_1_x(version: str) -> JsonObject:
    """A legacy result raised to 1.x: as for 0.3/0.4 but without ``version``."""
    return {
        "cniVersion": version,
        "ips": [
            {"address": "10.1.0.5/24", "gateway": "10.1.0.1"},
            {"address": "fd00::5/64", "gateway": "fd00::1"},
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
            {"dst": "10.96.0.0/12"},
            {"dst": "::/0", "gw": "fd00::1"},
        ],
        "dns": DNS,
    }


SOURCE = {
    "0.1.0": legacy,
    "0.2.0": legacy,
    "0.3.0": rich_0_x,
    "0.3.1": rich_0_x,
    "0.4.0": rich_0_x,
    "1.0.0": rich_1_0,
    "1.1.0": rich_1_1,
}


def expected_form(source: str, target: str) -> Any:
    if target in LEGACY:
        return legacy
    if source in LEGACY:
        return from_legacy_0_x if target in RICH_0X else from_legacy_1_x
    if target in RICH_0X:
        return rich_0_x_from_1_1 if source == "1.1.0" else rich_0_x
    return rich_1_1 if source == "1.1.0" else rich_1_0


@pytest.mark.parametrize(("source", "target"), list(itertools.product(VERSIONS, VERSIONS)))
def test_conversion_table_between_every_pair_of_versions(source: str, target: str) -> None:
    original = SOURCE[source](source)
    untouched = copy.deepcopy(original)

    converted = results.convert(original, target)

    assert converted == expected_form(source, target)(target)
    assert original == untouched


def test_converting_to_legacy_without_any_address_fails() -> None:
    with pytest.raises(CniError) as caught:
        results.convert({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}]}, "0.2.0")

    assert (caught.value.code, caught.value.msg) == (
        ErrorCode.INCOMPATIBLE_VERSION,
        "cannot convert: no valid IP addresses",
    )


def test_legacy_drops_routes_of_a_family_without_an_address() -> None:
    result = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}], "routes": [{"dst": "::/0"}]}

    assert results.convert(result, "0.2.0") == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.0.5/24"},
        "dns": {},
    }


def test_an_empty_target_version_means_0_1_0() -> None:
    assert results.convert(rich_1_0("1.0.0"), "")["cniVersion"] == "0.1.0"


def test_a_result_without_cni_version_is_read_as_0_1_0() -> None:
    assert results.convert({"ip4": {"ip": "10.1.0.5/24"}}, "1.0.0") == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.1.0.5/24"}],
    }


@pytest.mark.parametrize(("source", "target"), [("1.0.0", "0.5.0"), ("2.0.0", "1.0.0"), ("1.0.0", "one")])
def test_unknown_versions_are_incompatible_and_named(source: str, target: str) -> None:
    with pytest.raises(CniError) as caught:
        results.convert({"cniVersion": source}, target)

    assert caught.value.code == ErrorCode.INCOMPATIBLE_VERSION
    assert (source if source not in VERSIONS else target) in caught.value.msg


def test_keys_of_the_other_format_are_not_copied_across_a_shape_change() -> None:
    stray_legacy = {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/24"}, "routes": "stray"}
    stray_rich = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}], "ip6": "stray"}

    assert results.convert(stray_legacy, "1.0.0") == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.1.0.5/24"}],
    }
    assert results.convert(stray_rich, "0.2.0") == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.0.5/24"},
        "dns": {},
    }


@pytest.mark.parametrize("target", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_a_legacy_route_goes_up_with_its_dst_and_gw_only_like_go(target: str) -> None:
    # Go's 0.2 -> 0.4 conversion builds each route from Dst and GW: a 0.2.0 route's 1.1.0 fields
    # (which Go's shared Route type decodes) and unknown keys do not reach the new result.
    legacy = {
        "cniVersion": "0.2.0",
        "ip4": {
            "ip": "10.1.0.5/24",
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "priority": 100, "table": 7, "x": 1}],
        },
        "ip6": {"ip": "fd00::5/64", "routes": [{"dst": "::/0", "mtu": 1400}]},
    }

    assert results.convert(legacy, target)["routes"] == [
        {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
        {"dst": "::/0"},
    ]


def test_unknown_keys_survive_where_the_shape_is_kept() -> None:
    result = {
        "cniVersion": "1.1.0",
        "custom": {"x": 1},
        "interfaces": [{"name": "eth0", "vendor": "acme"}],
        "ips": [{"address": "10.1.0.5/24", "label": "primary"}],
    }

    down = results.convert(result, "0.4.0")
    legacy_form = results.convert(result, "0.2.0")

    assert down["custom"] == {"x": 1}
    assert down["interfaces"][0]["vendor"] == "acme"
    assert down["ips"][0] == {"address": "10.1.0.5/24", "label": "primary", "version": "4"}
    assert legacy_form == {"cniVersion": "0.2.0", "custom": {"x": 1}, "ip4": {"ip": "10.1.0.5/24"}, "dns": {}}


@pytest.mark.parametrize("source", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
@pytest.mark.parametrize("target", ["0.4.0", "1.0.0", "1.1.0"])
def test_a_null_interface_field_is_read_as_go_reads_it(source: str, target: str) -> None:
    # Go decodes null as the zero value and writes a zero mac/sandbox as absent, a zero name as "".
    # A result recorded with them (by this version or an earlier one) is read so: a reader taking
    # str() of a null mac compared the text "None" with the interface's MAC.
    result: JsonObject = {
        "cniVersion": source,
        "interfaces": [
            {"name": None, "mac": None, "sandbox": "/x"},
            {"name": "eth0", "mac": "0a:58:0a:01:00:05"},
        ],
    }

    converted = results.convert(result, target)

    assert converted["interfaces"] == [
        {"name": "", "sandbox": "/x"},
        {"name": "eth0", "mac": "0a:58:0a:01:00:05"},
    ]
    assert result["interfaces"][0] == {"name": None, "mac": None, "sandbox": "/x"}


def test_ipv4_mapped_ipv6_addresses_count_as_ipv4_like_go() -> None:
    result = {"cniVersion": "1.0.0", "ips": [{"address": "::ffff:10.1.0.5/120"}]}

    assert results.convert(result, "0.4.0")["ips"][0]["version"] == "4"
    assert results.convert(result, "0.2.0")["ip4"] == {"ip": "::ffff:10.1.0.5/120"}


def test_converting_a_malformed_result_is_a_decoding_failure_naming_the_field() -> None:
    with pytest.raises(CniError) as caught:
        results.convert({"cniVersion": "1.0.0", "routes": [{"gw": "10.1.0.1"}]}, "0.4.0")

    assert caught.value.code == ErrorCode.DECODING_FAILURE
    assert caught.value.msg == "invalid result: routes[0].dst: missing"


@pytest.mark.parametrize(
    ("version", "minimum", "expected"),
    [("0.4.0", "0.4.0", True), ("1.0.0", "0.4.0", True), ("0.3.1", "0.4.0", False), ("", "0.1.0", True)],
)
def test_version_at_least(version: str, minimum: str, expected: bool) -> None:
    assert results.version_at_least(version, minimum) is expected


@pytest.mark.parametrize(("text", "parsed"), [("1", (1, 0, 0)), ("0.4", (0, 4, 0)), ("", (0, 1, 0))])
def test_parse_version_reads_short_forms_like_go(text: str, parsed: tuple[int, int, int]) -> None:
    assert results.parse_version(text) == parsed


@pytest.mark.parametrize("text", ["1.2.3.4", "a.b.c", "1..2", "-1.0.0", "1.0.0 ", "v1.0.0"])
def test_parse_version_rejects_what_is_not_a_version(text: str) -> None:
    with pytest.raises(CniError) as caught:
        results.parse_version(text)

    assert caught.value.code == ErrorCode.INCOMPATIBLE_VERSION
    assert f'"{text}"' in caught.value.msg


# --- properties -------------------------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4)


def _not_ipv4_mapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Go counts IPv4-mapped IPv6 addresses as IPv4: keep them out of the IPv6 strategy."""
    return isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None


ipv6 = st.ip_addresses(v=6).filter(_not_ipv4_mapped)


def cidr(addresses: st.SearchStrategy[Any], max_prefix: int) -> st.SearchStrategy[str]:
    return st.builds(lambda address, prefix: f"{address}/{prefix}", addresses, st.integers(0, max_prefix))


v4_cidr = cidr(ipv4, 32)
v6_cidr = cidr(ipv6, 128)


def route(dst: st.SearchStrategy[str], gw: st.SearchStrategy[Any]) -> st.SearchStrategy[JsonObject]:
    return st.fixed_dictionaries({"dst": dst}, optional={"gw": gw.map(str)})


@st.composite
def legacy_results(draw: st.DrawFn) -> JsonObject:
    result: JsonObject = {"cniVersion": draw(st.sampled_from(LEGACY)), "dns": {}}
    for key, address, gateway in (("ip4", v4_cidr, ipv4), ("ip6", v6_cidr, ipv6)):
        if draw(st.booleans()):
            config: JsonObject = {"ip": draw(address)}
            routes = draw(st.lists(route(address, gateway), max_size=3))
            if routes:
                config["routes"] = routes
            result[key] = config
    if "ip4" not in result and "ip6" not in result:
        result["ip4"] = {"ip": draw(v4_cidr)}
    return result


@st.composite
def rich_results(draw: st.DrawFn, *, version: str, extras: bool) -> JsonObject:
    interfaces: list[JsonObject] = draw(
        st.lists(st.fixed_dictionaries({"name": st.text(min_size=1, max_size=15)}), min_size=1, max_size=3)
    )
    address = st.one_of(v4_cidr, v6_cidr)
    ips = draw(
        st.lists(
            st.fixed_dictionaries(
                {"address": address},
                optional={
                    "gateway": st.one_of(ipv4, ipv6).map(str),
                    "interface": st.integers(0, len(interfaces) - 1),
                },
            ),
            min_size=1,
            max_size=4,
        )
    )
    if results.version_at_least(version, "1.0.0"):
        for ip in ips:
            ip.pop("version", None)
    else:
        for ip in ips:
            ip["version"] = "4" if ipaddress.ip_interface(str(ip["address"])).version == 4 else "6"
    routes = draw(st.lists(route(st.one_of(v4_cidr, v6_cidr), st.one_of(ipv4, ipv6)), max_size=4))
    if extras:
        for item in routes:
            item["priority"] = draw(st.integers(0, 1000))
        interfaces[0]["mtu"] = draw(st.integers(68, 9000))
    return {"cniVersion": version, "interfaces": interfaces, "ips": ips, "routes": routes}


@given(result=rich_results(version="1.1.0", extras=True), target=st.sampled_from(VERSIONS))
def test_conversion_always_labels_the_target_version_and_is_idempotent(
    result: JsonObject, target: str
) -> None:
    converted = results.convert(result, target)

    assert converted["cniVersion"] == target
    assert results.convert(converted, target) == converted


@given(result=legacy_results(), up=st.sampled_from(VERSIONS[2:]))
def test_legacy_results_survive_a_round_trip_through_any_newer_version(result: JsonObject, up: str) -> None:
    assert results.convert(results.convert(result, up), result["cniVersion"]) == result


@given(result=rich_results(version="0.4.0", extras=False), up=st.sampled_from(("1.0.0", "1.1.0")))
def test_0_4_0_results_survive_a_round_trip_through_1_x(result: JsonObject, up: str) -> None:
    assert results.convert(results.convert(result, up), "0.4.0") == result


@given(result=rich_results(version="1.1.0", extras=True), down=st.sampled_from(RICH_0X))
def test_going_down_and_up_keeps_addresses_gateways_interfaces_and_route_destinations(
    result: JsonObject, down: str
) -> None:
    back = results.convert(results.convert(result, down), "1.1.0")

    assert back["ips"] == result["ips"]
    assert [(item["dst"], item.get("gw")) for item in back["routes"]] == [
        (item["dst"], item.get("gw")) for item in result["routes"]
    ]
    assert [item["name"] for item in back["interfaces"]] == [item["name"] for item in result["interfaces"]]


any_json = json_values(max_leaves=20)
result_keys = st.sampled_from(
    [
        "cniVersion",
        "interfaces",
        "ips",
        "routes",
        "dns",
        "ip4",
        "ip6",
        "address",
        "dst",
        "interface",
        "version",
    ]
)


@given(
    document=st.dictionaries(result_keys, any_json, max_size=6),
    version=st.sampled_from(VERSIONS),
    target=st.sampled_from(VERSIONS),
)
def test_converting_arbitrary_objects_raises_nothing_but_cni_errors(
    document: JsonObject, version: str, target: str
) -> None:
    document.setdefault("cniVersion", version)
    outcome = outcome_of(results.convert, document, target)

    if isinstance(outcome, CniError):
        assert outcome.code in (ErrorCode.INCOMPATIBLE_VERSION, ErrorCode.DECODING_FAILURE)
    else:
        assert outcome["cniVersion"] == target
        assert results.convert(outcome, target) == outcome  # valid in its version, and a fixed point


@given(result=rich_results(version="1.1.0", extras=True), target=st.sampled_from(VERSIONS))
def test_a_decoded_result_converts_without_revalidation_to_what_convert_gives(
    result: JsonObject, target: str
) -> None:
    decoded = results.decode_result(json.dumps(result).encode(), version="1.1.0", plugin="bridge")
    untouched = copy.deepcopy(decoded)

    def outcome(convert: Any) -> Any:  # e.g. to 0.2.0 with no address: refused alike
        value = outcome_of(convert, decoded, target)
        return value.to_json() if isinstance(value, CniError) else value

    assert outcome(results.convert_decoded) == outcome(results.convert)
    assert decoded == untouched


@pytest.mark.parametrize(("source", "target"), list(itertools.product(VERSIONS, VERSIONS)))
def test_every_decoded_version_converts_as_the_conversion_table_says(source: str, target: str) -> None:
    stdout = json.dumps(SOURCE[source](source)).encode()
    decoded = results.decode_result(stdout, version=source, plugin="bridge")

    assert results.convert_decoded(decoded, target) == expected_form(source, target)(target)


@given(
    result=st.one_of(
        legacy_results(),
        *(rich_results(version=version, extras=version == "1.1.0") for version in VERSIONS[2:]),
    ),
    target=st.sampled_from(VERSIONS),
)
def test_converting_never_changes_the_input_however_much_the_output_shares_with_it(
    result: JsonObject, target: str
) -> None:
    untouched = copy.deepcopy(result)

    converted = outcome_of(results.convert, result, target)
    if isinstance(converted, dict):
        json.loads(json.dumps(converted))  # the output is plain JSON
        assert converted["cniVersion"] == target
        assert converted is not result

    assert result == untouched
