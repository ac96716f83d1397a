"""Native hot-plug (``hotplugNetworks``): editing a running pod's ``networks`` annotation attaches and
detaches networks, as multus-dynamic-networks-controller would, but recorded in the checkpoint.

Real: the emulator over HTTP, the pod/NAD watches into SQLite, the reconciler fed by the mirror's
pod commits, the engine and its checkpoint, bridge + host-local in a real netns; a child process
killed (SIGKILL, crash point) in the middle of a hot-plug, then recovery and the reconciler in this
process settle it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from app.attach.cluster import PodSource
from app.attach.engine import AttachEngine
from app.attach.hotplug import HotplugReconciler, ReconcilerSettings
from app.attach.requests import Command, SandboxRequest
from app.attach.status_retries import PodMirror
from app.gc import recovery
from app.sandbox.kubeapi import KubeApiEmulator
from app.store import checkpoints
from app.store.database import Database
from app.store.mirror_records import PodRecord
from app.watch.settings import WatchSettings
from tests.watch.hotplug_node import FAST_RETRIES, Layout, build, reconcile_until_killed
from tests.watch.support import (
    NETWORKS,
    NODE,
    Running,
    eventually,
    install_recorder,
    mirrored_pods,
    pod_manifest,
)

STATUS = "k8s.v1.cni.cncf.io/network-status"


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    layout = Layout(tmp_path, secrets.token_hex(3))
    layout.write_primary()
    yield layout
    for suffix in ("", "a", "b", "d", "k"):
        subprocess.run(["ip", "link", "del", layout.bridge + suffix], check=False, capture_output=True)


@dataclass
class Node:
    engine: AttachEngine
    reconciler: HotplugReconciler
    emulator: KubeApiEmulator
    layout: Layout
    netns: str
    database: Database

    def request(self, command: Command, pod: dict[str, Any], container: str) -> SandboxRequest:
        return self.layout.request(command, pod, container, netns=self.netns)

    async def ip(self, *arguments: str) -> list[str]:
        """The lines ``ip -n <the pod's netns> <arguments>`` prints."""
        out = await asyncio.to_thread(
            subprocess.run,
            ["ip", "-n", Path(self.netns).name, *arguments],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.splitlines()

    async def links(self) -> set[str]:
        return {line.split(": ")[1].split("@")[0] for line in await self.ip("-o", "link", "show")}

    async def recorded(self, container: str) -> dict[str, str]:
        record = await self.database.read(lambda s: checkpoints.load_sandbox(s, container_id=container))
        return {} if record is None else {a.ifname: a.state for a in record.attachments}

    def annotate(self, name: str, value: str) -> None:
        self.emulator.patch_pod("default", name, {"metadata": {"annotations": {NETWORKS: value}}})

    def events(self, reason: str) -> list[str]:
        return [e["message"] for e in self.emulator.events("default") if e.get("reason") == reason]

    def status_interfaces(self, name: str) -> list[str]:
        annotations = self.emulator.get_pod("default", name)["metadata"].get("annotations") or {}
        return [entry.get("interface", "") for entry in json.loads(annotations.get(STATUS, "[]"))]

    async def history(self, container: str) -> list[tuple[str, str, str, str]]:
        def read(session: Any) -> list[tuple[str, str, str, str]]:
            rows = session.execute(
                "SELECT command, trigger, outcome, ifname FROM history "
                "WHERE container_id = :cid AND step = 'request' ORDER BY id",
                {"cid": container},
            )
            return [
                (str(command), str(trigger), str(outcome), str(ifname))
                for command, trigger, outcome, ifname in rows
            ]

        return await self.database.read(read)


def nads(emulator: KubeApiEmulator, layout: Layout) -> None:
    emulator.create_nad("default", "hot-a", layout.bridge_conf("hot-a", "10.231.0.0/24", suffix="a"))
    emulator.create_nad("default", "hot-b", layout.bridge_conf("hot-b", "10.232.0.0/24", suffix="b"))
    emulator.create_nad(
        "default",
        "hot-dev",
        layout.bridge_conf("hot-dev", "10.233.0.0/24", suffix="d"),
        annotations={"k8s.v1.cni.cncf.io/resourceName": "example.com/nic"},
    )


async def nads_mirrored(running: Running) -> None:
    for name in ("hot-a", "hot-b", "hot-dev"):
        await eventually(partial(running.watchers.nads.get_nad, "default", name), lambda nad: nad is not None)


@pytest.fixture
async def node(
    running: Running, database: Database, emulator: KubeApiEmulator, layout: Layout, netns: str
) -> AsyncIterator[Node]:
    async with hotplug_node(running, database, emulator, layout, netns) as hot:
        yield hot


async def running_pod(node: Node, name: str, annotation: str = "") -> tuple[dict[str, Any], str]:
    annotations = {NETWORKS: annotation} if annotation else {}
    pod = node.emulator.create_pod(pod_manifest(name, annotations=annotations))
    container = secrets.token_hex(32)
    await node.engine.add(node.request(Command.ADD, pod, container))
    return pod, container


async def test_editing_the_annotation_attaches_and_detaches_net3(node: Node) -> None:
    pod, container = await running_pod(node, "web", "hot-b@net1")
    assert await node.links() >= {"eth0", "net1"}

    node.annotate("web", "hot-b@net1, hot-a@net3")

    await eventually(node.links, lambda links: "net3" in links)
    await eventually(
        lambda: node.recorded(container), _equals({"eth0": "added", "net1": "added", "net3": "added"})
    )
    await eventually(
        lambda: _async(node.status_interfaces("web")), lambda ifs: ifs == ["eth0", "net1", "net3"]
    )
    await eventually(
        lambda: _async(node.events("AddedInterface")), _has("added interface net3 to network: hot-a")
    )
    assert ("ADD", "hotplug", "ok", "net3") in await node.history(container)

    node.annotate("web", "hot-b@net1")

    await eventually(node.links, lambda links: "net3" not in links)
    await eventually(lambda: node.recorded(container), _equals({"eth0": "added", "net1": "added"}))
    await eventually(lambda: _async(node.status_interfaces("web")), lambda ifs: ifs == ["eth0", "net1"])
    await eventually(
        lambda: _async(node.events("RemovedInterface")), _has("removed interface net3 from network: hot-a")
    )

    await node.engine.delete(node.request(Command.DEL, pod, container))
    assert await node.links() == {"lo"}
    assert not list(node.layout.ipam_dir.rglob("10.*"))


async def test_a_hot_plugged_default_route_keeps_the_pods_route_and_says_so(node: Node) -> None:
    """A hot-plugged selection's ``default-route`` was dropped without a word: the interface came,
    the route the owner asked for did not, and nothing told them why."""
    pod, container = await running_pod(node, "routed")
    routes_before = await node.ip("route", "show", "default")

    node.annotate("routed", '[{"name": "hot-a", "interface": "net3", "default-route": ["10.231.0.1"]}]')

    await eventually(node.links, lambda links: "net3" in links)
    await eventually(
        lambda: _async(node.events("DefaultRouteNotApplied")),
        _has("default-route 10.231.0.1 of network: hot-a is not applied to interface net3"),
    )
    assert [
        e["type"] for e in node.emulator.events("default") if e.get("reason") == "DefaultRouteNotApplied"
    ] == ["Warning"]
    assert await node.ip("route", "show", "default") == routes_before
    await node.engine.delete(node.request(Command.DEL, pod, container))


async def test_a_default_network_of_the_add_stays_when_todays_config_no_longer_lists_it(
    node: Node, running: Running
) -> None:
    """The pod was ADDed while ``defaultNetworks`` listed a NAD (net1); today's config (the
    reconciler's) lists none. net1 is the ADD's, not the annotation's: editing the annotation must
    not detach it (invariant 6: decided at ADD, never by today's config)."""
    node.emulator.create_nad(
        "kube-system", "hot-k", node.layout.bridge_conf("hot-k", "10.234.0.0/24", suffix="k")
    )
    await eventually(
        partial(running.watchers.nads.get_nad, "kube-system", "hot-k"), lambda nad: nad is not None
    )
    assert node.layout.conf().default_networks == ()  # the reconciler's: today's daemon config
    pod = node.emulator.create_pod(pod_manifest("kept"))
    container = secrets.token_hex(32)
    add = node.request(Command.ADD, pod, container)
    await node.engine.add(
        dataclasses.replace(add, conf=dataclasses.replace(add.conf, default_networks=("hot-k",)))
    )
    record = await node.engine.load_sandbox(container)
    assert record is not None
    assert record.default_networks == 1
    assert [(a.ifname, a.network_name) for a in record.attachments] == [
        ("eth0", "primary"),
        ("net1", "kube-system/hot-k"),
    ]

    node.annotate("kept", "hot-a@net5")

    await eventually(
        lambda: node.recorded(container), _equals({"eth0": "added", "net1": "added", "net5": "added"})
    )
    assert await node.links() >= {"eth0", "net1", "net5"}
    passes = node.reconciler.passes
    await node.reconciler.resync()
    await eventually(lambda: _async(node.reconciler.passes), lambda done: done > passes)
    assert await node.recorded(container) == {"eth0": "added", "net1": "added", "net5": "added"}

    await node.engine.delete(node.request(Command.DEL, pod, container))
    assert await node.links() == {"lo"}


async def test_nothing_is_hot_plugged_while_another_operation_holds_the_sandbox(node: Node) -> None:
    pod, container = await running_pod(node, "held")

    async with node.engine.locks.hold(container):
        before = node.reconciler.deferred
        node.annotate("held", "hot-a@net3")
        await eventually(lambda: _async(node.reconciler.deferred), lambda deferred: deferred > before)
        assert await node.recorded(container) == {"eth0": "added"}
        assert "net3" not in await node.links()

    await eventually(lambda: node.recorded(container), _equals({"eth0": "added", "net3": "added"}))
    await node.engine.delete(node.request(Command.DEL, pod, container))


async def test_a_nameless_selection_gets_the_next_free_net_name_in_annotation_order(node: Node) -> None:
    pod, container = await running_pod(node, "order", "hot-a")

    node.annotate("order", "hot-a, hot-b, default/hot-a@extra")

    await eventually(node.links, lambda links: {"net2", "extra"} <= links)
    await eventually(lambda: node.recorded(container), lambda recorded: len(recorded) == 4)
    record = await node.engine.load_sandbox(container)
    assert record is not None
    assert [(a.ifname, a.network_name) for a in sorted(record.attachments, key=lambda a: a.position)] == [
        ("eth0", "primary"),
        ("net1", "default/hot-a"),
        ("net2", "default/hot-b"),
        ("extra", "default/hot-a"),
    ]
    await node.engine.delete(node.request(Command.DEL, pod, container))


async def test_garbage_in_the_annotation_detaches_nothing_and_is_retried_once_fixed(node: Node) -> None:
    pod, container = await running_pod(node, "junk", "hot-a@net3")

    node.annotate("junk", '[{"name": ')

    await eventually(
        lambda: _async(dict(node.reconciler.pending)), lambda pending: ("default", "junk") in pending
    )
    await eventually(lambda: _async(node.events("FailedAddingInterface")), _has("invalid network selection"))
    history = await node.history(container)
    # under no interface: eth0 is the cluster network's, which the refusal has nothing to do with
    assert [h for h in history if h[1] == "hotplug"] == [("ADD", "hotplug", "error", "")]
    assert "net3" in await node.links()
    assert await node.recorded(container) == {"eth0": "added", "net3": "added"}

    node.annotate("junk", "hot-b@net4")

    await eventually(node.links, lambda links: "net4" in links and "net3" not in links)
    await eventually(lambda: _async(dict(node.reconciler.pending)), lambda pending: not pending)
    await node.engine.delete(node.request(Command.DEL, pod, container))


async def test_a_failure_that_repeats_on_every_retry_is_posted_as_one_warning_event(
    node: Node, running: Running
) -> None:
    """Each retry of a pod that cannot be satisfied posted its Warning events again: one new Event
    per retry per failure (every minute at most backoff, and every resync) for as long as it lasted."""
    pod, container = await running_pod(node, "broken")

    # a NAD with a resourceName: refused at each try, retried (an edit of the NAD may clear it)
    node.annotate("broken", "hot-dev@sriov1")

    async def failed_tries() -> int:  # each retry is still a try, recorded in the history
        return sum(h[:3] == ("ADD", "hotplug", "error") for h in await node.history(container))

    await eventually(failed_tries, lambda tries: tries >= 3)
    await running.watchers.events.drained()
    assert len(node.events("FailedAddingInterface")) == 1

    node.annotate("broken", "")  # satisfied: a later failure is news again
    await eventually(lambda: _async(dict(node.reconciler.pending)), lambda pending: not pending)
    node.annotate("broken", "hot-dev@sriov1")
    await eventually(lambda: _async(len(node.events("FailedAddingInterface"))), _equals(2))
    await node.engine.delete(node.request(Command.DEL, pod, container))


async def test_a_missing_nad_is_posted_as_one_no_network_found_warning_however_often_retried(
    node: Node, running: Running
) -> None:
    """The resolver posted ``NoNetworkFound`` itself on each try, past the reconciler's check that a
    Warning its previous pass posted is not posted again: one new Event per retry, for ever."""
    pod, container = await running_pod(node, "lost")

    node.annotate("lost", "missing-nad@net9")

    async def failed_tries() -> int:
        return sum(h[:3] == ("ADD", "hotplug", "error") for h in await node.history(container))

    await eventually(failed_tries, lambda tries: tries >= 3)
    await running.watchers.events.drained()
    assert len(node.events("NoNetworkFound")) == 1
    assert "missing-nad" in node.events("NoNetworkFound")[0]
    assert len(node.events("FailedAddingInterface")) == 1

    node.annotate("lost", "")  # satisfied: the same NAD missing later is news again
    await eventually(lambda: _async(dict(node.reconciler.pending)), lambda pending: not pending)
    node.annotate("lost", "missing-nad@net9")
    await eventually(lambda: _async(len(node.events("NoNetworkFound"))), _equals(2))
    await node.engine.delete(node.request(Command.DEL, pod, container))


async def test_unsatisfiable_selections_are_refused_retried_and_touch_nothing_else(node: Node) -> None:
    pod, container = await running_pod(node, "rules", "hot-a@net1")

    node.annotate("rules", "hot-a@net1, hot-dev@sriov1, hot-a, missing-nad@net9")

    await eventually(
        lambda: _async(node.events("FailedAddingInterface")),
        lambda messages: (
            {"sriov1", "net9", "hot-a is selected more than once"}
            <= {
                word
                for m in messages
                for word in ("sriov1", "net9", "hot-a is selected more than once")
                if word in m
            }
        ),
    )
    assert ("default", "rules") in node.reconciler.pending
    assert await node.recorded(container) == {"eth0": "added", "net1": "added"}
    assert await node.links() == {"lo", "eth0", "net1"}
    failures = [h for h in await node.history(container) if h[1] == "hotplug" and h[2] == "error"]
    assert {h[3] for h in failures} >= {"sriov1", "net9"}

    node.annotate("rules", "")

    await eventually(node.links, lambda links: links == {"lo", "eth0"})
    await eventually(lambda: _async(dict(node.reconciler.pending)), lambda pending: not pending)
    await node.engine.delete(node.request(Command.DEL, pod, container))


async def test_a_kill_9_in_the_middle_of_a_hot_plug_is_recovered_like_an_add(
    api: Any,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    tmp_path: Path,
    settings: WatchSettings,
) -> None:
    nads(emulator, layout)
    db_path = tmp_path / "crash.db"
    pod = emulator.create_pod(pod_manifest("crashy"))
    container = secrets.token_hex(32)
    database = Database.open(db_path)
    try:
        async with Running.start(api=api, database=database, node_name=NODE, settings=settings) as running:
            await nads_mirrored(running)
            engine, idle = build(database=database, watchers=running.watchers, layout=layout)
            node = Node(engine, idle, emulator, layout, netns, database)
            await engine.add(node.request(Command.ADD, pod, container))
    finally:
        database.close()
    emulator.patch_pod("default", "crashy", {"metadata": {"annotations": {NETWORKS: "hot-a@net3"}}})
    kubeconfig = emulator.write_kubeconfig(tmp_path / "child-kubeconfig")

    await reconcile_until_killed(
        db_path=db_path, kubeconfig=kubeconfig, layout=layout, crash_at="add-after-exec"
    )

    database = Database.open(db_path)
    try:
        async with Running.start(api=api, database=database, node_name=NODE, settings=settings) as running:
            await nads_mirrored(running)
            engine, reconciler = build(database=database, watchers=running.watchers, layout=layout)
            node = Node(engine, reconciler, emulator, layout, netns, database)
            assert await node.recorded(container) == {"eth0": "added", "net3": "intent"}
            assert "net3" in await node.links(), "the delegate ran before the kill: possibly present"

            await recovery.recover(engine=engine, db=database)

            assert await node.recorded(container) == {"eth0": "added"}
            assert await node.links() == {"lo", "eth0"}
            assert not list((layout.ipam_dir / "hot-a").glob("10.*"))
            assert ("DEL", "recovery", "ok", "net3") in [
                (c, t, o, i) for c, t, o, i in await _delegate_lines(database, container)
            ]

            task = asyncio.create_task(
                reconciler.run(ready=running.watchers.wait_synced), name="test.hotplug"
            )
            try:
                await eventually(node.links, lambda links: "net3" in links)
                await eventually(
                    lambda: node.recorded(container), _equals({"eth0": "added", "net3": "added"})
                )
            finally:
                reconciler.stop()
                async with asyncio.timeout(10):
                    await task
            await engine.delete(node.request(Command.DEL, pod, container))
            assert await node.links() == {"lo"}
    finally:
        database.close()


async def _delegate_lines(database: Database, container: str) -> list[tuple[str, str, str, str]]:
    def read(session: Any) -> list[tuple[str, str, str, str]]:
        rows = session.execute(
            "SELECT command, trigger, outcome, ifname FROM history "
            "WHERE container_id = :cid AND step = 'delegate' ORDER BY id",
            {"cid": container},
        )
        return [
            (str(command), str(trigger), str(outcome), str(ifname))
            for command, trigger, outcome, ifname in rows
        ]

    return await database.read(read)


async def _async(value: Any) -> Any:
    return value


def _has(text: str) -> Any:
    return lambda messages: any(text in message for message in messages)


def _equals(expected: Any) -> Any:
    return lambda value: value == expected


async def test_a_hot_plug_whose_add_and_undo_failed_is_retried_not_taken_as_attached(
    node: Node, tmp_path: Path
) -> None:
    # host-local cannot create its dataDir (a file is in the way): bridge's ADD fails after creating
    # the veth, and the DEL that undoes it fails too, so net3 stays recorded as an intent
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    conf = node.layout.bridge_conf("hot-x", "10.234.0.0/24", suffix="a")
    conf["ipam"]["dataDir"] = str(blocker / "ipam")
    node.emulator.create_nad("default", "hot-x", conf)
    pod, container = await running_pod(node, "stuck")

    node.annotate("stuck", "hot-x@net3")

    await eventually(lambda: _async(node.events("FailedAddingInterface")), _has("net3"))
    await eventually(lambda: node.recorded(container), _equals({"eth0": "added", "net3": "intent"}))

    blocker.unlink()  # the cause passes: the annotation can now be satisfied

    await eventually(lambda: node.recorded(container), _equals({"eth0": "added", "net3": "added"}), within=10)
    await eventually(lambda: _async(node.status_interfaces("stuck")), lambda ifs: ifs == ["eth0", "net3"])
    await eventually(lambda: _async(dict(node.reconciler.pending)), lambda pending: not pending)

    await node.engine.delete(node.request(Command.DEL, pod, container))
    assert await node.links() == {"lo"}
    assert not list(node.layout.ipam_dir.rglob("10.*"))
    assert not list((blocker / "ipam").rglob("10.*"))


async def test_a_network_status_write_that_failed_after_a_hot_plug_is_written_again(node: Node) -> None:
    pod, container = await running_pod(node, "flaky")
    # every attempt of the next status write fails (first try + its retries): the API is down a moment
    node.emulator.faults.fail_next(4, status=503, method="PATCH", path="/pods/flaky/status$")

    node.annotate("flaky", "hot-a@net3")

    await eventually(lambda: node.recorded(container), _equals({"eth0": "added", "net3": "added"}))
    await eventually(lambda: _async(node.status_interfaces("flaky")), lambda ifs: ifs == ["eth0", "net3"])
    await eventually(lambda: _async(dict(node.reconciler.pending)), lambda pending: not pending)

    await node.engine.delete(node.request(Command.DEL, pod, container))


async def test_a_restarted_daemon_writes_the_network_status_a_hot_plug_left_unwritten(
    node: Node, running: Running
) -> None:
    """The daemon stopped after a hot-plug's commit and before its network-status write got through
    (the API was down; a kill -9 between the two leaves the same): the next daemon finds nothing to
    attach, yet the annotation must come to show what the checkpoint holds."""
    pod, container = await running_pod(node, "restarted")
    failing = node.emulator.faults.fail_next(
        10_000, status=503, method="PATCH", path="/pods/restarted/status$"
    )
    node.annotate("restarted", "hot-a@net3")
    await eventually(lambda: node.recorded(container), _equals({"eth0": "added", "net3": "added"}))
    await eventually(
        lambda: _async(dict(node.reconciler.pending)), lambda pending: ("default", "restarted") in pending
    )
    node.reconciler.stop()  # the daemon stops; the API comes back
    node.emulator.faults.clear()
    assert failing.remaining > 0
    assert node.status_interfaces("restarted") == ["eth0"]

    _, successor = build(database=node.database, watchers=running.watchers, layout=node.layout)
    task = asyncio.create_task(successor.run(ready=running.watchers.wait_synced), name="test.successor")
    try:
        await eventually(
            lambda: _async(node.status_interfaces("restarted")), lambda ifs: ifs == ["eth0", "net3"]
        )
    finally:
        successor.stop()
        async with asyncio.timeout(10):
            await task
    await node.engine.delete(node.request(Command.DEL, pod, container))


class HeldAddRead:
    """The engine's pod reads; once armed, the next one is held after it read the pod until
    released: an ADD stopped after it read the annotation and before it recorded its sandbox."""

    def __init__(self, pods: PodSource) -> None:
        self._pods = pods
        self.armed = False
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    async def get_pod(self, namespace: str, name: str, *, uid: str = "") -> PodRecord | None:
        pod = await self._pods.get_pod(namespace, name, uid=uid)
        if self.armed:
            self.armed = False
            self.read.set()
            await self.release.wait()
        return pod


class SeenReads:
    """The reconciler's pod reads: each pod's ``networks`` annotation as read, with the number of
    passes the reconciler had finished then (the pass that made the read ends after it)."""

    def __init__(self, pods: PodMirror) -> None:
        self._pods = pods
        self.reconciler: HotplugReconciler | None = None
        self.seen: list[tuple[str, int]] = []
        self.asked: list[str] = []
        """The pods asked for, by name, as the reconciler asks (before the answer)."""

    async def mirrored_pod(self, namespace: str, name: str) -> PodRecord | None:
        self.asked.append(name)
        pod = await self._pods.mirrored_pod(namespace, name)
        self._note(pod)
        return pod

    def _note(self, pod: PodRecord | None) -> None:
        if pod is not None and self.reconciler is not None:
            self.seen.append((pod.annotations.get(NETWORKS, ""), self.reconciler.passes))

    def passes_when_read(self, annotation: str) -> list[int]:
        return [passes for seen, passes in self.seen if seen == annotation]


@asynccontextmanager
async def reconciling(reconciler: HotplugReconciler, running: Running) -> AsyncIterator[None]:
    task = asyncio.create_task(reconciler.run(ready=running.watchers.wait_synced), name="test.hotplug")
    try:
        yield
    finally:
        reconciler.stop()
        async with asyncio.timeout(10):
            await task


@asynccontextmanager
async def hotplug_node(
    running: Running,
    database: Database,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    *,
    reconciler_settings: ReconcilerSettings = FAST_RETRIES,
) -> AsyncIterator[Node]:
    """The layout's NADs created and mirrored, the engine and the reconciler built over the watchers
    (``build``), and the reconciler running until the block ends."""
    nads(emulator, layout)
    await nads_mirrored(running)
    engine, reconciler = build(
        database=database, watchers=running.watchers, layout=layout, reconciler_settings=reconciler_settings
    )
    async with reconciling(reconciler, running):
        yield Node(engine, reconciler, emulator, layout, netns, database)


async def test_an_annotation_changed_during_the_pods_own_add_is_hot_plugged_once_the_add_is_done(
    running: Running, database: Database, emulator: KubeApiEmulator, layout: Layout, netns: str
) -> None:
    """Reviewer's finding 1: the annotation changed after the ADD read it and before the ADD
    recorded its sandbox; the reconciler, finding no sandbox, counted the pod as done and left it
    to the next resync (60 s). The ADD's end must have the pod looked at again."""
    nads(emulator, layout)
    await nads_mirrored(running)
    held = HeldAddRead(running.watchers.pods)
    seen = SeenReads(running.watchers.pods)
    engine, reconciler = build(
        database=database, watchers=running.watchers, layout=layout, add_pods=held, hotplug_pods=seen
    )
    seen.reconciler = reconciler
    node = Node(engine, reconciler, emulator, layout, netns, database)
    async with reconciling(reconciler, running):
        pod = emulator.create_pod(pod_manifest("late"))
        container = secrets.token_hex(32)
        held.armed = True
        adding = asyncio.create_task(engine.add(node.request(Command.ADD, pod, container)), name="test.add")
        async with asyncio.timeout(5):
            await held.read.wait()

        node.annotate("late", "hot-a@net3")

        reads = await eventually(
            lambda: _async(seen.passes_when_read("hot-a@net3")), lambda passes: len(passes) > 0
        )
        await eventually(lambda: _async(reconciler.passes), lambda passes: passes > reads[0])
        assert await node.recorded(container) == {}, "the reconciler looked while the ADD held"
        held.release.set()
        await adding

        await eventually(lambda: node.recorded(container), _equals({"eth0": "added", "net3": "added"}))
        assert await node.links() >= {"eth0", "net3"}
        await eventually(lambda: _async(node.status_interfaces("late")), lambda ifs: ifs == ["eth0", "net3"])
        await engine.delete(node.request(Command.DEL, pod, container))
        assert await node.links() == {"lo"}


async def test_a_generated_net_name_skips_an_interface_the_sandbox_already_has(node: Node) -> None:
    """Reviewer's finding 2: ``net<n>`` was checked against the checkpoint only; an interface of
    that name in the netns (made by something else) made the engine refuse, and the reconciler
    asked for the same name again for ever."""
    pod, container = await running_pod(node, "crowded")
    await asyncio.to_thread(
        subprocess.run,
        ["ip", "-n", Path(node.netns).name, "link", "add", "net1", "type", "veth", "peer", "name", "other1"],
        check=True,
    )

    node.annotate("crowded", "hot-a")

    await eventually(lambda: node.recorded(container), _equals({"eth0": "added", "net2": "added"}))
    assert await node.links() == {"lo", "eth0", "net1", "other1", "net2"}
    await eventually(lambda: _async(node.status_interfaces("crowded")), lambda ifs: ifs == ["eth0", "net2"])
    await eventually(lambda: _async(dict(node.reconciler.pending)), lambda pending: not pending)
    assert not node.events("FailedAddingInterface")

    await node.engine.delete(node.request(Command.DEL, pod, container))
    assert await node.links() == {"lo", "net1", "other1"}


@pytest.fixture
def second_netns() -> Iterator[str]:
    """The netns of a second sandbox of the same pod (the runtime recreated it)."""
    name = f"mpw{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield f"/var/run/netns/{name}"
    subprocess.run(["ip", "netns", "delete", name], check=False)


async def test_a_hot_plug_of_a_replaced_sandbox_never_overwrites_the_network_status_of_its_successor(
    running: Running,
    database: Database,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    second_netns: str,
    tmp_path: Path,
) -> None:
    """Reviewer's finding 3: the reconciler wrote network-status outside the sandbox's lock without
    checking that the sandbox was still the pod's newest. Sandbox A's hot-plug is held in its
    delegate while the runtime adds sandbox B for the same pod, whose ADD writes the status; A's
    hot-plug then finishes and must not put A's interfaces back in the annotation."""
    nads(emulator, layout)
    bin_dir = tmp_path / "bin"
    install_recorder(bin_dir)
    held = tmp_path / "held"
    emulator.create_nad(
        "default",
        "slow",
        {
            "cniVersion": "1.0.0",
            "name": "slow",
            "type": "recorder",
            "recorder": {"log": str(tmp_path / "slow.log"), "rendezvous": {"dir": str(held), "count": 2}},
        },
    )
    await nads_mirrored(running)
    await eventually(partial(running.watchers.nads.get_nad, "default", "slow"), lambda nad: nad is not None)
    engine, reconciler = build(
        database=database, watchers=running.watchers, layout=layout, extra_cni_path=(str(bin_dir),)
    )
    node = Node(engine, reconciler, emulator, layout, netns, database)
    async with reconciling(reconciler, running):
        pod, old = await running_pod(node, "reborn")
        node.annotate("reborn", "slow@net3")
        try:
            await eventually(lambda: _async(sorted(held.glob("*"))), _equals([held / "net3"]))

            # the runtime replaces the sandbox; the pod's annotation changes meanwhile (so that the
            # new sandbox's ADD does not meet the held delegate)
            node.annotate("reborn", "hot-a@net3")
            await eventually(
                partial(running.watchers.pods.get_pod, "default", "reborn"),
                lambda mirrored: mirrored is not None and mirrored.annotations.get(NETWORKS) == "hot-a@net3",
            )
            new = secrets.token_hex(32)
            replaced = dataclasses.replace(node.request(Command.ADD, pod, new), netns=second_netns)
            answer = await engine.add(replaced)
            new_ips = [ip["address"].partition("/")[0] for ip in answer["ips"]]
            assert _status_ips(node, "reborn")["eth0"] == new_ips
            passes = reconciler.passes
        finally:
            (held / "release").write_text("")  # the old sandbox's hot-plug ADD of net3 finishes

        await eventually(lambda: node.recorded(old), _equals({"eth0": "added", "net3": "added"}))
        await eventually(lambda: _async(reconciler.passes), lambda done: done > passes)

        assert _status_ips(node, "reborn")["eth0"] == new_ips
        await engine.delete(node.request(Command.DEL, pod, old))
        await engine.delete(replaced)


def _status_ips(node: Node, name: str) -> dict[str, list[str]]:
    annotations = node.emulator.get_pod("default", name)["metadata"].get("annotations") or {}
    return {entry["interface"]: entry.get("ips", []) for entry in json.loads(annotations.get(STATUS, "[]"))}


async def test_a_deleted_pod_whose_sandbox_is_still_recorded_holds_no_other_pod_back(
    api: Any,
    database: Database,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    second_netns: str,
    settings: WatchSettings,
) -> None:
    """Reviewer's finding 4: a pod deleted from the API whose sandbox the runtime has not DELed yet
    is queued by every resync; the reconciler asked for it as an ADD does (wait ``pod_wait`` for the
    watch, then a live GET) while every other pod waited. Here ``pod_wait`` outlasts the test: the
    other pod's change is served only if the gone pod's look does not wait."""
    patient = dataclasses.replace(settings, pod_wait=3600.0)
    nads(emulator, layout)
    async with Running.start(api=api, database=database, node_name=NODE, settings=patient) as running:
        await nads_mirrored(running)
        seen = SeenReads(running.watchers.pods)
        engine, reconciler = build(
            database=database, watchers=running.watchers, layout=layout, hotplug_pods=seen
        )
        node = Node(engine, reconciler, emulator, layout, netns, database)
        async with reconciling(reconciler, running):
            gone, gone_container = await running_pod(node, "gone")
            alive = emulator.create_pod(pod_manifest("alive"))
            alive_container = secrets.token_hex(32)
            alive_request = dataclasses.replace(
                node.request(Command.ADD, alive, alive_container), netns=second_netns
            )
            await engine.add(alive_request)
            emulator.delete_pod("default", "gone")
            await eventually(mirrored_pods(database), lambda pods: ("default", "gone") not in pods)

            seen.asked.clear()
            await reconciler.resync()
            await eventually(lambda: _async(seen.asked), lambda asked: "gone" in asked)
            node.annotate("alive", "hot-a@net3")

            await eventually(
                lambda: node.recorded(alive_container), _equals({"eth0": "added", "net3": "added"})
            )
            assert await node.recorded(gone_container) == {"eth0": "added"}
            await engine.delete(node.request(Command.DEL, gone, gone_container))
            await engine.delete(dataclasses.replace(alive_request, command=Command.DEL))


@pytest.fixture
def at_most_two_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's configuration bounds a pod to two networks (``maxNetworksPerPod``); taken
    before ``node`` builds its engine and reconciler."""
    conf = Layout.conf
    monkeypatch.setattr(Layout, "conf", lambda self: dataclasses.replace(conf(self), max_networks_per_pod=2))


async def test_hot_plug_holds_the_pod_to_the_configured_number_of_networks(
    at_most_two_networks: None, node: Node
) -> None:
    """The reconciler parsed the annotation with the default bound (256), whatever
    ``maxNetworksPerPod`` said: networks an ADD would refuse were hot-plugged."""
    pod, container = await running_pod(node, "bounded", "hot-a@net1")

    node.annotate("bounded", "hot-a@net1, hot-b@net2, hot-a@net3")

    await eventually(lambda: _async(node.events("FailedAddingInterface")), _has("at most 2"))
    assert await node.recorded(container) == {"eth0": "added", "net1": "added"}
    await node.engine.delete(node.request(Command.DEL, pod, container))


async def _pass_done(node: Node, during: list[int]) -> None:
    """Until the reconciler has finished the pass during which ``during`` got its count of passes."""
    await eventually(lambda: _async(during), bool)
    await eventually(lambda: _async(node.reconciler.passes), lambda passes: passes > during[0])


async def test_a_hot_plug_whose_sandbox_the_runtime_deled_meanwhile_announces_nothing(
    node: Node, running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod, container = await running_pod(node, "web", "hot-b@net1")
    resolver = node.reconciler._resolver
    planned = resolver.plan_hotplug
    during: list[int] = []

    async def runtime_del_first(*args: Any, **kwargs: Any) -> Any:
        during.append(node.reconciler.passes)
        await node.engine.delete(node.request(Command.DEL, pod, container))  # takes the lock first
        return await planned(*args, **kwargs)

    monkeypatch.setattr(resolver, "plan_hotplug", runtime_del_first)
    node.annotate("web", "hot-b@net1, hot-a@net3")
    await _pass_done(node, during)
    async with asyncio.timeout(10):
        await running.watchers.events.drained()

    assert node.events("FailedAddingInterface") == []
    assert ("default", "web") not in node.reconciler.pending  # nothing left to retry
    assert await node.recorded(container) == {}
    assert await node.links() == {"lo"}


async def test_a_hot_unplug_whose_sandbox_the_runtime_deled_meanwhile_announces_nothing(
    node: Node, running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod, container = await running_pod(node, "web", "hot-b@net1")
    detach = node.engine.detach_delegate
    during: list[int] = []

    async def runtime_del_first(request: SandboxRequest) -> None:
        during.append(node.reconciler.passes)
        await node.engine.delete(node.request(Command.DEL, pod, container))
        await detach(request)

    monkeypatch.setattr(node.engine, "detach_delegate", runtime_del_first)
    node.annotate("web", "")
    await _pass_done(node, during)
    async with asyncio.timeout(10):
        await running.watchers.events.drained()

    assert node.events("RemovedInterface") == []
    assert node.events("FailedRemovingInterface") == []
    assert ("default", "web") not in node.reconciler.pending
    assert await node.recorded(container) == {}


async def test_a_pod_that_fails_for_hours_keeps_its_hot_plug_retried_and_the_reconciler_running(
    running: Running, database: Database, emulator: KubeApiEmulator, layout: Layout, netns: str
) -> None:
    """Each failed pass of a pod doubled its retry delay from ``backoff_initial`` as a float times
    ``2 ** failures``: past 1,024 failures in a row (about nine hours of a pod selecting a NAD it
    cannot have, retried every minute and at every resync) the int no longer converted to a float,
    the ``OverflowError`` ended the reconciler's task, and every restart of it met that pod first
    and crashed again: no pod of the node was hot-plugged any more. Here the delays are zero, so the
    failures pile up at once."""
    settings = ReconcilerSettings(backoff_initial=0.0, backoff_max=0.0, busy_retry=0.02)
    async with hotplug_node(running, database, emulator, layout, netns, reconciler_settings=settings) as node:
        pod, container = await running_pod(node, "stubborn")
        node.annotate("stubborn", "hot-dev@sriov1")  # a resourceName: refused, retried at each try
        await eventually(lambda: _async(node.reconciler.passes), lambda passes: passes > 1030, within=60)

        node.annotate("stubborn", "hot-a@net1")  # the others, and this pod, are still hot-plugged
        await eventually(lambda: node.recorded(container), _equals({"eth0": "added", "net1": "added"}))
        await node.engine.delete(node.request(Command.DEL, pod, container))


async def test_an_edit_of_the_annotation_starts_its_hot_plug_backoff_afresh(
    running: Running, database: Database, emulator: KubeApiEmulator, layout: Layout, netns: str
) -> None:
    """A pod's failed passes doubled its retry delay whatever its annotation asked: once edited,
    the first failure of what it asks now was retried as late as the next failure of what it
    asked before (up to the minute's cap), where an operator who just changed the annotation
    expects the next try soon. The failures of the old selection no longer count."""
    settings = ReconcilerSettings(backoff_initial=0.05, backoff_max=3600.0, busy_retry=0.02)
    key = ("default", "edited")
    async with hotplug_node(running, database, emulator, layout, netns, reconciler_settings=settings) as node:
        pod, container = await running_pod(node, "edited")

        async def retry() -> Any:
            return node.reconciler._retries.get(key)

        node.annotate("edited", "missing-nad@net9")  # not found: retried, each delay doubled
        before = await eventually(retry, lambda r: r is not None and r.failures >= 6, within=60)
        assert "missing-nad" in before.last_error

        node.annotate("edited", "missing-other@net8")  # still failing, but another ask
        after = await eventually(retry, lambda r: r is not None and "missing-other" in r.last_error)
        assert after.failures < 3  # counted afresh (before: 7 or more, the next try minutes away)
        node.annotate("edited", "")
        await node.engine.delete(node.request(Command.DEL, pod, container))
