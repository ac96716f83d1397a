"""When a spooled DEL was written, for an entry whose name does not say it (invariant 7), in process:
real store, plugins and netns. Such an entry's time is its modification time, which a tmpfs (a
``spoolDir`` under /run) keeps whatever it is set to, past year 9999 or before year 1 too: a time
``datetime`` cannot hold must not fail the entry, whose DEL would then never run.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.daemon import spool
from tests.core.support import Node
from tests.core.test_spool_replay import attached, daemon_config, spool_entry

BEYOND_DATETIME_NS = 10**25
"""About the year 317 million: a modification time a tmpfs keeps, and ``datetime`` cannot hold."""


@pytest.fixture
def tmpfs_spool(tmp_path: Path) -> Iterator[Path]:
    """A spool directory on a tmpfs of its own (ext4 would clamp the times the tests set)."""
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


async def _replayed_entry_written_at(
    node: Node, spool_dir: Path, written_ns: int
) -> tuple[str, Path, spool.SpoolReport]:
    """A sandbox recorded, a DEL of it spooled by hand (a name not the shim's: its time is the
    file's) and dated ``written_ns``, then the replay: the container, the entry and the report."""
    container = await attached(node)
    entry = spool_entry(spool_dir, container, name=f"del-by-hand-{container}.json")
    os.utime(entry, ns=(written_ns, written_ns))
    assert entry.stat().st_mtime_ns == written_ns  # kept as set: the case under test
    report = await spool.replay(
        spool_dir=spool_dir,
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
    )
    return container, entry, report


async def test_an_entry_written_beyond_the_year_9999_is_replayed(node: Node, tmpfs_spool: Path) -> None:
    """Later than any ADD: the DEL is the recorded sandbox's, and runs."""
    container, entry, report = await _replayed_entry_written_at(node, tmpfs_spool, BEYOND_DATETIME_NS)

    assert report.failed == []
    assert report.replayed == [entry.name]
    assert not entry.exists()
    assert node.checkpoint(container) is None


async def test_an_entry_written_before_the_year_1_is_older_than_the_recorded_sandbox(
    node: Node, tmpfs_spool: Path
) -> None:
    """Earlier than any ADD: the DEL was meant for an earlier sandbox under that ID, and is dropped."""
    container, entry, report = await _replayed_entry_written_at(node, tmpfs_spool, -BEYOND_DATETIME_NS)

    assert report.failed == []
    assert report.superseded == [entry.name]
    assert not entry.exists()
    assert node.checkpoint(container) is not None
