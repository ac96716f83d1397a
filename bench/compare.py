"""``python -m bench.compare OTHER_TREE``: this checkout's daemon against another's, in the same minutes.

On a shared VM the CPU a daemon spends per ADD+DEL pair moves by a quarter between one run and the
next, more than most changes save; two benchmark runs one after the other compare the machine's
moods, not the trees. This starts four daemons at once, this checkout's and ``OTHER_TREE``'s (a
checkout of this repository at another commit, e.g. from ``git worktree add``) at ``--few`` and
``--many`` networks per pod, and takes one pod through ADD and DEL on each in rotation, so every
daemon sees the same machine. It prints each tree's daemon CPU per pair (the scheduler's count over
its threads, children excluded, as ``python -m bench``) at both sizes, per extra network, the ADD
and DEL p50 (the shim's wall time) at both sizes, and the differences. Each daemon runs its own
tree's code (``python -P``, the tree on ``PYTHONPATH``); the shim, plugins and interpreter are this
checkout's.

With ``--kube`` the two trees' daemons run in Kubernetes mode instead, at ``--few`` networks (NADs),
against one API emulator seeded as ``python -m bench.kube`` seeds it, and each prints its CPU per
pair and its ADD and DEL p50. Both daemons mirror this node's pods, the other's included, so both
carry the same extra watch traffic; the difference is the trees'.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.sandbox.processes import DaemonProcess
from bench import byte_compile, kube
from bench.node import BenchNode, SideBySide, WallTimes, add_and_delete, cpu_ms_in_turn

HERE = Path(__file__).resolve().parent.parent
WARM_UP = 5
SETTLE = 0.1
"""Seconds to wait before CPU is read: events posted, connections closed."""


def start_daemon_of(node: BenchNode, tree: Path, env: dict[str, str] | None = None) -> None:
    """Start ``node``'s daemon from ``tree``'s code and wait until it is ready."""
    byte_compile(tree)
    config = node.root / "daemon-config.json"
    command = [sys.executable, "-P", "-m", "app.daemon.main", "--config", str(config)]
    node.process = DaemonProcess(socket_dir=node.root / "run", log=node.root / "daemon.out", command=command)
    # In its own directory: a daemon's child processes (the schema migration) must not find this
    # checkout's code in their working directory (before 2026-12-06 its migration child did).
    node.process.start(env={"PYTHONPATH": str(tree), **(env or {})}, cwd=node.root)
    node.process.wait_ready(timeout=30)


@dataclass(frozen=True)
class KubeFigures:
    """One tree's daemon in Kubernetes mode: CPU per ADD+DEL pair and ADD p50, in milliseconds."""

    cpu_ms: float
    add_p50_ms: float
    del_p50_ms: float


def compare_kube(trees: Sequence[Path], *, networks: int, pods: int) -> list[KubeFigures]:
    """Each of ``trees`` in Kubernetes mode at ``networks``, one emulator, pods in rotation."""
    with kube.Emulator(kube.DEFAULT_CLUSTER) as api:
        nodes: list[kube.KubeNode] = []
        try:
            for index, tree in enumerate(trees):
                node = kube.KubeNode(networks=networks, api=api, subnet_offset=index * networks)
                nodes.append(node)
                node.prepare()
                start_daemon_of(node, tree, {"MULTUS_NODE_NAME": kube.NODE})
            batches = [node.make_kube_pods(WARM_UP + pods) for node in nodes]
            walls = [WallTimes() for _ in nodes]
            cpu_before = [0.0] * len(nodes)
            for round_index in range(WARM_UP + pods):
                if round_index == WARM_UP:
                    time.sleep(SETTLE)  # the warm-up's events posted
                    cpu_before = [node.daemon_cpu_seconds() for node in nodes]
                for turn in range(len(nodes)):
                    which = (round_index + turn) % len(nodes)
                    node, pod = nodes[which], batches[which][round_index]
                    times = add_and_delete(node, pod)
                    if round_index >= WARM_UP:
                        walls[which].add(*times)
            time.sleep(SETTLE)
            return [
                KubeFigures(
                    cpu_ms=1000 * (node.daemon_cpu_seconds() - before) / pods,
                    add_p50_ms=statistics.median(times.adds),
                    del_p50_ms=statistics.median(times.dels),
                )
                for node, before, times in zip(nodes, cpu_before, walls, strict=True)
            ]
        finally:
            for node in nodes:
                node.close()


