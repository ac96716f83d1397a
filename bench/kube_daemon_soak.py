"""``python -m bench.kube_daemon_soak``: a real daemon in Kubernetes mode under churn; does it stay flat?

The emulator (its own process) is seeded with ``--node-pods`` pods on this node and ``--nads``
NADs; the daemon runs with ``hotplugNetworks``. Each round: pods created with ADD through the shim,
a NEW NAD hot-plugged into them by their annotation and removed again, then DEL and deletion; pods
created and deleted with no ADD; NADs created and deleted under new names; a namespace; status
writes failing for a while; and every few rounds the watches broken, a 410 relist forced, or the
API server paused. RSS, open fds, threads, the state database's size and rows are sampled from
the real process at an early round and at the end.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.kube import BENCH_NAMESPACE, NETWORKS_ANNOTATION, ClusterSize, Emulator, KubeNode, KubePod

STATUS = "k8s.v1.cni.cncf.io/network-status"


def sample(node: KubeNode) -> dict[str, Any]:
    assert node.daemon is not None
    pid = node.daemon.pid
    rss, peak = node.daemon_rss_kib()
    state = node.root / "state"
    db = state / "state.db"
    wal = state / "state.db-wal"
    rows: dict[str, int] = {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        for (table,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            rows[table] = connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    return {
        "rss_mib": round(rss / 1024, 1),
        "peak_mib": round(peak / 1024, 1),
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
        "threads": len(list(Path(f"/proc/{pid}/task").iterdir())),
        "db_kib": db.stat().st_size // 1024,
        "wal_kib": wal.stat().st_size // 1024 if wal.exists() else 0,
        "rows": {k: v for k, v in rows.items() if v},
        "mirror": node.mirror(),
    }


def wait_for(check: Any, what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def status_entries(api: Emulator, pod: KubePod) -> int:
    obj = api.request("GET", f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}")
    value = (obj["metadata"].get("annotations") or {}).get(STATUS)
    return len(json.loads(value)) if value else 0


def patch_networks(api: Emulator, pod: KubePod, networks: str) -> None:
    api.server.request(
        "PATCH",
        f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}",
        {"metadata": {"annotations": {NETWORKS_ANNOTATION: networks}}},
        content_type="application/merge-patch+json",
        timeout=30,
    )


def fault(api: Emulator, **payload: Any) -> None:
    api.request("POST", "/_emulator/faults", payload)


def one_round(node: KubeNode, api: Emulator, number: int, per_round: int) -> None:
    hot = f"hot-{number}"
    plugin = node.confs[1]["plugins"][0]
    api.create_nad(BENCH_NAMESPACE, hot, {"cniVersion": "1.0.0", "name": hot, **plugin})
    base = ", ".join(node.nad_names)
    pods = [pod for pod in node.make_kube_pods(per_round) if isinstance(pod, KubePod)]
    if number % 3 == 0:
        fault(api, action="fail", count=6, status=503, method="PATCH", path="/status")
    for pod in pods:
        node.multus("ADD", pod)
    for pod in pods:
        patch_networks(api, pod, f"{base}, {hot}")
    for pod in pods:
        wait_for(lambda pod=pod: status_entries(api, pod) == 4, "hot-plug status")
    for pod in pods:
        patch_networks(api, pod, base)
    for pod in pods:
        wait_for(lambda pod=pod: status_entries(api, pod) == 3, "hot-unplug status")
    if number % 4 == 1:
        fault(api, action="drop-watches")
    elif number % 4 == 2:
        fault(api, action="compact")
        fault(api, action="drop-watches")
    elif number % 4 == 3:
        fault(api, action="pause")
        time.sleep(0.5)
        fault(api, action="resume")
    for pod in pods:
        node.multus("DEL", pod)
        api.delete_pod(pod.namespace, pod.name)
        node.kube_pods.remove(pod)
    api.delete_nad(BENCH_NAMESPACE, hot)
    # churn without ADD: pods and NADs under new names, a namespace
    ns = f"churn-{number}"
    api.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    for index in range(per_round):
        name = f"idle-{number}-{index}"
        api.create_nad(ns, name, {"cniVersion": "1.0.0", "name": name, **plugin})
        api.request(
            "POST",
            f"/api/v1/namespaces/{ns}/pods",
            {
                "metadata": {"name": name, "namespace": ns, "annotations": {NETWORKS_ANNOTATION: name}},
                "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "pause"}]},
            },
        )
    for index in range(per_round):
        name = f"idle-{number}-{index}"
        api.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}")
        api.delete_nad(ns, name)
    api.request("DELETE", f"/api/v1/namespaces/{ns}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kube_daemon_soak", description=__doc__)
    parser.add_argument("--node-pods", type=int, default=1000)
    parser.add_argument("--nads", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--early", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=5)
    args = parser.parse_args()
    with Emulator(ClusterSize(args.node_pods, args.node_pods, args.nads)) as api:
        node = KubeNode(networks=3, api=api)
        try:
            node.prepare()
            config_path = node.root / "daemon-config.json"
            config = json.loads(config_path.read_text())
            config["hotplugNetworks"] = True
            config["gcIntervalSeconds"] = 2
            config_path.write_text(json.dumps(config))
            node.start_kube_daemon()
            time.sleep(2)
            print("ready:", sample(node), flush=True)
            early: dict[str, Any] = {}
            for number in range(args.rounds):
                one_round(node, api, number, args.per_round)
                if number == args.early:
                    time.sleep(3)
                    early = sample(node)
                    print(f"round {number}:", early, flush=True)
                elif number % 5 == 0:
                    print(f"round {number}:", sample(node), flush=True)
            time.sleep(5)
            print("end:", sample(node), flush=True)
            print("early:", early, flush=True)
        finally:
            node.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
