"""The daemon's replay of DELs the shim spooled (invariant 7), in process: real store, real plugins.

Each entry is the exact body a shim would have posted, written where the shim spools it; ``replay``
runs it as the daemon does at start-up and on every GC pass.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from app.attach.requests import Command
from app.daemon import spool
from app.shim import shim
from tests.core.support import Node, new_container_id

SHIM_CONF = {"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus-shim"}


def spool_entry(
    directory: Path, container_id: str, *, name: str = "", conf: dict[str, Any] | None = None
) -> Path:
    environment = {
        "CNI_COMMAND": "DEL",
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": "",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a",
        "CNI_PATH": "/opt/cni/bin",
    }
    config = base64.b64encode(json.dumps(conf or SHIM_CONF).encode()).decode()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / (name or f"del-{time.time_ns()}-1-{container_id}.json")  # as the shim names it
    path.write_text(json.dumps({"env": environment, "config": config}))
    return path


def daemon_config(node: Node, **extra: Any) -> dict[str, Any]:
    return {
        **extra,
        "clusterNetwork": node.recorder_network("cluster"),
        "confDir": str(node.conf_dir),
        "binDir": str(node.bin_dir),
        "cniDir": str(node.cni_dir),
    }


async def test_a_spooled_del_of_an_upstream_sandbox_that_fails_is_kept_for_the_next_replay(
    node: Node,
) -> None:
    """No checkpoint owns the retry of a DEL replayed from upstream's cache: the entry must."""
    container = new_container_id()
    failing = {
        "cniVersion": "1.0.0",
        "name": "upstream-cluster",
        "type": "recorder",
        "recorder": {"log": str(node.recorder_log), "fail": {"code": 11, "msg": "later"}},
    }
    cache = node.write_upstream_cache(container, network=failing, ifname="eth0", netns="")
    directory = node.root / "spool"
    entry = spool_entry(directory, container)

    report = await spool.replay(
        spool_dir=directory,
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
    )

    assert [name for name, _ in report.failed] == [entry.name]
    assert cache.exists()
    assert node.checkpoint(container) is None
    assert entry.exists(), "the DEL failed and nothing else records it: dropping the entry loses it"


async def test_a_spooled_del_with_a_container_id_no_add_could_use_is_rejected_not_raised(
    node: Node,
) -> None:
    """A malformed entry is set aside; it must not fail start-up (a crash loop) or every GC pass."""
    directory = node.root / "spool"
    bad = spool_entry(directory, "bad/id", name="del-1700000000000000000-1-bad.json")
    container = new_container_id()
    good = spool_entry(directory, container, name=f"del-1700000000000000001-1-{container}.json")

    report = await spool.replay(
        spool_dir=directory,
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
    )

    assert not bad.exists()
    assert [name for name, _ in report.rejected] == [bad.name]
    assert bad.with_name(bad.name + spool.REJECTED_SUFFIX).exists()
    assert report.replayed == [good.name]
    assert not good.exists()


