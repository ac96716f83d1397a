"""Reading the networks and default-network annotations: both forms, every field, upstream's error texts.

Error tests assert the whole message where upstream's text is known exactly (it is kept verbatim so
users can search for it), prefixed by the annotation's name; ``details`` names the element.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.attach.selection import (
    NetworkSelection,
    check_default_routes,
    parse_default_network,
    parse_networks,
)
from app.cni.types import CniError, ErrorCode

NETWORKS = "annotation k8s.v1.cni.cncf.io/networks: "
DEFAULT_NETWORK = "annotation v1.multus-cni.io/default-network: "
JSON_FORMAT = (
    "parsePodNetworkAnnotation: failed to parse pod Network Attachment Selection Annotation JSON format: "
)
MISMATCH = (
    "parsePodNetworkAnnotation: parsePodNetworkObjectName: Failed to parse: one or more items did not match "
    "comma-delimited format (must consist of lower case alphanumeric characters). Must start and end with an "
    "alphanumeric character), mismatch @ '{}'"
)
BAD_IFNAME = (
    "parsePodNetworkAnnotation: parsePodNetworkObjectName: Failed to parse interface name: must be less than "
    "15 chars and not contain '/' or spaces. interface name '{}'"
)


def parse_one(element: dict[str, Any], namespace: str = "pods") -> NetworkSelection:
    [selection] = parse_networks(json.dumps([element]), pod_namespace=namespace)
    return selection


def error_of(value: str, namespace: str = "pods") -> CniError:
    with pytest.raises(CniError) as caught:
        parse_networks(value, pod_namespace=namespace)
    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    return caught.value


# --- comma form --------------------------------------------------------------------------------------


def test_reference_example_names_namespace_and_interface_and_defaults_the_rest() -> None:
    assert parse_networks("default/plain@foo1, filebacked", pod_namespace="team") == [
        NetworkSelection(name="plain", namespace="default", interface="foo1"),
        NetworkSelection(name="filebacked", namespace="team"),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", [("pods", "a", "")]),
        ("ns/a", [("ns", "a", "")]),
        ("a@eth9", [("pods", "a", "eth9")]),
        ("ns/a@eth9", [("ns", "a", "eth9")]),
        (" ns / a @ eth9 ", [("ns", "a", "eth9")]),
        ("a,b,a", [("pods", "a", ""), ("pods", "b", ""), ("pods", "a", "")]),
        ("/a", [("pods", "a", "")]),
        ("a@", [("pods", "a", "")]),
        ("0-x-9", [("pods", "0-x-9", "")]),
        ("a@if_0.x-Y", [("pods", "a", "if_0.x-Y")]),
        ("a@fifteen-chars-x", [("pods", "a", "fifteen-chars-x")]),
        ("\u00a0a\u3000", [("pods", "a", "")]),  # Go's TrimSpace strips Unicode spaces too
        ("null", [("pods", "null", "")]),  # no [, { or ": the comma form
    ],
)
def test_comma_form_items(value: str, expected: list[tuple[str, str, str]]) -> None:
    selections = parse_networks(value, pod_namespace="pods")
    assert [(s.namespace, s.name, s.interface) for s in selections] == expected


def test_empty_annotation_selects_no_network() -> None:
    assert parse_networks("", pod_namespace="pods") == []


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (
            "a/b/c",
            "parsePodNetworkAnnotation: parsePodNetworkObjectName: Invalid network object (failed at '/')",
        ),
        (
            "a@b@c",
            "parsePodNetworkAnnotation: parsePodNetworkObjectName: Invalid network object (failed at '@')",
        ),
        ("ok, Plain_X", MISMATCH.format("Plain_X")),
        ("Team/a", MISMATCH.format("Team")),
        ("a-", MISMATCH.format("a-")),
        ("-a", MISMATCH.format("-a")),
        ("a.b", MISMATCH.format("a.b")),
        ("a b", MISMATCH.format("a b")),
        ("a@sixteen-chars-xx", BAD_IFNAME.format("sixteen-chars-xx")),
        ("a@\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9", BAD_IFNAME.format("\u00e9" * 8)),  # 16 bytes
        ("a@if 0", BAD_IFNAME.format("if 0")),
        ("a@if\t0", BAD_IFNAME.format("if\t0")),
    ],
)
def test_comma_form_errors_keep_upstream_text(value: str, text: str) -> None:
    assert error_of(value).msg == NETWORKS + text


def test_comma_form_error_details_name_the_item() -> None:
    assert error_of("ok, x/y/z").details == 'item 1: "x/y/z"'


@pytest.mark.parametrize("value", ["a,,b", "a,", "ns/", "ns/@eth1", " "])
def test_an_empty_network_name_is_refused_rather_than_looked_up(value: str) -> None:
    error = error_of(value)
    assert error.msg == NETWORKS + "parsePodNetworkAnnotation: network name is empty"
    assert error.details.startswith("element ")


# --- JSON form ---------------------------------------------------------------------------------------------


def test_json_form_reads_every_field() -> None:
    element = {
        "name": "net-a",
        "namespace": "other",
        "interface": "mv9",
        "ips": ["10.1.0.5/24", "fd00::5"],
        "mac": "02:00:00:00:00:31",
        "infiniband-guid": "00:00:00:00:00:00:00:01",
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 1000, "egressBurst": 5},
        "deviceID": "0000:00:1f.0",
        "cni-args": {"foo": "bar", "n": 1.0, "deep": {"x": [1, 2.5]}},
        "default-route": ["10.1.0.1"],
        "ipam-claim-reference": "claim-a",
        "unknown": {"ignored": True},
    }
    assert parse_one(element) == NetworkSelection(
        name="net-a",
        namespace="other",
        interface="mv9",
        ips=("10.1.0.5/24", "fd00::5"),
        mac="02:00:00:00:00:31",
        infiniband_guid="00:00:00:00:00:00:00:01",
        port_mappings=({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},),
        bandwidth={"ingressRate": 1000, "ingressBurst": 0, "egressRate": 0, "egressBurst": 5},
        device_id="0000:00:1f.0",
        cni_args={"foo": "bar", "n": 1, "deep": {"x": [1, 2.5]}},
        default_route=("10.1.0.1",),
        ipam_claim_reference="claim-a",
    )


def test_json_namespace_defaults_to_the_pods_and_qualified_name_joins_them() -> None:
    selection = parse_one({"name": "net-a", "namespace": ""}, namespace="team")
    assert (selection.namespace, selection.qualified_name) == ("team", "team/net-a")


def test_port_mapping_keys_follow_upstream_struct_and_drop_unknown_ones() -> None:
    selection = parse_one(
        {"name": "a", "portMappings": [{"hostIP": "1.2.3.4", "containerPort": 80, "x": 1}, None]}
    )
    assert selection.port_mappings == ({"hostPort": 0, "containerPort": 80, "hostIP": "1.2.3.4"},)
    assert list(selection.port_mappings[0]) == ["hostPort", "containerPort", "hostIP"]


def test_legacy_interface_request_is_used_only_without_interface() -> None:
    assert parse_one({"name": "a", "interfaceRequest": "old1"}).interface == "old1"
    assert parse_one({"name": "a", "interfaceRequest": "old1", "interface": "new1"}).interface == "new1"


def test_keys_match_case_insensitively_like_go() -> None:
    [selection] = parse_networks(
        '[{"NAME": "a", "Interface": "x1", "MAC": "02:00:00:00:00:01"}]', pod_namespace="p"
    )
    assert (selection.name, selection.interface, selection.mac) == ("a", "x1", "02:00:00:00:00:01")


def test_exact_key_and_later_duplicates_win_and_null_keeps_a_string() -> None:
    value = (
        '[{"name": "a", "name": "b", "mac": "02:00:00:00:00:01", "mac": null, '
        '"ips": ["1.1.1.1"], "ips": null}]'
    )
    [selection] = parse_networks(value, pod_namespace="p")
    assert (selection.name, selection.mac, selection.ips) == ("b", "02:00:00:00:00:01", ())


def test_empty_requests_count_as_no_request() -> None:
    selection = parse_one({"name": "a", "ips": [], "portMappings": [], "default-route": [], "cni-args": None})
    assert (selection.ips, selection.port_mappings, selection.default_route, selection.cni_args) == (
        (),
        (),
        (),
        None,
    )


def test_empty_cni_args_object_is_still_a_request() -> None:
    assert parse_one({"name": "a", "cni-args": {}}).cni_args == {}


def test_empty_json_list_selects_no_network() -> None:
    assert parse_networks("[]", pod_namespace="p") == []


@pytest.mark.parametrize(
    "mac",
    [
        "02:00:5e:10:00:01",
        "02-00-5E-10-00-01",
        "0200.5e10.0001",
        "02:00:5e:10:00:00:00:01",
        "0200.5e10.0000.0001",
        "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
        "0000.0000.fe80.0000.0000.0000.0200.5e10.0000.0001",
    ],
)
def test_every_go_mac_format_is_accepted(mac: str) -> None:
    assert parse_one({"name": "a", "mac": mac, "infiniband-guid": mac}).mac == mac


@pytest.mark.parametrize(
    "mac",
    [
        "zz",
        "02:00:5e:10:00",
        "02:00:5e:10:00:0g",
        "02:00-5e:10:00:01",
        "02:00:5e:10:00:001",
        "2:00:5e:10:00:01:1",
        "0200.5e10-0001",
        "02:00:5e:10:00:00:01",
        "0200:5e10:0001",
        "\u00e9\u00e9:00:5e:10:00",
    ],
)
def test_macs_go_refuses_are_refused_with_upstream_text(mac: str) -> None:
    error = error_of(json.dumps([{"name": "a", "mac": mac}]))
    assert (
        error.msg
        == NETWORKS + f"parsePodNetworkAnnotation: failed to mac: address {mac}: invalid MAC address"
    )
    assert error.details == "element 0, network pods/a"


def test_reference_mac_error_text() -> None:
    error = error_of('[{"name": "macvlan-conf", "mac": "zz"}]', namespace="default")
    assert str(error) == (
        "annotation k8s.v1.cni.cncf.io/networks: parsePodNetworkAnnotation: failed to mac: address zz: "
        "invalid MAC address; element 0, network default/macvlan-conf"
    )


def test_bad_infiniband_guid_has_upstream_text() -> None:
    error = error_of('[{"name": "a", "infiniband-guid": "00:01"}]')
    assert error.msg == (
        NETWORKS
        + "parsePodNetworkAnnotation: failed to validate infiniband GUID: address 00:01: invalid MAC address"
    )


@pytest.mark.parametrize(
    ("ip", "text"),
    [
        ("1.2.3", 'failed to parse IP address "1.2.3"'),
        ("", 'failed to parse IP address ""'),
        ("fe80::1%eth0", 'failed to parse IP address "fe80::1%eth0"'),
        ("01.2.3.4", 'failed to parse IP address "01.2.3.4"'),
        ("a\nb", 'failed to parse IP address "a\\nb"'),
        ("1.2.3.4/33", 'failed to parse CIDR "1.2.3.4/33": invalid CIDR address: 1.2.3.4/33'),
        ("1.2.3/24", 'failed to parse CIDR "1.2.3/24": invalid CIDR address: 1.2.3/24'),
        ("fd00::1/129", 'failed to parse CIDR "fd00::1/129": invalid CIDR address: fd00::1/129'),
    ],
)
def test_requested_ips_must_be_addresses_or_cidrs(ip: str, text: str) -> None:
    error = error_of(json.dumps([{"name": "ok"}, {"name": "a", "ips": ["10.0.0.1", ip]}]))
    assert error.msg == NETWORKS + text
    assert error.details == "element 1, network pods/a"


def test_checks_run_in_upstream_order_mac_before_ips() -> None:
    error = error_of('[{"name": "a", "ips": ["x"], "mac": "zz"}]')
    assert "failed to mac" in error.msg


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (
            '{"name": "a"}',
            "json: cannot unmarshal object into Go value of type []*types.NetworkSelectionElement",
        ),
        ('"a"', "json: cannot unmarshal string into Go value of type []*types.NetworkSelectionElement"),
        ('["a"]', "json: cannot unmarshal string into Go value of type types.NetworkSelectionElement"),
        ("[[]]", "json: cannot unmarshal array into Go value of type types.NetworkSelectionElement"),
        (
            '[{"name": 5}]',
            "json: cannot unmarshal number into Go struct field NetworkSelectionElement.name of type string",
        ),
        (
            '[{"name": "a", "ips": "1.1.1.1"}]',
            "json: cannot unmarshal string into Go struct field NetworkSelectionElement.ips of type []string",
        ),
        (
            '[{"name": "a", "ips": [true]}]',
            "json: cannot unmarshal bool into Go struct field NetworkSelectionElement.ips of type string",
        ),
        (
            '[{"name": "a", "bandwidth": {"ingressRate": "1"}}]',
            "json: cannot unmarshal string into Go struct field BandwidthEntry.bandwidth.ingressRate "
            "of type int",
        ),
        (
            '[{"name": "a", "bandwidth": []}]',
            "json: cannot unmarshal array into Go struct field NetworkSelectionElement.bandwidth of type "
            "types.BandwidthEntry",
        ),
        (
            '[{"name": "a", "portMappings": [{"hostPort": 1.5}]}]',
            "json: cannot unmarshal number 1.5 into Go struct field PortMapEntry.portMappings.hostPort "
            "of type int",
        ),
        (
            '[{"name": "a", "portMappings": [{"hostPort": 9223372036854775808}]}]',
            "json: cannot unmarshal number 9223372036854775808 into Go struct field "
            "PortMapEntry.portMappings.hostPort of type int",
        ),
        (
            '[{"name": "a", "portMappings": [5]}]',
            "json: cannot unmarshal number into Go struct field NetworkSelectionElement.portMappings of type "
            "types.PortMapEntry",
        ),
        (
            '[{"name": "a", "cni-args": ["x"]}]',
            "json: cannot unmarshal array into Go struct field NetworkSelectionElement.cni-args of type "
            "map[string]interface {}",
        ),
        (
            '[{"name": "a", "default-route": [5]}]',
            "json: cannot unmarshal number into Go struct field NetworkSelectionElement.default-route "
            "of type net.IP",
        ),
        ('[{"name": "a", "default-route": ["10.0.0"]}]', "invalid IP address: 10.0.0"),
        ('[{"name": "a", "default-route": [""]}]', "default-route: empty IP address"),
        ("[null]", "null is not a network selection element"),
    ],
)
def test_json_decoding_errors_read_like_go(value: str, text: str) -> None:
    assert error_of(value).msg == NETWORKS + JSON_FORMAT + text


@pytest.mark.parametrize(
    ("bandwidth", "field"),
    [({"ingressRate": -1}, "ingressRate"), ({"ingressRate": 1000, "EgressBurst": -5}, "egressBurst")],
)
def test_a_negative_bandwidth_value_is_refused_naming_the_field(
    bandwidth: dict[str, int], field: str
) -> None:
    """Upstream's ``int`` fields pass ``-1`` on; the bandwidth plugin decodes ``uint64``s and failed
    the ADD (and its rollback's DEL) with code 999 "failed to parse network configuration"."""
    error = error_of(json.dumps([{"name": "a"}, {"name": "b", "bandwidth": bandwidth}]))

    assert error.msg.startswith(NETWORKS + JSON_FORMAT + f"bandwidth.{field}: -")
    assert "is negative" in error.msg
    assert error.details == "element 1"


def test_zero_bandwidth_values_are_taken() -> None:
    assert parse_one({"name": "a", "bandwidth": {"ingressRate": 0}}).bandwidth == {
        "ingressRate": 0,
        "ingressBurst": 0,
        "egressRate": 0,
        "egressBurst": 0,
    }


def test_json_syntax_errors_keep_upstream_prefix() -> None:
    assert error_of('[{"name": "a"').msg.startswith(NETWORKS + JSON_FORMAT)
    assert error_of('[{"name": NaN}]').msg.startswith(NETWORKS + JSON_FORMAT)


@pytest.mark.parametrize("interface", ["sixteen-chars-xx", "a b", "a/b"])
def test_json_interface_names_get_the_comma_forms_check(interface: str) -> None:
    error = error_of(json.dumps([{"name": "a", "interface": interface}]))
    assert error.msg == NETWORKS + BAD_IFNAME.format(interface).removeprefix("parsePodNetworkAnnotation: ")


def test_ipam_claim_reference_is_kept_and_must_be_a_string() -> None:
    assert (
        parse_one({"name": "a", "ips": ["10.0.0.1"], "ipam-claim-reference": "c"}).ipam_claim_reference == "c"
    )
    assert "ipam-claim-reference of type string" in error_of('[{"name": "a", "ipam-claim-reference": 1}]').msg


# --- default-network annotation --------------------------------------------------------------------------


def test_default_network_namespace_defaults_to_multus_namespace() -> None:
    assert parse_default_network("alt-default", multus_namespace="kube-system") == NetworkSelection(
        name="alt-default", namespace="kube-system"
    )
    assert (
        parse_default_network('[{"name": "x", "namespace": "n"}]', multus_namespace="kube-system").namespace
        == "n"
    )


def test_more_than_one_default_network_is_refused_with_upstream_text() -> None:
    with pytest.raises(CniError) as caught:
        parse_default_network("a, b", multus_namespace="kube-system")
    assert caught.value.msg == (
        DEFAULT_NETWORK + "tryLoadK8sPodDefaultNetwork: more than one default network is specified: a, b"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("", 'parsePodNetworkAnnotation: pod annotation does not have "network" as key'),
        ("[]", "tryLoadK8sPodDefaultNetwork: no default network is specified"),
        ("A", MISMATCH.format("A")),
    ],
)
def test_default_network_errors_name_their_annotation(value: str, text: str) -> None:
    with pytest.raises(CniError) as caught:
        parse_default_network(value, multus_namespace="kube-system")
    assert (caught.value.code, caught.value.msg) == (ErrorCode.INVALID_NETWORK_CONFIG, DEFAULT_NETWORK + text)


