"""Native hot-plug's loose ends: a stuck unplug, a sandbox whose namespace went before its
runtime's DEL came, and the history line of a refused selection that names no interface.

Real: the emulator over HTTP, the pod/NAD watches into SQLite, the reconciler fed by the mirror's
pod commits, the engine and its checkpoint, bridge + host-local (and the recorder plugin, for a
delegate that fails as told) in a real netns.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

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
    # the unplug is still retried (once the pass that posted the events has ended: it writes the
    # pod's status after them)
    await eventually(lambda: _async(node.reconciler.pending), lambda pending: ("default", "web") in pending)

    with pytest.raises(Exception, match="stuck fails DEL"):  # the runtime's DEL: net2's stays pending
        await node.engine.delete(node.request(Command.DEL, pod, container))
    assert await node.links() == {"lo"}


async def _ip_netns(node: Node, verb: str) -> None:
    """``ip netns <verb>`` of the pod's namespace, by its name."""
    await asyncio.to_thread(subprocess.run, ["ip", "netns", verb, Path(node.netns).name], check=True)


@pytest.mark.parametrize("replaced", [False, True], ids=["deleted", "replaced"])
async def test_a_sandbox_whose_namespace_went_before_its_del_came_is_left_alone(
    node: Watched, running: Running, replaced: bool
) -> None:
    """The sandbox's namespace went (its runtime's DEL was spooled, say) or another one is at its
    path now, while the checkpoint still records it running. A change of the annotation DELed
    net1 (no namespace to enter: the DEL still succeeds) and posted ``RemovedInterface``; the ADD
    of net2 was refused with code 101 and posted ``FailedAddingInterface``, and was retried with
    backoff until the runtime's DEL or GC came; a refused selection was announced too. Nothing of
    this told the owner anything true: the pod's next sandbox's ADD attaches what the annotation
    names (and refuses what it cannot)."""
    pod, container = await running_pod(node, "left", "hot-a@net1")
    await _ip_netns(node, "delete")
    if replaced:
        await _ip_netns(node, "add")

    node.annotate("left", "hot-b@net2, hot-a@eth0")  # eth0: refused, the cluster network's name

    await node.pass_done("hot-b@net2, hot-a@eth0")
    async with asyncio.timeout(10):
        await running.watchers.events.drained()
    assert node.events("RemovedInterface") == []
    assert node.events("FailedAddingInterface") == []
    assert ("default", "left") not in node.reconciler.pending
    assert await node.recorded(container) == {"eth0": "added", "net1": "added"}  # the runtime's DEL's

    await node.engine.delete(node.request(Command.DEL, pod, container))
    assert not list(node.layout.ipam_dir.rglob("10.*"))


