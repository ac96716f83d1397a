"""``python -m bench.plugin_run``: what running one plugin costs the process that runs it.

A daemon that executes its delegates pays, for each execution, at least what ``app.cni.child`` costs:
the spawn (three memory files for its stdio, ``posix_spawn``), noticing the exit, reading the output
and reaping the child, on the event loop the daemon runs (uvloop where installed). This measures that
alone, in a small process of its own: ``bridge`` answering VERSION, ``--runs`` times after a warm-up,
the process's CPU counted the way ``python -m bench`` counts the daemon's (the scheduler's
nanoseconds summed over its threads; the plugin's own CPU is not the
parent's). An ADD+DEL pair runs each delegate twice, so twice this figure is a floor under the
daemon's CPU per extra network that no recording, validation or bookkeeping can go below.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence

from app.cni import child
from app.daemon.main import event_loop_factory
from bench.node import CNI_PLUGIN_DIR, threads_cpu_ns

PLUGIN = CNI_PLUGIN_DIR / "bridge"
VERSION_ENV = {"CNI_COMMAND": "VERSION", "CNI_PATH": str(CNI_PLUGIN_DIR)}
VERSION_STDIN = b'{"cniVersion":"1.0.0"}'


async def run_plugins(count: int) -> None:
    for _ in range(count):
        finished = await child.spawn(str(PLUGIN), env=VERSION_ENV, stdin=VERSION_STDIN).communicate()
        if finished.returncode != 0:
            raise RuntimeError(f"{PLUGIN} VERSION failed: {finished.stderr.decode(errors='replace')}")


def cpu_ms_per_run(runs: int, *, warm_up: int = 20) -> float:
    """The parent's CPU per plugin run, in milliseconds."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(run_plugins(warm_up))
        before = threads_cpu_ns("self")
        if not before:
            raise RuntimeError("this kernel keeps no per-thread CPU count (/proc/self/task/*/schedstat)")
        runner.run(run_plugins(runs))
        # the last child is reaped by the loop's idle timer, ``REAP_IDLE`` after its exit: let it run
        runner.run(asyncio.sleep(child.REAP_IDLE * 2))
        after = threads_cpu_ns("self")
    return (after - before) / runs / 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plugin_run", description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args(argv)
    if not os.access(PLUGIN, os.X_OK):
        parser.error(f"{PLUGIN} is missing (containernetworking-plugins)")
    print(f"one plugin run costs its parent {cpu_ms_per_run(args.runs):.3f} ms CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
