"""Start-up recovery when a plugin process of the crashed run would not die (invariant 9)."""

from __future__ import annotations

from functools import partial

import pytest

from app.cni import reaper
from app.gc.recovery import recover
from tests.core.support import Node, crashed_add_with_its_plugin_running


async def test_a_sandbox_whose_delegate_would_not_die_is_left_recorded_and_untouched(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delegate of the crashed run still running when the reaper gives up (here: a reaper whose
    deadline has passed at once) may still be attaching; a DEL now could run before its ADD ends.
    Recovery leaves the sandbox as recorded, reports it (code 11), and runs no DEL."""
    conf = node.conf(node.recorder_network("a"))
    container, survivor = await crashed_add_with_its_plugin_running(node, conf, node.new_netns())
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
