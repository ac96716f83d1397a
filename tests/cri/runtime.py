"""containerd for the tests: its own config, root, state and socket, driven through CRI over gRPC.

``Containerd.start`` runs Debian's ``containerd`` on a config that names only directories under the
test's own directory (never the system's ``/var/lib/containerd``, ``/run/containerd`` or socket),
with its CRI plugin's CNI bin and conf dirs there too, and the locally built pause image as the
sandbox image (imported with ``ctr``: no registry is reachable). ``Cri`` is a small RuntimeService
client: the messages come from ``tests.cri._criapi`` and each method is one
``grpc.Channel.unary_unary`` call with a deadline.

Facts the config encodes: root here lacks CAP_SYS_RESOURCE, so the CRI plugin must clamp OOM scores
(``restrict_oom_score_adj``); the ``native`` snapshotter works on any filesystem; the streaming
server gets an ephemeral port so two containerds (say, the system's) never collide; runc keeps its
state under our state dir. containerd-shim's own sockets still go to ``/run/containerd/s/<hash>``,
hashed from our socket path (containerd 1.6 has no setting for that).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from tests.conftest import child_environment
from tests.cri._criapi import runtime_v1_pb2 as cri
from tests.cri.pause_image import machine, write_oci_archive

PAUSE_IMAGE = "localhost/multus-py/pause:1"
CRI_NAMESPACE = "k8s.io"
SERVICE = "/runtime.v1.RuntimeService/"
IMAGE_SERVICE = "/runtime.v1.ImageService/"
CALL_TIMEOUT = 60.0
"""Seconds a CRI call may take: RunPodSandbox and StopPodSandbox include every CNI call."""

Reply = TypeVar("Reply", bound=Message)


def config_toml(root: Path, *, cni_bin_dir: Path, cni_conf_dir: Path) -> str:
    """containerd's config.toml (version 2, containerd 1.6) for a containerd living under ``root``."""
    cri_plugin = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{root / "containerd.sock"}"

[{cri_plugin}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri_plugin}.containerd]
  snapshotter = "native"
  default_runtime_name = "runc"

[{cri_plugin}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri_plugin}.containerd.runtimes.runc.options]
  Root = "{root / "state" / "runc"}"

[{cri_plugin}.cni]
  bin_dir = "{cni_bin_dir}"
  conf_dir = "{cni_conf_dir}"
  max_conf_num = 1
