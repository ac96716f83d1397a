"""Deployment fixtures: the manifests as data, and a node in a temporary root, set up as the DaemonSet would.

``Node`` is a temporary directory standing for a node's ``/``: its CNI bin and conf dirs, a primary
network conf (a real bridge with host-local, as a primary CNI would have written it), the node's
Python for the installer's check, and the directories the kubelet creates for the DaemonSet's
``DirectoryOrCreate`` hostPath volumes. ``Node.run_container`` runs a container's command from the
manifest with each of its mounts mapped into that root (the ConfigMap's files verbatim in their own
directory). ``Node.start_daemon`` runs the daemon container's command, but on daemon-config.json
with every path moved into the root: the daemon runs here without a mount namespace, and the
DaemonSet mounts each host directory at the same path in the daemon container, so moving the paths
is that mapping.
``Node.runtime_call`` does what a container runtime does: the first conf of the conf dir, its ``type``
executed from the bin dir, in a mount namespace where the root's bin dir is at ``/opt/cni/bin`` and
the host's Python and libc are hidden (``tests/hostless.py``), as on a node without Python.

The root lives under /tmp with a short name: the daemon's socket path must fit AF_UNIX's 108 bytes.
Teardown kills the daemon, deletes every netns and host link and removes the root.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from app.sandbox.processes import DaemonProcess, ProcessError, wait_until
from app.settings import Settings, from_mapping
from tests import hostless
from tests.conftest import child_environment
from tests.e2e.conftest import (  # noqa: F401 - the daemon and emulator process fixtures
    Netns,
    ShimResult,
    cluster,
    installed_shim,
    kube,
    premigrated_state,
    started,
    state_template,
)

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = REPO / "deployments"
MAIN_MANIFEST = DEPLOYMENTS / "multus-py.yml"
CLEANUP_MANIFEST = DEPLOYMENTS / "multus-py-cleanup.yml"
DOCKERFILE = DEPLOYMENTS / "Dockerfile"
HOST_ROOT_IN_CONTAINER = "/host"
"""Where the init containers see the node's root (``--host-root``)."""
CONSOLE_SCRIPT_MODULES = {
    "multus-install": "app.cli.install",
    "multus-daemon": "app.daemon.main",
    "multusctl": "app.cli.main",
}
"""How a test runs a console script named in a manifest without the scripts being installed."""
NODE_PYTHON = "python3.11"
"""The stand-in for the node's interpreter in a node root: the installer only checks it exists."""


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a manifest file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one document of ``kind`` (and ``name``)."""
    found = [
        doc for doc in documents if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(daemonset: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = daemonset["spec"]["template"]["spec"]
    return spec


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """A container or init container of a pod spec, by name."""
    for item in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        if item["name"] == name:
            return dict(item)
    raise AssertionError(f"no container {name!r}")


def daemon_config_text(documents: list[dict[str, Any]]) -> str:
    """daemon-config.json as the ConfigMap carries it."""
    text: str = find(documents, "ConfigMap", "multus-py-daemon-config")["data"]["daemon-config.json"]
    return text


def daemon_settings(documents: list[dict[str, Any]]) -> Settings:
    return from_mapping(json.loads(daemon_config_text(documents)))


def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(DOCKERFILE))


def image_env() -> dict[str, str]:
    """The ENV of the image's final stage."""
    return dict(dockerfile().envs)


def rooted(root: Path, path: str) -> str:
    """A node path inside the node root."""
    return str(root / path.lstrip("/"))


