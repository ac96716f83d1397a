"""Start-up recovery when a plugin process of the crashed run would not die (invariant 9)."""

from __future__ import annotations

import asyncio
import os
from functools import partial

import pytest

from app.cni import reaper
from app.cni.invoke import DELEGATE_MARKER
from app.gc.recovery import recover
from tests.core.support import Command, CrashAt, Crashed, Node, Point, new_container_id


async def test_a_sandbox_whose_delegate_would_not_die_is_left_recorded_and_untouched(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delegate of the crashed run still running when the reaper gives up (here: a reaper whose
    deadline has passed at once) may still be attaching; a DEL now could run before its ADD ends.
    Recovery leaves the sandbox as recorded, reports it (code 11), and runs no DEL."""
    conf = node.conf(node.recorder_network("a"))
    container = new_container_id()
    with pytest.raises(Crashed):
        await node.engine(crash=CrashAt(Point.ADD_AFTER_INTENT)).add(
            node.request(Command.ADD, container, node.new_netns(), conf)
        )
    survivor = await asyncio.create_subprocess_exec(
        "sleep",
        "300",
        env={"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "ADD", DELEGATE_MARKER: f"{container}/eth0"},
        start_new_session=True,
    )
    monkeypatch.setattr(reaper, "reap", partial(reaper.reap, timeout=0))
    try:
        node.restart()

        report = await recover(engine=node.engine(), db=node.db)

        assert [(failed, error.code) for failed, error in report.failed] == [(container, 11)]
        assert survivor.returncode is None
        record = node.checkpoint(container)
        assert record is not None
        assert (record.state, [(a.ifname, a.state) for a in record.attachments]) == (
            "adding",
            [("eth0", "intent")],
        )
        assert [call for call in node.calls() if call[0] == "DEL"] == []
    finally:
        survivor.kill()
        await survivor.wait()
