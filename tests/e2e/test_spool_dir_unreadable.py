"""A daemon whose own ``spoolDir`` cannot be listed (its name too long for the kernel, a file, a path
through a file) starts and serves all the same: the spool is the one place a DEL waits when the
daemon cannot take it, not a condition of serving. Each replay logs it and reports it as
``unreadable`` (an operator's ``POST /gc``, status's ``lastGc``); the shim's default directory is
still replayed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("premigrated_state")]  # starts daemon processes


def unreadable_spool_dir(cluster: Cluster, problem: str) -> Path:
    if problem == "a name too long":
        return cluster.root / ("s" * 300)
    afile = cluster.root / "a-file"
    afile.write_text("")
    return afile if problem == "a file" else afile / "spool"


@pytest.mark.parametrize("problem", ["a name too long", "a file", "a path through a file"])
def test_a_daemon_whose_spool_dir_cannot_be_read_starts_serves_and_reports_it(
    cluster: Cluster, started: Any, problem: str
) -> None:
    spool_dir = unreadable_spool_dir(cluster, problem)

    started(spoolDir=str(spool_dir))  # ready, else this raises

    netns = cluster.new_netns()
    added = cluster.run_shim("ADD", container_id="c" * 64, netns=netns, conf=cluster.shim_conf())
    assert added.returncode == 0, added.stdout
    status, body = cluster.post("/gc")
    assert status == 200, body
    [reported] = json.loads(body)["spool"]["unreadable"]
    assert reported["directory"] == str(spool_dir)
    deleted = cluster.run_shim("DEL", container_id="c" * 64, netns=netns, conf=cluster.shim_conf())
    assert deleted.returncode == 0, deleted.stdout
    assert str(spool_dir) in cluster.daemon_log.read_text()
