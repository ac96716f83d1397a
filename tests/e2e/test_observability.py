"""What operators see: Prometheus metrics on metricsPort after real ADD/DEL runs."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest

from app.sandbox.processes import free_port
from tests.e2e.conftest import Cluster, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels}")


def test_metrics_count_operations_delegates_commits_and_socket_requests(started: Any) -> None:
    port = free_port()
    cluster: Cluster = started(default_networks=1, metricsPort=port)
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0
    assert cluster.run_shim("CHECK", container_id=new_container_id(), netns=netns).returncode == 1

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()

    assert _sample(text, "multus_py_cni_operation_seconds_count", command="ADD", outcome="ok") == 1
    assert _sample(text, "multus_py_cni_operation_seconds_count", command="DEL", outcome="ok") == 1
    assert _sample(text, "multus_py_cni_errors_total", command="CHECK", code="3") == 1
    assert (
        _sample(text, "multus_py_delegate_seconds_count", command="ADD", plugins="bridge", outcome="ok") == 2
    )
    assert _sample(text, "multus_py_store_commit_seconds_count") >= 4
    assert _sample(text, "multus_server_request_total", handler="/cni", code="200", method="post") == 2
    assert _sample(text, "multus_server_request_total", handler="/cni", code="400", method="post") == 1


def test_the_daemons_threads_show_what_they_are_to_top_and_ps(started: Any) -> None:
    """``top -H`` and ``ps -L`` read thread names from ``/proc``: every thread of the daemon showed
    as ``python``, so whose CPU it was (the event loop's, the store writer's) could not be told."""
    cluster: Cluster = started(default_networks=1)
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0
    assert cluster.daemon is not None

    tasks = Path(f"/proc/{cluster.daemon.pid}/task")
    shown = {(task / "comm").read_text().strip() for task in tasks.iterdir()}

    assert {"store-writer", "store-reader_0", "executor_0"} <= shown
