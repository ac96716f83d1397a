"""A daemon killed while it wrote a device-info file (between the temporary's creation and its
rename) leaves the temporary in ``<deviceInfoDir>/cni/``; the next daemon's start-up recovery
removes it, and only it."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Cluster

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),
]


def test_a_restarted_daemon_removes_the_device_info_temporaries_a_killed_one_left(cluster: Cluster) -> None:
    cni_files = cluster.root / "devinfo" / "cni"
    cni_files.mkdir(parents=True)
    half_written = cni_files / ".devinfo-k3j2x9"
    half_written.write_text('{"type": "pci", "version": "1.')
    a_delegates_file = cni_files / "sriov-net-0123abcd_net1"
    a_delegates_file.write_text('{"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:00:01.1"}}')
    cluster.daemon_config["deviceInfoDir"] = str(cluster.root / "devinfo")

    cluster.start_daemon()

    assert not half_written.exists()
    assert a_delegates_file.exists(), "a delegate's device-info file is the checkpoint's to remove"
