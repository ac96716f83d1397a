"""The record of the ``spoolDir``s a daemon used (``<stateDir>/spool-dirs.json``), in process: each
replay records its own, replays the earlier ones it trusts, reports those it cannot list, and forgets
those that hold nothing any more."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from app.daemon import spool
from tests.core.support import Node
from tests.core.test_spool_replay import attached, daemon_config, spool_entry


def write_record(record: Path, *directories: Path) -> None:
    record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    record.write_text(json.dumps({"spoolDirs": [str(path) for path in directories]}))


def recorded(record: Path) -> list[str]:
    directories: list[str] = json.loads(record.read_text())["spoolDirs"]
    return directories


async def test_an_earlier_spool_dir_that_cannot_be_listed_is_reported_and_stays_recorded(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    record = spool.record_path(node.root / "state")
    afile = node.root / "a-file"
    afile.write_text("")
    unreadable = afile / "spool"
    own = node.root / "spool-b"
    container = await attached(node)
    entry = spool_entry(own, container)
    write_record(record, unreadable)

    with caplog.at_level(logging.ERROR, logger="app.daemon.spool"):
        report = await spool.replay(
            spool_dir=own,
            engine=node.engine(),
            daemon_config=daemon_config(node),
            shim_default_dir=node.root / "shim-default",
            record=record,
        )

    assert report.as_json()["unreadable"] == [{"directory": str(unreadable), "reason": "Not a directory"}]
    assert report.replayed == [entry.name], "the own spoolDir is replayed all the same"
    assert recorded(record) == [str(unreadable), str(own)]
    assert any(str(unreadable) in line.getMessage() for line in caplog.records)


@pytest.mark.parametrize("mode", [0o770, 0o707])
async def test_an_earlier_spool_dir_others_may_write_to_is_not_replayed(node: Node, mode: int) -> None:
    record = spool.record_path(node.root / "state")
    exposed = node.root / "spool-a"
    container = await attached(node)
    entry = spool_entry(exposed, container)
    exposed.chmod(mode)
    write_record(record, exposed)

    report = await spool.replay(
        spool_dir=node.root / "spool-b",
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
        record=record,
    )

    assert report.replayed == []
    assert entry.exists()
    assert node.checkpoint(container) is not None
    assert recorded(record) == [str(exposed), str(node.root / "spool-b")]


async def test_an_earlier_spool_dir_holding_a_rejected_entry_stays_recorded_an_empty_one_leaves(
    node: Node,
) -> None:
    """A rejected entry is the operator's to see, and ``--purge-state`` finds it by the record."""
    record = spool.record_path(node.root / "state")
    holding, emptied, missing = node.root / "spool-a", node.root / "spool-b", node.root / "spool-c"
    spool_entry(holding, "", name="del-1-1-bad.json").write_text("{")
    emptied.mkdir(mode=0o700)
    write_record(record, holding, emptied, missing)

    report = await spool.replay(
        spool_dir=node.root / "spool-d",
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
        record=record,
    )

    assert [name for name, _ in report.rejected] == ["del-1-1-bad.json"]
    assert recorded(record) == [str(holding), str(node.root / "spool-d")]


async def test_an_unusable_record_is_set_aside_and_begun_anew(node: Node) -> None:
    record = spool.record_path(node.root / "state")
    record.parent.mkdir(mode=0o700)
    record.write_text('{"spoolDirs": ["relative"]}')

    await spool.replay(
        spool_dir=node.root / "spool-b",
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
        record=record,
    )

    assert recorded(record) == [str(node.root / "spool-b")]
    assert record.with_name(record.name + ".rejected").read_text() == '{"spoolDirs": ["relative"]}'


async def test_an_add_refused_for_a_recorded_id_runs_its_del_spooled_in_an_earlier_spool_dir(
    node: Node,
) -> None:
    record = spool.record_path(node.root / "state")
    before = node.root / "spool-a"
    container = await attached(node)
    entry = spool_entry(before, container)
    write_record(record, before, node.root / "spool-b")

    ran = await spool.replay_for(
        container,
        spool_dir=node.root / "spool-b",
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
        record=record,
    )

    assert ran
    assert not entry.exists()
    assert node.checkpoint(container) is None
