"""A node with native hot-plug wired the way the daemon wires it: watchers (mirror) → reconciler → engine.

Used in-process by ``test_hotplug_native`` and as a child process (``python -m
tests.watch.hotplug_node``) that a test kills with a crash point in the middle of a hot-plug.
Real: the emulator over HTTP, the SQLite checkpoint, the reference plugins (bridge, host-local).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.attach import hotplug, status_retries
from app.attach.cluster import PodSource
from app.attach.crashpoints import DISARMED, CrashPoints
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.netconf import MultusNetConf
from app.attach.networks import ClusterSources, NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni.types import ContainerId, IfName
from app.store.database import Database
from app.store.records import PodIdentity
from app.watch import client
from app.watch.watchers import Watchers
from tests.conftest import CNI_PLUGIN_DIR, child_environment
from tests.watch.support import FAST_SETTINGS, NODE

FAST_RETRIES = hotplug.ReconcilerSettings(backoff_initial=0.05, backoff_max=0.3, busy_retry=0.02)


@dataclass(frozen=True)
class Layout:
    """Where one test's node keeps things; every name is unique to the test."""

    root: Path
    tag: str

    @property
    def conf_dir(self) -> Path:
        return self.root / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.root / "ipam"

    @property
    def bridge(self) -> str:
        return f"mphp{self.tag}"

    def bridge_conf(self, name: str, subnet: str, *, suffix: str = "") -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": name,
            "type": "bridge",
            "bridge": self.bridge + suffix,
            "ipam": {"type": "host-local", "dataDir": str(self.ipam_dir), "ranges": [[{"subnet": subnet}]]},
        }

    def write_primary(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        primary = self.bridge_conf("primary", "10.230.0.0/24")
        (self.conf_dir / "10-primary.conf").write_text(json.dumps(primary))

    def request(
        self, command: Command, pod: dict[str, Any], container: str, *, netns: str, with_uid: bool = True
    ) -> SandboxRequest:
        """The runtime's request for ``pod``'s sandbox ``container`` in ``netns``, as a kubelet's
        CNI_ARGS name it (without ``K8S_POD_UID`` unless ``with_uid``, as older runtimes send them),
        under this layout's configuration."""
        metadata = pod["metadata"]
        uid = metadata["uid"] if with_uid else ""
        return SandboxRequest(
            command=command,
            container_id=ContainerId(container),
            netns=netns,
            ifname=IfName("eth0"),
            cni_args=(
                ("IgnoreUnknown", "1"),
                ("K8S_POD_NAMESPACE", metadata["namespace"]),
                ("K8S_POD_NAME", metadata["name"]),
                ("K8S_POD_INFRA_CONTAINER_ID", container),
                *((("K8S_POD_UID", uid),) if uid else ()),
            ),
            pod=PodIdentity(metadata["namespace"], metadata["name"], uid),
            conf=self.conf(),
        )

    def conf(self) -> MultusNetConf:
        return MultusNetConf(
            name="multus",
            cni_version="1.0.0",
            stdin_cni_version="1.0.0",
            cluster_network="primary",
            conf_dir=str(self.conf_dir),
            bin_dir=CNI_PLUGIN_DIR,
            multus_namespace="kube-system",
        )


def build(
    *,
    database: Database,
    watchers: Watchers,
    layout: Layout,
    crash_points: CrashPoints = DISARMED,
    add_pods: PodSource | None = None,
    hotplug_pods: status_retries.PodMirror | None = None,
    extra_cni_path: tuple[str, ...] = (),
    reconciler_settings: hotplug.ReconcilerSettings = FAST_RETRIES,
    status_retry: status_retries.StatusRetrySettings | None = None,
) -> tuple[AttachEngine, hotplug.HotplugReconciler]:
    """The engine and the reconciler over ``watchers``, registered for its pod commits and the
    engine's ADDs, their network-status writes taking turns, as ``app.daemon.wiring`` does. A test may
    hand the engine's ADDs (``add_pods``) or the reconciler (``hotplug_pods``) its own view of the
    mirror's pods, to hold or watch their reads, and its plugins beside the reference ones
    (``extra_cni_path``); with ``status_retry`` the engine retries a failed ADD's status write in the
    background, as the daemon's does."""
    resolver = NetworkResolver(
        cluster=ClusterSources(pods=add_pods or watchers.pods, nads=watchers.nads, events=watchers.publisher)
    )
    status = hotplug.OrderedStatusPublisher(watchers.publisher)
    engine = AttachEngine(
        db=database,
        resolver=resolver,
        boot_id="hotplug-test-boot",
        settings=EngineSettings(
            delegate_timeout=20,
            plugin_env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            extra_cni_path=extra_cni_path,
        ),
        status=status,
        status_retry=status_retry,
        crash_points=crash_points,
    )
    reconciler = hotplug.HotplugReconciler(
        engine=engine,
        resolver=resolver,
        pods=hotplug_pods or watchers.pods,
        conf=layout.conf(),
        status=status,
        events=watchers.publisher,
        settings=reconciler_settings,
    )
    watchers.on_pod_written(reconciler.pod_changed)
    engine.on_sandbox_added(reconciler.sandbox_added)
    return engine, reconciler


async def reconcile_until_killed(*, db_path: Path, kubeconfig: Path, layout: Layout, crash_at: str) -> None:
    """Run this module as a child process (watchers, reconciler and engine on ``db_path``) until its
    crash point ``crash_at`` SIGKILLs it in the middle of a hot-plug."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.watch.hotplug_node",
        *("--db", str(db_path), "--kubeconfig", str(kubeconfig), "--root", str(layout.root)),
        *("--tag", layout.tag, "--crash-at", crash_at),
        env=child_environment(),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == -9, stderr.decode()


async def _child(args: argparse.Namespace) -> None:
    access = client.find_access(kubeconfig=args.kubeconfig, environ={})
    assert access is not None
    api = await client.connect(access, settings=FAST_SETTINGS)
    database = Database.open(Path(args.db))
    watchers = Watchers(api=api, database=database, node_name=NODE, settings=FAST_SETTINGS)
    layout = Layout(Path(args.root), args.tag)
    _, reconciler = build(
        database=database, watchers=watchers, layout=layout, crash_points=CrashPoints(args.crash_at)
    )
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(watchers.run(), name="child.watchers")
        tasks.create_task(reconciler.run(ready=watchers.wait_synced), name="child.hotplug")


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--db", "--kubeconfig", "--root", "--tag", "--crash-at"):
        parser.add_argument(name, required=True)
    asyncio.run(_child(parser.parse_args()))


if __name__ == "__main__":
    main()
