"""A node in one process for the core tests: a real store, real plugins, real netns, no daemon.

``Node`` owns a temp directory laid out like a node (plugin dir with the recorder and the reference
plugins, a conf dir, upstream's cache dir, a host-local data dir, ``state.db``) and builds the
engine, requests and networks the tests need. ``CrashAt`` stands in for the daemon's SIGKILL crash
points: it raises ``Crashed`` (a BaseException, so no ``except Exception`` in the engine can see
it) where the daemon would have died; a test then "restarts" with ``Node.restart`` and a new engine.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from app.attach.cluster import ClusterUnavailableError
from app.attach.crashpoints import DISARMED, CrashPoints, Point
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.netconf import MultusNetConf
from app.attach.networks import DelegatePlan, NetworkResolver
from app.attach.requests import Command, SandboxRequest, Trigger
from app.cni.conf import load_network_list
from app.cni.invoke import DELEGATE_MARKER
from app.cni.types import ContainerId, IfName, JsonObject
from app.store import checkpoints, history
from app.store.database import Database
from app.store.mirror_records import NadRecord, PodRecord
from app.store.records import HistoryEntry, PodIdentity, SandboxRecord
from tests.conftest import CNI_PLUGIN_DIR, open_empty_state

RECORDER_SOURCE = Path(__file__).resolve().parent.parent / "plugins" / "recorder.py"
REFERENCE_PLUGINS = ("bridge", "host-local", "loopback", "tuning", "ptp")


class Crashed(BaseException):
    """The daemon would have been SIGKILLed here."""


class CrashAt(CrashPoints):
    """Crash (raise ``Crashed``) at the ``occurrence``-th time ``point`` is reached."""

    def __init__(self, point: Point, occurrence: int = 1) -> None:
        super().__init__()
        self.point = point
        self.occurrence = occurrence
        self.seen = 0

    def reached(self, point: Point) -> None:
        if point == self.point:
            self.seen += 1
            if self.seen == self.occurrence:
                raise Crashed(f"{point}:{self.occurrence}")


def new_container_id() -> ContainerId:
    return ContainerId(secrets.token_hex(32))


@dataclass
class Netns:
    name: str

    @property
    def path(self) -> str:
        return f"/var/run/netns/{self.name}"

    def links(self) -> set[str]:
        out = subprocess.run(
            ["ip", "-n", self.name, "-j", "link"], check=True, capture_output=True, text=True
        ).stdout
        return {link["ifname"] for link in json.loads(out)}

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)


@dataclass
class Node:
    """One node's directories, store and plugins; everything it creates is removed by ``cleanup``."""

    root: Path
    boot_id: str = "boot-1"
    state_template: Path | None = None
    """An empty migrated database (``empty_state_template``) to start ``state.db`` from, rather than
    migrating a new file."""
    db: Database = field(init=False)
    netnses: list[Netns] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for directory in (self.bin_dir, self.conf_dir, self.cni_dir, self.ipam_dir):
            directory.mkdir(parents=True, exist_ok=True)
        recorder = self.bin_dir / "recorder"
        recorder.write_text(f"#!{sys.executable} -IS\n{RECORDER_SOURCE.read_text()}")
        recorder.chmod(0o755)
        for name in REFERENCE_PLUGINS:
            (self.bin_dir / name).symlink_to(Path(CNI_PLUGIN_DIR) / name)
        if self.state_template is None:
            self.db = Database.open(self.state_db)
        else:
            self.db = open_empty_state(self.state_template, self.state_db)

    # ---- layout -------------------------------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def conf_dir(self) -> Path:
        return self.root / "net.d"

    @property
    def cni_dir(self) -> Path:
        return self.root / "cni"

    @property
    def ipam_dir(self) -> Path:
        return self.root / "ipam"

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def recorder_log(self) -> Path:
        return self.root / "recorder.jsonl"

    # ---- building blocks ----------------------------------------------------------------------

    def engine(
        self, *, crash: CrashPoints | None = None, boot_id: str = "", sysfs_root: Path | None = None
    ) -> AttachEngine:
        settings = EngineSettings(delegate_timeout=20.0, node_name="node-a")
        return AttachEngine(
            db=self.db,
            resolver=NetworkResolver(),
            boot_id=boot_id or self.boot_id,
            settings=settings if sysfs_root is None else replace(settings, sysfs_root=sysfs_root),
            crash_points=crash if crash is not None else DISARMED,
        )

    def restart(self) -> None:
        """What a daemon restart does to the store: close it (the old process is gone), open it again."""
        self.db.close()
        self.db = Database.open(self.state_db)

    def new_netns(self) -> Netns:
        namespace = Netns(f"mpyc-{secrets.token_hex(4)}")
        subprocess.run(["ip", "netns", "add", namespace.name], check=True)
        self.netnses.append(namespace)
        return namespace

    def recorder_network(self, name: str, **behaviour: Any) -> str:
        """A conf file ``<name>.conf`` running the recorder; ``behaviour`` goes in its ``recorder`` object.

        Its ADD answers a result with one sandbox interface and an address, so history has them.
        """
        index = len(list(self.conf_dir.iterdir())) + 1
        settings: dict[str, Any] = {
            "log": str(self.recorder_log),
            "result": {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": f"if-{name}", "mac": f"0a:58:0a:0a:00:{index:02x}", "sandbox": "x"}],
                "ips": [{"address": f"10.10.{index}.2/24", "interface": 0}],
            },
        }
        settings.update(behaviour)
        self.write_network(
            name, {"cniVersion": "1.0.0", "name": name, "type": "recorder", "recorder": settings}
        )
        return name

    def bridge_network(self, name: str, *, subnet: str) -> str:
        """A conf list: bridge (a fresh bridge name) with host-local IPAM (leases under ``ipam_dir``)."""
        bridge = f"mpycbr{secrets.token_hex(4)}"
        self.host_links.append(bridge)
        self.write_network(
            name,
            {
                "cniVersion": "1.0.0",
                "name": name,
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": bridge,
                        "ipam": {"type": "host-local", "subnet": subnet, "dataDir": str(self.ipam_dir)},
                    }
                ],
            },
        )
        return name

    def write_network(self, name: str, conf: JsonObject) -> Path:
        suffix = ".conflist" if "plugins" in conf else ".conf"
        path = self.conf_dir / f"{name}{suffix}"
        path.write_text(json.dumps(conf))
        return path

    def conf(self, cluster_network: str, *default_networks: str) -> MultusNetConf:
        return MultusNetConf(
            name="multus-cni-network",
            cni_version="1.0.0",
            stdin_cni_version="1.0.0",
            cluster_network=cluster_network,
            default_networks=default_networks,
            conf_dir=str(self.conf_dir),
            bin_dir=str(self.bin_dir),
            cni_dir=str(self.cni_dir),
        )

    def request(
        self,
        command: Command,
        container_id: str,
        netns: Netns | None,
        conf: MultusNetConf,
        *,
        pod: str = "pod-a",
        uid: str = "uid-a",
        trigger: Trigger = Trigger.RUNTIME,
    ) -> SandboxRequest:
        return SandboxRequest(
            command=command,
            container_id=ContainerId(container_id),
            netns=netns.path if netns is not None else "",
            ifname=IfName("eth0"),
            cni_args=(
                ("IgnoreUnknown", "1"),
                ("K8S_POD_NAMESPACE", "default"),
                ("K8S_POD_NAME", pod),
                ("K8S_POD_INFRA_CONTAINER_ID", container_id),
                ("K8S_POD_UID", uid),
            ),
            pod=PodIdentity(namespace="default", name=pod, uid=uid),
            conf=conf,
            trigger=trigger,
        )

    # ---- what happened ------------------------------------------------------------------------

    def checkpoint(self, container_id: str) -> SandboxRecord | None:
        return self.db.read_sync(partial(checkpoints.load_sandbox, container_id=container_id))

    def history(self, container_id: str) -> list[HistoryEntry]:
        return self.db.read_sync(partial(history.for_container, container_id=container_id))

    def calls(self) -> list[tuple[str, str, str]]:
        """The recorder's invocations: (command, network name, CNI_IFNAME), in order."""
        if not self.recorder_log.exists():
            return []
        entries = [json.loads(line) for line in self.recorder_log.read_text().splitlines()]
        return [
            (entry["command"], entry["stdin"].get("name", ""), entry["env"].get("CNI_IFNAME", ""))
            for entry in entries
            if entry["command"] != "VERSION"
        ]

    def recorder_entries(self, command: str) -> list[dict[str, Any]]:
        if not self.recorder_log.exists():
            return []
        entries = [json.loads(line) for line in self.recorder_log.read_text().splitlines()]
        return [entry for entry in entries if entry["command"] == command]

    def write_upstream_cache(
        self,
        container_id: str,
        *,
        network: JsonObject,
        ifname: str,
        netns: str,
        result: JsonObject | None = None,
    ) -> Path:
        """One libcni ``cniCacheV1`` result cache, as upstream Multus leaves it for a delegate."""
        results = self.cni_dir / "results"
        results.mkdir(parents=True, exist_ok=True)
        path = results / f"{network['name']}-{container_id}-{ifname}"
        document = {
            "kind": "cniCacheV1",
            "containerId": container_id,
            "config": base64.b64encode(json.dumps(network).encode()).decode(),
            "ifName": ifname,
            "networkName": network["name"],
            "netns": netns,
            "cniArgs": [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "old-pod"]],
            "capabilityArgs": {},
            "result": result,
        }
        path.write_text(json.dumps(document))
        return path

    def write_upstream_scratch(self, container_id: str, networks: list[JsonObject]) -> Path:
        """Upstream's ``<cniDir>/<containerID>`` scratch file: its delegates in ADD order."""
        path = self.cni_dir / container_id
        path.write_text(json.dumps([{"Conf": network} for network in networks]))
        return path

    def cleanup(self) -> None:
        self.db.close()
        for namespace in self.netnses:
            namespace.delete()
        for link in self.host_links:
            subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)


