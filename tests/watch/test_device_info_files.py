"""Device-info files (NPWG device-info spec) through an ADD with the watch side wired as the daemon wires it.

A NAD with a ``resourceName`` gives its delegate a device id (from the kubelet checkpoint here); the
device plugin's file in a fake ``<deviceInfoDir>/dp`` is copied to the delegate's
``CNIDeviceInfoFile`` before it runs (the recorder plugin logs the file as it found it), the path is
recorded with the intent so DEL gets the same one, network-status renders the file as upstream does,
and the engine removes it once the delegate's DEL succeeded. A missing or malformed device-plugin
file attaches normally, without the file.

Real: the emulator over HTTP, the mirror, the engine and its SQLite checkpoint, a network namespace
and the recorder plugin executed as the delegate.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.attach import device_info
from app.attach.engine import AttachEngine
from app.attach.netconf import MultusNetConf
from app.attach.network_status import DelegateOutcome, network_status, status_entries
from app.attach.networks import ClusterSources, NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni.types import CniError, ContainerId, IfName
from app.sandbox.kubeapi import KubeApiEmulator
from app.store import checkpoints
from app.store.database import Database
from app.store.records import AttachmentRecord, PodIdentity
from app.watch.nodedevices import NodeDevices
from app.watch.podresources import KubeletPodResources
from tests.watch.support import (
    Running,
    eventually,
    install_recorder,
    pod_manifest,
    recorder_engine,
    recorder_multus_conf,
    recorder_net,
)

NIC = "intel.com/sriov_nic_1"
PCI = "0000:81:00.3"
DP_DOCUMENT = {
    "type": "pci",
    "version": "1.1.0",
    "pci": {"pci-address": PCI, "pf-pci-address": "0000:81:00.0", "vendor-extra": "dropped"},
    "unknown": "dropped",
}


@dataclass
class Node:
    engine: AttachEngine
    running: Running
    devices: NodeDevices
    conf: MultusNetConf
    log: Path
    netns: str
    devinfo: Path
    database: Database

    def calls(self, command: str, ifname: str) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [c for c in lines if c["command"] == command and c["env"].get("CNI_IFNAME") == ifname]

    def request(self, command: Command, pod: dict[str, Any], container: str) -> SandboxRequest:
        metadata = pod["metadata"]
        args = (
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

    async def attachment(self, container: str, ifname: str) -> AttachmentRecord:
        record = await self.database.read(lambda session: checkpoints.load_sandbox(session, container))
        assert record is not None
        [found] = [a for a in record.attachments if a.ifname == ifname]
        return found


@pytest.fixture
async def node(running: Running, database: Database, api: Any, tmp_path: Path, netns: str) -> Node:
    bin_dir = tmp_path / "bin"
    install_recorder(bin_dir)
    log = tmp_path / "recorder.jsonl"
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    primary = recorder_net("primary", log)
    primary["recorder"]["result"] = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": netns}],
        "ips": [{"address": "10.9.0.2/24", "interface": 0}],
    }
    (conf_dir / "10-primary.conf").write_text(json.dumps(primary))
    devices = NodeDevices(
        api=api,
        kubelet=KubeletPodResources(str(tmp_path / "no-kubelet.sock"), timeout=2.0),
        checkpoint_path=str(tmp_path / "kubelet_internal_checkpoint"),
    )
    devinfo = tmp_path / "devinfo"
    (devinfo / "dp").mkdir(parents=True)
    watchers = running.watchers
    resolver = NetworkResolver(
        cluster=ClusterSources(
            pods=watchers.pods, nads=watchers.nads, devices=devices, events=watchers.publisher
        ),
        device_info_dir=str(devinfo),
    )
    engine = recorder_engine(
        database=database, resolver=resolver, status=watchers.publisher, sysfs=tmp_path / "sys"
    )
    conf = recorder_multus_conf(conf_dir=conf_dir, bin_dir=bin_dir)
    return Node(engine, running, devices, conf, log, netns, devinfo, database)


async def pod_with_device(
    emulator: KubeApiEmulator, node: Node, *, plugin_type: str = "recorder"
) -> dict[str, Any]:
    config = recorder_net("sriov-net", node.log, capabilities={"deviceID": True, "CNIDeviceInfoFile": True})
    config["type"] = plugin_type
    config["recorder"]["result"] = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "sandbox": node.netns}],
        "ips": [{"address": "10.56.0.7/24", "interface": 0}],
    }
    emulator.create_nad("default", "sriov-net", config, annotations={"k8s.v1.cni.cncf.io/resourceName": NIC})
    pod = emulator.create_pod(pod_manifest("web", annotations={"k8s.v1.cni.cncf.io/networks": "sriov-net"}))
    entry = {
        "PodUID": pod["metadata"]["uid"],
        "ContainerName": "c",
        "ResourceName": NIC,
        "DeviceIDs": {"-1": [PCI]},
        "AllocResp": "e30=",
    }
    checkpoint = {"Data": {"PodDeviceEntries": [entry], "RegisteredDevices": {NIC: [PCI]}}, "Checksum": 1}
    write_file(Path(node.devices.checkpoint_path), json.dumps(checkpoint))
    await eventually(
        lambda: node.running.watchers.nads.get_nad("default", "sriov-net"), lambda nad: nad is not None
    )
    return pod


def write_file(path: Path, text: str) -> None:
    path.write_text(text)


def dp_file(node: Node) -> Path:
    return Path(device_info.dp_file_path(str(node.devinfo), resource=NIC, device_id=PCI))


async def test_the_device_plugins_file_reaches_the_delegate_shows_in_network_status_and_goes_after_del(
    emulator: KubeApiEmulator, node: Node
) -> None:
    pod = await pod_with_device(emulator, node)
    assert dp_file(node).name == "intel.com-sriov_nic_1-0000:81:00.3-device.json", "the spec's name"
    dp_file(node).write_text(json.dumps(DP_DOCUMENT))
    container = uuid.uuid4().hex
    expected_path = node.devinfo / "cni" / f"default-sriov-net-{container}_net1"

    await node.engine.add(node.request(Command.ADD, pod, container))

    [added] = node.calls("ADD", "net1")
    assert added["stdin"]["runtimeConfig"] == {"deviceID": PCI, "CNIDeviceInfoFile": str(expected_path)}
    copied = json.loads(added["deviceInfoFile"])
    assert copied == {
        "type": "pci",
        "version": "1.1.0",
        "pci": {"pci-address": PCI, "pf-pci-address": "0000:81:00.0"},
    }, "the delegate found the copy, re-encoded with the spec's fields only, before it ran"
    [master] = node.calls("ADD", "eth0")
    assert "deviceInfoFile" not in master, "no device, no file"

    attachment = await node.attachment(container, "net1")
    assert attachment.capability_args["CNIDeviceInfoFile"] == str(expected_path), "recorded with the intent"
    published = emulator.get_pod("default", "web")["metadata"]["annotations"][
        "k8s.v1.cni.cncf.io/network-status"
    ]
    net1 = published[published.index('{\n    "name": "default/sriov-net"') :]
    assert net1 == (
        "{\n"
        '    "name": "default/sriov-net",\n'
        '    "interface": "net1",\n'
        '    "ips": [\n        "10.56.0.7"\n    ],\n'
        '    "dns": {},\n'
        '    "device-info": {\n'
        '        "type": "pci",\n'
        '        "version": "1.1.0",\n'
        '        "pci": {\n'
        '            "pci-address": "0000:81:00.3",\n'
        '            "pf-pci-address": "0000:81:00.0"\n'
        "        }\n"
        "    }\n"
        "}]"
    ), "the engine's network-status renders the device-info file as upstream does"

    await node.engine.delete(node.request(Command.DEL, pod, container))
    [deleted] = node.calls("DEL", "net1")
    replayed = deleted["stdin"]["runtimeConfig"]["CNIDeviceInfoFile"]
    assert replayed == str(expected_path), "DEL replays the recorded path"
    assert deleted["deviceInfoFile"] is not None, "the file is still there while the delegate's DEL runs"

    assert not expected_path.exists(), "the engine removed the file once the delegate's DEL succeeded"
    assert device_info.remove_for_attachment(attachment) is False, "a second removal is a no-op"
    assert dp_file(node).exists(), "the device plugin's own file is the device plugin's"


@pytest.mark.parametrize("dp_content", [None, "{not json", '{"type": 7}', '["pci"]'])
async def test_a_missing_or_malformed_device_plugin_file_attaches_without_a_copy(
    emulator: KubeApiEmulator, node: Node, dp_content: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    pod = await pod_with_device(emulator, node)
    if dp_content is not None:
        dp_file(node).write_text(dp_content)
    container = uuid.uuid4().hex

    await node.engine.add(node.request(Command.ADD, pod, container))

    [added] = node.calls("ADD", "net1")
    assert added["stdin"]["deviceID"] == PCI, "the device is attached all the same"
    assert added["deviceInfoFile"] is None, "nothing half-written for the delegate"
    attachment = await node.attachment(container, "net1")
    assert device_info.read_for_status(attachment.capability_args) is None
    if dp_content is not None:
        assert any(str(dp_file(node)) in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    await node.engine.delete(node.request(Command.DEL, pod, container))
    assert device_info.remove_for_attachment(attachment) is False


async def test_an_add_refused_before_anything_is_recorded_leaves_no_device_info_file(
    emulator: KubeApiEmulator, node: Node
) -> None:
    pod = await pod_with_device(emulator, node, plugin_type="no-such-plugin")
    dp_file(node).write_text(json.dumps(DP_DOCUMENT))
    container = uuid.uuid4().hex

    with pytest.raises(CniError):
        await node.engine.add(node.request(Command.ADD, pod, container))

    assert await node.engine.load_sandbox(container) is None, "refused with nothing recorded"
    leftovers = (
        sorted(p.name for p in (node.devinfo / "cni").glob("*")) if (node.devinfo / "cni").exists() else []
    )
    assert leftovers == [], "no attachment was recorded, so no DEL will ever remove a file made for it"


async def test_an_add_whose_cluster_network_fails_leaves_no_device_info_file_for_the_delegates_never_run(
    emulator: KubeApiEmulator, node: Node
) -> None:
    """The device plugin's file is copied for every delegate once the intents are committed; a
    delegate that never ran (the cluster network failed first) is then dropped from the checkpoint,
    so no DEL would ever remove its copy: one file left per failed ADD, the runtime retrying under
    new container IDs."""
    primary_path = Path(node.conf.conf_dir) / "10-primary.conf"
    primary = json.loads(primary_path.read_text())
    primary["recorder"]["fail"] = {"code": 11, "msg": "the cluster network is not ready"}
    primary["recorder"]["failOn"] = "ADD"
    primary_path.write_text(json.dumps(primary))
    pod = await pod_with_device(emulator, node)
    dp_file(node).write_text(json.dumps(DP_DOCUMENT))
    container = uuid.uuid4().hex

    with pytest.raises(CniError):
        await node.engine.add(node.request(Command.ADD, pod, container))

    assert node.calls("ADD", "net1") == [], "the delegate given the device never ran"
    assert await node.engine.load_sandbox(container) is None, "rolled back"
    assert sorted(p.name for p in (node.devinfo / "cni").glob("*")) == []


async def test_a_second_add_of_an_attached_container_leaves_its_device_info_file_alone(
    emulator: KubeApiEmulator, node: Node
) -> None:
    pod = await pod_with_device(emulator, node)
    dp_file(node).write_text(json.dumps(DP_DOCUMENT))
    container = uuid.uuid4().hex
    await node.engine.add(node.request(Command.ADD, pod, container))
    path = node.devinfo / "cni" / f"default-sriov-net-{container}_net1"
    path.chmod(0o644)
    written_by_cni = (
        '{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:81:00.3","rdma-device":"mlx5_3"}}'
    )
    path.write_text(written_by_cni)  # the spec lets the CNI rewrite its file
    dp_file(node).write_text(json.dumps({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "other"}}))

    with pytest.raises(CniError) as refused:
        await node.engine.add(node.request(Command.ADD, pod, container))

    assert "already attached" in str(refused.value)
    assert path.read_text() == written_by_cni, (
        "the attached delegate's file is not rewritten by a refused ADD"
    )
    await node.engine.delete(node.request(Command.DEL, pod, container))
    assert not path.exists()


def test_a_cni_device_info_file_the_runtime_passed_is_never_removed(tmp_path: Path) -> None:
    foreign = tmp_path / "runtime-owned.json"
    foreign.write_text("{}")
    attachment = AttachmentRecord(
        container_id="c1",
        ifname="net1",
        position=1,
        is_master=False,
        network_name="default/plain",
        plugin_types=("macvlan",),
        config=b"{}",
        cni_args=(),
        capability_args={"CNIDeviceInfoFile": str(foreign)},
        cni_path=(),
        state="attached",
        result=None,
        last_error=None,
        created_at=datetime.now(UTC),
        updated_at=datetime.now(UTC),
    )
    assert device_info.remove_for_attachment(attachment) is False
    assert foreign.exists()


@pytest.mark.parametrize(
    ("content", "loaded"),
    [
        ('{"type": "pci", "pci": {"pci-address": "0000:01:00.1", "extra": 5}, "other": [1]}', True),
        ('{"type": "vhost-user", "vhost-user": {"mode": "server", "path": "/run/vhu/sock0"}}', True),
        ('{"type": 7}', False),
        ('{"type": "pci", "pci": "0000:01:00.1"}', False),
        ('{"type": "pci", "pci": {"pci-address": 1}}', False),
        ("", False),
    ],
)
def test_device_info_files_are_read_as_upstreams_struct_decodes_them(
    tmp_path: Path, content: str, loaded: bool
) -> None:
    path = tmp_path / "devinfo.json"
    path.write_text(content)
    found = device_info.read_for_status({"CNIDeviceInfoFile": str(path)})
    assert (found is not None) is loaded
    if found is not None:
        result = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": "/var/run/netns/x"}]}
        [entry] = status_entries([DelegateOutcome("n", result, False, device_info=found)])
        assert entry["device-info"]["type"] == found["type"]
        assert "other" not in entry["device-info"], "unknown keys are dropped, as Go's struct drops them"
        assert "extra" not in json.dumps(entry)


VF_PCI = "0000:00:06.2"


@pytest.fixture
def fake_vf(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A veth standing for a VF at VF_PCI, bound to iavf, in the engine's fake sysfs: (its name, its
    sysfs net/ dir)."""
    vf = f"mpsv{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", vf, "type", "veth", "peer", "name", vf + "p"], check=True)
    pci = tmp_path / "sys" / "bus" / "pci"
    names = pci / "devices" / VF_PCI / "net"
    (names / vf).mkdir(parents=True)
    (pci / "drivers" / "iavf").mkdir(parents=True)
    (pci / "devices" / VF_PCI / "driver").symlink_to(Path("..", "..", "drivers", "iavf"))
    yield vf, names
    subprocess.run(["ip", "link", "delete", vf], check=False)


