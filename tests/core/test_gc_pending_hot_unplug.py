"""A hot-plugged delegate of a running sandbox whose DEL failed (its hot-unplug, or the undo of its
failed hot-plug ADD) stays pending (invariant 5), and the periodic GC passes retry that DEL, with
the orphans' backoff, while the pod runs on: not only the daemon's next start-up recovery."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from app.attach.engine import AttachEngine
from app.cni.types import CniError, IfName
from app.gc import collector as gc
from app.gc.collector import GarbageCollector
from tests.core.support import Command, Netns, Node, Pods, hot_recorder_plan, new_container_id, pending

NO_INTERFACES = {"cniVersion": "1.0.0"}


POD_A_RUNS = Pods({("default", "pod-a"): "uid-a"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def running_with_pending_hot_unplug(node: Node, engine: AttachEngine) -> tuple[str, Netns]:
    """A running sandbox of pod-a with ``net1`` hot-plugged, whose hot-unplug DEL failed."""
    conf = node.conf(node.recorder_network("cluster", result=NO_INTERFACES))
    container, netns = new_container_id(), node.new_netns()
    request = node.request(Command.ADD, container, netns, conf)
    await engine.add(request)
    plan = hot_recorder_plan(node, fail={"code": 11, "msg": "busy"}, failOn="DEL")
    await engine.attach_delegate(replace(request, ifname=IfName("net1")), plan)
    with pytest.raises(CniError):
        await engine.detach_delegate(replace(request, command=Command.DEL, ifname=IfName("net1")))
    return container, netns


def fix_the_recorder(node: Node) -> None:
    """The plugin is repaired (upgraded, say): its DEL now succeeds, whatever the config says."""
    recorder = node.bin_dir / "recorder"
    recorder.write_text(f'#!/bin/sh\ncat >/dev/null\necho "{{}}" >> {node.root / "fixed-dels"}\n')


def hot_dels(node: Node) -> int:
    fixed = node.root / "fixed-dels"
    by_recorder = sum(1 for command, name, _ in node.calls() if command == "DEL" and name == "hot")
    return by_recorder + (len(fixed.read_text().splitlines()) if fixed.exists() else 0)


async def test_gc_completes_a_pending_hot_unplug_del_once_it_can_pass_and_keeps_the_sandbox(
    node: Node,
) -> None:
    engine = node.engine()
    container, _ = await running_with_pending_hot_unplug(node, engine)
    collector = GarbageCollector(engine=engine, db=node.db, pods=POD_A_RUNS, clock=Clock())
    fix_the_recorder(node)

    report = await collector.run_once()

    assert report.orphans == [], "the sandbox itself runs on"
    assert report.detached == [f"{container}/net1"]
    record = node.checkpoint(container)
    assert record is not None
    assert record.state == "ready"
    assert pending(record) == ["eth0"]


async def test_a_pending_hot_unplug_del_that_fails_again_waits_growing_intervals(node: Node) -> None:
    engine = node.engine()
    container, _ = await running_with_pending_hot_unplug(node, engine)
    clock = Clock()
    collector = GarbageCollector(engine=engine, db=node.db, pods=POD_A_RUNS, clock=clock)
    assert hot_dels(node) == 1

    first = await collector.run_once()
    assert hot_dels(node) == 2, "tried by the first pass"
    [(failed, error)] = first.failed
    assert (failed, error.code) == (container, 11)
    assert "busy" in str(error), "the error its DEL recorded"

    await collector.run_once()
    assert hot_dels(node) == 2, "not tried again before its interval"

    clock.now += gc.RETRY_FIRST_SECONDS
    fix_the_recorder(node)
    again = await collector.run_once()
    assert again.detached == [f"{container}/net1"]
    assert pending(node.checkpoint(container)) == ["eth0"]


async def test_a_pending_hot_unplug_of_a_sandbox_with_an_operation_in_flight_is_left_to_it(
    node: Node,
) -> None:
    engine = node.engine()
    container, _ = await running_with_pending_hot_unplug(node, engine)
    collector = GarbageCollector(engine=engine, db=node.db, pods=POD_A_RUNS, clock=Clock())
    fix_the_recorder(node)

    async with engine.locks.hold(container):
        report = await asyncio.wait_for(collector.run_once(), 60)  # a pass waiting for the lock hangs

    assert report.detached == []
    assert pending(node.checkpoint(container)) == ["eth0", "net1"]
