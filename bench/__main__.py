"""``python -m bench``: ADD/DEL through multus-py against the delegates called directly.

Everything runs what a node runs: the shim is what ``multus-install`` installs by default, the launcher
with the shim's own runtime (``--unbundled``: a launcher run by the host's ``/usr/bin/python3``; never a
console script), the daemon is ``multus-daemon`` in static mode (and, with ``--kube``, in Kubernetes mode
through the API emulator, ``bench.kube``). For 1, 2 and 4 networks per pod, in the same run:

- sequential ADD and DEL wall times (p50, p95) through the shim, next to two floors: the delegates
  called directly (the delegate floor) and the delegates plus one bare ``python3 -I -S -c pass`` per
  call (the Python floor: what any shim written in Python costs at least); taken pod by pod, the
  three paths in turn (``run_paired``);
- the daemon's own CPU per ADD+DEL pair (the scheduler's count over its threads, children excluded);
- throughput (pods/s) at concurrency 8 for the three, multus-py as a share of the Python floor;
- the daemon's RSS idle and at peak during the burst;
- ADD and DEL with delegates in parallel (``parallelDelegates``) vs one after another, for a pod with
  4 networks on top of the cluster network and for 4 networks counting it;

then the shim process on its own (CNI VERSION: start-up, no daemon round trip) with its peak RSS,
and the verdicts against the targets of the performance work.
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
from dataclasses import dataclass, field
from typing import Any

from bench.node import BenchNode, Pod, SideBySide, cpu_ms_in_turn


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
    python_add: list[float] = field(default_factory=list)
    """The Python floor: delegates plus one bare interpreter start per call."""
    python_del: list[float] = field(default_factory=list)
    python_pods_per_s: float = 0.0
    daemon_cpu_ms: float = 0.0
    """The daemon's own CPU per sequential ADD+DEL pair (``BenchNode.daemon_cpu_seconds``)."""
    daemon_kernel_ms: float | None = None
    """Its kernel share (stime), where measured."""
    daemon_cpu_interleaved_ms: float | None = None
    """The same, each call between the two floors' calls (its caches cold), where measured."""

    def _cpu_split(self) -> str:
        if self.daemon_kernel_ms is None:
            return ""
        return f" (user {self.daemon_cpu_ms - self.daemon_kernel_ms:.1f}, kernel {self.daemon_kernel_ms:.1f})"

    def _interleaved(self) -> str:
        if self.daemon_cpu_interleaved_ms is None:
            return ""
        return f", {self.daemon_cpu_interleaved_ms:.1f} ms between the floors' calls"

    @property
    def overhead_add(self) -> float:
        return percentile(self.multus_add, 0.5) - percentile(self.floor_add, 0.5)

    def rows(self) -> list[str]:
        def p(values: list[float]) -> str:
            if not values:
                return "      -       -"
            return f"{percentile(values, 0.5):7.1f} {percentile(values, 0.95):7.1f}"

        def over(multus: list[float], floor: list[float]) -> str:
            return f"{percentile(multus, 0.5) - percentile(floor, 0.5):6.1f}" if floor else "     -"

        ratio = 100 * self.multus_pods_per_s / self.floor_pods_per_s
        python_ratio = "-"
        if self.python_pods_per_s:
            python_ratio = f"{100 * self.multus_pods_per_s / self.python_pods_per_s:5.1f} %"
        return [
            f"{self.networks} net  ADD  floor {p(self.floor_add)}  python floor {p(self.python_add)}  "
            f"multus {p(self.multus_add)}  overhead p50 {over(self.multus_add, self.floor_add)} ms "
            f"(over python floor {over(self.multus_add, self.python_add)} ms)",
            f"      DEL  floor {p(self.floor_del)}  python floor {p(self.python_del)}  "
            f"multus {p(self.multus_del)}  overhead p50 {over(self.multus_del, self.floor_del)} ms "
            f"(over python floor {over(self.multus_del, self.python_del)} ms)",
            f"      daemon CPU per ADD+DEL pair {self.daemon_cpu_ms:5.1f} ms{self._cpu_split()} back to back"
            + self._interleaved(),
            f"      c=8  floor {self.floor_pods_per_s:6.1f} pods/s  "
            f"python floor {self.python_pods_per_s:6.1f} pods/s  "
            f"multus {self.multus_pods_per_s:6.1f} pods/s ({ratio:5.1f} % of floor, "
            f"{python_ratio} of python floor)",
            f"      daemon RSS idle {self.idle_rss_mib:5.1f} MiB, burst peak {self.burst_rss_mib:5.1f} MiB",
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
    """ADD then DEL each pod ``via`` "multus" (the shim), "direct" (the delegate floor) or "python"
    (the Python floor)."""
    adds, dels = [], []
    for pod in pods:
        if via == "multus":
            adds.append(timed(lambda pod=pod: node.multus("ADD", pod)))  # type: ignore[misc]
            dels.append(timed(lambda pod=pod: node.multus("DEL", pod)))  # type: ignore[misc]
        else:
            call = node.direct if via == "direct" else node.python_floor
            results: dict[str, Any] = {}
            adds.append(timed(lambda pod=pod, r=results, c=call: c("ADD", pod, r)))  # type: ignore[misc]
            dels.append(timed(lambda pod=pod, r=results, c=call: c("DEL", pod, r)))  # type: ignore[misc]
    return adds, dels


def run_sequential_cpu(node: BenchNode, pods: list[Pod]) -> tuple[float, float]:
    """The daemon's own CPU per ADD+DEL pair (ms) over ``run_sequential`` through multus-py, calls
    back to back (its caches warm): all of it (``BenchNode.daemon_cpu_seconds``), and the kernel's
    share (spawning and reaping plugins, sockets, fsync) as the clock ticks split it."""
    cpu_before = node.daemon_cpu_seconds()
    user_before, kernel_before = node.daemon_cpu_split()
    run_sequential(node, pods, "multus")
    time.sleep(0.1)  # what the daemon does after its last answer (closing the connection) counts too
    cpu = node.daemon_cpu_seconds() - cpu_before
    user, kernel = node.daemon_cpu_split()
    ticked = user - user_before + kernel - kernel_before
    kernel_share = (kernel - kernel_before) / ticked if ticked else 0.0
    per_pair = 1000 / len(pods)
    return per_pair * cpu, per_pair * cpu * kernel_share


PATHS = ("direct", "python", "multus")


@dataclass
class Paired:
    """ADD and DEL wall times (ms) of each path, pod by pod, and the daemon's CPU per ADD+DEL pair."""

    adds: dict[str, list[float]] = field(default_factory=lambda: {via: [] for via in PATHS})
    dels: dict[str, list[float]] = field(default_factory=lambda: {via: [] for via in PATHS})
    daemon_cpu_ms: float = 0.0


def run_paired(node: BenchNode, pods: list[Pod]) -> Paired:
    """Each pod ADDed then DELeted through all three paths, one after the other in an order that
    rotates from pod to pod: a machine busy for a while slows the three alike (separate batches
    each took their own share of it). The daemon's own CPU (``BenchNode.daemon_cpu_seconds``) is
    summed around its own calls only (the reaping of a DEL's last plugin, a few ms later, falls
    outside: about 20 µs)."""
    paired = Paired()
    cpu = 0.0
    for index, pod in enumerate(pods):
        for via in PATHS[index % 3 :] + PATHS[: index % 3]:
            if via == "multus":
                cpu_before = node.daemon_cpu_seconds()
                paired.adds[via].append(timed(lambda pod=pod: node.multus("ADD", pod)))  # type: ignore[misc]
                paired.dels[via].append(timed(lambda pod=pod: node.multus("DEL", pod)))  # type: ignore[misc]
                cpu += node.daemon_cpu_seconds() - cpu_before
                continue
            call = node.direct if via == "direct" else node.python_floor
            results: dict[str, Any] = {}
            paired.adds[via].append(timed(lambda pod=pod, r=results, c=call: c("ADD", pod, r)))  # type: ignore[misc]
            paired.dels[via].append(timed(lambda pod=pod, r=results, c=call: c("DEL", pod, r)))  # type: ignore[misc]
    paired.daemon_cpu_ms = 1000 * cpu / len(pods)
    return paired


def run_burst(node: BenchNode, pods: list[Pod], via: str, concurrency: int) -> float:
    """ADD every pod with ``concurrency`` workers; return pods/s. Then DEL them (not timed)."""
    results: dict[str, dict[str, Any]] = {pod.container_id: {} for pod in pods}

    call = node.direct if via == "direct" else node.python_floor

    def add(pod: Pod) -> None:
        if via == "multus":
            node.multus("ADD", pod)
        else:
            call("ADD", pod, results[pod.container_id])

    def delete(pod: Pod) -> None:
        if via == "multus":
            node.multus("DEL", pod)
        else:
            call("DEL", pod, results[pod.container_id])

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        started = time.perf_counter()
        list(pool.map(add, pods))
        elapsed = time.perf_counter() - started
        list(pool.map(delete, pods))
    return len(pods) / elapsed


def bench_networks(
    networks: int, *, sequential: int, burst: int, concurrency: int, bundled: bool = True
) -> Figures:
    node = BenchNode(networks=networks, bundled=bundled)
    try:
        node.prepare()
        node.start_daemon()
        time.sleep(0.5)
        idle_rss = node.daemon_rss_kib()[0] / 1024
        seq_pods = node.make_pods(sequential)
        burst_pods = node.make_pods(burst)
        run_paired(node, seq_pods[:3])  # warm caches on every path
        paired = run_paired(node, seq_pods)
        daemon_cpu, daemon_kernel = run_sequential_cpu(node, seq_pods)
        floor_rate = run_burst(node, burst_pods, "direct", concurrency)
        python_rate = run_burst(node, burst_pods, "python", concurrency)
        with RssSampler(node) as sampler:
            multus_rate = run_burst(node, burst_pods, "multus", concurrency)
        return Figures(
            python_add=paired.adds["python"],
            python_del=paired.dels["python"],
            python_pods_per_s=python_rate,
            daemon_cpu_ms=daemon_cpu,
            daemon_kernel_ms=daemon_kernel,
            daemon_cpu_interleaved_ms=paired.daemon_cpu_ms,
            networks=networks,
            floor_add=paired.adds["direct"],
            multus_add=paired.adds["multus"],
            floor_del=paired.dels["direct"],
            multus_del=paired.dels["multus"],
            floor_pods_per_s=floor_rate,
            multus_pods_per_s=multus_rate,
            idle_rss_mib=idle_rss,
            burst_rss_mib=sampler.peak_kib / 1024,
        )
    finally:
        node.close()


def bench_side_by_side(few: int, many: int, *, pods: int, bundled: bool = True) -> SideBySide:
    """Two nodes at once, ``few`` and ``many`` networks per pod, each pod ADDed and DELeted on one
    node and then on the other. The figures of separate runs differ by the machine's mood between
    them (on a shared VM, by more than an extra network costs); taken in turn, the two daemons see
    the same machine, and their difference is what the extra networks cost."""
    nodes = [
        BenchNode(networks=few, bundled=bundled),
        BenchNode(networks=many, bundled=bundled, subnet_offset=few + 10),
    ]
    try:
        for node in nodes:
            node.prepare()
            node.start_daemon()
        few_cpu_ms, many_cpu_ms = cpu_ms_in_turn(nodes, pods=pods, warm_up=3, rotate=False)
        return SideBySide(few=few, many=many, pods=pods, few_cpu_ms=few_cpu_ms, many_cpu_ms=many_cpu_ms)
    finally:
        for node in nodes:
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


def bench_shim_alone(runs: int, *, bundled: bool = True) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, peak RSS MiB) of ``multus-shim`` answering VERSION (no daemon involved).
    The peak is an upper bound: a forked child starts at its parent's current size."""
    node = BenchNode(networks=1, bundled=bundled)
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


