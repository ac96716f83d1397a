"""How a spool replay ends (invariant 7): not at the first entry whose DEL raised a surprise.
In process: real store, plugins, netns.

Every entry not replayed stays in the spool, so the next replay (the next GC pass, or the next
daemon before it reports ready) runs it: nothing is dropped either way.
"""

from __future__ import annotations

import time

from app.cni.types import ErrorCode
from app.daemon import spool
from app.metrics import REGISTRY
from tests.core.support import Node, SurpriseAtFirstDel
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
    )

    assert again.replayed == [first_entry.name]
    assert node.checkpoint(first) is None