async def test_a_vf_given_by_the_selections_device_id_must_be_back_before_its_attachment_is_forgotten(
    emulator: KubeApiEmulator, node: Node, tmp_path: Path, fake_vf: tuple[str, Path]
) -> None:
    vf, names = fake_vf
    # host-device takes runtimeConfig.deviceID as its pciBusID: no deviceID in the NAD's config
    config = recorder_net("vf-net", node.log, capabilities={"deviceID": True})
    config["recorder"]["result"] = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "sandbox": node.netns}],
    }
    emulator.create_nad("default", "vf-net", config)
    selection = json.dumps([{"name": "vf-net", "deviceID": VF_PCI}])
    pod = emulator.create_pod(pod_manifest("vfpod", annotations={"k8s.v1.cni.cncf.io/networks": selection}))
    await eventually(
        lambda: node.running.watchers.nads.get_nad("default", "vf-net"), lambda nad: nad is not None
    )
    container = uuid.uuid4().hex
    await node.engine.add(node.request(Command.ADD, pod, container))
    [added] = node.calls("ADD", "net1")
    assert added["stdin"]["runtimeConfig"]["deviceID"] == VF_PCI
    device = (await node.attachment(container, "net1")).device
    assert device is not None, "the VF handed over in runtimeConfig is recorded"
    assert (device["pci"], device["ifname"]) == (VF_PCI, vf)
    (names / vf).rename(tmp_path / "hidden")  # the VF is still inside some namespace

    with pytest.raises(CniError):
        await node.engine.delete(node.request(Command.DEL, pod, container))

    assert (await node.attachment(container, "net1")).state == "deleting", "pending until the VF is back"


