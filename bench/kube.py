"""``python -m bench.kube``: ADD/DEL through multus-py in Kubernetes mode, against the delegates called
directly, with the Kubernetes API emulator as the API server.

The emulator (its own process) is seeded with ``--node-pods`` pods on this node (``node-a``) and
``--nads`` NetworkAttachmentDefinitions in a few namespaces; the daemon runs in Kubernetes mode
(``kubeconfig`` + ``MULTUS_NODE_NAME``) and is measured once its mirrors have synced (``/readyz``).
For 1, 2 and 4 networks per pod (the cluster network from a conf file plus N-1 bridge NADs the pods
are annotated with): sequential ADD and DEL wall times (p50, p95) through the shim and directly
(the floor: the same delegates, the same configurations), pods/s at concurrency 8 for both, the
daemon's RSS idle and at peak during the burst, and the API requests each ADD and DEL caused
(from the emulator's request log). Then "flat as the cluster grows": start-up, idle RSS and ADD
latency with more pods on other nodes and more NADs (``--grow``).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from app.sandbox.processes import EmulatorProcess
from bench.__main__ import Figures, RssSampler, percentile, run_burst, run_sequential, timed
from bench.node import BenchNode, Pod

NODE = "node-a"
BENCH_NAMESPACE = "bench"
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
POD_NAMESPACES = 10
NAD_NAMESPACES = 4
OTHER_NODES = 19
DRAIN_QUIET = 1.5
DRAIN_CAP = 30.0


# ---- the cluster: what the emulator is seeded with ----------------------------------------------


@dataclass(frozen=True)
class ClusterSize:
    pods: int
    """Pods in the cluster, this node's included."""
    on_node: int
    """Pods on ``node-a`` (the ones the daemon mirrors)."""
    nads: int

    @classmethod
    def parse(cls, text: str) -> ClusterSize:
        pods, on_node, nads = (int(part) for part in text.split(":"))
        if on_node > pods:
            raise ValueError(f"{text}: more pods on the node than in the cluster")
        return cls(pods, on_node, nads)

    def __str__(self) -> str:
        return f"{self.pods:,} pods ({self.on_node:,} on {NODE}), {self.nads:,} NADs"


DEFAULT_CLUSTER = ClusterSize(pods=1000, on_node=1000, nads=200)
"""What the emulator is seeded with unless told otherwise (``--node-pods``, ``--nads``)."""


def _filler_nad(index: int) -> dict[str, Any]:
    namespace = f"team-{index % NAD_NAMESPACES}"
    if index % 2:
        config: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": f"vlan-{index}",
            "type": "macvlan",
            "master": "eth1",
            "mode": "bridge",
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": f"172.{16 + index % 16}.{index // 16 % 256}.0/24"}]],
            },
        }
    else:
        config = {
            "cniVersion": "1.0.0",
            "name": f"br-{index}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": f"br{index}",
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": f"10.{index % 200}.0.0/16"}]]},
                },
                {"type": "tuning", "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}},
            ],
        }
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": f"net-{index:04d}", "namespace": namespace},
        "spec": {"config": json.dumps(config)},
    }


