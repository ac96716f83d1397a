"""A benchmark node: run directory, networks, daemon process, pod namespaces, and the two ways
to attach a pod: through multus-py (the installed shim; by default with its own runtime, as
``multus-install`` sets a node up) or by calling the delegates directly.

The direct path is the floor: the same plugins, the same configurations, executed one after the
other exactly as a runtime calling them itself would (stdin injected the libcni way, prevResult
threaded), with no daemon, no checkpoint and no shim in between.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.cni.conf import plugin_stdin
from app.sandbox.processes import DaemonProcess
from app.shim import bundle
from app.shim.install import default_interpreter, install_bundled_shim, install_shim

CNI_PLUGIN_DIR = Path("/usr/lib/cni")
PLUGINS = ("bridge", "host-local", "macvlan", "static", "tuning", "loopback")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PYTHON = default_interpreter()
"""The interpreter the shim's runtime is built from (or, unbundled, the one its launcher names): the
Python floor starts it bare once per call."""
_BUILT_BUNDLES: dict[str, Path] = {}


def built_bundle(python: str = PYTHON) -> Path:
    """A shim runtime built from ``python``, once per process (as the image build does once)."""
    if python not in _BUILT_BUNDLES:
        destination = Path(tempfile.mkdtemp(prefix="multus-bench-bundle-"))
        atexit.register(shutil.rmtree, destination, ignore_errors=True)
        bundle.build_bundle(destination / "bundle", interpreter=python)
        _BUILT_BUNDLES[python] = destination / "bundle"
    return _BUILT_BUNDLES[python]


def threads_cpu_ns(pid: int | str) -> int:
    """CPU process ``pid`` (or ``"self"``) has used, in the scheduler's nanoseconds summed over its
    threads (``/proc/PID/task/*/schedstat``); 0 where the kernel keeps no such count."""
    total_ns = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total_ns += int((task / "schedstat").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return 0
    return total_ns


@dataclass
class Pod:
    container_id: str
    netns: str

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"


@dataclass
class BenchNode:
    networks: int
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="multus-bench-")))
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    process: DaemonProcess | None = None
    shim: Path | None = None
    confs: list[dict[str, Any]] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    bundled: bool = True
    """Install the shim with its own runtime, as a node does by default; else a launcher for ``PYTHON``."""
    subnet_offset: int = 0
    """Network N takes ``10.<200 + offset + N>.0.0/16``: nodes benchmarked side by side keep apart."""

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def socket_path(self) -> Path:
        return self.root / "run" / "multus.sock"

    def bridge(self, index: int) -> str:
        return f"mpb{self.tag}n{index}"

    def prepare(self, *, shim: bool = True) -> None:
        """The bin directory (and, with ``shim``, the shim installed in it), the networks' conf files
        and the daemon's config."""
        self.bin_dir.mkdir(parents=True)
        for plugin in PLUGINS:
            (self.bin_dir / plugin).symlink_to(CNI_PLUGIN_DIR / plugin)
        if shim and self.bundled:
            self.shim = install_bundled_shim(str(self.bin_dir), source=built_bundle())
        elif shim:
            self.shim = install_shim(str(self.bin_dir))
        conf_dir = self.root / "multus.d"
        conf_dir.mkdir()
        for index in range(self.networks):
            conf = self._network(index)
            self.confs.append(conf)
            (conf_dir / f"{10 + index}-net{index}.conflist").write_text(json.dumps(conf))
        config = {
            "cniVersion": "1.0.0",
            "socketDir": str(self.root / "run"),
            "stateDir": str(self.root / "state"),
            "binDir": str(self.bin_dir),
            "confDir": str(conf_dir),
            "clusterNetwork": "net0",
            "defaultNetworks": [f"net{index}" for index in range(1, self.networks)],
            "multusConfigFile": "none",
            "logLevel": "error",
            "logFile": str(self.root / "daemon.log"),
        }
        (self.root / "daemon-config.json").write_text(json.dumps(config))

    def _network(self, index: int) -> dict[str, Any]:
        ipam: dict[str, Any] = {
            "type": "host-local",
            "dataDir": str(self.root / "ipam"),
            "ranges": [[{"subnet": f"10.{200 + self.subnet_offset + index}.0.0/16"}]],
        }
        if index == 0:
            ipam["routes"] = [{"dst": "0.0.0.0/0"}]
        return {
            "cniVersion": "1.0.0",
            "name": f"net{index}",
            "plugins": [
                {"type": "bridge", "bridge": self.bridge(index), "isGateway": index == 0, "ipam": ipam}
            ],
        }

    # ---- the daemon -------------------------------------------------------------------------

    @property
    def daemon(self) -> subprocess.Popen[bytes] | None:
        return None if self.process is None else self.process.process

    def start_daemon(self, extra_env: dict[str, str] | None = None) -> None:
        """Start the daemon and wait for /readyz (``ProcessError`` with its output if it fails)."""
        self.process = DaemonProcess.for_config(
            self.root / "daemon-config.json", socket_dir=self.root / "run", log=self.root / "daemon.out"
        )
        self.process.start(env=extra_env)
        self.process.wait_ready(timeout=30)

    def stop_daemon(self) -> None:
        if self.process is not None:
            self.process.terminate(timeout=15)
            self.process = None

    def daemon_cpu_seconds(self) -> float:
        """CPU the daemon itself has used, its children excluded: the scheduler's own count in
        nanoseconds, summed over its threads (``/proc/PID/task/*/schedstat``), where the kernel keeps
        it; else utime + stime, which the kernel samples at each clock tick (10 ms here), too coarse
        for a few dozen calls of a few milliseconds. The daemon's threads live as long as it does, so
        none of the counted CPU leaves with an exited thread."""
        assert self.daemon is not None
        total_ns = threads_cpu_ns(self.daemon.pid)
        if total_ns:
            return total_ns / 1e9
        return sum(self.daemon_cpu_split())

    def daemon_cpu_split(self) -> tuple[float, float]:
        """(user, kernel) CPU seconds the daemon itself has used (utime, stime; children excluded)."""
        assert self.daemon is not None
        fields = Path(f"/proc/{self.daemon.pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS

    def daemon_rss_kib(self) -> tuple[int, int]:
        """(current RSS, peak RSS) of the daemon, in KiB."""
        assert self.daemon is not None
        fields = {}
        for line in Path(f"/proc/{self.daemon.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    # ---- pods ---------------------------------------------------------------------------------

    def make_pods(self, count: int) -> list[Pod]:
        pods = []
        for _ in range(count):
            pod = Pod(container_id=secrets.token_hex(32), netns=f"mpb{self.tag}{len(self.pods)}")
            subprocess.run(["ip", "netns", "add", pod.netns], check=True)
            self.pods.append(pod)
            pods.append(pod)
        return pods

    def _shim_env(self, command: str, pod: Pod) -> dict[str, str]:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": pod.container_id,
            "CNI_NETNS": pod.netns_path,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.bin_dir),
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={pod.netns};"
            f"K8S_POD_INFRA_CONTAINER_ID={pod.container_id}",
        }

    def shim_conf(self) -> bytes:
        return json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "multus-cni-network",
                "type": "multus-shim",
                "daemonSocketDir": str(self.root / "run"),
            }
        ).encode()

    def multus(self, command: str, pod: Pod) -> None:
        assert self.shim is not None
        proc = subprocess.run(
            [str(self.shim)], input=self.shim_conf(), env=self._shim_env(command, pod), capture_output=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"shim {command} failed: {proc.stdout.decode()} {proc.stderr.decode()}")

    def python_floor(self, command: str, pod: Pod, results: dict[str, Any]) -> None:
        """The Python floor: one bare ``python3 -I -S -c pass`` (what any Python shim costs to start),
        then the delegates called directly."""
        subprocess.run([PYTHON, "-I", "-S", "-c", "pass"], check=True)
        self.direct(command, pod, results)

    def plugin_env(self, command: str, pod: Pod, index: int) -> dict[str, str]:
        """The environment a delegate of network ``index`` gets for ``pod`` when called directly."""
        return self._shim_env(command, pod) | {"CNI_IFNAME": "eth0" if index == 0 else f"net{index}"}

    def direct(self, command: str, pod: Pod, results: dict[str, Any]) -> None:
        """Call every delegate of every network directly; ADD fills ``results`` for the DEL."""
        order = range(self.networks) if command == "ADD" else reversed(range(self.networks))
        for index in order:
            conf = self.confs[index]
            plugins = conf["plugins"] if command == "ADD" else list(reversed(conf["plugins"]))
            prev = results.get(conf["name"]) if command == "DEL" else None
            for plugin in plugins:
                stdin = plugin_stdin(
                    plugin, name=conf["name"], cni_version=conf["cniVersion"], prev_result=prev
                )
                env = self.plugin_env(command, pod, index)
                proc = subprocess.run(
                    [str(self.bin_dir / plugin["type"])], input=stdin, env=env, capture_output=True
                )
                if proc.returncode != 0:
                    raise RuntimeError(f"{plugin['type']} {command} failed: {proc.stdout.decode()}")
                if command == "ADD":
                    prev = json.loads(proc.stdout)
            if command == "ADD":
                results[conf["name"]] = prev

    # ---- teardown -----------------------------------------------------------------------------

    def close(self) -> None:
        self.stop_daemon()
        for pod in self.pods:
            subprocess.run(["ip", "netns", "del", pod.netns], check=False, capture_output=True)
        for index in range(self.networks):
            subprocess.run(["ip", "link", "del", self.bridge(index)], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class SideBySide:
    """The daemon's CPU per ADD+DEL pair on two nodes measured side by side (``few`` and ``many``
    networks per pod), and what each network beyond ``few`` costs."""

    few: int
    many: int
    pods: int
    few_cpu_ms: float
    many_cpu_ms: float

    @property
    def per_extra_network_ms(self) -> float:
        return (self.many_cpu_ms - self.few_cpu_ms) / (self.many - self.few)

    def row(self) -> str:
        return (
            f"daemon CPU per ADD+DEL pair side by side ({self.pods} pods each, in turn): "
            f"{self.few} net {self.few_cpu_ms:.2f} ms, {self.many} nets {self.many_cpu_ms:.2f} ms, "
            f"{self.per_extra_network_ms:.2f} ms per extra network"
        )


@dataclass
class WallTimes:
    """ADD and DEL wall times through the shim, in milliseconds, one per pod."""

    adds: list[float] = field(default_factory=list)
    dels: list[float] = field(default_factory=list)

    def add(self, add_ms: float, del_ms: float) -> None:
        self.adds.append(add_ms)
        self.dels.append(del_ms)


def add_and_delete(node: BenchNode, pod: Pod) -> tuple[float, float]:
    """ADD then DEL ``pod`` through ``node``'s shim; the wall time of each, in milliseconds."""
    started = time.perf_counter()
    node.multus("ADD", pod)
    added = time.perf_counter()
    node.multus("DEL", pod)
    return 1000 * (added - started), 1000 * (time.perf_counter() - added)


def cpu_ms_in_turn(
    nodes: Sequence[BenchNode],
    *,
    pods: int,
    warm_up: int,
    rotate: bool,
    walls: Sequence[WallTimes] | None = None,
) -> list[float]:
    """Each node's daemon CPU per ADD+DEL pair, in milliseconds, its daemon already started: one pod
    through ADD and DEL on each node in turn, ``warm_up`` rounds first (not counted), then ``pods``.
    With ``rotate``, each round starts one node further on, so no node always goes first. ``walls``
    (one per node) get the counted pods' ADD and DEL wall times."""
    batches = [node.make_pods(warm_up + pods) for node in nodes]
    cpu = [0.0] * len(nodes)
    for round_index in range(warm_up + pods):
        first = round_index % len(nodes) if rotate else 0
        for turn in range(len(nodes)):
            which = (first + turn) % len(nodes)
            node = nodes[which]
            pod = batches[which][round_index]
            before = node.daemon_cpu_seconds()
            times = add_and_delete(node, pod)
            if round_index >= warm_up:
                cpu[which] += node.daemon_cpu_seconds() - before
                if walls is not None:
                    walls[which].add(*times)
    return [1000 * seconds / pods for seconds in cpu]
