"""Chains configured on disk, through the engine in static mode: a conflist's ``<dir>/<name>/*.conf``
plugins (``loadOnlyInlinedPlugins``) and the ``auxiliaryCNIChainName`` chain headed by our ``passthru``.

Real: a network namespace, the reference plugins (bridge, host-local, tuning from /usr/lib/cni), the
``passthru`` script multus-install writes, the recorder plugin (it logs what it was given), the
engine with its SQLite checkpoint. Each chain is observed running on ADD, and on DEL after its
files were removed from disk: DEL replays the chain recorded with the intent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.attach.engine import AttachEngine, EngineSettings
from app.attach.netconf import MultusNetConf
from app.attach.networks import NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cli import passthru
from app.cni.types import CniError, ContainerId, ErrorCode, IfName
from app.store import checkpoints
from app.store.database import Database
from app.store.records import PodIdentity, SandboxRecord

RECORDER = Path(__file__).parent.parent / "plugins" / "recorder.py"
REFERENCE_PLUGINS = Path("/usr/lib/cni")


@dataclass
class Node:
    engine: AttachEngine
    database: Database
    net_d: Path
    bin_dir: Path
    log: Path
    netns: str
    bridge: str
    ipam_dir: Path

    def calls(self, command: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [c for c in lines if command is None or c["command"] == command]

    def conf(self, *, cluster_network: str, aux_chain: str = "") -> MultusNetConf:
        return MultusNetConf(
            name="multus",
            cni_version="1.0.0",
            stdin_cni_version="1.0.0",
            cluster_network=cluster_network,
            conf_dir=str(self.net_d),
            bin_dir=str(self.bin_dir),
            auxiliary_cni_chain_name=aux_chain,
        )

    def request(self, command: Command, container: str, conf: MultusNetConf) -> SandboxRequest:
        return SandboxRequest(
            command=command,
            container_id=ContainerId(container),
            netns=self.netns,
            ifname=IfName("eth0"),
            cni_args=(("K8S_POD_NAMESPACE", "default"), ("K8S_POD_NAME", "web")),
            pod=PodIdentity("default", "web", ""),
            conf=conf,
        )

    async def sandbox(self, container: str) -> SandboxRecord | None:
        return await self.database.read(lambda session: checkpoints.load_sandbox(session, container))

    def bridge_plugin(self) -> dict[str, Any]:
        return {
            "type": "bridge",
            "bridge": self.bridge,
            "ipam": {"type": "host-local", "subnet": "10.251.7.0/24", "dataDir": str(self.ipam_dir)},
        }

    def recorder_plugin(self, tag: str) -> dict[str, Any]:
        return {"type": "recorder", "tag": tag, "recorder": {"log": str(self.log)}}

    def mtu(self, ifname: str) -> int:
        shown = subprocess.run(
            ["ip", "-j", "-n", Path(self.netns).name, "link", "show", ifname],
            check=True,
            capture_output=True,
            text=True,
        )
        return int(json.loads(shown.stdout)[0]["mtu"])


@pytest.fixture
def node(tmp_path: Path, database: Database) -> Iterator[Node]:
    suffix = uuid.uuid4().hex[:8]
    netns = f"mpc{suffix}"
    bridge = f"mpcbr{suffix[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "recorder"
    recorder.write_text(f"#!{sys.executable} -IS\n" + RECORDER.read_text())
    recorder.chmod(0o755)
    assert passthru.install(bin_dir) == bin_dir / "passthru"
    net_d = tmp_path / "net.d"
    net_d.mkdir()
    engine = AttachEngine(
        db=database,
        resolver=NetworkResolver(),
        boot_id="test-boot",
        settings=EngineSettings(
            delegate_timeout=20,
            extra_cni_path=(str(REFERENCE_PLUGINS),),
            sysfs_root=tmp_path,
            plugin_env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        ),
    )
    yield Node(
        engine,
        database,
        net_d,
        bin_dir,
        tmp_path / "recorder.jsonl",
        f"/var/run/netns/{netns}",
        bridge,
        tmp_path,
    )
    subprocess.run(["ip", "netns", "delete", netns], check=False)
    subprocess.run(["ip", "link", "delete", bridge], check=False, capture_output=True)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


def pod_conflist(node: Node, **extra: Any) -> Path:
    path = node.net_d / "10-podnet.conflist"
    write_json(path, {"cniVersion": "1.0.0", "name": "podnet", "plugins": [node.bridge_plugin()], **extra})
    write_json(node.net_d / "podnet" / "20-mtu.conf", {"type": "tuning", "mtu": 1400})
    write_json(node.net_d / "podnet" / "30-record.conf", node.recorder_plugin("on-disk"))
    (node.net_d / "podnet" / "README").write_text("not a .conf: ignored")
    return path


async def test_a_conflists_on_disk_plugins_run_after_its_own_and_del_replays_them_from_the_checkpoint(
    node: Node,
) -> None:
    conf = node.conf(cluster_network=str(pod_conflist(node)))
    container = uuid.uuid4().hex

    result = await node.engine.add(node.request(Command.ADD, container, conf))

    assert node.mtu("eth0") == 1400, "tuning from podnet/20-mtu.conf ran on the bridge's veth"
    [added] = node.calls("ADD")
    assert added["stdin"]["tag"] == "on-disk"
    assert [i["name"] for i in added["stdin"]["prevResult"]["interfaces"] if i.get("sandbox")] == ["eth0"]
    assert result["ips"][0]["address"].startswith("10.251.7.")
    record = await node.sandbox(container)
    assert record is not None
    [attachment] = record.attachments
    assert attachment.plugin_types == ("bridge", "tuning", "recorder")
    assert [p["type"] for p in json.loads(attachment.config)["plugins"]] == ["bridge", "tuning", "recorder"]

    shutil.rmtree(node.net_d)
    await node.engine.delete(node.request(Command.DEL, container, conf))

    [deleted] = node.calls("DEL")
    assert deleted["stdin"]["tag"] == "on-disk", "the on-disk plugin's DEL ran from the recorded chain"
    assert await node.sandbox(container) is None
    assert not any(node.ipam_dir.glob("**/10.251.7.*")), "host-local released the lease"


async def test_load_only_inlined_plugins_true_leaves_the_directory_alone(node: Node) -> None:
    conf = node.conf(cluster_network=str(pod_conflist(node, loadOnlyInlinedPlugins=True)))
    container = uuid.uuid4().hex

    await node.engine.add(node.request(Command.ADD, container, conf))

    assert node.calls() == []
    assert node.mtu("eth0") == 1500
    record = await node.sandbox(container)
    assert record is not None
    assert record.attachments[0].plugin_types == ("bridge",)
    await node.engine.delete(node.request(Command.DEL, container, conf))


async def test_the_auxiliary_chain_runs_last_headed_by_passthru_on_add_and_del(node: Node) -> None:
    primary = node.net_d / "10-podnet.conflist"
    write_json(primary, {"cniVersion": "1.0.0", "name": "podnet", "plugins": [node.bridge_plugin()]})
    write_json(node.net_d / "aux-chain" / "10-record.conf", node.recorder_plugin("aux"))
    conf = node.conf(cluster_network=str(primary), aux_chain="aux-chain")
    container = uuid.uuid4().hex

    result = await node.engine.add(node.request(Command.ADD, container, conf))

    assert [i["name"] for i in result["interfaces"] if i.get("sandbox")] == ["eth0"], "the master's result"
    [added] = node.calls("ADD")
    assert added["env"]["CNI_IFNAME"] == "net1"
    assert added["stdin"]["name"] == "aux-chain"
    assert added["stdin"]["prevResult"] == {
        "cniVersion": "1.0.0",
        "interfaces": [],
        "ips": [],
        "routes": [],
        "dns": {},
    }, "passthru ran first and printed its empty result"
    record = await node.sandbox(container)
    assert record is not None
    aux = next(a for a in record.attachments if a.ifname == "net1")
    assert (aux.network_name, aux.position, aux.plugin_types) == ("aux-chain", 1, ("passthru", "recorder"))

    shutil.rmtree(node.net_d / "aux-chain")
    await node.engine.delete(node.request(Command.DEL, container, conf))

    [deleted] = node.calls("DEL")
    assert deleted["env"]["CNI_IFNAME"] == "net1"
    assert deleted["stdin"]["name"] == "aux-chain"
    assert await node.sandbox(container) is None


async def test_an_auxiliary_chain_without_plugins_on_disk_adds_no_delegate(node: Node) -> None:
    primary = node.net_d / "10-podnet.conflist"
    write_json(primary, {"cniVersion": "1.0.0", "name": "podnet", "plugins": [node.bridge_plugin()]})
    (node.net_d / "aux-chain").mkdir()
    conf = node.conf(cluster_network=str(primary), aux_chain="aux-chain")
    container = uuid.uuid4().hex

    await node.engine.add(node.request(Command.ADD, container, conf))

    record = await node.sandbox(container)
    assert record is not None
    assert [a.ifname for a in record.attachments] == ["eth0"]
    await node.engine.delete(node.request(Command.DEL, container, conf))


@pytest.mark.parametrize(
    ("where", "content", "named"),
    [
        (
            "podnet/20-bad.conf",
            '{"mtu": 1400}',
            "podnet/20-bad.conf: error parsing configuration: missing 'type'",
        ),
        ("podnet/20-bad.conf", "{not json", "podnet/20-bad.conf: error parsing configuration"),
        ("aux-chain/10-bad.conf", '["tuning"]', "aux-chain/10-bad.conf: configuration must be a JSON object"),
    ],
)
async def test_a_broken_on_disk_plugin_fails_the_add_naming_its_file_and_runs_nothing(
    node: Node, where: str, content: str, named: str
) -> None:
    primary = node.net_d / "10-podnet.conflist"
    write_json(
        primary, {"cniVersion": "1.0.0", "name": "podnet", "plugins": [node.recorder_plugin("primary")]}
    )
    (node.net_d / where).parent.mkdir(parents=True, exist_ok=True)
    (node.net_d / where).write_text(content)
    conf = node.conf(cluster_network=str(primary), aux_chain="aux-chain")
    container = uuid.uuid4().hex

    with pytest.raises(CniError) as raised:
        await node.engine.add(node.request(Command.ADD, container, conf))

    assert raised.value.code in (ErrorCode.INVALID_NETWORK_CONFIG, ErrorCode.DECODING_FAILURE)
    assert named in raised.value.msg
    assert node.calls() == [], "nothing ran"
    assert await node.sandbox(container) is None, "nothing recorded"


@pytest.mark.parametrize("chain", ["../etc", "a/b"])
async def test_an_auxiliary_chain_name_that_is_not_a_directory_name_is_refused(
    node: Node, chain: str
) -> None:
    primary = node.net_d / "10-podnet.conflist"
    write_json(
        primary, {"cniVersion": "1.0.0", "name": "podnet", "plugins": [node.recorder_plugin("primary")]}
    )
    container = uuid.uuid4().hex

    with pytest.raises(CniError) as raised:
        await node.engine.add(
            node.request(Command.ADD, container, node.conf(cluster_network=str(primary), aux_chain=chain))
        )

    assert raised.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "'auxiliaryCNIChainName'" in raised.value.msg
    assert node.calls() == []
    assert await node.sandbox(container) is None


def test_install_keeps_a_foreign_passthru_and_uninstall_removes_only_ours(tmp_path: Path) -> None:
    foreign = tmp_path / "passthru"
    foreign.write_bytes(b"\x7fELF upstream's Go passthru")
    assert passthru.install(tmp_path) is None
    assert passthru.uninstall(tmp_path) == []
    assert foreign.read_bytes() == b"\x7fELF upstream's Go passthru"
    foreign.unlink()
    assert passthru.install(tmp_path) == foreign
    assert passthru.install(tmp_path) == foreign, "ours is replaced on reinstall"
    assert passthru.uninstall(tmp_path) == [foreign]
    assert not foreign.exists()
