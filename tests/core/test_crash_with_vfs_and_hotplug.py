"""A kill -9 in the middle of an ADD, DEL or hot-plug of a sandbox holding an SR-IOV VF, then a
restart: recovery leaves the VF back in the host under its name and MAC, the checkpoint empty of it,
its device-info file gone, and nothing DELed into another sandbox.

No SR-IOV hardware here: the VF is a veth registered under its PCI address in a fake sysfs tree
(``tests.core.vf_support``), and ``fakesriov`` stands in for sriov-cni: its ADD moves the VF's
netdev into the pod's namespace under CNI_IFNAME (sysfs then no longer lists it), its DEL moves it
back under the name it had, as sriov-cni does; a DEL finding no VF in the pod succeeds (idempotent).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from app.attach.crashpoints import DISARMED, CrashPoints
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.networks import DelegatePlan, NetworkResolver
from app.attach.requests import Trigger
from app.attach.vfs import HostDevices
from app.cni.conf import load_network_list
from app.cni.types import IfName
from app.gc.collector import GarbageCollector
from app.gc.recovery import recover
from tests.core.support import Command, CrashAt, Crashed, Node, Point, new_container_id, pending
from tests.core.vf_support import FakeVf, fake_vf, hotplug_plan

PCI = "0000:00:06.1"

FAKE_SRIOV = r"""
import json, os, subprocess, sys

