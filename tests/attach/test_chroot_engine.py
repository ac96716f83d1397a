"""chrootDir through the engine: ADD runs in today's root and records it; CHECK and DEL replay in the
recorded root even when the engine's setting has changed since (a daemon restarted without it).

In process, with the real store and real plugins: the cluster network (bridge + host-local + tuning)
and a macvlan network, found only in the host root's plugin directory (``tests/hostroot.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from app.attach import netconf
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.networks import NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni.types import CniError, ContainerId, ErrorCode, IfName
from app.store import checkpoints, history
from app.store.database import Database
from app.store.records import PodIdentity
from tests.cni.support import Netns, addresses, links, run, unique
from tests.hostroot import HostRoot, host_root

PLUGIN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


@pytest.fixture
def hostroot(tmp_path: Path) -> Iterator[HostRoot]:
    with host_root(tmp_path) as root:
        yield root


@pytest.fixture
def netns() -> Iterator[Netns]:
    namespace = Netns(unique("mpe-"))
    subprocess.run(["ip", "netns", "add", namespace.name], check=True)
    try:
        yield namespace
    finally:
        subprocess.run(["ip", "netns", "del", namespace.name], check=False, capture_output=True)


@pytest.fixture
def links_made() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:
        subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(tmp_path / "state" / "state.db")
    try:
        yield database
    finally:
        database.close()


async def uplinks(links_made: list[str]) -> tuple[str, str]:
    """A name for the cluster network's bridge, and a veth (up) for macvlan's master: both deleted
    after the test."""
    bridge, master = unique("mpeb"), unique("mpem")
    links_made.extend([bridge, master])
    await run("ip", "link", "add", master, "type", "veth", "peer", "name", f"{master}p")
    await run("ip", "link", "set", master, "up")
    return bridge, master


def _conf(tmp_path: Path, *, bin_dir: str, bridge: str, master: str) -> netconf.MultusNetConf:
    conf_dir = tmp_path / "multus.d"
    conf_dir.mkdir()
    ipam = {"type": "host-local", "dataDir": str(tmp_path / "ipam")}
    cluster = {
        "cniVersion": "1.0.0",
        "name": "cluster",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipam": {**ipam, "subnet": "10.95.0.0/24"},
            },
            {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}},
        ],
    }
    mv: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "mv",
        "type": "macvlan",
        "master": master,
        "ipam": {**ipam, "subnet": "10.94.0.0/24"},
    }
    (conf_dir / "10-cluster.conflist").write_text(json.dumps(cluster))
    (conf_dir / "20-mv.conf").write_text(json.dumps(mv))
    config = {
        "binDir": bin_dir,
        "confDir": str(conf_dir),
        "clusterNetwork": str(conf_dir / "10-cluster.conflist"),
        "defaultNetworks": ["mv"],
    }
    return netconf.parse(
        netconf.merge({"cniVersion": "1.0.0", "name": "m"}, config), stdin_cni_version="1.0.0"
    )


def _engine(db: Database, root: str) -> AttachEngine:
    settings = EngineSettings(plugin_env=PLUGIN_ENV, chroot_dir=root, delegate_timeout=30.0)
    return AttachEngine(db=db, resolver=NetworkResolver(), boot_id="boot", settings=settings)


def _request(
    command: Command, container_id: str, netns: Netns, conf: netconf.MultusNetConf
) -> SandboxRequest:
    return SandboxRequest(
        command=command,
        container_id=ContainerId(container_id),
        netns=netns.path,
        ifname=IfName("eth0"),
        cni_args=(),
        pod=PodIdentity("ns", "pod", ""),
        conf=conf,
    )


async def test_the_recorded_root_is_where_check_and_del_run_whatever_todays_setting(
    hostroot: HostRoot, tmp_path: Path, netns: Netns, db: Database, links_made: list[str]
) -> None:
    bridge, master = await uplinks(links_made)
    conf = _conf(tmp_path, bin_dir=hostroot.bin_dir, bridge=bridge, master=master)
    container = unique("ctr")
    in_root, without_root = _engine(db, hostroot.chroot_dir), _engine(db, "")

    result = await in_root.add(_request(Command.ADD, container, netns, conf))
    record = await db.read(partial(checkpoints.load_sandbox, container_id=container))
    inside = await links(netns)
    # the daemon restarts without chrootDir: the attachment still names the root its delegates ran in
    await without_root.check(_request(Command.CHECK, container, netns, conf))
    await without_root.delete(_request(Command.DEL, container, netns, conf))

    assert record is not None
    assert [(a.ifname, a.root) for a in record.attachments] == [
        ("eth0", hostroot.chroot_dir),
        ("net1", hostroot.chroot_dir),
    ]
    assert result["ips"][0]["address"] in addresses(inside["eth0"])
    assert "net1" in inside
    assert set(await links(netns)) == {"lo"}
    assert [p for p in (tmp_path / "ipam").rglob("10.*")] == []
    assert await db.read(partial(checkpoints.load_sandbox, container_id=container)) is None


async def test_without_chroot_the_plugins_only_the_root_has_are_not_found(
    hostroot: HostRoot, tmp_path: Path, netns: Netns, db: Database
) -> None:
    conf = _conf(tmp_path, bin_dir=hostroot.bin_dir, bridge=unique("mpeb"), master="unused0")

    with pytest.raises(CniError) as caught:
        await _engine(db, "").add(_request(Command.ADD, unique("ctr"), netns, conf))

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert f'failed to find plugin "bridge" in path [{hostroot.bin_dir}]' in caught.value.msg
    assert set(await links(netns)) == {"lo"}


def _single_plugin_conf(tmp_path: Path, *, bin_dir: str, plugin: str) -> netconf.MultusNetConf:
    cluster = tmp_path / "cluster.conf"
    cluster.write_text(json.dumps({"cniVersion": "1.0.0", "name": "cluster", "type": plugin}))
    config = {"binDir": bin_dir, "confDir": str(tmp_path), "clusterNetwork": str(cluster)}
    return netconf.parse(
        netconf.merge({"cniVersion": "1.0.0", "name": "m"}, config), stdin_cni_version="1.0.0"
    )


async def test_a_plugin_the_root_cannot_execute_refuses_the_add_before_anything_is_recorded(
    hostroot: HostRoot, tmp_path: Path, netns: Netns, db: Database
) -> None:
    # before: looked up as a plain file, its intent committed, then exec failed (999, EACCES)
    plugin = f"{hostroot.bin_dir}/noexec"
    hostroot.inside(plugin).write_text("#!/bin/sh\necho '{}'\n")
    conf = _single_plugin_conf(tmp_path, bin_dir=hostroot.bin_dir, plugin="noexec")
    engine, container = _engine(db, hostroot.chroot_dir), unique("ctr")

    with pytest.raises(CniError) as caught:
        await engine.add(_request(Command.ADD, container, netns, conf))
    await engine.delete(_request(Command.DEL, container, netns, conf))  # the runtime's DEL ends
    lines = await db.read(partial(history.for_container, container_id=container))

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert f"found at {plugin} inside chrootDir {hostroot.chroot_dir} is not executable" in caught.value.msg
    assert [(line.command, line.step, line.outcome) for line in lines] == [
        ("ADD", "request", "error"),
        ("DEL", "request", "ok"),
    ], "no delegate was ever recorded or run"
    assert await db.read(partial(checkpoints.load_sandbox, container_id=container)) is None


async def test_a_del_whose_recorded_root_is_gone_runs_in_todays_root(
    tmp_path: Path, netns: Netns, db: Database, links_made: list[str]
) -> None:
    """The host root a delegate ran in was unmounted, and the daemon restarted with the host
    mounted elsewhere (or with no chrootDir). The DEL insisted on the recorded root and failed,
    "chrootDir ... is not a directory", at every retry for as long as the node ran (invariant 5b)."""
    bridge, master = await uplinks(links_made)
    container = unique("ctr")
    with host_root(tmp_path / "first") as first:
        conf = _conf(tmp_path, bin_dir=first.bin_dir, bridge=bridge, master=master)
        await _engine(db, first.chroot_dir).add(_request(Command.ADD, container, netns, conf))
        assert "net1" in await links(netns)
    gone = not await asyncio.to_thread(os.path.exists, first.chroot_dir)
    assert gone, "its holder is gone, and its mounts with it"

    with host_root(tmp_path / "second", bin_dir=first.bin_dir) as second:
        await _engine(db, second.chroot_dir).delete(_request(Command.DEL, container, netns, conf))

    assert set(await links(netns)) == {"lo"}
    assert [p for p in (tmp_path / "ipam").rglob("10.*")] == []
    assert await db.read(partial(checkpoints.load_sandbox, container_id=container)) is None


async def test_a_del_whose_recorded_root_is_gone_and_still_todays_stays_pending_naming_it(
    tmp_path: Path, netns: Netns, db: Database, links_made: list[str]
) -> None:
    """Today's chrootDir is that same vanished root: nothing else to run in, so the DEL fails
    naming it and stays pending until the root is back (not run in the daemon's own root)."""
    bridge, master = await uplinks(links_made)
    container = unique("ctr")
    with host_root(tmp_path / "first") as first:
        conf = _conf(tmp_path, bin_dir=first.bin_dir, bridge=bridge, master=master)
        engine = _engine(db, first.chroot_dir)
        await engine.add(_request(Command.ADD, container, netns, conf))

    with pytest.raises(CniError) as caught:
        await engine.delete(_request(Command.DEL, container, netns, conf))

    assert f"chrootDir {first.chroot_dir} is not a directory" in str(caught.value)
    record = await db.read(partial(checkpoints.load_sandbox, container_id=container))
    assert record is not None
    assert record.state == "deleting"
