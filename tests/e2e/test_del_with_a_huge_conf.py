"""A DEL whose conf is too large for the daemon's request bound still tears the sandbox down.

The runtime sends a DEL the conf its ADD got (here one edited since, with 3 MiB of padding), at
every retry: refused for its size (code 6), it would never finish (invariant 5b). The shim sends it
without its conf, and the daemon replays the checkpoint with its own configuration.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Cluster, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts a daemon process
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]

MAX_BODY_BYTES = 4 * 1024 * 1024  # app.daemon.server.MAX_BODY_BYTES, seen from outside


def test_a_del_whose_conf_passes_the_request_bound_removes_the_pods_networks(
    cluster: Cluster, started: Any
) -> None:
    started()
    netns = cluster.new_netns()
    container = new_container_id()
    added = cluster.run_shim("ADD", container_id=container, netns=netns)
    assert added.returncode == 0, added
    assert "eth0" in netns.links()
    assert len(cluster.leases()) == 1

    huge = cluster.shim_conf(padding="x" * (MAX_BODY_BYTES * 3 // 4 + 1024))
    deleted = cluster.run_shim("DEL", container_id=container, netns=netns, conf=huge)

    assert (deleted.returncode, deleted.stdout, deleted.stderr) == (0, "", "")
    assert netns.links() == {"lo"}
    assert cluster.leases() == []
