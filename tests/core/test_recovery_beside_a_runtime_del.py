"""Start-up recovery never kills a plugin this daemon runs for a runtime DEL served before it.

The daemon serves DELs as soon as its store is open, before recovery (invariant 9): after a reboot
the runtime DELs the last boot's sandboxes while the daemon recovers them. Recovery kills the
plugins an earlier run left running for the sandboxes it settles, found by their marker; a runtime
DEL of one of those sandboxes already running its plugin carries the same marker. Recovery killed
it: the DEL failed (the runtime retries), its plugin cut short halfway through its work.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from app.attach.locks import SandboxLocks
from app.gc.recovery import recover
from tests.core.support import Command, Node, new_container_id, pending, wait_for_file


class _LocksTellingOfAWait(SandboxLocks):
    """Sandbox locks that tell when someone asks for ``container``'s while it is held."""

    def __init__(self, container: str) -> None:
        super().__init__()
        self.container = container
        self.waited_for = asyncio.Event()

    @asynccontextmanager
    async def hold(self, container_id: str) -> AsyncIterator[None]:
        if container_id == self.container and self.busy(container_id):
            self.waited_for.set()
        async with super().hold(container_id):
            yield


async def test_recovery_leaves_a_runtime_dels_plugin_of_an_earlier_boots_sandbox_running(
    node: Node,
) -> None:
    meeting = node.root / "del-meeting"
    conf = node.conf(
        node.recorder_network(
            "cluster", rendezvous={"dir": str(meeting), "count": 2, "timeout": 30, "commands": ["DEL"]}
        )
    )
    container = new_container_id()
    await node.engine(boot_id="boot-0").add(node.request(Command.ADD, container, node.new_netns(), conf))
    node.restart()  # the node rebooted: the sandbox is of an earlier boot
    engine = node.engine(boot_id="boot-1")
    locks = _LocksTellingOfAWait(container)
    engine.locks = locks
    runtime_del = asyncio.create_task(engine.delete(node.request(Command.DEL, container, None, conf)))
    await wait_for_file(Path(f"{meeting}-DEL") / "eth0")  # its plugin runs, waiting for a partner

    recovering = asyncio.create_task(recover(engine=engine, db=node.db))
    waited = asyncio.create_task(locks.waited_for.wait())
    await asyncio.wait({runtime_del, waited}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    (Path(f"{meeting}-DEL") / "partner").touch()  # lets the plugin finish, if still running
    waited.cancel()
    report = await recovering

    await runtime_del  # the runtime's DEL succeeded: its plugin was not killed under it
    dels = [json.loads(line) for line in node.recorder_log.read_text().splitlines()]
    assert [entry["command"] for entry in dels if entry["command"] == "DEL"] == ["DEL"]
    assert pending(node.checkpoint(container)) == []
    assert report.orphans_killed == []
    # the runtime's DEL settled it, not recovery: nothing counted as recovery's own
    assert (report.rolled_back, report.deletes_finished, report.earlier_boot, report.failed) == (0, 0, 0, [])
