"""The daemon's replay of DELs the shim spooled (invariant 7), in process: real store, real plugins.

Each entry is the exact body a shim would have posted, written where the shim spools it; ``replay``
runs it as the daemon does at start-up and on every GC pass.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from app.daemon import spool
from tests.core.support import Node, new_container_id

SHIM_CONF = {"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus-shim"}


def spool_entry(directory: Path, container_id: str, *, name: str = "") -> Path:
    environment = {
        "CNI_COMMAND": "DEL",
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": "",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a",
        "CNI_PATH": "/opt/cni/bin",
    }
    config = base64.b64encode(json.dumps(SHIM_CONF).encode()).decode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or f"del-1700000000000000000-1-{container_id}.json")
    path.write_text(json.dumps({"env": environment, "config": config}))
    return path


def daemon_config(node: Node) -> dict[str, Any]:
    return {
        "clusterNetwork": node.recorder_network("cluster"),
        "confDir": str(node.conf_dir),
        "binDir": str(node.bin_dir),
        "cniDir": str(node.cni_dir),
    }


async def test_a_spooled_del_of_an_upstream_sandbox_that_fails_is_kept_for_the_next_replay(
    node: Node,
) -> None:
    """No checkpoint owns the retry of a DEL replayed from upstream's cache: the entry must."""
    container = new_container_id()
    failing = {
        "cniVersion": "1.0.0",
        "name": "upstream-cluster",
        "type": "recorder",
        "recorder": {"log": str(node.recorder_log), "fail": {"code": 11, "msg": "later"}},
    }
    cache = node.write_upstream_cache(container, network=failing, ifname="eth0", netns="")
    directory = node.root / "spool"
    entry = spool_entry(directory, container)

    report = await spool.replay(spool_dir=directory, engine=node.engine(), daemon_config=daemon_config(node))

    assert [name for name, _ in report.failed] == [entry.name]
    assert cache.exists()
    assert node.checkpoint(container) is None
    assert entry.exists(), "the DEL failed and nothing else records it: dropping the entry loses it"


async def test_a_spooled_del_with_a_container_id_no_add_could_use_is_rejected_not_raised(
    node: Node,
) -> None:
    """A malformed entry is set aside; it must not fail start-up (a crash loop) or every GC pass."""
    directory = node.root / "spool"
    bad = spool_entry(directory, "bad/id", name="del-1700000000000000000-1-bad.json")
    container = new_container_id()
    good = spool_entry(directory, container, name=f"del-1700000000000000001-1-{container}.json")

    report = await spool.replay(spool_dir=directory, engine=node.engine(), daemon_config=daemon_config(node))

    assert not bad.exists()
    assert [name for name, _ in report.rejected] == [bad.name]
    assert bad.with_name(bad.name + spool.REJECTED_SUFFIX).exists()
    assert report.replayed == [good.name]
    assert not good.exists()
