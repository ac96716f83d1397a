"""What GC is told about this node's pods (``Watchers.presence``): never a pod the API has shown
alive taken for gone because the pod watch lags behind it (invariant 10), and nothing kept alive
once the watch has caught up."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from app.attach.cluster import ClusterUnavailableError
from app.attach.engine import AttachEngine
from app.attach.netconf import MultusNetConf
from app.attach.networks import ClusterSources, NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cli.main import render_gc
from app.cni.types import ContainerId, IfName
from app.gc.collector import GarbageCollector
from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Database
from app.store.records import PodIdentity
from tests.watch.support import (
    NODE,
    Running,
    eventually,
    install_recorder,
    mirrored_pods,
    pod_manifest,
    recorder_engine,
    recorder_multus_conf,
    recorder_net,
)

POD_WATCH = "/pods.*watch=true"


@asynccontextmanager
async def pod_watch_lagging(emulator: KubeApiEmulator) -> AsyncIterator[None]:
    """The pod watch stalls (each new stream is held back): what changes meanwhile is not mirrored."""
    async with asyncio.timeout(5):
        await emulator.wait_for_watch("/pods")
    emulator.faults.add_latency(30, path=POD_WATCH)
    emulator.drop_watches()
    try:
        yield
    finally:
        emulator.faults.clear_latency()


def engine_of_the_watchers(
    running: Running, database: Database, tmp_path: Path
) -> tuple[AttachEngine, MultusNetConf]:
    """An engine resolving pods and NADs through the running watchers and writing network-status
    through them, as the daemon wires it, with the recorder plugin as its cluster network; and the
    multus conf its requests carry."""
    bin_dir = tmp_path / "bin"
    install_recorder(bin_dir)
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-primary.conf").write_text(json.dumps(recorder_net("primary", tmp_path / "log")))
    watchers = running.watchers
    engine = recorder_engine(
        database=database,
        resolver=NetworkResolver(cluster=ClusterSources(pods=watchers.pods, nads=watchers.nads)),
        status=watchers.publisher,
        sysfs=tmp_path / "sys",
    )
    return engine, recorder_multus_conf(conf_dir=conf_dir, bin_dir=bin_dir)


def add_of_web(container: str, netns: str, conf: MultusNetConf, *, uid: str) -> SandboxRequest:
    """The runtime's ADD of pod ``default/web``'s sandbox; without ``K8S_POD_UID`` when ``uid`` is
    "" (as older runtimes send it)."""
    return SandboxRequest(
        command=Command.ADD,
        container_id=ContainerId(container),
        netns=netns,
        ifname=IfName("eth0"),
        cni_args=(
            ("K8S_POD_NAMESPACE", "default"),
            ("K8S_POD_NAME", "web"),
            *((("K8S_POD_UID", uid),) if uid else ()),
        ),
        pod=PodIdentity("default", "web", uid),
        conf=conf,
    )


async def presence(running: Running) -> dict[tuple[str, str], str] | None:
    pods = await running.watchers.presence.pods_on_node()
    return None if pods is None else dict(pods)


async def test_a_pod_an_add_found_by_a_live_get_is_not_taken_for_gone_while_the_pod_watch_lags(
    emulator: KubeApiEmulator, running: Running, database: Database
) -> None:
    """The ADD of a pod the lagging watch has not brought yet is answered by a live GET and
    succeeds; a GC pass right after must not read the synced mirror's silence as "pod gone" and
    tear the running pod's networks down (it did: only the mirror was asked)."""
    async with pod_watch_lagging(emulator):
        uid = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]

        found = await running.watchers.pods.get_pod("default", "web", uid=uid)
        told = await presence(running)

        assert await mirrored_pods(database)() == {}, "the watch still lags"
    assert found is not None
    assert found.uid == uid
    assert running.watchers.pods.live_gets == 1
    assert told == {("default", "web"): uid}


async def test_gc_leaves_alone_a_sandbox_whose_add_found_its_pod_by_a_live_get(
    emulator: KubeApiEmulator, running: Running, database: Database, tmp_path: Path, netns: str
) -> None:
    """The whole way: an ADD through the engine while the pod watch lags, then a GC pass with the
    presence the daemon gives it: the live pod's sandbox is no orphan (it was: "pod-gone")."""
    watchers = running.watchers
    engine, conf = engine_of_the_watchers(running, database, tmp_path)
    collector = GarbageCollector(engine=engine, db=database, pods=watchers.presence)
    async with pod_watch_lagging(emulator):
        uid = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
        await engine.add(add_of_web("c" * 64, netns, conf, uid=uid))

        report = await collector.run_once(dry_run=True)

        assert await mirrored_pods(database)() == {}, "the watch still lags"
    assert report.examined == 1
    assert report.orphans == []