async def test_a_namespace_that_goes_while_a_hot_plug_is_planned_is_not_announced_as_a_failure(
    node: Watched, running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The namespace went between the pass's look and the engine's: the engine's code 101."""
    pod, container = await running_pod(node, "late")
    resolver = node.reconciler._resolver
    planned = resolver.plan_hotplug

    async def namespace_goes_first(*args: Any, **kwargs: Any) -> Any:
        await _ip_netns(node, "delete")
        return await planned(*args, **kwargs)

    monkeypatch.setattr(resolver, "plan_hotplug", namespace_goes_first)
    node.annotate("late", "hot-a@net3")

    await node.pass_done("hot-a@net3")
    async with asyncio.timeout(10):
        await running.watchers.events.drained()
    assert node.events("FailedAddingInterface") == []
    assert ("default", "late") not in node.reconciler.pending
    assert [line for line in await node.history(container) if line[1] == "hotplug"] == []
    await node.engine.delete(node.request(Command.DEL, pod, container))


async def test_a_delegates_own_code_101_in_a_live_sandbox_is_still_a_failure(node: Watched) -> None:
    """Codes from 100 are each plugin's own: a delegate's 101 says nothing of the namespace, which
    is there. Its failure is announced and retried as any other."""
    pod, container = await running_pod(node, "odd")

    node.annotate("odd", "odd@net5")

    await eventually(lambda: _async(node.events("FailedAddingInterface")), _has("odd fails ADD"))
    await eventually(
        lambda: _async(dict(node.reconciler.pending)), lambda pending: ("default", "odd") in pending
    )
    assert await node.recorded(container) == {"eth0": "added"}
    await node.engine.delete(node.request(Command.DEL, pod, container))


async def running_pod_deled_while_planned(node: Watched, monkeypatch: pytest.MonkeyPatch, name: str) -> str:
    """A running pod ``name`` whose sandbox (its container ID returned) the runtime DELs while the
    reconciler's next pass plans a hot-plug for it."""
    pod, container = await running_pod(node, name)
    resolver = node.reconciler._resolver
    planned = resolver.plan_hotplug

    async def runtime_del_first(*args: Any, **kwargs: Any) -> Any:
        await node.engine.delete(node.request(Command.DEL, pod, container))
        return await planned(*args, **kwargs)

    monkeypatch.setattr(resolver, "plan_hotplug", runtime_del_first)
    return container


async def test_a_hot_plug_that_fails_after_the_runtime_deled_its_sandbox_announces_nothing(
    node: Watched, running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an "unknown container" was taken for a sandbox gone meanwhile: a pod going away whose
    selected NAD went with it (its namespace deleted) got ``NoNetworkFound`` and
    ``FailedAddingInterface`` Warnings, after its sandbox's DEL."""
    await running_pod_deled_while_planned(node, monkeypatch, "going")
    node.annotate("going", "missing-nad@net9")

    await node.pass_done("missing-nad@net9")
    async with asyncio.timeout(10):
        await running.watchers.events.drained()
    assert node.events("NoNetworkFound") == []
    assert node.events("FailedAddingInterface") == []
    assert ("default", "going") not in node.reconciler.pending


async def test_a_refused_nameless_selection_is_recorded_under_no_interface(node: Watched) -> None:
    """Its history line named the sandbox's ``CNI_IFNAME``, eth0: the cluster network's interface,
    which ``multusctl history`` then showed with a hot-plug ADD error it had nothing to do with."""
    pod, container = await running_pod(node, "twice")

    node.annotate("twice", "hot-b, hot-b")

    async def refused() -> list[str]:
        return [
            ifname
            for command, trigger, outcome, ifname in await node.history(container)
            if trigger == "hotplug"
        ]

    assert set(await eventually(refused, bool)) == {""}
    await eventually(
        lambda: _async(node.events("FailedAddingInterface")),
        _has(
            "failed adding an interface to network: hot-b: network default/hot-b is selected more than once"
        ),
    )
    await node.engine.delete(node.request(Command.DEL, pod, container))


@pytest.mark.parametrize(
    "selection", ["hot-a@net3", "missing-nad@net9"], ids=["refused-by-the-engine", "its-nad-missing"]
)
async def test_a_hot_plug_given_up_because_the_runtime_deled_its_sandbox_writes_no_error_to_the_history(
    node: Watched, running: Running, monkeypatch: pytest.MonkeyPatch, selection: str
) -> None:
    """The runtime's DEL came while the pass planned the hot-plug: the pass gives it up (nothing
    announced or retried), yet the history showed a hot-plug ADD error, "unknown container ...
    (CNI_CONTAINERID)" (the engine's refusal, worded for ``/delegate``), or the plan's own failure
    (a NAD not found): as if the pod's annotation had been refused, where nothing was tried on a
    running sandbox, as for one found stopped when the pass began (no line either)."""
    container = await running_pod_deled_while_planned(node, monkeypatch, "going")
    node.annotate("going", selection)

    await node.pass_done(selection)
    assert ("default", "going") not in node.reconciler.pending
    assert await node.history(container) == [
        ("ADD", "runtime", "ok", "eth0"),
        ("DEL", "runtime", "ok", "eth0"),
    ]
