"""Failures: a delegate failing, hanging or printing garbage, and malformed requests.

Each gets a CNI error that names the problem; whatever the failed ADD had already attached is
rolled back (no interface, no lease, no checkpoint row left); the daemon keeps serving; and a
sandbox recorded before the bad input is untouched and can still be deleted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]


def _counts(cluster: Cluster) -> tuple[int, int]:
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        sandboxes = connection.execute("SELECT count(*) FROM sandboxes").fetchone()[0]
        attachments = connection.execute("SELECT count(*) FROM attachments").fetchone()[0]
    return sandboxes, attachments


def _failing_network(
    cluster: Cluster, *, log: str, behaviour: dict[str, Any], chain_after_bridge: bool
) -> None:
    recorder = {"type": "recorder", "recorder": {"log": log, "failOn": "ADD", **behaviour}}
    if chain_after_bridge:
        second_bridge = f"{cluster.bridge}f"
        cluster.host_links.append(second_bridge)
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": "failing-net",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": second_bridge,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(cluster.ipam_dir),
                        "ranges": [[{"subnet": "10.243.0.0/24"}]],
                    },
                },
                recorder,
            ],
        }
    else:
        conf = {"cniVersion": "1.0.0", "name": "failing-net", "plugins": [recorder]}
    cluster.write_network(cluster.conf_dir, "90-failing.conflist", conf)


@pytest.fixture
def survivor(started: Any) -> Any:
    """Start a daemon with the given extra config and ADD one healthy sandbox first."""

    def start(**config: Any) -> tuple[Cluster, str, Any]:
        cluster: Cluster = started(**config)
        netns = cluster.new_netns()
        container = new_container_id()
        assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
        return cluster, container, netns

    return start


def _assert_survivor_intact_and_deletable(cluster: Cluster, container: str, netns: Any) -> None:
    assert netns.links() == {"lo", "eth0"}
    assert _counts(cluster) == (1, 1)
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0
    assert cluster.leases() == []


@pytest.mark.parametrize("chain_after_bridge", [False, True], ids=["alone", "after-bridge-in-chain"])
def test_failing_third_delegate_rolls_back_the_first_two(
    cluster: Cluster, started: Any, chain_after_bridge: bool
) -> None:
    log = str(cluster.root / "recorder.jsonl")
    _failing_network(
        cluster,
        log=log,
        behaviour={"fail": {"code": 11, "msg": "no capacity", "details": "retry"}},
        chain_after_bridge=chain_after_bridge,
    )
    cluster.write_network(
        cluster.conf_dir,
        "20-extra.conflist",
        cluster.bridge_conflist("extra", "10.241.0.0/24", default_route=False, bridge=f"{cluster.bridge}e"),
    )
    started(defaultNetworks=["extra", "failing-net"])
    netns = cluster.new_netns()
    container = new_container_id()

    added = cluster.run_shim("ADD", container_id=container, netns=netns)

    assert added.returncode == 1
    error = added.json()
    assert error["code"] == 11, "the delegate's own error code must reach the runtime"
    assert "no capacity" in error["msg"]
    assert "failing-net" in error["msg"]
    assert error["details"] == "retry"
    assert netns.links() == {"lo"}
    assert cluster.leases() == []
    assert _counts(cluster) == (0, 0)
    calls = [json.loads(line)["command"] for line in Path(log).read_text().splitlines()]
    assert calls == ["ADD", "DEL"], "the failed delegate itself is DELed too (it may have half-attached)"
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        rollback = connection.execute(
            "SELECT ifname, outcome FROM history WHERE trigger = 'rollback' ORDER BY id"
        ).fetchall()
    assert rollback == [("net2", "ok"), ("net1", "ok"), ("eth0", "ok")]


def test_delegate_that_hangs_is_killed_after_the_timeout_and_rolled_back(
    cluster: Cluster, started: Any
) -> None:
    log = str(cluster.root / "recorder.jsonl")
    _failing_network(cluster, log=log, behaviour={"hang": True}, chain_after_bridge=False)
    started(defaultNetworks=["failing-net"], delegateTimeoutSeconds=1)
    netns = cluster.new_netns()

    added = cluster.run_shim("ADD", container_id=new_container_id(), netns=netns)

    assert added.returncode == 1
    assert "timed out" in added.json()["msg"] or "timeout" in added.json()["msg"]
    hung = json.loads(Path(log).read_text().splitlines()[0])
    for pid in (hung["pid"], hung["child"]):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}"), f"process {pid} of the hung plugin survived"
    assert netns.links() == {"lo"}
    assert cluster.leases() == []
    assert _counts(cluster) == (0, 0)


def test_delegate_printing_garbage_is_a_decoding_error_and_rolled_back(
    cluster: Cluster, started: Any
) -> None:
    _failing_network(
        cluster, log=str(cluster.root / "r.jsonl"), behaviour={"garbage": True}, chain_after_bridge=False
    )
    started(defaultNetworks=["failing-net"])
    netns = cluster.new_netns()

    added = cluster.run_shim("ADD", container_id=new_container_id(), netns=netns)

    assert added.returncode == 1
    error = added.json()
    assert error["code"] == 6
    assert "recorder" in error["msg"]
    assert netns.links() == {"lo"}
    assert _counts(cluster) == (0, 0)


def test_add_into_a_netns_that_does_not_exist_fails_and_leaves_nothing(survivor: Any) -> None:
    cluster, container, netns = survivor()

    added = cluster.run_shim("ADD", container_id=new_container_id(), netns="/var/run/netns/mp-does-not-exist")

    assert added.returncode == 1
    assert "mp-does-not-exist" in added.stdout
    assert len(cluster.leases()) == 1
    _assert_survivor_intact_and_deletable(cluster, container, netns)


def test_network_conf_without_type_is_a_config_error_naming_the_file(survivor: Any) -> None:
    cluster, container, netns = survivor()
    cluster.write_network(cluster.conf_dir, "50-broken.conf", {"cniVersion": "1.0.0", "name": "broken"})
    target = cluster.new_netns()

    added = cluster.run_shim(
        "ADD",
        container_id=new_container_id(),
        netns=target,
        conf=cluster.shim_conf(defaultNetworks=["broken"]),
    )

    assert added.returncode == 1
    error = added.json()
    assert error["code"] == 7
    assert "50-broken.conf" in error["msg"] + error.get("details", "")
    assert "type" in error["msg"] + error.get("details", "")
    assert target.links() == {"lo"}
    _assert_survivor_intact_and_deletable(cluster, container, netns)


def test_unknown_default_network_is_a_config_error_and_nothing_is_recorded(survivor: Any) -> None:
    cluster, container, netns = survivor()
    target = cluster.new_netns()

    added = cluster.run_shim(
        "ADD",
        container_id=new_container_id(),
        netns=target,
        conf=cluster.shim_conf(defaultNetworks=["no-such-net"]),
    )

    assert added.returncode == 1
    error = added.json()
    assert error["code"] == 7
    assert "no-such-net" in error["msg"]
    assert target.links() == {"lo"}
    assert len(cluster.leases()) == 1
    _assert_survivor_intact_and_deletable(cluster, container, netns)


def test_malformed_stdin_is_rejected_by_the_shim_before_the_daemon(survivor: Any) -> None:
    cluster, container, netns = survivor()

    result = cluster.run_shim(
        "ADD", container_id=new_container_id(), netns=cluster.new_netns(), conf=b"{not json"
    )

    assert result.returncode == 1
    assert result.json()["code"] == 6
    _assert_survivor_intact_and_deletable(cluster, container, netns)


def test_missing_environment_is_named_in_the_error(survivor: Any) -> None:
    cluster, container, netns = survivor()

    result = cluster.run_shim("ADD", container_id="", netns=cluster.new_netns())

    assert result.returncode == 1
    error = result.json()
    assert error["code"] == 4
    assert "CNI_CONTAINERID" in error["msg"]
    _assert_survivor_intact_and_deletable(cluster, container, netns)


def test_unknown_cni_command_is_rejected(survivor: Any) -> None:
    cluster, container, netns = survivor()

    result = cluster.run_shim("FROB", container_id=new_container_id(), netns=cluster.new_netns())

    assert result.returncode == 1
    assert result.json()["code"] == 4
    assert "FROB" in result.json()["msg"]
    _assert_survivor_intact_and_deletable(cluster, container, netns)


@pytest.mark.parametrize(
    ("body", "code", "named"),
    [
        (b"{not json", 6, "not valid JSON"),
        (b"[1, 2]", 6, "JSON object"),
        (b'{"env": {"CNI_COMMAND": "ADD"}, "config": "%%%"}', 6, "'config'"),
        (b'{"env": {"CNI_COMMAND": "ADD"}, "config": "e30="}', 4, "CNI_CONTAINERID"),
        (b'{"env": {}, "config": "e30="}', 4, "CNI_COMMAND"),
        (b'{"env": {"CNI_COMMAND": "ADD"}, "config": "bm90IGpzb24="}', 6, "'config'"),
        (b'{"env": 5, "config": "e30="}', 6, "'env'"),
        (
            b'{"env": {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "a/b", "CNI_NETNS": "/x", "CNI_ARGS": ""}, '
            b'"config": "e30="}',
            4,
            "containerID",
        ),
        (
            b'{"env": {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/x", '
            b'"CNI_ARGS": "novalue"}, "config": "e30="}',
            4,
            "CNI_ARGS",
        ),
    ],
)
def test_malformed_requests_over_the_socket_get_a_cni_error_and_the_daemon_keeps_serving(
    survivor: Any, body: bytes, code: int, named: str
) -> None:
    cluster, container, netns = survivor()

    status, response = cluster.post("/cni", body)

    assert status == 400
    error = json.loads(response)
    assert error["code"] == code
    assert named in error["msg"] + error.get("details", "")
    _assert_survivor_intact_and_deletable(cluster, container, netns)


def test_unknown_paths_are_404_and_health_endpoints_answer(survivor: Any) -> None:
    cluster, container, netns = survivor()

    assert cluster.post("/nope", b"")[0] == 404
    assert cluster.post("/healthz", b"null")[0] == 200
    assert cluster.post("/readyz", b"null")[0] == 200
    _assert_survivor_intact_and_deletable(cluster, container, netns)
