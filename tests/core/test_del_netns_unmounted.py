"""DEL of a sandbox whose netns path no longer holds a namespace (unmounted, the file left behind)."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.core.support import Command, Node, delegate_lines, new_container_id


def _cached_recorder(node: Node, container: str, *, netns: str) -> Path:
    """Upstream Multus's libcni cache of one delegate (the recorder, network ``upstream``, as
    ``eth0``) attached in ``netns``; its path."""
    recorder = {
        "cniVersion": "1.0.0",
        "name": "upstream",
        "type": "recorder",
        "recorder": {"log": str(node.recorder_log)},
    }
    return node.write_upstream_cache(container, network=recorder, ifname="eth0", netns=netns)


async def test_del_succeeds_when_the_netns_path_is_left_as_a_plain_file(node: Node) -> None:
    conf = node.conf(node.bridge_network("cluster", subnet="10.99.8.0/24"))
    engine = node.engine()
    container = new_container_id()
    netns = node.new_netns()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    await asyncio.to_thread(subprocess.run, ["umount", netns.path], check=True)  # its file stays

    await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert node.checkpoint(container) is None
    assert delegate_lines(node.history(container), "DEL") == [("eth0", "runtime", "ok")]
    assert not [p for p in (node.ipam_dir / "cluster").iterdir() if p.name.startswith("10.")]


async def test_del_succeeds_when_a_directory_of_its_netns_path_is_a_file_now(
    node: Node, tmp_path: Path
) -> None:
    """A path below a file (``ENOTDIR``) holds no namespace, and plugins refuse it ("failed to
    Statfs ...: not a directory", unlike a missing one): the DEL runs without a namespace, or it
    failed at every retry (invariant 5b)."""
    conf = node.conf(node.bridge_network("cluster", subnet="10.99.9.0/24"))
    engine = node.engine()
    container = new_container_id()
    netns = node.new_netns()
    directory = tmp_path / "netns-dir"
    directory.mkdir()
    path = directory / "ns"
    path.touch()
    await asyncio.to_thread(subprocess.run, ["mount", "--bind", netns.path, str(path)], check=True)
    add = dataclasses.replace(node.request(Command.ADD, container, netns, conf), netns=str(path))
    await engine.add(add)
    await asyncio.to_thread(subprocess.run, ["umount", str(path)], check=True)
    shutil.rmtree(directory)
    directory.write_text("")  # the path's directory is a file now

    await engine.delete(dataclasses.replace(add, command=Command.DEL))

    assert node.checkpoint(container) is None
    assert delegate_lines(node.history(container), "DEL") == [("eth0", "runtime", "ok")]
    assert not [p for p in (node.ipam_dir / "cluster").iterdir() if p.name.startswith("10.")]


@pytest.mark.parametrize(
    "netns", ["/run/netns/cni-\0x", "/run/netns/cni-\ud800"], ids=["nul", "lone-surrogate"]
)
async def test_a_cached_netns_path_holding_a_nul_is_no_namespace_to_enter(node: Node, netns: str) -> None:
    """Upstream's cache (JSON) may hold a netns path with a NUL (``\\u0000``) or a lone surrogate
    (``\\ud800``, which encodes to no bytes): no namespace can be at it and no plugin can be
    handed it, so its DEL runs without one (invariant 5b), and its history line keeps the path as
    an escape (SQLite holds UTF-8 only: the line could not be written, and the DEL failed, for
    ever)."""
    container = new_container_id()
    cache = _cached_recorder(node, container, netns=netns)
    conf = node.conf(node.recorder_network("cluster"))

    await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert node.calls() == [("DEL", "upstream", "eth0")]
    assert node.recorder_entries("DEL")[0]["env"]["CNI_NETNS"] == ""
    assert not cache.exists()


async def test_a_relative_cached_netns_path_is_no_namespace_to_enter(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A netns path is absolute (a runtime's relative one is refused: ``invalid CNI_NETNS``), but
    upstream's cache may hold anything: a relative one named whatever the daemon's working
    directory and the plugin's (``/`` in chrootDir) made of it, here the host's own namespace
    (``proc/self/ns/net``, the daemon's and the plugin's), whose interface of the DEL's name the
    plugin would have removed."""
    monkeypatch.chdir("/")
    container = new_container_id()
    cache = _cached_recorder(node, container, netns="proc/self/ns/net")
    conf = node.conf(node.recorder_network("cluster"))

    await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert node.calls() == [("DEL", "upstream", "eth0")]
    assert node.recorder_entries("DEL")[0]["env"]["CNI_NETNS"] == ""
    assert not cache.exists()


async def test_a_relative_cached_netns_path_gives_way_to_the_runtimes_netns(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for a cached path through a process the runtime's DEL does not name: the plugin enters
    the namespace the runtime's live DEL names rather than none (its interface is removed there)."""
    monkeypatch.chdir("/")
    container = new_container_id()
    _cached_recorder(node, container, netns="proc/self/ns/net")
    conf = node.conf(node.recorder_network("cluster"))
    netns = node.new_netns()

    await node.engine().delete(node.request(Command.DEL, container, netns, conf))

    assert node.recorder_entries("DEL")[0]["env"]["CNI_NETNS"] == netns.path