def _filler_pod(index: int, node: str, nads: int) -> dict[str, Any]:
    """A pod of a Deployment-ish shape (a few KiB of JSON, as real pods are); 1 in 4 asks for a NAD."""
    namespace = f"team-{index % POD_NAMESPACES}"
    app = f"app-{index % 97}"
    annotations = {
        "kubernetes.io/config.seen": "2024-05-01T10:00:00.000000000Z",
        "kubernetes.io/config.source": "api",
        "prometheus.io/scrape": "true",
    }
    if nads and index % 4 == 0:
        nad = index % nads
        annotations[NETWORKS_ANNOTATION] = f"team-{nad % NAD_NAMESPACES}/net-{nad:04d}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{app}-{index:06d}-x7k2p",
            "namespace": namespace,
            "labels": {"app": app, "pod-template-hash": "5d8f7c9b6d", "tier": "backend"},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{app}-5d8f7c9b6d",
                    "uid": f"00000000-0000-4000-8000-{index % 97:012d}",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "nodeName": node,
            "serviceAccountName": "default",
            "restartPolicy": "Always",
            "containers": [
                {
                    "name": "main",
                    "image": f"registry.example.com/{app}:1.{index % 10}.0",
                    "ports": [{"containerPort": 8080, "protocol": "TCP", "name": "http"}],
                    "env": [
                        {"name": "MODE", "value": "production"},
                        {"name": "REPLICA", "value": str(index)},
                    ],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
                    "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets", "readOnly": True}],
                }
            ],
            "volumes": [
                {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
            ],
        },
        "status": {
            "phase": "Running",
            "hostIP": "192.168.0.10",
            "podIP": f"10.244.{index // 250 % 256}.{index % 250 + 2}",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def seed_objects(size: ClusterSize) -> list[dict[str, Any]]:
    namespaces = [f"team-{index}" for index in range(max(POD_NAMESPACES, NAD_NAMESPACES))]
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        for name in [*namespaces, BENCH_NAMESPACE]
    ]
    objects += [_filler_nad(index) for index in range(size.nads)]
    for index in range(size.pods):
        node = NODE if index < size.on_node else f"node-{(index - size.on_node) % OTHER_NODES + 1:02d}"
        objects.append(_filler_pod(index, node, size.nads))
    return objects


# ---- the emulator, as its own process -----------------------------------------------------------