def test_a_representor_device_the_cni_wrote_shows_in_network_status_as_upstream_renders_it(
    tmp_path: Path,
) -> None:
    # device-info spec 1.1.0: pci and vdpa carry "representor-device" (written by an offloading CNI),
    # a field of upstream's DeviceInfo struct (network-attachment-definition-client v1.7.x)
    path = tmp_path / "devinfo.json"
    path.write_text(
        '{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:d8:00.2","representor-device":"eth3"}}'
    )
    found = device_info.read_for_status({"CNIDeviceInfoFile": str(path)})
    assert found is not None
    result = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": "/var/run/netns/x"}]}

    rendered = network_status([DelegateOutcome("default/offload", result, False, device_info=found)])

    assert rendered == (
        "[{\n"
        '    "name": "default/offload",\n'
        '    "interface": "net1",\n'
        '    "dns": {},\n'
        '    "device-info": {\n'
        '        "type": "pci",\n'
        '        "version": "1.1.0",\n'
        '        "pci": {\n'
        '            "pci-address": "0000:d8:00.2",\n'
        '            "representor-device": "eth3"\n'
        "        }\n"
        "    }\n"
        "}]"
    )


def test_a_vdpa_representor_device_is_copied_from_the_device_plugin_for_the_cni(tmp_path: Path) -> None:
    base = tmp_path / "devinfo"
    source = Path(device_info.dp_file_path(str(base), resource=NIC, device_id=PCI))
    source.parent.mkdir(parents=True)
    source.write_text(
        json.dumps(
            {
                "type": "vdpa",
                "version": "1.1.0",
                "vdpa": {"parent-device": "vdpa:0000:65:00.3", "representor-device": "pf0vf3"},
            }
        )
    )
    target = base / "cni" / "x"

    assert device_info.stage_from_device_plugin(
        base_dir=str(base), resource=NIC, device_id=PCI, cni_path=str(target)
    )

    assert json.loads(target.read_text())["vdpa"] == {
        "parent-device": "vdpa:0000:65:00.3",
        "representor-device": "pf0vf3",
    }