async def added_before_a_reboot(node: Node, count: int) -> list[ContainerId]:
    """``count`` sandboxes on the recorder's cluster network, added by a daemon of an earlier boot,
    then the daemon restarted: what start-up recovery finds after a reboot."""
    conf = node.conf(node.recorder_network("cluster"))
    earlier = node.engine(boot_id="boot-0")
    containers = [new_container_id() for _ in range(count)]
    for container in containers:
        await earlier.add(node.request(Command.ADD, container, node.new_netns(), conf))
    node.restart()
    return containers


def pending(record: SandboxRecord | None) -> list[str]:
    """Interfaces still recorded for a sandbox (none when it is forgotten)."""
    return [] if record is None else sorted(a.ifname for a in record.attachments)


def request_lines(entries: list[HistoryEntry], command: str) -> list[HistoryEntry]:
    return [entry for entry in entries if entry.command == command and entry.step == "request"]


def delegate_lines(entries: list[HistoryEntry], command: str) -> list[tuple[str, str, str]]:
    """(ifname, trigger, outcome) of the delegate lines of ``command``, in recorded order."""
    return [
        (entry.ifname, entry.trigger, entry.outcome)
        for entry in entries
        if entry.command == command and entry.step == "delegate"
    ]


class SurpriseAtFirstDel(CrashPoints):
    """The first teardown that begins raises what no DEL path expects (a bug, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.raised = 0

    def reached(self, point: Point) -> None:
        if point == Point.DEL_AFTER_BEGIN and not self.raised:
            self.raised += 1
            raise RuntimeError("surprise")


def hot_recorder_plan(node: Node, **behaviour: Any) -> DelegatePlan:
    """A hot-plug delegate ``default/hot`` as ``net1``: the recorder plugin with ``behaviour``."""
    recorder = {"log": str(node.recorder_log), **behaviour}
    raw = json.dumps({"cniVersion": "1.0.0", "name": "hot", "type": "recorder", "recorder": recorder})
    return DelegatePlan(
        position=1,
        network_name="default/hot",
        net=load_network_list(raw.encode(), source="test"),
        ifname=IfName("net1"),
        is_master=False,
        cni_args=(),
        capability_args={},
    )


class OnePod:
    """A pod source holding one pod (``default/pod-a`` with ``annotations`` unless ``pod`` is given)."""

    def __init__(self, annotations: dict[str, str] | None = None, *, pod: PodRecord | None = None) -> None:
        self.pod = pod or PodRecord("default", "pod-a", "uid-a", annotations=annotations or {})

    async def get_pod(self, namespace: str, name: str, *, uid: str = "") -> PodRecord | None:
        return self.pod if (namespace, name) == self.pod.key else None


class Nads:
    """A NAD source holding ``nads`` (none: every NAD is missing), mirrored and fetched alike."""

    def __init__(self, *nads: NadRecord) -> None:
        self.nads = {nad.key: nad for nad in nads}

    async def get_nad(self, namespace: str, name: str) -> NadRecord | None:
        return self.nads.get((namespace, name))

    async def fetch_nad(self, namespace: str, name: str) -> NadRecord | None:
        return self.nads.get((namespace, name))


async def crashed_add_with_its_plugin_running(
    node: Node, conf: MultusNetConf, netns: Netns
) -> tuple[ContainerId, asyncio.subprocess.Process]:
    """An ADD of a one-network ``conf`` cut short once its intents were committed (a daemon killed
    there), and what the in-process crash point cannot leave behind: its delegate's plugin still
    running (a ``sleep`` in a session of its own, marked as the ``eth0`` delegate's, as
    ``app.cni.invoke`` marks every plugin). The caller kills the process if the code under test
    did not."""
    container = new_container_id()
    try:
        await node.engine(crash=CrashAt(Point.ADD_AFTER_INTENT)).add(
            node.request(Command.ADD, container, netns, conf)
        )
    except Crashed:
        pass
    else:
        raise AssertionError("the ADD was not cut short at its crash point")
    plugin = await asyncio.create_subprocess_exec(
        "sleep",
        "300",
        env={"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "ADD", DELEGATE_MARKER: f"{container}/eth0"},
        start_new_session=True,
    )
    return container, plugin


__all__ = [
    "Command",
    "CrashAt",
    "Crashed",
    "Nads",
    "Netns",
    "Node",
    "OnePod",
    "Point",
    "SurpriseAtFirstDel",
    "Trigger",
    "crashed_add_with_its_plugin_running",
    "delegate_lines",
    "hot_recorder_plan",
    "new_container_id",
    "pending",
    "request_lines",
]


async def wait_for_file(path: Path) -> None:
    """Return once ``path`` exists (a recorder plugin's rendezvous); fail after about 6 s."""
    for _ in range(600):
        if await asyncio.to_thread(path.exists):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


class Pods:
    """The pod presence GC asks (``app.gc.collector.PodPresence``): this node's pods as the mirror
    holds them ({(namespace, name): uid}; None while it is not synced), and the API's answer for one
    pod, which agrees with the mirror unless ``api`` says what the API holds instead. ``asked``: the
    pods the API was asked for."""

    def __init__(
        self,
        pods: Mapping[tuple[str, str], str] | None,
        *,
        api: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        self.pods = pods
        self.api = api
        self.asked: list[tuple[str, str]] = []
        self.answering = True
        """False: the API cannot be asked (``ClusterUnavailableError``)."""

    async def pods_on_node(self) -> Mapping[tuple[str, str], str] | None:
        return self.pods

    async def gone_from_api(self, namespace: str, name: str, uid: str) -> bool:
        self.asked.append((namespace, name))
        if not self.answering:
            raise ClusterUnavailableError(f"cannot get pod {namespace}/{name}: no answer")
        held = (self.api if self.api is not None else self.pods or {}).get((namespace, name))
        return held is None or bool(uid and held and held != uid)
