"""A VF back in the host that refuses its recorded MAC still gets its name back and is released.

On real hardware an iavf VF whose MAC the PF pins refuses any other MAC. Restoring name and MAC in
one netlink message then failed as a whole (the kernel applies the MAC before the name), so the VF
kept its in-pod name and the DEL stayed pending for ever (invariant 5b). The name is restored
first now, and a refused MAC is warned about: no retry could change it.

No SR-IOV hardware here: the VF is a veth registered under its PCI address in a fake sysfs tree,
and the MAC it refuses is a multicast one, which the kernel refuses for every link through the same
netlink call (``EADDRNOTAVAIL`` here, ``EACCES`` from iavf).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.attach.vfs import HostDevices
from tests.core.support import Node

PCI = "0000:00:06.1"
MULTICAST_MAC = "01:00:5e:00:00:01"


def host_link(name: str) -> dict[str, Any] | None:
    shown = subprocess.run(["ip", "-j", "link", "show", "dev", name], capture_output=True, text=True)
    return json.loads(shown.stdout)[0] if shown.returncode == 0 else None


@dataclass(frozen=True)
class ReturnedVf:
    sysfs: Path
    host_name: str
    in_pod_name: str
    mac: str


@pytest.fixture
def returned_vf(node: Node) -> ReturnedVf:
    """A VF back from a vanished pod namespace under its in-pod name, up as the pod left it."""
    host_name, in_pod_name = f"mpvf{secrets.token_hex(3)}", f"mpdv{secrets.token_hex(3)}"
    subprocess.run(
        ["ip", "link", "add", host_name, "type", "veth", "peer", "name", f"{host_name}p"], check=True
    )
    node.host_links.extend([host_name, in_pod_name])
    subprocess.run(["ip", "link", "set", host_name, "name", in_pod_name, "up"], check=True)
    sysfs = node.root / "sys"
    (sysfs / "bus" / "pci" / "devices" / PCI / "net" / in_pod_name).mkdir(parents=True)
    link = host_link(in_pod_name)
    assert link is not None
    return ReturnedVf(sysfs, host_name, in_pod_name, str(link["address"]))


async def test_a_returned_vf_refusing_its_recorded_mac_is_renamed_back_and_released(
    returned_vf: ReturnedVf, caplog: pytest.LogCaptureFixture
) -> None:
    vf = returned_vf

    came_back_changed = await HostDevices(vf.sysfs).ensure_returned(
        {"pci": PCI, "ifname": vf.host_name, "mac": MULTICAST_MAC}
    )

    assert came_back_changed
    restored = host_link(vf.host_name)
    assert restored is not None, "the VF has its host name again"
    assert host_link(vf.in_pod_name) is None
    assert restored["address"] == vf.mac, "it keeps the MAC it has"
    assert "UP" in restored["flags"], "and is up again, as it was"
    assert any(
        record.levelname == "WARNING" and PCI in record.getMessage() and "MAC" in record.getMessage()
        for record in caplog.records
    ), "a warning says its MAC could not be restored"
