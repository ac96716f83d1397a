"""What an ADD reads when the mirror lags behind the API: never a predecessor's data, and a NAD
created just before its pod is asked of the API rather than failed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from app.attach.netconf import MultusNetConf
from app.attach.networks import ClusterSources, NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni.types import CniError, ContainerId, ErrorCode, IfName
from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Database
from app.store.records import PodIdentity
from app.watch.api import KubeApi
from app.watch.settings import WatchSettings
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


NAD_WATCH = "network-attachment-definitions.*watch=true"
NAD_GETS = r"/network-attachment-definitions/[^?]+$"


def add_request(pod: dict[str, Any], conf: MultusNetConf) -> SandboxRequest:
    metadata = pod["metadata"]
    namespace, name, uid = metadata["namespace"], metadata["name"], metadata["uid"]
    return SandboxRequest(
        command=Command.ADD,
        container_id=ContainerId("c" * 64),
        netns="/var/run/netns/none",
        ifname=IfName("eth0"),
        cni_args=(("K8S_POD_NAMESPACE", namespace), ("K8S_POD_NAME", name), ("K8S_POD_UID", uid)),
        pod=PodIdentity(namespace, name, uid),
        conf=conf,
    )


def primary_conf(tmp_path: Path, **overrides: Any) -> MultusNetConf:
    """The cluster network ``primary``, a conf file (its NAD lookup misses, as usual)."""
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-primary.conf").write_text(json.dumps(recorder_net("primary", tmp_path / "log")))
    conf = recorder_multus_conf(conf_dir=conf_dir, bin_dir=tmp_path / "bin")
    return dataclasses.replace(conf, **overrides)


def nad_gets(emulator: KubeApiEmulator, since: int) -> list[str]:
    return [record.path for record in emulator.requests(since=since, method="GET", path=NAD_GETS)]


@asynccontextmanager
async def nad_watch_lagging(emulator: KubeApiEmulator) -> AsyncIterator[None]:
    """The NAD watch stalls (its next stream is held back): what is created meanwhile is not mirrored."""
    async with asyncio.timeout(5):
        await emulator.wait_for_watch("network-attachment-definitions")
    emulator.faults.add_latency(30, path=NAD_WATCH)
    emulator.drop_watches()
    try:
        yield
    finally:
        emulator.faults.clear_latency()


@pytest.mark.parametrize("named_by", ["the pod's annotation", "defaultNetworks"])
async def test_a_nad_created_just_before_its_pod_is_asked_of_the_api_once_not_failed(
    emulator: KubeApiEmulator, running: Running, tmp_path: Path, named_by: str
) -> None:
    """The NAD watch lags behind the API: the ADD of a pod naming a NAD created just before it
    must not fail with not-found (upstream fails it: its informer has not seen the NAD either)."""
    by_annotation = named_by == "the pod's annotation"
    conf = primary_conf(tmp_path, default_networks=() if by_annotation else ("late",))
    namespace = "default" if by_annotation else conf.multus_namespace
    watchers = running.watchers
    resolver = NetworkResolver(
        cluster=ClusterSources(pods=watchers.pods, nads=watchers.nads, events=watchers.publisher)
    )
    async with nad_watch_lagging(emulator):
        emulator.create_nad(namespace, "late", json.dumps(recorder_net("late", tmp_path / "log")))
        selections = "late" if by_annotation else ""
        pod = emulator.create_pod(pod_manifest("web", annotations={NETWORKS: selections}))
        since = emulator.last_request_seq

        resolution = await resolver.resolve(add_request(pod, conf))

        assert await watchers.nads.get_nad(namespace, "late") is None, "the watch still lags"
    assert [plan.network_name for plan in resolution.plans] == ["primary", f"{namespace}/late"]
    assert nad_gets(emulator, since) == [
        f"/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions/late"
    ]
    assert watchers.nads.live_gets == 1


async def test_a_nad_that_does_not_exist_fails_the_add_as_upstream_after_one_live_get(
    emulator: KubeApiEmulator, running: Running, tmp_path: Path
) -> None:
    conf = primary_conf(tmp_path)
    watchers = running.watchers
    resolver = NetworkResolver(cluster=ClusterSources(pods=watchers.pods, nads=watchers.nads))
    pod = emulator.create_pod(pod_manifest("web", annotations={NETWORKS: "absent"}))
    since = emulator.last_request_seq

    with pytest.raises(CniError) as raised:
        await resolver.resolve(add_request(pod, conf))

    assert raised.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert raised.value.msg == "cannot find a network-attachment-definition (absent) in namespace (default)"
    assert raised.value.details == 'networkattachmentdefinition.k8s.cni.cncf.io "absent" not found'
    assert len(nad_gets(emulator, since)) == 1


async def test_a_missing_nad_the_api_cannot_confirm_is_try_again_later_not_not_found(
    emulator: KubeApiEmulator, running: Running, tmp_path: Path
) -> None:
    conf = primary_conf(tmp_path)
    watchers = running.watchers
    resolver = NetworkResolver(cluster=ClusterSources(pods=watchers.pods, nads=watchers.nads))
    pod = emulator.create_pod(pod_manifest("web", annotations={NETWORKS: "unknown"}))
    emulator.faults.fail_next(1, status=503, method="GET", path=NAD_GETS)

    with pytest.raises(CniError) as raised:
        await resolver.resolve(add_request(pod, conf))

    assert raised.value.code == ErrorCode.TRY_AGAIN_LATER
    assert "default/unknown" in raised.value.msg


async def test_a_mirrored_nad_and_a_cluster_network_from_a_file_cost_the_add_no_api_request(
    emulator: KubeApiEmulator, running: Running, database: Database, tmp_path: Path
) -> None:
    conf = primary_conf(tmp_path)
    watchers = running.watchers
    resolver = NetworkResolver(cluster=ClusterSources(pods=watchers.pods, nads=watchers.nads))
    emulator.create_nad("default", "net1", json.dumps(recorder_net("net1", tmp_path / "log")))
    pod = emulator.create_pod(pod_manifest("web", annotations={NETWORKS: "net1"}))
    await eventually(mirrored_pods(database), lambda pods: ("default", "web") in pods)
    await eventually(lambda: watchers.nads.get_nad("default", "net1"), lambda nad: nad is not None)
    since = emulator.last_request_seq

    resolution = await resolver.resolve(add_request(pod, conf))

    assert [plan.network_name for plan in resolution.plans] == ["primary", "default/net1"]
    assert emulator.requests(since=since) == []


NAD_LISTS = r"network-attachment-definitions(\?(?!.*watch=true)|$)"


async def test_a_nad_mirror_that_never_synced_falls_back_to_a_conf_file_or_one_live_get(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings, tmp_path: Path
) -> None:
    """Every NAD LIST fails, so the NAD mirror never syncs: the cluster network still resolves
    from its conf file, and a NAD the annotation names is asked of the API once; neither ends in
    an internal error (code 999, a traceback) as the unsynced mirror's error did."""
    emulator.faults.fail_next(10_000, status=503, method="GET", path=NAD_LISTS)
    emulator.create_nad("default", "net1", json.dumps(recorder_net("net1", tmp_path / "log")))
    conf = primary_conf(tmp_path)
    async with Running.start(api=api, database=database, settings=settings, wait_synced=False) as running:
        watchers = running.watchers
        resolver = NetworkResolver(cluster=ClusterSources(pods=watchers.pods, nads=watchers.nads))
        pod = emulator.create_pod(pod_manifest("web", annotations={NETWORKS: "net1"}))
        await eventually(mirrored_pods(database), lambda pods: ("default", "web") in pods)
        since = emulator.last_request_seq

        resolution = await resolver.resolve(add_request(pod, conf))

        assert not all(state.synced.is_set() for state in watchers.nad_states), "the NAD mirror never synced"
    assert [plan.network_name for plan in resolution.plans] == ["primary", "default/net1"]
    assert nad_gets(emulator, since) == [
        "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/net1"
    ]
