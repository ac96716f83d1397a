"""ADD, CHECK and DEL of sandboxes through the real shim, daemon and reference plugins.

What the runtime sees (the shim's output), what the pod gets (interfaces and addresses read with
pyroute2 inside the netns), what the node keeps (host-local leases, host links) and what the
checkpoint says, for one and for three networks.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, Netns, host_link_names, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]


def _three_networks(cluster: Cluster) -> None:
    """Primary bridge+host-local; net1 macvlan on a veth parent; net2 bridge+static+tuning."""
    parent = cluster.veth_uplink()
    cluster.write_network(
        cluster.conf_dir,
        "20-macvlan.conf",
        {
            "cniVersion": "0.4.0",
            "name": "macvlan-net",
            "type": "macvlan",
            "master": parent,
            "mode": "bridge",
            "ipam": {
                "type": "host-local",
                "dataDir": str(cluster.ipam_dir),
                "ranges": [[{"subnet": "10.241.0.0/24"}]],
            },
        },
    )
    second_bridge = f"{cluster.bridge}s"
    cluster.host_links.append(second_bridge)
    cluster.write_network(
        cluster.conf_dir,
        "30-static.conflist",
        {
            "cniVersion": "1.0.0",
            "name": "static-net",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": second_bridge,
                    "ipam": {"type": "static", "addresses": [{"address": "10.242.0.5/24"}]},
                },
                {"type": "tuning", "mtu": 1400},
            ],
        },
    )


@pytest.fixture
def three(cluster: Cluster, started: Callable[..., Cluster]) -> Cluster:
    _three_networks(cluster)
    return started(defaultNetworks=["macvlan-net", "static-net"])


def _db_rows(cluster: Cluster, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        return connection.execute(query, args).fetchall()


def test_add_with_one_network_gives_the_pod_eth0_and_prints_the_result(started: Any) -> None:
    cluster: Cluster = started()
    netns = cluster.new_netns()
    container = new_container_id()

    added = cluster.run_shim("ADD", container_id=container, netns=netns)

    assert added.returncode == 0, added.stdout
    result = added.json()
    interfaces = netns.interfaces()
    assert set(interfaces) == {"lo", "eth0"}
    assert interfaces["eth0"]["addresses"] == ["10.240.0.2/24"]
    assert result["cniVersion"] == "1.0.0"
    assert result["ips"][0]["address"] == "10.240.0.2/24"
    sandbox_iface = next(i for i in result["interfaces"] if i.get("sandbox") == netns.path)
    assert sandbox_iface["name"] == "eth0"
    assert sandbox_iface["mac"] == interfaces["eth0"]["mac"]
    assert len(cluster.leases()) == 1
    assert _db_rows(cluster, "SELECT state FROM sandboxes WHERE container_id = ?", container) == [("ready",)]


def test_add_with_three_networks_names_interfaces_eth0_net1_net2(three: Cluster) -> None:
    netns = three.new_netns()
    container = new_container_id()

    added = three.run_shim("ADD", container_id=container, netns=netns)

    assert added.returncode == 0, added.stdout
    interfaces = netns.interfaces()
    assert set(interfaces) == {"lo", "eth0", "net1", "net2"}
    assert interfaces["eth0"]["addresses"] == ["10.240.0.2/24"]
    assert interfaces["net1"]["addresses"] == ["10.241.0.2/24"]
    assert interfaces["net1"]["kind"] == "macvlan"
    assert interfaces["net2"]["addresses"] == ["10.242.0.5/24"]
    assert interfaces["net2"]["mtu"] == 1400, "the tuning plugin in net2's chain did not run"
    assert added.json()["ips"] == [{"address": "10.240.0.2/24", "gateway": "10.240.0.1", "interface": 2}]
    rows = _db_rows(
        three,
        "SELECT position, ifname, network_name, plugin_types, state FROM attachments "
        "WHERE container_id = ? ORDER BY position",
        container,
    )
    assert rows == [
        (0, "eth0", "primary", "bridge", "added"),
        (1, "net1", "macvlan-net", "macvlan", "added"),
        (2, "net2", "static-net", "bridge,tuning", "added"),
    ]


def test_check_passes_for_a_healthy_sandbox_and_del_removes_everything(three: Cluster) -> None:
    netns = three.new_netns()
    container = new_container_id()
    assert three.run_shim("ADD", container_id=container, netns=netns).returncode == 0

    checked = three.run_shim("CHECK", container_id=container, netns=netns)
    deleted = three.run_shim("DEL", container_id=container, netns=netns)

    assert (checked.returncode, checked.stdout) == (0, "")
    assert (deleted.returncode, deleted.stdout) == (0, "")
    assert netns.links() == {"lo"}
    assert three.leases() == []
    assert _db_rows(three, "SELECT count(*) FROM sandboxes") == [(0,)]
    assert _db_rows(three, "SELECT count(*) FROM attachments") == [(0,)]


def test_check_reports_an_interface_missing_from_the_netns(three: Cluster) -> None:
    netns = three.new_netns()
    container = new_container_id()
    assert three.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    subprocess.run(["ip", "-n", netns.name, "link", "del", "net1"], check=True)

    checked = three.run_shim("CHECK", container_id=container, netns=netns)

    assert checked.returncode == 1
    error = checked.json()
    assert error["code"] == 100
    assert '"net1"' in error["msg"]
    assert "macvlan-net" in error["msg"]


def test_check_of_a_container_never_added_is_an_unknown_container_error(started: Any) -> None:
    cluster: Cluster = started()
    netns = cluster.new_netns()

    checked = cluster.run_shim("CHECK", container_id=new_container_id(), netns=netns)

    assert checked.returncode == 1
    assert checked.json()["code"] == 3


def test_del_twice_succeeds_both_times(started: Any) -> None:
    cluster: Cluster = started()
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0

    first = cluster.run_shim("DEL", container_id=container, netns=netns)
    second = cluster.run_shim("DEL", container_id=container, netns=netns)

    assert (first.returncode, second.returncode) == (0, 0)
    assert cluster.leases() == []


def test_del_of_a_container_never_added_succeeds(started: Any) -> None:
    cluster: Cluster = started()

    deleted = cluster.run_shim("DEL", container_id=new_container_id(), netns="")

    assert (deleted.returncode, deleted.stdout) == (0, "")


def test_del_after_the_netns_is_gone_releases_the_leases(three: Cluster) -> None:
    netns = three.new_netns()
    container = new_container_id()
    assert three.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    assert len(three.leases()) == 2
    netns.delete()

    deleted = three.run_shim("DEL", container_id=container, netns=netns)

    assert deleted.returncode == 0, deleted.stdout
    assert three.leases() == []
    assert _db_rows(three, "SELECT count(*) FROM attachments") == [(0,)]


def test_del_replays_the_recorded_config_when_the_network_file_is_gone(three: Cluster) -> None:
    netns = three.new_netns()
    container = new_container_id()
    assert three.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    for path in three.conf_dir.iterdir():
        path.unlink()
    (three.net_d / "10-primary.conflist").unlink()

    deleted = three.run_shim("DEL", container_id=container, netns=netns)

    assert deleted.returncode == 0, deleted.stdout
    assert netns.links() == {"lo"}
    assert three.leases() == []


def test_del_replays_runtime_config_recorded_at_add(cluster: Cluster, started: Any) -> None:
    log = cluster.root / "recorder.jsonl"
    primary = cluster.bridge_conflist(
        "primary",
        "10.240.0.0/24",
        plugins_after=[
            {
                "type": "recorder",
                "capabilities": {"portMappings": True, "bandwidth": True},
                "recorder": {"log": str(log)},
            }
        ],
    )
    runtime_config = {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000},
    }
    cluster.write_network(cluster.root / "primaries", "primary.conflist", primary)
    started(clusterNetwork=str(cluster.root / "primaries" / "primary.conflist"))
    netns = cluster.new_netns()
    container = new_container_id()
    conf_with_capabilities = cluster.shim_conf(runtimeConfig=runtime_config)

    assert (
        cluster.run_shim("ADD", container_id=container, netns=netns, conf=conf_with_capabilities).returncode
        == 0
    )
    deleted = cluster.run_shim("DEL", container_id=container, netns=netns)

    assert deleted.returncode == 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [call["command"] for call in calls] == ["ADD", "DEL"]
    assert calls[0]["stdin"]["runtimeConfig"] == runtime_config
    assert calls[1]["stdin"]["runtimeConfig"] == runtime_config, "DEL must replay the ADD's runtimeConfig"
    assert calls[1]["stdin"]["prevResult"]["ips"][0]["address"] == "10.240.0.2/24"


def test_result_is_printed_in_the_cni_version_the_runtime_asked_for(started: Any) -> None:
    cluster: Cluster = started()
    for version, key in (("0.3.1", "ips"), ("0.2.0", "ip4"), ("1.1.0", "ips")):
        netns = cluster.new_netns()
        container = new_container_id()
        added = cluster.run_shim(
            "ADD", container_id=container, netns=netns, conf=cluster.shim_conf(cniVersion=version)
        )
        assert added.returncode == 0, added.stdout
        result = added.json()
        assert result["cniVersion"] == version
        assert key in result
        if version == "0.3.1":
            assert result["ips"][0]["version"] == "4"
        if version == "0.2.0":
            assert result["ip4"]["ip"].startswith("10.240.0.")
        assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0


def test_history_records_the_request_and_every_delegate_step(three: Cluster) -> None:
    netns = three.new_netns()
    container = new_container_id()
    assert three.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    assert three.run_shim("DEL", container_id=container, netns=netns).returncode == 0

    rows = _db_rows(
        three,
        "SELECT command, step, trigger, outcome, ifname, network_name, ips FROM history "
        "WHERE container_id = ? ORDER BY id",
        container,
    )

    assert [(r[0], r[1], r[4]) for r in rows] == [
        ("ADD", "delegate", "eth0"),
        ("ADD", "delegate", "net1"),
        ("ADD", "delegate", "net2"),
        ("ADD", "request", "eth0"),
        ("DEL", "delegate", "net2"),
        ("DEL", "delegate", "net1"),
        ("DEL", "delegate", "eth0"),
        ("DEL", "request", "eth0"),
    ]
    assert all(r[2] == "runtime" and r[3] == "ok" for r in rows)
    assert json.loads(rows[1][6]) == ["10.241.0.2/24"]


def test_concurrent_adds_of_different_sandboxes_all_succeed(started: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    cluster: Cluster = started()
    pods: list[tuple[str, Netns]] = [(new_container_id(), cluster.new_netns()) for _ in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        added = list(pool.map(lambda p: cluster.run_shim("ADD", container_id=p[0], netns=p[1]), pods))
    assert [r.returncode for r in added] == [0] * 8
    addresses = {netns.interfaces()["eth0"]["addresses"][0] for _, netns in pods}
    assert len(addresses) == 8
    with ThreadPoolExecutor(max_workers=8) as pool:
        deleted = list(pool.map(lambda p: cluster.run_shim("DEL", container_id=p[0], netns=p[1]), pods))
    assert [r.returncode for r in deleted] == [0] * 8
    assert cluster.leases() == []


def test_host_side_veths_are_gone_after_del(started: Any) -> None:
    cluster: Cluster = started()
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    plugged = cluster.leftover_host_veths()
    assert len(plugged) == 1
    assert plugged <= host_link_names()

    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0

    assert cluster.leftover_host_veths() == set()
    assert not plugged & host_link_names()


def test_del_after_the_daemon_was_killed_and_restarted_cleans_everything(three: Cluster) -> None:
    netns = three.new_netns()
    container = new_container_id()
    assert three.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    three.stop_daemon(signal.SIGKILL)
    three.start_daemon()

    deleted = three.run_shim("DEL", container_id=container, netns=netns)

    assert deleted.returncode == 0, deleted.stdout
    assert netns.links() == {"lo"}
    assert three.leases() == []
    assert _db_rows(three, "SELECT count(*) FROM sandboxes") == [(0,)]


def test_a_second_add_of_the_same_container_is_refused_without_touching_the_first(started: Any) -> None:
    cluster: Cluster = started()
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0

    again = cluster.run_shim("ADD", container_id=container, netns=netns)

    assert again.returncode == 1
    assert again.json()["code"] == 4
    assert "already attached" in again.json()["msg"]
    assert netns.links() == {"lo", "eth0"}
    assert len(cluster.leases()) == 1
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0
    assert cluster.leases() == []


def test_each_delegate_runs_only_after_its_intent_is_committed(cluster: Cluster, started: Any) -> None:
    """Invariant 2, observed from inside the delegate: its checkpoint row is already on disk."""
    log = cluster.root / "recorder.jsonl"
    recorder = {"type": "recorder", "recorder": {"log": str(log), "checkpoint": str(cluster.state_db)}}
    cluster.write_network(
        cluster.conf_dir, "20-probe.conflist", {"cniVersion": "1.0.0", "name": "probe", "plugins": [recorder]}
    )
    started(defaultNetworks=["probe"])
    netns = cluster.new_netns()
    container = new_container_id()

    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0

    add, delete = (json.loads(line) for line in log.read_text().splitlines())
    assert add["env"]["CNI_IFNAME"] == "net1"
    assert add["checkpoint"]["state"] == "intent"
    assert add["checkpoint"]["sandbox_state"] == "adding"
    assert json.loads(add["checkpoint"]["config"])["name"] == "probe"
    assert add["env"]["CNI_ARGS"] == ";".join("=".join(pair) for pair in add["checkpoint"]["cni_args"])
    assert delete["checkpoint"]["state"] == "deleting"
    assert delete["checkpoint"]["sandbox_state"] == "deleting"


def test_multusctl_lists_what_is_attached_while_the_daemon_runs(three: Cluster) -> None:
    netns = three.new_netns()
    container = new_container_id()
    assert three.run_shim("ADD", container_id=container, netns=netns).returncode == 0

    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli.main",
            "--state-dir",
            str(three.state_db.parent),
            "attachments",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )

    rows = json.loads(listed.stdout)
    assert [(r["interface"], r["network"], r["addresses"]) for r in rows] == [
        ("eth0", "primary", "10.240.0.2/24"),
        ("net1", "macvlan-net", "10.241.0.2/24"),
        ("net2", "static-net", "10.242.0.5/24"),
    ]
    assert {r["pod"] for r in rows} == {f"default/pod-{container[:8]}"}


def test_readiness_indicator_file_gates_adds_and_the_shim_conf(cluster: Cluster, started: Any) -> None:
    indicator = cluster.root / "primary-ready"
    cluster.write_network(
        cluster.net_d, "10-primary.conflist", cluster.bridge_conflist("primary", "10.240.0.0/24")
    )
    cluster.daemon_config["readinessindicatorfile"] = str(indicator)
    # the shim conf is checked every 0.1 s and the indicator every 0.05 s, not every 2 s and 1 s: the
    # test waits for them thrice
    cluster.daemon_config["autoconfIntervalSeconds"] = 0.1
    cluster.start_daemon(wait=False)
    shim_conf = cluster.net_d / "00-multus.conf"
    netns = cluster.new_netns()
    container = new_container_id()
    _wait_for(lambda: cluster._readyz() == 500)  # serving, not ready

    # An ADD arriving now is held until ready (tests/e2e/test_hostile_requests.py), not refused.
    assert not shim_conf.exists()

    indicator.write_text("")
    cluster.wait_ready()
    _wait_for(shim_conf.exists)
    assert "readinessindicatorfile" not in json.loads(shim_conf.read_text())
    generated = shim_conf.read_bytes()
    assert cluster.run_shim("ADD", container_id=container, netns=netns, conf=generated).returncode == 0

    indicator.unlink()
    _wait_for(lambda: not shim_conf.exists())
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0, (
        "DEL needs no readiness"
    )
    assert netns.links() == {"lo"}


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_the_daemon_survives_many_checks(started: Any) -> None:
    """Regression: CHECK inspected the netns through a forked pyroute2 helper; the SIGTERM that
    stopped the helper reached the daemon's own event loop through the inherited signal pipe, and
    the daemon shut down."""
    cluster: Cluster = started()
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0

    for _ in range(30):
        assert cluster.run_shim("CHECK", container_id=container, netns=netns).returncode == 0

    assert cluster.daemon is not None
    assert cluster.daemon.poll() is None, "the daemon is still running"
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0
