"""An ADD through the engine with the watch side wired as the daemon wires it: device ids from DRA or
the kubelet checkpoint reach the delegate, bad device data attaches nothing, a missing NAD posts
upstream's ``NoNetworkFound`` Warning (but a cluster network found as a conf file posts none).

Real: the emulator over HTTP (kubernetes-asyncio), the pod/NAD watches into a SQLite mirror, the
engine with its checkpoint, a network namespace, and the recorder plugin executed as a delegate (it
logs the stdin and environment it received).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.attach.engine import AttachEngine
from app.attach.netconf import MultusNetConf
from app.attach.networks import ClusterSources, NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni.types import CniError, ContainerId, ErrorCode, IfName
from app.sandbox.kubeapi import KubeApiEmulator
from app.store import checkpoints
from app.store.database import Database
from app.store.records import PodIdentity
from app.watch.nodedevices import NodeDevices
from app.watch.podresources import KubeletPodResources
from tests.podresources.support import FakeKubelet, container, pod
from tests.watch.support import (
    FAST_SETTINGS,
    NODE,
    Running,
    eventually,
    install_recorder,
    pod_manifest,
    recorder_engine,
    recorder_multus_conf,
    recorder_net,
)

NIC = "sriov_nic_1"
DRIVER = "sriov.k8snetworkplumbingwg.io"
PCI = "0000:81:00.3"


@dataclass
class Node:
    engine: AttachEngine
    running: Running
    devices: NodeDevices
    conf: MultusNetConf
    log: Path
    netns: str

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def request(self, command: Command, pod: dict[str, Any], container: str) -> SandboxRequest:
        metadata = pod["metadata"]
        args = (
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", metadata["namespace"]),
            ("K8S_POD_NAME", metadata["name"]),
            ("K8S_POD_INFRA_CONTAINER_ID", container),
            ("K8S_POD_UID", metadata["uid"]),
        )
        return SandboxRequest(
            command=command,
            container_id=ContainerId(container),
            netns=self.netns,
            ifname=IfName("eth0"),
            cni_args=args,
            pod=PodIdentity(metadata["namespace"], metadata["name"], metadata["uid"]),
            conf=self.conf,
        )


def kubelet_socket(tmp_path: Path) -> str:
    """Where the node asks the kubelet: nothing listens there unless a test starts a ``FakeKubelet``."""
    return str(tmp_path / "kubelet.sock")


@pytest.fixture
async def node(running: Running, database: Database, api: Any, tmp_path: Path, netns: str) -> Node:
    bin_dir = tmp_path / "bin"
    install_recorder(bin_dir)
    log = tmp_path / "recorder.jsonl"
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    primary_result = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": netns}],
        "ips": [{"address": "10.9.0.2/24", "interface": 0}],
    }
    primary = recorder_net("primary", log)
    primary["recorder"]["result"] = primary_result
    (conf_dir / "10-primary.conf").write_text(json.dumps(primary))
    devices = NodeDevices(
        api=api,
        kubelet=KubeletPodResources(kubelet_socket(tmp_path), timeout=2.0),
        checkpoint_path=str(tmp_path / "kubelet_internal_checkpoint"),
    )
    watchers = running.watchers
    resolver = NetworkResolver(
        cluster=ClusterSources(
            pods=watchers.pods, nads=watchers.nads, devices=devices, events=watchers.publisher
        )
    )
    engine = recorder_engine(
        database=database, resolver=resolver, status=watchers.publisher, sysfs=tmp_path / "sys"
    )
    conf = recorder_multus_conf(conf_dir=conf_dir, bin_dir=bin_dir)
    return Node(engine, running, devices, conf, log, netns)


def nad_with_resource(emulator: KubeApiEmulator, log: Path, name: str = "sriov-net") -> None:
    config = recorder_net(name, log, capabilities={"deviceID": True})
    emulator.create_nad("default", name, config, annotations={"k8s.v1.cni.cncf.io/resourceName": NIC})


async def web_pod_mirrored(
    emulator: KubeApiEmulator, node: Node, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """Pod ``default/web`` created in the emulator, returned once the node's mirror holds it."""
    pod = emulator.create_pod(pod_manifest("web", annotations=annotations))
    await eventually(lambda: node.running.watchers.pods.get_pod("default", "web"), lambda p: p is not None)
    return pod


async def nad_mirrored(node: Node, name: str) -> None:
    await eventually(lambda: node.running.watchers.nads.get_nad("default", name), lambda nad: nad is not None)


def write_file(path: str, text: str) -> None:
    Path(path).write_text(text)


def delegate_calls(node: Node, command: str, ifname: str) -> list[dict[str, Any]]:
    return [c for c in node.calls() if c["command"] == command and c["env"].get("CNI_IFNAME") == ifname]


