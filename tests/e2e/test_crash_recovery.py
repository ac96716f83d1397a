"""kill -9 at every named point, with 1 and 3 networks: the node converges to zero leftovers.

For each crash point the daemon is started armed (``MULTUS_PY_CRASH_AT``), driven into the
point, dies by SIGKILL, and is started again. Then either the runtime DELs the sandbox (it always
does, eventually, after a failed ADD or for a pod going away), or nobody does, as after a node
crash: the netns is gone and only recovery and GC can clean up. Either way there must be no
interface left in the netns or on the host, no host-local lease, no VF moved, and no checkpoint
row: the checkpoint said "possibly present" for everything that was (invariants 2-5).
"""

from __future__ import annotations

import json
import signal
import sqlite3
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, Netns, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]


@dataclass(frozen=True)
class Case:
    point: str
    networks: int
    operation: str  # "add", "del", "add-failing" (last delegate fails: rollback), "gc"

    def __str__(self) -> str:
        return f"{self.point}-{self.networks}net-{self.operation}"


CASES = [
    Case("add-after-intent", 1, "add"),
    Case("add-after-intent:2", 3, "add"),
    Case("add-after-intent:3", 3, "add"),
    Case("add-intents-synced", 1, "add"),
    Case("add-intents-synced", 3, "add"),
    Case("add-after-exec", 1, "add"),
    Case("add-after-exec:2", 3, "add"),
    Case("add-after-exec:3", 3, "add"),
    Case("add-before-answer", 1, "add"),
    Case("add-before-answer", 3, "add"),
    Case("rollback-after-del", 3, "add-failing"),
    Case("rollback-after-del:2", 3, "add-failing"),
    Case("del-after-begin", 1, "del"),
    Case("del-after-begin", 3, "del"),
    Case("del-after-exec", 1, "del"),
    Case("del-after-exec:2", 3, "del"),
    Case("gc-after-del", 1, "gc"),
    Case("gc-after-del:2", 3, "gc"),
]


def _networks(cluster: Cluster, count: int, *, failing: bool) -> dict[str, Any]:
    """clusterNetwork (+ count-1 default networks, + a failing one): returns daemon config."""
    cluster.write_network(
        cluster.net_d, "10-primary.conflist", cluster.bridge_conflist("primary", "10.240.0.0/24")
    )
    names = []
    for index in range(count - 1):
        name = f"extra{index}"
        conf = cluster.bridge_conflist(
            name, f"10.24{1 + index}.0.0/24", default_route=False, bridge=f"{cluster.bridge}x{index}"
        )
        cluster.write_network(cluster.conf_dir, f"{20 + index}-{name}.conflist", conf)
        names.append(name)
    if failing:
        recorder = {"type": "recorder", "recorder": {"fail": {"code": 11, "msg": "no"}, "failOn": "ADD"}}
        cluster.write_network(
            cluster.conf_dir,
            "90-failing.conflist",
            {"cniVersion": "1.0.0", "name": "failing", "plugins": [recorder]},
        )
        names.append("failing")
    return {"clusterNetwork": str(cluster.net_d / "10-primary.conflist"), "defaultNetworks": names}


def _store_rows(cluster: Cluster) -> tuple[int, int]:
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        return (
            connection.execute("SELECT count(*) FROM sandboxes").fetchone()[0],
            connection.execute("SELECT count(*) FROM attachments").fetchone()[0],
        )


def _wait_for_death(cluster: Cluster) -> None:
    assert cluster.daemon is not None
    code = cluster.daemon.wait(timeout=60)
    assert code == -signal.SIGKILL, f"the daemon should have died at the crash point (exit {code})"
    cluster.daemon = None