"""


@dataclass
class Cri:
    """A CRI RuntimeService client on a unix socket."""

    channel: grpc.Channel

    def call(
        self,
        method: str,
        request: Message,
        reply: type[Reply],
        *,
        timeout: float = CALL_TIMEOUT,
        service: str = SERVICE,
    ) -> Reply:
        stub: Callable[..., Reply] = self.channel.unary_unary(
            service + method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=reply.FromString,
        )
        return stub(request, timeout=timeout)

    def version(self) -> cri.VersionResponse:
        return self.call("Version", cri.VersionRequest(version="v1"), cri.VersionResponse, timeout=5)

    def status(self) -> cri.StatusResponse:
        return self.call("Status", cri.StatusRequest(verbose=True), cri.StatusResponse, timeout=5)

    def run_pod_sandbox(self, config: cri.PodSandboxConfig) -> str:
        reply = self.call("RunPodSandbox", cri.RunPodSandboxRequest(config=config), cri.RunPodSandboxResponse)
        return reply.pod_sandbox_id

    def pod_sandbox_status(self, sandbox_id: str) -> cri.PodSandboxStatusResponse:
        request = cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True)
        return self.call("PodSandboxStatus", request, cri.PodSandboxStatusResponse)

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self.call(
            "StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), cri.StopPodSandboxResponse
        )

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        request = cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)
        self.call("RemovePodSandbox", request, cri.RemovePodSandboxResponse)

    def list_pod_sandboxes(self) -> list[cri.PodSandbox]:
        return list(
            self.call("ListPodSandbox", cri.ListPodSandboxRequest(), cri.ListPodSandboxResponse).items
        )

    def has_image(self, image: str) -> bool:
        """Whether the CRI plugin knows ``image`` (it learns of an import through an event)."""
        request = cri.ImageStatusRequest(image=cri.ImageSpec(image=image))
        reply = self.call("ImageStatus", request, cri.ImageStatusResponse, timeout=5, service=IMAGE_SERVICE)
        return reply.HasField("image")

    def loaded_cni_config(self) -> str:
        """The CNI configuration the CRI plugin has loaded, as its verbose Status reports it (JSON)."""
        return self.status().info.get("cniconfig", "")


def sandbox_netns(status: cri.PodSandboxStatusResponse) -> str:
    """The network namespace path of a sandbox, from the runtime spec in its verbose status."""
    spec = json.loads(status.info["info"])["runtimeSpec"]
    for namespace in spec["linux"]["namespaces"]:
        if namespace["type"] == "network":
            return str(namespace["path"])
    raise AssertionError(f"no network namespace in the sandbox's spec: {spec['linux']['namespaces']}")


@dataclass
class Containerd:
    """One containerd process and everything it owns, under ``root``."""

    root: Path
    process: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def cni_bin_dir(self) -> Path:
        return self.root / "cni" / "bin"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cgroup_parent(self) -> str:
        """The parent cgroup for the test's sandboxes (``PodSandboxConfig.linux.cgroup_parent``): one
        of our own, removed at ``stop``, rather than containerd's default ``/k8s.io``."""
        return f"/{self.root.name}"

    @property
    def log(self) -> Path:
        return self.root / "containerd.log"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def cri(self) -> Cri:
        assert self.channel is not None, "containerd is not started"
        return Cri(self.channel)

    def start(self, *, timeout: float = 30.0) -> None:
        """Write the config, start containerd, wait for CRI, import the pause image."""
        self.cni_bin_dir.mkdir(parents=True, exist_ok=True)
        self.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.toml"
        config.write_text(
            config_toml(self.root, cni_bin_dir=self.cni_bin_dir, cni_conf_dir=self.cni_conf_dir)
        )
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            ["containerd", "--config", str(config), "--log-level", "debug"],
            stdout=log,
            stderr=log,
            env=child_environment(),
            start_new_session=True,
        )
        log.close()
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.wait_for(self._answers, "containerd's CRI service", timeout=timeout)
        self.import_pause_image()

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            self.cri.version()
        except grpc.RpcError:
            return False
        return True

    def wait_for(self, condition: Callable[[], Any], what: str, *, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"containerd exited {self.process.returncode}:\n{self.log_text()[-5000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not after {timeout}s:\n{self.log_text()[-5000:]}")
            time.sleep(0.05)

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", CRI_NAMESPACE, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_environment(),
        )

    def import_pause_image(self) -> None:
        archive = self.root / "pause.oci.tar"
        write_oci_archive(archive, name=PAUSE_IMAGE, arch=machine())
        done = self.ctr("images", "import", "--snapshotter", "native", str(archive))
        assert done.returncode == 0, f"ctr images import: {done.stdout}{done.stderr}"
        self.wait_for(lambda: self.cri.has_image(PAUSE_IMAGE), f"{PAUSE_IMAGE} known to CRI", timeout=15)

    def use_cni_conf(self, name: str, conf: bytes, *, marker: str, timeout: float = 30.0) -> None:
        """Make ``conf`` the only CNI configuration and wait until the CRI plugin has loaded it.

        ``marker`` is a string only this conf holds (say, its daemon socket dir): the wait ends when
        the verbose Status shows it, so a sandbox never runs on the conf of an earlier test.
        """
        for old in self.cni_conf_dir.iterdir():
            old.unlink()
        (self.cni_conf_dir / name).write_bytes(conf)
        self.wait_for(
            lambda: marker in self.cri.loaded_cni_config(),
            f"CNI conf {name} loaded by containerd",
            timeout=timeout,
        )

    def remove_sandboxes(self) -> list[str]:
        """Stop and remove every sandbox (a failed test's); returns what could not be removed."""
        failed = []
        for sandbox in self.cri.list_pod_sandboxes():
            try:
                self.cri.stop_pod_sandbox(sandbox.id)
                self.cri.remove_pod_sandbox(sandbox.id)
            except grpc.RpcError as exc:
                failed.append(f"{sandbox.id}: {exc}")
        return failed

    def stop(self) -> None:
        """Remove every sandbox left, stop containerd, then force away whatever CRI could not remove
        (containers through runc, our containerd-shims by pid, sandbox netns, mounts, cgroups)."""
        leftover_netns: list[str] = []
        if self.channel is not None and self.process is not None and self.process.poll() is None:
            try:
                if self.remove_sandboxes():
                    leftover_netns = [
                        sandbox_netns(self.cri.pod_sandbox_status(sandbox.id))
                        for sandbox in self.cri.list_pod_sandboxes()
                    ]
            except grpc.RpcError:
                pass
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        self._delete_containers()
        self._kill_shims()
        for path in leftover_netns:
            subprocess.run(["umount", path], capture_output=True, check=False)
            Path(path).unlink(missing_ok=True)
        self._unmount_leftovers()
        self._remove_cgroups()

    def _delete_containers(self) -> None:
        """``runc delete --force`` every container still in our runc root (kills its processes)."""
        runc_root = self.root / "state" / "runc"
        if not runc_root.is_dir():
            return
        for namespace in runc_root.iterdir():
            for container in namespace.iterdir():
                subprocess.run(
                    ["runc", "--root", str(namespace), "delete", "--force", container.name],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )

    def _kill_shims(self) -> None:
        """SIGKILL the containerd-shims our containerd started (their command line names our socket)."""
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(self.socket).encode() in argv:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    def _unmount_leftovers(self) -> None:
        """Lazily unmount anything containerd left mounted under its root (a crashed sandbox's)."""
        prefix = str(self.root) + "/"
        with open("/proc/self/mountinfo") as mountinfo:
            targets = [line.split()[4] for line in mountinfo]
        for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)

    def _remove_cgroups(self) -> None:
        """Remove ``cgroup_parent`` from every cgroup hierarchy (runc leaves it, empty, behind)."""
        with open("/proc/self/mountinfo") as mountinfo:
            fields = [line.split() for line in mountinfo]
        hierarchies = [f[4] for f in fields if f[f.index("-") + 1] in ("cgroup", "cgroup2")]
        for hierarchy in hierarchies:
            path = Path(hierarchy + self.cgroup_parent)
            if path.is_dir():
                path.rmdir()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
