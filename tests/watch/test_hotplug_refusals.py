"""Native hot-plug's refusals that only an edit of the annotation clears (a NAD selected twice
without names, an interface name two selections give, the cluster network's interface, an
annotation that does not parse): recorded and announced once, then left until the pod changes,
while failures that can clear by themselves (a NAD not found yet) are still retried with backoff.

Real: the emulator over HTTP, the pod/NAD watches into SQLite, the reconciler fed by the mirror's
pod commits (its resync made short, so that many passes meet the same refusals), the engine and its
checkpoint, bridge + host-local in a real netns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from app.attach.requests import Command
from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Database
from tests.watch.hotplug_node import FAST_RETRIES, Layout
from tests.watch.support import Running, eventually
from tests.watch.test_hotplug_native import (  # noqa: F401 - the layout fixture
    Node,
    _async,
    _equals,
    hotplug_node,
    layout,
    running_pod,
)

RESYNCED = dataclasses.replace(FAST_RETRIES, resync_interval=0.05)
"""Every running pod looked at again every 50 ms: a refusal is met on pass after pass."""

REFUSED = "hot-a@net1, hot-b, hot-b, hot-a@net5, hot-b@net5, hot-a@eth0"
"""net1 kept, and refused four times, each of a kind only an edit clears: two nameless selections
of hot-b, net5 named twice, eth0 (the cluster network's)."""


@pytest.fixture
async def node(
    running: Running,
    database: Database,
    emulator: KubeApiEmulator,
    layout: Layout,  # noqa: F811 - the fixture imported above
    netns: str,
) -> AsyncIterator[Node]:
    async with hotplug_node(running, database, emulator, layout, netns, reconciler_settings=RESYNCED) as hot:
        yield hot


async def _refusals(node: Node, container: str) -> list[str]:
    """The interfaces of the sandbox's hot-plug error lines in the history, oldest first."""
    return [h[3] for h in await node.history(container) if h[1:3] == ("hotplug", "error")]


async def _passes_later(node: Node, count: int) -> None:
    """Until the reconciler has finished ``count`` more passes."""
    start = node.reconciler.passes
    await eventually(lambda: _async(node.reconciler.passes), lambda passes: passes >= start + count)


async def test_a_refusal_only_an_edit_clears_is_recorded_and_announced_once(
    node: Node, running: Running
) -> None:
    """Each retry (backoff up to 60 s, and each resync) wrote one history line per refusal, about
    two a minute per pod for as long as the pod lived: a few such pods filled the history with
    noise. The first pass records them; later passes of the unchanged annotation record nothing."""
    pod, container = await running_pod(node, "stubborn", "hot-a@net1")

    node.annotate("stubborn", REFUSED)

    await eventually(lambda: _async(dict(node.reconciler.pending)), lambda p: ("default", "stubborn") in p)
    first = await _refusals(node, container)
    assert sorted(first) == ["", "", "eth0", "net5"]
    await running.watchers.events.drained()
    announced = len(node.events("FailedAddingInterface"))
    assert announced >= 3  # the two nameless selections' Warnings read alike
    await _passes_later(node, 8)  # resyncs
    for label in ("a", "b"):  # pod events that leave the annotation as it is
        node.emulator.patch_pod("default", "stubborn", {"metadata": {"labels": {"edited": label}}})
        await _passes_later(node, 2)

    assert await _refusals(node, container) == first
    await running.watchers.events.drained()
    assert len(node.events("FailedAddingInterface")) == announced
    assert ("default", "stubborn") in node.reconciler.pending  # still unsatisfied, and says so
    assert await node.recorded(container) == {"eth0": "added", "net1": "added"}

    node.annotate("stubborn", '[{"name": ')  # a new refusal is news: recorded once, not under eth0

    await eventually(lambda: _refusals(node, container), lambda refusals: len(refusals) == len(first) + 1)
    await _passes_later(node, 8)
    assert await _refusals(node, container) == [*first, ""]
    await running.watchers.events.drained()
    assert len(node.events("FailedAddingInterface")) == announced + 1
    assert "net1" in await node.links()  # nothing detached

    node.annotate("stubborn", "hot-a@net1")

    await eventually(lambda: _async(dict(node.reconciler.pending)), lambda pending: not pending)
    node.annotate("stubborn", REFUSED)  # refused again after it was satisfied: news again
    await eventually(lambda: _refusals(node, container), lambda refusals: len(refusals) == 2 * len(first) + 1)
    await node.engine.delete(node.request(Command.DEL, pod, container))


@pytest.fixture
async def timed_node(
    running: Running,
    database: Database,
    emulator: KubeApiEmulator,
    layout: Layout,  # noqa: F811 - the fixture imported above
    netns: str,
) -> AsyncIterator[Node]:
    """A node whose resync is the daemon's (60 s): within a test, only the backoff retries a pod."""
    async with hotplug_node(running, database, emulator, layout, netns) as hot:
        yield hot


async def test_a_failure_that_can_clear_by_itself_is_still_retried_beside_a_refusal(
    timed_node: Node,
    emulator: KubeApiEmulator,
    layout: Layout,  # noqa: F811 - the fixture imported above
) -> None:
    """A NAD not found is retried with backoff (it may be created later) while the pod's refusal
    waits for an edit; those retries do not write the refusal's line again, and the NAD once
    created is attached without the pod being touched."""
    node = timed_node
    pod, container = await running_pod(node, "mixed")

    node.annotate("mixed", "hot-b@net5, hot-a@net5, later@net7")

    async def lines(ifname: str) -> int:
        return (await _refusals(node, container)).count(ifname)

    await eventually(lambda: lines("net7"), lambda tries: tries >= 4)
    assert await lines("net5") == 1
    emulator.create_nad("default", "later", layout.bridge_conf("later", "10.234.0.0/24", suffix="k"))

    await eventually(lambda: node.recorded(container), _equals({"eth0": "added", "net7": "added"}))
    assert await lines("net5") == 1
    assert ("default", "mixed") in node.reconciler.pending  # net5 is still named twice
    await node.engine.delete(node.request(Command.DEL, pod, container))