def parallel_rows(attached: int, *, pods: int = 10, delay_ms: int = 100) -> list[str]:
    """Parallel vs sequential delegates (daemon-config ``parallelDelegates``) for a pod annotated with
    ``attached`` networks on top of the cluster network, and for ``attached`` networks counting the
    cluster network (whose ADD always runs first and alone, so there 0.5 is the floor at 4); every
    network a bridge plus a ``delay_ms`` sleep plugin (``bench.parallel`` in short)."""
    from bench import parallel  # it imports this module's helpers

    rows = []
    for networks, label in (
        (attached + 1, f"cluster network + {attached} networks"),
        (attached, f"{attached} networks counting the cluster network (floor 0.5)"),
    ):
        p50: dict[bool, float] = {}
        del_p50: dict[bool, float] = {}
        for mode in (False, True):
            adds, dels = parallel.bench_mode(networks=networks, parallel=mode, delay_ms=delay_ms, pods=pods)
            p50[mode] = percentile(adds, 0.5)
            del_p50[mode] = percentile(dels, 0.5)
        rows.append(
            f"parallel vs sequential, {label} (bridge + {delay_ms} ms sleep each): ADD p50 "
            f"{p50[True]:.1f} vs {p50[False]:.1f} ms = {p50[True] / p50[False]:.2f}"
            + (" (target <= 0.5)" if networks > attached else "")
            + f"; DEL p50 {del_p50[True]:.1f} vs {del_p50[False]:.1f} ms"
            + f" = {del_p50[True] / del_p50[False]:.2f}"
        )
    return rows


