"""Swapping upstream Multus for multus-py on a node: pods upstream attached can still be deleted.

Upstream's daemon leaves, per sandbox, a scratch file listing its delegates and libcni's result
cache per network. Here a pod is attached the way upstream does it (the delegates run directly,
the caches written in upstream's exact format), then multus-py receives the runtime's DEL for a
sandbox it has no checkpoint of, and must release everything from those caches.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.cni.conf import plugin_stdin
from tests.e2e.conftest import Cluster, Netns, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]


def _attach_like_upstream(
    cluster: Cluster, netns: Netns, container: str, networks: list[tuple[str, str, dict[str, Any]]]
) -> Path:
    cni_dir = cluster.root / "upstream-cni"
    (cni_dir / "results").mkdir(parents=True)
    scratch = []
    cni_args = [
        ["IgnoreUnknown", "true"],
        ["K8S_POD_NAMESPACE", "default"],
        ["K8S_POD_NAME", "old"],
        ["K8S_POD_INFRA_CONTAINER_ID", container],
    ]
    for status_name, ifname, conf in networks:
        raw = json.dumps(conf).encode()
        env = {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": container,
            "CNI_NETNS": netns.path,
            "CNI_IFNAME": ifname,
            "CNI_PATH": str(cluster.bin_dir),
            "CNI_ARGS": ";".join("=".join(pair) for pair in cni_args),
            "PATH": "/usr/sbin:/usr/bin",
        }
        plugin = conf["plugins"][0]
        stdin = plugin_stdin(plugin, name=conf["name"], cni_version=conf["cniVersion"])
        out = subprocess.run(
            [str(cluster.bin_dir / plugin["type"])], input=stdin, env=env, capture_output=True, check=True
        )
        cache = {
            "kind": "cniCacheV1",
            "containerId": container,
            "config": base64.b64encode(raw).decode(),
            "ifName": ifname,
            "networkName": conf["name"],
            "netns": netns.path,
            "cniArgs": cni_args,
            "result": json.loads(out.stdout),
        }
        (cni_dir / "results" / f"{conf['name']}-{container}-{ifname}").write_text(json.dumps(cache))
        scratch.append(
            {
                "Conf": {},
                "ConfList": {"name": conf["name"]},
                "Name": status_name,
                "Bytes": base64.b64encode(raw).decode(),
            }
        )
    (cni_dir / container).write_text(json.dumps(scratch))
    return cni_dir


def test_del_of_a_sandbox_attached_by_upstream_multus_releases_it_from_upstreams_cache(started: Any) -> None:
    cluster: Cluster = started()
    netns = cluster.new_netns()
    container = new_container_id()
    second = f"{cluster.bridge}u"
    cluster.host_links.append(second)
    networks = [
        ("primary", "eth0", cluster.bridge_conflist("primary", "10.240.0.0/24")),
        (
            "default/old-net",
            "net1",
            cluster.bridge_conflist("old-net", "10.244.0.0/24", default_route=False, bridge=second),
        ),
    ]
    cni_dir = _attach_like_upstream(cluster, netns, container, networks)
    assert netns.links() == {"lo", "eth0", "net1"}
    assert len(cluster.leases()) == 2

    deleted = cluster.run_shim(
        "DEL", container_id=container, netns=netns, conf=cluster.shim_conf(cniDir=str(cni_dir))
    )

    assert deleted.returncode == 0, deleted.stdout
    assert netns.links() == {"lo"}
    assert cluster.leases() == []
    assert sorted(p.name for p in cni_dir.rglob("*") if p.is_file()) == [], (
        "upstream's caches go, as upstream's DEL does"
    )


def test_an_upstream_cache_entry_whose_del_can_never_run_does_not_block_the_del(started: Any) -> None:
    cluster: Cluster = started()
    netns = cluster.new_netns()
    container = new_container_id()
    networks = [("primary", "eth0", cluster.bridge_conflist("primary", "10.240.0.0/24"))]
    cni_dir = _attach_like_upstream(cluster, netns, container, networks)
    cache_file = next((cni_dir / "results").iterdir())
    cache = json.loads(cache_file.read_text())
    evil = {"cniVersion": "1.0.0", "name": "evil", "type": "../../evil-plugin"}
    (cni_dir / "results" / f"evil-{container}-net1").write_text(
        json.dumps(
            {
                **cache,
                "ifName": "net1",
                "networkName": "evil",
                "config": base64.b64encode(json.dumps(evil).encode()).decode(),
                "result": {},
            }
        )
    )

    deleted = cluster.run_shim(
        "DEL", container_id=container, netns=netns, conf=cluster.shim_conf(cniDir=str(cni_dir))
    )

    assert deleted.returncode == 0, deleted.stdout
    assert netns.links() == {"lo"}, "the cache entry that can run was deleted"
    assert cluster.leases() == []
    assert "DEL can never run" in cluster.daemon_log.read_text()