def test_null_fields_of_a_device_info_file_are_absent_as_gos_decoder_reads_them(tmp_path: Path) -> None:
    # Go's json decoding of null into a string or a struct pointer leaves it unset: no error
    path = tmp_path / "devinfo.json"
    path.write_text(
        '{"type": "pci", "version": null, "vdpa": null,'
        ' "pci": {"pci-address": "0000:d8:00.2", "rdma-device": null}}'
    )
    found = device_info.read_for_status({"CNIDeviceInfoFile": str(path)})
    assert found is not None, "the file is shown, as upstream shows it"
    result = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": "/var/run/netns/x"}]}

    [entry] = status_entries([DelegateOutcome("n", result, False, device_info=found)])

    assert entry["device-info"] == {"type": "pci", "pci": {"pci-address": "0000:d8:00.2"}}


async def test_a_vf_destroyed_while_attached_no_longer_keeps_its_del_pending_for_ever(
    emulator: KubeApiEmulator, node: Node, tmp_path: Path, fake_vf: tuple[str, Path]
) -> None:
    vf, names = fake_vf
    config = recorder_net("vf-net", node.log, capabilities={"deviceID": True})
    config["recorder"]["result"] = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "sandbox": node.netns}],
    }
    emulator.create_nad("default", "vf-net", config)
    selection = json.dumps([{"name": "vf-net", "deviceID": VF_PCI}])
    pod = emulator.create_pod(pod_manifest("vfpod", annotations={"k8s.v1.cni.cncf.io/networks": selection}))
    await eventually(
        lambda: node.running.watchers.nads.get_nad("default", "vf-net"), lambda nad: nad is not None
    )
    container = uuid.uuid4().hex
    await node.engine.add(node.request(Command.ADD, pod, container))
    assert (await node.attachment(container, "net1")).device is not None
    # the PF's VFs were destroyed (sriov_numvfs set to 0): the PCI device is gone, with its netdev
    (names / vf).rmdir()
    names.rmdir()
    (names.parent / "driver").unlink()
    names.parent.rmdir()

    await node.engine.delete(node.request(Command.DEL, pod, container))

    assert await node.engine.load_sandbox(container) is None, "nothing of it can be left in a namespace"


