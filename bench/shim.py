"""``python -m bench.shim``: the shim's start-up with its bundled runtime versus a launcher run by a Python
the node has (today's ``/usr/bin/python3``), and the bundle's size on disk.

Each variant is installed into its own bin dir and executed answering VERSION (start-up only: the
module and its C extensions are loaded, no daemon) and ADD against a stub daemon on a unix socket
(start-up plus one request). Under each variant, its floor: the same interpreter with the same flags
started alone and left the way the shim leaves (``FLOOR``). The variants are interleaved run by run,
so a machine that gets busier during the benchmark slows them all alike. Each run is a fork + exec
from a small ``python -IS`` parent, timed from fork to reaped exit. Medians, p10 and p90 in
milliseconds; below the runs, each shim's median CPU over its floor's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from app.shim import bundle
from app.shim.install import install_bundled_shim, install_shim, runtime_of

SYSTEM_PYTHON = "/usr/bin/python3"

SPAWNER = """
import json, os, sys, time
commands, runs, stdin_path = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
env = dict(item.split("=", 1) for item in sys.argv[4:])
null = os.open("/dev/null", os.O_RDWR)
for _ in range(runs):
    for index, command in enumerate(commands):
        stdin = os.open(stdin_path, os.O_RDONLY)
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.dup2(stdin, 0); os.dup2(null, 1); os.dup2(null, 2)
            os.execve(command[0], command, env)
        _, status, usage = os.wait4(pid, 0)
        elapsed = (time.perf_counter() - started) * 1000
        os.close(stdin)
        print(index, elapsed, (usage.ru_utime + usage.ru_stime) * 1000, os.waitstatus_to_exitcode(status))
"""


class StubDaemon:
    """Answers every POST /cni with one fixed ADD result (a thread on a unix socket)."""

    REPLY = json.dumps({"Result": {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24"}]}}).encode()

    def __init__(self, directory: Path) -> None:
        self.path = directory / "multus.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(64)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.REPLY)}\r\nConnection: close\r\n\r\n".encode()
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                length = int(data.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
                while len(data.partition(b"\r\n\r\n")[2]) < length:
                    data += conn.recv(65536)
                conn.sendall(head + self.REPLY)

    def close(self) -> None:
        self.listener.close()


FLOOR = "import posix; posix._exit(0)"
"""The floor: the same interpreter, flags and exit as the shim's (``posix._exit``, no finalization),
running nothing; a shim's figure minus its floor's is the shim's own start-up and run."""


def shebang(launcher: Path) -> list[str]:
    """The interpreter and flags of a launcher's ``#!`` line."""
    return launcher.read_text().splitlines()[0].removeprefix("#!").split()


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def tree_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def time_variants(
    commands: list[list[str]], *, runs: int, stdin: Path, env: dict[str, str]
) -> tuple[list[list[float]], list[list[float]]]:
    """Wall times and CPU times (user + system, ms) of each command (an argv), interleaved run by run;
    a failed run is an error."""
    pairs = [f"{key}={value}" for key, value in env.items()]
    spawner = [sys.executable, "-IS", "-c", SPAWNER, json.dumps(commands), str(runs), str(stdin), *pairs]
    out = subprocess.run(spawner, capture_output=True, text=True, check=True).stdout
    walls: list[list[float]] = [[] for _ in commands]
    cpus: list[list[float]] = [[] for _ in commands]
    for line in out.splitlines():
        index, elapsed, cpu, status = line.split()
        if status != "0":
            raise SystemExit(f"{commands[int(index)]} exited {status}")
        walls[int(index)].append(float(elapsed))
        cpus[int(index)].append(float(cpu))
    return walls, cpus


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shim", description=__doc__)
    parser.add_argument("--runs", type=int, default=300, help="runs per variant and command")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-shim-", dir="/tmp"))
    try:
        variants: dict[str, list[str]] = {}
        floors: dict[str, str] = {}
        sizes: dict[str, int] = {}
        sources = {"bundle (this Python)": os.path.realpath(sys.executable)}
        if os.access(SYSTEM_PYTHON, os.X_OK):
            sources[f"bundle ({SYSTEM_PYTHON})"] = os.path.realpath(SYSTEM_PYTHON)
        for index, (label, python) in enumerate(sources.items()):
            built = work / f"built-{index}"
            bundle.build_bundle(built, interpreter=python)
            bin_dir = work / f"bin-{index}"
            bin_dir.mkdir()
            launcher = install_bundled_shim(str(bin_dir), source=built)
            variants[f"{label}: {Path(python).name}"] = [str(launcher)]
            floors[f"{label}: {Path(python).name}"] = f"  floor: the {label}'s python alone"
            variants[floors[f"{label}: {Path(python).name}"]] = [*shebang(launcher), "-c", FLOOR]
            sizes[label] = tree_size(bin_dir / ".multus-shim.d" / str(runtime_of(launcher)))
        if os.access(SYSTEM_PYTHON, os.X_OK):
            bin_dir = work / "bin-today"
            bin_dir.mkdir()
            launcher = install_shim(str(bin_dir), interpreter=SYSTEM_PYTHON)
            variants[f"launcher + {SYSTEM_PYTHON}"] = [str(launcher)]
            floors[f"launcher + {SYSTEM_PYTHON}"] = f"  floor: {SYSTEM_PYTHON} alone"
            variants[f"  floor: {SYSTEM_PYTHON} alone"] = [*shebang(launcher), "-c", FLOOR]
        stub = StubDaemon(work)
        conf = work / "conf.json"
        conf.write_text(
            json.dumps(
                {"cniVersion": "1.0.0", "name": "bench", "type": "multus-shim", "daemonSocketDir": str(work)}
            )
        )
        base = {"PATH": "/usr/bin:/bin", "CNI_PATH": "/opt/cni/bin"}
        add = {
            **base,
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "bench",
            "CNI_NETNS": "/var/run/netns/bench",
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench",
        }
        print(f"shim start-up, {args.runs} runs per variant, interleaved, {os.cpu_count()} CPUs")
        print("ms: wall p50 (p10-p90), CPU (user + system) p50")
        labels = list(variants)
        for command, env in (("VERSION", {**base, "CNI_COMMAND": "VERSION"}), ("ADD", add)):
            walls, cpus = time_variants(list(variants.values()), runs=args.runs, stdin=conf, env=env)
            cpu50 = {}
            for label, values, cpu in zip(labels, walls, cpus, strict=True):
                p10, p50, p90 = (percentile(values, f) for f in (0.1, 0.5, 0.9))
                cpu50[label] = percentile(cpu, 0.5)
                print(f"  {command:7} {label:56} {p50:6.2f}  ({p10:.2f}-{p90:.2f})  CPU {cpu50[label]:.2f}")
            for label, floor in floors.items():
                print(f"  {command:7} {label:56} CPU over its floor: {cpu50[label] - cpu50[floor]:.2f}")
        stub.close()
        for label, size in sizes.items():
            print(f"  size of the installed runtime, {label}: {size / 2**20:.1f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
