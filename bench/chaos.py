"""A random kill -9 campaign in static mode: a real daemon, the real shim, the reference plugins.

``python -m bench.chaos --minutes N --seed S`` loops: start ``multus-daemon``; drive a random mix of
concurrent ADDs, DELs, CHECKs, GCs and STATUSes through the installed shim (each pod 1-4 networks
chosen from its own shim conf: bridge with host-local, macvlan on a veth parent, a fake SR-IOV VF
moved by the real host-device plugin, one network whose ``tuning`` fails after its bridge attached
so the ADD is rolled back, some pods with ``parallelDelegates``); at a random moment (0-300 ms into
the round, or now and then while the daemon is still starting: recovery, spool replay) SIGKILL the
daemon alone or its whole process tree (the plugins it runs too); keep the runtime going while it is
down (ADDs fail, DELs go through the shim's spool); start it again. It behaves as a runtime does:
a pod whose ADD did not succeed is DELed until a DEL succeeds, a failed DEL is retried until it
succeeds, and a netns is removed only after its DEL succeeded (now and then at once, so a spooled
DEL is replayed without its namespace; a pod that may hold a VF keeps it until the end, as a fake VF
is a veth, destroyed with its namespace where a real VF comes back to the host).

A DEL that still fails after ``--del-retries`` attempts made while the daemon was up and not killed
in between is a finding (invariant 5b: the runtime would retry it for ever). At the end every pod is
DELed, the daemon stopped, and the node must hold nothing: no checkpoint row, no host-local lease
under the networks' ``dataDir``, no port on a bridge, no link in the host or in a kept netns beyond
what the campaign made, every fake VF back in the host under its name and MAC, no spool entry, no
plugin process. What was done and what was found is printed; the exit status is 1 on any finding.
One kind of link left in a DELed pod's kept netns is no finding, only counted: a plugin's
temporary (``PLUGIN_TEMPORARY``), which a plugin killed between creating it and renaming it leaves
in the pod's namespace alone: it goes with the namespace, which the runtime removes after the DEL,
and no DEL could know it.

The fake VFs: veths registered under PCI addresses in a fake sysfs tree (``sysfsRoot``), as
``tests/core/vf_support.py`` builds them, each following its veth as real sysfs follows a VF
(listed only while the veth is in the host under its name); the network's plugin type is
``sriov``, a link to the reference host-device, its configuration naming the PCI address
(``deviceID``: what the daemon claims and gets back) and the veth (``device``: what host-device
moves).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.sandbox.processes import DaemonProcess, ProcessError
from app.shim.install import install_bundled_shim
from bench.node import CNI_PLUGIN_DIR, built_bundle

CNI_VERSION = "1.1.0"
DELEGATE_CNI_VERSION = "1.0.0"
SHIM_TIMEOUT_SECONDS = 240.0
LEASE_BOOKKEEPING = ("last_reserved_ip", "lock")
"""host-local's own files in a network's lease directory (``last_reserved_ip.0``, ``lock``)."""
PLUGIN_TEMPORARY = re.compile(r"veth[0-9a-f]{8}")
"""How the reference plugins name a link they create in the pod's namespace and then rename to
``CNI_IFNAME`` (macvlan, ipvlan: ``ip.RandomVethName``, ``veth`` and 4 random bytes in hex)."""


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, check=check)


def link_json(*show: str, netns: str | None = None) -> list[dict[str, Any]]:
    """``ip -j link show SHOW...`` (in ``netns``): the links, none when it fails."""
    where = ("-n", netns) if netns else ()
    shown = run("ip", "-j", *where, "link", "show", *show, check=False)
    return list(json.loads(shown.stdout or "[]"))


def link_names(netns: str | None = None) -> set[str]:
    return {link["ifname"] for link in link_json(netns=netns)}


@dataclass
class FakeVf:
    pci: str
    name: str
    mac: str


@dataclass
class Pod:
    index: int
    container_id: str
    netns: str
    conf: dict[str, Any]
    holds_vf: bool
    state: str = "new"
    """new, adding, added, del-pending, deleted."""
    result: bytes = b""
    del_failures_while_up: int = 0
    last_del_error: str = ""
    netns_kept: bool = True

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"


@dataclass
class Tally:
    kills_daemon: int = 0
    kills_tree: int = 0
    kills_starting: int = 0
    plugins_killed: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    del_retries: int = 0
    del_retries_after_restart: int = 0
    most_del_retries_while_up: int = 0
    findings: list[str] = field(default_factory=list)
    odd_errors: Counter[str] = field(default_factory=Counter)
    temporaries_left: int = 0
    """Plugin temporaries (``PLUGIN_TEMPORARY``) found in DELed pods' kept netns: no finding."""


