"""What an ADD reads when the mirror lags behind the API: never its predecessor's data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from app.attach.networks import ClusterSources, NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni.types import ContainerId, IfName
from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Database
from app.store.records import PodIdentity
from tests.watch.support import (
    NETWORKS,
    Running,
    eventually,
    mirrored_pods,
    pod_manifest,
    recorder_multus_conf,
    recorder_net,
)


async def test_a_pod_recreated_under_the_same_name_is_not_answered_with_its_predecessor(
    emulator: KubeApiEmulator, running: Running, database: Database, tmp_path: Path
) -> None:
    """A StatefulSet pod recreated while the pod watch lags: the ADD of the new pod must not
    fail on the old pod's UID still mirrored; it waits, then asks the API, as for a pod not
    mirrored yet."""
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-primary.conf").write_text(json.dumps(recorder_net("primary", tmp_path / "log")))
    conf = recorder_multus_conf(conf_dir=conf_dir, bin_dir=tmp_path / "bin")
    watchers = running.watchers
    resolver = NetworkResolver(cluster=ClusterSources(pods=watchers.pods, nads=watchers.nads))
    old = emulator.create_pod(pod_manifest("web"))
    await eventually(mirrored_pods(database), lambda pods: ("default", "web") in pods)
    async with asyncio.timeout(5):
        await emulator.wait_for_watch("/pods")
    emulator.faults.add_latency(30, path="/pods.*watch=true")  # the pod watch lags
    emulator.drop_watches()
    emulator.delete_pod("default", "web")
    new = emulator.create_pod(pod_manifest("web", annotations={NETWORKS: ""}))
    uid = new["metadata"]["uid"]
    assert uid != old["metadata"]["uid"]
    request = SandboxRequest(
        command=Command.ADD,
        container_id=ContainerId("c" * 64),
        netns="/var/run/netns/none",
        ifname=IfName("eth0"),
        cni_args=(("K8S_POD_NAMESPACE", "default"), ("K8S_POD_NAME", "web"), ("K8S_POD_UID", uid)),
        pod=PodIdentity("default", "web", uid),
        conf=conf,
    )
    try:
        resolution = await resolver.resolve(request)
    finally:
        emulator.faults.clear_latency()

    assert resolution.pod is not None
    assert resolution.pod.uid == uid
    assert watchers.pods.live_gets == 1