def _drive_into_crash(cluster: Cluster, case: Case, netns: Netns, container: str) -> None:
    if case.operation in ("add", "add-failing"):
        added = cluster.run_shim("ADD", container_id=container, netns=netns)
        assert added.returncode == 1, "the runtime sees the ADD fail when the daemon dies"
        assert added.json()["code"] == 11
    elif case.operation == "del":
        assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
        deleted = cluster.run_shim(
            "DEL", container_id=container, netns=netns, env={"MULTUS_SHIM_WAIT_SECONDS": "0"}
        )
        assert deleted.returncode == 0, "a DEL the daemon dropped mid-way is spooled by the shim"
    else:  # gc: the pod's netns disappears without a DEL, GC collects and dies half way
        assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
        netns.delete()
        with suppress(OSError, IndexError):  # the daemon dies while answering
            cluster.post("/gc")
    _wait_for_death(cluster)


def _assert_clean(cluster: Cluster, netns: Netns) -> None:
    if Path(netns.path).exists():
        assert netns.links() == {"lo"}
    assert cluster.leftover_host_veths() == set(), "host veths left on the bridges"
    assert cluster.leases() == []
    assert _store_rows(cluster) == (0, 0)
    assert list(cluster.spool_dir.glob("del-*.json")) == []


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("then", ["runtime-del", "node-crash"])
def test_kill_9_at_every_point_leaves_nothing_behind(cluster: Cluster, case: Case, then: str) -> None:
    cluster.daemon_config.update(_networks(cluster, case.networks, failing=case.operation == "add-failing"))
    cluster.daemon_config["gcIntervalSeconds"] = 3600  # passes only when the test asks
    netns = cluster.new_netns()
    container = new_container_id()
    cluster.start_daemon(env={"MULTUS_PY_CRASH_AT": case.point})

    _drive_into_crash(cluster, case, netns, container)
    if then == "node-crash":
        netns.delete()
    cluster.start_daemon()
    if then == "runtime-del":
        assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0
    status, report = cluster.post("/gc")
    assert status == 200, report

    _assert_clean(cluster, netns)


def test_node_reboot_releases_every_lease_before_the_daemon_is_ready(cluster: Cluster) -> None:
    cluster.daemon_config.update(_networks(cluster, 3, failing=False))
    cluster.daemon_config["gcIntervalSeconds"] = 3600
    cluster.start_daemon(env={"MULTUS_PY_BOOT_ID": "boot-before"})
    pods = [(cluster.new_netns(), new_container_id()) for _ in range(4)]
    for netns, container in pods:
        assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    assert len(cluster.leases()) == 12
    cluster.stop_daemon(signal.SIGKILL)
    for netns, _ in pods:  # a reboot takes every namespace (and the veths in them) away
        netns.delete()

    cluster.start_daemon(env={"MULTUS_PY_BOOT_ID": "boot-after"})  # returns once ready

    assert cluster.leases() == []
    assert _store_rows(cluster) == (0, 0)
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        triggers = {row[0] for row in connection.execute("SELECT trigger FROM history WHERE command = 'DEL'")}
    assert triggers == {"recovery"}
    assert "MULTUS_PY_BOOT_ID='boot-after': a test hook" in cluster.daemon_log.read_text(), (
        "a daemon running on the hook says so: another value at its next start tears down every pod"
    )


GIVE_UP_ON_THE_RESTART = {"MULTUS_SHIM_WAIT_SECONDS": "0", "MULTUS_SHIM_TIMEOUT_SECONDS": "1"}
"""The shim's test knobs: a gracefully stopped daemon's restart marker is waited for 1 s, not its 30."""


def test_spooled_del_is_replayed_before_the_daemon_is_ready(started: Any) -> None:
    cluster: Cluster = started(default_networks=1)
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    cluster.stop_daemon()

    deleted = cluster.run_shim("DEL", container_id=container, netns=netns, env=GIVE_UP_ON_THE_RESTART)
    assert deleted.returncode == 0
    assert len(list(cluster.spool_dir.glob("del-*.json"))) == 1
    assert netns.links() == {"lo", "eth0", "net1"}, "nothing was deleted yet: the DEL waits in the spool"

    cluster.start_daemon()

    assert netns.links() == {"lo"}
    assert cluster.leases() == []
    assert list(cluster.spool_dir.glob("del-*.json")) == []
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT trigger, outcome FROM history WHERE step = 'request' AND command = 'DEL'"
        )
        assert rows.fetchall() == [("spool", "ok")]


