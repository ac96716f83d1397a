"""End-to-end fixtures: a real daemon process, the installed shim, real netns and plugins.

Every test gets its own run directory (socket, state, CNI dirs, IPAM data), its own bridge name
and its own network namespaces; teardown removes them all, so a failing test leaks nothing. The shim
is installed once for the session (``installed_shim``): the runtime executes it by its path.

A daemon's first start on a node creates its state database and migrates it in a child process
(about a second of the test's time on a loaded 2-core machine). Modules whose subject is not that
first start use ``premigrated_state``: the node starts with a copy of an empty database that one
daemon-like first start made for the whole session (``state_template``), so each test pays only the
daemon's own start. Every module here asks for it, as do tests/daemon's daemon processes and
tests/cri/test_kubelet_sequences.py: a daemon's first start on a new node, migration child and all, is
what tests/deploy's installs and tests/cri/test_containerd.py's node go through, and the child itself
is tests/store/test_migration_child.py's subject.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from app.sandbox.processes import (
    DaemonProcess,
    EmulatorProcess,
    EmulatorRequestError,
    ProcessError,
    daemon_command,
)
from app.shim.install import install_shim
from tests.conftest import CNI_PLUGIN_DIR

REFERENCE_PLUGINS = (
    "bridge",
    "macvlan",
    "host-local",
    "static",
    "tuning",
    "ptp",
    "portmap",
    "bandwidth",
    "loopback",
)
RECORDER = Path(__file__).parent.parent / "plugins" / "recorder.py"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def host_link_names() -> set[str]:
    with IPRoute() as ipr:
        return {str(link.get("ifname")) for link in ipr.get_links()}


def bridge_ports(bridge: str) -> set[str]:
    """Links enslaved to ``bridge`` in the host namespace (host ends of pod veths)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=bridge)
        if not found:
            return set()
        return {str(link.get("ifname")) for link in ipr.get_links() if link.get("master") == found[0]}


def netns_interfaces(netns_path: str) -> dict[str, dict[str, Any]]:
    """Interfaces inside a namespace, read with pyroute2: name -> {mac, kind, mtu, IPv4 addresses}."""
    with IPRoute(netns=netns_path, flags=0) as ipr:
        interfaces: dict[str, dict[str, Any]] = {}
        for link in ipr.get_links():
            interfaces[str(link.get("ifname"))] = {
                "index": link["index"],
                "mac": link.get("address"),
                "kind": link.get(("linkinfo", "kind")),
                "mtu": link.get("mtu"),
                "addresses": [],
            }
        by_index = {info["index"]: info for info in interfaces.values()}
        for addr in ipr.get_addr(family=socket.AF_INET):
            info = by_index.get(addr["index"])
            if info is not None:
                info["addresses"].append(f"{addr.get('address')}/{addr['prefixlen']}")
        return interfaces


@dataclass
class Netns:
    name: str

    @property
    def path(self) -> str:
        return f"/var/run/netns/{self.name}"

    def interfaces(self) -> dict[str, dict[str, Any]]:
        return netns_interfaces(self.path)

    def links(self) -> set[str]:
        return set(self.interfaces())

    def delete(self) -> None:
        _ip("netns", "del", self.name, check=False)