async def test_a_dra_device_reaches_the_delegate_as_its_device_id(
    emulator: KubeApiEmulator, node: Node
) -> None:
    emulator.create_resource_slice(
        "node-a-sriov",
        node=NODE,
        driver=DRIVER,
        pool=NODE,
        devices={"vf-1": {"k8s.cni.cncf.io/deviceID": PCI, "k8s.cni.cncf.io/resourceName": NIC}},
    )
    emulator.create_resource_claim(
        "default", "web-vf", results=[{"request": "vf", "driver": DRIVER, "pool": NODE, "device": "vf-1"}]
    )
    nad_with_resource(emulator, node.log)
    manifest = pod_manifest("web", annotations={"k8s.v1.cni.cncf.io/networks": "sriov-net"})
    manifest["spec"]["resourceClaims"] = [{"name": "vf", "resourceClaimTemplateName": "vf-template"}]
    manifest["status"] = {"resourceClaimStatuses": [{"name": "vf", "resourceClaimName": "web-vf"}]}
    pod = emulator.create_pod(manifest)
    await nad_mirrored(node, "sriov-net")
    container = uuid.uuid4().hex

    await node.engine.add(node.request(Command.ADD, pod, container))

    [added] = delegate_calls(node, "ADD", "net1")
    assert added["stdin"]["deviceID"] == PCI
    assert added["stdin"]["pciBusID"] == PCI
    assert added["stdin"]["runtimeConfig"]["deviceID"] == PCI
    await node.engine.delete(node.request(Command.DEL, pod, container))
    [deleted] = delegate_calls(node, "DEL", "net1")
    assert deleted["stdin"]["deviceID"] == PCI, "DEL replays the recorded config"


async def test_without_a_kubelet_the_checkpoint_file_gives_the_delegate_its_device_id(
    emulator: KubeApiEmulator, node: Node
) -> None:
    nad_with_resource(emulator, node.log)
    pod = emulator.create_pod(pod_manifest("web", annotations={"k8s.v1.cni.cncf.io/networks": "sriov-net"}))
    write_file(
        node.devices.checkpoint_path,
        json.dumps(
            {
                "Data": {
                    "PodDeviceEntries": [
                        {
                            "PodUID": pod["metadata"]["uid"],
                            "ContainerName": "c",
                            "ResourceName": NIC,
                            "DeviceIDs": {"-1": [PCI]},
                            "AllocResp": "e30=",
                        }
                    ],
                    "RegisteredDevices": {NIC: [PCI]},
                },
                "Checksum": 1,
            }
        ),
    )
    await nad_mirrored(node, "sriov-net")
    container = uuid.uuid4().hex

    await node.engine.add(node.request(Command.ADD, pod, container))

    [added] = delegate_calls(node, "ADD", "net1")
    assert added["stdin"]["deviceID"] == PCI
    assert node.devices.checkpoint_reads == 1
    await node.engine.delete(node.request(Command.DEL, pod, container))


async def test_a_malformed_checkpoint_fails_the_add_naming_the_field_and_attaches_nothing(
    emulator: KubeApiEmulator, node: Node, database: Database
) -> None:
    nad_with_resource(emulator, node.log)
    pod = emulator.create_pod(pod_manifest("web", annotations={"k8s.v1.cni.cncf.io/networks": "sriov-net"}))
    write_file(node.devices.checkpoint_path, '{"Data": {"PodDeviceEntries": [{"PodUID": 7}]}}')
    await nad_mirrored(node, "sriov-net")
    container = uuid.uuid4().hex

    with pytest.raises(CniError) as raised:
        await node.engine.add(node.request(Command.ADD, pod, container))

    assert raised.value.code == ErrorCode.DECODING_FAILURE
    assert "'Data.PodDeviceEntries[0].PodUID' must be a non-empty string" in raised.value.details
    assert node.calls() == [], "no delegate ran"
    assert await database.read(lambda session: checkpoints.load_sandbox(session, container)) is None


async def test_a_missing_nad_fails_the_add_and_posts_upstreams_no_network_found_warning(
    emulator: KubeApiEmulator, node: Node
) -> None:
    pod = await web_pod_mirrored(emulator, node, {"k8s.v1.cni.cncf.io/networks": "absent-net"})

    with pytest.raises(CniError) as raised:
        await node.engine.add(node.request(Command.ADD, pod, uuid.uuid4().hex))

    assert raised.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    events = node.running.watchers.events
    async with asyncio.timeout(5):
        await events.drained()
    warnings = [e for e in emulator.events("default") if e["reason"] == "NoNetworkFound"]
    assert [e["message"] for e in warnings] == [
        "cannot find a network-attachment-definition (absent-net) in namespace (default): "
        'networkattachmentdefinition.k8s.cni.cncf.io "absent-net" not found',
    ], "only the pod's missing NAD: the cluster network is a conf file, which is no problem"
    event = warnings[0]
    assert event["type"] == "Warning"
    assert event["involvedObject"]["uid"] == pod["metadata"]["uid"]
    assert event["source"]["component"] == "multus"
    assert node.calls() == []


