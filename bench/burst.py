"""``python -m bench.burst``: 200 sandboxes ADDed at once, with and without a bound on delegates.

A real daemon in static mode, a bridge network (bridge + host-local) per pod network, real network
namespaces. All ADDs are sent at the same instant over the daemon's socket (upstream's protocol, one
connection each; no shim processes, so the memory measured is the node's, not the benchmark's),
together with the DELs of ``--dels`` sandboxes ADDed before the burst (a node after a reboot, or a
rollout: the runtime removes old sandboxes while it makes new ones). For ``maxConcurrentDelegates``
unbounded and bounded it prints: the peak RSS of the daemon plus every process it started (sampled
every 20 ms, summed; shared pages counted in each process, so an upper bound), the most delegates
(the daemon's children) and processes (with their IPAM children) seen at once, ADD p50/p99 and the
wall time of the burst, DEL p50/p99 of the DELs sent in it, the delegate queue time the daemon
recorded, whether every pod got every network, and, once every sandbox has been DELed, what is
left behind: host veths, IPAM leases and recorded sandboxes (all three must be 0).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.gc import leases
from bench.__main__ import percentile
from bench.node import BenchNode, Pod

UNBOUNDED = 1_000_000

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Outcome:
    label: str
    bound: int
    adds_ms: list[float]
    dels_ms: list[float]
    failures: int
    wall_s: float
    peak_rss_mib: float
    idle_rss_mib: float
    peak_children: int
    peak_descendants: int
    queue_count: float
    queue_sum_s: float
    every_network: bool
    left_behind: LeftBehind

    def row(self) -> str:
        bound = "unbounded" if self.bound >= UNBOUNDED else str(self.bound)
        mean_queue = self.queue_sum_s / self.queue_count * 1000 if self.queue_count else 0.0
        return (
            f"{self.label:9s} bound {bound:>9s}  peak RSS daemon+children {self.peak_rss_mib:7.1f} MiB "
            f"(idle {self.idle_rss_mib:5.1f}), at most {self.peak_children:3d} delegates "
            f"({self.peak_descendants:3d} processes with IPAM)  "
            f"ADD p50 {percentile(self.adds_ms, 0.5):7.0f} ms  p99 {percentile(self.adds_ms, 0.99):7.0f} ms  "
            f"{self._dels()}"
            f"burst {self.wall_s:5.1f} s  queue mean {mean_queue:6.0f} ms  failures {self.failures}  "
            f"every pod every network: {'yes' if self.every_network and not self.failures else 'NO'}  "
            f"left behind: {self.left_behind}"
        )

    def _dels(self) -> str:
        if not self.dels_ms:
            return ""
        return (
            f"DEL in the burst p50 {percentile(self.dels_ms, 0.5):7.0f} ms  "
            f"p99 {percentile(self.dels_ms, 0.99):7.0f} ms  "
        )


@dataclass(frozen=True)
class LeftBehind:
    """What a node holds once every sandbox has been DELed: none of it may remain."""

    veths: int
    leases: int
    sandboxes: int

    def __str__(self) -> str:
        return f"{self.veths} veths, {self.leases} leases, {self.sandboxes} sandboxes recorded"


class BurstNode(BenchNode):
    """A bench node whose daemon gets ``maxConcurrentDelegates`` and a metrics port."""

    def configure(self, *, bound: int, metrics_port: int) -> None:
        path = self.root / "daemon-config.json"
        config = json.loads(path.read_text())
        config.update(maxConcurrentDelegates=bound, metricsPort=metrics_port, gcIntervalSeconds=3600)
        path.write_text(json.dumps(config))
        self.bound = bound
        self.metrics_port = metrics_port

    def left_behind(self) -> LeftBehind:
        """Host veths on the pods' bridges, host-local's leases (as GC reads them: the files of each
        network's directory named as an address), and the sandboxes the state database still
        records (read from the file, read-only)."""
        veths = 0
        for index in range(self.networks):
            ports = subprocess.run(
                ["ip", "-j", "link", "show", "master", self.bridge(index)], capture_output=True, text=True
            )
            veths += len(json.loads(ports.stdout or "[]"))
        ipam = self.root / "ipam"
        held = sum(len(leases.current(network) or ()) for network in ipam.iterdir() if network.is_dir())
        state = self.root / "state" / "state.db"
        with contextlib.closing(sqlite3.connect(f"{state.as_uri()}?mode=ro", uri=True)) as connection:
            sandboxes = int(connection.execute("SELECT count(*) FROM sandboxes").fetchone()[0])
        return LeftBehind(veths=veths, leases=held, sandboxes=sandboxes)

    def request(self, command: str, pod: Pod) -> tuple[int, bytes]:
        """One CNI request on the daemon's socket, as the shim sends it: (HTTP status, body)."""
        body = json.dumps(
            {"env": self._shim_env(command, pod), "config": base64.b64encode(self.shim_conf()).decode()}
        ).encode()
        head = (
            f"POST /cni HTTP/1.1\r\nHost: multus\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        deadline = time.monotonic() + 60
        while True:  # a full listen backlog refuses at once on a unix socket: retry, as a shim would
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.socket_path))
                break
            except (BlockingIOError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        try:
            sock.sendall(head + body)
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        finally:
            sock.close()
        status = int(response.split(b" ", 2)[1])
        return status, response.split(b"\r\n\r\n", 1)[1]

    def queue_metrics(self) -> tuple[float, float]:
        """(count, sum) of ``multus_py_delegate_queue_seconds`` from the daemon's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        values = {}
        for name in ("count", "sum"):
            match = re.search(rf"^multus_py_delegate_queue_seconds_{name} (\S+)$", text, re.MULTILINE)
            values[name] = float(match[1]) if match else 0.0
        return values["count"], values["sum"]


class TreeSampler:
    """Peak summed RSS of the daemon and all its descendants, and the most descendants at once."""

    def __init__(self, root_pid: int) -> None:
        self._root = root_pid
        self._stop = threading.Event()
        self.peak_kib = 0
        self.peak_children = 0
        self.peak_descendants = 0
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> tuple[int, int, int]:
        """(summed RSS KiB, direct children (the delegates it runs), all descendants) now; a child
        that has exited and waits to be reaped (``app.cni.child`` reaps at the next exit) runs
        nothing and is not counted."""
        children: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                data = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            state, ppid = data[data.rindex(b")") + 2 :].split()[:2]
            if state != b"Z":
                children.setdefault(int(ppid), []).append(int(name))
        tree, pending = [], [self._root]
        while pending:
            pid = pending.pop()
            tree.append(pid)
            pending.extend(children.get(pid, []))
        total = 0
        for pid in tree:
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
            except (OSError, IndexError):
                continue
        return total, len(children.get(self._root, [])), len(tree) - 1

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, direct, count = self.sample()
            self.peak_kib = max(self.peak_kib, rss)
            self.peak_children = max(self.peak_children, direct)
            self.peak_descendants = max(self.peak_descendants, count)
            self._stop.wait(0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def every_network(node: BurstNode, pods: list[Pod]) -> bool:
    expected = {"eth0", *(f"net{index}" for index in range(1, node.networks))}
    for pod in pods:
        names = {
            link["ifname"]
            for link in json.loads(
                subprocess.run(
                    ["ip", "-n", pod.netns, "-j", "link"], capture_output=True, text=True, check=True
                ).stdout
            )
        }
        if not expected <= names:
            return False
    return True


def burst(label: str, *, bound: int, pods_count: int, networks: int, dels_count: int = 0) -> Outcome:
    node = BurstNode(networks=networks)
    try:
        node.prepare()
        node.configure(bound=bound, metrics_port=free_port())
        node.start_daemon()
        assert node.daemon is not None
        old = node.make_pods(dels_count)
        for pod in old:
            status, body = node.request("ADD", pod)
            if status != 200:
                raise RuntimeError(f"ADD before the burst failed: {body.decode()[:200]}")
        pods = node.make_pods(pods_count)
        idle = TreeSampler(node.daemon.pid).sample()[0] / 1024
        start = threading.Barrier(pods_count + dels_count + 1)
        failures: list[str] = []

        def send(command: str, pod: Pod) -> float:
            start.wait()
            began = time.perf_counter()
            status, body = node.request(command, pod)
            if status != 200:
                failures.append(f"{command}: {body.decode()[:200]}")
            return (time.perf_counter() - began) * 1000

        workers = pods_count + dels_count
        with TreeSampler(node.daemon.pid) as sampler, ThreadPoolExecutor(max_workers=workers) as pool:
            added = [pool.submit(send, "ADD", pod) for pod in pods]
            deleted = [pool.submit(send, "DEL", pod) for pod in old]
            start.wait()
            began = time.perf_counter()
            adds = [future.result() for future in added]
            dels = [future.result() for future in deleted]
            wall = time.perf_counter() - began
        attached = every_network(node, pods)
        queue_count, queue_sum = node.queue_metrics()
        with ThreadPoolExecutor(max_workers=16) as pool:
            for status, body in pool.map(lambda pod: node.request("DEL", pod), pods):
                if status != 200:
                    failures.append(f"DEL after the burst: {body.decode()[:200]}")
        for failure in failures[:3]:
            print(f"  {label}: {failure}", file=sys.stderr)
        return Outcome(
            label=label,
            bound=bound,
            adds_ms=adds,
            dels_ms=dels,
            failures=len(failures),
            wall_s=wall,
            peak_rss_mib=sampler.peak_kib / 1024,
            idle_rss_mib=idle,
            peak_children=sampler.peak_children,
            peak_descendants=sampler.peak_descendants,
            queue_count=queue_count,
            queue_sum_s=queue_sum,
            every_network=attached,
            left_behind=node.left_behind(),
        )
    finally:
        node.close()


def main(argv: Sequence[str] | None = None) -> int:
    from app.settings import default_max_concurrent_delegates

    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__)
    parser.add_argument("--pods", type=int, default=200, help="sandboxes ADDed at once")
    parser.add_argument("--networks", type=int, default=1, help="bridge networks per pod")
    parser.add_argument("--dels", type=int, default=20, help="sandboxes ADDed before the burst, DELed in it")
    parser.add_argument(
        "--bound",
        type=int,
        default=default_max_concurrent_delegates(),
        help="maxConcurrentDelegates (bounded run)",
    )
    args = parser.parse_args(argv)
    print(
        f"{args.pods} sandboxes ADDed at once with the DELs of {args.dels} others, {args.networks} bridge "
        f"network(s) each, static mode, "
        f"{os.cpu_count()} CPUs"
    )
    for label, bound in (("unbounded", UNBOUNDED), ("bounded", args.bound)):
        outcome = burst(
            label, bound=bound, pods_count=args.pods, networks=args.networks, dels_count=args.dels
        )
        print(outcome.row(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