@dataclass
class ShimResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Cluster:
    """One test's node: directories, networks, the daemon process and the shim."""

    root: Path
    tag: str
    bridge: str
    shim: Path
    daemon_config: dict[str, Any]
    netnses: list[Netns] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)
    daemon_env: dict[str, str] = field(default_factory=dict)
    daemon_wrapper: list[str] = field(default_factory=list)
    """A command the daemon's command line is appended to (say, one that sets up a mount namespace and
    then executes it, keeping the pid)."""
    process: DaemonProcess = field(init=False)
    """The daemon's process plumbing (app.sandbox.processes)."""

    def __post_init__(self) -> None:
        self.process = DaemonProcess.for_config(
            self.root / "daemon-config.json", socket_dir=self.socket_dir, log=self.daemon_log
        )

    @property
    def daemon(self) -> subprocess.Popen[bytes] | None:
        return self.process.process

    @daemon.setter
    def daemon(self, value: None) -> None:
        """``cluster.daemon = None``: forget a daemon the test saw die."""
        self.process.process = value

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def conf_dir(self) -> Path:
        return self.root / "multus.d"

    @property
    def net_d(self) -> Path:
        return self.root / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.root / "ipam"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def spool_dir(self) -> Path:
        return self.root / "state" / "spool"

    @property
    def state_db(self) -> Path:
        return self.root / "state" / "state.db"

    @property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"

    def veth_uplink(self) -> str:
        """A veth pair of the test's, one end up on the host: the node's "physical" uplink a macvlan
        network takes as its master (removed with the cluster). Its name."""
        parent, peer = f"mpv{self.tag}a", f"mpv{self.tag}b"
        _ip("link", "add", parent, "type", "veth", "peer", "name", peer)
        _ip("link", "set", parent, "up")
        self.host_links.append(parent)
        return parent

    def new_netns(self) -> Netns:
        netns = Netns(f"mp{self.tag}{len(self.netnses)}")
        _ip("netns", "add", netns.name)
        self.netnses.append(netns)
        return netns

    def bridges(self) -> list[str]:
        return [self.bridge, *(link for link in self.host_links if link.startswith(self.bridge))]

    def leftover_host_veths(self) -> set[str]:
        """Host ends of pod veths still plugged into this test's bridges."""
        return {port for bridge in self.bridges() for port in bridge_ports(bridge)}

    def leases(self) -> list[Path]:
        """host-local lease files (everything but its lock and last-reserved bookkeeping)."""
        if not self.ipam_dir.exists():
            return []
        return sorted(
            p
            for p in self.ipam_dir.rglob("*")
            if p.is_file() and p.name != "lock" and not p.name.startswith("last_reserved_ip")
        )

    def bridge_conflist(
        self,
        name: str,
        subnet: str,
        *,
        default_route: bool = True,
        bridge: str | None = None,
        plugins_after: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        if bridge is not None:
            self.host_links.append(bridge)
        return {
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge or self.bridge,
                    "isGateway": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self.ipam_dir),
                        "ranges": [[{"subnet": subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}] if default_route else [],
                    },
                },
                *(plugins_after or []),
            ],
        }

    def write_network(self, directory: Path, filename: str, conf: dict[str, Any]) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / filename
        path.write_text(json.dumps(conf))
        return path

    def start_daemon(self, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        config_path = self.root / "daemon-config.json"
        config_path.write_text(json.dumps(self.daemon_config))
        self.process.command = [*self.daemon_wrapper, *daemon_command(config_path)]
        self.process.start(env={**self.daemon_env, **(env or {})})
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Poll ``/readyz`` until it answers 200, every 10 ms rather than app.sandbox's 50: a poll waits
        on the socket while the daemon imports its modules, readiness comes shortly after the first
        answer, and a test no longer sleeps up to 50 ms past each daemon's readiness."""
        try:
            self.process.wait_until(
                lambda: self._readyz() == 200, what="daemon ready", timeout=timeout, interval=0.01
            )
        except ProcessError as failed:
            raise AssertionError(str(failed)) from None

    def post(self, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """One POST on the daemon's socket, as a shim would make it: (status, body)."""
        return self.process.post(path, body)

    def _readyz(self) -> int | None:
        return self.process.readyz()

    def stop_daemon(self, sig: int = signal.SIGTERM) -> int:
        return self.process.stop(sig)

    def shim_conf(self, **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": "multus-cni-network",
            "type": "multus-shim",
            "daemonSocketDir": str(self.socket_dir),
            "spoolDir": str(self.spool_dir),
        }
        conf.update(extra)
        return conf

    def run_shim(
        self,
        command: str,
        *,
        container_id: str = "",
        netns: Netns | str | None = None,
        ifname: str = "eth0",
        conf: dict[str, Any] | bytes | None = None,
        cni_args: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> ShimResult:
        netns_path = netns.path if isinstance(netns, Netns) else (netns or "")
        stdin = conf if isinstance(conf, bytes) else json.dumps(conf or self.shim_conf()).encode()
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns_path,
            "CNI_IFNAME": ifname,
            "CNI_PATH": str(self.bin_dir),
            "CNI_ARGS": cni_args
            if cni_args is not None
            else f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{container_id[:8]};"
            f"K8S_POD_INFRA_CONTAINER_ID={container_id}",
        }
        full_env.update(env or {})
        proc = subprocess.run(
            [str(self.shim)], input=stdin, env=full_env, capture_output=True, timeout=timeout
        )
        return ShimResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    def cleanup(self) -> None:
        self.process.kill()
        for netns in self.netnses:
            netns.delete()
        for link in [self.bridge, *self.host_links]:
            _ip("link", "del", link, check=False)


def new_container_id() -> str:
    return secrets.token_hex(32)


def shim_add(cluster: Cluster, pod: dict[str, Any]) -> tuple[Netns, str, Any]:
    """The runtime's ADD of a new sandbox of ``pod`` (as the API returned it) through the shim, in a
    new netns, with the CNI_ARGS a kubelet passes: (the netns, the container ID, the shim's run)."""
    meta = pod["metadata"]
    netns = cluster.new_netns()
    container = new_container_id()
    result = cluster.run_shim(
        "ADD",
        container_id=container,
        netns=netns,
        cni_args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE={meta['namespace']};K8S_POD_NAME={meta['name']};"
        f"K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID={meta['uid']}",
    )
    return netns, container, result


def make_cluster(root: Path, *, shim: Path | None = None) -> Cluster:
    """A node under ``root``: plugins (and the recorder) in ``bin``, the shim (installed there, unless
    an installed ``shim`` is given), a daemon-config for directories under ``root``. Nothing runs yet."""
    tag = secrets.token_hex(3)
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    for plugin in REFERENCE_PLUGINS:
        (bin_dir / plugin).symlink_to(Path(CNI_PLUGIN_DIR) / plugin)
    recorder = bin_dir / "recorder"
    recorder.write_text(f"#!{sys.executable} -IS\n" + RECORDER.read_text())
    recorder.chmod(0o755)
    return Cluster(
        root=root,
        tag=tag,
        bridge=f"mpbr{tag}",
        shim=shim or install_shim(str(bin_dir)),
        daemon_config={
            "cniVersion": "1.0.0",
            "socketDir": str(root / "run"),
            "stateDir": str(root / "state"),
            "binDir": str(bin_dir),
            "confDir": str(root / "multus.d"),
            "cniConfigDir": str(root / "net.d"),
            "multusAutoconfigDir": str(root / "net.d"),
            "multusConfigFile": "auto",
            "logLevel": "debug",
            "logFile": str(root / "daemon.log"),
        },
    )


@pytest.fixture(scope="session")
def installed_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shim, installed once for every test's node: nothing a test does changes it, and a node's
    daemon never looks for it (the runtime, here ``Cluster.run_shim``, executes it by its path)."""
    return install_shim(str(tmp_path_factory.mktemp("shim-bin")))


@pytest.fixture
def cluster(tmp_path: Path, installed_shim: Path) -> Iterator[Cluster]:
    cluster = make_cluster(tmp_path, shim=installed_shim)
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session")
def state_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty state database at this release's schema, made as a daemon's first start makes one
    (``Database.open`` migrating in a child process), then closed: a file to copy, never opened again."""
    from app.store.database import Database  # SQLAlchemy only for the runs that need it

    path = tmp_path_factory.mktemp("state-template") / "state.db"
    Database.open(path, migrate_in_child=True).close()
    leftovers = sorted(p.name for p in path.parent.iterdir() if p.name not in {"state.db", "state.db.lock"})
    assert leftovers == [], f"the closed database left {leftovers}: a copy of state.db alone would be torn"
    return path


def seed_state(node: Cluster, template: Path) -> None:
    """Give ``node`` a copy of ``template`` as its state database, in a state directory made as the
    daemon makes it (mode 0700), before its daemon first starts."""
    node.state_db.parent.mkdir(mode=0o700, parents=True)
    shutil.copyfile(template, node.state_db)


@pytest.fixture
def premigrated_state(cluster: Cluster, state_template: Path) -> None:
    """This test's node starts with an empty, already migrated state database (see the module doc)."""
    seed_state(cluster, state_template)


@pytest.fixture
def started(cluster: Cluster) -> Callable[..., Cluster]:
    """Write a primary bridge network (plus extra defaultNetworks) and start the daemon."""

    def start(default_networks: int = 0, **config: Any) -> Cluster:
        cluster.write_network(
            cluster.net_d, "10-primary.conflist", cluster.bridge_conflist("primary", "10.240.0.0/24")
        )
        names = []
        for index in range(default_networks):
            name = f"extra{index}"
            cluster.write_network(
                cluster.conf_dir,
                f"{20 + index}-{name}.conflist",
                cluster.bridge_conflist(
                    name, f"10.24{1 + index}.0.0/24", default_route=False, bridge=f"{cluster.bridge}x{index}"
                ),
            )
            names.append(name)
        cluster.daemon_config["clusterNetwork"] = str(cluster.net_d / "10-primary.conflist")
        if names:
            cluster.daemon_config["defaultNetworks"] = names
        cluster.daemon_config.update(config)
        cluster.start_daemon()
        return cluster

    return start


class KubeApiProcess(EmulatorProcess):
    """The Kubernetes API emulator in its own process, driven over HTTP like a real API server."""

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> Any:
        try:
            return super().request(method, path, body, content_type=content_type, timeout=timeout)
        except EmulatorRequestError as error:
            raise AssertionError(str(error)) from error

    def create_namespace(self, name: str) -> None:
        self.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )

    def create_nad(self, namespace: str, name: str, config: dict[str, Any] | str, **annotations: str) -> None:
        self.request(
            "POST",
            f"/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions",
            {
                "apiVersion": "k8s.cni.cncf.io/v1",
                "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
                "spec": {"config": config if isinstance(config, str) else json.dumps(config)},
            },
        )

    def create_pod(
        self, namespace: str, name: str, *, node: str, annotations: dict[str, str] | None = None
    ) -> dict[str, Any]:
        pod = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]},
            },
        )
        return dict(pod)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}"))

    def delete_pod(self, namespace: str, name: str) -> None:
        self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")

    def requests(self, *, path: str = "", since: int = 0) -> list[dict[str, Any]]:
        import urllib.parse

        query = urllib.parse.urlencode({"since": since, "path": path})
        return list(self.request("GET", f"/_emulator/requests?{query}")["items"])

    def fault(self, **body: Any) -> Any:
        return self.request("POST", "/_emulator/faults", body)


@pytest.fixture
def kube(cluster: Cluster) -> Iterator[KubeApiProcess]:
    """An emulated API server, and the daemon config pointing at it (node ``node-a``)."""
    kubeconfig = cluster.root / "kubeconfig"
    api = KubeApiProcess(
        kubeconfig=kubeconfig, log=cluster.root / "kubeapi.log", arguments=("--bookmark-interval", "1")
    )
    api.start()
    cluster.daemon_config["kubeconfig"] = str(kubeconfig)
    cluster.daemon_env["MULTUS_NODE_NAME"] = "node-a"
    try:
        yield api
    finally:
        api.stop()
