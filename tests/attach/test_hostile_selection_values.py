"""Selection annotations a namespace user may write to hurt the node: names that are no Kubernetes
object's, interface names no netns can take. Each is a CNI error (code 7) naming the element."""

from __future__ import annotations

import json

import pytest

from app.attach.selection import parse_networks
from app.cni.types import CniError, ErrorCode

NETWORKS = "annotation k8s.v1.cni.cncf.io/networks: "


def error_of(value: str) -> CniError:
    with pytest.raises(CniError) as caught:
        parse_networks(value, pod_namespace="pods")
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
