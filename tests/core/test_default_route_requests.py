"""``default-route`` in a pod's selections: the gateway the pod's default route goes through.

An ADD through the engine in one process, Kubernetes mode with the pod and NADs served from memory:
the reference ``bridge`` and ``host-local`` plugins run for real in a network namespace, and the
routes are read back with ``ip``. Upstream's rules: at most one gateway per address family across
every delegate (the ``v1.multus-cni.io/default-network`` annotation's too), and a gateway is the
address Go decodes, an IPv4-mapped IPv6 one being IPv4.
"""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest

from app.attach.cluster import DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.networks import ClusterSources, NetworkResolver
from app.cni.types import CniError, ErrorCode, JsonObject
from app.store.mirror_records import NadRecord
from tests.core.support import Command, Nads, Netns, Node, OnePod, new_container_id, pending


def _bridge_nad(node: Node, namespace: str, name: str, *, subnet: str, gateway: str) -> NadRecord:
    """A NAD of a fresh bridge with host-local addresses of ``subnet`` (no route of its own)."""
    bridge = f"mpycbr{secrets.token_hex(4)}"
    node.host_links.append(bridge)
    config: JsonObject = {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": bridge,
        "ipam": {"type": "host-local", "subnet": subnet, "gateway": gateway, "dataDir": str(node.ipam_dir)},
    }
    return NadRecord(namespace, name, f"uid-{name}", config=json.dumps(config))


def _engine(node: Node, annotations: dict[str, str], *nads: NadRecord) -> AttachEngine:
    cluster = ClusterSources(pods=OnePod(annotations), nads=Nads(*nads))
    return AttachEngine(
        db=node.db,
        resolver=NetworkResolver(cluster=cluster),
        boot_id=node.boot_id,
        settings=EngineSettings(delegate_timeout=20.0, node_name="node-a"),
    )


def _default_routes(netns: Netns) -> list[tuple[str, str]]:
    shown = subprocess.run(
        ["ip", "-n", netns.name, "-4", "-j", "route", "show", "default"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [(route["gateway"], route["dev"]) for route in json.loads(shown)]


async def test_an_ipv4_mapped_gateway_gives_an_ipv4_default_route_as_upstream(node: Node) -> None:
    # Go decodes "::ffff:10.72.0.1" to the IPv4 address 10.72.0.1 and installs an IPv4 route; taken
    # as written it became an IPv6 route the kernel refused ("No route to host"): the ADD failed.
    conf = node.conf(node.bridge_network("cluster", subnet="10.71.0.0/24"))
    nad = _bridge_nad(node, "default", "routed", subnet="10.72.0.0/24", gateway="10.72.0.1")
    selection = [{"name": "routed", "default-route": ["::ffff:10.72.0.1"]}]
    engine = _engine(node, {NETWORKS_ANNOTATION: json.dumps(selection)}, nad)
    container, netns = new_container_id(), node.new_netns()

    await engine.add(node.request(Command.ADD, container, netns, conf))

    assert _default_routes(netns) == [("10.72.0.1", "net1")]
    await engine.delete(node.request(Command.DEL, container, netns, conf))
    assert pending(node.checkpoint(container)) == []


@pytest.mark.parametrize(
    ("default_network_gateways", "networks_gateways"),
    [
        (["10.73.0.1"], ["10.72.0.1"]),
        (["10.73.0.1", "10.73.0.9"], None),
    ],
    ids=["one-in-each-annotation", "two-in-the-default-network-annotation"],
)
async def test_a_second_gateway_of_a_family_in_the_default_network_annotation_is_ecmp_and_refused(
    node: Node, default_network_gateways: list[str], networks_gateways: list[str] | None
) -> None:
    # Upstream counts every delegate's gateways, the default-network annotation's included; they
    # were counted within the networks annotation only, and the routes were set one after the
    # other: the last one silently replaced the one the pod had asked for first.
    conf = node.conf(node.bridge_network("cluster", subnet="10.71.0.0/24"))
    alternative = _bridge_nad(node, "kube-system", "alt", subnet="10.73.0.0/24", gateway="10.73.0.1")
    routed = _bridge_nad(node, "default", "routed", subnet="10.72.0.0/24", gateway="10.72.0.1")
    annotations = {
        DEFAULT_NETWORK_ANNOTATION: json.dumps([{"name": "alt", "default-route": default_network_gateways}])
    }
    if networks_gateways is not None:
        selection = [{"name": "routed", "default-route": networks_gateways}]
        annotations[NETWORKS_ANNOTATION] = json.dumps(selection)
    engine = _engine(node, annotations, alternative, routed)
    container, netns = new_container_id(), node.new_netns()

    with pytest.raises(CniError) as refused:
        await engine.add(node.request(Command.ADD, container, netns, conf))

    assert (refused.value.code, refused.value.msg) == (
        ErrorCode.INVALID_NETWORK_CONFIG,
        "multus does not support ECMP for default-route",
    )
    assert netns.links() == {"lo"}
    assert pending(node.checkpoint(container)) == []
