"""A sandbox whose netns path cannot be looked at (here: a looping symlink, ELOOP) is not gone.

It proves nothing, so CHECK and a hot-plugged delegate are answered "try again later" (code 11),
not "netns gone" (101), and nothing runs; a DEL, which must terminate (invariant 5b), runs without
the namespace it cannot identify (releasing IPAM), for a recorded sandbox and for upstream's cache.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from app.cni.types import CniError, ErrorCode, IfName
from tests.core.support import (
    Command,
    Netns,
    Node,
    delegate_lines,
    hot_recorder_plan,
    new_container_id,
    pending,
)


@dataclass
class LinkedNetns(Netns):
    """A namespace reached through ``<via>/ns``, a symlink; ``loop`` turns ``<via>`` into a symlink
    to itself, so the path answers ELOOP while the namespace lives on."""

    via: Path = Path()

    @property
    def path(self) -> str:
        return str(self.via / "ns")

    def loop(self) -> None:
        (self.via / "ns").unlink()
        self.via.rmdir()
        self.via.symlink_to(self.via.name)


def linked_netns(node: Node, tmp_path: Path) -> LinkedNetns:
    real = node.new_netns()
    via = tmp_path / f"via-{real.name}"
    via.mkdir()
    (via / "ns").symlink_to(real.path)
    return LinkedNetns(real.name, via=via)


def leases(node: Node, network: str) -> list[str]:
    return [p.name for p in (node.ipam_dir / network).iterdir() if p.name.startswith("10.")]


async def test_check_of_a_netns_that_cannot_be_looked_at_is_try_again_not_gone(
    node: Node, tmp_path: Path
) -> None:
    conf = node.conf(node.recorder_network("cluster"))
    engine = node.engine()
    container = new_container_id()
    netns = linked_netns(node, tmp_path)
    await engine.add(node.request(Command.ADD, container, netns, conf))
    netns.loop()

    with pytest.raises(CniError) as refused:
        await engine.check(node.request(Command.CHECK, container, netns, conf))

    assert refused.value.code == ErrorCode.TRY_AGAIN_LATER
    assert netns.path in refused.value.msg
    assert [call[0] for call in node.calls()] == ["ADD"]


async def test_a_hot_plug_into_a_netns_that_cannot_be_looked_at_is_try_again_and_runs_nothing(
    node: Node, tmp_path: Path
) -> None:
    conf = node.conf(node.recorder_network("cluster"))
    engine = node.engine()
    container = new_container_id()
    netns = linked_netns(node, tmp_path)
    request = node.request(Command.ADD, container, netns, conf)
    await engine.add(request)
    netns.loop()
    plan = hot_recorder_plan(node)

    with pytest.raises(CniError) as refused:
        await engine.attach_delegate(replace(request, ifname=IfName("net1")), plan)

    assert refused.value.code == ErrorCode.TRY_AGAIN_LATER
    assert pending(node.checkpoint(container)) == ["eth0"]
    assert node.calls() == [("ADD", "cluster", "eth0")]


async def test_del_of_a_sandbox_whose_netns_cannot_be_looked_at_terminates_and_releases_its_lease(
    node: Node, tmp_path: Path
) -> None:
    conf = node.conf(node.bridge_network("cluster", subnet="10.99.9.0/24"))
    engine = node.engine()
    container = new_container_id()
    netns = linked_netns(node, tmp_path)
    await engine.add(node.request(Command.ADD, container, netns, conf))
    assert leases(node, "cluster")
    netns.loop()

    await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert node.checkpoint(container) is None
    assert delegate_lines(node.history(container), "DEL") == [("eth0", "runtime", "ok")]
    assert leases(node, "cluster") == []


async def test_an_upstream_cached_del_whose_netns_cannot_be_looked_at_terminates(
    node: Node, tmp_path: Path
) -> None:
    container = new_container_id()
    netns = linked_netns(node, tmp_path)
    netns.loop()
    bridge = {
        "cniVersion": "1.0.0",
        "name": "upstream-bridge",
        "type": "bridge",
        "bridge": "mpycbrnone0",
        "ipam": {"type": "host-local", "subnet": "10.99.10.0/24", "dataDir": str(node.ipam_dir)},
    }
    cache = node.write_upstream_cache(container, network=bridge, ifname="eth0", netns=netns.path)
    conf = node.conf(node.recorder_network("cluster"))

    await node.engine().delete(node.request(Command.DEL, container, netns, conf))

    assert not cache.exists()
    assert delegate_lines(node.history(container), "DEL") == [("eth0", "runtime", "ok")]
