"""parallelDelegates: the cluster network first, then the other networks of a pod at the same time.

Overlap is shown without timing: each delegate of a network waits at a rendezvous until every
other one has arrived, so the ADD can succeed only if they all run together (sequentially the
first one gives up, code 11). A failure in one of them rolls back all of them.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Cluster, new_container_id


def _counts(cluster: Cluster) -> tuple[int, int]:
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        sandboxes = connection.execute("SELECT count(*) FROM sandboxes").fetchone()[0]
        attachments = connection.execute("SELECT count(*) FROM attachments").fetchone()[0]
    return sandboxes, attachments


def _meeting_networks(cluster: Cluster, *, count: int, timeout: float) -> list[str]:
    """``count`` recorder networks whose ADDs wait for each other at one rendezvous directory."""
    names = []
    for index in range(count):
        name = f"meet{index}"
        recorder = {
            "log": str(cluster.root / "recorder.jsonl"),
            "rendezvous": {"dir": str(cluster.root / "rendezvous"), "count": count, "timeout": timeout},
        }
        conf = {"cniVersion": "1.0.0", "name": name, "plugins": [{"type": "recorder", "recorder": recorder}]}
        cluster.write_network(cluster.conf_dir, f"{30 + index}-{name}.conflist", conf)
        names.append(name)
    return names


def test_the_other_delegates_run_together_after_the_cluster_network(cluster: Cluster, started: Any) -> None:
    names = _meeting_networks(cluster, count=3, timeout=60)
    started(defaultNetworks=names, parallelDelegates=True)
    netns = cluster.new_netns()
    container = new_container_id()

    added = cluster.run_shim("ADD", container_id=container, netns=netns)

    assert added.returncode == 0, added.stdout
    assert sorted(path.name for path in (cluster.root / "rendezvous").iterdir()) == ["net1", "net2", "net3"]
    assert netns.links() == {"lo", "eth0"}
    assert _counts(cluster) == (1, 4)
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        first = connection.execute(
            "SELECT ifname FROM history WHERE step = 'delegate' AND command = 'ADD' ORDER BY id LIMIT 1"
        ).fetchone()
    assert first == ("eth0",), "the cluster network ran (and was recorded) first"
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0
    assert _counts(cluster) == (0, 0)


def test_without_parallel_delegates_they_run_one_after_another(cluster: Cluster, started: Any) -> None:
    names = _meeting_networks(cluster, count=3, timeout=1)
    started(defaultNetworks=names)
    netns = cluster.new_netns()

    added = cluster.run_shim("ADD", container_id=new_container_id(), netns=netns)

    assert added.returncode == 1
    assert added.json()["code"] == 11
    assert "rendezvous timed out" in added.json()["msg"]
    assert [path.name for path in (cluster.root / "rendezvous").iterdir()] == ["net1"], "net2 never started"
    assert netns.links() == {"lo"}
    assert _counts(cluster) == (0, 0)


def test_a_failure_in_one_parallel_delegate_rolls_back_all_of_them(cluster: Cluster, started: Any) -> None:
    log = cluster.root / "failing.jsonl"
    for index in range(2):
        conf = cluster.bridge_conflist(
            f"extra{index}",
            f"10.24{1 + index}.0.0/24",
            default_route=False,
            bridge=f"{cluster.bridge}x{index}",
        )
        cluster.write_network(cluster.conf_dir, f"{20 + index}-extra{index}.conflist", conf)
    failing = {
        "type": "recorder",
        "recorder": {"log": str(log), "fail": {"code": 11, "msg": "no"}, "failOn": "ADD"},
    }
    cluster.write_network(
        cluster.conf_dir,
        "25-failing.conflist",
        {"cniVersion": "1.0.0", "name": "failing", "plugins": [failing]},
    )
    started(defaultNetworks=["extra0", "failing", "extra1"], parallelDelegates=True)
    netns = cluster.new_netns()
    container = new_container_id()

    added = cluster.run_shim("ADD", container_id=container, netns=netns)

    assert added.returncode == 1
    assert added.json()["code"] == 11
    assert "failing" in added.json()["msg"]
    assert netns.links() == {"lo"}
    assert cluster.leftover_host_veths() == set()
    assert cluster.leases() == []
    assert _counts(cluster) == (0, 0)
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        rollback = connection.execute(
            "SELECT ifname, outcome FROM history WHERE trigger = 'rollback' ORDER BY id"
        ).fetchall()
    assert rollback == [("net3", "ok"), ("net2", "ok"), ("net1", "ok"), ("eth0", "ok")]
    calls = [json.loads(line)["command"] for line in Path(log).read_text().splitlines()]
    assert calls == ["ADD", "DEL"]
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0