@dataclass(frozen=True)
class StaticFigures:
    """One tree's daemons in static mode: CPU per pair at both sizes, and ADD and DEL p50 of each."""

    cpu: SideBySide
    few_walls: WallTimes
    many_walls: WallTimes

    def wall_row(self) -> str:
        return ", ".join(
            f"{size} net ADD p50 {statistics.median(walls.adds):.2f} ms, "
            f"DEL p50 {statistics.median(walls.dels):.2f} ms"
            for size, walls in ((self.cpu.few, self.few_walls), (self.cpu.many, self.many_walls))
        )


def compare(trees: Sequence[Path], *, few: int, many: int, pods: int) -> list[StaticFigures]:
    """Each of ``trees`` at ``few`` and ``many`` networks, all daemons taken pod by pod in rotation."""
    specs = [(tree, networks) for networks in (few, many) for tree in trees]
    walls = [WallTimes() for _ in specs]
    nodes: list[BenchNode] = []
    try:
        for index, (tree, networks) in enumerate(specs):
            node = BenchNode(networks=networks, subnet_offset=index * max(few, many))
            nodes.append(node)
            node.prepare()
            start_daemon_of(node, tree)
        per_pair_ms = cpu_ms_in_turn(nodes, pods=pods, warm_up=WARM_UP, rotate=True, walls=walls)
    finally:
        for node in nodes:
            node.close()
    return [
        StaticFigures(
            cpu=SideBySide(
                few=few,
                many=many,
                pods=pods,
                few_cpu_ms=per_pair_ms[position],
                many_cpu_ms=per_pair_ms[position + len(trees)],
            ),
            few_walls=walls[position],
            many_walls=walls[position + len(trees)],
        )
        for position in range(len(trees))
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("other", type=Path, help="another checkout of this repository")
    parser.add_argument("--pods", type=int, default=100, help="pods per daemon (after 5 of warm-up)")
    parser.add_argument("--few", type=int, default=1, help="networks per pod, the smaller size")
    parser.add_argument("--many", type=int, default=4, help="networks per pod, the larger size")
    parser.add_argument("--kube", action="store_true", help="Kubernetes mode, two daemons, --few networks")
    args = parser.parse_args(argv)
    other = args.other.resolve()
    if not (other / "app" / "daemon" / "main.py").is_file():
        parser.error(f"{other} is not a checkout of multus-py (no app/daemon/main.py)")
    if args.few < 1 or (not args.kube and args.few >= args.many):
        parser.error("--few must be at least 1 and below --many")
    if args.kube:
        other_kube, these_kube = compare_kube([other, HERE], networks=args.few, pods=args.pods)
        print(f"Kubernetes mode, two daemons in rotation, {args.few} network(s), {args.pods} pods each:")
        for tree, figures in ((other, other_kube), (HERE, these_kube)):
            print(f"  {tree}: daemon CPU per ADD+DEL pair {figures.cpu_ms:.2f} ms, ", end="")
            print(f"ADD p50 {figures.add_p50_ms:.2f} ms, DEL p50 {figures.del_p50_ms:.2f} ms")
        print(
            f"  this tree minus the other: {these_kube.cpu_ms - other_kube.cpu_ms:+.2f} ms CPU per pair, "
            f"{these_kube.add_p50_ms - other_kube.add_p50_ms:+.2f} ms ADD p50, "
            f"{these_kube.del_p50_ms - other_kube.del_p50_ms:+.2f} ms DEL p50"
        )
        return 0
    other_static, these_static = compare([other, HERE], few=args.few, many=args.many, pods=args.pods)
    other_figures, these = other_static.cpu, these_static.cpu
    print(f"four daemons in rotation; {other}:")
    print("  " + other_figures.row())
    print("  " + other_static.wall_row())
    print(f"{HERE}:")
    print("  " + these.row())
    print("  " + these_static.wall_row())
    print(
        f"  this tree minus the other: {these.few_cpu_ms - other_figures.few_cpu_ms:+.2f} ms at {args.few}, "
        f"{these.many_cpu_ms - other_figures.many_cpu_ms:+.2f} ms at {args.many}, "
        f"{these.per_extra_network_ms - other_figures.per_extra_network_ms:+.2f} ms per extra network"
    )
    for size, mine, theirs in (
        (args.few, these_static.few_walls, other_static.few_walls),
        (args.many, these_static.many_walls, other_static.many_walls),
    ):
        print(
            f"  at {size}: ADD p50 {statistics.median(mine.adds) - statistics.median(theirs.adds):+.2f} ms, "
            f"DEL p50 {statistics.median(mine.dels) - statistics.median(theirs.dels):+.2f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
