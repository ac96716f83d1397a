"""A runtime DEL served before start-up recovery never runs beside an earlier run's ADD (invariant 9).

The daemon serves DELs as soon as its store is open, and recovery reaps the plugins a killed run
left running only after that: a runtime DEL of the sandbox whose ADD was cut short can arrive
first (the runtime DELs a sandbox whose ADD failed at once, and its request waits on the socket
while the daemon starts). Its DEL must not run while that ADD's plugin still does: the ADD,
finishing later, would leave its interface and lease for good.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.core.support import Command, Node, crashed_add_with_its_plugin_running, pending

GATE = """#!/bin/sh
# DEL: note the state letter of the earlier run's ADD ("gone" once reaped), then succeed.
state=$(cut -d' ' -f3 /proc/{pid}/stat 2>/dev/null)
echo "${{state:-gone}}" >> {log}
"""


async def test_a_runtime_del_kills_an_unfinished_adds_plugin_of_an_earlier_run_before_its_del(
    node: Node,
) -> None:
    conf = node.conf(node.recorder_network("cluster"))
    netns = node.new_netns()
    container, orphan = await crashed_add_with_its_plugin_running(node, conf, netns)
    try:
        seen: Path = node.root / "del-saw"
        (node.bin_dir / "recorder").write_text(GATE.format(pid=orphan.pid, log=seen))
        node.restart()

        await node.engine().delete(node.request(Command.DEL, container, netns, conf))

        assert (await asyncio.to_thread(seen.read_text)).split() in (["Z"], ["gone"]), (
            "the DEL ran after the ADD's plugin died"
        )
        assert await asyncio.wait_for(orphan.wait(), 5) == -signal.SIGKILL
        assert pending(node.checkpoint(container)) == []
    finally:
        if orphan.returncode is None:
            orphan.kill()
            await orphan.wait()