# --- default-route ----------------------------------------------------------------------------------------


def gateways(*routes: tuple[str, ...]) -> list[NetworkSelection]:
    return [
        NetworkSelection(name=f"n{i}", namespace="p", default_route=route) for i, route in enumerate(routes)
    ]


@pytest.mark.parametrize(
    "routes",
    [
        (),
        (("10.0.0.1",),),
        (("10.0.0.1", "fd00::1"),),
        (("10.0.0.1",), ("fd00::1",)),
        ((), ("::ffff:1.2.3.4",)),
    ],
)
def test_one_gateway_per_family_is_accepted(routes: tuple[tuple[str, ...], ...]) -> None:
    check_default_routes(gateways(*routes))


@pytest.mark.parametrize(
    "routes",
    [
        (("10.0.0.1", "10.0.0.2"),),
        (("10.0.0.1",), ("10.1.0.1",)),
        (("fd00::1",), ("fd01::1",)),
        (("10.0.0.1",), ("::ffff:1.2.3.4",)),  # an IPv4-mapped address is IPv4 to Go
    ],
)
def test_ecmp_default_routes_are_refused(routes: tuple[tuple[str, ...], ...]) -> None:
    with pytest.raises(CniError) as caught:
        check_default_routes(gateways(*routes))
    assert (caught.value.code, caught.value.msg) == (
        ErrorCode.INVALID_NETWORK_CONFIG,
        "multus does not support ECMP for default-route",
    )


