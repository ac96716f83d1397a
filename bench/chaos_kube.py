"""``python -m bench.chaos_kube --minutes N --seed S``: a random kill -9 campaign in Kubernetes mode.

A real ``multus-daemon`` (Kubernetes mode, ``hotplugNetworks``, a short GC interval and pod-gone
grace) against the Kubernetes API emulator in its own process, the real shim (bundled runtime),
real reference plugins (the cluster network: ``bridge`` + ``host-local`` from a conf file; NADs:
``bridge`` + ``host-local`` and ``macvlan`` on a veth parent) and real network namespaces. Worker
threads play the runtime for a handful of pod names, at random: create a pod (1-3 NADs in its
``networks`` annotation) and ADD its sandbox; restart a sandbox (DEL, then a new container ID for the
same pod UID); re-create a pod under the same name with a new UID (the old sandbox's DEL sometimes
after the new one's ADD); delete a pod; edit a running pod's ``networks`` annotation (native
hot-plug). A failed ADD is followed by the runtime's DEL, and every DEL is retried until it
succeeds, as a runtime does; while the daemon is down the shim spools it. Another thread edits,
deletes and restores NADs and arms API faults (500s, slow answers, dropped watches, a 410 relist, a
paused server, failing and cut network-status writes). At a random moment the daemon alone, or its
whole process tree (daemon and delegates, frozen with SIGSTOP first so nothing new forks), is killed
with SIGKILL, sometimes before it is even ready, and started again after a random pause. Every few
kills a quiet check stops the runtime and the faults, gives every pod a sandbox, edits each one's
annotation, kills the daemon in the middle of those hot-plugs and starts it again, then waits
(bounded) until each running pod's network-status names what its netns holds and its netns what its
annotation names (a pod naming a NAD deleted meanwhile is only noted), and until every host-local
lease is a running sandbox's; the slowest such wait is reported.

At the end the faults are cleared, deleted NADs restored, and the campaign waits (bounded) until
every running pod's ``network-status`` names exactly the interfaces (names, MACs, addresses) its
current sandbox's netns has; then every sandbox is DELed, every pod deleted, and it waits (bounded)
until nothing is left: no sandbox in the checkpoint, no spool entry, no host-local lease under the
``dataDir``, no port on the bridges, no leftover link, no plugin process. It prints what it did
(kills, ADDs, DELs, hot-plugs, faults, status writes retried, from the daemon's metrics) and every
finding; the exit status is 1 when there is one. Run as root.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import random
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.sandbox.processes import DaemonProcess, EmulatorRequestError, ProcessError, free_port
from bench.kube import NETWORKS_ANNOTATION, NODE, ClusterSize, Emulator, KubeNode

STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"
NAMESPACE = "chaos"
NADS = 6
POD_NAMES = 10
WORKERS = 4
SHIM_TIMEOUT = 150.0
DEL_STUCK_SECONDS = 90.0
"""A DEL still failing after this long (the daemon up the whole time) is a finding."""
CHECK_EVERY_KILLS = 6
"""A quiet check (the runtime and faults stopped, the status checked) after every this many kills."""
SETTLE_SECONDS = 150.0
"""Bound on the end's waits: a status retry backs off up to 60 s."""


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---- the runtime's view --------------------------------------------------------------------------


@dataclass
class Sandbox:
    container_id: str
    netns: str
    uid: str
    networks: tuple[str, ...]
    """The pod's networks annotation (NAD names) when the ADD was sent."""
    edited: bool = False
    """The pod's annotation was edited (hot-plug) since this sandbox's ADD."""

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"


@dataclass
class PodSlot:
    name: str
    uid: str = ""
    networks: tuple[str, ...] = ()
    sandbox: Sandbox | None = None
    not_before: float = 0.0
    """The runtime's back-off after a failed ADD: no new sandbox before this (monotonic)."""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Findings:
    items: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, text: str) -> None:
        with self.lock:
            self.items.append(text)
        log(f"FINDING: {text}")


class Counts:
    def __init__(self) -> None:
        self._counter: Counter[str] = Counter()
        self._lock = threading.Lock()

    def bump(self, key: str, by: int = 1) -> None:
        with self._lock:
            self._counter[key] += by

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counter)


# ---- the campaign --------------------------------------------------------------------------------


