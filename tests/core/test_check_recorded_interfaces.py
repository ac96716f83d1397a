"""CHECK compares the sandbox's interfaces with the ADD result the checkpoint recorded."""

from __future__ import annotations

import asyncio

import pytest

from app.attach.errors import MultusCode
from app.cni.types import CniError
from tests.core.support import Command, Node, new_container_id


async def _ip(netns: str, *arguments: str) -> None:
    ip = await asyncio.create_subprocess_exec("ip", "-n", netns, *arguments)
    assert await ip.wait() == 0


async def test_check_fails_when_an_interface_no_longer_has_the_recorded_mac(node: Node) -> None:
    conf = node.conf(node.recorder_network("cluster"))  # its result: if-cluster, 0a:58:0a:0a:00:01
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    await _ip(netns.name, "link", "add", "if-cluster", "address", "0a:58:0a:0a:00:01", "type", "veth")
    await engine.check(node.request(Command.CHECK, container, netns, conf))  # as recorded: passes
    await _ip(netns.name, "link", "set", "if-cluster", "address", "0a:58:0a:0a:00:99")

    with pytest.raises(CniError) as failed:
        await engine.check(node.request(Command.CHECK, container, netns, conf))

    assert failed.value.code == MultusCode.INTERFACE_MISSING
    assert "0a:58:0a:0a:00:99" in failed.value.msg
    assert "0a:58:0a:0a:00:01" in failed.value.details


async def test_check_passes_for_an_interface_whose_result_gave_a_null_mac(node: Node) -> None:
    # Go reads "mac": null as no MAC. Taken for the text "None", it failed every CHECK of an
    # interface that is there as recorded.
    result = {"cniVersion": "1.0.0", "interfaces": [{"name": "if-nullmac", "mac": None, "sandbox": "x"}]}
    conf = node.conf(node.recorder_network("cluster", result=result))
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    await _ip(netns.name, "link", "add", "if-nullmac", "type", "veth")

    await engine.check(node.request(Command.CHECK, container, netns, conf))