def main():
    command = os.environ["CNI_COMMAND"]
    conf = json.loads(sys.stdin.read() or "{}")
    if command == "VERSION":
        print(json.dumps({"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}))
        return 0
    with open(conf["fakesriov"]["log"], "a") as log:
        log.write(json.dumps([command, os.environ.get("CNI_IFNAME")]) + "\n")
    pci = conf.get("deviceID") or conf.get("runtimeConfig", {}).get("deviceID")
    device = os.path.join(conf["fakesriov"]["sysfs"], "bus", "pci", "devices", pci)
    stash = os.path.join(device, "in-pod")
    netns = os.path.basename(os.environ.get("CNI_NETNS", ""))
    ifname = os.environ["CNI_IFNAME"]
    if command == "ADD":
        [name] = os.listdir(os.path.join(device, "net"))
        subprocess.run(["ip", "link", "set", name, "netns", netns, "name", ifname], check=True)
        with open(stash, "w") as f:
            f.write(json.dumps([os.environ["CNI_CONTAINERID"], name]))
        os.rmdir(os.path.join(device, "net", name))
        print(json.dumps({"cniVersion": conf["cniVersion"],
                          "interfaces": [{"name": ifname, "sandbox": os.environ["CNI_NETNS"]}]}))
        return 0
    if command == "DEL":
        if not os.path.exists(stash):
            return 0
        with open(stash) as f:
            holder, name = json.loads(f.read())
        if holder != os.environ["CNI_CONTAINERID"]:
            return 0  # another sandbox's VF now: not ours to move
        if netns:
            subprocess.run(["ip", "-n", netns, "link", "set", ifname, "netns", "1", "name", name], check=True)
        os.mkdir(os.path.join(device, "net", name))
        os.unlink(stash)
    return 0

sys.exit(main())
"""


@pytest.fixture
def vf(node: Node, monkeypatch: pytest.MonkeyPatch) -> FakeVf:
    """The VF, whose host netdev is looked up as real sysfs shows it, whatever renamed it: the
    host link the veth's peer is paired with (the fake sysfs tree cannot follow a rename by
    ``app.attach.vfs``)."""
    plugin = node.bin_dir / "fakesriov"
    plugin.write_text(f"#!{sys.executable} -IS\n{FAKE_SRIOV}")
    plugin.chmod(0o755)
    made = fake_vf(node, PCI)
    real_lookup = HostDevices.netdev_names

    def netdev_names(self: HostDevices, pci: str) -> list[str]:
        if pci.lower() != PCI:
            return real_lookup(self, pci)
        shown = subprocess.run(
            ["ip", "-j", "link", "show", "dev", f"{made.name}p"], capture_output=True, text=True, check=True
        )
        peer = json.loads(shown.stdout)[0]
        return [] if "link_netnsid" in peer else [str(peer["link"])]

    monkeypatch.setattr(HostDevices, "netdev_names", netdev_names)
    return made


def sriov_settings(node: Node, vf: FakeVf) -> dict[str, str]:
    return {"log": str(node.root / "fakesriov.jsonl"), "sysfs": str(vf.sysfs)}


def sriov_network(node: Node, vf: FakeVf) -> str:
    node.write_network(
        "sriov",
        {
            "cniVersion": "1.0.0",
            "name": "sriov",
            "type": "fakesriov",
            "deviceID": PCI,
            "fakesriov": sriov_settings(node, vf),
        },
    )
    return "sriov"


def sriov_calls(node: Node) -> list[list[str]]:
    """``fakesriov``'s invocations: [command, CNI_IFNAME], in order."""
    path = node.root / "fakesriov.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def host_mac(name: str) -> str:
    """The MAC of the host link ``name`` ("" when the host has no link of that name)."""
    shown = subprocess.run(["ip", "-j", "link", "show", "dev", name], capture_output=True, text=True)
    return str(json.loads(shown.stdout)[0]["address"]) if shown.returncode == 0 else ""


def at_rest(vf: FakeVf) -> tuple[list[str], str]:
    """The VF's netdevs in the host, and the MAC of the host link of its name."""
    return HostDevices(vf.sysfs).netdev_names(vf.pci), host_mac(vf.name)


@pytest.mark.parametrize("occurrence", [1, 2])
async def test_an_add_with_a_vf_killed_after_a_delegate_ran_gives_the_vf_back(
    node: Node, vf: FakeVf, occurrence: int
) -> None:
    conf = node.conf(node.recorder_network("cluster"), sriov_network(node, vf))
    container = new_container_id()
    with pytest.raises(Crashed):
        await node.engine(crash=CrashAt(Point.ADD_AFTER_EXEC, occurrence), sysfs_root=vf.sysfs).add(
            node.request(Command.ADD, container, node.new_netns(), conf)
        )
    node.restart()

    report = await recover(engine=node.engine(sysfs_root=vf.sysfs), db=node.db)

    assert report.failed == []
    assert node.checkpoint(container) is None
    assert at_rest(vf) == ([vf.name], vf.mac)


async def test_a_del_with_a_vf_killed_after_the_vfs_del_ran_is_finished_with_the_vf_back(
    node: Node, vf: FakeVf
) -> None:
    conf = node.conf(node.recorder_network("cluster"), sriov_network(node, vf))
    container, netns = new_container_id(), node.new_netns()
    await node.engine(sysfs_root=vf.sysfs).add(node.request(Command.ADD, container, netns, conf))
    with pytest.raises(Crashed):
        await node.engine(crash=CrashAt(Point.DEL_AFTER_EXEC), sysfs_root=vf.sysfs).delete(
            node.request(Command.DEL, container, netns, conf)
        )
    node.restart()

    report = await recover(engine=node.engine(sysfs_root=vf.sysfs), db=node.db)

    assert report.failed == []
    assert node.checkpoint(container) is None
    assert at_rest(vf) == ([vf.name], vf.mac)
    assert [call for call in sriov_calls(node) if call[0] == "DEL"] == [["DEL", "net1"], ["DEL", "net1"]]


def hot_vf_plan(node: Node, vf: FakeVf) -> DelegatePlan:
    """A hot-plug (DNC's, or a native selection with ``deviceID``) handing ``fakesriov`` the VF."""
    raw = json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "hot-vf",
            "type": "fakesriov",
            "capabilities": {"deviceID": True},
            "fakesriov": sriov_settings(node, vf),
        }
    ).encode()
    return replace(hotplug_plan(node, PCI), net=load_network_list(raw, source="test"))


