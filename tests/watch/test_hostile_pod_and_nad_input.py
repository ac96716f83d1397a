"""What a user who may create pods and NADs in one namespace can make an ADD do (Kubernetes mode).

The API emulator over real HTTP, the real watchers and mirror, the in-process engine with its real
store, the recorder and reference plugins, a real netns. Each hostile input is refused at ADD with
a CNI error naming what is wrong, before anything is recorded or run (invariant 13), and the
runtime's DEL afterwards succeeds.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from app.attach.cluster import DEFAULT_NETWORK_ANNOTATION
from app.attach.engine import AttachEngine
from app.attach.networks import ClusterSources, NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni.types import CniError, ContainerId, ErrorCode, IfName
from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Database
from app.store.records import PodIdentity
from tests.conftest import CNI_PLUGIN_DIR
from tests.watch.support import (
    NETWORKS,
    Running,
    eventually,
    install_recorder,
    mirrored_nads,
    pod_manifest,
    recorder_engine,
    recorder_multus_conf,
    recorder_net,
)

CONTAINER = ContainerId("d" * 64)


class Node:
    """One node's plugin and conf directories, an engine on the running watchers, and the ADD and
    DEL the runtime sends for pod ``web``."""

    def __init__(self, *, tmp_path: Path, running: Running, database: Database, netns: str) -> None:
        self.bin_dir = tmp_path / "bin"
        self.conf_dir = tmp_path / "net.d"
        self.log = tmp_path / "recorder.jsonl"
        self.netns = netns
        install_recorder(self.bin_dir)
        for plugin in ("bridge", "host-local"):
            (self.bin_dir / plugin).symlink_to(Path(CNI_PLUGIN_DIR) / plugin)
        self.conf_dir.mkdir()
        (self.conf_dir / "10-primary.conf").write_text(json.dumps(recorder_net("primary", self.log)))
        self.database = database
        self.engine: AttachEngine = recorder_engine(
            database=database,
            resolver=NetworkResolver(
                cluster=ClusterSources(pods=running.watchers.pods, nads=running.watchers.nads)
            ),
            status=running.watchers.publisher,
            sysfs=tmp_path / "sys",
        )

    def recorder_nad(self) -> str:
        return json.dumps({"cniVersion": "1.0.0", "type": "recorder", "recorder": {"log": str(self.log)}})

    def request(self, uid: str, *, namespace: str = "default", **conf: Any) -> SandboxRequest:
        return SandboxRequest(
            command=Command.ADD,
            container_id=CONTAINER,
            netns=self.netns,
            ifname=IfName("eth0"),
            cni_args=(("K8S_POD_NAMESPACE", namespace), ("K8S_POD_NAME", "web"), ("K8S_POD_UID", uid)),
            pod=PodIdentity(namespace, "web", uid),
            conf=replace(recorder_multus_conf(conf_dir=self.conf_dir, bin_dir=self.bin_dir), **conf),
        )

    async def refused_add(self, request: SandboxRequest) -> CniError:
        """The ADD's error, once it is clear that nothing was recorded or run and the DEL succeeds."""
        with pytest.raises(CniError) as caught:
            await self.engine.add(request)
        assert await self.engine.load_sandbox(request.container_id) is None
        assert not self.log.exists(), "no plugin ran"
        await self.engine.delete(replace(request, command=Command.DEL))
        return caught.value


@pytest.fixture
def node(tmp_path: Path, running: Running, database: Database, netns: str) -> Node:
    return Node(tmp_path=tmp_path, running=running, database=database, netns=netns)


async def with_nads(
    emulator: KubeApiEmulator, database: Database, nads: Mapping[tuple[str, str], str]
) -> None:
    for namespace, name in nads:
        if namespace not in ("default", "kube-system"):
            emulator.create_namespace(namespace)
        emulator.create_nad(namespace, name, nads[namespace, name])
    await eventually(mirrored_nads(database), lambda mirrored: set(nads) <= set(mirrored))


def create_pod(emulator: KubeApiEmulator, annotations: dict[str, str], namespace: str = "default") -> str:
    return str(
        emulator.create_pod(pod_manifest("web", namespace=namespace, annotations=annotations))["metadata"][
            "uid"
        ]
    )