async def test_a_cluster_network_found_only_as_a_file_posts_no_warning(
    emulator: KubeApiEmulator, node: Node
) -> None:
    # Upstream posts NoNetworkFound on every pod here (its NAD lookup of the name misses first): a
    # Warning, and an API write per ADD, for the usual file-backed cluster network.
    pod = await web_pod_mirrored(emulator, node)
    container = uuid.uuid4().hex

    await node.engine.add(node.request(Command.ADD, pod, container))

    async with asyncio.timeout(5):
        await node.running.watchers.events.drained()
    reasons = [e["reason"] for e in emulator.events("default")]
    assert reasons == ["AddedInterface"], "the ADD's own event is posted, no Warning"
    assert [c["command"] for c in node.calls()] == ["ADD"], "the primary from confDir ran"
    await node.engine.delete(node.request(Command.DEL, pod, container))


def empty_directory(path: str) -> None:
    for entry in Path(path).iterdir():
        entry.unlink()


async def test_a_cluster_network_found_neither_as_a_nad_nor_as_a_file_fails_and_warns(
    emulator: KubeApiEmulator, node: Node
) -> None:
    empty_directory(node.conf.conf_dir)  # the cluster network's conf file goes
    pod = await web_pod_mirrored(emulator, node)

    with pytest.raises(CniError) as raised:
        await node.engine.add(node.request(Command.ADD, pod, uuid.uuid4().hex))

    assert raised.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "primary" in raised.value.msg
    async with asyncio.timeout(5):
        await node.running.watchers.events.drained()
    warnings = [e for e in emulator.events("default") if e["reason"] == "NoNetworkFound"]
    assert [e["message"] for e in warnings] == [
        "cannot find a network-attachment-definition (primary) in namespace (kube-system): "
        'networkattachmentdefinition.k8s.cni.cncf.io "primary" not found'
    ]
    assert node.calls() == []


@pytest.mark.parametrize("settings", [dataclasses.replace(FAST_SETTINGS, event_delay=1.0)])
async def test_the_add_answers_after_its_status_patch_and_before_its_event_is_posted(
    emulator: KubeApiEmulator, node: Node
) -> None:
    pod = await web_pod_mirrored(emulator, node)
    container = uuid.uuid4().hex
    since = emulator.last_request_seq

    await node.engine.add(node.request(Command.ADD, pod, container))
    written_before_the_answer = [
        (record.method, record.path) for record in emulator.requests(since=since) if record.method != "GET"
    ]
    async with asyncio.timeout(5):
        await node.running.watchers.events.drained()

    assert written_before_the_answer == [("PATCH", "/api/v1/namespaces/default/pods/web/status")]
    assert [e["reason"] for e in emulator.events("default")] == ["AddedInterface"]
    await node.engine.delete(node.request(Command.DEL, pod, container))


async def test_a_pod_recreated_under_its_name_while_its_devices_are_read_lends_its_vf_to_no_old_sandbox(
    emulator: KubeApiEmulator, node: Node, database: Database, tmp_path: Path
) -> None:
    nad_with_resource(emulator, node.log)
    annotations = {"k8s.v1.cni.cncf.io/networks": "sriov-net"}
    old = await web_pod_mirrored(emulator, node, annotations)
    await nad_mirrored(node, "sriov-net")

    def recreated(call: str) -> None:
        # the StatefulSet controller replaces the pod under the same name, and the kubelet, which
        # reports pods by name only, answers with the VF it allocated to the new one
        emulator.delete_pod("default", "web")
        emulator.create_pod(pod_manifest("web", annotations=annotations))

    kubelet = FakeKubelet(
        kubelet_socket(tmp_path),
        pods=[pod("default", "web", container("c", {NIC: [PCI]}))],
        on_call=recreated,
    )
    await kubelet.start()
    container_id = uuid.uuid4().hex
    try:
        with pytest.raises(CniError) as raised:
            await node.engine.add(node.request(Command.ADD, old, container_id))
    finally:
        await kubelet.stop()

    assert kubelet.calls == ["Get default/web"]
    assert raised.value.code == ErrorCode.UNKNOWN_CONTAINER, "as for a pod found replaced by the pod lookup"
    assert old["metadata"]["uid"] in raised.value.details
    assert node.calls() == [], "no delegate ran, with the new pod's VF or any other"
    assert await database.read(lambda session: checkpoints.load_sandbox(session, container_id)) is None
