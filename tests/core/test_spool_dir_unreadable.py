"""A replay whose own ``spoolDir`` cannot be listed reports it and goes on with the shim's default
directory: it raised, failing start-up (the daemon exited 1) and every GC pass."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.daemon import spool
from tests.core.support import Node, new_container_id
from tests.core.test_spool_replay import daemon_config, spool_entry


async def test_an_own_spool_dir_too_long_to_list_is_reported_and_the_default_one_replayed(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    own = node.root / ("s" * 300)
    default = node.root / "shim-default"
    entry = spool_entry(default, new_container_id())  # addressed to the default socket directory

    with caplog.at_level(logging.ERROR, logger="app.daemon.spool"):
        report = await spool.replay(
            spool_dir=own, engine=node.engine(), daemon_config=daemon_config(node), shim_default_dir=default
        )

    assert [directory for directory, _ in report.unreadable] == [str(own)]
    assert report.as_json()["unreadable"] == [{"directory": str(own), "reason": "File name too long"}]
    assert report.replayed == [entry.name]
    assert any(str(own) in record.getMessage() for record in caplog.records)


async def test_a_missing_spool_dir_is_not_unreadable(node: Node) -> None:
    """Nothing was spooled yet: the shim makes the directory when it first spools."""
    report = await spool.replay(
        spool_dir=node.root / "none-yet",
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
    )

    assert report.unreadable == []


def test_a_file_is_no_spool_dir(tmp_path: Path) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("")

    assert spool._unreadable(afile) == "not a directory"
    assert spool._unreadable(afile / "spool") == "Not a directory"
