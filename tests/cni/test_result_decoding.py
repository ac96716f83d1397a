"""Decoding plugin output: valid results pass unchanged, anything else is a CniError naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.attach.network_status import DelegateOutcome, status_entries
from app.cni import results
from app.cni.types import CniError, ErrorCode
from tests.cni.support import json_values, outcome_of

BRIDGE_1_0 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "br0", "mac": "0a:58:0a:01:00:01"},
        {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/x"},
    ],
    "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
    "dns": {"nameservers": ["10.1.0.10"]},
}


def decode(document: Any, version: str = "1.0.0") -> dict[str, Any]:
    return results.decode_result(json.dumps(document).encode(), version=version, plugin="bridge")


def decode_error(document: Any, version: str = "1.0.0") -> CniError:
    with pytest.raises(CniError) as caught:
        decode(document, version)
    return caught.value


def test_a_valid_result_is_returned_as_printed() -> None:
    assert decode(BRIDGE_1_0) == BRIDGE_1_0


def test_a_result_without_cni_version_takes_the_configs() -> None:
    assert decode({"ips": [{"address": "10.1.0.5/24", "version": "4"}]}, "0.4.0")["cniVersion"] == "0.4.0"


@pytest.mark.parametrize("declared", [1, 1.5, True, False, [], ["0.4.0"], {}, {"version": "0.4.0"}])
def test_a_cni_version_that_is_not_a_string_is_replaced_by_the_configs_like_go(declared: object) -> None:
    # libcni's fixupResultVersion keeps a result's cniVersion only if it is a non-empty string and
    # puts the configuration's in place of anything else: the ADD goes on (it was refused, code 6).
    printed = {**BRIDGE_1_0, "cniVersion": declared}

    assert decode(printed, "1.0.0") == BRIDGE_1_0
    assert decode(printed, "0.4.0") == {**BRIDGE_1_0, "cniVersion": "0.4.0"}


def test_a_plugin_printing_null_has_an_empty_result_like_go() -> None:
    assert results.decode_result(b"null", version="1.0.0", plugin="bridge") == {"cniVersion": "1.0.0"}


@pytest.mark.parametrize(
    ("version", "nulls"),
    [
        ("1.0.0", {"interfaces": None, "ips": None, "routes": None, "dns": None}),
        ("0.4.0", {"interfaces": None, "ips": None, "routes": None, "dns": None}),
        ("0.2.0", {"ip4": None, "ip6": None, "dns": None}),
    ],
)
def test_null_top_level_fields_are_absent_like_go_reads_them(version: str, nulls: dict[str, Any]) -> None:
    # Every reader of a result may take "ips" for a list: a null one once failed an ADD with 999.
    expected = {"cniVersion": version}
    assert decode({"cniVersion": version, **nulls}) == expected
    assert results.convert({"cniVersion": version, **nulls}, version) == expected


def test_a_result_keeps_its_own_version() -> None:
    assert decode({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/24"}})["cniVersion"] == "0.2.0"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"ips": [{"address": "10.1.0.5"}]}, 'ips[0].address: "10.1.0.5" is not a CIDR (address/prefix)'),
        (
            {"ips": [{"address": "10.1.0.5/33"}]},
            'ips[0].address: "10.1.0.5/33" is not a CIDR (address/prefix)',
        ),
        ({"ips": [{"address": "fe80::1%eth0/64"}]}, 'ips[0].address: "fe80::1%eth0/64" is not a CIDR'),
        ({"ips": [{"gateway": "10.1.0.1"}]}, "ips[0].address: missing"),
        (
            {"ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0"}]},
            'ips[0].gateway: "10.1.0" is not an IP address',
        ),
        (
            {"ips": [{"address": "10.1.0.5/24", "interface": True}]},
            "ips[0].interface: must be an integer, got a boolean",
        ),
        (
            {"ips": [{"address": "fd00::5/64", "interface": 0.5}]},
            "ips[0].interface: must be an integer, got a number",
        ),
        ({"ips": {"address": "10.1.0.5/24"}}, "ips: must be a list, got an object"),
        ({"interfaces": ["eth0"]}, "interfaces[0]: must be an object, got a string"),
        ({"interfaces": [{"name": 5}]}, "interfaces[0].name: must be a string, got a number"),
        (
            {"interfaces": [{"name": "eth0", "mtu": "1500"}]},
            "interfaces[0].mtu: must be an integer, got a string",
        ),
        ({"routes": [{"gw": "10.1.0.1"}]}, "routes[0].dst: missing"),
        ({"routes": [{"dst": "default"}]}, 'routes[0].dst: "default" is not a CIDR (address/prefix)'),
        (
            {"routes": [{"dst": "0.0.0.0/0", "priority": 1.5}]},
            "routes[0].priority: must be an integer, got a number",
        ),
        ({"dns": {"nameservers": "10.1.0.10"}}, "dns.nameservers: must be a list, got a string"),
        ({"dns": {"search": [1]}}, "dns.search[0]: must be a string, got a number"),
    ],
)
def test_a_result_of_the_wrong_shape_names_the_field_and_the_plugin(
    document: dict[str, Any], message: str
) -> None:
    error = decode_error(document)

    assert error.code == ErrorCode.DECODING_FAILURE
    assert error.msg.startswith('plugin "bridge" printed an invalid result: ')
    assert message in error.msg


@pytest.mark.parametrize(
    "document",
    [
        {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24", "gateway": ""}]},
        {"cniVersion": "0.4.0", "ips": [{"address": "fd00::5/64", "gateway": "", "version": "6"}]},
        {
            "cniVersion": "1.1.0",
            "ips": [{"address": "10.1.0.5/24"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": ""}],
        },
        {
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.1.0.5/24", "gateway": "", "routes": [{"dst": "0.0.0.0/0", "gw": ""}]},
        },
    ],
)
def test_an_empty_gateway_is_read_as_none_like_go(document: dict[str, Any]) -> None:
    # Go decodes an empty net.IP text to nil (no gateway): upstream takes such a result, and so
    # must we, in every version it can be converted to.
    assert decode(document) == document
    for version in results.SUPPORTED_VERSIONS:
        assert results.convert(document, version)["cniVersion"] == version


TWO_SANDBOX_INTERFACES = [
    {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/x"},
    {"name": "net1", "mac": "0a:58:0a:01:00:06", "sandbox": "/var/run/netns/x"},
]


def with_ips(version: str, interfaces: list[dict[str, Any]], *indexes: int) -> dict[str, Any]:
    """A result whose addresses (IPv4 first, then IPv6) name the interfaces ``indexes``."""
    addresses = ["10.1.0.5/24", "fd00::5/64", "10.2.0.5/24", "fd00::6/64"]
    ips: list[dict[str, Any]] = []
    for address, index in zip(addresses, indexes, strict=False):
        ip: dict[str, Any] = {"address": address, "gateway": address.split("/")[0], "interface": index}
        if not results.version_at_least(version, "1.0.0"):
            ip["version"] = "6" if ":" in address else "4"
        ips.append(ip)
    return {"cniVersion": version, "interfaces": interfaces, "ips": ips}


@pytest.mark.parametrize("version", ["0.3.0", "0.4.0", "1.0.0", "1.1.0"])
@pytest.mark.parametrize(
    ("interfaces", "indexes"),
    [
        ([], (0, 0)),
        (TWO_SANDBOX_INTERFACES[:1], (1, 7)),
        (TWO_SANDBOX_INTERFACES, (-1, 2, -5, 1)),
        (TWO_SANDBOX_INTERFACES, (-(2**40), 2**40)),
    ],
)
def test_an_ips_interface_index_out_of_range_or_negative_is_taken_like_go(
    version: str, interfaces: list[dict[str, Any]], indexes: tuple[int, ...]
) -> None:
    # Go decodes ips[].interface as an *int and never checks it against the interfaces; upstream
    # Multus takes such a result (its network-status leaves the address out of every entry): the
    # ADD must not fail here after the plugin ran. Both validation paths: IPv4 and IPv6 addresses.
    document = with_ips(version, interfaces, *indexes)

    assert decode(document, version) == document
    for target in results.SUPPORTED_VERSIONS:
        converted = results.convert(document, target)
        assert results.convert(converted, target) == converted


def test_an_address_of_an_interface_out_of_range_is_in_no_network_status_entry() -> None:
    # What upstream's CreateNetworkStatuses does with it: the index maps to no entry, so the address
    # is dropped; the others keep theirs. Nothing later trips over the index.
    result = decode(with_ips("1.0.0", TWO_SANDBOX_INTERFACES, 5, 1, -1), "1.0.0")
    entries = status_entries([DelegateOutcome(network_name="ns/net", result=result, is_master=True)])

    assert [(entry["interface"], entry.get("ips")) for entry in entries] == [
        ("eth0", None),
        ("net1", ["fd00::5"]),
    ]


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_a_negative_interface_mtu_is_taken_like_go(version: str) -> None:
    # Go's Interface.Mtu is a plain int: any integer decodes, a negative one too.
    document = {"cniVersion": version, "interfaces": [{"name": "eth0", "sandbox": "/x", "mtu": -1}]}

    assert decode(document, version) == document


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
@pytest.mark.parametrize(
    "fields",
    [
        {"mtu": "1500"},
        {"mtu": -1.5},
        {"mtu": 1400},
        {"socketPath": 5},
        {"pciID": ["0000:00:1f.0"]},
        {"mtu": {"x": 1}, "socketPath": True, "pciID": {}},
    ],
)
def test_interface_fields_0_x_does_not_have_are_ignored_like_go(version: str, fields: dict[str, Any]) -> None:
    # Go's 0.3.x/0.4.0 Interface declares only name, mac and sandbox: anything else is skipped
    # unread, whatever its type, and is not carried into 1.x (Go's 0.4 → 1.x conversion copies
    # the three fields). Carried over as they are, they would make the 1.x form invalid.
    interface = {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/x", **fields}
    document = {
        "cniVersion": version,
        "interfaces": [interface],
        "ips": [{"version": "4", "address": "10.1.0.5/24", "interface": 0}],
    }

    assert decode(document, version) == document
    for target in results.SUPPORTED_VERSIONS:
        converted = results.convert(document, target)
        for item in converted.get("interfaces", []):
            assert item.keys().isdisjoint(fields), target
    [entry] = status_entries([DelegateOutcome(network_name="ns/net", result=document, is_master=False)])
    assert "mtu" not in entry


@pytest.mark.parametrize(
    ("version", "document", "field"),
    [
        ("1.0.0", {"ips": [{"address": "10.1.0.5/24", "interface": 2**63}]}, "ips[0].interface"),
        ("1.0.0", {"ips": [{"address": "fd00::5/64", "interface": -(2**63) - 1}]}, "ips[0].interface"),
        (
            "0.4.0",
            {"ips": [{"address": "10.1.0.5/24", "version": "4", "interface": 2**64}]},
            "ips[0].interface",
        ),
        ("1.1.0", {"interfaces": [{"name": "eth0", "mtu": 2**63}]}, "interfaces[0].mtu"),
        ("1.1.0", {"routes": [{"dst": "0.0.0.0/0", "priority": 10**30}]}, "routes[0].priority"),
        ("1.1.0", {"routes": [{"dst": "0.0.0.0/0", "table": -(2**70)}]}, "routes[0].table"),
        (
            "0.2.0",
            {"ip4": {"ip": "10.1.0.5/24", "routes": [{"dst": "0.0.0.0/0", "mtu": 2**63}]}},
            "ip4.routes[0].mtu",
        ),
    ],
)
def test_an_integer_beyond_gos_int_is_refused_naming_the_field(
    version: str, document: dict[str, Any], field: str
) -> None:
    # Go's types decode these fields as int: a larger number fails its json.Unmarshal. Taken here,
    # the ADD would answer a result the runtime refuses after the plugin ran; refused here, the ADD
    # fails with code 6 and is rolled back.
    error = decode_error({"cniVersion": version, **document}, version)

    assert error.code == ErrorCode.DECODING_FAILURE
    assert f"{field}: " in error.msg
    assert "does not fit Go's int" in error.msg


@pytest.mark.parametrize("number", [2**63 - 1, -(2**63)])
def test_an_integer_at_the_bounds_of_gos_int_is_taken(number: int) -> None:
    document = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "sandbox": "/x", "mtu": number}],
        "ips": [{"address": "10.1.0.5/24", "interface": number}],
        "routes": [{"dst": "0.0.0.0/0", "scope": number}],
    }

    assert decode(document, "1.1.0") == document


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_a_0_x_ip_version_other_than_4_or_6_is_taken_like_go_and_the_address_gives_the_family(
    version: str,
) -> None:
    # Go's 0.4.0 IPConfig.Version is a string nothing checks: upstream takes such a result, so an
    # ADD must not fail on it after the plugin ran. Where the family matters, the address says it.
    document = {
        "cniVersion": version,
        "ips": [
            {"address": "10.1.0.5/24", "version": "v4"},
            {"address": "fd00::5/64", "version": "4"},
            {"address": "10.2.0.5/24", "version": ""},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
    }

    assert decode(document, version) == document
    assert results.convert(document, "0.2.0")["ip4"]["ip"] == "10.1.0.5/24"
    assert results.convert(document, "0.2.0")["ip6"]["ip"] == "fd00::5/64"
    assert [ip.get("version") for ip in results.convert(document, "1.0.0")["ips"]] == [None, None, None]
    assert [ip["version"] for ip in results.convert(results.convert(document, "1.0.0"), version)["ips"]] == [
        "4",
        "6",
        "4",
    ]


@pytest.mark.parametrize("value", [4, ["4"], True])
def test_a_0_x_ip_version_that_is_not_a_string_is_refused_as_go_refuses_it(value: object) -> None:
    error = decode_error({"cniVersion": "0.4.0", "ips": [{"address": "10.1.0.5/24", "version": value}]})

    assert error.msg.startswith('plugin "bridge" printed an invalid result: ips[0].version: must be a string')


@pytest.mark.parametrize(
    ("version", "stdout", "expected"),
    [
        pytest.param(
            "1.1.0",
            b'{"cniVersion": "1.1.0", "ips": [{"address": "10.1.0.5/24"}], "weight": 1e999}',
            {"cniVersion": "1.1.0", "ips": [{"address": "10.1.0.5/24"}]},
            id="top-level",
        ),
        pytest.param(
            "1.0.0",
            b'{"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "x": {"y": [1, -1e400, 2]}}],'
            b' "routes": [{"dst": "0.0.0.0/0", "cost": 2e308}], "dns": {"ttl": 1e999}}',
            {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "x": {"y": [1, 2]}}],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dns": {},
            },
            id="nested",
        ),
        pytest.param(
            "0.4.0",
            b'{"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "mtu": 1e999}],'
            b' "ips": [{"version": "4", "address": "10.1.0.5/24", "weight": 1e999}]}',
            {
                "cniVersion": "0.4.0",
                "interfaces": [{"name": "eth0"}],
                "ips": [{"version": "4", "address": "10.1.0.5/24"}],
            },
            id="0.4.0-interface-mtu-is-unknown-to-go",
        ),
        pytest.param(
            "0.2.0",
            b'{"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/24", "weight": 1e999}}',
            {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/24"}},
            id="legacy",
        ),
    ],
)
def test_a_number_no_float64_holds_in_a_field_go_does_not_declare_is_skipped_like_go(
    version: str, stdout: bytes, expected: dict[str, Any]
) -> None:
    # Go decodes a result into its types and skips unknown fields unread, whatever number they
    # hold: upstream takes such a result. Kept as an infinity it could never be written again as
    # JSON (the checkpoint, the answer), so it is left out.
    decoded = results.decode_result(stdout, version=version, plugin="bridge")

    assert decoded == expected
    json.dumps(decoded, allow_nan=False)
    assert results.decode_result(stdout, version=version, plugin="bridge", to_version="1.1.0")[
        "cniVersion"
    ] == ("1.1.0")


@pytest.mark.parametrize(
    ("stdout", "field"),
    [
        (b'{"interfaces": [{"name": "eth0", "mtu": 1e999}]}', "interfaces[0].mtu"),
        (b'{"ips": [{"address": "10.1.0.5/24", "interface": -1e999}]}', "ips[0].interface"),
        (b'{"routes": [{"dst": "0.0.0.0/0", "priority": 1e999}]}', "routes[0].priority"),
        (b'{"dns": {"nameservers": [1e999]}}', "dns.nameservers[0]"),
        (b'{"cniVersion": 1e999}', "cniVersion"),
    ],
)
def test_a_number_no_float64_holds_in_a_field_go_declares_is_refused_naming_it(
    stdout: bytes, field: str
) -> None:
    with pytest.raises(CniError) as caught:
        results.decode_result(stdout, version="1.1.0", plugin="bridge")

    assert caught.value.code == ErrorCode.DECODING_FAILURE
    assert f"{field}: must be " in caught.value.msg


def test_version_info_skips_a_number_no_float64_holds_where_go_reads_nothing() -> None:
    stdout = b'{"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"], "build": 1e999}'

    assert results.decode_version_info(stdout, plugin="p") == {
        "cniVersion": "1.1.0",
        "supportedVersions": ["1.0.0", "1.1.0"],
    }
    with pytest.raises(CniError):
        results.decode_version_info(
            b'{"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", 1e999]}', plugin="p"
        )


def test_legacy_results_are_checked_in_their_own_shape() -> None:
    error = decode_error({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/24", "routes": [{"dst": "x"}]}})

    assert (
        error.msg
        == 'plugin "bridge" printed an invalid result: ip4.routes[0].dst: "x" is not a CIDR (address/prefix)'
    )


def test_an_unsupported_result_version_is_incompatible() -> None:
    error = decode_error({"cniVersion": "0.5.0"})

    assert error.code == ErrorCode.INCOMPATIBLE_VERSION
    assert error.msg.startswith('plugin "bridge" printed a result with unsupported CNI version "0.5.0"')


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        (b"", 'plugin "bridge" printed output that is not valid JSON'),
        (b"{", 'plugin "bridge" printed output that is not valid JSON'),
        (b'{"ips": NaN}', 'plugin "bridge" printed output that is not valid JSON'),
        (b"\xff\xfe\x00", 'plugin "bridge" printed output that is not valid JSON'),
        (b"[1]", 'plugin "bridge" printed a result that is not a JSON object but a list'),
    ],
)
def test_output_that_is_not_a_json_object_is_a_decoding_failure(stdout: bytes, message: str) -> None:
    with pytest.raises(CniError) as caught:
        results.decode_result(stdout, version="1.0.0", plugin="bridge")

    assert caught.value.code == ErrorCode.DECODING_FAILURE
    assert caught.value.msg.startswith(message)


def test_deeply_nested_output_is_a_decoding_failure_not_a_crash() -> None:
    with pytest.raises(CniError) as caught:
        results.decode_result(b"[" * 100_000, version="1.0.0", plugin="bridge")

    assert caught.value.code == ErrorCode.DECODING_FAILURE


def test_version_info_of_a_0_1_0_plugin_supports_0_1_0() -> None:
    info = results.decode_version_info(b'{"cniVersion": "0.1.0"}', plugin="old")

    assert info["supportedVersions"] == ["0.1.0"]


@pytest.mark.parametrize(
    "stdout", [b'{"cniVersion": "0.2.0"}', b'{"cniVersion": "0.2.0", "supportedVersions": []}']
)
def test_version_info_of_a_0_2_0_plugin_without_its_list_supports_0_1_0_and_0_2_0(stdout: bytes) -> None:
    # Go's version.PluginDecoder: a 0.2.0 answer without supportedVersions is a plugin of 0.1.0 and 0.2.0.
    info = results.decode_version_info(stdout, plugin="old")

    assert info["supportedVersions"] == ["0.1.0", "0.2.0"]


@pytest.mark.parametrize(
    "stdout", [b"{}", b'{"cniVersion": "1.0.0"}', b'{"cniVersion": "1.0.0", "supportedVersions": [1]}']
)
def test_version_info_without_its_fields_is_a_decoding_failure(stdout: bytes) -> None:
    with pytest.raises(CniError) as caught:
        results.decode_version_info(stdout, plugin="p")

    assert caught.value.code == ErrorCode.DECODING_FAILURE


# --- properties -------------------------------------------------------------------------------------

any_json = json_values(max_leaves=25)
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
        "gw",
        "interface",
        "mtu",
    ]
)


def near_results() -> st.SearchStrategy[Any]:
    """Objects shaped like results, with arbitrary values in the places a result has fields."""
    ip = st.dictionaries(result_keys | st.sampled_from(["gateway", "version"]), any_json, max_size=4)
    return st.fixed_dictionaries(
        {},
        optional={
            "cniVersion": st.sampled_from([*results.SUPPORTED_VERSIONS, "", "9.9.9"]) | any_json,
            "interfaces": st.lists(st.dictionaries(result_keys, any_json, max_size=3), max_size=3) | any_json,
            "ips": st.lists(ip, max_size=3) | any_json,
            "routes": st.lists(st.dictionaries(result_keys, any_json, max_size=3), max_size=3) | any_json,
            "ip4": ip | any_json,
            "dns": st.dictionaries(st.sampled_from(["nameservers", "search", "domain"]), any_json) | any_json,
        },
    )


@given(stdout=st.binary(max_size=200), version=st.sampled_from(results.SUPPORTED_VERSIONS))
def test_decoding_arbitrary_bytes_raises_nothing_but_cni_errors(stdout: bytes, version: str) -> None:
    outcome_of(results.decode_result, stdout, version=version, plugin="p")


@given(document=any_json | near_results(), version=st.sampled_from(results.SUPPORTED_VERSIONS))
def test_decoding_arbitrary_json_raises_nothing_but_cni_errors_and_what_passes_converts(
    document: Any, version: str
) -> None:
    outcome = outcome_of(results.decode_result, json.dumps(document).encode(), version=version, plugin="p")

    if isinstance(outcome, CniError):
        assert outcome.code in (ErrorCode.DECODING_FAILURE, ErrorCode.INCOMPATIBLE_VERSION)
        return
    for target in results.SUPPORTED_VERSIONS:
        converted = outcome_of(results.convert, outcome, target)
        if isinstance(converted, CniError):
            assert converted.msg == "cannot convert: no valid IP addresses"
        else:
            assert results.convert(converted, target) == converted


_OCTET_TEXTS = st.one_of(
    st.integers(0, 999).map(str),
    st.integers(0, 255).map(lambda number: f"0{number}"),  # leading zeros: refused by both paths
    st.sampled_from(["", "a", "٣", "1 ", "+1", "-0"]),
)
_DOTTED = st.lists(_OCTET_TEXTS, min_size=3, max_size=5).map(".".join)
_PREFIX_TEXTS = st.one_of(st.integers(0, 99).map(str), st.sampled_from(["00", "032", "", "x", "٣"]))


@given(text=_DOTTED)
def test_the_ipv4_shortcut_accepts_only_what_the_general_parser_accepts(text: str) -> None:
    """The validator skips ``ipaddress`` for a plain IPv4 text: it must never accept one the general
    parser refuses (its refusals and every other text go the general way, with their messages)."""
    if results._IPV4.fullmatch(text):
        assert results.parse_ip(text) is not None
    if results.parse_ip(text) is not None and "." in text and ":" not in text:
        assert results._IPV4.fullmatch(text), f"{text!r} takes the slow path"


@given(address=_DOTTED, prefix=_PREFIX_TEXTS)
def test_the_ipv4_cidr_shortcut_accepts_only_what_the_general_parser_accepts(
    address: str, prefix: str
) -> None:
    text = f"{address}/{prefix}"
    if results._IPV4_CIDR.fullmatch(text):
        assert results.parse_cidr(text) is not None
    outcome = outcome_of(decode, {"ips": [{"address": text}]})
    assert isinstance(outcome, dict) == (results.parse_cidr(text) is not None)


_IPS_ENTRIES = st.fixed_dictionaries(
    {},
    optional={
        "address": st.sampled_from(
            ["10.1.0.5/24", "10.1.0.5/24", "10.1.0.5", "fe80::1/64", "010.1.0.5/24", None, 5]
        ),
        "gateway": st.sampled_from(["10.1.0.1", "10.1.0.1", "fe80::1", "10.1.0", None, 7]),
        "interface": st.one_of(
            st.integers(-1, 3), st.sampled_from([2**63, -(2**63) - 1]), st.booleans(), st.none(), st.just("0")
        ),
        "version": st.sampled_from(["4", "6", "v4", None, 4]),
    },
)


@settings(max_examples=500)
@given(ip=_IPS_ENTRIES, with_version=st.booleans())
def test_an_ips_entry_accepted_at_a_glance_is_one_the_full_check_accepts(
    ip: dict[str, Any], with_version: bool
) -> None:
    if results._plain_ip(ip, with_version=with_version):
        results._validate_ip(ip, "ips[0]", with_version=with_version)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"cniVersion": "1.0.0", "ips": [{"address": "x" * 1_000_000}]}, "ips[0].address"),
        ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "gateway": "y" * 1_000_000}]}, "gateway"),
        ({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "mtu": "1" * 5000 + "e999"}]}, "mtu"),
        ({"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "priority": "9" * 4000}]}, "priority"),
    ],
)
def test_an_error_quotes_a_bounded_part_of_a_huge_refused_value(document: dict[str, Any], field: str) -> None:
    """The message goes to the history and to the runtime: a plugin's MiBs must not go with it."""
    text = json.dumps(document)
    for number in ("1" * 5000 + "e999", "9" * 4000):  # written as JSON numbers, not strings
        text = text.replace(f'"{number}"', number)
    stdout = text.encode()

    with pytest.raises(CniError) as refused:
        results.decode_result(stdout, version="1.0.0", plugin="p")

    assert refused.value.code == ErrorCode.DECODING_FAILURE
    assert field in refused.value.msg
    assert len(refused.value.msg) < 300
