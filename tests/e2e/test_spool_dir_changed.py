"""An operator changes ``spoolDir`` in daemon-config.json and restarts the daemon: the DELs the shim
spooled into the earlier directory while the daemon was away (the shim conf the runtime used still
named it) are replayed before the daemon reports ready, and that directory leaves the record of
earlier ones once it holds nothing. They were never replayed: lost, their interfaces and leases
leaked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.daemon import spool
from tests.e2e.conftest import Cluster, new_container_id

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("premigrated_state")]  # starts daemon processes

GIVE_UP_ON_THE_RESTART = {"MULTUS_SHIM_WAIT_SECONDS": "0", "MULTUS_SHIM_TIMEOUT_SECONDS": "1"}


def recorded(cluster: Cluster) -> list[str]:
    record = spool.record_path(Path(cluster.daemon_config["stateDir"]))
    directories: list[str] = json.loads(record.read_text())["spoolDirs"]
    return directories


def test_a_del_spooled_in_the_spool_dir_used_before_a_restart_is_replayed_by_the_next_daemon(
    cluster: Cluster, started: Any
) -> None:
    before, after = cluster.root / "spool-a", cluster.root / "spool-b"
    started(spoolDir=str(before))
    conf = cluster.shim_conf(spoolDir=str(before))  # what the runtime used: 00-multus.conf named it
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns, conf=conf).returncode == 0
    assert netns.links() != {"lo"}
    cluster.stop_daemon()
    deleted = cluster.run_shim(
        "DEL", container_id=container, netns=netns, conf=conf, env=GIVE_UP_ON_THE_RESTART
    )
    assert (deleted.returncode, deleted.stdout) == (0, "")
    assert len(list(before.glob(spool.ENTRY_GLOB))) == 1

    cluster.daemon_config["spoolDir"] = str(after)
    cluster.start_daemon()  # replays before it is ready

    assert netns.links() == {"lo"}, "the DEL spooled in the earlier spoolDir was never replayed: lost"
    assert cluster.leases() == []
    assert list(before.glob(spool.ENTRY_GLOB)) == []
    assert recorded(cluster) == [str(after)], "an emptied earlier spoolDir leaves the record"
