"""A fake SR-IOV VF for engine tests: a veth registered under a PCI address in a fake sysfs tree.

No SR-IOV hardware here. ``app.attach.vfs`` finds a VF's netdev by listing
``<sysfsRoot>/bus/pci/devices/<pci>/net/``, and its driver by the device's ``driver`` link; the
engine is pointed at the tree this module builds (``Node.engine(sysfs_root=...)``), and the
recorder plugin stands in for sriov-cni.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.attach.engine import AttachEngine
from app.attach.netconf import MultusNetConf
from app.attach.networks import DelegatePlan
from app.cni.conf import load_network_list
from app.cni.types import CniError, IfName
from tests.core.support import Command, Node, new_container_id


@dataclass(frozen=True)
class FakeVf:
    sysfs: Path
    """The fake sysfs root to hand the engine."""
    pci: str
    name: str
    """Its netdev's name in the host namespace."""
    mac: str

    @property
    def device_dir(self) -> Path:
        return self.sysfs / "bus" / "pci" / "devices" / self.pci

    @property
    def names(self) -> Path:
        """Where sysfs lists the VF's netdev while it is in the host namespace."""
        return self.device_dir / "net"


def bind(sysfs: Path, pci: str, driver: str) -> None:
    """What binding PCI device ``pci`` to ``driver`` leaves in sysfs: the device's ``driver`` link."""
    (sysfs / "bus" / "pci" / "drivers" / driver).mkdir(parents=True, exist_ok=True)
    link = sysfs / "bus" / "pci" / "devices" / pci / "driver"
    link.unlink(missing_ok=True)
    link.symlink_to(Path("..", "..", "drivers", driver))


def fake_vf(node: Node, pci: str, *, follows: bool = False) -> FakeVf:
    """A VF ``pci`` bound to its netdev driver (iavf), whose netdev is a veth in the host
    namespace, removed with ``node``. Listed in the fake sysfs under its name for good, unless it
    ``follows`` the veth as real sysfs follows a VF: listed only while the veth is in the host
    under that name (the entry is a link to ``/sys/class/net/<name>``, the host's own view)."""
    name = f"mpvf{secrets.token_hex(3)}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"], check=True)
    node.host_links.append(name)
    sysfs = node.root / "sys"
    entry = sysfs / "bus" / "pci" / "devices" / pci / "net" / name
    entry.parent.mkdir(parents=True)
    if follows:
        entry.symlink_to(Path("/sys/class/net") / name)
    else:
        entry.mkdir()
    bind(sysfs, pci, "iavf")
    shown = subprocess.run(
        ["ip", "-j", "link", "show", "dev", name], capture_output=True, text=True, check=True
    )
    return FakeVf(sysfs, pci, name, json.loads(shown.stdout)[0]["address"])


def vf_network(node: Node, pci: str, name: str = "sriov-net", **plugin: Any) -> str:
    """A network whose plugin is handed ``pci`` (what a ``resourceName`` injects into a NAD); with
    ``plugin``, those fields instead of the two that name ``pci``."""
    node.write_network(
        name,
        {
            "cniVersion": "1.0.0",
            "name": name,
            "type": "recorder",
            "recorder": {"log": str(node.recorder_log)},
            **(plugin or {"deviceID": pci, "pciBusID": pci}),
        },
    )
    return name


def hotplug_plan(node: Node, pci: str, ifname: str = "net1") -> DelegatePlan:
    """What a hot-plug (DNC, or a native selection with ``deviceID``) asks for: ``pci`` as the
    runtimeConfig deviceID of a plugin declaring the capability."""
    raw = json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "hot-vf",
            "type": "recorder",
            "capabilities": {"deviceID": True},
            "recorder": {"log": str(node.recorder_log)},
        }
    ).encode()
    return DelegatePlan(
        position=1,
        network_name="default/hot-vf",
        net=load_network_list(raw, source="test"),
        ifname=IfName(ifname),
        is_master=False,
        cni_args=(),
        capability_args={"deviceID": pci},
    )


async def refused_for_another_pod(node: Node, engine: AttachEngine, conf: MultusNetConf) -> CniError:
    """The error the ADD of another pod's sandbox (``pod-b``) with ``conf`` fails with: a VF a
    sandbox holds is handed to it."""
    with pytest.raises(CniError) as refused:
        await engine.add(
            node.request(Command.ADD, new_container_id(), node.new_netns(), conf, pod="pod-b", uid="uid-b")
        )
    return refused.value
