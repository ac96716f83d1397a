"""The ADD's live GETs (a pod the mirror lacks, a NAD it lacks) take a 404 for "not found" only
when it is the API's word about that object (a ``Status`` naming it). A 404 naming nothing (a
proxy's, a path prefix the server does not serve, the NAD CRD not installed) is the API not
answering: the ADD fails as for an outage (code 11, "cannot read ... from the Kubernetes API"),
never as a pod that does not exist or a network that is misconfigured (code 7 and a
``NoNetworkFound`` Warning on the pod)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from app.attach.cluster import ClusterUnavailableError
from app.attach.networks import ClusterSources, NadNotFoundError, NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni.types import CniError, ContainerId, ErrorCode, IfName
from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Database
from app.store.records import PodIdentity
from app.watch.settings import WatchSettings
from tests.watch.support import (
    FAST_SETTINGS,
    NETWORKS,
    Running,
    eventually,
    mirrored_pods,
    nad_config,
    pod_manifest,
    recorder_multus_conf,
    recorder_net,
)

PROXY_404 = "404 page not found"
"""What a proxy (or a server, for a path it does not serve) says; the injected fault's ``Status``
names no object, as a proxy's answer never does."""


@pytest.fixture
def settings() -> WatchSettings:
    return dataclasses.replace(FAST_SETTINGS, pod_wait=0.05)


def resolver_and_add(running: Running, tmp_path: Path, pod: str) -> tuple[NetworkResolver, SandboxRequest]:
    """A resolver asking the running watchers, and the runtime's ADD of ``default/<pod>``."""
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-primary.conf").write_text(json.dumps(recorder_net("primary", tmp_path / "log")))
    watchers = running.watchers
    resolver = NetworkResolver(cluster=ClusterSources(pods=watchers.pods, nads=watchers.nads))
    request = SandboxRequest(
        command=Command.ADD,
        container_id=ContainerId("c" * 64),
        netns="/var/run/netns/unused",
        ifname=IfName("eth0"),
        cni_args=(("K8S_POD_NAMESPACE", "default"), ("K8S_POD_NAME", pod)),
        pod=PodIdentity("default", pod, ""),
        conf=recorder_multus_conf(conf_dir=conf_dir, bin_dir=tmp_path / "bin"),
    )
    return resolver, request


async def test_a_proxys_404_for_a_pod_the_mirror_lacks_fails_the_add_as_an_unreachable_api(
    emulator: KubeApiEmulator, running: Running, tmp_path: Path
) -> None:
    """It was "pod default/web not found; neither the pod mirror nor a live GET knows it": the
    operator looks for a pod that exists, not at the proxy in front of the API."""
    resolver, add = resolver_and_add(running, tmp_path, "web")
    emulator.faults.fail_next(1, status=404, method="GET", path="/pods/web$", message=PROXY_404)

    with pytest.raises(CniError) as raised:
        await resolver.resolve(add)
    with pytest.raises(CniError) as apis_own:  # the API's own 404, naming the pod
        await resolver.resolve(add)

    assert raised.value.code == ErrorCode.TRY_AGAIN_LATER
    assert raised.value.msg == "cannot read pod default/web from the Kubernetes API"
    assert "does not name the pod" in raised.value.details
    assert apis_own.value.msg == "pod default/web not found"


async def test_a_proxys_404_for_a_nad_the_mirror_lacks_fails_the_add_as_an_unreachable_api(
    emulator: KubeApiEmulator, running: Running, database: Database, tmp_path: Path
) -> None:
    """It was code 7 "cannot find a network-attachment-definition (net-x)" (and, with events on,
    a ``NoNetworkFound`` Warning on the pod): a configuration error no retry would mend, for a NAD
    the API may well have."""
    emulator.create_pod(pod_manifest("web", annotations={NETWORKS: "net-x"}))
    await eventually(mirrored_pods(database), lambda pods: ("default", "web") in pods)
    resolver, add = resolver_and_add(running, tmp_path, "web")
    emulator.faults.fail_next(
        1, status=404, method="GET", path="/network-attachment-definitions/net-x$", message=PROXY_404
    )

    with pytest.raises(CniError) as raised:
        await resolver.resolve(add)
    with pytest.raises(NadNotFoundError):  # the API's own 404, naming the NAD
        await resolver.resolve(add)

    assert raised.value.code == ErrorCode.TRY_AGAIN_LATER
    assert raised.value.msg == (
        "cannot read network-attachment-definition default/net-x from the Kubernetes API"
    )
    assert "does not name it" in raised.value.details


async def test_the_apis_own_404_for_a_nad_is_not_found_and_a_404_naming_another_object_is_not(
    emulator: KubeApiEmulator, running: Running
) -> None:
    """The API's 404 names the NAD by its resource (``details.kind``
    ``network-attachment-definitions``); a NAD it has is found by the same GET."""
    nads = running.watchers.nads
    emulator.create_nad("default", "net-y", nad_config("net-y"))

    absent = await nads.fetch_nad("default", "net-x")
    present = await nads.fetch_nad("default", "net-y")
    emulator.faults.fail_next(1, status=404, method="GET", path="/network-attachment-definitions/net-y$")
    with pytest.raises(ClusterUnavailableError, match="does not name it"):
        await nads.fetch_nad("default", "net-y")

    assert absent is None
    assert present is not None
    assert present.config == nad_config("net-y")
