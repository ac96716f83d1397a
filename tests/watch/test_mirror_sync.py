"""The mirror follows the API: first sync, then every create, update and delete, and nothing more."""

from __future__ import annotations

import asyncio
import dataclasses
from functools import partial

import pytest

from app.sandbox.kubeapi import KubeApiEmulator
from app.sandbox.resources import NETWORK_ATTACHMENT_DEFINITIONS
from app.store import mirror
from app.store.database import Database
from app.store.mirror_records import MirrorCounts, PodRecord
from app.watch.api import KubeApi
from app.watch.mirroring import MirrorWriter
from app.watch.readiness import MirrorState
from app.watch.resources import Delete, Upsert, pods_on_node
from app.watch.settings import WatchSettings
from tests.watch.support import (
    FAST_SETTINGS,
    NETWORKS,
    NODE,
    OTHER_NODE,
    Running,
    eventually,
    mirrored_nads,
    mirrored_pods,
    nad_config,
    pod_manifest,
    watch_state,
)

STATUS = "k8s.v1.cni.cncf.io/network-status"
PODS_HERE = pods_on_node(NODE, kept_annotations=(NETWORKS,))


async def test_first_sync_mirrors_only_this_nodes_pods_and_every_nad(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    emulator.create_namespace("team")
    for index in range(7):
        emulator.create_pod(pod_manifest(f"mine-{index}", namespace="team" if index % 2 else "default"))
    emulator.create_pod(pod_manifest("elsewhere", node=OTHER_NODE))
    emulator.create_nad("default", "macvlan", nad_config("macvlan"))
    emulator.create_nad(
        "team", "sriov", nad_config("sriov"), annotations={"k8s.v1.cni.cncf.io/resourceName": "x/y"}
    )
    emulator.create_nad("team", "from-file")

    async with Running.start(api=api, database=database, settings=settings) as running:
        pods = await mirrored_pods(database)()
        nads = await mirrored_nads(database)()

        assert running.watchers.synced
    assert sorted(pods) == sorted(
        [("team" if index % 2 else "default", f"mine-{index}") for index in range(7)]
    )
    assert {pod.node_name for pod in pods.values()} == {NODE}
    assert sorted(nads) == [("default", "macvlan"), ("team", "from-file"), ("team", "sriov")]
    assert nads[("team", "sriov")].resource_name == "x/y"
    assert nads[("team", "sriov")].config == nad_config("sriov")
    assert nads[("team", "from-file")].config == ""
    lists = emulator.requests(method="GET", path=r"/pods\?")
    assert lists
    assert all("fieldSelector=spec.nodeName%3Dnode-a" in record.path for record in lists)


async def test_only_the_kept_annotations_are_mirrored(
    emulator: KubeApiEmulator, running: Running, database: Database
) -> None:
    created = emulator.create_pod(
        pod_manifest(
            "p",
            annotations={
                NETWORKS: "macvlan",
                "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 1000 + "}",
                STATUS: "[]",
            },
        )
    )

    pods = await eventually(mirrored_pods(database), lambda pods: ("default", "p") in pods)

    pod = pods[("default", "p")]
    assert dict(pod.annotations) == {NETWORKS: "macvlan"}
    assert pod.uid == created["metadata"]["uid"]
    assert pod.resource_version == created["metadata"]["resourceVersion"]


async def test_creates_updates_and_deletes_reach_the_mirror(
    emulator: KubeApiEmulator, running: Running, database: Database
) -> None:
    emulator.create_pod(pod_manifest("p"))
    emulator.create_nad("default", "net", nad_config("v1"))
    await eventually(mirrored_pods(database), lambda pods: ("default", "p") in pods)

    emulator.patch_pod("default", "p", {"metadata": {"annotations": {NETWORKS: "net"}}})
    emulator.patch(NETWORK_ATTACHMENT_DEFINITIONS, "default", "net", {"spec": {"config": nad_config("v2")}})
    pods = await eventually(
        mirrored_pods(database),
        lambda pods: (
            pods.get(("default", "p")) is not None
            and pods[("default", "p")].annotations.get(NETWORKS) == "net"
        ),
    )
    nads = await eventually(
        mirrored_nads(database), lambda nads: nads[("default", "net")].config == nad_config("v2")
    )
    assert pods[("default", "p")].annotations == {NETWORKS: "net"}
    assert nads[("default", "net")].config == nad_config("v2")

    emulator.delete_pod("default", "p")
    emulator.delete_nad("default", "net")
    await eventually(mirrored_pods(database), lambda pods: not pods)
    await eventually(mirrored_nads(database), lambda nads: not nads)


async def test_a_recreated_pod_replaces_its_predecessor_in_the_mirror(
    emulator: KubeApiEmulator, running: Running, database: Database
) -> None:
    emulator.create_pod(pod_manifest("p"))
    emulator.delete_pod("default", "p")
    second = emulator.create_pod(pod_manifest("p"))

    pods = await eventually(
        mirrored_pods(database),
        lambda pods: ("default", "p") in pods and pods[("default", "p")].uid == second["metadata"]["uid"],
    )

    assert len(pods) == 1


async def test_a_pod_moved_to_another_node_leaves_the_mirror(
    emulator: KubeApiEmulator, running: Running, database: Database
) -> None:
    emulator.create_pod(pod_manifest("moving"))
    emulator.create_pod(pod_manifest("staying"))
    await eventually(mirrored_pods(database), lambda pods: len(pods) == 2)

    emulator.patch_pod("default", "moving", {"spec": {"nodeName": OTHER_NODE}})

    pods = await eventually(mirrored_pods(database), lambda pods: len(pods) == 1)
    assert list(pods) == [("default", "staying")]


