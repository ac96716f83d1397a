"""``python -m bench``: ADD/DEL through multus-py against the delegates called directly.

For 1, 2 and 4 networks per pod: sequential ADD and DEL wall times (p50, p95) through the shim
and directly (the floor), the overhead between them, throughput (pods/s) at concurrency 8 for
both, the daemon's RSS idle and at peak during the burst, and the shim process on its own
(CNI VERSION: start-up, no daemon round trip) with its peak RSS.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.node import BenchNode, Pod


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


@dataclass
class Figures:
    networks: int
    floor_add: list[float]
    multus_add: list[float]
    floor_del: list[float]
    multus_del: list[float]
    floor_pods_per_s: float
    multus_pods_per_s: float
    idle_rss_mib: float
    burst_rss_mib: float

    def rows(self) -> list[str]:
        def p(values: list[float]) -> str:
            return f"{percentile(values, 0.5):7.1f} {percentile(values, 0.95):7.1f}"

        overhead_add = percentile(self.multus_add, 0.5) - percentile(self.floor_add, 0.5)
        overhead_del = percentile(self.multus_del, 0.5) - percentile(self.floor_del, 0.5)
        ratio = 100 * self.multus_pods_per_s / self.floor_pods_per_s
        return [
            f"{self.networks} net  ADD  floor {p(self.floor_add)}  multus {p(self.multus_add)}  "
            f"overhead p50 {overhead_add:6.1f} ms",
            f"      DEL  floor {p(self.floor_del)}  multus {p(self.multus_del)}  "
            f"overhead p50 {overhead_del:6.1f} ms",
            f"      c=8  floor {self.floor_pods_per_s:6.1f} pods/s  "
            f"multus {self.multus_pods_per_s:6.1f} pods/s "
            f"({ratio:5.1f} % of floor)   daemon RSS idle {self.idle_rss_mib:5.1f} MiB, "
            f"burst peak {self.burst_rss_mib:5.1f} MiB",
        ]


class RssSampler:
    """Samples the daemon's RSS every 10 ms while a burst runs."""

    def __init__(self, node: BenchNode) -> None:
        self._node = node
        self._stop = threading.Event()
        self.peak_kib = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self._node.daemon_rss_kib()[0])
            self._stop.wait(0.01)


def run_sequential(node: BenchNode, pods: list[Pod], via: str) -> tuple[list[float], list[float]]:
    adds, dels = [], []
    for pod in pods:
        if via == "multus":
            adds.append(timed(lambda pod=pod: node.multus("ADD", pod)))  # type: ignore[misc]
            dels.append(timed(lambda pod=pod: node.multus("DEL", pod)))  # type: ignore[misc]
        else:
            results: dict[str, Any] = {}
            adds.append(timed(lambda pod=pod, r=results: node.direct("ADD", pod, r)))  # type: ignore[misc]
            dels.append(timed(lambda pod=pod, r=results: node.direct("DEL", pod, r)))  # type: ignore[misc]
    return adds, dels


def run_burst(node: BenchNode, pods: list[Pod], via: str, concurrency: int) -> float:
    """ADD every pod with ``concurrency`` workers; return pods/s. Then DEL them (not timed)."""
    results: dict[str, dict[str, Any]] = {pod.container_id: {} for pod in pods}

    def add(pod: Pod) -> None:
        if via == "multus":
            node.multus("ADD", pod)
        else:
            node.direct("ADD", pod, results[pod.container_id])

    def delete(pod: Pod) -> None:
        if via == "multus":
            node.multus("DEL", pod)
        else:
            node.direct("DEL", pod, results[pod.container_id])

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        started = time.perf_counter()
        list(pool.map(add, pods))
        elapsed = time.perf_counter() - started
        list(pool.map(delete, pods))
    return len(pods) / elapsed


def bench_networks(networks: int, *, sequential: int, burst: int, concurrency: int) -> Figures:
    node = BenchNode(networks=networks)
    try:
        node.prepare()
        node.start_daemon()
        time.sleep(0.5)
        idle_rss = node.daemon_rss_kib()[0] / 1024
        seq_pods = node.make_pods(sequential)
        burst_pods = node.make_pods(burst)
        run_sequential(node, seq_pods[:3], "multus")  # warm caches on both paths
        run_sequential(node, seq_pods[:3], "direct")
        floor_add, floor_del = run_sequential(node, seq_pods, "direct")
        multus_add, multus_del = run_sequential(node, seq_pods, "multus")
        floor_rate = run_burst(node, burst_pods, "direct", concurrency)
        with RssSampler(node) as sampler:
            multus_rate = run_burst(node, burst_pods, "multus", concurrency)
        return Figures(
            networks=networks,
            floor_add=floor_add,
            multus_add=multus_add,
            floor_del=floor_del,
            multus_del=multus_del,
            floor_pods_per_s=floor_rate,
            multus_pods_per_s=multus_rate,
            idle_rss_mib=idle_rss,
            burst_rss_mib=sampler.peak_kib / 1024,
        )
    finally:
        node.close()


SPAWNER = """
import os, sys, time
shim, runs = sys.argv[1], int(sys.argv[2])
env = {"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}
null = os.open("/dev/null", os.O_RDWR)
for _ in range(runs):
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.dup2(null, 0); os.dup2(null, 1)
        os.execve(shim, [shim], env)
    _, _, usage = os.wait4(pid, 0)
    print((time.perf_counter() - started) * 1000, usage.ru_maxrss / 1024)
"""
"""Runs the shim from a small ``python -IS`` parent: a child's peak RSS counts the memory it was
forked with, so spawning from this (large) benchmark process would report our size, not the shim's."""


def bench_shim_alone(runs: int) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, peak RSS MiB) of ``multus-shim`` answering VERSION (no daemon involved).
    The peak is an upper bound: a forked child starts at its parent's current size."""
    node = BenchNode(networks=1)
    try:
        node.prepare()
        assert node.shim is not None
        out = subprocess.run(
            [sys.executable, "-IS", "-c", SPAWNER, str(node.shim), str(runs)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        walls, peaks = zip(
            *((float(a), float(b)) for a, b in (line.split() for line in out.splitlines())), strict=True
        )
        return percentile(walls, 0.5), percentile(walls, 0.95), max(peaks)
    finally:
        node.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--networks", default="1,2,4", help="networks per pod, comma separated")
    parser.add_argument("--sequential", type=int, default=40, help="pods timed one by one")
    parser.add_argument("--burst", type=int, default=100, help="pods in the concurrent burst")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--shim-runs", type=int, default=200)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root")
    print(f"multus-py benchmark: {os.cpu_count()} CPUs, times in ms (p50 p95)")
    shim_p50, shim_p95, shim_rss = bench_shim_alone(args.shim_runs)
    print(
        f"shim alone (VERSION): p50 {shim_p50:.1f} ms, p95 {shim_p95:.1f} ms, peak RSS <= {shim_rss:.1f} MiB"
    )
    for networks in (int(n) for n in args.networks.split(",")):
        figures = bench_networks(
            networks, sequential=args.sequential, burst=args.burst, concurrency=args.concurrency
        )
        for row in figures.rows():
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
