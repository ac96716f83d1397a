"""A half-done sandbox that start-up recovery left recorded because a plugin process of the crashed
run would not die is GC's to retry, and GC must not DEL it either while that process may still be
attaching (invariant 9): it kills and waits for it first, and leaves the sandbox pending (code 11,
retried later) while it still runs. Before, the first GC pass, right after recovery, DELed it
at once beside the running plugin."""

from __future__ import annotations

from functools import partial

import pytest

from app.cni import reaper
from app.gc import collector as gc
from app.gc.collector import GarbageCollector
from app.gc.recovery import recover
from tests.core.support import Node, crashed_add_with_its_plugin_running


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_gc_kills_a_plugin_recovery_left_running_before_its_del_and_never_dels_beside_it(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = node.conf(node.recorder_network("a"))
    container, survivor = await crashed_add_with_its_plugin_running(node, conf, node.new_netns())
    try:
        real_reap = reaper.reap
        monkeypatch.setattr(reaper, "reap", partial(real_reap, timeout=0))  # it "would not die"
        node.restart()
        engine = node.engine()
        assert [cid for cid, _ in (await recover(engine=engine, db=node.db)).failed] == [container]
        clock = Clock()
        collector = GarbageCollector(engine=engine, db=node.db, clock=clock)

        first = await collector.run_once()

        # The pass's reaper gives up at once on what outlived recovery's (after one more SIGKILL,
        # which this survivor, unlike one stuck in the kernel, does not outlive).
        assert [(cid, error.code) for cid, error in first.failed] == [(container, 11)]
        assert node.calls() == [], "no DEL beside the plugin still running"
        assert node.checkpoint(container) is not None

        monkeypatch.setattr(reaper, "reap", real_reap)  # now it dies when killed
        clock.now += gc.RETRY_FIRST_SECONDS
        second = await collector.run_once()

        assert [o.container_id for o in second.collected] == [container]
        assert survivor.returncode is not None, "killed and waited for before the DEL"
        assert [call[0] for call in node.calls()] == ["DEL"]
        assert node.checkpoint(container) is None
    finally:
        if survivor.returncode is None:
            survivor.kill()
        await survivor.wait()
