"""Selection annotations a namespace user may write to hurt the node: names that are no Kubernetes
object's, interface names no netns can take, and more networks than any pod needs. Each is a CNI
error (code 7) naming the element, and costs a scan of the value, not a decoding of every element."""

from __future__ import annotations

import json

import pytest

from app.attach import netconf
from app.attach.selection import DEFAULT_MAX_NETWORKS, parse_default_network, parse_networks
from app.cni.types import CniError, ErrorCode

NETWORKS = "annotation k8s.v1.cni.cncf.io/networks: "


def error_of(value: str, *, max_networks: int = DEFAULT_MAX_NETWORKS) -> CniError:
    with pytest.raises(CniError) as caught:
        parse_networks(value, pod_namespace="pods", max_networks=max_networks)
    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    return caught.value


@pytest.mark.parametrize(
    "element",
    [
        {"name": "../../other/network-attachment-definitions/net"},
        {"name": "Net"},
        {"name": " net"},
        {"name": "net?x=1"},
        {"name": "net/x"},
        {"name": "n" * 254},
        {"name": "net", "namespace": "Other"},
        {"name": "net", "namespace": "other "},
        {"name": "net", "namespace": "a.b"},
        {"name": "net", "namespace": "n" * 64},
        {"name": "net", "namespace": "default/../other"},
    ],
)
def test_a_json_name_or_namespace_no_kubernetes_object_can_have_is_refused_naming_the_element(
    element: dict[str, str],
) -> None:
    error = error_of(json.dumps([{"name": "fine"}, element]))

    assert " is not a " in error.msg
    assert error.details.startswith("element 1, network ")


def test_names_kubernetes_allows_are_taken_as_before() -> None:
    [selection] = parse_networks(
        json.dumps([{"name": "sriov.net-1", "namespace": "team-a"}]), pod_namespace="pods"
    )

    assert selection.qualified_name == "team-a/sriov.net-1"


def test_a_comma_form_name_longer_than_any_object_name_is_refused() -> None:
    error = error_of("n" * 300)

    assert "is not a network-attachment-definition name" in error.msg
    assert len(error.msg) < 400, "the message quotes a bounded part of the name"


@pytest.mark.parametrize("interface", ["lo", "a\u0000b", ".", "..", "a:b", "eth%d", "\u00e0b", "a\u0085b"])
def test_an_interface_name_no_netns_can_take_is_refused_naming_the_element(interface: str) -> None:
    error = error_of(json.dumps([{"name": "net", "interface": interface}]))

    assert error.msg.startswith(NETWORKS + "interface name ")
    assert error.details == "element 0, network pods/net"


def test_the_comma_form_refuses_lo_too() -> None:
    assert 'interface name "lo"' in error_of("net@lo").msg


@pytest.mark.parametrize(
    "value",
    [",".join(["net"] * 131_072), json.dumps([{"name": "net"}] * 20_000)],
    ids=["comma", "json"],
)
def test_more_networks_than_the_bound_are_refused_by_their_count(value: str) -> None:
    error = error_of(value)

    count = value.count(",") + 1 if value[0] != "[" else 20_000
    assert error.msg == (
        NETWORKS + f"the annotation selects {count} networks; a pod may select at most {DEFAULT_MAX_NETWORKS}"
    )


def test_the_bound_itself_is_allowed() -> None:
    assert len(parse_networks(",".join(["net"] * 4), pod_namespace="pods", max_networks=4)) == 4
    assert "selects 5 networks" in error_of(",".join(["net"] * 5), max_networks=4).msg


def test_a_default_network_annotation_naming_many_is_refused_quoting_a_bounded_part_of_it() -> None:
    """Upstream's message quotes the whole value (up to the API server's 256 KiB); it was quoted
    whole here too, after every element had been validated."""
    value = ",".join(["net"] * 65_536)
    with pytest.raises(CniError) as caught:
        parse_default_network(value, multus_namespace="kube-system")

    assert caught.value.msg.startswith(
        "annotation v1.multus-cni.io/default-network: "
        "tryLoadK8sPodDefaultNetwork: more than one default network is specified: net,net,"
    )
    assert len(caught.value.msg) < 300


@pytest.mark.parametrize("value", [0, -1, 2.5, "10", True])
def test_max_networks_per_pod_must_be_a_positive_integer(value: object) -> None:
    with pytest.raises(CniError) as caught:
        netconf.parse({"maxNetworksPerPod": value}, stdin_cni_version="1.0.0")

    assert (
        caught.value.msg == "invalid multus configuration: key 'maxNetworksPerPod' must be a positive integer"
    )


def test_max_networks_per_pod_is_read_from_the_configuration() -> None:
    assert netconf.parse({}, stdin_cni_version="1.0.0").max_networks_per_pod == DEFAULT_MAX_NETWORKS
    assert netconf.parse({"maxNetworksPerPod": 1000}, stdin_cni_version="1.0.0").max_networks_per_pod == 1000


@pytest.mark.parametrize(
    "element",
    [
        {"name": "net", "mac": "x" * 200_000},
        {"name": "net", "infiniband-guid": "x" * 200_000},
        {"name": "net", "ips": ["x" * 200_000]},
        {"name": "net", "ips": ["x" * 200_000 + "/24"]},
        {"name": "net", "default-route": ["x" * 200_000]},
    ],
    ids=["mac", "infiniband-guid", "ip", "cidr", "default-route"],
)
def test_a_refused_address_is_quoted_in_a_bounded_part(element: dict[str, object]) -> None:
    """The message went whole into the CNI error, the log and the history line (200 KiB each)."""
    error = error_of(json.dumps([element]))

    assert error.msg.startswith(NETWORKS)
    assert len(error.msg) < 600


@pytest.mark.parametrize(
    "value",
    [
        '[{"name": "net", "mac": "\\ud800"}]',
        '[{"name": "net", "ips": ["\\ud800"]}]',
        '[{"name": "net", "ips": ["\\ud800/24"]}]',
        '[{"name": "net", "default-route": ["\\ud800"]}]',
    ],
    ids=["mac", "ip", "cidr", "default-route"],
)
def test_a_refused_address_holding_a_lone_surrogate_is_quoted_escaped(value: str) -> None:
    error = error_of(value)

    error.msg.encode("utf-8")  # a lone surrogate would make this raise
    assert "\\ud800" in error.msg
