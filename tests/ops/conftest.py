"""Operator-facing fixtures: real ADD/DEL/CHECK runs whose history and checkpoint multusctl queries.

Re-exports the e2e fixtures (``cluster``, ``started``, ``premigrated_state``) for tests that need a
daemon of their own, and builds one module-scoped ``scenario``: a daemon that attached, checked,
deleted and failed real sandboxes through the real shim, daemon and reference plugins (plus the
recorder plugin failing an ADD), so the many read-only queries of a module share one set of real
rows. Its node, like those tests' own, uses the session's installed shim and starts on the session's
migrated empty database (tests/e2e/conftest.py).
``Scenario.ctl`` runs ``multusctl`` as a process against it, as an operator would.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import child_environment
from tests.e2e.conftest import (
    Cluster,
    Netns,
    ShimResult,
    cluster,
    installed_shim,
    make_cluster,
    premigrated_state,
    seed_state,
    started,
    state_template,
)

__all__ = [
    "cluster",
    "installed_shim",
    "premigrated_state",
    "started",
    "state_template",
]  # re-exported fixtures

FAILURE = {"code": 11, "msg": "no capacity", "details": "retry later"}


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    container: str
    netns: Netns

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def cni_args(self) -> str:
        return (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.namespace};K8S_POD_NAME={self.name};"
            f"K8S_POD_INFRA_CONTAINER_ID={self.container};K8S_POD_UID={self.uid}"
        )


@dataclass
class Scenario:
    """What happened, in order: web ADD + CHECK (kept), db ADD + DEL, broken ADD failing on its
    third delegate (rolled back), then ``split``, then api ADD (kept, cluster network only)."""

    cluster: Cluster
    pods: dict[str, Pod] = field(default_factory=dict)
    split: datetime | None = None
    last_run: float = 0.0

    @property
    def config(self) -> Path:
        return self.cluster.root / "daemon-config.json"

    def ctl(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        return multusctl("--config", str(config or self.config), *args)

    def history_rows(self) -> int:
        with sqlite3.connect(f"file:{self.cluster.state_db}?mode=ro", uri=True) as connection:
            return int(connection.execute("SELECT count(*) FROM history").fetchone()[0])

    def copy_database(self, destination: Path) -> Path:
        """A consistent copy of the live state database (SQLite's backup API), with its real rows."""
        destination.mkdir(parents=True, exist_ok=True)
        target = destination / "state.db"
        with (
            sqlite3.connect(f"file:{self.cluster.state_db}?mode=ro", uri=True) as source,
            sqlite3.connect(target) as copy,
        ):
            source.backup(copy)
        return target


def multusctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli.main", *args],
        capture_output=True,
        text=True,
        env=child_environment(),
        timeout=60,
    )


def add(cluster: Cluster, pod: Pod, *, networks: list[str]) -> ShimResult:
    return cluster.run_shim(
        "ADD",
        container_id=pod.container,
        netns=pod.netns,
        conf=cluster.shim_conf(defaultNetworks=networks),
        cni_args=pod.cni_args(),
    )


def run(cluster: Cluster, command: str, pod: Pod) -> ShimResult:
    return cluster.run_shim(command, container_id=pod.container, netns=pod.netns, cni_args=pod.cni_args())


def new_pod(cluster: Cluster, namespace: str, name: str, *, prefix: str = "") -> Pod:
    container = (prefix + secrets.token_hex(32))[:64]
    return Pod(namespace, name, f"uid-{name}-{secrets.token_hex(4)}", container, cluster.new_netns())


def _make_cluster(root: Path, *, shim: Path, state_template: Path) -> Cluster:
    """The e2e ``cluster`` fixture's node, built for a whole module, logging JSON lines."""
    node = make_cluster(root, shim=shim)
    seed_state(node, state_template)
    node.daemon_config.update({"logFormat": "json", "gcIntervalSeconds": 3600, "gcPodGoneGraceSeconds": 0})
    return node


def _write_networks(node: Cluster) -> None:
    node.write_network(node.net_d, "10-primary.conflist", node.bridge_conflist("primary", "10.240.0.0/24"))
    node.write_network(
        node.conf_dir,
        "20-extra.conflist",
        node.bridge_conflist("extra", "10.241.0.0/24", default_route=False, bridge=f"{node.bridge}x"),
    )
    recorder = {
        "type": "recorder",
        "recorder": {"log": str(node.root / "recorder.jsonl"), "failOn": "ADD", "fail": FAILURE},
    }
    node.write_network(
        node.conf_dir,
        "90-failing.conflist",
        {"cniVersion": "1.0.0", "name": "failing-net", "plugins": [recorder]},
    )
    node.daemon_config["clusterNetwork"] = str(node.net_d / "10-primary.conflist")


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory, installed_shim: Path, state_template: Path
) -> Iterator[Scenario]:
    node = _make_cluster(tmp_path_factory.mktemp("ops"), shim=installed_shim, state_template=state_template)
    try:
        _write_networks(node)
        node.start_daemon()
        story = Scenario(node)
        shared = secrets.token_hex(4)  # web and db share a container ID prefix (ambiguity tests)
        web = story.pods["web"] = new_pod(node, "team-a", "web", prefix=shared + "1")
        db = story.pods["db"] = new_pod(node, "team-b", "db", prefix=shared + "2")
        broken = story.pods["broken"] = new_pod(node, "team-a", "broken")
        api = story.pods["api"] = new_pod(node, "team-b", "api")
        assert add(node, web, networks=["extra"]).returncode == 0
        assert run(node, "CHECK", web).returncode == 0
        assert add(node, db, networks=["extra"]).returncode == 0
        assert run(node, "DEL", db).returncode == 0
        failed = add(node, broken, networks=["extra", "failing-net"])
        assert failed.returncode == 1, failed.stdout
        story.split = datetime.now(UTC)
        assert add(node, api, networks=[]).returncode == 0
        story.last_run = time.monotonic()
        yield story
    finally:
        node.cleanup()
        shutil.rmtree(node.root / "state", ignore_errors=True)


def json_output(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