def rewrite_paths(config: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """daemon-config with every absolute path moved into ``root``; ``chrootDir`` (the node's ``/``
    mounted into the container) becomes this machine's ``/``, where the moved paths are real."""
    return {
        key: "/"
        if key == "chrootDir"
        else rooted(root, value)
        if isinstance(value, str) and value.startswith("/")
        else value
        for key, value in config.items()
    }


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: relative path -> a description of type, mode and content."""
    entries = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode & 0o7777
        if path.is_symlink():
            entries[str(path.relative_to(root))] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            entries[str(path.relative_to(root))] = f"dir {mode:o}"
        else:
            entries[str(path.relative_to(root))] = f"file {mode:o} {path.read_bytes()!r}"
    return entries


@dataclass
class Node:
    """A node's root in a temporary directory, and what runs against it."""

    root: Path
    tag: str
    documents: list[dict[str, Any]]
    work: Path
    """Outside the root: the ConfigMap's files, the daemon's moved config and its log."""
    daemon_config: dict[str, Any]
    """What the daemon runs on: the ConfigMap's config with its paths inside the root."""
    process: DaemonProcess | None = None
    """The daemon container's process (app.sandbox.processes), once started."""
    netnses: list[Netns] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def path(self, node_path: str) -> Path:
        return Path(rooted(self.root, node_path))

    @property
    def config_dir(self) -> Path:
        """The ConfigMap's files, verbatim (the ``daemon-config`` volume)."""
        return self.work / "configmap"

    @property
    def settings(self) -> Settings:
        """The daemon's settings as it sees them here (paths inside the root)."""
        return from_mapping(self.daemon_config)

    @property
    def bin_dir(self) -> Path:
        return self.path("/opt/cni/bin")

    @property
    def conf_dir(self) -> Path:
        return self.path("/etc/cni/net.d")

    @property
    def bridge(self) -> str:
        return f"mpd{self.tag}"

    # --- the manifest's containers -------------------------------------------------------------

    def mounts(self, spec: dict[str, Any], item: dict[str, Any]) -> dict[str, Path]:
        """mountPath -> where that volume is in this test (hostPath: inside the root)."""
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        mapped = {}
        for mount in item.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "hostPath" in volume:
                mapped[mount["mountPath"]] = self.path(volume["hostPath"]["path"])
            elif "configMap" in volume:
                mapped[mount["mountPath"]] = self.config_dir
            else:
                raise AssertionError(f"no mapping for volume {volume}")
        return mapped

    def translate(self, spec: dict[str, Any], item: dict[str, Any], argument: str) -> str:
        """An argument of a container's command, with a container path mapped to the test's path."""
        mounts = self.mounts(spec, item)
        for mount_path in sorted(mounts, key=len, reverse=True):
            if argument == mount_path or argument.startswith(mount_path.rstrip("/") + "/"):
                return str(mounts[mount_path]) + argument[len(mount_path.rstrip("/")) :]
        if argument == HOST_ROOT_IN_CONTAINER:
            return str(self.root)
        return argument

    def container_command(self, documents: list[dict[str, Any]], daemonset: str, name: str) -> list[str]:
        """The container's command as this test runs it: a console script run as its module."""
        spec = pod_spec(find(documents, "DaemonSet", daemonset))
        item = container(spec, name)
        program, *arguments = item["command"]
        translated = [self.translate(spec, item, argument) for argument in arguments]
        return [sys.executable, "-m", CONSOLE_SCRIPT_MODULES[program], *translated]

    def run_container(
        self, documents: list[dict[str, Any]], daemonset: str, name: str, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        command = [*self.container_command(documents, daemonset, name), *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=child_environment())

    def install(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """The DaemonSet's init step."""
        return self.run_container(self.documents, "multus-py", "install-shim", *extra)

    def uninstall(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """The clean-up DaemonSet's init step."""
        return self.run_container(load_documents(CLEANUP_MANIFEST), "multus-py-cleanup", "uninstall", *extra)

    def kubelet_creates_host_directories(self) -> list[Path]:
        """What the kubelet does for the DaemonSet's ``DirectoryOrCreate`` volumes; returns them."""
        created = []
        for volume in pod_spec(find(self.documents, "DaemonSet", "multus-py"))["volumes"]:
            host_path = volume.get("hostPath", {})
            if host_path.get("type") == "DirectoryOrCreate":
                directory = self.path(host_path["path"])
                directory.mkdir(parents=True, exist_ok=True)
                created.append(directory)
        return created

    # --- the daemon --------------------------------------------------------------------------------

    def start_daemon(self) -> None:
        """The daemon container's command, on the ConfigMap's config moved into the root."""
        command = self.container_command(self.documents, "multus-py", "multus-daemon")
        config_path = self.work / "daemon-config.json"
        config_path.write_text(json.dumps(self.daemon_config))
        verbatim = str(self.config_dir / "daemon-config.json")
        command = [str(config_path) if argument == verbatim else argument for argument in command]
        assert str(config_path) in command, command
        self.process = DaemonProcess(
            socket_dir=self.settings.socket_dir, log=self.work / "daemon.log", command=command
        )
        self.process.start(env={"CNI_PATH": image_env()["CNI_PATH"]})

    @property
    def daemon(self) -> subprocess.Popen[bytes] | None:
        return None if self.process is None else self.process.process

    def stop_daemon(self) -> int:
        assert self.process is not None
        code = self.process.stop(signal.SIGTERM)
        self.process = None
        return code

    def daemon_log(self) -> str:
        path = self.work / "daemon.log"
        return path.read_text() if path.exists() else ""

    def wait_for(self, condition: Any, what: str, timeout: float = 20.0) -> None:
        try:
            wait_until(condition, what=what, timeout=timeout, daemon=self.process)
        except ProcessError as failed:
            raise AssertionError(str(failed)) from None

    # --- networks and the runtime ------------------------------------------------------------------

    def network(self, name: str, subnet: str, bridge: str, *, default_route: bool) -> dict[str, Any]:
        self.links.append(bridge)
        return {
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": rooted(self.root, "/var/lib/cni/networks"),
                        "ranges": [[{"subnet": subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}] if default_route else [],
                    },
                }
            ],
        }

    def new_netns(self) -> Netns:
        netns = Netns(f"mpd{self.tag}{len(self.netnses)}")
        subprocess.run(["ip", "netns", "add", netns.name], check=True)
        self.netnses.append(netns)
        return netns

    def runtime_conf(self) -> Path:
        """The conf a runtime picks: the first ``.conf``/``.conflist`` of the conf dir by name."""
        names = sorted(p for p in self.conf_dir.iterdir() if p.suffix in (".conf", ".conflist"))
        assert names, f"no CNI configuration in {self.conf_dir}"
        return names[0]

    def runtime_call(self, command: str, netns: Netns, container_id: str) -> ShimResult:
        """What the runtime does for a sandbox: execute the conf's plugin from the bin dir."""
        conf_path = self.runtime_conf()
        conf = conf_path.read_bytes()
        plugin = self.bin_dir / json.loads(conf)["type"]
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns.path,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.bin_dir),
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{container_id[:8]};"
            f"K8S_POD_INFRA_CONTAINER_ID={container_id}",
        }
        # As on the node: its bin dir at /opt/cni/bin (where the installed runtime was patched to be),
        # and no Python or libc of the host's.
        done = hostless.run(
            [str(self.bin_dir / plugin.name)], env=env, stdin=conf, binds={"/opt/cni/bin": self.bin_dir}
        )
        return ShimResult(done.returncode, done.stdout.decode(), done.stderr.decode())

    def cleanup(self) -> None:
        if self.process is not None:
            self.process.kill()
        for netns in self.netnses:
            netns.delete()
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)