async def test_a_pod_recreated_while_the_watch_lags_is_told_by_its_new_uid(
    emulator: KubeApiEmulator, running: Running, database: Database
) -> None:
    """The mirror still holds the predecessor: GC must see the new UID (the predecessor's
    sandbox is replaced, the new pod's is not), not the predecessor's."""
    old = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
    await eventually(mirrored_pods(database), lambda pods: ("default", "web") in pods)
    async with pod_watch_lagging(emulator):
        emulator.delete_pod("default", "web")
        new = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]

        found = await running.watchers.pods.get_pod("default", "web", uid=new)
        told = await presence(running)

        mirrored = await mirrored_pods(database)()
        assert mirrored[("default", "web")].uid == old, "the watch still lags"
    assert found is not None
    assert found.uid == new
    assert told == {("default", "web"): new}


async def test_a_live_sighting_ends_once_the_watch_has_caught_up_so_a_deleted_pod_is_gone(
    emulator: KubeApiEmulator, running: Running, database: Database
) -> None:
    async with pod_watch_lagging(emulator):
        uid = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
        assert await running.watchers.pods.get_pod("default", "web", uid=uid) is not None
    await eventually(mirrored_pods(database), lambda pods: ("default", "web") in pods)

    emulator.delete_pod("default", "web")

    await eventually(lambda: presence(running), lambda pods: pods == {})


async def test_a_pod_deleted_while_the_watch_lagged_is_gone_after_the_watch_catches_up(
    emulator: KubeApiEmulator, running: Running
) -> None:
    async with pod_watch_lagging(emulator):
        uid = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
        assert await running.watchers.pods.get_pod("default", "web", uid=uid) is not None
        emulator.delete_pod("default", "web")

    await eventually(lambda: presence(running), lambda pods: pods == {})


async def test_a_relist_listed_after_a_live_get_ends_its_sighting(
    emulator: KubeApiEmulator, running: Running
) -> None:
    """The watch's history expired while it lagged (410): the relist that follows, listed after
    the GET, says all there is to say about the pod; it was deleted meanwhile."""
    relists = running.watchers.pod_state.relists
    async with pod_watch_lagging(emulator):
        uid = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
        assert await running.watchers.pods.get_pod("default", "web", uid=uid) is not None
        emulator.delete_pod("default", "web")
        emulator.compact()

    await eventually(lambda: presence(running), lambda pods: pods == {})
    assert running.watchers.pod_state.relists == relists + 1


