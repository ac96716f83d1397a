"""``python -m bench.timeline``: where the wall time of one ADD and one DEL goes, step by step.

``python -m bench`` says how much an ADD costs over the delegates; this says where inside the
daemon. It starts the daemon with probes (``bench.traced_daemon``) in static mode, sends each pod's
ADD and DEL itself with the shim's own ``call_daemon`` (in process: no interpreter start), and, for
every step the probes saw, prints the median time since the request was sent: the connection
accepted, its bytes read, the route handler, the engine, each store write (awaited on the loop, run
in the writer thread), the plugin's spawn and the loop's seeing it exit, the answer received. The
delegate's own run (from its spawn returning to its exit being seen) is then taken out: what is
left is the daemon's share of the request's wall time, in which its CPU and its waits (a thread
handing work to the other, the loop waking) are both counted. The figures include the probes' own
cost, a few microseconds each.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.sandbox.processes import DaemonProcess
from app.shim import shim
from bench.node import BenchNode, Pod
from bench.traced_daemon import FLUSH_INTERVAL, TRACE_FILE_ENV

HERE = Path(__file__).resolve().parent.parent
WARM_UP = 5
ANSWERED = "answer received"


@dataclass(frozen=True)
class Call:
    command: str
    sent: float
    answered: float


def traced_node(networks: int) -> BenchNode:
    """A prepared node whose daemon runs with probes, its trace written beside its state."""
    node = BenchNode(networks=networks)
    node.prepare(shim=False)
    config = node.root / "daemon-config.json"
    command = [sys.executable, "-m", "bench.traced_daemon", "--config", str(config)]
    node.process = DaemonProcess(socket_dir=node.root / "run", log=node.root / "daemon.out", command=command)
    node.process.start(env={TRACE_FILE_ENV: str(trace_file(node)), "PYTHONPATH": str(HERE)})
    node.process.wait_ready(timeout=30)
    return node


def trace_file(node: BenchNode) -> Path:
    return node.root / "trace.txt"


def send(node: BenchNode, command: str, pod: Pod) -> Call:
    """One request as the shim sends it; the times around it."""
    request = shim.http_request(shim.encode_request(node._shim_env(command, pod), node.shim_conf()))
    sent = time.perf_counter()
    status, body = shim.call_daemon(str(node.socket_path), request, 30.0)
    answered = time.perf_counter()
    if status != 200:
        raise RuntimeError(f"{command} failed: {status} {body.decode(errors='replace')}")
    return Call(command, sent, answered)


def read_trace(path: Path) -> list[tuple[float, str]]:
    """The probes' marks, read once the daemon has written them out twice more (the last calls')."""
    time.sleep(3 * FLUSH_INTERVAL)
    marks = []
    for line in path.read_text().splitlines():
        at, _, step = line.partition(" ")
        marks.append((float(at), step))
    return marks


def step_medians(
    calls: Sequence[Call], marks: Sequence[tuple[float, str]], command: str
) -> list[tuple[float, str]]:
    """For each step seen during ``command`` calls (its n-th occurrence in a call named ``step #n``),
    the median milliseconds since the call was sent; in time order."""
    offsets: dict[str, list[float]] = collections.defaultdict(list)
    for call in calls:
        if call.command != command:
            continue
        seen: collections.Counter[str] = collections.Counter()
        for at, step in marks:
            if call.sent <= at <= call.answered:
                seen[step] += 1
                offsets[f"{step} #{seen[step]}" if seen[step] > 1 else step].append((at - call.sent) * 1000)
        offsets[ANSWERED].append((call.answered - call.sent) * 1000)
    return sorted((statistics.median(values), step) for step, values in offsets.items())


def plugin_ms(steps: Sequence[tuple[float, str]]) -> float:
    """Each spawn's return to the next exit seen: the delegates' own time, summed."""
    total = 0.0
    spawned: float | None = None
    for at, step in steps:
        if step.startswith("spawn-"):
            spawned = at
        elif step.startswith("plugin exit seen+") and spawned is not None:
            total += at - spawned
            spawned = None
    return total


def report(command: str, steps: Sequence[tuple[float, str]]) -> list[str]:
    lines = [f"{command}: median ms since the request was sent (and since the step before)"]
    before = 0.0
    for at, step in steps:
        lines.append(f"  {at:8.3f}  (+{at - before:6.3f})  {step}")
        before = at
    total = steps[-1][0]
    plugins = plugin_ms(steps)
    lines.append(
        f"  {command} {total:.2f} ms = delegates {plugins:.2f} ms (spawn returned to exit seen) "
        f"+ the daemon's share {total - plugins:.2f} ms"
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", type=int, default=1, help="networks per pod")
    parser.add_argument("--pods", type=int, default=100, help="pods, each ADDed then DELeted")
    args = parser.parse_args(argv)
    node = traced_node(args.networks)
    calls: list[Call] = []
    try:
        pods = node.make_pods(args.pods + WARM_UP)
        for index, pod in enumerate(pods):
            add = send(node, "ADD", pod)
            delete = send(node, "DEL", pod)
            if index >= WARM_UP:
                calls.extend((add, delete))
        marks = read_trace(trace_file(node))
    finally:
        node.close()
    print(f"multus-py request timeline: {args.networks} network(s), {args.pods} pods, static mode")
    for command in ("ADD", "DEL"):
        print("\n".join(report(command, step_medians(calls, marks, command))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
