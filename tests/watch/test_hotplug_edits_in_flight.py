"""Native hot-plug while a hot-plug ADD is still running: the annotation edited again and again, the
NAD edited, the pod's sandbox DELed by the runtime. Whatever came in between, once settled the
sandbox holds exactly what the last annotation names, and nothing leaks (no veth, no lease, no
attachment row); a DEL replays the config its ADD ran (invariant 6), not the NAD's new one.

Real: the emulator over HTTP, the pod/NAD watches into SQLite, the reconciler, the engine, bridge +
host-local in a real netns; the held delegate is a conflist of bridge then the recorder plugin,
which waits at a rendezvous until the test releases it (the interface and lease already made).
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from app.attach.requests import Command
from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Database
from tests.watch.hotplug_node import Layout, build, reconcile_until_killed
from tests.watch.support import NETWORKS, NODE, Running, eventually, install_recorder, pod_manifest
from tests.watch.test_hotplug_native import (
    Node,
    _async,
    _equals,
    nads,
    nads_mirrored,
    reconciling,
    running_pod,
)


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    layout = Layout(tmp_path, secrets.token_hex(3))
    layout.write_primary()
    yield layout
    for suffix in ("", "a", "b", "d", "s", "t"):
        subprocess.run(["ip", "link", "del", layout.bridge + suffix], check=False, capture_output=True)


def held_conf(
    layout: Layout, held: Path, *, suffix: str = "s", subnet: str = "10.234.0.0/24"
) -> dict[str, Any]:
    """NAD ``slow``: bridge + host-local, then the recorder, whose ADD waits (interface and lease
    made) until ``held`` holds two files: its own and the test's ``release``."""
    bridge = layout.bridge_conf("slow", subnet, suffix=suffix)
    return {
        "cniVersion": "1.0.0",
        "name": "slow",
        "plugins": [
            {key: value for key, value in bridge.items() if key not in ("cniVersion", "name")},
            {
                "type": "recorder",
                "recorder": {
                    "log": str(held.parent / "slow.log"),
                    "rendezvous": {"dir": str(held), "count": 2, "commands": ["ADD"]},
                },
            },
        ],
    }


@pytest.fixture
async def node(
    running: Running,
    database: Database,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    tmp_path: Path,
) -> AsyncIterator[Node]:
    bin_dir = tmp_path / "bin"
    install_recorder(bin_dir)
    nads(emulator, layout)
    emulator.create_nad("default", "slow", held_conf(layout, tmp_path / "held"))
    await nads_mirrored(running)
    await eventually(partial(running.watchers.nads.get_nad, "default", "slow"), lambda nad: nad is not None)
    engine, reconciler = build(
        database=database, watchers=running.watchers, layout=layout, extra_cni_path=(str(bin_dir),)
    )
    async with reconciling(reconciler, running):
        yield Node(engine, reconciler, emulator, layout, netns, database)


async def _mirrored(node: Node, running: Running, name: str, annotation: str) -> None:
    await eventually(
        partial(running.watchers.pods.get_pod, "default", name),
        lambda pod: pod is not None and pod.annotations.get(NETWORKS) == annotation,
    )


async def _held(node: Node, held: Path, ifname: str) -> None:
    await eventually(lambda: _async(sorted(p.name for p in held.glob("*"))), lambda names: ifname in names)


def _leases(layout: Layout) -> list[str]:
    return sorted(p.parent.name + "/" + p.name for p in layout.ipam_dir.rglob("10.*"))


async def test_quick_edits_while_a_hot_plug_add_runs_settle_on_the_last_annotation(
    node: Node, running: Running, tmp_path: Path
) -> None:
    held = tmp_path / "held"
    pod, container = await running_pod(node, "edited")
    node.annotate("edited", "slow@net3")
    await _held(node, held, "net3")
    try:
        for annotation in ("", "slow@net5", "hot-a, slow@net5", "slow@net5, hot-a@net7"):
            node.annotate("edited", annotation)
        await _mirrored(node, running, "edited", "slow@net5, hot-a@net7")
    finally:
        (held / "release").write_text("")

    settled = {"eth0": "added", "net5": "added", "net7": "added"}
    await eventually(lambda: node.recorded(container), _equals(settled), within=15)
    await eventually(lambda: _async(dict(node.reconciler.pending)), lambda pending: not pending)
    assert await node.links() == {"lo", "eth0", "net5", "net7"}
    await eventually(
        lambda: _async(node.status_interfaces("edited")), _equals(["eth0", "net5", "net7"]), within=10
    )
    assert sorted(lease.split("/")[0] for lease in _leases(node.layout)) == ["hot-a", "primary", "slow"]
    assert not node.events("FailedAddingInterface")
    assert not node.events("FailedRemovingInterface")
    assert all(outcome == "ok" for _, _, outcome, _ in await node.history(container))

    await node.engine.delete(node.request(Command.DEL, pod, container))
    assert await node.links() == {"lo"}
    assert _leases(node.layout) == []


