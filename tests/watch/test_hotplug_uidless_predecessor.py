"""A pod recreated under its name is another pod (invariant 8), even when the runtime named the
sandbox of its predecessor by name only (no ``K8S_POD_UID`` in its CNI_ARGS, as older runtimes
send): native hot-plug must not take that sandbox for the new pod's.

The sandbox then records no pod UID, but its delegates were given the UID of the pod its ADD
resolved (``networks.delegate_cni_args``, as upstream fills it from its informer): that is the
pod it belongs to. Real: the emulator over HTTP, the pod and NAD watches into SQLite, the
reconciler, the engine, bridge + host-local in a real netns.
"""

from __future__ import annotations

import json
import secrets
from functools import partial

from app.attach.requests import Command
from app.sandbox.kubeapi import KubeApiEmulator
from app.store import checkpoints
from app.store.database import Database
from tests.watch.hotplug_node import Layout, build
from tests.watch.support import NETWORKS, Running, eventually, pod_manifest

STATUS = "k8s.v1.cni.cncf.io/network-status"


async def test_a_recreated_pod_is_neither_hot_plugged_into_nor_published_from_its_predecessors_sandbox(
    running: Running, database: Database, emulator: KubeApiEmulator, layout: Layout, netns: str
) -> None:
    """web-0 is deleted and made again (a StatefulSet's pod, force-deleted) before the runtime DELs
    its old sandbox. The new web-0's annotation asks for hot-a: it was hot-plugged into the old
    pod's sandbox, and that sandbox's network-status written on the new, live pod."""
    emulator.create_nad("default", "hot-a", layout.bridge_conf("hot-a", "10.231.0.0/24", suffix="a"))
    await eventually(partial(running.watchers.nads.get_nad, "default", "hot-a"), lambda nad: nad is not None)
    engine, reconciler = build(database=database, watchers=running.watchers, layout=layout)
    old_pod = emulator.create_pod(pod_manifest("web-0"))
    container = secrets.token_hex(32)
    added = layout.request(Command.ADD, old_pod, container, netns=netns, with_uid=False)
    await engine.add(added)
    try:
        record = await engine.load_sandbox(container)
        assert record is not None
        assert record.pod.uid == ""  # the runtime named the pod by name only

        emulator.delete_pod("default", "web-0")
        new_pod = emulator.create_pod(pod_manifest("web-0", annotations={NETWORKS: "hot-a@net1"}))
        new_uid = new_pod["metadata"]["uid"]
        assert new_uid != old_pod["metadata"]["uid"]
        await eventually(
            partial(running.watchers.pods.mirrored_pod, "default", "web-0"),
            lambda pod: pod is not None and pod.uid == new_uid,
        )

        assert await reconciler.reconcile("default", "web-0") is None  # the new pod has no sandbox yet

        attachments = await database.read(partial(checkpoints.load_sandbox, container_id=container))
        assert attachments is not None
        assert {a.ifname: a.state for a in attachments.attachments} == {"eth0": "added"}
        annotations = emulator.get_pod("default", "web-0")["metadata"].get("annotations") or {}
        assert STATUS not in annotations, json.loads(annotations[STATUS])
    finally:
        await engine.delete(layout.request(Command.DEL, old_pod, container, netns=netns, with_uid=False))
