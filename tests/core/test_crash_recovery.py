"""After a crash, start-up recovery settles every sandbox left half done, from the checkpoint alone.

Each test has the engine "die" at one crash point (``Crashed`` where the daemon would be SIGKILLed),
reopens the store as a restarted daemon would, and runs ``recover`` with a fresh engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import replace

import pytest

from app.attach.netconf import MultusNetConf
from app.attach.networks import DelegatePlan
from app.cni.conf import load_network_list
from app.cni.invoke import DELEGATE_MARKER
from app.cni.types import IfName
from app.gc.recovery import recover
from tests.core.support import (
    Command,
    CrashAt,
    Crashed,
    Node,
    Point,
    delegate_lines,
    new_container_id,
    pending,
)


def three_networks(node: Node) -> MultusNetConf:
    return node.conf(node.recorder_network("a"), node.recorder_network("b"), node.recorder_network("c"))


async def test_an_add_killed_before_its_second_delegate_ran_is_rolled_back(node: Node) -> None:
    conf = three_networks(node)
    netns = node.new_netns()
    container = new_container_id()
    engine = node.engine(crash=CrashAt(Point.ADD_AFTER_INTENT, 2))
    with pytest.raises(Crashed):
        await engine.add(node.request(Command.ADD, container, netns, conf))
    record = node.checkpoint(container)
    assert record is not None
    assert [(a.ifname, a.state) for a in record.attachments] == [
        ("eth0", "intent"),
        ("net1", "intent"),
        ("net2", "intent"),
    ], "every intent is committed before the first delegate runs, results only at the end (two commits)"
    node.restart()

    report = await recover(engine=node.engine(), db=node.db)

    assert (report.rolled_back, report.deletes_finished, report.earlier_boot) == (1, 0, 0)
    assert report.failed == []
    assert node.checkpoint(container) is None
    assert node.calls() == [
        ("ADD", "a", "eth0"),
        ("DEL", "c", "net2"),
        ("DEL", "b", "net1"),
        ("DEL", "a", "eth0"),
    ]
    assert delegate_lines(node.history(container), "DEL") == [
        ("net2", "recovery", "ok"),
        ("net1", "recovery", "ok"),
        ("eth0", "recovery", "ok"),
    ]


async def test_an_add_killed_after_a_delegate_ran_but_before_its_result_was_recorded_is_undone(
    node: Node,
) -> None:
    conf = three_networks(node)
    netns = node.new_netns()
    container = new_container_id()
    engine = node.engine(crash=CrashAt(Point.ADD_AFTER_EXEC, 2))
    with pytest.raises(Crashed):
        await engine.add(node.request(Command.ADD, container, netns, conf))
    node.restart()

    report = await recover(engine=node.engine(), db=node.db)

    assert report.rolled_back == 1
    assert node.checkpoint(container) is None
    assert node.calls()[-2:] == [("DEL", "b", "net1"), ("DEL", "a", "eth0")]


async def test_an_add_killed_after_its_final_commit_is_kept_for_the_runtimes_del(
    node: Node,
) -> None:
    conf = three_networks(node)
    netns = node.new_netns()
    container = new_container_id()
    engine = node.engine(crash=CrashAt(Point.ADD_BEFORE_ANSWER))
    with pytest.raises(Crashed):
        await engine.add(node.request(Command.ADD, container, netns, conf))
    record = node.checkpoint(container)
    assert record is not None
    assert record.state == "ready"
    node.restart()

    report = await recover(engine=node.engine(), db=node.db)

    # Committed as ready in this boot: nothing proves the runtime lost it, so recovery keeps it.
    assert (report.rolled_back, report.deletes_finished, report.earlier_boot) == (0, 0, 0)
    assert pending(node.checkpoint(container)) == ["eth0", "net1", "net2"]


async def test_a_del_killed_half_way_is_finished(node: Node) -> None:
    conf = three_networks(node)
    netns = node.new_netns()
    container = new_container_id()
    await node.engine().add(node.request(Command.ADD, container, netns, conf))
    engine = node.engine(crash=CrashAt(Point.DEL_AFTER_EXEC, 1))
    with pytest.raises(Crashed):
        await engine.delete(node.request(Command.DEL, container, netns, conf))
    record = node.checkpoint(container)
    assert record is not None
    assert record.state == "deleting"
    assert pending(record) == ["eth0", "net1", "net2"]  # net2's DEL ran, but was not recorded
    node.restart()

    report = await recover(engine=node.engine(), db=node.db)

    assert report.deletes_finished == 1
    assert node.checkpoint(container) is None
    # net2 is DELed twice: DEL must be idempotent, and the checkpoint could not know it was done.
    assert [call for call in node.calls() if call[0] == "DEL"] == [
        ("DEL", "c", "net2"),
        ("DEL", "c", "net2"),
        ("DEL", "b", "net1"),
        ("DEL", "a", "eth0"),
    ]


async def test_a_rollback_killed_half_way_is_finished(node: Node) -> None:
    conf = node.conf(
        node.recorder_network("a"),
        node.recorder_network("b"),
        node.recorder_network("broken", fail={"code": 11, "msg": "no"}, failOn="ADD"),
    )
    netns = node.new_netns()
    container = new_container_id()
    engine = node.engine(crash=CrashAt(Point.ROLLBACK_AFTER_DEL, 2))
    with pytest.raises(Crashed):
        await engine.add(node.request(Command.ADD, container, netns, conf))
    node.restart()

    report = await recover(engine=node.engine(), db=node.db)

    assert report.deletes_finished == 1
    assert node.checkpoint(container) is None


async def test_a_sandbox_recorded_in_an_earlier_boot_is_deleted_and_a_settled_one_of_this_boot_kept(
    node: Node,
) -> None:
    conf = node.conf(node.recorder_network("a"))
    old, current = new_container_id(), new_container_id()
    await node.engine(boot_id="boot-0").add(node.request(Command.ADD, old, node.new_netns(), conf))
    await node.engine().add(node.request(Command.ADD, current, node.new_netns(), conf))
    node.restart()

    report = await recover(engine=node.engine(), db=node.db)

    assert (report.rolled_back, report.deletes_finished, report.earlier_boot) == (0, 0, 1)
    assert node.checkpoint(old) is None
    assert pending(node.checkpoint(current)) == ["eth0"]


async def test_a_teardown_that_fails_during_recovery_stays_pending_and_does_not_stop_the_others(
    node: Node,
) -> None:
    good = node.conf(node.recorder_network("a"))
    stuck = node.conf(node.recorder_network("stuck", fail={"code": 11, "msg": "stuck"}, failOn="DEL"))
    stuck_id, good_id = new_container_id(), new_container_id()
    old_boot = node.engine(boot_id="boot-0")
    await old_boot.add(node.request(Command.ADD, stuck_id, node.new_netns(), stuck))
    await old_boot.add(node.request(Command.ADD, good_id, node.new_netns(), good))
    node.restart()

    report = await recover(engine=node.engine(), db=node.db)

    assert [container for container, _ in report.failed] == [stuck_id]
    assert report.failed[0][1].code == 11
    assert pending(node.checkpoint(stuck_id)) == ["eth0"]
    assert node.checkpoint(good_id) is None


async def test_recovery_tears_down_through_the_recorded_config_not_the_current_files(node: Node) -> None:
    conf = node.conf(node.recorder_network("a"))
    netns = node.new_netns()
    container = new_container_id()
    engine = node.engine(crash=CrashAt(Point.ADD_AFTER_EXEC))
    with pytest.raises(Crashed):
        await engine.add(node.request(Command.ADD, container, netns, conf))
    for path in node.conf_dir.iterdir():
        path.unlink()
    node.restart()

    report = await recover(engine=node.engine(), db=node.db)

    assert report.rolled_back == 1
    assert node.checkpoint(container) is None
    added, deleted = node.recorder_entries("ADD")[0], node.recorder_entries("DEL")[0]
    assert deleted["stdin"] == added["stdin"]  # no result was recorded, so no prevResult either


async def test_a_hot_plugged_delegate_still_running_from_before_the_crash_is_killed_before_its_del(
    node: Node,
) -> None:
    """Invariant 9 for hot-plug: the daemon died while a hot-plugged delegate's ADD ran, and the
    delegate (its own session) did not. Recovery must kill it before it DELs that attachment, or the
    ADD, finishing after the DEL, leaves its interface and lease for good."""
    conf = node.conf(node.recorder_network("a"))
    netns = node.new_netns()
    container = new_container_id()
    await node.engine().add(node.request(Command.ADD, container, netns, conf))
    extra = json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "extra",
            "type": "recorder",
            "recorder": {"log": str(node.recorder_log)},
        }
    ).encode()
    plan = DelegatePlan(
        position=1,
        network_name="extra",
        net=load_network_list(extra, source="test"),
        ifname=IfName("net1"),
        is_master=False,
        cni_args=(),
        capability_args={},
    )
    request = replace(node.request(Command.ADD, container, netns, conf), ifname=IfName("net1"))
    with pytest.raises(Crashed):
        await node.engine(crash=CrashAt(Point.ADD_AFTER_INTENT)).attach_delegate(request, plan)
    # What the in-process crash point cannot leave behind: the delegate's ADD, still running.
    orphan = await asyncio.create_subprocess_exec(
        "sleep",
        "300",
        env={"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "ADD", DELEGATE_MARKER: f"{container}/net1"},
        start_new_session=True,
    )
    try:
        node.restart()

        report = await recover(engine=node.engine(), db=node.db)

        assert [o.pid for o in report.orphans_killed] == [orphan.pid], "killed before its DEL ran"
        assert await asyncio.wait_for(orphan.wait(), 5) == -signal.SIGKILL
        assert pending(node.checkpoint(container)) == ["eth0"]
    finally:
        if orphan.returncode is None:
            orphan.kill()
            await orphan.wait()
