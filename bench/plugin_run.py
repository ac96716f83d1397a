"""``python -m bench.plugin_run``: what running plugins costs the process that runs them, with no
daemon around it: the floors under the daemon's CPU per plugin and per extra network.

A daemon that executes its delegates pays, for each execution, at least what ``app.cni.child`` costs:
the spawn (three memory files for its stdio, ``posix_spawn``), noticing the exit, reading the output
and reaping the child, on the event loop the daemon runs (uvloop where installed). Each figure is the
process's CPU counted the way ``python -m bench`` counts the daemon's (the scheduler's nanoseconds
summed over its threads; the plugins' own CPU is not their parent's), in a process of its own:

- **one VERSION run**: ``bridge`` answering VERSION, ``--runs`` times after a warm-up. A short run
  that leaves the parent's caches nearly as they were: the least a plugin run can cost.
- **the real delegates** (``--pods``; 0 skips them): the networks ``python -m bench`` gives a pod
  (``bridge`` with ``host-local`` IPAM), ADD then DEL of each, in a network namespace per pod, at
  ``--few`` and ``--many`` networks per pod, run two ways: by ``app.cni.child`` on the daemon's
  event loop (stdin built and results decoded as libcni does, nothing recorded), and by a blocking
  ``posix_spawn`` and ``waitpid`` (no event loop at all). A real ADD or DEL runs for milliseconds,
  creating links, namespaces' routes and lease files, while its parent sleeps: what the parent does
  next runs on cold caches, which costs it far more than after a VERSION run. ``per extra network``
  (the difference between ``many`` and ``few``, per network) is the floor under the daemon's
  ``+ <= 1 ms per extra network`` that no recording, validation or bookkeeping can go below, on
  this machine, without changing how a plugin is run and waited for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from app.cni import child
from app.cni.conf import plugin_stdin
from app.daemon.main import event_loop_factory
from bench.node import CNI_PLUGIN_DIR, BenchNode, Pod, SideBySide, threads_cpu_ns

PLUGIN = CNI_PLUGIN_DIR / "bridge"
VERSION_ENV = {"CNI_COMMAND": "VERSION", "CNI_PATH": str(CNI_PLUGIN_DIR)}
VERSION_STDIN = b'{"cniVersion":"1.0.0"}'
WAYS = ("event loop", "blocking")
"""How the real delegates are run: ``app.cni.child`` on the daemon's loop, or a blocking spawn and wait."""


async def run_plugins(count: int) -> None:
    for _ in range(count):
        finished = await child.spawn(str(PLUGIN), env=VERSION_ENV, stdin=VERSION_STDIN).communicate()
        if finished.returncode != 0:
            raise RuntimeError(f"{PLUGIN} VERSION failed: {finished.stderr.decode(errors='replace')}")


def cpu_ms_per_run(runs: int, *, warm_up: int = 20) -> float:
    """The parent's CPU per VERSION run, in milliseconds."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(run_plugins(warm_up))
        before = threads_cpu_ns("self")
        if not before:
            raise RuntimeError("this kernel keeps no per-thread CPU count (/proc/self/task/*/schedstat)")
        runner.run(run_plugins(runs))  # every child reaped by the time its run returns
        after = threads_cpu_ns("self")
    return (after - before) / runs / 1e6


# ---- the real delegates -----------------------------------------------------------------------


class _Delegates:
    """ADD then DEL of every network of a bench node's pod, each plugin run one of the two ways."""

    def __init__(self, node: BenchNode) -> None:
        self.node = node

    def _calls(self, command: str, pod: Pod) -> list[tuple[int, str, dict[str, str], dict[str, object]]]:
        order = range(self.node.networks) if command == "ADD" else reversed(range(self.node.networks))
        calls = []
        for index in order:
            conf = self.node.confs[index]
            plugin_type = str(_only_plugin(conf)["type"])
            env = self.node.plugin_env(command, pod, index)
            calls.append((index, str(self.node.bin_dir / plugin_type), env, conf))
        return calls

    @staticmethod
    def _stdin(conf: dict[str, object], prev: object) -> bytes:
        return plugin_stdin(
            _only_plugin(conf),
            name=str(conf["name"]),
            cni_version=str(conf["cniVersion"]),
            prev_result=prev,  # type: ignore[arg-type]
        )

    async def pair_on_loop(self, pod: Pod) -> None:
        results: dict[int, object] = {}
        for command in ("ADD", "DEL"):
            for index, path, env, conf in self._calls(command, pod):
                stdin = self._stdin(conf, results.get(index) if command == "DEL" else None)
                finished = await child.spawn(path, env=env, stdin=stdin).communicate()
                _check(finished.returncode, finished.stdout, command)
                if command == "ADD":
                    results[index] = json.loads(finished.stdout)

    def pair_blocking(self, pod: Pod) -> None:
        results: dict[int, object] = {}
        for command in ("ADD", "DEL"):
            for index, path, env, conf in self._calls(command, pod):
                stdin = self._stdin(conf, results.get(index) if command == "DEL" else None)
                returncode, stdout = _run_blocking(path, env, stdin)
                _check(returncode, stdout, command)
                if command == "ADD":
                    results[index] = json.loads(stdout)


