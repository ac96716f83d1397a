"""Start-up recovery when a plugin process of the crashed run would not die (invariant 9)."""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from functools import partial
from typing import Any

import pytest

from app.cni import reaper
from app.daemon import spool
from app.gc.recovery import recover
from tests.core.support import Node, crashed_add_with_its_plugin_running, pending
from tests.core.test_spool_replay import daemon_config, spool_entry


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


async def test_start_up_waits_for_a_plugin_that_would_not_die_once_not_twice(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's start-up runs recovery, then replays the spooled DELs, before it reports ready
    (ADDs wait for that). The runtime's DEL of the crashed ADD was spooled while the daemon was
    down; its replay tears the sandbox down through the engine, whose teardown reaps the same
    marker again. Recovery's reaper gives up on the survivor (here at once: its deadline passed);
    the replay's, with its whole deadline, must give up at once too rather than wait that deadline
    again for a process stuck in the kernel (readiness came after two deadlines, one more per such
    sandbox). The survivor here is an ordinary process: the replay's reaper, had it waited, killed
    it and went on to DEL the sandbox; giving up, it leaves the sandbox to GC (invariant 9)."""
    conf = node.conf(node.recorder_network("a"))
    container, survivor = await crashed_add_with_its_plugin_running(node, conf, node.new_netns())
    spooled = spool_entry(node.root / "spool", container)
    calls: list[list[str]] = []
    real_reap = reaper.reap

    async def reap_recovery_gives_up_at_once(markers: Collection[str], **options: Any) -> list[reaper.Orphan]:
        calls.append(sorted(markers))
        if len(calls) == 1:  # recovery's
            return await real_reap(markers, timeout=0)
        return await real_reap(markers, **options)

    monkeypatch.setattr(reaper, "reap", reap_recovery_gives_up_at_once)
    try:
        node.restart()
        engine = node.engine()

        await recover(engine=engine, db=node.db)  # as Daemon._start: recovery, then the spool
        await spool.replay(
            spool_dir=spooled.parent,
            engine=engine,
            daemon_config=daemon_config(node),
            shim_default_dir=node.root / "shim-default",
        )

        assert calls == [[f"{container}/eth0"]] * 2
        assert [call for call in node.calls() if call[0] == "DEL"] == []  # invariant 9 holds
        assert pending(node.checkpoint(container)) == ["eth0"]  # left to GC
    finally:
        with contextlib.suppress(ProcessLookupError):
            survivor.kill()
        await survivor.wait()
