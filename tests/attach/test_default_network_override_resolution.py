"""The ``v1.multus-cni.io/default-network`` annotation as network resolution reads it off the pod.

In-memory pod and NAD sources and a real ``confDir`` with the cluster network; nothing is executed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.attach.cluster import DEFAULT_NETWORK_ANNOTATION
from app.attach.netconf import MultusNetConf
from app.attach.networks import ClusterSources, NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni.types import CniError, ContainerId, ErrorCode, IfName
from app.store.mirror_records import NadRecord, PodRecord
from app.store.records import PodIdentity
from tests.core.support import Nads, OnePod


async def resolve_for(
    tmp_path: Path, annotations: dict[str, str], *, delegates: tuple[dict[str, object], ...] = ()
) -> list[tuple[str, str]]:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir(exist_ok=True)
    cluster = {"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"}
    (conf_dir / "10-cluster.conf").write_text(json.dumps(cluster))
    alternative = {"cniVersion": "1.0.0", "type": "macvlan", "master": "eth0"}
    nad = NadRecord("kube-system", "alt-default", "nad-uid", config=json.dumps(alternative))
    pod = PodRecord("default", "web", "pod-uid", annotations=annotations)
    resolver = NetworkResolver(cluster=ClusterSources(pods=OnePod(pod=pod), nads=Nads(nad)))
    conf = MultusNetConf(
        name="multus",
        cni_version="1.0.0",
        stdin_cni_version="1.0.0",
        cluster_network="" if delegates else "cluster",
        delegates=delegates,
        conf_dir=str(conf_dir),
    )
    request = SandboxRequest(
        command=Command.ADD,
        container_id=ContainerId("c0ffee"),
        netns="/var/run/netns/none",
        ifname=IfName("eth0"),
        cni_args=(("K8S_POD_NAMESPACE", "default"), ("K8S_POD_NAME", "web"), ("K8S_POD_UID", "pod-uid")),
        pod=PodIdentity("default", "web", "pod-uid"),
        conf=conf,
    )
    resolution = await resolver.resolve(request)
    return [(plan.network_name, plan.ifname) for plan in resolution.plans]


async def test_without_the_annotation_the_cluster_network_is_the_master(tmp_path: Path) -> None:
    assert await resolve_for(tmp_path, {}) == [("cluster", "eth0")]


async def test_the_annotation_replaces_the_cluster_network(tmp_path: Path) -> None:
    plans = await resolve_for(tmp_path, {DEFAULT_NETWORK_ANNOTATION: "alt-default"})

    assert plans == [("kube-system/alt-default", "eth0")]


INLINE_DELEGATES: tuple[dict[str, object], ...] = (
    {"cniVersion": "1.0.0", "name": "inline-cluster", "type": "bridge"},
    {"cniVersion": "1.0.0", "name": "inline-extra", "type": "macvlan", "master": "eth0"},
)


async def test_an_inline_delegates_list_keeps_its_others_when_the_annotation_replaces_its_first(
    tmp_path: Path,
) -> None:
    # upstream: ``conf.Delegates[0] = delegate``; the rest of a ``delegates`` list stays
    assert await resolve_for(tmp_path, {}, delegates=INLINE_DELEGATES) == [
        ("inline-cluster", "eth0"),
        ("inline-extra", "net1"),
    ]
    overridden = {DEFAULT_NETWORK_ANNOTATION: "alt-default"}
    plans = await resolve_for(tmp_path, overridden, delegates=INLINE_DELEGATES)

    assert plans == [("kube-system/alt-default", "eth0"), ("inline-extra", "net1")]


async def test_a_present_but_empty_annotation_fails_the_add_as_upstream(tmp_path: Path) -> None:
    # upstream: ``netAnnot, ok := pod.Annotations[defaultNetAnnot]``; present → parsePodNetworkAnnotation("")
    # refuses it, so the ADD fails instead of quietly falling back to clusterNetwork
    with pytest.raises(CniError) as caught:
        await resolve_for(tmp_path, {DEFAULT_NETWORK_ANNOTATION: ""})

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg == (
        "annotation v1.multus-cni.io/default-network: "
        'parsePodNetworkAnnotation: pod annotation does not have "network" as key'
    )
