"""parallelDelegates: the cluster network first, then the other networks of a pod at the same time.

Overlap is shown without timing: each delegate of a network waits at a rendezvous until every
other one has arrived, so the ADD can succeed only if they all run together (sequentially the
first one gives up, code 11). A failure in one of them rolls back all of them. A sandbox added so
is deleted so (the other networks together, then the cluster network), whatever the daemon config
says by then: the choice is recorded with the sandbox.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, KubeApiProcess, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]

NODE = "node-a"
PARALLEL = "v1.multus-cni.io/parallel-delegates"


def _counts(cluster: Cluster) -> tuple[int, int]:
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        sandboxes = connection.execute("SELECT count(*) FROM sandboxes").fetchone()[0]
        attachments = connection.execute("SELECT count(*) FROM attachments").fetchone()[0]
    return sandboxes, attachments


def _meeting_networks(
    cluster: Cluster, *, count: int, timeout: float, commands: Sequence[str] = ("ADD",)
) -> list[str]:
    """``count`` recorder networks whose ``commands`` wait for each other at one rendezvous directory
    per command (``rendezvous`` for ADD, ``rendezvous-<command>`` for the others)."""
    names = []
    for index in range(count):
        name = f"meet{index}"
        meeting = {"dir": str(cluster.root / "rendezvous"), "count": count, "timeout": timeout}
        recorder = {
            "log": str(cluster.root / "recorder.jsonl"),
            "rendezvous": {**meeting, "commands": list(commands)},
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


def _recorder_cluster_network(cluster: Cluster) -> None:
    """The cluster network: a recorder logging to the meeting networks' log (so the log's order is
    the order in which they all ran)."""
    recorder = {"log": str(cluster.root / "recorder.jsonl")}
    conf = {"cniVersion": "1.0.0", "name": "primary", "plugins": [{"type": "recorder", "recorder": recorder}]}
    cluster.daemon_config["clusterNetwork"] = str(
        cluster.write_network(cluster.net_d, "10-primary.conflist", conf)
    )


def _logged(cluster: Cluster, command: str) -> list[str]:
    lines = (cluster.root / "recorder.jsonl").read_text().splitlines()
    return [entry["env"]["CNI_IFNAME"] for entry in map(json.loads, lines) if entry["command"] == command]


def test_a_parallel_sandbox_is_deleted_in_parallel_and_the_cluster_network_last(
    cluster: Cluster, started: Any
) -> None:
    names = _meeting_networks(cluster, count=3, timeout=60, commands=("ADD", "DEL"))
    _recorder_cluster_network(cluster)
    cluster.daemon_config.update(defaultNetworks=names, parallelDelegates=True)
    cluster.start_daemon()
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0

    deleted = cluster.run_shim("DEL", container_id=container, netns=netns)

    assert deleted.returncode == 0, deleted.stdout
    assert sorted(path.name for path in (cluster.root / "rendezvous-DEL").iterdir()) == [
        "net1",
        "net2",
        "net3",
    ]
    assert _logged(cluster, "ADD")[0] == "eth0"
    assert _logged(cluster, "DEL")[-1] == "eth0", "the cluster network's DEL waited for the others"
    assert _counts(cluster) == (0, 0)
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        lines = connection.execute(
            "SELECT ifname, outcome FROM history WHERE command = 'DEL' AND step = 'delegate' ORDER BY id"
        ).fetchall()
    assert lines == [("net3", "ok"), ("net2", "ok"), ("net1", "ok"), ("eth0", "ok")], "recorded newest first"


def test_a_sandbox_added_one_after_another_is_deleted_so_whatever_the_config_says_now(
    cluster: Cluster, started: Any
) -> None:
    names = _meeting_networks(cluster, count=3, timeout=1, commands=("DEL",))
    _recorder_cluster_network(cluster)
    cluster.daemon_config.update(defaultNetworks=names)
    cluster.start_daemon()
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    cluster.stop_daemon()
    cluster.daemon_config.update(parallelDelegates=True)
    cluster.start_daemon()

    deleted = cluster.run_shim("DEL", container_id=container, netns=netns)

    assert deleted.returncode == 1, "one after another, the DELs could not meet"
    assert deleted.json()["code"] == 11
    # newest first, one at a time: net3 and net2 each waited alone and gave up (pending); net1, the
    # last of them, found their marks left behind
    assert _logged(cluster, "DEL") == ["net3", "net2", "net1", "eth0"]
    assert _counts(cluster) == (1, 2)
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0  # the retry
    assert _counts(cluster) == (0, 0)


def test_a_failed_del_among_parallel_ones_stays_pending_and_the_others_finish(
    cluster: Cluster, started: Any
) -> None:
    log = str(cluster.root / "recorder.jsonl")
    failing = {
        "type": "recorder",
        "recorder": {"log": log, "fail": {"code": 11, "msg": "busy"}, "failOn": "DEL"},
    }
    for name, plugin in (
        ("extra0", {"type": "recorder", "recorder": {"log": log}}),
        ("failing", failing),
        ("extra1", {"type": "recorder", "recorder": {"log": log}}),
    ):
        conf = {"cniVersion": "1.0.0", "name": name, "plugins": [plugin]}
        cluster.write_network(cluster.conf_dir, f"20-{name}.conflist", conf)
    _recorder_cluster_network(cluster)
    cluster.daemon_config.update(defaultNetworks=["extra0", "failing", "extra1"], parallelDelegates=True)
    cluster.start_daemon()
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0

    deleted = cluster.run_shim("DEL", container_id=container, netns=netns)

    assert deleted.returncode == 1
    assert deleted.json()["code"] == 11
    assert "failing" in deleted.json()["msg"]
    assert sorted(_logged(cluster, "DEL")) == ["eth0", "net1", "net2", "net3"], "every DEL ran"
    assert _logged(cluster, "DEL")[-1] == "eth0"
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        pending = connection.execute("SELECT ifname, last_error IS NOT NULL FROM attachments").fetchall()
        lines = connection.execute(
            "SELECT ifname, outcome FROM history WHERE command = 'DEL' AND step = 'delegate' ORDER BY id"
        ).fetchall()
    assert pending == [("net2", 1)], "only the failed DEL stays, its error recorded"
    assert lines == [("net3", "ok"), ("net2", "error"), ("net1", "ok"), ("eth0", "ok")]
    with sqlite3.connect(cluster.state_db) as connection:  # the plugin recovers: the runtime's retry ends it
        connection.execute(
            "UPDATE attachments SET config = ? WHERE container_id = ? AND ifname = 'net2'",
            (json.dumps({"cniVersion": "1.0.0", "name": "failing", "type": "recorder"}).encode(), container),
        )
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


def _meeting_nads(
    cluster: Cluster, kube: KubeApiProcess, *, count: int, timeout: float, ifnames: Sequence[str] = ()
) -> list[str]:
    """NADs ``meet<i>`` whose recorder ADDs wait for each other; ``ifnames[i]``: the result's interface."""
    names = []
    for index in range(count):
        recorder: dict[str, Any] = {
            "rendezvous": {"dir": str(cluster.root / "rendezvous"), "count": count, "timeout": timeout}
        }
        if ifnames:
            recorder["result"] = {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": ifnames[index], "sandbox": "/var/run/netns/any"}],
            }
        kube.create_nad(
            "default", f"meet{index}", {"cniVersion": "1.0.0", "type": "recorder", "recorder": recorder}
        )
        names.append(f"meet{index}")
    return names


