"""An ADD reusing a container ID whose DEL the shim spooled while the daemon was up (the DEL's
deadline passed, say) is served once that DEL has run, not refused as "already attached" until the
next GC pass replays it: the spooled DEL came first. The spooled DEL runs under the sandbox's lock
as a replay does, so one spooled before the recorded sandbox's ADD still does not touch it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.daemon import spool
from tests.e2e.conftest import Cluster, new_container_id

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("premigrated_state")]  # starts daemon processes

NO_GC_PASS = 3600
"""``gcIntervalSeconds`` far past the test: no periodic pass replays the spool meanwhile."""


def spool_a_del(cluster: Cluster, container: str, netns: Any) -> Path:
    """The shim spools a DEL for the daemon's spool: as if the daemon had not taken it in time (the
    shim is pointed at a socket directory where nothing listens, with the daemon's ``spoolDir``)."""
    conf = cluster.shim_conf(daemonSocketDir=str(cluster.root / "nobody"))
    deleted = cluster.run_shim(
        "DEL", container_id=container, netns=netns, conf=conf, env={"MULTUS_SHIM_WAIT_SECONDS": "0"}
    )
    assert (deleted.returncode, deleted.stdout) == (0, "")
    [entry] = cluster.spool_dir.glob(spool.ENTRY_GLOB)
    return entry


def test_an_add_reusing_the_id_of_a_sandbox_whose_del_sits_spooled_runs_that_del_first(
    cluster: Cluster, started: Any
) -> None:
    started(gcIntervalSeconds=NO_GC_PASS)
    container = new_container_id()
    first = cluster.new_netns()
    assert cluster.run_shim("ADD", container_id=container, netns=first).returncode == 0
    assert "eth0" in first.links()
    entry = spool_a_del(cluster, container, first)

    second = cluster.new_netns()
    added = cluster.run_shim("ADD", container_id=container, netns=second)

    assert added.returncode == 0, added.stdout
    assert json.loads(added.stdout)["interfaces"]
    assert not entry.exists(), "the spooled DEL ran, and its entry is gone"
    assert "eth0" not in first.links(), "the first sandbox was torn down before the ADD"
    assert "eth0" in second.links()
    assert len(cluster.leases()) == 1


def test_an_add_repeated_without_a_del_is_still_refused(cluster: Cluster, started: Any) -> None:
    """No DEL of the recorded sandbox sits spooled (one spooled before its ADD is an earlier
    sandbox's): the ADD stays refused, and that sandbox is not touched."""
    started(gcIntervalSeconds=NO_GC_PASS)
    container = new_container_id()
    earlier = cluster.new_netns()
    entry = spool_a_del(cluster, container, earlier)  # spooled before the ADD below
    netns = cluster.new_netns()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0

    again = cluster.run_shim("ADD", container_id=container, netns=netns)

    assert again.returncode == 1
    assert "already attached" in json.loads(again.stdout)["msg"]
    assert "eth0" in netns.links()
    assert not entry.exists(), "meant for an earlier sandbox: dropped unreplayed"