class Emulator:
    """``python -m app.sandbox.kubeapi`` seeded with a cluster, driven over HTTP."""

    def __init__(self, size: ClusterSize) -> None:
        self.size = size
        self.root = Path(tempfile.mkdtemp(prefix="multus-bench-kube-"))
        self.kubeconfig = self.root / "kubeconfig"
        self.server = EmulatorProcess(
            kubeconfig=self.kubeconfig,
            log=self.root / "kubeapi.log",
            arguments=("--seed", str(self.root / "seed.json"), "--log-level", "ERROR"),
        )
        self.seed_seconds = 0.0

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.server.process

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> Emulator:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        (self.root / "seed.json").write_text(json.dumps(seed_objects(self.size)))
        started = time.perf_counter()
        self.server.start()
        self.seed_seconds = time.perf_counter() - started

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON request (``EmulatorRequestError``, a RuntimeError, on 4xx/5xx)."""
        return self.server.request(method, path, body, timeout=30)

    def create_nad(self, namespace: str, name: str, config: dict[str, Any]) -> None:
        self.request(
            "POST",
            f"/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions",
            {
                "apiVersion": "k8s.cni.cncf.io/v1",
                "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"config": json.dumps(config)},
            },
        )

    def delete_nad(self, namespace: str, name: str) -> None:
        self.request(
            "DELETE", f"/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions/{name}"
        )

    def create_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> str:
        """Create a pod on this node; returns its uid."""
        pod = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
                "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "pause"}]},
            },
        )
        return str(pod["metadata"]["uid"])

    def delete_pod(self, namespace: str, name: str) -> None:
        self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")

    def last_seq(self) -> int:
        """The seq of the newest logged API request (control requests are never logged)."""
        return int(self.request("GET", "/_emulator/requests?since=999999999999")["lastSeq"])

    def records(self, since: int, path: str = "") -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"since": since, "path": path})
        return list(self.request("GET", f"/_emulator/requests?{query}")["items"])

    def wait_events_drained(self, since: int) -> int:
        """Wait until the daemon has stopped posting events (quiet for a while); return how many it posted."""
        count, changed = -1, time.monotonic()
        deadline = changed + DRAIN_CAP
        while time.monotonic() < deadline:
            now = len(self.records(since, path=r"/events$"))
            if now != count:
                count, changed = now, time.monotonic()
            elif time.monotonic() - changed >= DRAIN_QUIET:
                break
            time.sleep(0.2)
        return count


# ---- the node, in Kubernetes mode ----------------------------------------------------------------


@dataclass
class KubePod(Pod):
    namespace: str
    name: str
    uid: str


@dataclass
class KubeNode(BenchNode):
    """A ``BenchNode`` whose daemon mirrors the emulator; networks 1.. are NADs the pods ask for."""

    api: Emulator | None = None
    nad_names: list[str] = field(default_factory=list)
    kube_pods: list[KubePod] = field(default_factory=list)
    mirrored_at_start: int = 0

    @property
    def emulator(self) -> Emulator:
        assert self.api is not None
        return self.api

    def prepare(self, *, shim: bool = True) -> None:
        super().prepare(shim=shim)
        conf_dir = self.root / "multus.d"
        for index in range(1, self.networks):
            (conf_dir / f"{10 + index}-net{index}.conflist").unlink()
            name = f"net{index}-{self.tag}"
            plugin = self.confs[index]["plugins"][0]
            self.emulator.create_nad(BENCH_NAMESPACE, name, {"cniVersion": "1.0.0", "name": name, **plugin})
            self.nad_names.append(name)
            # the floor runs the NAD's config as multus does: a one-plugin list named after it
            self.confs[index] = {"cniVersion": "1.0.0", "name": name, "plugins": [plugin]}
        config_path = self.root / "daemon-config.json"
        config = json.loads(config_path.read_text())
        config.pop("defaultNetworks", None)
        config["kubeconfig"] = str(self.emulator.kubeconfig)
        config_path.write_text(json.dumps(config))

    def start_kube_daemon(self) -> float:
        """Start the daemon and wait for /readyz (mirrors synced); returns the seconds it took."""
        started = time.perf_counter()
        self.start_daemon({"MULTUS_NODE_NAME": NODE})
        elapsed = time.perf_counter() - started
        self.mirrored_at_start = self.mirror()["pods"]
        return elapsed

    def mirror(self) -> dict[str, Any]:
        """The ``mirror`` part of the daemon's status (query API on ``multus-query.sock``)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect(str(self.root / "run" / "multus-query.sock"))
            sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        finally:
            sock.close()
        _, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        return dict(json.loads(body)["mirror"])

    def make_kube_pods(self, count: int) -> list[Pod]:
        """Netns plus an annotated pod in the emulator for each (``KubePod``s); returns once the
        daemon mirrors them."""
        annotations = {NETWORKS_ANNOTATION: ", ".join(self.nad_names)} if self.nad_names else {}
        pods: list[Pod] = []
        for pod in self.make_pods(count):
            uid = self.emulator.create_pod(BENCH_NAMESPACE, pod.netns, annotations)
            kube_pod = KubePod(pod.container_id, pod.netns, BENCH_NAMESPACE, pod.netns, uid)
            self.kube_pods.append(kube_pod)
            pods.append(kube_pod)
        deadline = time.monotonic() + 30
        while self.mirror()["pods"] < self.mirrored_at_start + len(self.kube_pods):
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon's pod mirror did not catch up with the created pods")
            time.sleep(0.05)
        return pods

    def _shim_env(self, command: str, pod: Pod) -> dict[str, str]:
        env = super()._shim_env(command, pod)
        if isinstance(pod, KubePod):
            env["CNI_ARGS"] = (
                f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};K8S_POD_NAME={pod.name};"
                f"K8S_POD_INFRA_CONTAINER_ID={pod.container_id};K8S_POD_UID={pod.uid}"
            )
        return env

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.api is not None and self.api.process is not None and self.api.process.poll() is None:
                for pod in self.kube_pods:
                    _quietly(self.api.delete_pod, pod.namespace, pod.name)
                for name in self.nad_names:
                    _quietly(self.api.delete_nad, BENCH_NAMESPACE, name)


def _quietly(action: Any, *args: Any) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        action(*args)


# ---- API traffic per operation -------------------------------------------------------------------

_QUERY_VALUES = re.compile(r"=[^&]*")
POD_PATH = "/api/v1/namespaces/{ns}/pods/{name}"


def path_pattern(path: str) -> str:
    """``/api/v1/namespaces/bench/pods/p1/status?x=1`` → ``/api/v1/namespaces/{ns}/pods/{name}/status?x``."""
    base, _, query = path.partition("?")
    base = re.sub(r"/namespaces/[^/]+/([^/]+)/[^/]+", r"/namespaces/{ns}/\1/{name}", base)
    base = re.sub(r"/namespaces/[^/]+/", "/namespaces/{ns}/", base)
    return f"{base}?{_QUERY_VALUES.sub('', query)}" if query else base