async def test_the_api_asked_for_a_pod_confirms_it_gone_or_replaced_and_keeps_one_it_still_has(
    emulator: KubeApiEmulator, running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Before GC tears down what the mirror says is a gone or replaced pod's, the API is asked for
    the pod itself (``gone_from_api``): a mirror of the wrong node (``MULTUS_NODE_NAME`` not this
    node's) syncs without this node's pods, which the API still has. Gone (404) or another UID
    confirms the mirror; the same pod, wherever it runs, does not; an API that cannot
    be asked says neither."""
    presence = running.watchers.presence
    elsewhere = emulator.create_pod(pod_manifest("elsewhere", node="node-z"))["metadata"]["uid"]
    emulator.create_pod(pod_manifest("replaced"))
    emulator.delete_pod("default", "replaced")
    emulator.create_pod(pod_manifest("replaced"))

    with caplog.at_level(logging.WARNING, logger="app.watch.sources"):
        still_there = await presence.gone_from_api("default", "elsewhere", elsewhere)
    gone = await presence.gone_from_api("default", "never-was", "uid-1")
    replaced = await presence.gone_from_api("default", "replaced", "uid-of-the-first")
    unknown_uid = await presence.gone_from_api("default", "elsewhere", "")
    emulator.faults.fail_next(status=500, path="/pods/elsewhere")
    with pytest.raises(ClusterUnavailableError):  # nothing proven: neither gone nor still there
        await presence.gone_from_api("default", "elsewhere", "uid-1")

    assert (still_there, gone, replaced, unknown_uid) == (False, True, True, False)
    assert "'node-z'" in caplog.text, "the node the API says the pod runs on"
    assert repr(NODE) in caplog.text, "the node this mirror watches"


async def test_a_404_that_is_not_the_apis_answer_for_the_pod_proves_nothing(
    emulator: KubeApiEmulator, running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A 404 whose ``Status`` does not name the pod (a proxy's, a wrong path prefix's, a fault
    injected here) is no word of the API about the pod: taken for "gone", it would have GC tear
    down every sandbox the mirror disputes, the live ones of a wrong ``MULTUS_NODE_NAME`` first.
    It keeps the sandbox for as long as it lasts, so it is said at warning level, once per pod."""
    presence = running.watchers.presence
    elsewhere = emulator.create_pod(pod_manifest("elsewhere", node="node-z"))["metadata"]["uid"]
    emulator.faults.fail_next(2, status=404, path="/pods/elsewhere")

    with caplog.at_level(logging.WARNING, logger="app.watch.sources"):
        for _ in range(2):
            with pytest.raises(ClusterUnavailableError):
                await presence.gone_from_api("default", "elsewhere", elsewhere)

    assert await presence.gone_from_api("default", "elsewhere", elsewhere) is False, "the API's own answer"
    said = [r for r in caplog.records if "without naming the pod" in r.getMessage()]
    assert len(said) == 1
    assert "default/elsewhere" in said[0].getMessage()


async def test_a_sandbox_kept_because_the_api_did_not_answer_is_not_said_to_be_a_pod_the_api_still_has(
    emulator: KubeApiEmulator, running: Running, database: Database, tmp_path: Path, netns: str
) -> None:
    """A pod deleted for good, and the API failing the GET asked for it after the grace: the sandbox
    is kept (nothing is proven), but the report called it disputed, "the API still has the pod (is
    MULTUS_NODE_NAME right?)", sending the operator after a node name that is right, for a pod that
    is gone. It is kept as unanswered; the next pass the API answers collects it."""
    watchers = running.watchers
    engine, conf = engine_of_the_watchers(running, database, tmp_path)
    collector = GarbageCollector(engine=engine, db=database, pods=watchers.presence, pod_gone_grace=0)
    uid = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
    await eventually(mirrored_pods(database), lambda pods: ("default", "web") in pods)
    container = ContainerId("c" * 64)
    await engine.add(add_of_web(container, netns, conf, uid=uid))
    emulator.delete_pod("default", "web")
    await eventually(lambda: presence(running), lambda pods: pods == {})
    emulator.faults.fail_next(status=503, method="GET", path="/pods/web$")

    kept = await collector.run_once()
    collected = await collector.run_once()

    assert (kept.orphans, kept.disputed) == ([], [])
    assert kept.as_json()["unanswered"] == [
        {"containerID": container, "reason": "pod-gone", "pod": "default/web"}
    ]
    assert render_gc(kept.as_json())[-1] == (
        f"kept {container[:12]} (default/web): the mirror says pod-gone, the API could not be asked"
    )
    assert [orphan.container_id for orphan in collected.collected] == [container]


async def test_gc_leaves_alone_a_uidless_sandbox_whose_add_resolved_the_predecessor_the_watch_still_held(
    emulator: KubeApiEmulator, running: Running, database: Database, tmp_path: Path, netns: str
) -> None:
    """A StatefulSet's web is force-deleted and made again while the pod watch lags, and the runtime
    (one that sends no ``K8S_POD_UID``) ADDs the new pod's sandbox: the mirror answers by name with
    the predecessor. Recording that predecessor's UID as the sandbox's made GC, once the watch caught
    up, see the live pod "replaced", the API confirm it (it holds web under another UID), and tear
    the live pod's networks down."""
    watchers = running.watchers
    engine, conf = engine_of_the_watchers(running, database, tmp_path)
    collector = GarbageCollector(engine=engine, db=database, pods=watchers.presence, pod_gone_grace=0)
    old = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
    await eventually(mirrored_pods(database), lambda pods: ("default", "web") in pods)
    container = ContainerId("c" * 64)
    async with pod_watch_lagging(emulator):
        emulator.delete_pod("default", "web")
        new = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
        await engine.add(add_of_web(container, netns, conf, uid=""))
        assert (await mirrored_pods(database)())[("default", "web")].uid == old, "the watch still lags"
    await eventually(lambda: presence(running), lambda pods: pods == {("default", "web"): new})

    report = await collector.run_once()

    assert (report.orphans, report.collected) == ([], [])
    assert await engine.load_sandbox(container) is not None