@pytest.fixture(scope="session")
def documents() -> list[dict[str, Any]]:
    """The main manifest's documents."""
    return load_documents(MAIN_MANIFEST)


@pytest.fixture
def node(documents: list[dict[str, Any]]) -> Iterator[Node]:
    """A node before multus-py: CNI dirs with a primary network and a foreign plugin, and its Python."""
    root = Path(tempfile.mkdtemp(prefix="mpd-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="mpd-work-", dir="/tmp"))
    config_text = daemon_config_text(documents)
    (work / "configmap").mkdir()
    (work / "configmap" / "daemon-config.json").write_text(config_text)
    the_node = Node(
        root=root,
        tag=secrets.token_hex(3),
        documents=documents,
        work=work,
        daemon_config=rewrite_paths(json.loads(config_text), root),
    )
    try:
        for directory in ("/opt/cni/bin", "/etc/cni/net.d", "/usr/bin", "/var/lib", "/run"):
            the_node.path(directory).mkdir(parents=True, exist_ok=True)
        foreign = the_node.bin_dir / "foreign-plugin"
        foreign.write_bytes(b"#!/bin/sh\necho not ours\n")
        foreign.chmod(0o755)
        python = the_node.path(f"/usr/bin/{NODE_PYTHON}")
        python.write_bytes(b"")
        python.chmod(0o755)
        the_node.path("/usr/bin/python3").symlink_to(NODE_PYTHON)
        primary = the_node.network("primary", "10.246.0.0/24", the_node.bridge, default_route=True)
        (the_node.conf_dir / "10-primary.conflist").write_text(json.dumps(primary))
        yield the_node
    finally:
        the_node.cleanup()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