@dataclass
class Traffic:
    adds: Counter[str] = field(default_factory=Counter)
    dels: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)
    events: int = 0

    @classmethod
    def attribute(cls, records: list[dict[str, Any]], windows: list[tuple[int, int, int]]) -> Traffic:
        """Requests inside an ADD's window (seq marks around it) are the ADD's, likewise DEL; events
        are posted in the background, so they are counted apart."""
        traffic = cls()
        starts = [window[0] for window in windows]
        for record in records:
            key = f"{record['method']} {path_pattern(record['path'])}"
            if record["method"] == "POST" and record["path"].endswith("/events"):
                traffic.events += 1
                continue
            position = bisect.bisect_left(starts, record["seq"]) - 1
            if position >= 0:
                before, between, after = windows[position]
                if before < record["seq"] <= between:
                    traffic.adds[key] += 1
                    continue
                if between < record["seq"] <= after:
                    traffic.dels[key] += 1
                    continue
            traffic.other[key] += 1
        return traffic

    def rows(self, pods: int) -> list[str]:
        def per(counter: Counter[str]) -> str:
            if not counter:
                return "none"
            return ", ".join(f"{key} x{count / pods:.2f}" for key, count in counter.most_common())

        pod_gets = sum(count for key, count in self.adds.items() if key == f"GET {POD_PATH}")
        rows = [
            f"      API per ADD: {per(self.adds)}; events (async) x{self.events / pods:.2f}; "
            f"live GETs of the pod {pod_gets}",
            f"      API per DEL: {per(self.dels)}",
        ]
        if self.other:
            rows.append(f"      API other (not inside an ADD/DEL, {pods} pods): {per(self.other)}")
        return rows


def run_sequential_traced(
    node: KubeNode, pods: Sequence[Pod]
) -> tuple[list[float], list[float], list[tuple[int, int, int]]]:
    """``run_sequential`` through multus, with request-log marks around each ADD and DEL (not timed)."""
    adds, dels, windows = [], [], []
    api = node.emulator
    for pod in pods:
        before = api.last_seq()
        adds.append(timed(lambda pod=pod: node.multus("ADD", pod)))  # type: ignore[misc]
        between = api.last_seq()
        dels.append(timed(lambda pod=pod: node.multus("DEL", pod)))  # type: ignore[misc]
        windows.append((before, between, api.last_seq()))
    return adds, dels, windows


# ---- the benchmarks --------------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU seconds of the process itself, of its waited-for children) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime) / _CLOCK_TICKS, (cutime + cstime) / _CLOCK_TICKS


@dataclass
class BurstCpu:
    wall: float
    daemon: float
    delegates: float
    """CPU of the plugins the daemon ran (its reaped children)."""
    emulator: float


@dataclass
class KubeFigures:
    figures: Figures
    ready_seconds: float
    mirror: dict[str, Any]
    startup_peak_mib: float
    traffic: Traffic
    sequential: int
    burst_events: int
    burst_cpu: BurstCpu
    burst: int
    events_per_add: float
    after_rss_mib: float

    def rows(self) -> list[str]:
        rows = self.figures.rows()
        expected = round(self.events_per_add * self.burst)
        rows += self.traffic.rows(self.sequential)
        rows.append(
            f"      ready in {self.ready_seconds:4.1f} s (mirror: {self.mirror['pods']} pods, "
            f"{self.mirror['nads']} NADs; start-up peak RSS {self.startup_peak_mib:5.1f} MiB); "
            f"burst events posted {self.burst_events}/{expected}; RSS after {self.after_rss_mib:5.1f} MiB"
        )
        cpu = self.burst_cpu
        rows.append(
            f"      c=8 burst (ADD+DEL, {cpu.wall:4.1f} s wall) CPU: daemon {cpu.daemon:4.1f} s, "
            f"delegates {cpu.delegates:4.1f} s, emulator {cpu.emulator:4.1f} s ({os.cpu_count()} CPUs shared)"
        )
        return rows


