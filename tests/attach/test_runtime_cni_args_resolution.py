"""The runtime's CNI_ARGS as each delegate of a pod receives them (network resolution, nothing run).

Upstream rebuilds every delegate's CNI_ARGS: ``IgnoreUnknown`` and the four ``K8S_POD_*`` keys in
that order, each present (``K8S_POD_UID`` filled from the pod when the runtime sent none). The
runtime's other keys (``IP=``, ``MAC=``) go to the cluster network's delegate only: handed to a NAD's
delegate, they had its host-local ask for the runtime's address in the NAD's own range.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.attach.cluster import NETWORKS_ANNOTATION
from app.attach.netconf import MultusNetConf
from app.attach.networks import ClusterSources, NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni.types import ContainerId, IfName
from app.store.mirror_records import NadRecord, PodRecord
from app.store.records import PodIdentity
from tests.core.support import Nads, OnePod

NAD_CONFIG = {"cniVersion": "1.0.0", "type": "macvlan", "master": "eth0", "ipam": {"type": "host-local"}}


async def cni_args_of_each_delegate(
    tmp_path: Path, runtime_args: tuple[tuple[str, str], ...], *, uid: str, annotation: str = "extra"
) -> list[tuple[tuple[str, str], ...]]:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-cluster.conf").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"})
    )
    pod = PodRecord("default", "web", "pod-uid", annotations={NETWORKS_ANNOTATION: annotation})
    nad = NadRecord("default", "extra", "nad-uid", config=json.dumps(NAD_CONFIG))
    resolver = NetworkResolver(cluster=ClusterSources(pods=OnePod(pod=pod), nads=Nads(nad)))
    request = SandboxRequest(
        command=Command.ADD,
        container_id=ContainerId("c0ffee"),
        netns="/var/run/netns/none",
        ifname=IfName("eth0"),
        cni_args=runtime_args,
        pod=PodIdentity("default", "web", uid),
        conf=MultusNetConf(
            name="multus",
            cni_version="1.0.0",
            stdin_cni_version="1.0.0",
            cluster_network="cluster",
            conf_dir=str(conf_dir),
        ),
    )
    resolution = await resolver.resolve(request)
    return [plan.cni_args for plan in resolution.plans]


async def test_the_runtimes_other_keys_reach_the_cluster_network_only(tmp_path: Path) -> None:
    runtime = (
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", "default"),
        ("K8S_POD_NAME", "web"),
        ("K8S_POD_INFRA_CONTAINER_ID", "c0ffee"),
        ("K8S_POD_UID", "pod-uid"),
        ("IP", "10.1.2.3"),
        ("MAC", "02:00:00:00:00:01"),
    )
    pod_keys = (
        ("IgnoreUnknown", "true"),
        ("K8S_POD_NAMESPACE", "default"),
        ("K8S_POD_NAME", "web"),
        ("K8S_POD_INFRA_CONTAINER_ID", "c0ffee"),
        ("K8S_POD_UID", "pod-uid"),
    )

    master, extra = await cni_args_of_each_delegate(tmp_path, runtime, uid="pod-uid")

    assert master == (*pod_keys, ("IP", "10.1.2.3"), ("MAC", "02:00:00:00:00:01"))
    assert extra == pod_keys


async def test_pod_keys_the_runtime_did_not_send_are_sent_empty_and_the_uid_is_the_pods(
    tmp_path: Path,
) -> None:
    runtime = (("K8S_POD_NAMESPACE", "default"), ("K8S_POD_NAME", "web"))
    expected = (
        ("IgnoreUnknown", "true"),
        ("K8S_POD_NAMESPACE", "default"),
        ("K8S_POD_NAME", "web"),
        ("K8S_POD_INFRA_CONTAINER_ID", ""),
        ("K8S_POD_UID", "pod-uid"),
    )

    assert await cni_args_of_each_delegate(tmp_path, runtime, uid="") == [expected, expected]


async def test_the_selections_mac_and_ips_still_follow_the_pod_keys_of_a_nad_delegate(tmp_path: Path) -> None:
    runtime = (("K8S_POD_NAMESPACE", "default"), ("K8S_POD_NAME", "web"), ("IP", "10.1.2.3"))
    annotation = json.dumps([{"name": "extra", "ips": ["10.9.0.5/24"], "mac": "02:00:00:00:00:05"}])

    _, extra = await cni_args_of_each_delegate(tmp_path, runtime, uid="pod-uid", annotation=annotation)

    assert extra[-2:] == (("MAC", "02:00:00:00:00:05"), ("IP", "10.9.0.5/24"))
    assert ("IP", "10.1.2.3") not in extra