async def vf_pod_added(emulator: KubeApiEmulator, node: Node, name: str) -> tuple[dict[str, Any], str]:
    """Pod ``name`` given the VF at VF_PCI through its selection's deviceID, ADDed: (pod, container)."""
    config = recorder_net("vf-net", node.log, capabilities={"deviceID": True})
    config["recorder"]["result"] = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "sandbox": node.netns}],
    }
    emulator.create_nad("default", "vf-net", config)
    selection = json.dumps([{"name": "vf-net", "deviceID": VF_PCI}])
    pod = emulator.create_pod(pod_manifest(name, annotations={"k8s.v1.cni.cncf.io/networks": selection}))
    await eventually(
        lambda: node.running.watchers.nads.get_nad("default", "vf-net"), lambda nad: nad is not None
    )
    container = uuid.uuid4().hex
    await node.engine.add(node.request(Command.ADD, pod, container))
    return pod, container


def came_back_as(names: Path, vf: str, in_pod_name: str) -> None:
    """What the kernel does to a VF whose pod namespace vanished: back in the host, under its pod name."""
    subprocess.run(["ip", "link", "set", vf, "name", in_pod_name, "address", "02:11:22:33:44:55"], check=True)
    (names / vf).rename(names / in_pod_name)


def ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check)


def host_link(name: str) -> dict[str, Any] | None:
    out = subprocess.run(["ip", "-j", "link", "show", "dev", name], capture_output=True, text=True)
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