def _add_pod(cluster: Cluster, kube: KubeApiProcess, name: str, annotations: dict[str, str]) -> Any:
    pod = kube.create_pod("default", name, node=NODE, annotations=annotations)
    container = new_container_id()
    return cluster.run_shim(
        "ADD",
        container_id=container,
        netns=cluster.new_netns(),
        cni_args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};"
        f"K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID={pod['metadata']['uid']}",
    )


def test_network_status_keeps_the_annotations_order_with_parallel_delegates(
    cluster: Cluster, kube: KubeApiProcess, started: Any
) -> None:
    names = _meeting_nads(cluster, kube, count=3, timeout=60, ifnames=["net2", "net3", "net1"])
    started(parallelDelegates=True)
    order = [names[2], names[0], names[1]]

    added = _add_pod(cluster, kube, "web", {"k8s.v1.cni.cncf.io/networks": ", ".join(order)})

    assert added.returncode == 0, added.stdout
    annotations = kube.get_pod("default", "web")["metadata"].get("annotations") or {}
    entries = json.loads(annotations["k8s.v1.cni.cncf.io/network-status"])
    assert [(e["name"], e.get("interface")) for e in entries][1:] == [
        (f"default/{name}", f"net{index + 1}") for index, name in enumerate(order)
    ]


def test_the_pod_annotation_is_refused_where_the_daemon_config_does_not_allow_it(
    cluster: Cluster, kube: KubeApiProcess, started: Any
) -> None:
    names = _meeting_nads(cluster, kube, count=2, timeout=1)
    started()

    added = _add_pod(
        cluster,
        kube,
        "web",
        {"k8s.v1.cni.cncf.io/networks": ", ".join(names), PARALLEL: "true"},
    )

    assert added.returncode == 1, "the delegates ran one after another: they could not meet"
    assert added.json()["code"] == 11
    assert f"annotation {PARALLEL} refused" in cluster.daemon_log.read_text()


def test_a_pod_can_opt_out_where_parallel_delegates_is_on(
    cluster: Cluster, kube: KubeApiProcess, started: Any
) -> None:
    names = _meeting_nads(cluster, kube, count=2, timeout=1)
    started(parallelDelegates=True)

    added = _add_pod(
        cluster, kube, "web", {"k8s.v1.cni.cncf.io/networks": ", ".join(names), PARALLEL: "false"}
    )

    assert added.returncode == 1, "the delegates ran one after another: they could not meet"
    assert added.json()["code"] == 11
