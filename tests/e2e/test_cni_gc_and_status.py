"""The runtime's GC and STATUS through the real shim and daemon, as libcni sends them (CNI 1.1)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]


def test_a_gc_whose_valid_attachments_are_null_removes_every_sandbox(started: Any) -> None:
    """libcni writes the runtime's nil slice as ``null`` when no attachment of the network is valid
    (CRI-O's GC of a node whose pods are all gone): the empty list, not a malformed one."""
    cluster: Cluster = started(gcIntervalSeconds=3600)
    sandboxes = [(cluster.new_netns(), new_container_id()) for _ in range(2)]
    for netns, container in sandboxes:
        assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0

    collected = cluster.run_shim(
        "GC", conf=cluster.shim_conf(cniVersion="1.1.0", **{"cni.dev/valid-attachments": None})
    )

    assert (collected.returncode, collected.stdout) == (0, "")
    assert [netns.links() for netns, _ in sandboxes] == [{"lo"}, {"lo"}]
    assert cluster.leases() == []


def test_status_without_the_cluster_network_is_plugin_not_available(started: Any) -> None:
    cluster: Cluster = started(gcIntervalSeconds=3600)
    (cluster.net_d / "10-primary.conflist").unlink()

    status = cluster.run_shim("STATUS", conf=cluster.shim_conf(cniVersion="1.1.0"))

    assert status.returncode == 1
    error = json.loads(status.stdout)
    assert error["code"] == 50, error
    assert "10-primary.conflist" in error["msg"] + error.get("details", ""), error
