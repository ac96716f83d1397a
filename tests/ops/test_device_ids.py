"""Device IDs a delegate used read the same in ``multusctl attachments``, ``show`` and ``history``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ops.conftest import Scenario, add, json_output, new_pod, run

pytestmark = pytest.mark.slow  # starts daemon or emulator processes

PCI = "0000:81:00.3"


def _vf_like_network(scenario: Scenario) -> None:
    """A delegate whose result names the PCI device it took, as sriov-cni's does (``pciID``)."""
    result = {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "net1", "mac": "0a:58:0a:f2:00:07", "sandbox": "/proc/self/ns/net", "pciID": PCI}
        ],
        "ips": [{"address": "10.242.0.7/24", "interface": 0}],
    }
    node = scenario.cluster
    node.write_network(
        node.conf_dir,
        "50-vf-like.conflist",
        {
            "cniVersion": "1.0.0",
            "name": "vf-like",
            "plugins": [{"type": "recorder", "recorder": {"result": result}}],
        },
    )


def test_attachments_show_and_history_agree_on_the_device_ids_of_a_delegate(scenario: Scenario) -> None:
    _vf_like_network(scenario)
    pod = new_pod(scenario.cluster, "team-d", "vf")
    assert add(scenario.cluster, pod, networks=["vf-like"]).returncode == 0
    try:
        rows: list[dict[str, Any]] = json_output(scenario.ctl("attachments", "--pod", pod.key, "-o", "json"))
        shown = json_output(scenario.ctl("show", pod.container, "-o", "json"))
        lines = json_output(scenario.ctl("history", "--pod", pod.key, "--limit", "0", "-o", "json"))
    finally:
        assert run(scenario.cluster, "DEL", pod).returncode == 0

    attached = {row["interface"]: row for row in rows}
    recorded = {line["interface"]: line for line in lines if line["step"] == "delegate"}
    assert attached["net1"]["deviceIDs"] == recorded["net1"]["deviceIDs"] == [PCI]
    assert attached["net1"]["ips"] == recorded["net1"]["ips"] == ["10.242.0.7/24"]
    assert attached["net1"]["macs"] == recorded["net1"]["macs"] == ["0a:58:0a:f2:00:07"]
    delegates = {delegate["interface"]: delegate for delegate in shown["checkpoint"]["delegates"]}
    assert delegates["net1"]["deviceIDs"] == [PCI]
    assert attached["eth0"]["deviceIDs"] == recorded["eth0"]["deviceIDs"] == []
