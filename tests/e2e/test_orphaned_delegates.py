"""An orphaned delegate is reaped before recovery tears its sandbox down (invariant 9).

The daemon is killed with SIGKILL while a delegate's ADD runs; the delegate survives it (it leads
its own session). The delegate is a gate in front of the real bridge plugin: it blocks on a FIFO
until the test opens it, so the race is deterministic. Before the fix, the restarted daemon's
recovery DELed the sandbox while the ADD still ran, and the ADD, finishing later, left its
interface, host veth and lease for good. Now recovery kills the delegate (and waits until it is
gone) before its DEL, and releasing the gate afterwards finds nobody waiting.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster, ShimResult, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]

GATE = """#!/bin/sh
# ADD: say who we are, block until the test opens the FIFO, then become the real bridge plugin.
# DEL: note whether that ADD is still running (its state letter; "gone" once reaped), then bridge.
if [ "$CNI_COMMAND" = ADD ]; then
    echo $$ > {pid_file}
    cat {fifo} > /dev/null
fi
if [ "$CNI_COMMAND" = DEL ]; then
    state=$(cut -d' ' -f3 /proc/$(cat {pid_file})/stat 2>/dev/null)
    echo "DEL add=${{state:-gone}}" >> {log}
fi
exec {bridge}
"""


def _state(pid: int) -> str:
    """The process's state letter, "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return ""


def _until(condition: Callable[[], object], what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def gate(cluster: Cluster) -> Iterator[tuple[Path, Path, Path]]:
    fifo, pid_file, log = cluster.root / "gate.fifo", cluster.root / "gate.pid", cluster.root / "gate.log"
    os.mkfifo(fifo)
    script = cluster.bin_dir / "gated"
    script.write_text(GATE.format(pid_file=pid_file, fifo=fifo, log=log, bridge=cluster.bin_dir / "bridge"))
    script.chmod(0o755)
    yield fifo, pid_file, log
    if pid_file.exists() and _state(int(pid_file.read_text())) not in ("", "Z"):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the test failed: never leave it behind


def test_recovery_kills_a_delegate_still_running_from_before_the_crash_before_its_del(
    cluster: Cluster, gate: tuple[Path, Path, Path]
) -> None:
    fifo, pid_file, log = gate
    cluster.write_network(
        cluster.net_d, "10-primary.conflist", cluster.bridge_conflist("primary", "10.240.0.0/24")
    )
    gated = cluster.bridge_conflist(
        "gated", "10.241.0.0/24", default_route=False, bridge=f"{cluster.bridge}g"
    )
    gated["plugins"][0]["type"] = "gated"
    cluster.write_network(cluster.conf_dir, "20-gated.conflist", gated)
    cluster.daemon_config.update(
        clusterNetwork=str(cluster.net_d / "10-primary.conflist"),
        defaultNetworks=["gated"],
        gcIntervalSeconds=3600,
    )
    cluster.start_daemon()
    netns = cluster.new_netns()
    container = new_container_id()
    answers: list[ShimResult] = []
    runtime = threading.Thread(
        target=lambda: answers.append(cluster.run_shim("ADD", container_id=container, netns=netns))
    )
    runtime.start()
    _until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the gated ADD to start")
    orphan = int(pid_file.read_text())
    assert netns.links() == {"lo", "eth0"}, "eth0 is attached, net1's delegate is still running"

    cluster.stop_daemon(signal.SIGKILL)
    runtime.join(timeout=60)
    assert answers[0].returncode == 1, "the runtime sees the ADD fail with the daemon"
    assert _state(orphan) not in ("", "Z"), "the delegate outlives the daemon"

    cluster.start_daemon()  # returns once ready: recovery has run

    assert _state(orphan) in ("", "Z"), "recovery killed the orphaned delegate"
    assert log.read_text().splitlines() in (["DEL add=Z"], ["DEL add=gone"]), "killed before its DEL ran"
    with pytest.raises(OSError, match="No such device or address") as nobody:  # no reader is left
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert nobody.value.errno == errno.ENXIO
    daemon_log = cluster.daemon_log.read_text()
    assert (
        f"killed orphaned plugin process {orphan} (CNI_COMMAND=ADD, attachment {container}/net1" in daemon_log
    )
    assert daemon_log.index(f"killed orphaned plugin process {orphan}") < daemon_log.index(
        "recovery: 1 rolled back"
    )
    assert netns.links() == {"lo"}
    assert cluster.leftover_host_veths() == set()
    assert cluster.leases() == []
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        assert connection.execute("SELECT count(*) FROM attachments").fetchone()[0] == 0
        triggers = connection.execute(
            "SELECT trigger, ifname, outcome FROM history WHERE command = 'DEL' AND step = 'delegate'"
        ).fetchall()
    assert sorted(triggers) == [("recovery", "eth0", "ok"), ("recovery", "net1", "ok")]
