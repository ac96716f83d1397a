"""How a spool replay ends (invariant 7): not at the first entry whose DEL raised a surprise, and
not by starting one more DEL once the daemon is stopping. In process: real store, plugins, netns.

Every entry not replayed stays in the spool, so the next replay (the next GC pass, or the next
daemon before it reports ready) runs it: nothing is dropped either way.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from app.cni.types import ErrorCode
from app.daemon import spool
from app.daemon.startup import Daemon
from app.gc.collector import GarbageCollector
from app.metrics import REGISTRY
from app.settings import Settings
from tests.core.support import Node, SurpriseAtFirstDel
from tests.core.test_gc_robustness import NO_PODS
from tests.core.test_spool_entries import spooled_name
from tests.core.test_spool_replay import attached, daemon_config, spool_entry


def unexpected_spool_errors() -> float:
    value = REGISTRY.get_sample_value("multus_py_engine_unexpected_errors_total", {"step": "spool"})
    return value or 0.0


async def test_a_surprise_in_one_spooled_del_keeps_its_entry_and_does_not_end_the_replay(
    node: Node,
) -> None:
    """A DEL raising what no DEL path expects (a bug, a failed write) raised out of the replay: the
    entries after it were not replayed, and at start-up the daemon stopped (exit 1, and again at
    every restart while the entry stays)."""
    directory = node.root / "spool"
    first, second = await attached(node), await attached(node)
    now = time.time_ns()
    first_entry = spool_entry(directory, first, name=spooled_name(now, first))
    second_entry = spool_entry(directory, second, name=spooled_name(now + 1, second))
    counted = unexpected_spool_errors()

    report = await spool.replay(
        spool_dir=directory,
        engine=node.engine(crash=SurpriseAtFirstDel()),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
    )

    [(failed, error)] = report.failed
    assert failed == first_entry.name
    assert error.code == ErrorCode.INTERNAL
    assert first_entry.exists(), "kept: the next replay runs it again"
    assert report.replayed == [second_entry.name]
    assert node.checkpoint(second) is None
    assert unexpected_spool_errors() == counted + 1

    again = await spool.replay(
        spool_dir=directory,
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
        retry_now=True,  # as an operator's pass: a periodic one waits for the entry's backoff
    )

    assert again.replayed == [first_entry.name]
    assert node.checkpoint(first) is None


async def test_a_replay_told_to_stop_starts_no_further_del_and_keeps_the_entries_left(node: Node) -> None:
    """Nothing told a replay the daemon was stopping: a long one (thousands of entries) went on
    DELing, at start-up past the restart marker's ``until``, on a GC pass until the grace ran out
    and cancelled it in the middle of a teardown."""
    directory = node.root / "spool"
    first, second = await attached(node), await attached(node)
    now = time.time_ns()
    first_entry = spool_entry(directory, first, name=spooled_name(now, first))
    second_entry = spool_entry(directory, second, name=spooled_name(now + 1, second))

    def stop() -> bool:
        """The daemon is told to stop while the first entry's DEL runs: true once it is done."""
        return node.checkpoint(first) is None

    report = await spool.replay(
        spool_dir=directory,
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
        stop=stop,
    )

    assert report.replayed == [first_entry.name]
    assert node.checkpoint(first) is None
    assert second_entry.exists(), "left for the next daemon's replay"
    assert node.checkpoint(second) is not None, "its DEL was never started"


async def test_a_periodic_pass_begun_as_the_daemon_stops_neither_replays_nor_collects(
    node: Node, tmp_path: Path
) -> None:
    """The daemon's periodic pass (spool replay, then GC) had no look at the stop: one running
    when the daemon began to stop went on replaying and tearing orphans down one after another
    until the shutdown's grace cancelled it in the middle of a teardown. The collector's own loop
    still has no such look; the pass does not start it once the daemon is stopping."""
    directory = node.root / "spool"
    spooled, orphaned = await attached(node), await attached(node)
    entry = spool_entry(directory, spooled)
    engine = node.engine()
    collector = GarbageCollector(engine=engine, db=node.db, pods=NO_PODS)
    settings = Settings(raw=daemon_config(node), socket_dir=tmp_path / "socket", spool_dir=directory)
    (tmp_path / "socket").mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        daemon = Daemon(settings, sock)
        daemon.request_stop()

        await daemon._collect_garbage(collector, engine)

    assert entry.exists(), "left for the next daemon's replay"
    assert node.checkpoint(spooled) is not None
    assert node.checkpoint(orphaned) is not None, "no teardown begun while stopping"