def nad_gets(emulator: KubeApiEmulator) -> list[str]:
    """Paths of the GETs of single NADs (the live lookups of NADs the mirror lacks)."""
    return [
        record.path
        for record in emulator.requests(method="GET", path="network-attachment-definitions/")
        if "watch=true" not in record.path
    ]


async def test_a_network_name_walking_up_the_api_path_cannot_reach_another_namespaces_nad(
    emulator: KubeApiEmulator, database: Database, node: Node
) -> None:
    """A JSON-form name was not checked and became the path of the NAD's live GET:
    ``../../secret/network-attachment-definitions/hidden`` from a pod in ``default`` fetched and
    attached ``secret/hidden`` although ``namespaceIsolation`` was on."""
    await with_nads(emulator, database, {("secret", "hidden"): node.recorder_nad()})
    trick = [{"name": "../../secret/network-attachment-definitions/hidden"}]
    uid = create_pod(emulator, {NETWORKS: json.dumps(trick)})

    error = await node.refused_add(node.request(uid, namespace_isolation=True))

    assert error.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "is not a network-attachment-definition name" in error.msg
    assert error.details.startswith("element 0")
    assert nad_gets(emulator) == []


@pytest.mark.parametrize(
    ("element", "field"),
    [
        ({"name": "hidden", "namespace": "Secret"}, "namespace"),
        ({"name": "hidden", "namespace": "default/../secret"}, "namespace"),
        ({"name": "hidden?watch=true"}, "network name"),
        ({"name": "x" * 254}, "network name"),
    ],
)
async def test_a_name_or_namespace_no_kubernetes_object_can_have_is_refused_without_asking_the_api(
    emulator: KubeApiEmulator, node: Node, element: dict[str, str], field: str
) -> None:
    uid = create_pod(emulator, {NETWORKS: json.dumps([element])})

    error = await node.refused_add(node.request(uid))

    assert error.msg.startswith(f"annotation {NETWORKS}: {field} ")
    assert nad_gets(emulator) == []


async def test_the_default_network_annotation_is_held_to_namespace_isolation(
    emulator: KubeApiEmulator, database: Database, node: Node
) -> None:
    """It named ``secret/hidden`` and the pod got another namespace's NAD as its cluster network."""
    await with_nads(emulator, database, {("secret", "hidden"): node.recorder_nad()})
    uid = create_pod(emulator, {DEFAULT_NETWORK_ANNOTATION: "secret/hidden"})

    error = await node.refused_add(node.request(uid, namespace_isolation=True))

    assert error.msg.startswith("GetNetworkDelegates: namespace isolation enabled")
    assert error.details == f"annotation {DEFAULT_NETWORK_ANNOTATION}, network secret/hidden"


async def test_under_isolation_the_default_network_annotation_still_names_multus_namespace_nads(
    emulator: KubeApiEmulator, database: Database, node: Node
) -> None:
    await with_nads(emulator, database, {("kube-system", "alt"): node.recorder_nad()})
    uid = create_pod(emulator, {DEFAULT_NETWORK_ANNOTATION: "alt"})
    request = node.request(uid, namespace_isolation=True)

    await node.engine.add(request)

    record = await node.engine.load_sandbox(CONTAINER)
    assert record is not None
    assert [(a.network_name, a.ifname) for a in record.attachments] == [("kube-system/alt", "eth0")]
    await node.engine.delete(replace(request, command=Command.DEL))


@pytest.fixture
def bridge_name() -> Iterator[str]:
    name = f"mpyhk{secrets.token_hex(4)}"
    yield name
    subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)


async def test_an_interface_named_lo_is_refused_before_a_delegate_that_could_never_be_deleted_runs(
    emulator: KubeApiEmulator, database: Database, node: Node, tmp_path: Path, bridge_name: str
) -> None:
    """``net@lo`` ran bridge, which refused to create ``lo``; its rollback DEL then failed for ever
    (the loopback cannot be deleted): ``lo`` stayed recorded and every DEL of the runtime failed."""
    bridge = {
        "cniVersion": "1.0.0",
        "type": "bridge",
        "bridge": bridge_name,
        "ipam": {"type": "host-local", "subnet": "10.251.7.0/24", "dataDir": str(tmp_path / "ipam")},
    }
    await with_nads(emulator, database, {("default", "net"): json.dumps(bridge)})
    uid = create_pod(emulator, {NETWORKS: "net@lo"})

    error = await node.refused_add(node.request(uid))

    assert error.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert 'interface name "lo"' in error.msg
    assert error.details == "element 0, network default/net"


