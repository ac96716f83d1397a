"""A runtime DEL served before start-up recovery never runs beside a DEL an earlier run began.

A parallel teardown runs the DELs of a sandbox's other networks together, so a daemon killed
during it (at ``del-after-exec``, one of them done) leaves the others' plugins running (each leads
its own session) and the sandbox ``deleting``, every result recorded. The restarted daemon serves
the runtime's DEL before recovery has reaped anything (DELs are served once the store is open):
its teardown must kill what still runs for an attachment whose DEL had begun before it DELs that
attachment again (invariant 9), as it does for an ADD an earlier run never finished. The plugin
left running is played by a ``sleep`` marked as ``net1``'s DEL, as ``app.cni.invoke`` marks
every plugin. A DEL that no earlier DEL began, nearly every one, scans nothing for it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Collection
from pathlib import Path

import pytest

from app.attach.crashpoints import DISARMED, CrashPoints
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.networks import NetworkResolver
from app.cni import reaper
from app.cni.invoke import DELEGATE_MARKER
from app.cni.types import CniError
from tests.core.support import Command, CrashAt, Crashed, Node, Point, new_container_id, pending

GATE = """#!/bin/sh
# DEL: note the state letter of the earlier run's DEL plugin ("gone" once reaped), then succeed.
state=$(cut -d' ' -f3 /proc/{pid}/stat 2>/dev/null)
echo "$CNI_IFNAME ${{state:-gone}}" >> {log}
"""


def _parallel_engine(node: Node, crash: CrashPoints = DISARMED) -> AttachEngine:
    settings = EngineSettings(delegate_timeout=20.0, node_name="node-a", parallel_delegates=True)
    return AttachEngine(
        db=node.db, resolver=NetworkResolver(), boot_id=node.boot_id, settings=settings, crash_points=crash
    )


def _scans(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The markers of every reap the teardown asks for (each a scan of ``/proc``)."""
    asked: list[set[str]] = []

    async def counted(markers: Collection[str]) -> list[reaper.Orphan]:
        asked.append(set(markers))
        return await real(markers)

    real = reaper.reap
    monkeypatch.setattr(reaper, "reap", counted)
    return asked


async def test_a_runtime_del_kills_what_an_earlier_runs_del_still_runs_before_its_own_del(
    node: Node,
) -> None:
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("a"), node.recorder_network("b"))
    netns = node.new_netns()
    container = new_container_id()
    await _parallel_engine(node).add(node.request(Command.ADD, container, netns, conf))
    with pytest.raises(Crashed):
        await _parallel_engine(node, CrashAt(Point.DEL_AFTER_BEGIN)).delete(
            node.request(Command.DEL, container, netns, conf)
        )
    orphan = await asyncio.create_subprocess_exec(
        "sleep",
        "300",
        env={"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "DEL", DELEGATE_MARKER: f"{container}/net1"},
        start_new_session=True,
    )
    try:
        seen: Path = node.root / "del-saw"
        (node.bin_dir / "recorder").write_text(GATE.format(pid=orphan.pid, log=seen))
        node.restart()

        await _parallel_engine(node).delete(node.request(Command.DEL, container, netns, conf))

        lines = dict(line.split() for line in (await asyncio.to_thread(seen.read_text)).splitlines())
        assert lines["net1"] in ("Z", "gone"), "net1's DEL ran after the earlier run's DEL of it died"
        assert await asyncio.wait_for(orphan.wait(), 5) == -signal.SIGKILL
        assert pending(node.checkpoint(container)) == []
    finally:
        if orphan.returncode is None:
            orphan.kill()
            await orphan.wait()


async def test_only_a_del_that_an_earlier_one_began_looks_for_plugins_left_running(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = node.conf(node.recorder_network("cluster"), node.recorder_network("a"))
    failing = node.conf("cluster", node.recorder_network("b", fail={"code": 11, "msg": "busy"}, failOn="DEL"))
    deleted, pending_one = new_container_id(), new_container_id()
    engine = _parallel_engine(node)
    await engine.add(node.request(Command.ADD, deleted, node.new_netns(), clean))
    await engine.add(node.request(Command.ADD, pending_one, node.new_netns(), failing))
    scans = _scans(monkeypatch)

    await engine.delete(node.request(Command.DEL, deleted, None, clean))
    with pytest.raises(CniError):
        await engine.delete(node.request(Command.DEL, pending_one, None, failing))

    assert scans == [], "a DEL of attachments no DEL began scans nothing"
    assert pending(node.checkpoint(pending_one)) == ["net1"]

    with pytest.raises(CniError):  # the runtime's retry
        await engine.delete(node.request(Command.DEL, pending_one, None, failing))

    assert scans == [{f"{pending_one}/net1"}], "the retry of a failed DEL looks for its plugins first"