def bench_networks(
    api: Emulator, networks: int, *, sequential: int, burst: int, concurrency: int, settle: float
) -> KubeFigures:
    node = KubeNode(networks=networks, api=api)
    try:
        node.prepare()
        ready = node.start_kube_daemon()
        time.sleep(settle)
        idle_rss, startup_peak = (kib / 1024 for kib in node.daemon_rss_kib())
        mirror = node.mirror()
        warm = node.make_kube_pods(3)
        seq_pods = node.make_kube_pods(sequential)
        burst_pods = node.make_kube_pods(burst)
        run_sequential(node, warm, "multus")  # warm caches on both paths
        run_sequential(node, warm, "direct")
        api.wait_events_drained(0)
        floor_add, floor_del = run_sequential(node, seq_pods, "direct")
        python_add, python_del = run_sequential(node, seq_pods, "python")
        since = api.last_seq()
        cpu_started = node.daemon_cpu_seconds()
        multus_add, multus_del, windows = run_sequential_traced(node, seq_pods)
        time.sleep(0.1)  # what the daemon does after its last answer (closing the connection) counts too
        daemon_cpu = 1000 * (node.daemon_cpu_seconds() - cpu_started) / len(seq_pods)
        api.wait_events_drained(since)
        traffic = Traffic.attribute(api.records(since), windows)
        floor_rate = run_burst(node, burst_pods, "direct", concurrency)
        python_rate = run_burst(node, burst_pods, "python", concurrency)
        since = api.last_seq()
        assert node.daemon is not None
        assert api.process is not None
        cpu_before = cpu_seconds(node.daemon.pid), cpu_seconds(api.process.pid)
        started = time.perf_counter()
        with RssSampler(node) as sampler:
            multus_rate = run_burst(node, burst_pods, "multus", concurrency)
        wall = time.perf_counter() - started
        cpu_after = cpu_seconds(node.daemon.pid), cpu_seconds(api.process.pid)
        burst_events = api.wait_events_drained(since)
        after_rss = node.daemon_rss_kib()[0] / 1024
        figures = Figures(
            networks=networks,
            floor_add=floor_add,
            multus_add=multus_add,
            floor_del=floor_del,
            multus_del=multus_del,
            floor_pods_per_s=floor_rate,
            multus_pods_per_s=multus_rate,
            idle_rss_mib=idle_rss,
            burst_rss_mib=sampler.peak_kib / 1024,
            python_add=python_add,
            python_del=python_del,
            python_pods_per_s=python_rate,
            daemon_cpu_ms=daemon_cpu,
        )
        return KubeFigures(
            figures=figures,
            ready_seconds=ready,
            mirror=mirror,
            startup_peak_mib=startup_peak,
            traffic=traffic,
            sequential=sequential,
            burst_events=burst_events,
            burst_cpu=BurstCpu(
                wall=wall,
                daemon=cpu_after[0][0] - cpu_before[0][0],
                delegates=cpu_after[0][1] - cpu_before[0][1],
                emulator=cpu_after[1][0] - cpu_before[1][0],
            ),
            burst=burst,
            events_per_add=traffic.events / sequential,
            after_rss_mib=after_rss,
        )
    finally:
        node.close()


@dataclass
class ScaleRow:
    size: ClusterSize
    seed_seconds: float
    ready_seconds: float
    mirror: dict[str, Any]
    idle_rss_mib: float
    startup_peak_mib: float
    floor_add_p50: float
    multus_add_p50: float
    after_rss_mib: float

    def row(self) -> str:
        return (
            f"{self.size!s:<44} ready {self.ready_seconds:5.1f} s  mirror {self.mirror['pods']:>5} pods "
            f"{self.mirror['nads']:>5} NADs  RSS idle {self.idle_rss_mib:5.1f} MiB "
            f"(start-up peak {self.startup_peak_mib:5.1f}, after ADDs {self.after_rss_mib:5.1f})  "
            f"ADD p50 {self.multus_add_p50:5.1f} ms (floor {self.floor_add_p50:5.1f})"
        )


def bench_scale(api: Emulator, *, networks: int, pods: int, settle: float) -> ScaleRow:
    """Start-up, idle RSS and sequential ADD p50 of a fresh daemon against ``api``'s cluster."""
    node = KubeNode(networks=networks, api=api)
    try:
        node.prepare()
        ready = node.start_kube_daemon()
        time.sleep(settle)
        idle_rss, startup_peak = (kib / 1024 for kib in node.daemon_rss_kib())
        mirror = node.mirror()
        warm = node.make_kube_pods(3)
        seq_pods = node.make_kube_pods(pods)
        run_sequential(node, warm, "multus")
        run_sequential(node, warm, "direct")
        floor_add, _ = run_sequential(node, seq_pods, "direct")
        multus_add, _ = run_sequential(node, seq_pods, "multus")
        return ScaleRow(
            size=api.size,
            seed_seconds=api.seed_seconds,
            ready_seconds=ready,
            mirror=mirror,
            idle_rss_mib=idle_rss,
            startup_peak_mib=startup_peak,
            floor_add_p50=percentile(floor_add, 0.5),
            multus_add_p50=percentile(multus_add, 0.5),
            after_rss_mib=node.daemon_rss_kib()[0] / 1024,
        )
    finally:
        node.close()


