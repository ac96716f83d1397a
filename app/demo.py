"""``python -m app.demo``: a pod gets eth0 + net1 + net2 from NADs through multus-py, then it is undone.

A node in miniature, all real but the API server: the Kubernetes API emulator (``app.sandbox``)
in its own process holds two NetworkAttachmentDefinitions (a bridge and a macvlan on a veth
parent) and a pod annotated ``k8s.v1.cni.cncf.io/networks: bridge-net, macvlan-net``; the daemon
runs from a daemon-config.json that points it at the emulator and generates the shim's
00-multus.conf; the shim is installed into a CNI bin dir; this script plays the runtime: it makes
the pod's network namespace and executes the shim with the generated conf for ADD, CHECK and DEL.

It prints the CNI result, the pod's interfaces as the kernel reports them, the pod's
network-status annotation as the API server holds it, what ``multusctl`` reports (attachments,
history) and the Prometheus histograms. With the pod running, it edits the pod's annotation to add
``bridge-net@net3`` and then removes it again: the daemon's hot-plug (``hotplugNetworks: true``)
makes net3 appear and disappear. ``--crash`` then kills the daemon with SIGKILL in the
middle of a second pod's ADD, restarts it, and shows with ``multusctl`` that recovery rolled the
half-done ADD back. Run as root; it leaves nothing behind (``--keep`` keeps the run directory).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from app.sandbox.processes import (
    DaemonProcess,
    EmulatorProcess,
    ProcessError,
    child_environment,
    free_port,
)
from app.shim.install import install_shim

CNI_PLUGIN_DIR = Path("/usr/lib/cni")
PLUGINS = ("bridge", "macvlan", "host-local", "static", "tuning", "loopback")
NODE = "demo-node"


def say(title: str, body: str = "") -> None:
    print(f"\n=== {title}")
    if body:
        print(body.rstrip())


class Emulator(EmulatorProcess):
    """The Kubernetes API emulator process, with the objects the demo creates in it."""

    def create_nad(self, name: str, config: dict[str, Any]) -> None:
        self.request(
            "POST",
            "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions",
            {
                "apiVersion": "k8s.cni.cncf.io/v1",
                "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"config": json.dumps(config)},
            },
        )

    def create_pod(self, name: str, networks: str) -> str:
        pod = self.request(
            "POST",
            "/api/v1/namespaces/default/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "annotations": {"k8s.v1.cni.cncf.io/networks": networks}},
                "spec": {
                    "nodeName": NODE,
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        )
        return str(pod["metadata"]["uid"])

    def annotate(self, name: str, networks: str) -> None:
        """Edit the running pod's ``k8s.v1.cni.cncf.io/networks`` annotation (a merge patch)."""
        self.request(
            "PATCH",
            f"/api/v1/namespaces/default/pods/{name}",
            {"metadata": {"annotations": {"k8s.v1.cni.cncf.io/networks": networks}}},
            content_type="application/merge-patch+json",
        )

    def network_status(self, name: str) -> str:
        pod = self.request("GET", f"/api/v1/namespaces/default/pods/{name}")
        return str(
            (pod["metadata"].get("annotations") or {}).get("k8s.v1.cni.cncf.io/network-status", "(none)")
        )


@contextmanager
def demo_node(root: Path, tag: str, emulator: Emulator) -> Iterator[dict[str, Any]]:
    """Directories, networks (a conf file and two NADs) and host links; removed on exit."""
    bridge, second, parent, peer = f"mdemo{tag}", f"mdemo{tag}n", f"mdv{tag}a", f"mdv{tag}b"
    subprocess.run(["ip", "link", "add", parent, "type", "veth", "peer", "name", peer], check=True)
    subprocess.run(["ip", "link", "set", parent, "up"], check=True)
    try:
        bin_dir, net_d = root / "bin", root / "net.d"
        bin_dir.mkdir()
        net_d.mkdir()
        for plugin in PLUGINS:
            (bin_dir / plugin).symlink_to(CNI_PLUGIN_DIR / plugin)
        ipam = {"type": "host-local", "dataDir": str(root / "ipam")}
        cluster_network = {
            "cniVersion": "1.0.0",
            "name": "demo-cluster",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "ipam": {
                        **ipam,
                        "ranges": [[{"subnet": "10.88.0.0/24"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}},
            ],
        }
        (net_d / "10-demo-cluster.conflist").write_text(json.dumps(cluster_network, indent=2))
        emulator.create_nad(
            "bridge-net",
            {
                "cniVersion": "1.0.0",
                "type": "bridge",
                "bridge": second,
                "ipam": {**ipam, "ranges": [[{"subnet": "10.89.0.0/24"}]]},
            },
        )
        emulator.create_nad(
            "macvlan-net",
            {
                "cniVersion": "1.0.0",
                "type": "macvlan",
                "master": parent,
                "mode": "bridge",
                "ipam": {**ipam, "ranges": [[{"subnet": "10.90.0.0/24"}]]},
            },
        )
        config = {
            "cniVersion": "1.0.0",
            "socketDir": str(root / "run"),
            "daemonSocketDir": str(root / "run"),
            "stateDir": str(root / "state"),
            "binDir": str(bin_dir),
            "cniConfigDir": str(net_d),
            "multusAutoconfigDir": str(net_d),
            "multusConfigFile": "auto",
            "kubeconfig": str(emulator.kubeconfig),
            "metricsPort": free_port(),
            "hotplugNetworks": True,
            "logLevel": "verbose",
            "logFile": str(root / "daemon.log"),
        }
        (root / "daemon-config.json").write_text(json.dumps(config, indent=2))
        yield {
            "bin_dir": bin_dir,
            "net_d": net_d,
            "config": root / "daemon-config.json",
            "root": root,
            **config,
        }
    finally:
        for link in (bridge, second, parent):
            subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)


