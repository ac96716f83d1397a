"""CHECK verifies what the runtime's ADD (and hot-plug) left attached: a hot-plugged delegate whose
ADD never produced a result, or whose hot-unplug DEL is pending, has no result to check against
(CHECK needs the ADD result as prevResult), and its pending DEL is GC's to retry."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.cni.types import CniError, IfName
from app.store.records import SandboxRecord
from tests.core.support import Command, Netns, Node, hot_recorder_plan, new_container_id

NO_INTERFACES = {"cniVersion": "1.0.0"}


def _state_of(record: SandboxRecord | None, ifname: str) -> str:
    assert record is not None
    attachment = record.attachment(ifname)
    assert attachment is not None
    return attachment.state


async def _running_sandbox(node: Node) -> tuple[str, Netns]:
    conf = node.conf(node.recorder_network("cluster", result=NO_INTERFACES))
    container, netns = new_container_id(), node.new_netns()
    await node.engine().add(node.request(Command.ADD, container, netns, conf))
    return container, netns


async def test_check_passes_beside_a_hot_plugged_delegate_whose_add_never_produced_a_result(
    node: Node,
) -> None:
    container, netns = await _running_sandbox(node)
    engine = node.engine()
    conf = node.conf("cluster")
    request = node.request(Command.ADD, container, netns, conf)
    failing = hot_recorder_plan(node, fail={"code": 11, "msg": "hot"}, failOn=["ADD", "DEL", "CHECK"])
    with pytest.raises(CniError):
        await engine.attach_delegate(replace(request, ifname=IfName("net1")), failing)
    assert _state_of(node.checkpoint(container), "net1") == "intent"  # its rollback DEL failed too

    await engine.check(node.request(Command.CHECK, container, netns, conf))

    assert [call for call in node.calls() if call[0] == "CHECK"] == [("CHECK", "cluster", "eth0")]


async def test_check_passes_beside_a_hot_unplugged_delegate_whose_del_is_pending(node: Node) -> None:
    container, netns = await _running_sandbox(node)
    engine = node.engine()
    conf = node.conf("cluster")
    request = node.request(Command.ADD, container, netns, conf)
    gone_soon = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": netns.path}]}
    plan = hot_recorder_plan(node, result=gone_soon, fail={"code": 11, "msg": "busy"}, failOn="DEL")
    await engine.attach_delegate(replace(request, ifname=IfName("net1")), plan)
    with pytest.raises(CniError):
        await engine.detach_delegate(replace(request, command=Command.DEL, ifname=IfName("net1")))
    assert _state_of(node.checkpoint(container), "net1") == "deleting"

    await engine.check(node.request(Command.CHECK, container, netns, conf))

    assert [call for call in node.calls() if call[0] == "CHECK"] == [("CHECK", "cluster", "eth0")]
