"""``python -m bench.restart``: how visible a daemon restart is to the runtime.

Prints, over several runs on one node (one bridge network, the installed shim, static mode):
- time from ``exec`` of ``multus-daemon`` until its socket accepts a connection, and until
  ``/readyz`` answers 200 (median and max), beside the interpreter's own start (``python -c pass``);
- the ADD latency (and outcome) of a pod whose ADD is sent through the shim at the moment the
  running daemon gets SIGTERM, while a new daemon is started as soon as the old one exited (as the
  kubelet restarts the container).
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.sandbox.processes import DaemonProcess
from bench.node import BenchNode, Pod

POLL = 0.001


def _connects(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _spawn(node: BenchNode) -> DaemonProcess:
    daemon = DaemonProcess.for_config(
        node.root / "daemon-config.json", socket_dir=node.socket_path.parent, log=node.root / "daemon.out"
    )
    daemon.start()
    return daemon


def _until(condition: Callable[[], bool], daemon: DaemonProcess, *, timeout: float = 30) -> None:
    daemon.wait_until(condition, what="the daemon's start", timeout=timeout, interval=POLL)


def _ready(daemon: DaemonProcess) -> Callable[[], bool]:
    return lambda: daemon.readyz() == 200


def interpreter_alone(runs: int) -> list[float]:
    """exec → exit of ``python -c pass`` with the same interpreter: the floor of any start."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return times


def time_to_accept(node: BenchNode, runs: int) -> tuple[list[float], list[float]]:
    """(exec → socket accepts, exec → ready) for ``runs`` cold starts, in seconds."""
    accepting, ready = [], []
    path = str(node.socket_path)
    for _ in range(runs):
        started = time.perf_counter()
        daemon = _spawn(node)
        _until(lambda: _connects(path), daemon)
        accepting.append(time.perf_counter() - started)
        _until(_ready(daemon), daemon)
        ready.append(time.perf_counter() - started)
        daemon.stop()
    return accepting, ready


@dataclass
class RestartAdd:
    latency: float
    returncode: int
    output: str
    stop: float = 0.0
    """SIGTERM → the old daemon exited."""


def add_during_restart(node: BenchNode, runs: int) -> list[RestartAdd]:
    """One pod ADDed through the shim at each SIGTERM of a running daemon."""
    assert node.shim is not None
    outcomes = []
    for _ in range(runs):
        daemon = _spawn(node)
        _until(_ready(daemon), daemon)
        (pod,) = node.make_pods(1)
        result: dict[str, RestartAdd] = {}

        def add(the_pod: Pod = pod, into: dict[str, RestartAdd] = result) -> None:
            assert node.shim is not None
            started = time.perf_counter()
            proc = subprocess.run(
                [str(node.shim)],
                input=node.shim_conf(),
                env=node._shim_env("ADD", the_pod),
                capture_output=True,
                check=False,
            )
            into["add"] = RestartAdd(
                time.perf_counter() - started, proc.returncode, proc.stdout.decode()[:200]
            )

        signalled = time.perf_counter()
        daemon.send_signal(signal.SIGTERM)
        runtime = threading.Thread(target=add)
        runtime.start()
        assert daemon.process is not None
        daemon.process.wait(timeout=30)
        stopped = time.perf_counter() - signalled
        daemon = _spawn(node)  # the kubelet restarts the container
        runtime.join(timeout=120)
        result["add"].stop = stopped
        outcomes.append(result["add"])
        _until(_ready(daemon), daemon)
        node.multus("DEL", pod) if result["add"].returncode == 0 else None
        daemon.stop()
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__)
    parser.add_argument("--runs", type=int, default=9, help="cold starts timed")
    parser.add_argument("--restarts", type=int, default=5, help="restarts with an ADD in flight")
    args = parser.parse_args(argv)
    node = BenchNode(networks=1)
    try:
        node.prepare()
        floor = interpreter_alone(args.runs)
        accepting, ready = time_to_accept(node, args.runs)
        outcomes = add_during_restart(node, args.restarts)
    finally:
        node.close()

    def ms(values: Sequence[float]) -> str:
        return f"median {statistics.median(values) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms"

    print(f"exec -> exit of python -c pass ({args.runs} runs): {ms(floor)}")
    print(f"exec -> socket accepts ({args.runs} runs): {ms(accepting)}")
    print(f"exec -> /readyz 200    ({args.runs} runs): {ms(ready)}")
    if not outcomes:  # --restarts 0: start-up only
        return 0
    print(f"SIGTERM -> old daemon exited ({args.restarts} restarts): {ms([o.stop for o in outcomes])}")
    failed = [outcome for outcome in outcomes if outcome.returncode != 0]
    print(
        f"ADD sent at SIGTERM, new daemon started at exit ({args.restarts} restarts): "
        f"{ms([outcome.latency for outcome in outcomes])}, failed {len(failed)}"
    )
    for outcome in failed:
        print(f"  failed after {outcome.latency * 1000:.0f} ms: {outcome.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