def _only_plugin(conf: dict[str, object]) -> dict[str, object]:
    """The one plugin of a bench network's list."""
    plugins = conf["plugins"]
    if not isinstance(plugins, list) or len(plugins) != 1:
        raise ValueError(f"a bench network has one plugin, not {plugins!r}")
    plugin: dict[str, object] = plugins[0]
    return plugin


def _run_blocking(path: str, env: dict[str, str], stdin: bytes) -> tuple[int, bytes]:
    """One plugin run with no event loop: memory files for its stdio, spawn, a blocking wait."""
    fds = [os.memfd_create(name, os.MFD_CLOEXEC) for name in ("stdin", "stdout", "stderr")]
    try:
        os.pwrite(fds[0], stdin, 0)
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)]
        pid = os.posix_spawn(path, [path], env, file_actions=actions, setsid=True)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), os.pread(fds[1], os.fstat(fds[1]).st_size, 0)
    finally:
        for fd in fds:
            os.close(fd)


def _check(returncode: int, stdout: bytes, command: str) -> None:
    if returncode != 0:
        raise RuntimeError(f"bridge {command} failed: {stdout.decode(errors='replace')}")


def cpu_ms_per_pair(networks: int, *, pods: int, way: str, warm_up: int = 5) -> float:
    """The parent's CPU per ADD+DEL pair of a pod with ``networks`` bench networks, run ``way``."""
    node = BenchNode(networks=networks)
    try:
        node.prepare(shim=False)
        batch = node.make_pods(warm_up + pods)
        delegates = _Delegates(node)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:

            def run(pod: Pod) -> None:
                if way == "event loop":
                    runner.run(delegates.pair_on_loop(pod))
                else:
                    delegates.pair_blocking(pod)

            for pod in batch[:warm_up]:
                run(pod)
            before = threads_cpu_ns("self")
            for pod in batch[warm_up:]:
                run(pod)
            after = threads_cpu_ns("self")
    finally:
        node.close()
    return (after - before) / pods / 1e6


@dataclass(frozen=True)
class RealFloor:
    """The parent's CPU per ADD+DEL pair at ``few`` and ``many`` networks, one way of running them."""

    way: str
    cpu: SideBySide

    def row(self) -> str:
        cpu = self.cpu
        return (
            f"real delegates, {self.way}: {cpu.few} net {cpu.few_cpu_ms:.2f} ms, {cpu.many} nets "
            f"{cpu.many_cpu_ms:.2f} ms per ADD+DEL pair; per extra network {cpu.per_extra_network_ms:.2f} ms"
        )


def real_floors(*, few: int, many: int, pods: int) -> list[RealFloor]:
    """Both ways, each size measured twice in alternation (a slow spell then weighs on both)."""
    figures = {(way, networks): 0.0 for way in WAYS for networks in (few, many)}
    for _ in range(2):
        for way in WAYS:
            for networks in (few, many):
                figures[way, networks] += cpu_ms_per_pair(networks, pods=pods, way=way) / 2
    return [
        RealFloor(way, SideBySide(few, many, pods, figures[way, few], figures[way, many])) for way in WAYS
    ]


def parse_extra_network_floor(output: str, way: str = "event loop") -> float | None:
    """The per extra network floor of ``way`` in this module's output; None if it is not there."""
    for line in output.splitlines():
        if line.startswith(f"real delegates, {way}:"):
            return float(line.rsplit("per extra network", 1)[1].split()[0])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plugin_run", description=__doc__)
    parser.add_argument("--runs", type=int, default=300, help="VERSION runs")
    parser.add_argument("--pods", type=int, default=60, help="pods per size for the real delegates (0: skip)")
    parser.add_argument("--few", type=int, default=1, help="networks per pod, the smaller size")
    parser.add_argument("--many", type=int, default=4, help="networks per pod, the larger size")
    args = parser.parse_args(argv)
    if not os.access(PLUGIN, os.X_OK):
        parser.error(f"{PLUGIN} is missing (containernetworking-plugins)")
    if args.pods and args.many <= args.few:
        parser.error("--many must be more than --few")
    print(f"one plugin run costs its parent {cpu_ms_per_run(args.runs):.3f} ms CPU", flush=True)
    if args.pods:
        if os.geteuid() != 0:
            parser.error("the real delegates need root (network namespaces); --pods 0 skips them")
        for floor in real_floors(few=args.few, many=args.many, pods=args.pods):
            print(floor.row(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