async def test_bookmarks_advance_the_stored_resource_version(
    emulator: KubeApiEmulator, running: Running, database: Database
) -> None:
    emulator.create_pod(pod_manifest("elsewhere", node=OTHER_NODE))
    emulator.create_namespace("unrelated")
    current = emulator.resource_version

    state = await eventually(
        watch_state(database, "pods"),
        lambda state: state is not None and state.resource_version == current,
    )

    assert state is not None
    assert state.events == 0
    in_memory = running.watchers.pod_state  # updated once the commit has returned to the loop
    await eventually(lambda: asyncio.sleep(0, result=in_memory.resource_version), lambda rv: rv == current)


async def test_nads_can_be_watched_in_chosen_namespaces_only(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    for namespace in ("a", "b", "c"):
        emulator.create_namespace(namespace)
        emulator.create_nad(namespace, "net", nad_config(namespace))

    async with Running.start(
        api=api, database=database, settings=settings, nad_namespaces=["a", "b"]
    ) as running:
        emulator.create_nad("b", "later", nad_config("later"))
        emulator.create_nad("c", "later", nad_config("later"))
        nads = await eventually(mirrored_nads(database), lambda nads: ("b", "later") in nads)
        ignored = await running.watchers.nads.get_nad("c", "net")

    assert sorted(nads) == [("a", "net"), ("b", "later"), ("b", "net")]
    assert ignored is None
    assert sorted(running.watchers.states) == ["nads/a", "nads/b", "pods"]
    assert await database.read(mirror.counts) == MirrorCounts(pods=0, nads=3)


# No position-only commit may come in between, however slowly the echo arrives (the test settings
# persist the position after 0.2 s): only the echo's own write is counted.
@pytest.mark.parametrize("settings", [dataclasses.replace(FAST_SETTINGS, position_persist_interval=3600.0)])
async def test_the_echo_of_our_own_status_patch_is_not_written_but_kept_changes_are(
    emulator: KubeApiEmulator, running: Running, database: Database
) -> None:
    emulator.create_pod(pod_manifest("p"))
    writer = running.watchers.writers[0]
    # The writer's own count moves once its commit is back on the loop, which a reader of the store
    # may see before: wait for what the writer holds, not for the row.
    await eventually(
        lambda: asyncio.sleep(0, result=writer.held(("default", "p"))[1]), lambda held: held is not None
    )
    pod_state = running.watchers.pod_state
    writes_before = writer.writes
    status = {"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": "[]"}}}

    emulator.patch_pod("default", "p", status, status=True)
    echo_rv = emulator.resource_version
    await eventually(lambda: asyncio.sleep(0, result=pod_state.resource_version), lambda rv: rv == echo_rv)

    assert writer.echoes_skipped == 1
    assert writer.writes == writes_before, "an event changing nothing kept costs no commit"

    emulator.patch_pod("default", "p", {"metadata": {"annotations": {NETWORKS: "net"}}})
    pods = await eventually(
        mirrored_pods(database), lambda pods: pods[("default", "p")].annotations.get(NETWORKS) == "net"
    )
    assert pods[("default", "p")].annotations == {NETWORKS: "net"}


async def test_a_change_undone_within_one_batch_is_written_not_taken_for_an_echo(
    database: Database,
) -> None:
    writer = MirrorWriter(database=database, target=PODS_HERE, state=MirrorState("pods"))
    first = PodRecord("default", "p", "uid-1", NODE, "1", {NETWORKS: "a"})
    await writer.write_snapshot([first], "1")

    changed = dataclasses.replace(first, resource_version="2", annotations={NETWORKS: "b"})
    changed_back = dataclasses.replace(first, resource_version="3")
    await writer.write_batch([Upsert(changed), Upsert(changed_back)])

    stored = await database.read(partial(mirror.get_pod, namespace="default", name="p"))
    assert stored == changed_back, "the second event matches the mirror from before the batch only"
    assert writer.held(("default", "p")) == (True, changed_back)
    assert writer.echoes_skipped == 0


async def test_the_writer_holds_what_it_committed_and_knows_when_it_cannot_tell(
    database: Database,
) -> None:
    pod = PodRecord("default", "p", "uid-1", NODE, "5", {NETWORKS: "a"})
    resumed = MirrorWriter(database=database, target=PODS_HERE, state=MirrorState("pods"))
    resumed.resource_version = "4"  # resumed from a stored position: no relist yet
    await resumed.write_batch([Upsert(pod)])

    assert resumed.held(("default", "p")) == (True, pod)
    assert resumed.held(("default", "other")) == (False, None), "only a relist tells what is absent"

    await resumed.write_batch([Upsert(dataclasses.replace(pod, resource_version="6"))])
    assert resumed.held(("default", "p")) == (True, pod), "an echo is not written: the store keeps rv 5"
    assert await database.read(partial(mirror.get_pod, namespace="default", name="p")) == pod

    await resumed.write_batch([Delete(("default", "p"), "7")])
    assert resumed.held(("default", "p")) == (False, None)

    await resumed.write_snapshot([], "8")
    assert resumed.held(("default", "p")) == (True, None)
    assert resumed.held(("default", "other")) == (True, None)
