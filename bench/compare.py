"""``python -m bench.compare OTHER_TREE``: this checkout's daemon against another's, in the same minutes.

On a shared VM the CPU a daemon spends per ADD+DEL pair moves by a quarter between one run and the
next, more than most changes save; two benchmark runs one after the other compare the machine's
moods, not the trees. This starts four daemons at once, this checkout's and ``OTHER_TREE``'s (a
checkout of this repository at another commit, e.g. from ``git worktree add``) at ``--few`` and
``--many`` networks per pod, and takes one pod through ADD and DEL on each in rotation, so every
daemon sees the same machine. It prints each tree's daemon CPU per pair (the scheduler's count over
its threads, children excluded, as ``python -m bench``) at both sizes, per extra network, and the
differences. Each daemon runs its own tree's code (``python -P``, the tree on ``PYTHONPATH``); the
shim, plugins and interpreter are this checkout's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from app.sandbox.processes import DaemonProcess
from bench.node import BenchNode, SideBySide, cpu_ms_in_turn

HERE = Path(__file__).resolve().parent.parent
WARM_UP = 5


def start_daemon_of(node: BenchNode, tree: Path) -> None:
    """Start ``node``'s daemon from ``tree``'s code and wait until it is ready."""
    config = node.root / "daemon-config.json"
    command = [sys.executable, "-P", "-m", "app.daemon.main", "--config", str(config)]
    node.process = DaemonProcess(socket_dir=node.root / "run", log=node.root / "daemon.out", command=command)
    node.process.start(env={"PYTHONPATH": str(tree)})
    node.process.wait_ready(timeout=30)


def compare(trees: Sequence[Path], *, few: int, many: int, pods: int) -> list[SideBySide]:
    """Each of ``trees`` at ``few`` and ``many`` networks, all daemons taken pod by pod in rotation."""
    specs = [(tree, networks) for networks in (few, many) for tree in trees]
    nodes: list[BenchNode] = []
    try:
        for index, (tree, networks) in enumerate(specs):
            node = BenchNode(networks=networks, subnet_offset=index * max(few, many))
            nodes.append(node)
            node.prepare()
            start_daemon_of(node, tree)
        per_pair_ms = cpu_ms_in_turn(nodes, pods=pods, warm_up=WARM_UP, rotate=True)
    finally:
        for node in nodes:
            node.close()
    return [
        SideBySide(
            few=few,
            many=many,
            pods=pods,
            few_cpu_ms=per_pair_ms[position],
            many_cpu_ms=per_pair_ms[position + len(trees)],
        )
        for position in range(len(trees))
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("other", type=Path, help="another checkout of this repository")
    parser.add_argument("--pods", type=int, default=100, help="pods per daemon (after 5 of warm-up)")
    parser.add_argument("--few", type=int, default=1, help="networks per pod, the smaller size")
    parser.add_argument("--many", type=int, default=4, help="networks per pod, the larger size")
    args = parser.parse_args(argv)
    other = args.other.resolve()
    if not (other / "app" / "daemon" / "main.py").is_file():
        parser.error(f"{other} is not a checkout of multus-py (no app/daemon/main.py)")
    if not 1 <= args.few < args.many:
        parser.error("--few must be at least 1 and below --many")
    other_figures, these = compare([other, HERE], few=args.few, many=args.many, pods=args.pods)
    print(f"four daemons in rotation; {other}:")
    print("  " + other_figures.row())
    print(f"{HERE}:")
    print("  " + these.row())
    print(
        f"  this tree minus the other: {these.few_cpu_ms - other_figures.few_cpu_ms:+.2f} ms at {args.few}, "
        f"{these.many_cpu_ms - other_figures.many_cpu_ms:+.2f} ms at {args.many}, "
        f"{these.per_extra_network_ms - other_figures.per_extra_network_ms:+.2f} ms per extra network"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