@dataclass(frozen=True)
class PluginRunFloor:
    """``bench.plugin_run``'s figures: one VERSION run, and an extra network's real ADD and DEL run
    by ``app.cni.child`` on the daemon's loop and by a blocking spawn and wait."""

    version_run_ms: float
    extra_network_ms: float | None
    extra_network_blocking_ms: float | None


def plugin_run_floor(*, pods: int, few: int, many: int) -> PluginRunFloor | None:
    """What running plugins costs the process running them (``bench.plugin_run``, a process of its
    own); None if it could not be measured."""
    from bench import plugin_run  # the parser only: the measuring runs in a process of its own

    command = [sys.executable, "-m", "bench.plugin_run", "--pods", str(pods), "--few", str(few)]
    proc = subprocess.run([*command, "--many", str(many)], capture_output=True, text=True, check=False)
    words = proc.stdout.split()
    if proc.returncode != 0 or "ms" not in words:
        print(f"plugin run floor not measured: {proc.stderr.strip()}", flush=True)
        return None
    for line in proc.stdout.splitlines():
        print(line, flush=True)
    return PluginRunFloor(
        version_run_ms=float(words[words.index("ms") - 1]),
        extra_network_ms=plugin_run.parse_extra_network_floor(proc.stdout, "event loop"),
        extra_network_blocking_ms=plugin_run.parse_extra_network_floor(proc.stdout, "blocking"),
    )


