"""Native hot-plug's loose ends: a stuck unplug.

Real: the emulator over HTTP, the pod/NAD watches into SQLite, the reconciler fed by the mirror's
pod commits, the engine and its checkpoint, bridge + host-local (and the recorder plugin, for a
delegate that fails as told) in a real netns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest

from app.attach.requests import Command
from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Database
from tests.watch.hotplug_node import Layout, build
from tests.watch.support import Running, eventually, install_recorder
from tests.watch.test_hotplug_native import (  # noqa: F401 - the layout fixture
    Node,
    SeenReads,
    _async,
    _equals,
    _has,
    layout,
    nads,
    nads_mirrored,
    reconciling,
    running_pod,
)


class Watched(Node):
    """A node whose reconciler's pod reads are seen, so a test can wait for the pass that read a
    given annotation to end."""

    seen: SeenReads

    async def pass_done(self, annotation: str) -> None:
        """Until a pass that read ``annotation`` has ended."""
        reads = await eventually(lambda: _async(self.seen.passes_when_read(annotation)), bool)
        await eventually(lambda: _async(self.reconciler.passes), lambda passes: passes > reads[0])


@pytest.fixture
async def node(
    running: Running,
    database: Database,
    emulator: KubeApiEmulator,
    layout: Layout,  # noqa: F811 - the fixture imported above
    netns: str,
    tmp_path: Path,
) -> AsyncIterator[Watched]:
    bin_dir = tmp_path / "bin"
    install_recorder(bin_dir)
    nads(emulator, layout)
    for name, fail_on, code in (("stuck", "DEL", 11), ("odd", "ADD", 101)):
        emulator.create_nad(
            "default",
            name,
            {
                "cniVersion": "1.0.0",
                "name": name,
                "type": "recorder",
                "recorder": {
                    "log": str(tmp_path / f"{name}.log"),
                    "failOn": fail_on,
                    "fail": {"code": code, "msg": f"{name} fails {fail_on}"},
                },
            },
        )
    await nads_mirrored(running)
    for name in ("stuck", "odd"):
        await eventually(partial(running.watchers.nads.get_nad, "default", name), lambda nad: nad is not None)
    seen = SeenReads(running.watchers.pods)
    engine, reconciler = build(
        database=database,
        watchers=running.watchers,
        layout=layout,
        hotplug_pods=seen,
        extra_cni_path=(str(bin_dir),),
    )
    seen.reconciler = reconciler
    watched = Watched(engine, reconciler, emulator, layout, netns, database)
    watched.seen = seen
    async with reconciling(reconciler, running):
        yield watched


async def test_a_stuck_unplug_does_not_hold_back_an_unrelated_new_network(node: Watched) -> None:
    """``stuck@net2`` is removed and ``hot-a`` added; the unplug's DEL fails, for good. The new
    network got the next ``net<n>`` counting from the attachments' positions (net2), the stuck
    attachment's name: its ADD was refused ("already attached") on every retry, for as long as the
    unplug stayed stuck."""
    pod, container = await running_pod(node, "web", "stuck@net2")
    assert await node.recorded(container) == {"eth0": "added", "net2": "added"}

    node.annotate("web", "hot-a")

    await eventually(
        lambda: node.recorded(container), _equals({"eth0": "added", "net2": "deleting", "net3": "added"})
    )
    assert "net3" in await node.links()
    await eventually(lambda: _async(node.events("FailedRemovingInterface")), _has("net2"))
    await eventually(lambda: _async(node.events("AddedInterface")), _has("added interface net3"))
    assert not node.events("FailedAddingInterface")
    assert ("default", "web") in node.reconciler.pending  # the unplug is still retried

    with pytest.raises(Exception, match="stuck fails DEL"):  # the runtime's DEL: net2's stays pending
        await node.engine.delete(node.request(Command.DEL, pod, container))
    assert await node.links() == {"lo"}
