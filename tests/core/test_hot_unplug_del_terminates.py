"""A hot-unplug DEL (``POST /delegate`` DEL, what multus-dynamic-networks-controller sends) terminates.

Its caller retries a failed DEL, and CNI says a DEL succeeds when what it removes is already gone;
upstream answers success. So a DEL naming a container the checkpoint does not hold, or holds in a
state other than ``ready``, or an interface it does not record, succeeds, with its request line in
the history, and touches nothing: a sandbox that is not running is the runtime's DEL's (or
recovery's) to tear down, attachments and all (invariant 5b).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.attach import hotplug
from app.attach.netconf import MultusNetConf
from app.attach.requests import Trigger
from app.cni.types import CniError, ErrorCode, IfName
from app.gc.recovery import recover
from tests.core.support import (
    Command,
    CrashAt,
    Crashed,
    Node,
    Point,
    new_container_id,
    pending,
    request_lines,
)


def unplug(node: Node, container: str, conf: MultusNetConf, *, ifname: str = "net1") -> hotplug.DelegateCall:
    request = node.request(Command.DEL, container, None, conf, trigger=Trigger.DELEGATE)
    return hotplug.DelegateCall(request=replace(request, ifname=IfName(ifname)), net=None)


async def test_a_hot_unplug_del_of_a_container_nothing_is_recorded_for_succeeds(node: Node) -> None:
    conf = node.conf(node.recorder_network("cluster"))
    container = new_container_id()

    assert await hotplug.serve_delegate(node.engine(), unplug(node, container, conf)) is None

    assert node.checkpoint(container) is None
    assert node.calls() == [], "nothing was run"
    lines = request_lines(node.history(container), "DEL")
    assert [(line.ifname, line.trigger, line.outcome) for line in lines] == [("net1", "delegate", "ok")]


async def test_a_hot_unplug_del_of_an_interface_the_sandbox_does_not_record_succeeds(node: Node) -> None:
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("extra"))
    engine = node.engine()
    container = new_container_id()
    await engine.add(node.request(Command.ADD, container, node.new_netns(), conf))

    await hotplug.serve_delegate(engine, unplug(node, container, conf, ifname="net7"))

    assert pending(node.checkpoint(container)) == ["eth0", "net1"]
    assert [call[0] for call in node.calls()] == ["ADD", "ADD"]
    assert [line.outcome for line in request_lines(node.history(container), "DEL")] == ["ok"]


async def test_a_hot_unplug_del_of_a_sandbox_whose_del_is_pending_succeeds_and_leaves_it_to_the_runtime(
    node: Node,
) -> None:
    conf = node.conf(
        node.recorder_network("cluster"),
        node.recorder_network("extra", fail={"code": 11, "msg": "busy"}, failOn="DEL"),
    )
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    with pytest.raises(CniError):
        await engine.delete(node.request(Command.DEL, container, netns, conf))
    record = node.checkpoint(container)
    assert record is not None
    assert record.state == "deleting"
    dels_before = len(node.recorder_entries("DEL"))

    await hotplug.serve_delegate(engine, unplug(node, container, conf))

    assert pending(node.checkpoint(container)) == ["net1"], "still the runtime's DEL to finish"
    assert len(node.recorder_entries("DEL")) == dels_before, "the hot-unplug ran no DEL of its own"
    assert [line.outcome for line in request_lines(node.history(container), "DEL")] == ["error", "ok"]


async def test_a_hot_unplug_del_of_a_half_done_add_before_recovery_succeeds_and_recovery_still_undoes_it(
    node: Node,
) -> None:
    """DELs are served before recovery has run. A half-done ADD's delegate may still be running
    (invariant 9): the hot-unplug must not DEL it, and must not fail for ever either."""
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("extra"))
    netns = node.new_netns()
    container = new_container_id()
    with pytest.raises(Crashed):
        await node.engine(crash=CrashAt(Point.ADD_AFTER_INTENT, occurrence=2)).add(
            node.request(Command.ADD, container, netns, conf)
        )
    node.restart()
    engine = node.engine()

    await hotplug.serve_delegate(engine, unplug(node, container, conf))

    record = node.checkpoint(container)
    assert record is not None
    assert record.state == "adding"
    assert pending(record) == ["eth0", "net1"]
    assert node.recorder_entries("DEL") == []
    report = await recover(engine=engine, db=node.db)
    assert report.rolled_back == 1
    assert node.checkpoint(container) is None


async def test_a_hot_unplug_del_still_refuses_the_cluster_network_and_another_pods_sandbox(
    node: Node,
) -> None:
    """Not "already gone": the interface is there and stays. Retrying changes nothing while the
    sandbox runs, and succeeds once the runtime's DEL removed it, so these DELs terminate too."""
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("extra"))
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    mine = unplug(node, container, conf)
    other_pod = replace(mine, request=replace(mine.request, pod=replace(mine.request.pod, uid="other")))

    with pytest.raises(CniError) as cluster_network:
        await hotplug.serve_delegate(engine, unplug(node, container, conf, ifname="eth0"))
    with pytest.raises(CniError) as mismatch:
        await hotplug.serve_delegate(engine, other_pod)

    assert cluster_network.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert "cluster network" in cluster_network.value.msg
    assert mismatch.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert "K8S_POD_UID" in mismatch.value.msg
    assert pending(node.checkpoint(container)) == ["eth0", "net1"]
    await engine.delete(node.request(Command.DEL, container, netns, conf))
    await hotplug.serve_delegate(engine, unplug(node, container, conf, ifname="eth0"))
    await hotplug.serve_delegate(engine, other_pod)
