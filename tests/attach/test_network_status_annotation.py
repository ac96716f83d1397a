"""The network-status annotation as upstream writes it, byte for byte, and the AddedInterface events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.attach.cluster import InterfaceEvent
from app.attach.network_status import (
    DelegateOutcome,
    interface_events,
    network_status,
    status_entries,
)
from app.cni.types import JsonObject

NETNS = "/var/run/netns/ref-pod"
KEY_ORDER = ["name", "interface", "ips", "mac", "mtu", "default", "dns", "device-info", "gateway"]

RECORDED = """[{
    "name": "default-net",
    "interface": "eth0",
    "ips": [
        "10.210.0.2"
    ],
    "mac": "56:48:44:96:3e:e4",
    "default": true,
    "dns": {},
    "gateway": [
        "10.210.0.1"
    ]
},{
    "name": "default/macvlan-conf",
    "interface": "net1",
    "ips": [
        "10.211.0.2"
    ],
    "mac": "86:ff:e6:41:ce:63",
    "dns": {}
}]"""
"""network-status.md §1: the annotation recorded from upstream Multus (bridge cluster network, macvlan)."""

BRIDGE_RESULT: JsonObject = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "9a:3c:52:11:0e:01"},
        {"name": "veth6f2a1c3e", "mac": "d2:51:0b:7e:44:90"},
        {"name": "eth0", "mac": "56:48:44:96:3e:e4", "sandbox": NETNS},
    ],
    "ips": [{"address": "10.210.0.2/24", "gateway": "10.210.0.1", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.210.0.1"}],
    "dns": {},
}
MACVLAN_RESULT: JsonObject = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "net1", "mac": "86:ff:e6:41:ce:63", "sandbox": NETNS}],
    "ips": [{"address": "10.211.0.2/24", "gateway": "10.211.0.1", "interface": 0}],
    "dns": {},
}


def master(result: JsonObject, name: str = "default-net", **kwargs: Any) -> DelegateOutcome:
    return DelegateOutcome(network_name=name, result=result, is_master=True, **kwargs)


def secondary(result: JsonObject, name: str = "default/net", **kwargs: Any) -> DelegateOutcome:
    return DelegateOutcome(network_name=name, result=result, is_master=False, **kwargs)


def result_with(
    interfaces: list[JsonObject], ips: list[JsonObject], routes: list[JsonObject] | None = None
) -> JsonObject:
    return {"cniVersion": "1.1.0", "interfaces": interfaces, "ips": ips, "routes": routes or []}


def sandbox(name: str, mac: str = "", **extra: Any) -> JsonObject:
    return {"name": name, "sandbox": NETNS, **({"mac": mac} if mac else {}), **extra}


def test_recorded_bridge_and_macvlan_value_is_reproduced_byte_for_byte() -> None:
    value = network_status([master(BRIDGE_RESULT), secondary(MACVLAN_RESULT, "default/macvlan-conf")])
    assert value == RECORDED


def test_no_delegates_or_no_entries_give_an_empty_list() -> None:
    legacy = {"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}}
    assert network_status([]) == "[]"
    assert status_entries([master(legacy)]) == []
    assert network_status([master(result_with([], [{"address": "10.0.0.2/24"}]))]) == "[]"


def test_host_side_interfaces_are_skipped() -> None:
    result = result_with(
        [{"name": "br0"}, sandbox("eth0", "0a:00:00:00:00:01"), {"name": "veth0"}],
        [{"address": "10.0.0.2/24", "interface": 1}],
    )
    assert status_entries([secondary(result)]) == [
        {
            "name": "default/net",
            "interface": "eth0",
            "ips": ["10.0.0.2"],
            "mac": "0a:00:00:00:00:01",
            "dns": {},
        }
    ]


def test_a_single_host_side_interface_still_gives_an_entry_without_interface() -> None:
    result = result_with([{"name": "br0", "mac": "0a:00:00:00:00:09"}], [{"address": "10.0.0.2/24"}])
    assert status_entries([master(result)]) == [
        {"name": "default-net", "ips": ["10.0.0.2"], "default": True, "dns": {}}
    ]


def test_single_interface_takes_every_address_regardless_of_index() -> None:
    result = {
        "cniVersion": "1.1.0",
        "interfaces": [sandbox("net1", mtu=9000)],
        "ips": [{"address": "10.0.0.2/24"}, {"address": "fd00:0::2/64", "interface": 0}],
    }
    [entry] = status_entries([secondary(result)])
    assert entry["ips"] == ["10.0.0.2", "fd00::2"]
    assert entry["mtu"] == 9000


def test_multi_interface_results_give_one_entry_per_sandbox_interface() -> None:
    result = result_with(
        [
            sandbox("eth0", "0a:00:00:00:00:01"),
            {"name": "host0"},
            sandbox("eth1", "0a:00:00:00:00:02", mtu=1400),
        ],
        [
            {"address": "10.0.0.2/24", "interface": 0},
            {"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 2},
            {"address": "10.9.0.2/24", "interface": 1},
            {"address": "10.2.0.2/24"},
        ],
        [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "10.96.0.0/12", "gw": "10.0.0.1"}],
    )
    assert status_entries([master(result)]) == [
        {
            "name": "default-net",
            "interface": "eth0",
            "ips": ["10.0.0.2"],
            "mac": "0a:00:00:00:00:01",
            "dns": {},
            "gateway": ["10.1.0.1"],
        },
        {
            "name": "default-net",
            "interface": "eth1",
            "ips": ["10.1.0.2", "10.2.0.2"],
            "mac": "0a:00:00:00:00:02",
            "mtu": 1400,
            "default": True,
            "dns": {},
            "gateway": ["10.1.0.1"],
        },
    ]


def defaults(result: JsonObject, *, is_master: bool = True) -> list[tuple[str, bool]]:
    outcome = DelegateOutcome(network_name="n", result=result, is_master=is_master)
    return [(entry["interface"], entry.get("default", False)) for entry in status_entries([outcome])]


def test_default_goes_to_first_sandbox_when_no_address_has_gateway_and_interface() -> None:
    result = result_with(
        [sandbox("eth0"), sandbox("eth1")], [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]
    )
    assert defaults(result) == [("eth0", True), ("eth1", False)]


def test_default_goes_to_the_interface_of_the_first_address_with_gateway_and_interface() -> None:
    result = result_with(
        [sandbox("eth0"), sandbox("eth1")],
        [
            {"address": "10.0.0.2/24", "interface": 0},
            {"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 1},
        ],
    )
    assert defaults(result) == [("eth0", False), ("eth1", True)]


def test_no_entry_is_default_when_the_gateway_interface_is_host_side() -> None:
    result = result_with(
        [{"name": "br0"}, sandbox("eth0"), sandbox("eth1")],
        [{"address": "10.0.0.1/24", "gateway": "10.0.0.254", "interface": 0}],
    )
    assert defaults(result) == [("eth0", False), ("eth1", False)]


@pytest.mark.parametrize(
    ("first_index", "expected"),
    [
        pytest.param(-1, [("eth0", True), ("eth1", False)], id="minus-one-is-upstreams-none"),
        pytest.param(-2, [("eth0", False), ("eth1", False)], id="negative"),
        pytest.param(7, [("eth0", False), ("eth1", False)], id="out-of-range"),
    ],
)
def test_the_first_gateway_address_with_an_index_naming_no_interface_decides_the_default_as_upstream(
    first_index: int, expected: list[tuple[str, bool]]
) -> None:
    # Upstream's gatewayInterfaceIndex returns the first such address's index as it is, and -1
    # means "none found" to its caller: then the first sandbox interface is the default. Any other
    # index that names no sandbox interface leaves every entry non-default; later addresses are
    # not looked at.
    result = result_with(
        [sandbox("eth0"), sandbox("eth1")],
        [
            {"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": first_index},
            {"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 1},
        ],
    )

    assert defaults(result) == expected


def test_an_address_with_interface_minus_one_gives_upstreams_bytes() -> None:
    result = result_with(
        [sandbox("eth0", "0a:00:00:00:00:01"), sandbox("eth1", "0a:00:00:00:00:02")],
        [
            {"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": -1},
            {"address": "10.1.0.2/24", "interface": 1},
        ],
        [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
    )
    entry = """{{
    "name": "default-net",
    "interface": "{name}",{ips}
    "mac": "{mac}",{default}
    "dns": {{}},
    "gateway": [
        "10.0.0.1"
    ]
}}"""
    eth0 = entry.format(name="eth0", ips="", mac="0a:00:00:00:00:01", default='\n    "default": true,')
    eth1_ips = '\n    "ips": [\n        "10.1.0.2"\n    ],'
    eth1 = entry.format(name="eth1", ips=eth1_ips, mac="0a:00:00:00:00:02", default="")

    assert network_status([master(result)]) == f"[{eth0},{eth1}]"


def test_secondary_delegates_are_never_default() -> None:
    result = result_with(
        [sandbox("net1"), sandbox("net2")], [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]
    )
    assert defaults(result, is_master=False) == [("net1", False), ("net2", False)]


@pytest.mark.parametrize(
    ("routes", "gateway"),
    [
        (
            [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "::/0", "gw": "fd00:0:0::1"}],
            ["10.0.0.1", "fd00::1"],
        ),
        ([{"dst": "0.0.0.0/8", "gw": "10.0.0.1"}], ["10.0.0.1"]),  # upstream: any dst whose address is zero
        ([{"dst": "::ffff:0.0.0.0/96", "gw": "::ffff:10.0.0.1"}], ["10.0.0.1"]),
        ([{"dst": "10.0.0.0/8", "gw": "10.0.0.1"}], None),
        ([{"dst": "0.0.0.0/0"}], None),  # upstream writes "\u003cnil\u003e": deliberately left out
    ],
)
def test_gateway_lists_default_routes_gateways(routes: list[JsonObject], gateway: list[str] | None) -> None:
    result = result_with([sandbox("eth0")], [{"address": "10.0.0.2/24"}], routes)
    [entry] = status_entries([secondary(result)])
    assert entry.get("gateway") == gateway


def test_dns_is_always_present_and_keeps_struct_order() -> None:
    dns = {"options": ["ndots:5"], "search": ["svc.local"], "domain": "", "nameservers": ["10.96.0.10"]}
    result = result_with([sandbox("eth0")], []) | {"dns": dns}
    [entry] = status_entries([secondary(result)])
    assert list(entry) == ["name", "interface", "dns"]
    assert list(entry["dns"].items()) == [
        ("nameservers", ["10.96.0.10"]),
        ("search", ["svc.local"]),
        ("options", ["ndots:5"]),
    ]


def test_device_info_is_re_encoded_through_upstream_struct() -> None:
    device_info = {
        "pci": {"rdma-device": "", "pf-pci-address": "0000:00:02.0", "pci-address": "0000:00:02.1", "x": "y"},
        "version": "1.1.0",
        "type": "pci",
        "extra": 1,
        "memif": {},
    }
    [entry] = status_entries([secondary(result_with([sandbox("net1")], []), device_info=device_info)])
    assert json.dumps(entry["device-info"]) == (
        '{"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:00:02.1", '
        '"pf-pci-address": "0000:00:02.0"}, "memif": {}}'
    )
    assert list(entry)[-1] == "device-info"


def test_go_html_escaping_and_raw_non_ascii() -> None:
    value = network_status([secondary(result_with([sandbox("eth0")], []), name="ns/<a>&b\u2028\u2029é")])
    assert '"name": "ns/\\u003ca\\u003e\\u0026b\\u2028\\u2029é"' in value
    assert json.loads(value)[0]["name"] == "ns/<a>&b\u2028\u2029é"


def test_addresses_are_printed_as_go_prints_ips() -> None:
    result = result_with(
        [sandbox("eth0")],
        [
            {"address": "FD00:0:0:0::5/64"},
            {"address": "::ffff:10.0.0.5/120"},
            {"address": "1:0:2:3:4:5:6:7/64"},
        ],
    )
    [entry] = status_entries([secondary(result)])
    assert entry["ips"] == ["fd00::5", "10.0.0.5", "1:0:2:3:4:5:6:7"]


def test_entries_follow_delegate_order() -> None:
    outcomes = [
        master(result_with([sandbox("eth0")], [])),
        secondary(result_with([sandbox("net1")], []), "a/first"),
        secondary(result_with([sandbox("net2")], []), "b/second"),
    ]
    assert [entry["name"] for entry in status_entries(outcomes)] == ["default-net", "a/first", "b/second"]


# --- AddedInterface events ----------------------------------------------------------------------------------


def test_events_name_interface_addresses_with_prefix_and_network() -> None:
    events = interface_events([master(BRIDGE_RESULT), secondary(MACVLAN_RESULT, "default/macvlan-conf")])
    assert events == [
        InterfaceEvent(ifname="eth0", addresses=("10.210.0.2/24",), network_name="default-net"),
        InterfaceEvent(ifname="net1", addresses=("10.211.0.2/24",), network_name="default/macvlan-conf"),
    ]


def test_events_prefer_the_ifname_the_delegate_ran_with() -> None:
    [event] = interface_events([secondary(MACVLAN_RESULT, ifname="mv9")])
    assert event.ifname == "mv9"


def test_events_skip_empty_results_but_not_address_only_ones() -> None:
    outcomes = [
        secondary({"cniVersion": "1.0.0"}),
        secondary({"cniVersion": "1.0.0", "interfaces": [], "ips": []}),
        secondary({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}}, ifname="net3"),
    ]
    assert interface_events(outcomes) == [
        InterfaceEvent(ifname="net3", addresses=("10.0.0.2/24",), network_name="default/net")
    ]


def test_event_addresses_print_mapped_ipv4_as_go_does() -> None:
    result = result_with([sandbox("eth0")], [{"address": "::ffff:10.0.0.5/120"}, {"address": "fd00:0::5/64"}])
    [event] = interface_events([secondary(result)])
    assert event.addresses == ("10.0.0.5/24", "fd00::5/64")


# --- properties ---------------------------------------------------------------------------------------------

TEXT = st.text(max_size=8)
ADDRESSES = st.ip_addresses(v=4).map(lambda a: f"{a}/24") | st.ip_addresses(v=6).map(lambda a: f"{a}/64")


@st.composite
def results(draw: st.DrawFn) -> JsonObject:
    interfaces = draw(
        st.lists(
            st.fixed_dictionaries(
                {"name": TEXT},
                optional={"mac": TEXT, "sandbox": TEXT, "mtu": st.integers(0, 9000)},
            ),
            max_size=3,
        )
    )
    index = st.integers(0, len(interfaces) - 1) if interfaces else st.nothing()
    ips = draw(
        st.lists(
            st.fixed_dictionaries(
                {"address": ADDRESSES},
                optional={"gateway": st.ip_addresses().map(str), "interface": index},
            ),
            max_size=4,
        )
    )
    routes = draw(
        st.lists(
            st.fixed_dictionaries(
                {"dst": st.sampled_from(["0.0.0.0/0", "::/0", "10.0.0.0/8"])},
                optional={"gw": st.ip_addresses().map(str)},
            ),
            max_size=3,
        )
    )
    dns = draw(
        st.fixed_dictionaries({}, optional={"nameservers": st.lists(TEXT, max_size=2), "domain": TEXT})
    )
    return {"cniVersion": "1.1.0", "interfaces": interfaces, "ips": ips, "routes": routes, "dns": dns}


OUTCOMES = st.lists(
    st.builds(
        DelegateOutcome,
        network_name=st.text(max_size=12),
        result=results(),
        is_master=st.booleans(),
        device_info=st.none()
        | st.fixed_dictionaries({}, optional={"type": TEXT, "pci": st.just({"pci-address": "x"})}),
    ),
    max_size=4,
)


@given(OUTCOMES)
def test_value_is_always_json_with_upstream_key_order(outcomes: list[DelegateOutcome]) -> None:
    value = network_status(outcomes)
    parsed = json.loads(value)
    assert parsed == status_entries(outcomes)
    for entry in parsed:
        keys = list(entry)
        assert keys == [key for key in KEY_ORDER if key in keys]
        assert {"name", "dns"} <= set(keys)
    assert not {"<", ">", "&"} & set(value)
    assert value[0] + value[-1] == "[]"
    assert value.count("\n},{\n") == max(len(parsed) - 1, 0)


@given(OUTCOMES)
def test_at_most_one_default_entry_per_master_delegate(outcomes: list[DelegateOutcome]) -> None:
    for outcome in outcomes:
        flags = [entry.get("default", False) for entry in status_entries([outcome])]
        assert sum(flags) <= (1 if outcome.is_master else 0)
