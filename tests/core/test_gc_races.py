"""GC decides on a snapshot of the checkpoint; what it tears down must still be an orphan when it acts."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from app.gc.collector import GarbageCollector
from tests.core.support import Command, Node, new_container_id, pending


async def _wait_for(path: Path) -> None:
    for _ in range(600):
        if await asyncio.to_thread(path.exists):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


async def test_an_add_that_finishes_while_gc_examines_it_is_not_torn_down(node: Node, tmp_path: Path) -> None:
    """The ADD is in flight (state ``adding``) when GC reads the checkpoint and has answered by the time
    GC looks at its lock: the sandbox is a live pod's, not an unfinished ADD."""
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    conf = node.conf(
        node.recorder_network("cluster", rendezvous={"dir": str(meeting), "count": 2, "timeout": 30})
    )
    engine = node.engine()
    container = new_container_id()
    adding = asyncio.create_task(engine.add(node.request(Command.ADD, container, node.new_netns(), conf)))
    await _wait_for(meeting / "eth0")  # the delegate runs: the sandbox is recorded as ``adding``

    class PodsWhileTheAddFinishes:
        async def pods_on_node(self) -> Mapping[tuple[str, str], str] | None:
            await asyncio.to_thread((meeting / "go").touch)  # the delegate answers; the ADD commits
            await adding
            return {("default", "pod-a"): "uid-a"}

    collector = GarbageCollector(engine=engine, db=node.db, pods=PodsWhileTheAddFinishes())

    report = await collector.run_once()

    assert adding.done()
    assert adding.exception() is None
    assert report.collected == []
    assert pending(node.checkpoint(container)) == ["eth0"]
    assert [call[0] for call in node.calls()] == ["ADD"]
