"""The runtime's CNI GC leaves alone every sandbox whose operation was in flight when it arrived,
even one that answered while the GC was still tearing down others (invariant 9)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from app.attach.requests import NodeRequest
from app.cni.types import ContainerId
from tests.core.support import Command, Node, pending, wait_for_file


async def test_cni_gc_spares_a_sandbox_whose_add_answered_while_the_gc_tore_down_another(
    node: Node, tmp_path: Path
) -> None:
    """The runtime's ``cni.dev/valid-attachments`` lists only what it has heard back about: an ADD
    running when the GC was sent is missing from it, yet it is a live pod's. GC first tears down an
    orphan whose DEL takes a while; the ADD answers meanwhile; GC must not DEL it afterwards."""
    slow_del, adding_meeting = tmp_path / "slow", tmp_path / "adding"
    slow_del.mkdir()
    adding_meeting.mkdir()
    orphan_network = node.recorder_network(
        "orphaned", rendezvous={"dir": str(slow_del), "count": 2, "timeout": 60, "commands": ["DEL"]}
    )
    live_network = node.recorder_network(
        "live", rendezvous={"dir": str(adding_meeting), "count": 2, "timeout": 60}
    )
    engine = node.engine()
    orphan = ContainerId("a" + secrets.token_hex(31))  # listed first, whatever order GC reads them in
    live = ContainerId("b" + secrets.token_hex(31))
    await engine.add(node.request(Command.ADD, orphan, node.new_netns(), node.conf(orphan_network)))
    adding = asyncio.create_task(
        engine.add(node.request(Command.ADD, live, node.new_netns(), node.conf(live_network), pod="pod-b"))
    )
    gc: asyncio.Task[None] | None = None
    try:
        await wait_for_file(adding_meeting / "eth0")  # the live pod's ADD is in flight
        gc = asyncio.create_task(engine.gc(NodeRequest(command=Command.GC, conf=node.conf(live_network))))
        await wait_for_file(Path(f"{slow_del}-DEL") / "eth0")  # GC is DELing the orphan

        await asyncio.to_thread((adding_meeting / "go").touch)  # the ADD answers the runtime
        await adding
        await asyncio.to_thread(Path(f"{slow_del}-DEL", "go").touch)  # the orphan's DEL ends
        await asyncio.wait_for(gc, timeout=30)
    finally:
        for path in (adding_meeting / "go", Path(f"{slow_del}-DEL", "go")):
            await asyncio.to_thread(path.parent.mkdir, exist_ok=True)
            await asyncio.to_thread(path.touch)
        await asyncio.gather(adding, *([gc] if gc is not None else []), return_exceptions=True)

    assert node.checkpoint(orphan) is None
    record = node.checkpoint(live)
    assert record is not None
    assert record.state == "ready"
    assert pending(record) == ["eth0"]
    assert ("DEL", "live", "eth0") not in node.calls()
