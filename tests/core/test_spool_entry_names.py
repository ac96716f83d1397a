"""When a spooled DEL was written, read from its entry's name (invariant 7), in process: real
store, plugins and netns. The name is the shim's, ``del-<ns>-<pid>-<container>.json``; one of
another form falls back to the file's modification time, never fails the entry.
"""

from __future__ import annotations

import os

from app.daemon import spool
from tests.core.support import Node
from tests.core.test_spool_replay import attached, daemon_config, spool_entry


async def test_an_entry_whose_name_starts_with_a_digit_int_cannot_read_is_replayed(node: Node) -> None:
    """``str.isdigit`` holds for '²', which ``int`` refuses: such a name raised ValueError, so its
    DEL never ran (the replay ended there, or, with surprises kept, failed at every pass)."""
    directory = node.root / "spool"
    container = await attached(node)
    entry = spool_entry(directory, container, name=f"del-²-4242-{container}.json")

    report = await spool.replay(
        spool_dir=directory,
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
    )

    assert report.replayed == [entry.name]
    assert report.failed == []
    assert node.checkpoint(container) is None


async def test_an_entry_another_user_wrote_is_rejected_and_its_del_never_runs(node: Node) -> None:
    """A ``spoolDir`` others can write in (one under /tmp) let any local user spool a DEL that tore
    down whatever sandbox it named: an entry the daemon's own user did not write is no shim's."""
    directory = node.root / "spool"
    container = await attached(node)
    entry = spool_entry(directory, container)
    os.chown(entry, 65534, 65534)

    report = await spool.replay(
        spool_dir=directory,
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
    )

    assert report.replayed == []
    assert [name for name, _ in report.rejected] == [entry.name]
    assert node.checkpoint(container) is not None