async def test_a_nad_edited_while_its_network_is_attached_is_deled_with_the_config_its_add_ran(
    node: Node, running: Running, emulator: KubeApiEmulator, layout: Layout, tmp_path: Path
) -> None:
    pod, container = await running_pod(node, "kept", "hot-a@net3")
    await eventually(lambda: node.recorded(container), _equals({"eth0": "added", "net3": "added"}))
    assert [lease for lease in _leases(layout) if lease.startswith("hot-a/")]

    # the NAD now names another bridge and another IPAM data dir: a DEL with it would release nothing
    edited = layout.bridge_conf("hot-a", "10.235.0.0/24", suffix="t")
    edited["ipam"]["dataDir"] = str(tmp_path / "other-ipam")
    emulator.delete_nad("default", "hot-a")
    emulator.create_nad("default", "hot-a", edited)
    await eventually(
        partial(running.watchers.nads.get_nad, "default", "hot-a"),
        lambda nad: nad is not None and "10.235.0.0/24" in nad.config,
    )
    passes = node.reconciler.passes
    node.annotate("kept", "hot-b")
    await eventually(lambda: _async(node.reconciler.passes), lambda done: done > passes)
    # hot-b's ADD follows net3's DEL: its intent is recorded before it is added, so wait for both
    recorded = await eventually(
        lambda: node.recorded(container),
        lambda r: "net3" not in r and len(r) == 2 and set(r.values()) == {"added"},
    )
    assert set(recorded.values()) == {"added"}
    assert "net3" not in await node.links()
    assert not [lease for lease in _leases(layout) if lease.startswith("hot-a/")]
    await node.engine.delete(node.request(Command.DEL, pod, container))
    assert await node.links() == {"lo"}
    assert _leases(layout) == []


async def test_the_runtimes_del_while_a_hot_plug_add_runs_leaves_nothing(
    node: Node, running: Running, tmp_path: Path
) -> None:
    held = tmp_path / "held"
    pod, container = await running_pod(node, "leaving")
    node.annotate("leaving", "slow@net3, hot-a@net4")
    await _held(node, held, "net3")
    deleting = asyncio.create_task(node.engine.delete(node.request(Command.DEL, pod, container)))
    await asyncio.sleep(0)
    (held / "release").write_text("")
    await deleting
    await eventually(lambda: node.recorded(container), _equals({}))
    passes = node.reconciler.passes
    node.annotate("leaving", "slow@net3")
    await eventually(lambda: _async(node.reconciler.passes), lambda done: done > passes)
    assert await node.links() == {"lo"}
    assert _leases(node.layout) == []
    assert not node.events("FailedAddingInterface")


async def test_a_kill_9_in_a_hot_unplug_then_the_runtimes_del_leaves_nothing(
    api: Any,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    tmp_path: Path,
    settings: Any,
) -> None:
    nads(emulator, layout)
    db_path = tmp_path / "crash.db"
    pod = emulator.create_pod(pod_manifest("unplugged", annotations={NETWORKS: "hot-a@net3"}))
    container = secrets.token_hex(32)
    database = Database.open(db_path)
    try:
        async with Running.start(api=api, database=database, node_name=NODE, settings=settings) as running:
            await nads_mirrored(running)
            engine, idle = build(database=database, watchers=running.watchers, layout=layout)
            node = Node(engine, idle, emulator, layout, netns, database)
            await engine.add(node.request(Command.ADD, pod, container))
            assert await node.recorded(container) == {"eth0": "added", "net3": "added"}
    finally:
        database.close()
    emulator.patch_pod("default", "unplugged", {"metadata": {"annotations": {NETWORKS: ""}}})
    kubeconfig = emulator.write_kubeconfig(tmp_path / "child-kubeconfig")
    await reconcile_until_killed(
        db_path=db_path, kubeconfig=kubeconfig, layout=layout, crash_at="del-after-exec"
    )

    database = Database.open(db_path)
    try:
        async with Running.start(api=api, database=database, node_name=NODE, settings=settings) as running:
            engine, reconciler = build(database=database, watchers=running.watchers, layout=layout)
            node = Node(engine, reconciler, emulator, layout, netns, database)
            assert (await node.recorded(container)).get("net3") == "deleting"
            # the runtime's DEL comes before recovery ran
            await engine.delete(node.request(Command.DEL, pod, container))
            assert await node.recorded(container) == {}
            assert await node.links() == {"lo"}
            assert _leases(layout) == []
    finally:
        database.close()