async def test_two_replays_at_once_take_turns_each_entry_deled_once_none_rejected(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """The periodic pass and an operator's ``POST /gc`` may replay at the same moment: the second
    must not read an entry the first is DELing, then fail to set it aside (a spurious error) or DEL
    the sandbox again."""
    directory = node.root / "spool"
    containers = [await attached(node) for _ in range(3)]
    entries = [spool_entry(directory, container) for container in containers]
    engine = node.engine()

    def replay() -> Awaitable[spool.SpoolReport]:
        return spool.replay(
            spool_dir=directory,
            engine=engine,
            daemon_config=daemon_config(node),
            shim_default_dir=node.root / "shim-default",
        )

    with caplog.at_level(logging.WARNING, logger=spool.log.name):
        first, second = await asyncio.gather(replay(), replay())

    assert first.replayed == [entry.name for entry in entries]
    assert (second.replayed, second.rejected, second.failed) == ([], [], [])
    # asyncio's debug mode (tests/conftest.py) warns of a slow step on a loaded machine: ours only
    assert [record.getMessage() for record in caplog.records if record.name.startswith("app.")] == []
    assert sorted(directory.iterdir()) == []
    dels = [call for call in node.calls() if call[0] == "DEL"]
    assert len(dels) == len(containers), "each sandbox DELed once"


async def test_an_entry_gone_since_it_was_listed_is_passed_over_not_rejected(
    node: Node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another daemon sharing the shim's default directory may replay and remove an entry between
    this one's listing and its read: nothing is left to set aside."""
    directory = node.root / "spool"
    entry = spool_entry(directory, new_container_id())
    listed = spool.pending
    listing: list[Path] = []

    def pending_then_gone(path: Path) -> list[Path]:
        listing.extend(listed(path))
        for each in listing:
            each.unlink()
        return listing

    monkeypatch.setattr(spool, "pending", pending_then_gone)
    with caplog.at_level(logging.WARNING, logger=spool.log.name):
        report = await spool.replay(
            spool_dir=directory,
            engine=node.engine(),
            daemon_config=daemon_config(node),
            shim_default_dir=node.root / "shim-default",
        )

    assert listing == [entry]
    assert [record.getMessage() for record in caplog.records if record.name.startswith("app.")] == []
    assert (report.replayed, report.rejected, report.failed) == ([], [], [])
    assert sorted(directory.iterdir()) == []


# --- The shim's default directory (a shim conf without spoolDir) ---------------------------------------


def test_the_daemon_looks_for_the_shims_default_spool_directory_where_the_shim_writes_it() -> None:
    assert str(spool.SHIM_DEFAULT_SPOOL_DIR) == shim.DEFAULT_SPOOL_DIR
    assert os.path.normpath(spool.SHIM_DEFAULT_SOCKET_DIR) == os.path.normpath(shim.DEFAULT_SOCKET_DIR)


def test_the_daemon_finds_an_entry_by_as_much_of_the_container_id_as_the_shim_names_it_by() -> None:
    assert spool.SPOOL_NAME_ID_CHARS == shim.SPOOL_NAME_ID_CHARS


async def attached(node: Node) -> str:
    """A sandbox the checkpoint holds, attached to the recorder's cluster network."""
    container = new_container_id()
    conf = node.conf(node.recorder_network(f"cluster-{container[:6]}"))
    await node.engine().add(node.request(Command.ADD, container, node.new_netns(), conf))
    assert node.checkpoint(container) is not None
    return container


async def test_a_del_spooled_in_the_shims_default_directory_is_replayed_besides_the_own_one(
    node: Node,
) -> None:
    """Static mode: a hand-written shim conf names no spoolDir, the daemon's spoolDir is elsewhere."""
    own, default = node.root / "own-spool", node.root / "shim-default"
    container = await attached(node)
    entry = spool_entry(default, container)

    report = await spool.replay(
        spool_dir=own, engine=node.engine(), daemon_config=daemon_config(node), shim_default_dir=default
    )

    assert report.replayed == [entry.name]
    assert not entry.exists()
    assert node.checkpoint(container) is None


async def test_entries_of_the_shared_default_directory_addressed_to_another_daemon_are_left_to_it(
    node: Node,
) -> None:
    """A DEL of a sandbox this daemon never recorded, spooled by a shim looking for another daemon's
    socket, finds nothing here: replaying it would drop it for the daemon that holds the sandbox."""
    own, default = node.root / "own-spool", node.root / "shim-default"
    other = {**SHIM_CONF, "daemonSocketDir": str(node.root / "other-daemon")}
    theirs = spool_entry(default, new_container_id(), name="del-1700000000000000000-1-a.json", conf=other)
    unaddressed = {**SHIM_CONF, "daemonSocketDir": 5}  # the shim spooled it: its conf was unusable
    nobodys = spool_entry(
        default, new_container_id(), name="del-1700000000000000001-1-b.json", conf=unaddressed
    )
    torn = default / "del-1700000000000000002-1-torn.json"
    torn.write_bytes(b'{"env": {"CNI_COMM')
    ours = await attached(node)  # addressed elsewhere too, but its sandbox is ours
    mine = spool_entry(default, ours, name=f"del-{time.time_ns()}-1-{ours}.json", conf=other)

    report = await spool.replay(
        spool_dir=own, engine=node.engine(), daemon_config=daemon_config(node), shim_default_dir=default
    )

    assert report.replayed == [mine.name]
    assert report.rejected == []
    assert sorted(default.iterdir()) == [theirs, nobodys, torn]
    assert node.checkpoint(ours) is None


async def test_a_daemon_whose_own_directory_is_the_default_one_takes_only_its_own_entries(
    node: Node,
) -> None:
    """Its own directory is shared too: entries addressed elsewhere stay; those whose address cannot
    be read are its own, malformed ones rejected as always."""
    default = node.root / "shim-default"
    other = {**SHIM_CONF, "daemonSocketDir": str(node.root / "other-daemon")}
    theirs = spool_entry(default, new_container_id(), name="del-1700000000000000000-1-a.json", conf=other)
    unaddressed = {**SHIM_CONF, "daemonSocketDir": 5}
    nobodys = spool_entry(
        default, new_container_id(), name="del-1700000000000000001-1-b.json", conf=unaddressed
    )
    torn = default / "del-1700000000000000002-1-torn.json"
    torn.write_bytes(b'{"env": {"CNI_COMM')
    addressed = {**SHIM_CONF, "daemonSocketDir": str(node.root / "run") + "/"}
    ours = spool_entry(default, new_container_id(), name="del-1700000000000000003-1-c.json", conf=addressed)

    report = await spool.replay(
        spool_dir=default,
        engine=node.engine(),
        daemon_config=daemon_config(node, socketDir=str(node.root / "run")),
        shim_default_dir=default,
    )

    assert report.replayed == [nobodys.name, ours.name]
    assert [name for name, _ in report.rejected] == [torn.name]
    assert sorted(path.name for path in default.iterdir()) == [theirs.name, torn.name + spool.REJECTED_SUFFIX]


@pytest.mark.parametrize("mode", [0o777, 0o720])
async def test_a_default_directory_others_may_write_to_is_not_replayed(node: Node, mode: int) -> None:
    """Anyone able to write there could tear down any pod of the node."""
    own, default = node.root / "own-spool", node.root / "shim-default"
    container = await attached(node)
    entry = spool_entry(default, container)
    default.chmod(mode)

    report = await spool.replay(
        spool_dir=own, engine=node.engine(), daemon_config=daemon_config(node), shim_default_dir=default
    )

    assert report.replayed == []
    assert entry.exists()
    assert node.checkpoint(container) is not None


@pytest.mark.parametrize("mode", [0o777, 0o720], ids=["0777", "0720"])
async def test_an_own_spool_dir_others_may_write_to_is_named_and_its_own_entries_replayed(
    node: Node, mode: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The shim spools no DEL there any more (code 11 instead): the operator is told why, at every
    replay, and what this daemon's user spooled there before is still replayed."""
    own = node.root / "own-spool"
    container = await attached(node)
    entry = spool_entry(own, container)
    own.chmod(mode)

    with caplog.at_level(logging.ERROR, logger=spool.__name__):
        report = await spool.replay(
            spool_dir=own, engine=node.engine(), daemon_config=daemon_config(node), shim_default_dir=own
        )

    assert report.replayed == [entry.name]
    [record] = [record for record in caplog.records if record.name == spool.__name__]
    assert record.getMessage().startswith(f"spoolDir {own} must belong to uid {os.geteuid()}")
    assert f"mode {mode:o}" in record.getMessage()


async def test_a_private_own_spool_dir_is_not_named(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    own = node.root / "own-spool"
    spool_entry(own, new_container_id())

    with caplog.at_level(logging.ERROR, logger=spool.__name__):
        await spool.replay(
            spool_dir=own, engine=node.engine(), daemon_config=daemon_config(node), shim_default_dir=own
        )

    assert [record for record in caplog.records if record.name == spool.__name__] == []


async def test_a_missing_default_directory_is_no_error(node: Node) -> None:
    own = node.root / "own-spool"
    container = new_container_id()
    entry = spool_entry(own, container)

    report = await spool.replay(
        spool_dir=own,
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "nowhere" / "spool",
    )

    assert report.replayed == [entry.name]


async def test_a_spooled_del_whose_conf_is_unusable_is_replayed_not_rejected(node: Node) -> None:
    """A DEL needs nothing but the checkpoint: set aside for its conf (a key of the wrong type),
    the entry's sandbox stayed recorded with its interfaces, and the runtime had heard success."""
    own = node.root / "own-spool"
    container = await attached(node)
    entry = spool_entry(own, container, conf={**SHIM_CONF, "delegates": "not a list"})

    report = await spool.replay(
        spool_dir=own, engine=node.engine(), daemon_config=daemon_config(node), shim_default_dir=own
    )

    assert report.rejected == []
    assert report.replayed == [entry.name]
    assert node.checkpoint(container) is None


@pytest.mark.parametrize(
    "dropped",
    [{"x": "a\u0000b"}, {"x": "\ud800"}],
    ids=["nul", "lone-surrogate"],
)
async def test_a_del_whose_conf_the_daemon_drops_is_not_taken_from_the_shared_default_directory(
    node: Node, dropped: dict[str, str]
) -> None:
    """The daemon replays a DEL without a conf it cannot use: its address is then unknown, not the
    default socket directory's. Read as the default's, a daemon of that socket directory took
    another daemon's DEL from the shared directory, found nothing of it, and removed the entry: the
    daemon holding the sandbox never got its DEL."""
    own, default = node.root / "own-spool", node.root / "shim-default"
    addressed_elsewhere = {**SHIM_CONF, "daemonSocketDir": str(node.root / "other-daemon"), **dropped}
    theirs = spool_entry(
        default, new_container_id(), name="del-1700000000000000000-1-a.json", conf=addressed_elsewhere
    )

    report = await spool.replay(
        spool_dir=own, engine=node.engine(), daemon_config=daemon_config(node), shim_default_dir=default
    )

    assert report.replayed == []
    assert sorted(default.iterdir()) == [theirs]