def verdicts(
    results: Sequence[Figures],
    floor: PluginRunFloor | None = None,
    side_by_side: SideBySide | None = None,
) -> list[str]:
    """The targets of the performance work, each with the figure measured in this run."""
    lines = []
    by_networks = {figures.networks: figures for figures in results}
    overheads = ", ".join(f"{f.overhead_add:.1f}" for f in results)
    lines.append(f"ADD overhead over the delegate floor p50 <= 10 ms at every N: {overheads} ms")
    one = by_networks.get(1)
    if one is not None:
        measured = f"{one.daemon_cpu_ms:.1f} ms back to back"
        if side_by_side is not None and side_by_side.few == 1:
            measured += f", {side_by_side.few_cpu_ms:.2f} ms side by side ({side_by_side.pods} pods)"
        lines.append(f"daemon CPU per ADD+DEL pair <= 5 ms at 1 network: {measured}")
        for figures in results:
            if figures.networks > 1:
                extra = (figures.daemon_cpu_ms - one.daemon_cpu_ms) / (figures.networks - 1)
                lines.append(f"  + <= 1 ms per extra network: {extra:.1f} ms each at {figures.networks}")
        if side_by_side is not None:
            lines.append(
                f"  + <= 1 ms per extra network, side by side: {side_by_side.per_extra_network_ms:.2f} ms "
                f"({side_by_side.few_cpu_ms:.2f} ms at {side_by_side.few}, {side_by_side.many_cpu_ms:.2f} ms "
                f"at {side_by_side.many})"
            )
        if floor is not None:
            lines.extend(_floor_lines(floor, side_by_side))
    shares = ", ".join(
        f"{100 * f.multus_pods_per_s / f.python_pods_per_s:.0f} %" for f in results if f.python_pods_per_s
    )
    lines.append(f"c=8 pods/s as a share of the Python floor: {shares}")
    idle = max(f.idle_rss_mib for f in results)
    burst = max(f.burst_rss_mib - f.idle_rss_mib for f in results)
    lines.append(f"RSS idle {idle:.1f} MiB (static mode), burst <= idle + {burst:.1f} MiB")
    return lines