class Campaign:
    def __init__(
        self, api: Emulator, seed: int, minutes: float, *, pods: int = POD_NAMES, workers: int = WORKERS
    ) -> None:
        self.workers = workers
        self.api = api
        self.rng = random.Random(seed)
        self.seed = seed
        self.minutes = minutes
        self.deadline = 0.0
        self.node = KubeNode(networks=1, api=api, subnet_offset=40)
        self.counts = Counts()
        self.findings = Findings()
        self.daemon: DaemonProcess | None = None
        self.daemon_lock = threading.Lock()
        self.daemon_up_since: float | None = None
        self.metrics_port = free_port()
        self.stop_chaos = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.chaos_lock = threading.Lock()
        self.slots = [PodSlot(f"pod-{seed}-{index}") for index in range(pods)]
        self.nad_configs: dict[str, dict[str, Any]] = {}
        self.nads_deleted: set[str] = set()
        self.nad_lock = threading.Lock()
        self.pending_dels: list[threading.Thread] = []
        self.netns_made: set[str] = set()
        self.status_retries_seen = Counter[str]()
        self.slowest_settle = 0.0
        """The longest wait, in seconds, of a check for every running pod's status and hot-plug."""
        self.tag = self.node.tag
        self.parent = f"cxp{self.tag}"

    # -- set-up

    @property
    def root(self) -> Path:
        return self.node.root

    @property
    def ipam_dir(self) -> Path:
        return self.root / "ipam"

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    def bridge_name(self, index: int) -> str:
        return f"cxb{self.tag}{index}"

    def prepare(self) -> None:
        self.node.prepare()
        self.api.request("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        subprocess.run(
            ["ip", "link", "add", self.parent, "type", "veth", "peer", "name", f"{self.parent}p"], check=True
        )
        subprocess.run(["ip", "link", "set", self.parent, "up"], check=True)
        subprocess.run(["ip", "link", "set", f"{self.parent}p", "up"], check=True)
        for index in range(NADS):
            name = f"nad{index}"
            self.nad_configs[name] = self.nad_config(index, variant=0)
            self.api.create_nad(NAMESPACE, name, self.nad_configs[name])
        config_path = self.root / "daemon-config.json"
        config = json.loads(config_path.read_text())
        config.update(
            hotplugNetworks=True,
            gcIntervalSeconds=2,
            gcPodGoneGraceSeconds=3,
            spoolDir=str(self.spool_dir),
            metricsPort=self.metrics_port,
            logLevel="error",
            parallelDelegates=self.seed % 2 == 1,
        )
        config_path.write_text(json.dumps(config))

    def nad_config(self, index: int, *, variant: int) -> dict[str, Any]:
        """NAD ``index``: even ones a bridge, odd ones a macvlan on the veth parent; ``variant``
        changes what an edit changes (the range, the MTU)."""
        name = f"nad{index}"
        ipam = {
            "type": "host-local",
            "dataDir": str(self.ipam_dir),
            "ranges": [[{"subnet": f"172.{24 + variant % 2}.{40 + index}.0/24"}]],
        }
        plugin: dict[str, Any]
        if index % 2 == 0:
            plugin = {"type": "bridge", "bridge": self.bridge_name(index), "ipam": ipam}
        else:
            plugin = {"type": "macvlan", "master": self.parent, "mode": "bridge", "ipam": ipam}
        if variant % 3 == 2:
            plugin["mtu"] = 1400
        return {"cniVersion": "1.0.0", "name": name, **plugin}

    # -- the API (our own requests meet the injected faults too: retried)

    def api_call(self, method: str, path: str, body: Any = None, *, merge: bool = False) -> Any:
        for _ in range(200):
            try:
                if merge:
                    return self.api.server.request(
                        method, path, body, content_type="application/merge-patch+json", timeout=30
                    )
                return self.api.request(method, path, body)
            except EmulatorRequestError as error:
                if error.status < 500 and error.status not in (409, 429):
                    raise
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{method} {path}: the emulator kept failing")

    def create_pod(self, slot: PodSlot, networks: tuple[str, ...]) -> None:
        annotations = {NETWORKS_ANNOTATION: ", ".join(networks)}
        for _ in range(200):
            try:
                pod = self.api.request(
                    "POST",
                    f"/api/v1/namespaces/{NAMESPACE}/pods",
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": slot.name, "namespace": NAMESPACE, "annotations": annotations},
                        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "pause"}]},
                    },
                )
                break
            except EmulatorRequestError as error:
                if error.status == 409:  # our earlier try took effect, its answer lost
                    pod = self.api_call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{slot.name}")
                    break
                if error.status < 500:
                    raise
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("pod creation kept failing")
        slot.uid = str(pod["metadata"]["uid"])
        slot.networks = networks

    def delete_pod(self, slot: PodSlot) -> None:
        with contextlib.suppress(EmulatorRequestError):
            self.api_call("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{slot.name}")
        slot.uid = ""

    def fault(self, **payload: Any) -> None:
        with contextlib.suppress(EmulatorRequestError, OSError):
            self.api.request("POST", "/_emulator/faults", payload)

    # -- the daemon

    def launch_daemon(self) -> DaemonProcess:
        with self.daemon_lock:
            if self.daemon is not None and self.daemon.process is not None:
                raise RuntimeError("harness bug: a daemon is started while ours still runs")
            self.daemon = DaemonProcess.for_config(
                self.root / "daemon-config.json", socket_dir=self.root / "run", log=self.root / "daemon.out"
            )
            self.daemon.start(env={"MULTUS_NODE_NAME": NODE})
        self.counts.bump("daemon starts")
        return self.daemon

    def start_daemon(self) -> bool:
        """Start the daemon; True once ready (a finding if it is not within 90 s)."""
        daemon = self.launch_daemon()
        try:
            daemon.wait_ready(timeout=90)
        except ProcessError as error:
            self.findings.add(f"the daemon did not become ready: {str(error)[-3000:]}")
            return False
        if daemon.process is None or daemon.process.poll() is not None:
            # /readyz answered by another process on the socket: ours exited (code 3: lock held)
            self.findings.add(f"harness: our daemon exited, yet /readyz answered: {daemon.log_text()[-500:]}")
            return False
        self.daemon_up_since = time.monotonic()
        return True

    def scrape_metrics(self) -> None:
        """Fold this incarnation's counters of status retries into the totals (only if the metrics
        port is still our daemon's: while it is down, another process on the host may take it)."""
        if self.daemon is None or self.daemon.process is None:
            return
        owner = subprocess.run(
            ["ss", "-Hltnp", f"sport = :{self.metrics_port}"], capture_output=True, text=True, check=False
        ).stdout
        if f"pid={self.daemon.process.pid}," not in owner:
            return
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("multus_py_network_status_retries_total{"):
                labels, _, value = line.rpartition(" ")
                self.status_retries_seen[labels.split('"')[1]] += int(float(value))

    def hotplug_counts(self) -> Counter[str]:
        """Native hot-plug delegate runs by command and outcome, from the daemon's history."""
        database = self.root / "state" / "state.db"
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
            rows = db.execute(
                "SELECT command, outcome, count(*) FROM history WHERE \"trigger\" = 'hotplug' "
                "AND step = 'delegate' GROUP BY command, outcome"
            ).fetchall()
        return Counter({f"{command} {outcome}": count for command, outcome, count in rows})

    def kill_daemon(self, whole_tree: bool) -> None:
        with self.daemon_lock:
            daemon = self.daemon
            if daemon is None or daemon.process is None:
                return
            self.scrape_metrics()
            pid = daemon.process.pid
            if whole_tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                tree = descendants(pid)
                for child in tree:  # frozen first: nothing forks between the list and the kill
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGSTOP)
                tree += [grandchild for child in tree for grandchild in descendants(child)]
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                for child in tree:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                self.counts.bump("kill -9 daemon + delegates")
                self.counts.bump("delegate processes killed with it", len(tree))
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.counts.bump("kill -9 daemon alone")
            daemon.process.wait()
            self.daemon = None
            self.daemon_up_since = None

    def daemon_running(self) -> bool:
        return self.daemon_up_since is not None

    # -- the shim

    def shim(self, command: str, sandbox: Sandbox, pod_name: str) -> tuple[int, str]:
        assert self.node.shim is not None
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": sandbox.container_id,
            "CNI_NETNS": sandbox.netns_path,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.node.bin_dir),
            "CNI_ARGS": (
                f"IgnoreUnknown=1;K8S_POD_NAMESPACE={NAMESPACE};K8S_POD_NAME={pod_name};"
                f"K8S_POD_INFRA_CONTAINER_ID={sandbox.container_id};K8S_POD_UID={sandbox.uid}"
            ),
        }
        conf = {
            "cniVersion": "1.0.0",
            "name": "multus-cni-network",
            "type": "multus-shim",
            "daemonSocketDir": str(self.root / "run"),
            "spoolDir": str(self.spool_dir),
        }
        try:
            proc = subprocess.run(
                [str(self.node.shim)],
                input=json.dumps(conf).encode(),
                env=env,
                capture_output=True,
                timeout=SHIM_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            self.findings.add(f"shim {command} of {sandbox.container_id[:12]} ran past {SHIM_TIMEOUT} s")
            return -1, "timeout"
        if proc.returncode == 0:
            return 0, ""
        try:
            error = json.loads(proc.stdout)
            return int(error.get("code", -1)), f"{error.get('msg')}: {error.get('details', '')}"[:300]
        except (ValueError, AttributeError):
            return -1, proc.stdout.decode(errors="replace")[:300]

    def add_sandbox(self, slot: PodSlot) -> None:
        """A new sandbox for ``slot``'s pod: netns, ADD; on failure the runtime's DEL."""
        sandbox = Sandbox(
            secrets.token_hex(32), f"cx{self.tag}{secrets.token_hex(4)}", slot.uid, slot.networks
        )
        subprocess.run(["ip", "netns", "add", sandbox.netns], check=True)
        self.netns_made.add(sandbox.netns)
        slot.sandbox = sandbox
        code, message = self.shim("ADD", sandbox, slot.name)
        if code == 0:
            self.counts.bump("ADDs succeeded")
            return
        self.counts.bump("ADDs failed")
        self.counts.bump(f"ADD failed with code {code}")
        if code not in (11, 7) and "NoNetworkFound" not in message and "not found" not in message:
            self.counts.bump(f"ADD failure: {message[:120]}")
        slot.sandbox = None
        self.del_sandbox(sandbox, slot.name)
        slot.not_before = time.monotonic() + self.rng.uniform(0.5, 3.0)

    def del_sandbox(self, sandbox: Sandbox, pod_name: str) -> None:
        """The runtime's DEL: retried until it succeeds; then the netns is removed."""
        failing_since: float | None = None
        tries = 0
        last = ""
        reported = False
        while True:
            down = not self.daemon_running()
            code, message = self.shim("DEL", sandbox, pod_name)
            tries += 1
            if code == 0:
                self.counts.bump("DELs succeeded")
                if down:
                    self.counts.bump("DELs answered while the daemon was down (spooled)")
                break
            self.counts.bump("DEL attempts failed")
            last = f"code {code}: {message}"
            if self.daemon_running() and self.daemon_up_since is not None:
                start = max(failing_since or time.monotonic(), self.daemon_up_since)
                failing_since = start
                if not reported and time.monotonic() - start > DEL_STUCK_SECONDS:
                    reported = True
                    self.findings.add(
                        f"DEL of {sandbox.container_id[:12]} ({pod_name}) still failing after "
                        f"{DEL_STUCK_SECONDS:.0f} s with the daemon up, {tries} tries: {last}"
                    )
            else:
                failing_since = None
            if tries > 2000:
                self.findings.add(f"DEL of {sandbox.container_id[:12]} given up after {tries} tries: {last}")
                break
            time.sleep(0.2 + self.rng.random() * 0.3)
        subprocess.run(["ip", "netns", "del", sandbox.netns], check=False, capture_output=True)
        self.netns_made.discard(sandbox.netns)

    # -- random actions

    def random_networks(self, rng: random.Random) -> tuple[str, ...]:
        return tuple(rng.sample([f"nad{index}" for index in range(NADS)], rng.randint(1, 3)))

    def worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        while not self.stop_chaos.is_set():
            self.running.wait()
            slot = rng.choice(self.slots)
            if not slot.lock.acquire(blocking=False):
                time.sleep(0.01)
                continue
            try:
                self.act(slot, rng)
            except Exception as error:  # a harness failure is reported, not silently lost
                self.findings.add(f"harness error on {slot.name}: {error!r}")
            finally:
                slot.lock.release()
            time.sleep(rng.random() * 0.3)

    def act(self, slot: PodSlot, rng: random.Random) -> None:
        if not slot.uid:
            self.create_pod(slot, self.random_networks(rng))
            self.counts.bump("pods created")
            self.add_sandbox(slot)
            return
        if slot.sandbox is None:
            if time.monotonic() >= slot.not_before:
                self.add_sandbox(slot)
            return
        roll = rng.random()
        if roll < 0.35:
            self.hotplug(slot, rng)
        elif roll < 0.55:
            old = slot.sandbox
            slot.sandbox = None
            self.counts.bump("sandboxes restarted (same pod UID)")
            if rng.random() < 0.3:  # a new sandbox of the pod before the old one's DEL
                self.counts.bump("old sandbox of the same pod UID DELed after the new one's ADD")
                self.add_sandbox(slot)
                self.del_sandbox(old, slot.name)
            else:
                self.del_sandbox(old, slot.name)
                self.add_sandbox(slot)
        elif roll < 0.8:
            old = slot.sandbox
            slot.sandbox = None
            self.counts.bump("pods re-created under the same name")
            if rng.random() < 0.35:  # the new sandbox's ADD before the old one's DEL
                self.counts.bump("old sandbox DELed after the new one's ADD")
                self.delete_pod(slot)
                self.create_pod(slot, self.random_networks(rng))
                self.add_sandbox(slot)
                self.del_sandbox(old, slot.name)
            else:
                self.del_sandbox(old, slot.name)
                self.delete_pod(slot)
                self.create_pod(slot, self.random_networks(rng))
                self.add_sandbox(slot)
        else:
            old = slot.sandbox
            slot.sandbox = None
            forget = rng.random()
            if forget < 0.08:  # the runtime lost track of it: no DEL ever; GC's to collect
                self.counts.bump("sandboxes never DELed (netns removed, pod deleted: GC's)")
                subprocess.run(["ip", "netns", "del", old.netns], check=False, capture_output=True)
                self.netns_made.discard(old.netns)
            elif forget < 0.16:  # the netns removed before the DEL
                self.counts.bump("DELs sent after the netns was removed")
                subprocess.run(["ip", "netns", "del", old.netns], check=False, capture_output=True)
                self.del_sandbox(old, slot.name)
            else:
                self.del_sandbox(old, slot.name)
            self.delete_pod(slot)
            self.counts.bump("pods deleted")

    def hotplug(self, slot: PodSlot, rng: random.Random) -> None:
        assert slot.sandbox is not None
        networks = list(slot.networks)
        unused = [f"nad{index}" for index in range(NADS) if f"nad{index}" not in networks]
        if len(networks) > 1 and (rng.random() < 0.5 or not unused):
            networks.remove(rng.choice(networks))
        elif unused:
            networks.append(rng.choice(unused))
        self.api_call(
            "PATCH",
            f"/api/v1/namespaces/{NAMESPACE}/pods/{slot.name}",
            {"metadata": {"annotations": {NETWORKS_ANNOTATION: ", ".join(networks)}}},
            merge=True,
        )
        slot.networks = tuple(networks)
        slot.sandbox.edited = True
        self.counts.bump("hot-plug annotation edits")

    def chaos(self) -> None:
        rng = random.Random(self.seed * 7919)
        while not self.stop_chaos.wait(0.5 + rng.random() * 2.0):
            self.running.wait()
            with self.chaos_lock:
                self.one_fault(rng)

    def one_fault(self, rng: random.Random) -> None:
        roll = rng.random()
        if roll < 0.25:
            self.nad_action(rng)
            return
        kind = rng.choice(
            ["500", "latency", "drop-watches", "410", "pause", "status-fail", "status-cut", "get-fail"]
        )
        self.counts.bump(f"fault: {kind}")
        if kind == "500":
            self.fault(action="fail", count=rng.randint(1, 6), status=rng.choice([500, 503]))
        elif kind == "get-fail":
            self.fault(action="fail", count=rng.randint(1, 4), status=500, method="GET", path="/pods/")
        elif kind == "latency":
            self.fault(action="latency", seconds=rng.uniform(0.2, 2.0), method="GET")
            time.sleep(rng.uniform(0.5, 3.0))
            self.fault(action="latency", seconds=0)
        elif kind == "drop-watches":
            self.fault(action="drop-watches")
        elif kind == "410":
            self.fault(action="compact")
            self.fault(action="drop-watches")
        elif kind == "pause":
            self.fault(action="pause")
            time.sleep(rng.uniform(0.2, 1.5))
            self.fault(action="resume")
        elif kind == "status-fail":
            self.fault(
                action="fail",
                count=rng.randint(5, 40),
                status=rng.choice([500, 503]),
                method="PATCH|PUT",
                path="/status$",
            )
        elif kind == "status-cut":
            self.fault(action="cut", count=rng.randint(1, 3), method="PATCH|PUT", path="/status$")

    def nad_action(self, rng: random.Random) -> None:
        index = rng.randrange(NADS)
        name = f"nad{index}"
        path = f"/apis/k8s.cni.cncf.io/v1/namespaces/{NAMESPACE}/network-attachment-definitions"
        with self.nad_lock:
            if self.nads_deleted and rng.random() < 0.5:
                name = rng.choice(sorted(self.nads_deleted))
                self.api_call(
                    "POST",
                    path,
                    {
                        "apiVersion": "k8s.cni.cncf.io/v1",
                        "kind": "NetworkAttachmentDefinition",
                        "metadata": {"name": name, "namespace": NAMESPACE},
                        "spec": {"config": json.dumps(self.nad_configs[name])},
                    },
                )
                self.nads_deleted.discard(name)
                self.counts.bump("NADs restored")
            elif name in self.nads_deleted:
                return
            elif rng.random() < 0.15:
                with contextlib.suppress(EmulatorRequestError):
                    self.api_call("DELETE", f"{path}/{name}")
                self.nads_deleted.add(name)
                self.counts.bump("NADs deleted")
            else:
                self.nad_configs[name] = self.nad_config(index, variant=rng.randrange(6))
                self.api_call(
                    "PATCH",
                    f"{path}/{name}",
                    {"spec": {"config": json.dumps(self.nad_configs[name])}},
                    merge=True,
                )
                self.counts.bump("NADs edited")

    def killer(self) -> None:
        rng = random.Random(self.seed * 104729)
        kills = 0
        while time.monotonic() < self.deadline:
            early = rng.random() < 0.15
            if self.daemon_running():  # a quiet check started it
                early = False
                time.sleep(rng.uniform(2.0, 15.0))
            elif early:  # killed during start-up: recovery, spool replay, the first sync
                self.launch_daemon()
                time.sleep(rng.uniform(0.0, 1.5))
            else:
                if not self.start_daemon():
                    self.kill_daemon(whole_tree=False)
                    continue
                time.sleep(rng.uniform(2.0, 15.0))
            whole_tree = rng.random() < 0.5
            self.kill_daemon(whole_tree=whole_tree)
            counts = self.counts.snapshot()
            log(
                f"killed {'the whole tree' if whole_tree else 'the daemon'}"
                f"{' during start-up' if early else ''}; so far {counts['ADDs succeeded']} ADDs ok, "
                f"{counts['ADDs failed']} failed, {counts['DELs succeeded']} DELs, "
                f"{counts['hot-plug annotation edits']} hot-plug edits"
            )
            time.sleep(rng.uniform(0.0, 3.0))
            kills += 1
            if kills % CHECK_EVERY_KILLS == 0 and time.monotonic() < self.deadline:
                self.quiet_check()
        self.stop_chaos.set()

    def quiet_check(self) -> None:
        """Stop the runtime and the faults (no action half-done), start the daemon, interrupt a
        round of hot-plugs with a kill (``interrupted_hotplugs``), and check every running pod's
        network-status against its netns and its hot-plug against its annotation; then go on."""
        self.running.clear()
        held = [self.chaos_lock, *(slot.lock for slot in self.slots)]
        for lock in held:
            lock.acquire()
        try:
            self.fault(action="clear")
            if not self.daemon_running():
                self.kill_daemon(whole_tree=False)
                if not self.start_daemon():
                    return
            if not self.interrupted_hotplugs():
                return
            log("quiet check: waiting for each running pod's network-status to match its netns")
            self.settle_status()
            self.check_leases()
            self.counts.bump("quiet checks")
        finally:
            for lock in held:
                lock.release()
            self.running.set()

    def interrupted_hotplugs(self) -> bool:
        """Every pod gets a running sandbox (a pod naming a deleted NAD may not), each has its
        annotation edited, and the daemon is killed (alone or with its tree) in the middle of those
        hot-plugs and started again: the check that follows sees them converge after a restart (a
        kill during the runtime's actions leaves few pods running, and fewer edited ones). False
        when the daemon did not come back (a finding)."""
        rng = random.Random(self.rng.random())
        for slot in self.slots:
            if not slot.uid:
                self.create_pod(slot, self.random_networks(self.rng))
            if slot.sandbox is None:
                self.add_sandbox(slot)
        for slot in self.slots:
            if slot.sandbox is not None:
                self.hotplug(slot, rng)
        time.sleep(rng.uniform(0.0, 1.0))
        self.kill_daemon(whole_tree=rng.random() < 0.5)
        self.counts.bump("quiet checks' kills in the middle of hot-plugs")
        return self.start_daemon()

    # -- the end

    def run(self) -> int:
        started = time.monotonic()
        self.prepare()
        self.deadline = time.monotonic() + self.minutes * 60
        log(
            f"seed {self.seed}: node {self.root}, {len(self.slots)} pod names, {NADS} NADs, "
            f"{self.workers} workers, parallelDelegates {self.seed % 2 == 1}"
        )
        workers = [
            threading.Thread(target=self.worker, args=(index,), daemon=True) for index in range(self.workers)
        ]
        chaos = threading.Thread(target=self.chaos, daemon=True)
        killer = threading.Thread(target=self.killer, daemon=True)
        for thread in (*workers, chaos, killer):
            thread.start()
        killer.join()
        chaos.join()
        for thread in workers:
            thread.join(timeout=600)
            if thread.is_alive():
                self.findings.add("a worker did not finish within 600 s (a DEL that never terminates?)")
        self.fault(action="clear")
        if self.daemon is None or not self.daemon_running():
            self.kill_daemon(whole_tree=False)
            if not self.start_daemon():
                self.findings.add("the daemon did not come back for the end")
                return self.report(started)
        self.restore_nads()
        self.start_every_pod()
        log("chaos over: waiting for each running pod's network-status to match its netns")
        self.settle_status()
        log("DEL of every sandbox, then waiting for nothing to be left")
        self.teardown_everything()
        self.scrape_metrics()
        return self.report(started)

    def restore_nads(self) -> None:
        with self.nad_lock:
            for name in sorted(self.nads_deleted):
                self.api.create_nad(NAMESPACE, name, self.nad_configs[name])
            self.nads_deleted.clear()

    def start_every_pod(self) -> None:
        """Every pod without a running sandbox gets one (an ADD the runtime retries a few times)."""
        for slot in self.slots:
            if not slot.uid:
                self.create_pod(slot, self.random_networks(self.rng))
            for _ in range(5):
                if slot.sandbox is None:
                    self.add_sandbox(slot)

    def netns_interfaces(self, sandbox: Sandbox) -> dict[str, tuple[str, frozenset[str]]]:
        """ifname -> (mac, addresses without prefix) of the sandbox's netns, ``lo`` left out."""
        proc = subprocess.run(
            ["ip", "-n", sandbox.netns, "-j", "addr", "show"], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            return {}
        found = {}
        for link in json.loads(proc.stdout or "[]"):
            if link["ifname"] == "lo":
                continue
            addresses = frozenset(
                info["local"] for info in link.get("addr_info", []) if info.get("scope") == "global"
            )
            found[link["ifname"]] = (link.get("address", ""), addresses)
        return found

    def status_interfaces(self, slot: PodSlot) -> dict[str, tuple[str, frozenset[str]]] | None:
        pod = self.api_call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{slot.name}")
        value = (pod["metadata"].get("annotations") or {}).get(STATUS_ANNOTATION)
        if value is None:
            return None
        return {
            entry.get("interface", ""): (entry.get("mac", ""), frozenset(entry.get("ips", [])))
            for entry in json.loads(value)
        }

    def status_mismatch(self, slot: PodSlot) -> str:
        assert slot.sandbox is not None
        have = self.netns_interfaces(slot.sandbox)
        said = self.status_interfaces(slot)
        if said is None:
            return f"no network-status; netns has {sorted(have)}"
        if said != have:
            return f"network-status {sorted(said.items())} but netns {sorted(have.items())}"
        return ""

    def settle_status(self) -> None:
        """Wait (bounded) until every running pod's network-status names what its netns holds and,
        for a pod whose annotation was edited, its hot-plug has converged: eth0 and one interface
        per network the annotation names. A pod naming a NAD deleted meanwhile (a quiet check does
        not restore them) cannot converge: only noted. Both are waited for together (a hot-plug
        converging rewrites the status); the slowest wait is reported (a quiet check's starts once
        the daemon it started is ready)."""
        running = [slot for slot in self.slots if slot.sandbox is not None]
        started = time.monotonic()
        deadline = time.monotonic() + SETTLE_SECONDS
        waiting = list(running)
        while waiting and time.monotonic() < deadline:
            waiting = [slot for slot in waiting if self.status_mismatch(slot) or self.hotplug_lagging(slot)]
            if waiting:
                time.sleep(0.5)
        if running:
            took = time.monotonic() - started
            self.slowest_settle = max(self.slowest_settle, took)
        self.counts.bump("running pods' network-status checked against their netns", len(running))
        for slot in waiting:
            assert slot.sandbox is not None
            if mismatch := self.status_mismatch(slot):
                self.findings.add(
                    f"{slot.name} (sandbox {slot.sandbox.container_id[:12]}, uid {slot.uid[:8]}): after "
                    f"{SETTLE_SECONDS:.0f} s, {mismatch}"
                )
            if self.hotplug_lagging(slot):
                self.findings.add(
                    f"{slot.name} (sandbox {slot.sandbox.container_id[:12]}): hot-plug not converged after "
                    f"{SETTLE_SECONDS:.0f} s: annotation {slot.networks}, netns "
                    f"{sorted(self.netns_interfaces(slot.sandbox))}"
                )
        for slot in running:
            assert slot.sandbox is not None
            have = self.netns_interfaces(slot.sandbox)
            if not slot.sandbox.edited and len(have) != 1 + len(slot.networks):
                self.findings.add(
                    f"{slot.name}: sandbox {slot.sandbox.container_id[:12]} (ADD answered success, "
                    f"annotation never edited, {slot.networks}) has interfaces {sorted(have)}"
                )
            elif len(have) != 1 + len(slot.networks) and self.nads_deleted & set(slot.networks):
                self.counts.bump("hot-plugged pods naming a deleted NAD, not converged (see log)")
                log(f"note: {slot.name} annotation {slot.networks}, netns {sorted(have)}")

    def hotplug_lagging(self, slot: PodSlot) -> bool:
        """The pod's annotation was edited, names no deleted NAD, and its netns does not hold eth0
        and one interface per network it names."""
        assert slot.sandbox is not None
        if not slot.sandbox.edited or self.nads_deleted & set(slot.networks):
            return False
        return len(self.netns_interfaces(slot.sandbox)) != 1 + len(slot.networks)

    def stray_leases(self) -> list[str]:
        """host-local leases whose container is none of the running sandboxes."""
        running = {slot.sandbox.container_id for slot in self.slots if slot.sandbox is not None}
        stray = []
        for path in sorted(self.ipam_dir.rglob("*")) if self.ipam_dir.exists() else []:
            if path.is_file() and path.name[0].isdigit():
                with contextlib.suppress(OSError):
                    holder = path.read_text().split()[0]
                    if holder not in running:
                        stray.append(f"{path.relative_to(self.ipam_dir)} ({holder[:12]})")
        return stray

    def check_leases(self) -> None:
        """With the runtime stopped, every lease belongs to a running sandbox (bounded wait: GC)."""
        deadline = time.monotonic() + 60
        while (stray := self.stray_leases()) and time.monotonic() < deadline:
            time.sleep(1.0)
        for item in stray:
            self.findings.add(f"host-local lease of no running sandbox after 60 s quiet: {item}")

    def teardown_everything(self) -> None:
        for slot in self.slots:
            if slot.sandbox is not None:
                sandbox, slot.sandbox = slot.sandbox, None
                self.del_sandbox(sandbox, slot.name)
            if slot.uid:
                self.delete_pod(slot)
        self.wait_for_nothing_left()

    def leftovers(self) -> list[str]:
        found = []
        for path in sorted(self.ipam_dir.rglob("*")) if self.ipam_dir.exists() else []:
            if path.is_file() and path.name[0].isdigit():
                found.append(f"host-local lease {path.relative_to(self.ipam_dir)}: {path.read_text()[:80]!r}")
        for path in sorted(self.spool_dir.glob("*")) if self.spool_dir.exists() else []:
            found.append(f"spool entry {path.name}")
        database = self.root / "state" / "state.db"
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
            for container_id, state in db.execute("SELECT container_id, state FROM sandboxes"):
                found.append(f"checkpoint sandbox {container_id[:12]} ({state})")
        bridges = [self.node.bridge(0)] + [self.bridge_name(index) for index in range(0, NADS, 2)]
        for bridge in bridges:
            proc = subprocess.run(
                ["ip", "-j", "link", "show", "master", bridge], capture_output=True, text=True, check=False
            )
            if proc.returncode == 0:
                for link in json.loads(proc.stdout or "[]"):
                    found.append(f"port {link['ifname']} on bridge {bridge}")
        macvlans = subprocess.run(
            ["ip", "-j", "link", "show", "type", "macvlan"], capture_output=True, text=True, check=True
        )
        for link in json.loads(macvlans.stdout or "[]"):
            if link.get("link") == self.parent:
                found.append(f"host macvlan {link['ifname']} on the parent {self.parent}")
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        found += [
            f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith(f"cx{self.tag}")
        ]
        for process in plugin_processes(self.node.bin_dir):
            found.append(f"plugin process {process}")
        return found

    def wait_for_nothing_left(self) -> None:
        deadline = time.monotonic() + SETTLE_SECONDS
        left = self.leftovers()
        while left and time.monotonic() < deadline:
            time.sleep(1.0)
            left = self.leftovers()
        for item in left:
            self.findings.add(f"left after every DEL succeeded and {SETTLE_SECONDS:.0f} s: {item}")

    def report(self, started: float) -> int:
        minutes = (time.monotonic() - started) / 60
        log(f"seed {self.seed}: {minutes:.1f} minutes")
        for key, value in sorted(self.counts.snapshot().items()):
            if value:
                log(f"  {key}: {value}")
        for key, value in sorted(self.status_retries_seen.items()):
            log(f"  network-status background retries {key}: {value}")
        for key, value in sorted(self.hotplug_counts().items()):
            log(f"  native hot-plug delegate runs {key}: {value}")
        log(f"  slowest settle of status and hot-plug: {self.slowest_settle:.1f} s")
        log(f"  findings: {len(self.findings.items)}")
        for item in self.findings.items:
            log(f"    - {item}")
        return 1 if self.findings.items else 0

    def close(self) -> None:
        self.stop_chaos.set()
        if self.daemon is not None:
            self.daemon.terminate(timeout=20)
        for name in list(self.netns_made):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        for index in range(0, NADS, 2):
            subprocess.run(["ip", "link", "del", self.bridge_name(index)], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", self.parent], check=False, capture_output=True)
        keep = os.environ.get("CHAOS_KEEP_ROOT")
        if keep:
            subprocess.run(["cp", "-a", str(self.root), keep], check=False)
        self.node.process = None
        self.node.close()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from ``/proc/*/task/*/children``)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError, ValueError):
                for child in (task / "children").read_text().split():
                    found.append(int(child))
                    pending.append(int(child))
    return found


def plugin_processes(bin_dir: Path) -> list[str]:
    """Processes running a plugin from ``bin_dir`` (its symlinks lead to /usr/lib/cni)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            environ = (proc / "environ").read_bytes()
            if b"MULTUS_PY_DELEGATE=" in environ and str(bin_dir).encode() in environ:
                found.append(f"{proc.name} {(proc / 'cmdline').read_bytes()[:80]!r}")
    return found


def run_seed(seed: int, minutes: float, *, pods: int, workers: int) -> int:
    with Emulator(ClusterSize(pods=10, on_node=5, nads=2)) as api:
        campaign = Campaign(api, seed, minutes, pods=pods, workers=workers)
        try:
            return campaign.run()
        finally:
            campaign.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos_kube", description=__doc__)
    parser.add_argument(
        "--minutes", type=float, default=5.0, help="chaos time (the end's checks come on top)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pods", type=int, default=POD_NAMES, help="pod names the runtime plays with")
    parser.add_argument("--workers", type=int, default=WORKERS, help="concurrent runtime threads")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root")
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    return run_seed(args.seed, args.minutes, pods=args.pods, workers=args.workers)


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("interrupted: cleaned up", file=sys.stderr)
        raise SystemExit(130) from None
