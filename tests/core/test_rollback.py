"""A failed ADD undoes what it ran, newest first, and the runtime gets the delegate's own error."""

from __future__ import annotations

import pytest

from app.cni.types import CniError
from tests.core.support import Command, Node, delegate_lines, new_container_id, pending, request_lines


async def test_a_failing_delegate_rolls_back_the_delegates_before_it_newest_first(node: Node) -> None:
    conf = node.conf(
        node.recorder_network("cluster"),
        node.recorder_network("second"),
        node.recorder_network("broken", fail={"code": 11, "msg": "no capacity"}, failOn="ADD"),
    )
    netns = node.new_netns()
    container = new_container_id()

    with pytest.raises(CniError) as failed:
        await node.engine().add(node.request(Command.ADD, container, netns, conf))

    assert failed.value.code == 11
    assert "no capacity" in failed.value.msg
    assert 'network "broken"' in failed.value.msg
    assert node.calls() == [
        ("ADD", "cluster", "eth0"),
        ("ADD", "second", "net1"),
        ("ADD", "broken", "net2"),
        ("DEL", "broken", "net2"),
        ("DEL", "second", "net1"),
        ("DEL", "cluster", "eth0"),
    ]
    assert node.checkpoint(container) is None
    lines = node.history(container)
    assert delegate_lines(lines, "DEL") == [
        ("net2", "rollback", "ok"),
        ("net1", "rollback", "ok"),
        ("eth0", "rollback", "ok"),
    ]
    assert [(line.outcome, line.error_code) for line in request_lines(lines, "ADD")] == [("error", 11)]


async def test_a_failing_cluster_network_rolls_back_only_itself(node: Node) -> None:
    conf = node.conf(
        node.recorder_network("cluster", fail={"code": 7, "msg": "bad subnet"}, failOn="ADD"),
        node.recorder_network("never-run"),
    )
    netns = node.new_netns()
    container = new_container_id()

    with pytest.raises(CniError) as failed:
        await node.engine().add(node.request(Command.ADD, container, netns, conf))

    assert failed.value.code == 7
    assert node.calls() == [("ADD", "cluster", "eth0"), ("DEL", "cluster", "eth0")]
    assert node.checkpoint(container) is None


async def test_a_rollback_whose_del_fails_leaves_that_delegate_pending_for_gc(node: Node) -> None:
    conf = node.conf(
        node.recorder_network("cluster"),
        node.recorder_network("stuck", fail={"code": 11, "msg": "stuck"}, failOn="DEL"),
        node.recorder_network("broken", fail={"code": 5, "msg": "io"}, failOn="ADD"),
    )
    netns = node.new_netns()
    container = new_container_id()

    with pytest.raises(CniError) as failed:
        await node.engine().add(node.request(Command.ADD, container, netns, conf))

    assert failed.value.code == 5
    record = node.checkpoint(container)
    assert pending(record) == ["net1"]
    assert record is not None
    assert record.state == "deleting"
    assert ("DEL", "cluster", "eth0") in node.calls()


async def test_after_a_rollback_the_same_sandbox_can_be_added_again(node: Node) -> None:
    flaky = node.recorder_network("flaky", fail={"code": 11, "msg": "later"}, failOn="ADD")
    conf = node.conf(node.recorder_network("cluster"), flaky)
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()
    with pytest.raises(CniError):
        await engine.add(node.request(Command.ADD, container, netns, conf))
    node.recorder_network("flaky")  # the network works now

    await engine.add(node.request(Command.ADD, container, netns, conf))

    assert pending(node.checkpoint(container)) == ["eth0", "net1"]


async def test_a_result_with_an_integer_go_cannot_hold_fails_the_add_and_is_rolled_back(node: Node) -> None:
    # Go's types refuse an ips[].interface beyond int64: upstream's ADD fails on it, and an answer
    # holding it would be refused by the runtime after the delegate ran. Decoding refuses it, so
    # the delegate is undone and the runtime gets code 6 naming the field.
    result = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "if-huge", "sandbox": "x"}],
        "ips": [{"address": "10.10.9.2/24", "interface": 2**63}],
    }
    conf = node.conf(node.recorder_network("cluster", result=result))
    netns = node.new_netns()
    container = new_container_id()

    with pytest.raises(CniError) as failed:
        await node.engine().add(node.request(Command.ADD, container, netns, conf))

    assert failed.value.code == 6
    assert "ips[0].interface" in failed.value.msg
    assert node.calls() == [("ADD", "cluster", "eth0"), ("DEL", "cluster", "eth0")]
    assert node.checkpoint(container) is None