def _floor_lines(floor: PluginRunFloor, side_by_side: SideBySide | None) -> list[str]:
    """The floors under the CPU per extra network, and the daemon's own share above them."""
    lines = [
        f"    (floor: an extra network is two plugin runs; two VERSION runs cost their parent "
        f"{2 * floor.version_run_ms:.2f} ms, bench.plugin_run)"
    ]
    if floor.extra_network_ms is not None:
        blocking = (
            ""
            if floor.extra_network_blocking_ms is None
            else f", {floor.extra_network_blocking_ms:.2f} ms by a blocking spawn and wait"
        )
        lines.append(
            f"    (floor: an extra network's real ADD and DEL, nothing recorded, cost their parent "
            f"{floor.extra_network_ms:.2f} ms run by app.cni.child on the daemon's loop{blocking})"
        )
        if side_by_side is not None:
            lines.append(
                f"    the daemon's own share per extra network, side by side less that floor: "
                f"{side_by_side.per_extra_network_ms - floor.extra_network_ms:.2f} ms"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--networks", default="1,2,4", help="networks per pod, comma separated")
    parser.add_argument("--sequential", type=int, default=40, help="pods timed one by one")
    parser.add_argument("--burst", type=int, default=100, help="pods in the concurrent burst")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--shim-runs", type=int, default=200)
    parser.add_argument(
        "--side-by-side",
        type=int,
        default=100,
        help="pods per node for the CPU of the fewest vs the most networks measured side by side (0: skip)",
    )
    parser.add_argument(
        "--floor-pods",
        type=int,
        default=60,
        help="pods per size for the real delegates' floor (bench.plugin_run --pods; 0: VERSION runs only)",
    )
    parser.add_argument(
        "--unbundled",
        action="store_true",
        help="install the shim as a launcher for the host's Python instead of with its own runtime",
    )
    parser.add_argument(
        "--kube",
        default="1",
        help="networks per pod for the Kubernetes-mode run through the emulator (bench.kube, seeded with "
        "1,000 pods and 200 NADs), comma separated; '' to skip",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root")
    print(f"multus-py benchmark: {os.cpu_count()} CPUs, times in ms (p50 p95)")
    shim_p50, shim_p95, shim_rss = bench_shim_alone(args.shim_runs, bundled=not args.unbundled)
    print(
        f"shim alone (VERSION): p50 {shim_p50:.1f} ms, p95 {shim_p95:.1f} ms, peak RSS <= {shim_rss:.1f} MiB"
    )
    print("static mode (conf files):", flush=True)
    results = []
    for networks in (int(n) for n in args.networks.split(",")):
        figures = bench_networks(
            networks,
            sequential=args.sequential,
            burst=args.burst,
            concurrency=args.concurrency,
            bundled=not args.unbundled,
        )
        results.append(figures)
        for row in figures.rows():
            print(row, flush=True)
    for row in parallel_rows(max(f.networks for f in results)):
        print(row, flush=True)
    counts = sorted(f.networks for f in results)
    floor = (
        plugin_run_floor(pods=args.floor_pods, few=counts[0], many=counts[-1]) if len(counts) > 1 else None
    )
    side_by_side = None
    if args.side_by_side and len(counts) > 1:
        side_by_side = bench_side_by_side(
            counts[0], counts[-1], pods=args.side_by_side, bundled=not args.unbundled
        )
        print(side_by_side.row(), flush=True)
    print("targets (static mode):")
    for line in verdicts(results, floor, side_by_side):
        print("  " + line, flush=True)
    if args.kube:
        from bench import kube  # imports this module: only once it is loaded

        print("Kubernetes mode (API emulator):", flush=True)
        kube.main(
            [
                f"--networks={args.kube}",
                f"--sequential={args.sequential}",
                f"--burst={args.burst}",
                f"--concurrency={args.concurrency}",
                "--grow=",
            ]
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