async def test_a_returned_vf_whose_name_another_netdev_took_is_released_and_its_del_succeeds(
    emulator: KubeApiEmulator,
    node: Node,
    fake_vf: tuple[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    vf, names = fake_vf
    pod, container = await vf_pod_added(emulator, node, "vfname")
    in_pod_name = f"mpdv{uuid.uuid4().hex[:8]}"
    came_back_as(names, vf, in_pod_name)
    # meanwhile another netdev took the VF's host name (udev, another VF renamed, an operator)
    ip("link", "add", vf, "type", "veth", "peer", "name", vf + "q")
    device = (await node.attachment(container, "net1")).device
    assert device is not None
    original_mac = device["mac"]
    try:
        await node.engine.delete(node.request(Command.DEL, pod, container))

        assert await node.engine.load_sandbox(container) is None, "the VF is in the host: nothing leaked"
        returned = host_link(in_pod_name)
        assert returned is not None, "the VF stays under the name it came back with"
        assert returned["address"] == original_mac, "what could be restored was"
        other = host_link(vf)
        assert other is not None
        assert other["address"] != original_mac, "the other netdev is left alone"
        assert any(
            record.levelname == "WARNING" and vf in record.getMessage() and in_pod_name in record.getMessage()
            for record in caplog.records
        ), "a warning names the name that could not be restored"
    finally:
        ip("link", "delete", in_pod_name, check=False)
        ip("link", "delete", vf, check=False)


async def test_a_returned_vf_whose_mac_was_never_known_is_renamed_and_its_del_succeeds(
    emulator: KubeApiEmulator,
    node: Node,
    fake_vf: tuple[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    vf, names = fake_vf
    # sysfs listed the VF's netdev at ADD, but no link of that name was there to read its MAC from
    ip("link", "set", vf, "name", vf + "x")
    in_pod_name = f"mpdv{uuid.uuid4().hex[:8]}"
    try:
        pod, container = await vf_pod_added(emulator, node, "vfmac")
        device = (await node.attachment(container, "net1")).device
        assert device is not None
        assert (device["ifname"], device["mac"]) == (vf, ""), "the MAC is unknown"
        ip("link", "set", vf + "x", "name", vf)
        came_back_as(names, vf, in_pod_name)

        await node.engine.delete(node.request(Command.DEL, pod, container))

        assert await node.engine.load_sandbox(container) is None, "the VF is in the host: nothing leaked"
        assert host_link(vf) is not None, "its name is restored"
        assert host_link(in_pod_name) is None
        assert any(
            record.levelname == "WARNING" and VF_PCI in record.getMessage() and "MAC" in record.getMessage()
            for record in caplog.records
        ), "a warning says its MAC could not be restored"
    finally:
        ip("link", "delete", vf + "x", check=False)
        ip("link", "delete", in_pod_name, check=False)


FIFO_WATCHDOG_SECONDS = 10.0
"""How long a read may wait on the FIFO before the test opens its writing end (and fails)."""


@pytest.mark.parametrize("which", ["device plugin's", "CNI's"])
def test_a_fifo_where_a_device_info_file_belongs_is_refused_without_waiting_on_it(
    tmp_path: Path, which: str
) -> None:
    """A device plugin's pod may write in ``dp/`` (a hostPath): a FIFO at its file's name held the
    daemon's event loop in ``open`` until some writer came, every request of the node with it."""
    base = tmp_path / "devinfo"
    source = Path(device_info.dp_file_path(str(base), resource=NIC, device_id=PCI))
    target = base / "cni" / "x"
    fifo = source if which == "device plugin's" else target
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo, 0o600)
    done, unblocked = threading.Event(), threading.Event()

    def watchdog() -> None:
        if not done.wait(FIFO_WATCHDOG_SECONDS):
            unblocked.set()
            os.close(os.open(fifo, os.O_WRONLY))

    guard = threading.Thread(target=watchdog, name="fifo-watchdog", daemon=True)
    guard.start()
    try:
        if which == "device plugin's":
            found: object = device_info.stage_from_device_plugin(
                base_dir=str(base), resource=NIC, device_id=PCI, cni_path=str(target)
            )
        else:
            found = device_info.read_for_status({device_info.CAPABILITY: str(target)})
    finally:
        done.set()
        guard.join()

    assert not unblocked.is_set(), "the read waited on the FIFO until the watchdog opened it"
    assert found in (False, None)
