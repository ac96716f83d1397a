"""DELs the shim spools under a hand-written shim conf (static mode: no ``spoolDir`` in it) land in the
shim's default spool directory, wherever the daemon's own ``spoolDir`` is: the daemon must replay them
too (invariant 7), and must leave alone the entries there that belong to another daemon.

The shim's default directory is a fixed node path (``/var/lib/multus-py/spool``), so the shim and the
daemon run in mount namespaces of their own in which a directory of the test is mounted there: the
host's directory is neither read nor written.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from app.daemon import spool
from app.shim.shim import DEFAULT_SPOOL_DIR
from tests.e2e.conftest import Cluster, new_container_id
from tests.shim.helpers import IN_PRIVATE_DEFAULT_SPOOL

pytestmark = [
    pytest.mark.slow,  # starts daemon processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]

GIVE_UP_ON_THE_RESTART = {"MULTUS_SHIM_WAIT_SECONDS": "0", "MULTUS_SHIM_TIMEOUT_SECONDS": "1"}


def private_default_spool(cluster: Cluster) -> Path:
    """From now on the daemon and the shim see the returned directory as the shim's default spool
    directory, each in a mount namespace of its own (a slave of the host's: network namespaces the
    test adds later still appear in it; nothing mounted in it is seen outside)."""
    backing = cluster.root / "default-spool"
    backing.mkdir(mode=0o700)
    script = cluster.root / "in-private-spool.sh"
    script.write_text(IN_PRIVATE_DEFAULT_SPOOL)
    namespace = ["unshare", "--mount", "--propagation", "slave"]
    wrapper = [*namespace, "/bin/sh", str(script), DEFAULT_SPOOL_DIR, str(backing)]
    cluster.daemon_wrapper = wrapper
    shim = cluster.root / "wrapped-shim"
    shim.write_text(f'#!/bin/sh\nexec {" ".join(wrapper)} {cluster.shim} "$@"\n')
    shim.chmod(0o755)
    cluster.shim = shim
    return backing


def static_shim_conf(cluster: Cluster) -> dict[str, Any]:
    """A hand-written shim conf, as upstream's documentation shows it: no ``spoolDir``."""
    conf = cluster.shim_conf()
    del conf["spoolDir"]
    cluster.write_network(cluster.net_d, "00-static.conf", conf)
    cluster.daemon_config["multusConfigFile"] = str(cluster.net_d / "00-static.conf")
    return conf


def spooled(directory: Path) -> list[Path]:
    return sorted(directory.glob(spool.ENTRY_GLOB))


def test_a_del_spooled_under_a_conf_without_spool_dir_is_replayed_by_a_daemon_with_its_own_state_dir(
    cluster: Cluster, started: Any
) -> None:
    default_spool = private_default_spool(cluster)
    conf = static_shim_conf(cluster)
    started(default_networks=1)
    assert cluster.spool_dir != Path(DEFAULT_SPOOL_DIR)
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns, conf=conf).returncode == 0
    assert len(cluster.leases()) == 2
    cluster.stop_daemon()

    deleted = cluster.run_shim(
        "DEL", container_id=container, netns=netns, conf=conf, env=GIVE_UP_ON_THE_RESTART
    )
    assert (deleted.returncode, deleted.stdout) == (0, "")
    assert len(spooled(default_spool)) == 1, "the shim spools in its default directory"
    assert spooled(cluster.spool_dir) == []

    cluster.start_daemon()  # replays the spool before it is ready

    assert netns.links() == {"lo"}, "the spooled DEL was never replayed: lost"
    assert cluster.leases() == []
    assert spooled(default_spool) == []
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT trigger, outcome FROM history WHERE step = 'request' AND command = 'DEL'"
        )
        assert rows.fetchall() == [("spool", "ok")]


def test_a_daemon_leaves_alone_the_entries_of_the_default_directory_addressed_to_another_daemon(
    cluster: Cluster, started: Any
) -> None:
    """Two daemons' worth of entries: one whose shim aimed at another socket, for a sandbox this
    daemon never recorded, is the other daemon's to replay (a DEL of it here would find nothing and
    drop the entry), even if it is malformed."""
    default_spool = private_default_spool(cluster)
    static_shim_conf(cluster)
    other = {"cniVersion": "1.0.0", "name": "net", "type": "multus-shim", "daemonSocketDir": "/run/other"}
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": new_container_id(), "CNI_IFNAME": "eth0"}
    body = {"env": env, "config": base64.b64encode(json.dumps(other).encode()).decode()}
    theirs = default_spool / f"del-1700000000000000000-1-{env['CNI_CONTAINERID']}.json"
    theirs.write_text(json.dumps(body))
    torn = default_spool / "del-1700000000000000001-1-torn.json"
    torn.write_bytes(b'{"env": {"CNI_COMM')

    started()

    assert spooled(default_spool) == [theirs, torn]
    assert theirs.read_text() == json.dumps(body)