def test_a_del_whose_shim_conf_is_unusable_is_spooled_and_the_daemon_replays_it(started: Any) -> None:
    """A DEL whose ``daemonSocketDir`` is of the wrong type cannot reach the daemon, and no retry of the
    runtime's would change that: the shim spools it and succeeds; the daemon DELs from its checkpoint."""
    cluster: Cluster = started(default_networks=1)
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0

    conf = cluster.shim_conf(daemonSocketDir=5)
    deleted = cluster.run_shim("DEL", container_id=container, netns=netns, conf=conf)
    assert (deleted.returncode, deleted.stdout) == (0, "")
    assert len(list(cluster.spool_dir.glob("del-*.json"))) == 1
    cluster.stop_daemon()
    cluster.start_daemon()  # replays the spool before it is ready

    assert netns.links() == {"lo"}
    assert cluster.leases() == []
    assert list(cluster.spool_dir.iterdir()) == []


def test_a_corrupt_spool_entry_is_kept_aside_and_does_not_block_the_others(started: Any) -> None:
    cluster: Cluster = started()
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    cluster.stop_daemon()
    cluster.spool_dir.mkdir(parents=True, exist_ok=True)
    (cluster.spool_dir / "del-0000-1-torn.json").write_bytes(b'{"env": {"CNI_COMM')
    assert (
        cluster.run_shim("DEL", container_id=container, netns=netns, env=GIVE_UP_ON_THE_RESTART).returncode
        == 0
    )

    cluster.start_daemon()

    assert netns.links() == {"lo"}
    assert [p.name for p in cluster.spool_dir.iterdir()] == ["del-0000-1-torn.json.rejected"]
    assert "del-0000-1-torn.json" in cluster.daemon_log.read_text()


def test_gc_collects_a_sandbox_whose_netns_vanished_without_a_del(started: Any) -> None:
    cluster: Cluster = started(default_networks=1)
    kept_netns, gone_netns = cluster.new_netns(), cluster.new_netns()
    kept, gone = new_container_id(), new_container_id()
    for netns, container in ((kept_netns, kept), (gone_netns, gone)):
        assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    gone_netns.delete()

    status, dry = cluster.post("/gc?dryRun=true")
    assert status == 200
    assert [(o["containerID"], o["reason"]) for o in json.loads(dry)["orphans"]] == [(gone, "netns-gone")]
    assert len(cluster.leases()) == 4, "a dry run changes nothing"

    status, report = cluster.post("/gc")

    assert status == 200
    assert json.loads(report)["collected"] == [gone]
    assert len(cluster.leases()) == 2
    assert kept_netns.links() == {"lo", "eth0", "net1"}
    assert _store_rows(cluster) == (1, 2)


@pytest.mark.parametrize("case", [case for case in CASES if case.networks == 3], ids=str)
@pytest.mark.parametrize("then", ["runtime-del", "node-crash"])
def test_kill_9_at_every_point_with_parallel_delegates_leaves_nothing_behind(
    cluster: Cluster, case: Case, then: str
) -> None:
    cluster.daemon_config.update(_networks(cluster, case.networks, failing=case.operation == "add-failing"))
    cluster.daemon_config["gcIntervalSeconds"] = 3600
    cluster.daemon_config["parallelDelegates"] = True
    netns = cluster.new_netns()
    container = new_container_id()
    cluster.start_daemon(env={"MULTUS_PY_CRASH_AT": case.point})

    _drive_into_crash(cluster, case, netns, container)
    if then == "node-crash":
        netns.delete()
    cluster.start_daemon()
    if then == "runtime-del":
        assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0
    status, report = cluster.post("/gc")
    assert status == 200, report

    _assert_clean(cluster, netns)