def start_daemon(daemon: DaemonProcess, **env: str) -> None:
    """Start the daemon as this node and wait until it reports ready."""
    daemon.start(env={"MULTUS_NODE_NAME": NODE, **env})
    try:
        daemon.wait_ready(timeout=30)
    except ProcessError as failed:
        raise SystemExit(f"the daemon did not become ready; see {daemon.log}") from failed


def run_shim(
    shim: Path, command: str, conf: bytes, *, pod: str, uid: str, container: str, netns: str, bin_dir: Path
) -> subprocess.CompletedProcess[bytes]:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(bin_dir),
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};"
        f"K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID={uid}",
    }
    started = time.perf_counter()
    proc = subprocess.run([str(shim)], input=conf, env=env, capture_output=True)
    elapsed = (time.perf_counter() - started) * 1000
    print(
        f"$ CNI_COMMAND={command} multus-shim < 00-multus.conf  -> exit {proc.returncode} in {elapsed:.1f} ms"
    )
    return proc


def pod_interfaces(netns_path: str) -> str:
    from pyroute2 import IPRoute

    lines = []
    with IPRoute(netns=netns_path, flags=0) as ipr:
        addresses: dict[int, list[str]] = {}
        for addr in ipr.get_addr(family=socket.AF_INET):
            addresses.setdefault(addr["index"], []).append(f"{addr.get('address')}/{addr['prefixlen']}")
        for link in ipr.get_links():
            kind = link.get(("linkinfo", "kind")) or "-"
            ips = ", ".join(addresses.get(link["index"], [])) or "-"
            lines.append(f"  {link.get('ifname'):6} {kind:8} {link.get('address')}  {ips}")
    return "\n".join(lines)


def multusctl(config: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=child_environment(),
    )
    return (proc.stdout + proc.stderr).rstrip()