def verdicts(results: list[KubeFigures]) -> list[str]:
    lines = []
    for result in results:
        figures = result.figures
        overhead = percentile(figures.multus_add, 0.5) - percentile(figures.floor_add, 0.5)
        python_floor = figures.python_pods_per_s or figures.floor_pods_per_s
        ratio = 100 * figures.multus_pods_per_s / python_floor
        growth = figures.burst_rss_mib - figures.idle_rss_mib
        cpu_bound = 5 + (figures.networks - 1)
        cpu = figures.daemon_cpu_ms
        checks = [
            (f"ADD overhead p50 {overhead:.1f} ms ≤ 10", overhead <= 10),
            (f"daemon CPU/pair {cpu:.1f} ms ≤ {cpu_bound}", cpu <= cpu_bound),
            (f"c=8 {ratio:.0f} % of the Python floor", True),
            (f"idle RSS {figures.idle_rss_mib:.1f} MiB ≤ 64", figures.idle_rss_mib <= 64),
            (f"burst +{growth:.1f} MiB ≤ +10", growth <= 10),
        ]
        lines.append(
            f"{figures.networks} net  "
            + "  ".join(f"{'ok  ' if good else 'MISS'} {text}" for text, good in checks)
        )
    return lines


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kube", description=__doc__)
    parser.add_argument("--networks", default="1,2,4", help="networks per pod, comma separated")
    parser.add_argument("--sequential", type=int, default=40, help="pods timed one by one")
    parser.add_argument("--burst", type=int, default=100, help="pods in the concurrent burst")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--node-pods", type=int, default=DEFAULT_CLUSTER.on_node, help="seeded pods on this node"
    )
    parser.add_argument(
        "--nads", type=int, default=DEFAULT_CLUSTER.nads, help="seeded NADs (the bench's own come on top)"
    )
    parser.add_argument(
        "--grow",
        default="5000:1000:200,20000:1000:1000",
        help="larger clusters for the flat-memory table, PODS:ON_NODE:NADS comma separated ('' for none)",
    )
    parser.add_argument("--scale-pods", type=int, default=20, help="pods timed per row of that table")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between ready and the idle RSS")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root")
    sizes = [ClusterSize.parse(text) for text in args.grow.split(",") if text]
    signal.signal(signal.SIGTERM, _raise_interrupt)
    base = ClusterSize(args.node_pods, args.node_pods, args.nads)
    print(
        f"multus-py benchmark, Kubernetes mode: {os.cpu_count()} CPUs, times in ms (p50 p95); "
        f"emulator seeded with {base}",
        flush=True,
    )
    results = []
    scale_rows = []
    with Emulator(base) as api:
        for networks in (int(n) for n in args.networks.split(",")):
            result = bench_networks(
                api,
                networks,
                sequential=args.sequential,
                burst=args.burst,
                concurrency=args.concurrency,
                settle=args.settle,
            )
            results.append(result)
            for row in result.rows():
                print(row, flush=True)
        if sizes:
            scale_rows.append(bench_scale(api, networks=2, pods=args.scale_pods, settle=args.settle))
    for size in sizes:
        with Emulator(size) as api:
            scale_rows.append(bench_scale(api, networks=2, pods=args.scale_pods, settle=args.settle))
    if scale_rows:
        print(f"as the cluster grows (fresh daemon, 2 networks, {args.scale_pods} sequential ADDs):")
        for scale in scale_rows:
            print("  " + scale.row(), flush=True)
    print("targets:")
    for line in verdicts(results):
        print("  " + line)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt as interrupted:  # everything was cleaned up on the way out
        print(f"interrupted ({interrupted}): cleaned up", file=sys.stderr)
        raise SystemExit(130) from None