# --- properties -------------------------------------------------------------------------------------------

LABELS = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,12}[a-z0-9])?", fullmatch=True)
IFNAMES = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFXYZ0123456789-_.", min_size=1, max_size=15
).filter(
    lambda name: name not in (".", "..", "lo")  # names Linux or every netns already takes: refused
)
SPACES = st.sampled_from(["", " ", "  ", "\t"])
SELECTION_KEYS = [
    "name",
    "namespace",
    "interface",
    "interfaceRequest",
    "ips",
    "mac",
    "infiniband-guid",
    "portMappings",
    "bandwidth",
    "deviceID",
    "cni-args",
    "default-route",
    "ipam-claim-reference",
    "NAME",
    "other",
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
ELEMENTS = st.dictionaries(st.sampled_from(SELECTION_KEYS), JSON_VALUES, max_size=6)


@st.composite
def comma_items(draw: st.DrawFn) -> tuple[str, str, str]:
    return (draw(st.one_of(st.just(""), LABELS)), draw(LABELS), draw(st.one_of(st.just(""), IFNAMES)))


def comma_form(items: list[tuple[str, str, str]], spaces: st.DataObject) -> str:
    """The inverse of the comma-form parser, with arbitrary whitespace around every part."""

    def pad(text: str) -> str:
        return spaces.draw(SPACES) + text + spaces.draw(SPACES)

    texts = []
    for namespace, name, ifname in items:
        text = pad(name)
        if namespace:
            text = pad(namespace) + "/" + text
        if ifname:
            text += "@" + pad(ifname)
        texts.append(text)
    return ",".join(texts)


@given(st.lists(comma_items(), min_size=1, max_size=5), st.data())
def test_comma_form_round_trips(items: list[tuple[str, str, str]], spaces: st.DataObject) -> None:
    parsed = parse_networks(comma_form(items, spaces), pod_namespace="pods")
    assert [(s.namespace, s.name, s.interface) for s in parsed] == [
        (namespace or "pods", name, ifname) for namespace, name, ifname in items
    ]


def raises_only_code_7(value: str) -> None:
    error: CniError | None = None
    try:
        parse_networks(value, pod_namespace="pods")
    except CniError as err:
        error = err
    if error is not None:
        assert error.code == ErrorCode.INVALID_NETWORK_CONFIG
        assert error.msg.startswith(NETWORKS)


@given(st.text(max_size=40))
def test_arbitrary_text_only_ever_raises_code_7(value: str) -> None:
    raises_only_code_7(value)


@given(st.lists(ELEMENTS | JSON_VALUES, max_size=3).map(json.dumps) | JSON_VALUES.map(json.dumps))
def test_arbitrary_json_only_ever_raises_code_7(value: str) -> None:
    raises_only_code_7(value)


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E400"])
def test_a_number_no_float64_holds_is_a_json_error_as_in_go(number: str) -> None:
    # Go: "json: cannot unmarshal number 1e999 into ... of type float64". Kept as infinity, it made
    # every delegate configuration it reached unencodable.
    error = error_of(f'[{{"name": "a", "cni-args": {{"mtu": {number}}}}}]')

    assert error.msg.startswith(NETWORKS + JSON_FORMAT)
    assert number in error.msg
