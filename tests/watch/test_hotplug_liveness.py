"""Native hot-plug gets to what the annotation asks without waiting for an edit or the resync.

An interface name the annotation asks for is taken from a nameless selection's attachment (which is
attached again under a generated name), not refused until the next edit.

Real: the emulator over HTTP, the pod/NAD watches into SQLite, the reconciler fed by the mirror's
pod commits, the engine and its checkpoint, bridge + host-local in a real netns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.attach.requests import Command
from app.sandbox.kubeapi import KubeApiEmulator
from app.store import checkpoints
from app.store.database import Database
from tests.watch.hotplug_node import Layout
from tests.watch.support import Running, eventually
from tests.watch.test_hotplug_native import (  # noqa: F401 - the layout fixture
    Node,
    _async,
    _equals,
    hotplug_node,
    layout,
    running_pod,
)


@pytest.fixture
async def node(
    running: Running,
    database: Database,
    emulator: KubeApiEmulator,
    layout: Layout,  # noqa: F811 - the fixture imported above
    netns: str,
) -> AsyncIterator[Node]:
    async with hotplug_node(running, database, emulator, layout, netns) as hot:
        yield hot


async def _networks(node: Node, container: str) -> dict[str, tuple[str, str]]:
    """interface: (network, state) of each attachment of sandbox ``container``."""
    record = await node.database.read(lambda s: checkpoints.load_sandbox(s, container_id=container))
    assert record is not None
    return {a.ifname: (a.network_name, a.state) for a in record.attachments}


async def test_a_name_the_annotation_asks_for_is_taken_from_a_nameless_selection(node: Node) -> None:
    """``hot-b@net3`` edited into ``hot-a@net3, hot-b``: hot-b, now nameless, kept net3 and
    hot-a@net3 was refused ("already used by network") until the annotation changed again."""
    pod, container = await running_pod(node, "renamed", "hot-b@net3")
    assert await node.links() == {"lo", "eth0", "net3"}

    node.annotate("renamed", "hot-a@net3, hot-b")

    attached = await eventually(
        lambda: _networks(node, container),
        lambda networks: (
            sorted(networks.values())
            == [("default/hot-a", "added"), ("default/hot-b", "added"), ("primary", "added")]
        ),
    )
    assert attached["net3"] == ("default/hot-a", "added")
    moved = next(ifname for ifname, (network, _) in attached.items() if network == "default/hot-b")
    await eventually(node.links, _equals({"lo", "eth0", "net3", moved}))
    await eventually(lambda: _async(dict(node.reconciler.pending)), _equals({}))
    await eventually(lambda: _async(node.status_interfaces("renamed")), _equals(["eth0", "net3", moved]))
    assert not node.events("FailedAddingInterface")

    await node.engine.delete(node.request(Command.DEL, pod, container))
    assert await node.links() == {"lo"}
    assert not list(node.layout.ipam_dir.rglob("10.*"))