def histograms(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = (
        "multus_py_cni_operation_seconds_count",
        "multus_py_delegate_seconds_count",
        "multus_py_store_commit_seconds_count",
    )
    return "\n".join(f"  {line}" for line in text.splitlines() if line.startswith(wanted))


@contextmanager
def pod_netns(name: str) -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield f"/var/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def demonstrate_attach(node: dict[str, Any], emulator: Emulator, shim: Path, tag: str) -> None:
    conf = (node["net_d"] / "00-multus.conf").read_bytes()
    config: Path = node["config"]
    uid = emulator.create_pod("demo-pod", "bridge-net, macvlan-net")
    container = secrets.token_hex(32)
    say("pod default/demo-pod", "annotation  k8s.v1.cni.cncf.io/networks: bridge-net, macvlan-net")
    with pod_netns(f"multus-demo-{tag}") as netns:
        args = {
            "pod": "demo-pod",
            "uid": uid,
            "container": container,
            "netns": netns,
            "bin_dir": node["bin_dir"],
        }
        say("ADD")
        added = run_shim(shim, "ADD", conf, **args)
        if added.returncode != 0:
            raise SystemExit(f"ADD failed: {added.stdout.decode()}")
        say("CNI result printed by the shim (the cluster network's)", added.stdout.decode())
        say("the pod's interfaces (read with pyroute2 inside its netns)", pod_interfaces(netns))
        say(
            "network-status annotation on the pod, as the API server holds it",
            emulator.network_status("demo-pod"),
        )
        say("$ multusctl attachments", multusctl(config, "attachments"))
        demonstrate_hotplug(emulator, config, netns)
        say("CHECK")
        run_shim(shim, "CHECK", conf, **args)
        say("DEL")
        run_shim(shim, "DEL", conf, **args)
        say("the pod's interfaces after DEL", pod_interfaces(netns))
    leases = [p.name for p in (node["root"] / "ipam").rglob("*") if p.is_file() and p.name[0].isdigit()]
    say("host-local leases left", "  " + (", ".join(leases) or "none"))
    say(
        "$ multusctl history --pod default/demo-pod",
        multusctl(config, "history", "--pod", "default/demo-pod"),
    )
    say(f"Prometheus histograms on :{node['metricsPort']}/metrics (counts)", histograms(node["metricsPort"]))


def interface_names(netns_path: str) -> set[str]:
    from pyroute2 import IPRoute

    with IPRoute(netns=netns_path, flags=0) as ipr:
        return {str(link.get("ifname")) for link in ipr.get_links()}


def wait_for(condition: Any, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def demonstrate_hotplug(emulator: Emulator, config: Path, netns: str) -> None:
    """Hot-plug (``hotplugNetworks: true``): editing the running pod's annotation adds, then removes, net3."""
    networks = "bridge-net, macvlan-net, bridge-net@net3"
    say("hot-plug: the running pod's annotation is edited", f"  k8s.v1.cni.cncf.io/networks: {networks}")
    emulator.annotate("demo-pod", networks)
    if not wait_for(lambda: "net3" in interface_names(netns)):
        say("net3 did not appear", "  this daemon does not run hot-plug (hotplugNetworks is not wired)")
        emulator.annotate("demo-pod", "bridge-net, macvlan-net")
        return
    wait_for(lambda: "net3" in emulator.network_status("demo-pod"))
    say("the pod's interfaces: net3 appeared", pod_interfaces(netns))
    say("network-status now", emulator.network_status("demo-pod"))
    say("annotation edited back", "  k8s.v1.cni.cncf.io/networks: bridge-net, macvlan-net")
    emulator.annotate("demo-pod", "bridge-net, macvlan-net")
    wait_for(lambda: "net3" not in interface_names(netns))
    say("the pod's interfaces: net3 is gone", pod_interfaces(netns))
    say(
        "$ multusctl history --pod default/demo-pod --trigger hotplug",
        multusctl(config, "history", "--pod", "default/demo-pod", "--trigger", "hotplug"),
    )


def demonstrate_crash(
    node: dict[str, Any], emulator: Emulator, daemon: DaemonProcess, shim: Path, tag: str
) -> None:
    conf = (node["net_d"] / "00-multus.conf").read_bytes()
    config: Path = node["config"]
    uid = emulator.create_pod("crash-pod", "bridge-net, macvlan-net")
    container = secrets.token_hex(32)
    say("--crash: the daemon is restarted armed to SIGKILL itself after the 2nd delegate of an ADD ran")
    daemon.terminate()
    start_daemon(daemon, MULTUS_PY_CRASH_AT="add-after-exec:2")
    with pod_netns(f"multus-crash-{tag}") as netns:
        args = {
            "pod": "crash-pod",
            "uid": uid,
            "container": container,
            "netns": netns,
            "bin_dir": node["bin_dir"],
        }
        added = run_shim(shim, "ADD", conf, **args)
        say("the runtime's view of that ADD", added.stdout.decode())
        assert daemon.process is not None
        say("daemon", f"  exited with {daemon.process.wait(timeout=30)} (-9: SIGKILL)")
        say("the pod's interfaces right after the crash", pod_interfaces(netns))
        say(
            "$ multusctl show (daemon down: read from the state file)",
            multusctl(config, "show", container[:12]),
        )
        start_daemon(daemon)
        say("daemon restarted: recovery ran before it reported ready")
        say("the pod's interfaces after recovery", pod_interfaces(netns))
        say(
            "$ multusctl history --container ...", multusctl(config, "history", "--container", container[:12])
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--crash", action="store_true", help="also kill -9 the daemon mid-ADD and show recovery"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: the demo creates network namespaces, bridges and a veth pair")
    tag = secrets.token_hex(2)
    root = Path(tempfile.mkdtemp(prefix="multus-demo-"))
    say("run directory", str(root))
    try:
        with ExitStack() as stack:
            emulator = Emulator(kubeconfig=root / "kubeconfig", log=root / "kubeapi.log")
            stack.callback(emulator.stop)
            emulator.start()
            say("Kubernetes API emulator", f"  {emulator.url} (kubeconfig {emulator.kubeconfig})")
            node = stack.enter_context(demo_node(root, tag, emulator))
            shim = install_shim(str(node["bin_dir"]))
            say("shim installed", f"  {shim}\n  {shim.read_text().splitlines()[0]}")
            daemon = DaemonProcess.for_config(
                node["config"], socket_dir=Path(node["socketDir"]), log=root / "daemon.log"
            )
            stack.callback(daemon.terminate)
            start_daemon(daemon)
            say(
                "daemon ready (pod and NAD mirrors synced); generated 00-multus.conf",
                (node["net_d"] / "00-multus.conf").read_text(),
            )
            demonstrate_attach(node, emulator, shim, tag)
            if args.crash:
                demonstrate_crash(node, emulator, daemon, shim, tag)
    finally:
        if args.keep:
            say("kept", str(root))
        else:
            with suppress(OSError):
                shutil.rmtree(root)
    say("done: the demo cleaned up after itself")
    return 0


if __name__ == "__main__":
    sys.exit(main())
