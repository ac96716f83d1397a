"""CHECK as a runtime sends it: with the ADD's answer as prevResult, through the real shim and daemon."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]


def test_check_with_the_adds_answer_as_prev_result_passes_until_its_interface_goes(started: Any) -> None:
    cluster: Cluster = started(gcIntervalSeconds=3600)
    netns, container = cluster.new_netns(), new_container_id()
    added = cluster.run_shim("ADD", container_id=container, netns=netns)
    assert added.returncode == 0, added.stdout
    conf = cluster.shim_conf(prevResult=json.loads(added.stdout))

    checked = cluster.run_shim("CHECK", container_id=container, netns=netns, conf=conf)
    assert (checked.returncode, checked.stdout) == (0, ""), checked.stdout

    new_mac = ["address", "02:00:00:00:00:42"]
    subprocess.run(["ip", "-n", netns.name, "link", "set", "eth0", *new_mac], check=True)
    changed = cluster.run_shim("CHECK", container_id=container, netns=netns, conf=conf)

    assert changed.returncode == 1
    assert "02:00:00:00:00:42" in json.loads(changed.stdout)["msg"]
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0
