"""The runtime's CNI GC never tears down a sandbox whose operation is in flight (invariant 9)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.attach.requests import NodeRequest
from tests.core.support import Command, Node, new_container_id, pending, wait_for_file


async def test_cni_gc_skips_a_sandbox_whose_add_is_in_flight(node: Node, tmp_path: Path) -> None:
    """The runtime lists in ``cni.dev/valid-attachments`` only what it has heard back about: an ADD
    still running is missing from it, yet it is a live pod's. GC skips it rather than wait for its
    lock and then DEL the sandbox the ADD just answered for."""
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    conf = node.conf(
        node.recorder_network("cluster", rendezvous={"dir": str(meeting), "count": 2, "timeout": 60})
    )
    engine = node.engine()
    container = new_container_id()
    adding = asyncio.create_task(engine.add(node.request(Command.ADD, container, node.new_netns(), conf)))
    try:
        await wait_for_file(meeting / "eth0")  # its delegate runs: the ADD holds the sandbox's lock

        # Bounded only so that a GC waiting for the ADD fails here rather than hang the suite.
        await asyncio.wait_for(engine.gc(NodeRequest(command=Command.GC, conf=conf)), timeout=30)
    finally:
        await asyncio.to_thread((meeting / "go").touch)  # the delegate answers; the ADD commits
        await adding

    record = node.checkpoint(container)
    assert record is not None
    assert record.state == "ready"
    assert pending(record) == ["eth0"]
    assert [call[0] for call in node.calls()] == ["ADD"]