class Campaign:
    """One node, one seed: its networks, its daemon, its pods, and what happened to them."""

    def __init__(
        self, *, seed: int, seconds: float, workers: int, del_retries: int, vfs: int, keep: bool
    ) -> None:
        self.vf_count = vfs
        self.rng = random.Random(seed)
        self.seed = seed
        self.seconds = seconds
        self.workers = workers
        self.del_retries = del_retries
        self.keep = keep
        self.tag = secrets.token_hex(2)
        self.root = Path(tempfile.mkdtemp(prefix=f"multus-chaos-{seed}-"))
        self.tally = Tally()
        self.pods: list[Pod] = []
        self.lock = threading.Lock()
        self.daemon: DaemonProcess | None = None
        self.daemon_up = threading.Event()
        self.epoch = 0
        """Counts daemon starts: a DEL failure is held against the daemon only if no kill came between."""
        self.vfs: list[FakeVf] = []
        self.host_links_made: list[str] = []
        self.bridges: list[str] = []
        self.networks: dict[str, dict[str, Any]] = {}

    # ---- the node ----------------------------------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def ipam_dir(self) -> Path:
        return self.root / "ipam"

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    def prepare(self) -> None:
        self.bin_dir.mkdir()
        for plugin in CNI_PLUGIN_DIR.iterdir():
            (self.bin_dir / plugin.name).symlink_to(plugin)
        (self.bin_dir / "sriov").symlink_to(CNI_PLUGIN_DIR / "host-device")
        self.shim_path = install_bundled_shim(str(self.bin_dir), source=built_bundle())
        self.spool_dir.mkdir(mode=0o700)
        parent = self._host_veth(f"chm{self.tag}")
        for index in range(self.vf_count):
            self.vfs.append(self._fake_vf(index))
        conf_dir = self.root / "net.d"
        conf_dir.mkdir()
        self.bridges = [f"chb{self.tag}a", f"chb{self.tag}b", f"chb{self.tag}f"]
        self.networks = {
            "bra": self._bridge("bra", self.bridges[0], 0, gateway=True),
            "brb": self._bridge("brb", self.bridges[1], 1),
            "mac": self._conflist("mac", {"type": "macvlan", "master": parent, "ipam": self._ipam("mac", 2)}),
            "fail": self._bridge("fail", self.bridges[2], 3)
            | {"plugins": [self._bridge("fail", self.bridges[2], 3)["plugins"][0], self._failing_tuning()]},
        }
        for vf in self.vfs:
            name = f"vf{vf.pci[-1]}"
            self.networks[name] = self._conflist(
                name, {"type": "sriov", "deviceID": vf.pci, "device": vf.name}
            )
        for name, conf in self.networks.items():
            (conf_dir / f"50-{name}.conflist").write_text(json.dumps(conf))
        config = {
            "cniVersion": CNI_VERSION,
            "socketDir": str(self.root / "run"),
            "stateDir": str(self.root / "state"),
            "binDir": str(self.bin_dir),
            "confDir": str(conf_dir),
            "clusterNetwork": "bra",
            "multusConfigFile": "none",
            "sysfsRoot": str(self.root / "sys"),
            "spoolDir": str(self.spool_dir),
            "logLevel": "error",
            "logFile": str(self.root / "daemon.log"),
        }
        (self.root / "daemon-config.json").write_text(json.dumps(config))

    def _host_veth(self, name: str) -> str:
        run("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
        self.host_links_made += [name, f"{name}p"]
        run("ip", "link", "set", name, "up")
        return name

    def _fake_vf(self, index: int) -> FakeVf:
        """A VF bound to its netdev driver (iavf), its netdev a veth (``tests/core/vf_support.py``)."""
        name = self._host_veth(f"chv{self.tag}{index}")
        pci = f"0000:c{self.tag[0]}:00.{index}"
        device = self.root / "sys" / "bus" / "pci" / "devices" / pci
        (device / "net").mkdir(parents=True)
        (device / "net" / name).symlink_to(Path("/sys/class/net") / name)  # listed while in the host
        (self.root / "sys" / "bus" / "pci" / "drivers" / "iavf").mkdir(parents=True, exist_ok=True)
        (device / "driver").symlink_to(Path("..", "..", "drivers", "iavf"))
        return FakeVf(pci, name, link_json("dev", name)[0]["address"])

    def _ipam(self, network: str, index: int, *, gateway: bool = False) -> dict[str, Any]:
        ipam: dict[str, Any] = {
            "type": "host-local",
            "dataDir": str(self.ipam_dir),
            "ranges": [[{"subnet": f"10.{180 + index}.0.0/16"}]],
        }
        if gateway:
            ipam["routes"] = [{"dst": "0.0.0.0/0"}]
        return ipam

    def _bridge(self, name: str, bridge: str, index: int, *, gateway: bool = False) -> dict[str, Any]:
        plugin = {"type": "bridge", "bridge": bridge, "isGateway": gateway, "ipam": self._ipam(name, index)}
        if gateway:
            plugin["ipam"] = self._ipam(name, index, gateway=True)
        return self._conflist(name, plugin)

    @staticmethod
    def _conflist(name: str, plugin: dict[str, Any]) -> dict[str, Any]:
        return {"cniVersion": DELEGATE_CNI_VERSION, "name": name, "plugins": [plugin]}

    @staticmethod
    def _failing_tuning() -> dict[str, Any]:
        """Fails every ADD after the bridge before it attached (no such sysctl): a real rollback."""
        return {"type": "tuning", "sysctl": {"net.ipv4.conf.IFNAME.no_such_knob": "1"}}

    # ---- the daemon --------------------------------------------------------------------------------

    def start_daemon(self) -> None:
        self.daemon = DaemonProcess.for_config(
            self.root / "daemon-config.json", socket_dir=self.root / "run", log=self.root / "daemon.out"
        )
        self.daemon.start()

    def wait_ready(self) -> None:
        assert self.daemon is not None
        self.daemon.wait_ready(timeout=120)
        with self.lock:
            self.epoch += 1
            self.daemon_up.set()

    def kill(self, *, tree: bool) -> None:
        """SIGKILL the daemon, or (``tree``) it and every process under it, stopped first so none forks."""
        assert self.daemon is not None
        assert self.daemon.process is not None
        with self.lock:
            self.daemon_up.clear()
        pid = self.daemon.process.pid
        if tree:
            victims = stopped_tree(pid)
            for victim in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            self.tally.kills_tree += 1
            self.tally.plugins_killed += len(victims) - 1
        else:
            os.kill(pid, signal.SIGKILL)
            self.tally.kills_daemon += 1
        self.daemon.process.wait()
        self.daemon = None

    # ---- the runtime -------------------------------------------------------------------------------

    def new_pod(self) -> Pod:
        chosen = self.rng.sample(["brb", "mac", "fail"], self.rng.randint(0, 3))
        if "fail" in chosen and self.rng.random() < 0.6:
            chosen.remove("fail")  # a rollback in about one pod in ten
        if self.vfs and self.rng.random() < 0.3:
            chosen.insert(self.rng.randint(0, len(chosen)), f"vf{self.rng.choice(self.vfs).pci[-1]}")
        conf = {
            "cniVersion": CNI_VERSION,
            "name": "multus-cni-network",
            "type": "multus-shim",
            "daemonSocketDir": str(self.root / "run"),
            "spoolDir": str(self.spool_dir),
            "clusterNetwork": "bra",
            "defaultNetworks": chosen,
            "parallelDelegates": self.rng.random() < 0.4,
        }
        with self.lock:
            index = len(self.pods)
            pod = Pod(
                index,
                secrets.token_hex(32),
                f"chp{self.tag}{index}",
                conf,
                holds_vf=any(name.startswith("vf") for name in chosen),
            )
            self.pods.append(pod)
        run("ip", "netns", "add", pod.netns)
        return pod

    def shim(self, command: str, pod: Pod | None, conf: dict[str, Any]) -> tuple[int, str]:
        """One call of the installed shim: (exit status, stdout)."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_PATH": str(self.bin_dir)}
        if pod is not None:
            env |= {
                "CNI_CONTAINERID": pod.container_id,
                "CNI_NETNS": pod.netns_path,
                "CNI_IFNAME": "eth0",
                "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=chaos;K8S_POD_NAME=pod{pod.index};"
                f"K8S_POD_INFRA_CONTAINER_ID={pod.container_id};K8S_POD_UID=uid-{pod.container_id[:12]}",
            }
        self.tally.calls[command] += 1
        proc = subprocess.run(
            [str(self.shim_path)],
            input=json.dumps(conf).encode(),
            env=env,
            capture_output=True,
            timeout=SHIM_TIMEOUT_SECONDS,
        )
        return proc.returncode, proc.stdout.decode(errors="replace")

    def outcome(self, command: str, status: int, stdout: str) -> None:
        if status == 0:
            self.tally.outcomes[f"{command} ok"] += 1
            return
        try:
            error = json.loads(stdout)
            code, message = error.get("code"), str(error.get("msg", ""))
        except (ValueError, AttributeError):
            code, message = "?", stdout[:200]
        self.tally.outcomes[f"{command} code {code}"] += 1
        if not self._expected(command, code, message):
            self.tally.odd_errors[f"{command} {code}: {message[:300]}"] += 1

    @staticmethod
    def _expected(command: str, code: object, message: str) -> bool:
        """Failures a runtime sees on a healthy node under this workload: the daemon gone or still
        starting, the failing network, a VF another pod holds, and the bridge plugin's CHECK of a
        bridge whose MAC moved with its ports (it records the bridge's MAC of the ADD's moment)."""
        return (
            code in (11, 50)
            or (command == "ADD" and code == 999 and "no_such_knob" in message)
            or (command == "ADD" and code == 7 and "in use by another sandbox" in message)
            or (command == "CHECK" and "Mac doesn't match" in message)
        )

    def add(self, pod: Pod) -> None:
        pod.state = "adding"
        status, stdout = self.shim("ADD", pod, pod.conf)
        self.outcome("ADD", status, stdout)
        if status == 0:
            pod.result, pod.state = stdout.encode(), "added"
        else:
            pod.state = "del-pending"

    def delete(self, pod: Pod) -> None:
        epoch_before, up_before = self.epoch, self.daemon_up.is_set()
        pod.state = "deleting"
        status, stdout = self.shim("DEL", pod, pod.conf)
        self.outcome("DEL", status, stdout)
        if status == 0:
            pod.state = "deleted"
            if not pod.holds_vf and self.rng.random() < 0.5:
                self._remove_netns(pod)
            return
        pod.state = "del-pending"
        pod.last_del_error = stdout[:400]
        self.tally.del_retries += 1
        if up_before and self.daemon_up.is_set() and self.epoch == epoch_before:
            pod.del_failures_while_up += 1
            self.tally.del_retries_after_restart += 1
            self.tally.most_del_retries_while_up = max(
                self.tally.most_del_retries_while_up, pod.del_failures_while_up
            )
            if pod.del_failures_while_up == self.del_retries:
                self.tally.findings.append(
                    f"seed {self.seed}: DEL of pod{pod.index} ({pod.container_id[:12]}) failed "
                    f"{self.del_retries} times with the daemon up: {pod.last_del_error}"
                )

    def _remove_netns(self, pod: Pod) -> None:
        pod.netns_kept = False
        run("ip", "netns", "del", pod.netns, check=False)

    def check(self, pod: Pod) -> None:
        status, stdout = self.shim("CHECK", pod, pod.conf | {"prevResult": json.loads(pod.result)})
        self.outcome("CHECK", status, stdout)

    def base_conf(self) -> dict[str, Any]:
        """The shim conf of a call for no pod (GC, STATUS)."""
        return {
            "cniVersion": CNI_VERSION,
            "name": "multus-cni-network",
            "type": "multus-shim",
            "daemonSocketDir": str(self.root / "run"),
            "spoolDir": str(self.spool_dir),
        }

    def gc(self) -> None:
        with self.lock:
            valid = [
                {"containerID": pod.container_id, "ifname": "eth0"}
                for pod in self.pods
                if pod.state in ("added", "adding", "checking")
                or (pod.state == "new" and self.rng.random() < 0.5)
            ]
        status, stdout = self.shim("GC", None, self.base_conf() | {"cni.dev/valid-attachments": valid})
        self.outcome("GC", status, stdout)

    def status(self) -> None:
        status, stdout = self.shim("STATUS", None, self.base_conf())
        self.outcome("STATUS", status, stdout)

    def next_action(self) -> tuple[str, Pod | None]:
        """What the runtime does next: pending DELs first, else a random call."""
        with self.lock:
            pending = [pod for pod in self.pods if pod.state == "del-pending"]
            added = [pod for pod in self.pods if pod.state == "added"]
            live = sum(pod.state in ("added", "adding", "del-pending", "deleting") for pod in self.pods)
            if pending:
                pod = self.rng.choice(pending)
                pod.state = "deleting"
                return "DEL", pod
            roll = self.rng.random()
            if added and (roll < 0.35 or live >= 10):
                pod = self.rng.choice(added)
                if self.rng.random() < 0.25:
                    pod.state = "checking"
                    return "CHECK", pod
                pod.state = "deleting"
                return "DEL", pod
            if roll < 0.9:
                return "ADD", None
            return ("GC" if roll < 0.95 else "STATUS"), None

    def step(self) -> None:
        action, pod = self.next_action()
        if action == "ADD":
            self.add(self.new_pod())
        elif action == "DEL" and pod is not None:
            self.delete(pod)
        elif action == "CHECK" and pod is not None:
            self.check(pod)
            pod.state = "added"
        elif action == "GC":
            self.gc()
        else:
            self.status()

    # ---- the loop ----------------------------------------------------------------------------------

    def workload(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # a bug of this script must not hang the campaign
                self.tally.findings.append(f"seed {self.seed}: the campaign itself failed: {exc!r}")
                stop.set()
            if not self.daemon_up.is_set():
                time.sleep(0.02)

    def campaign(self) -> None:
        deadline = time.monotonic() + self.seconds
        self.start_daemon()
        self.wait_ready()
        stop = threading.Event()
        with ThreadPoolExecutor(self.workers) as pool:
            futures: list[Future[None]] = [pool.submit(self.workload, stop) for _ in range(self.workers)]
            try:
                while time.monotonic() < deadline and not stop.is_set():
                    self.one_round()
            finally:
                stop.set()
                for future in futures:
                    future.result()
        self.finish()

    def one_round(self) -> None:
        """Let the workload run 0-300 ms (now and then kill during start-up), kill, let it run on
        against no daemon for up to 0.5 s, start the daemon again, and let pending DELs drain."""
        time.sleep(self.rng.uniform(0, 0.3))
        self.kill(tree=self.rng.random() < 0.5)
        time.sleep(self.rng.uniform(0, 0.5))
        self.start_daemon()
        if self.rng.random() < 0.15:
            time.sleep(self.rng.uniform(0, 1.5))
            assert self.daemon is not None
            if self.daemon.readyz() != 200:
                self.tally.kills_starting += 1
                self.kill(tree=self.rng.random() < 0.5)
                self.start_daemon()
        self.wait_ready()
        time.sleep(self.rng.uniform(0.3, 1.5))
        self.sweep_netns()

    def sweep_netns(self) -> None:
        """Remove the kept netns of DELed pods that hold nothing but ``lo`` and plugin temporaries now
        (the DEL, spooled or not, has run): what a kept netns still holds is reported at the end."""
        with self.lock:
            done = [pod for pod in self.pods if pod.state == "deleted" and pod.netns_kept]
        for pod in done:
            if not self.left_inside(pod):
                self._remove_netns(pod)

    def left_inside(self, pod: Pod) -> list[str]:
        """The links in ``pod``'s kept netns but ``lo`` and plugin temporaries (counted, if the
        netns holds nothing else: it is then removed, or kept with a finding)."""
        inside = link_names(pod.netns) - {"lo"}
        left = sorted(name for name in inside if not PLUGIN_TEMPORARY.fullmatch(name))
        if not left:
            self.tally.temporaries_left += len(inside)
        return left

    def finish(self) -> None:
        """DEL every pod until it succeeds (the runtime's retries), then stop the daemon."""
        for _ in range(self.del_retries * 4):
            waiting = [pod for pod in self.pods if pod.state != "deleted"]
            if not waiting:
                break
            for pod in waiting:
                self.delete(pod)
            time.sleep(0.5)
        for pod in self.pods:
            if pod.state != "deleted":
                self.tally.findings.append(
                    f"seed {self.seed}: the final DEL of pod{pod.index} ({pod.container_id[:12]}) "
                    f"never succeeded: {pod.last_del_error}"
                )
        assert self.daemon is not None
        with contextlib.suppress(ProcessError):  # wait for the spool to drain (replayed on GC passes)
            self.daemon.wait_until(lambda: not list(self.spool_dir.glob("del-*")), what="spool", timeout=60)
        self.daemon.terminate(timeout=30)
        self.daemon = None
        self.audit()

    # ---- what must be left: nothing -----------------------------------------------------------------

    def audit(self) -> None:
        found = self.tally.findings
        prefix = f"seed {self.seed}:"
        database = self.root / "state"
        for path in database.glob("*.db"):
            with contextlib.closing(sqlite3.connect(path)) as db:
                for table in ("sandboxes", "attachments"):
                    rows = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    if rows:
                        found.append(f"{prefix} {rows} row(s) left in the checkpoint's {table} ({path})")
        for lease in sorted(self.ipam_dir.glob("*/*")):
            if not lease.name.startswith(LEASE_BOOKKEEPING):
                found.append(f"{prefix} host-local lease left: {lease} ({lease.read_text().split()[:1]})")
        for bridge in self.bridges:
            ports = [link["ifname"] for link in link_json("master", bridge)] if bridge in link_names() else []
            if ports:
                found.append(f"{prefix} ports left on bridge {bridge}: {ports}")
        made = set(self.host_links_made) | set(self.bridges)
        extra = {name for name in link_names() if self.tag in name} - made
        if extra:
            found.append(f"{prefix} host links left: {sorted(extra)}")
        for vf in self.vfs:
            shown = link_json("dev", vf.name)
            if not shown:
                found.append(f"{prefix} fake VF {vf.pci} ({vf.name}) is not back in the host")
            elif shown[0]["address"] != vf.mac:
                found.append(f"{prefix} fake VF {vf.name} came back with MAC {shown[0]['address']}")
        for pod in self.pods:
            if pod.netns_kept:
                inside = self.left_inside(pod)
                if inside:
                    found.append(f"{prefix} links left in pod{pod.index}'s netns {pod.netns}: {inside}")
        spooled = sorted(path.name for path in self.spool_dir.iterdir())
        if spooled:
            found.append(f"{prefix} spool entries left: {spooled}")
        plugins = plugin_processes({pod.container_id for pod in self.pods})
        if plugins:
            found.append(f"{prefix} plugin processes left: {plugins}")

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.kill()
        for pod in self.pods:
            if pod.netns_kept:
                run("ip", "netns", "del", pod.netns, check=False)
        for name in [*self.host_links_made[::2], *self.bridges]:
            run("ip", "link", "del", name, check=False)
        if self.keep:
            print(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def report(self, minutes: float) -> str:
        tally = self.tally
        lines = [
            f"seed {self.seed}: {minutes:.1f} min, {len(self.pods)} pods, "
            f"kills: {tally.kills_daemon} daemon alone, {tally.kills_tree} whole tree "
            f"({tally.plugins_killed} plugin processes), {tally.kills_starting} of them while starting",
            f"  calls: {dict(sorted(tally.calls.items()))}",
            f"  outcomes: {dict(sorted(tally.outcomes.items()))}",
            f"  DEL retries: {tally.del_retries} in all, "
            f"{tally.del_retries_after_restart} with the daemon up "
            f"(most for one pod: {tally.most_del_retries_while_up})",
        ]
        if tally.temporaries_left:
            lines.append(f"  plugin temporaries in DELed pods' netns (no finding): {tally.temporaries_left}")
        lines += [f"  unexpected error x{count}: {text}" for text, count in tally.odd_errors.most_common(12)]
        lines += [f"  FINDING: {finding}" for finding in tally.findings] or ["  findings: none"]
        return "\n".join(lines)


def children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                found += [int(child) for child in (task / "children").read_text().split()]
    return found


def stopped_tree(root: int) -> list[int]:
    """``root`` and every process under it, each SIGSTOPped before its children are listed."""
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
            tree.append(pid)
            todo += children(pid)
    return tree


def plugin_processes(container_ids: set[str]) -> list[str]:
    """Processes carrying the daemon's delegate marker (``MULTUS_PY_DELEGATE=<containerID>/<ifname>``)
    of one of ``container_ids``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                for variable in (proc / "environ").read_bytes().split(b"\0"):
                    name, _, value = variable.decode(errors="replace").partition("=")
                    if name == "MULTUS_PY_DELEGATE" and value.partition("/")[0] in container_ids:
                        found.append(f"{proc.name} {os.readlink(proc / 'exe')} {value}")
    return found


@contextlib.contextmanager
def campaign(**options: Any) -> Iterator[Campaign]:
    node = Campaign(**options)
    try:
        node.prepare()
        yield node
    finally:
        node.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None, help="the first seed (random if not given)")
    parser.add_argument("--seeds", type=int, default=1, help="run this many seeds, the minutes split")
    parser.add_argument("--workers", type=int, default=4, help="concurrent runtime calls")
    parser.add_argument("--del-retries", type=int, default=5, help="failed DELs with the daemon up = finding")
    parser.add_argument("--vfs", type=int, default=3, help="fake SR-IOV VFs (0-8)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (daemon logs)")
    args = parser.parse_args(argv)
    first = args.seed if args.seed is not None else random.randrange(1 << 30)
    findings = 0
    for seed in range(first, first + args.seeds):
        started = time.monotonic()
        with campaign(
            seed=seed,
            seconds=60 * args.minutes / args.seeds,
            workers=args.workers,
            del_retries=args.del_retries,
            vfs=args.vfs,
            keep=args.keep,
        ) as node:
            node.campaign()
            print(node.report((time.monotonic() - started) / 60), flush=True)
            findings += len(node.tally.findings)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
