"""The runtime's CNI STATUS: success when an ADD can be served; code 50 (plugin not available) when
the daemon cannot serve one; the cluster network's own STATUS answer otherwise (CNI 1.1)."""

from __future__ import annotations

import pytest

from app.attach.requests import NodeRequest
from app.cni.types import CniError, ErrorCode
from tests.core.support import Command, Node


def _status_network(node: Node, name: str, **behaviour: object) -> str:
    node.write_network(
        name,
        {
            "cniVersion": "1.1.0",
            "name": name,
            "plugins": [{"type": "recorder", "recorder": {"log": str(node.recorder_log), **behaviour}}],
        },
    )
    return name


async def test_status_succeeds_when_the_cluster_networks_plugins_answer_status(node: Node) -> None:
    engine = node.engine()

    await engine.status(NodeRequest(command=Command.STATUS, conf=node.conf(_status_network(node, "cluster"))))

    assert [entry["stdin"]["name"] for entry in node.recorder_entries("STATUS")] == ["cluster"]


async def test_status_is_plugin_not_available_when_the_cluster_network_is_missing(node: Node) -> None:
    """No ADD can be served without the cluster network: STATUS says so with code 50 (it was 7,
    which the spec does not give STATUS), naming the network."""
    engine = node.engine()

    with pytest.raises(CniError) as failed:
        await engine.status(NodeRequest(command=Command.STATUS, conf=node.conf("no-such-network")))

    assert failed.value.code == ErrorCode.PLUGIN_NOT_AVAILABLE
    assert "no-such-network" in failed.value.msg


async def test_status_is_plugin_not_available_when_the_cluster_networks_plugin_is_missing(
    node: Node,
) -> None:
    node.write_network("cluster", {"cniVersion": "1.1.0", "name": "cluster", "type": "no-such-plugin"})
    engine = node.engine()

    with pytest.raises(CniError) as failed:
        await engine.status(NodeRequest(command=Command.STATUS, conf=node.conf("cluster")))

    assert failed.value.code == ErrorCode.PLUGIN_NOT_AVAILABLE
    assert "no-such-plugin" in failed.value.msg


@pytest.mark.parametrize("version", ["0.3.1", "1.0.0"])
async def test_status_is_plugin_not_available_when_the_plugin_of_a_cluster_network_before_1_1_0_is_missing(
    node: Node, version: str
) -> None:
    """A cluster network older than STATUS (most are: 0.3.1, 1.0.0) is not asked for its STATUS, but
    every ADD fails while its plugin is missing. STATUS answered success all the same."""
    node.write_network("cluster", {"cniVersion": version, "name": "cluster", "type": "no-such-plugin"})
    engine = node.engine()

    with pytest.raises(CniError) as failed:
        await engine.status(NodeRequest(command=Command.STATUS, conf=node.conf("cluster")))

    assert failed.value.code == ErrorCode.PLUGIN_NOT_AVAILABLE
    assert "no-such-plugin" in failed.value.msg


async def test_status_succeeds_without_asking_a_cluster_network_before_1_1_0(node: Node) -> None:
    engine = node.engine()

    await engine.status(NodeRequest(command=Command.STATUS, conf=node.conf(node.recorder_network("cluster"))))

    assert node.recorder_entries("STATUS") == []


async def test_status_passes_on_the_cluster_networks_own_answer_and_code(node: Node) -> None:
    cluster = _status_network(
        node, "cluster", fail={"code": 51, "msg": "overlay down", "details": "no peers"}, failOn="STATUS"
    )
    engine = node.engine()

    with pytest.raises(CniError) as failed:
        await engine.status(NodeRequest(command=Command.STATUS, conf=node.conf(cluster)))

    assert failed.value.code == ErrorCode.LIMITED_CONNECTIVITY
    assert "overlay down" in failed.value.msg
    assert failed.value.details == "no peers"


async def test_status_of_a_plugin_failing_with_a_code_of_its_own_keeps_that_code(node: Node) -> None:
    cluster = _status_network(node, "cluster", fail={"code": 7, "msg": "bad bridge"}, failOn="STATUS")
    engine = node.engine()

    with pytest.raises(CniError) as failed:
        await engine.status(NodeRequest(command=Command.STATUS, conf=node.conf(cluster)))

    assert failed.value.code == ErrorCode.INVALID_NETWORK_CONFIG