async def test_a_selection_of_ten_thousand_networks_is_refused_before_any_is_looked_up(
    emulator: KubeApiEmulator, database: Database, node: Node
) -> None:
    """Upstream has no bound, nor had we: each of the 10,000 was resolved (seconds of the event
    loop), then 10,000 delegates would have been recorded and run one after another. (The NAD's
    plugin is not installed, so that without the bound the ADD fails, later, for that.)"""
    missing_plugin = json.dumps({"cniVersion": "1.0.0", "type": "not-installed"})
    await with_nads(emulator, database, {("default", "net"): missing_plugin})
    uid = create_pod(emulator, {NETWORKS: ",".join(["net"] * 10_000)})

    error = await node.refused_add(node.request(uid))

    assert error.msg == (
        f"annotation {NETWORKS}: the annotation selects 10000 networks; a pod may select at most 256"
    )
    assert "maxNetworksPerPod" in error.details


async def test_max_networks_per_pod_sets_the_bound(
    emulator: KubeApiEmulator, database: Database, node: Node
) -> None:
    await with_nads(emulator, database, {("default", "net"): node.recorder_nad()})
    uid = create_pod(emulator, {NETWORKS: json.dumps([{"name": "net"}] * 3)})

    error = await node.refused_add(node.request(uid, max_networks_per_pod=2))

    assert "selects 3 networks; a pod may select at most 2" in error.msg


async def test_a_nad_whose_plugin_is_multus_itself_is_refused_rather_than_run(
    emulator: KubeApiEmulator, database: Database, node: Node
) -> None:
    """Run, the shim would ask this daemon to ADD the sandbox whose ADD runs it, and wait behind
    that ADD's lock until the delegate timeout; so would its DELs. (It ran: the NAD was taken.)"""
    install_recorder(node.bin_dir).rename(node.bin_dir / "multus-shim")
    install_recorder(node.bin_dir)
    chain = {"cniVersion": "1.0.0", "plugins": [{"type": "recorder"}, {"type": "multus-shim"}]}
    await with_nads(emulator, database, {("default", "loop"): json.dumps(chain)})
    uid = create_pod(emulator, {NETWORKS: "loop"})

    error = await node.refused_add(node.request(uid))

    assert error.msg == (
        'network-attachment-definition default/loop: "plugins[1].type" is "multus-shim": '
        "Multus cannot be a delegate of itself"
    )


async def test_a_nad_whose_ipam_plugin_is_multus_itself_is_refused_rather_than_run(
    emulator: KubeApiEmulator, database: Database, node: Node
) -> None:
    """The delegate would exec the shim as its IPAM plugin (found in the CNI_PATH the daemon gives
    it), with the same wait behind this ADD's lock. (It ran: the NAD was taken.)"""
    install_recorder(node.bin_dir).rename(node.bin_dir / "multus-shim")
    install_recorder(node.bin_dir)
    plugin = {"type": "recorder", "recorder": {"log": str(node.log)}, "ipam": {"type": "multus-shim"}}
    await with_nads(emulator, database, {("default", "loop"): json.dumps({"cniVersion": "1.0.0", **plugin})})
    uid = create_pod(emulator, {NETWORKS: "loop"})

    error = await node.refused_add(node.request(uid))

    assert error.msg == (
        'network-attachment-definition default/loop: "ipam.type" is "multus-shim": '
        "Multus cannot be a delegate of itself"
    )


async def test_a_nad_whose_ipam_type_is_a_path_is_refused_before_anything_is_recorded(
    emulator: KubeApiEmulator, database: Database, node: Node
) -> None:
    """libcni's plugins refuse such a name only once they run (code 999, at ADD and DEL alike),
    after the intent was recorded; others would exec the file. (It was recorded and run.)"""
    plugin = {"type": "recorder", "recorder": {"log": str(node.log)}, "ipam": {"type": "../../../bin/sh"}}
    await with_nads(
        emulator, database, {("default", "escape"): json.dumps({"cniVersion": "1.0.0", **plugin})}
    )
    uid = create_pod(emulator, {NETWORKS: "escape"})

    error = await node.refused_add(node.request(uid))

    assert error.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert error.msg.startswith(
        'network-attachment-definition default/escape: "ipam.type" is "../../../bin/sh"'
    )