@pytest.mark.parametrize("point", [Point.ADD_AFTER_INTENT, Point.ADD_AFTER_EXEC, Point.DEL_AFTER_EXEC])
async def test_a_hot_plug_or_unplug_of_a_vf_killed_half_way_gives_the_vf_back_and_keeps_the_pod(
    node: Node, vf: FakeVf, point: Point
) -> None:
    conf = node.conf(node.recorder_network("cluster"))
    container, netns = new_container_id(), node.new_netns()
    engine = node.engine(sysfs_root=vf.sysfs)
    await engine.add(node.request(Command.ADD, container, netns, conf))
    request = replace(node.request(Command.ADD, container, netns, conf), ifname=IfName("net1"))
    crashing = node.engine(crash=CrashAt(point), sysfs_root=vf.sysfs)
    if point is Point.DEL_AFTER_EXEC:
        await engine.attach_delegate(request, hot_vf_plan(node, vf))
        with pytest.raises(Crashed):
            await crashing.detach_delegate(replace(request, command=Command.DEL, trigger=Trigger.DELEGATE))
    else:
        with pytest.raises(Crashed):
            await crashing.attach_delegate(request, hot_vf_plan(node, vf))
    node.restart()

    report = await recover(engine=node.engine(sysfs_root=vf.sysfs), db=node.db)

    assert report.failed == []
    assert pending(node.checkpoint(container)) == ["eth0"]
    assert at_rest(vf) == ([vf.name], vf.mac)
    assert "net1" not in netns.links()


def returned_by_the_kernel(node: Node, vf: FakeVf, netns_name: str, in_pod_name: str) -> None:
    """What the end of a pod's namespace does to its VF: back in the host under its in-pod name
    (sysfs lists it so), no DEL having run."""
    node.host_links.append(in_pod_name)
    subprocess.run(["ip", "-n", netns_name, "link", "set", in_pod_name, "netns", "1"], check=True)
    (vf.device_dir / "in-pod").unlink()
    (vf.names / in_pod_name).mkdir()


@pytest.mark.parametrize("occurrence", [1, 2])
async def test_a_gc_teardown_killed_half_way_is_finished_with_leases_and_vf_back(
    node: Node, vf: FakeVf, occurrence: int
) -> None:
    conf = node.conf(
        node.recorder_network("cluster"),
        sriov_network(node, vf),
        node.bridge_network("br", subnet="10.77.0.0/24"),
    )
    container, netns = new_container_id(), node.new_netns()
    await node.engine(sysfs_root=vf.sysfs).add(node.request(Command.ADD, container, netns, conf))
    lease_dir = node.ipam_dir / "br"
    assert any(p.name.startswith("10.77.") for p in lease_dir.iterdir())
    returned_by_the_kernel(node, vf, netns.name, "net1")
    netns.delete()
    with pytest.raises(Crashed):
        await GarbageCollector(
            engine=node.engine(crash=CrashAt(Point.GC_AFTER_DEL, occurrence), sysfs_root=vf.sysfs),
            db=node.db,
        ).run_once()
    node.restart()

    report = await recover(engine=node.engine(sysfs_root=vf.sysfs), db=node.db)

    assert report.failed == []
    assert node.checkpoint(container) is None
    assert at_rest(vf) == ([vf.name], vf.mac)
    assert host_mac("net1") == ""
    assert not any(p.name.startswith("10.77.") for p in lease_dir.iterdir())


async def test_a_parallel_add_with_a_vf_killed_after_a_delegate_ran_gives_everything_back(
    node: Node, vf: FakeVf
) -> None:
    def engine(crash: CrashPoints = DISARMED) -> AttachEngine:
        settings = EngineSettings(
            delegate_timeout=20.0, node_name="node-a", parallel_delegates=True, sysfs_root=vf.sysfs
        )
        return AttachEngine(
            db=node.db,
            resolver=NetworkResolver(),
            boot_id=node.boot_id,
            settings=settings,
            crash_points=crash,
        )

    conf = node.conf(
        node.recorder_network("cluster"),
        sriov_network(node, vf),
        node.bridge_network("br", subnet="10.78.0.0/24"),
    )
    container, netns = new_container_id(), node.new_netns()
    with pytest.raises(Crashed):
        await engine(CrashAt(Point.ADD_AFTER_EXEC, 3)).add(node.request(Command.ADD, container, netns, conf))
    node.restart()

    report = await recover(engine=engine(), db=node.db)

    assert report.failed == []
    assert node.checkpoint(container) is None
    assert at_rest(vf) == ([vf.name], vf.mac)
    assert not any(p.name.startswith("10.78.") for p in (node.ipam_dir / "br").iterdir())
    assert netns.links() == {"lo"}
