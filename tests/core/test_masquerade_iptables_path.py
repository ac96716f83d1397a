"""The nat rules a masquerading ``bridge`` leaves when its DEL cannot see the pod are removed with
the ``iptables`` its plugins run: the first on the ``PATH`` the daemon gives them.

It was looked for on the default ``PATH`` instead: on a node whose plugins' ``PATH`` (the daemon's
``PATH``; the image's puts ``/usr/local/bin`` first) finds another ``iptables`` than that (an nft
build beside a legacy one), the rules were removed through another backend than the one that
wrote them. Here the plugins' ``PATH`` starts with a directory whose ``iptables`` logs its calls
before it runs the real one.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.attach import masquerade
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.networks import NetworkResolver
from tests.core.support import Command, Node, new_container_id

REAL_IPTABLES = shutil.which("iptables", path="/usr/sbin:/sbin")
"""The node's iptables: containernetworking-plugins depends on it, so every machine that runs
the tests has it (no skip)."""


PLUGIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _engine(node: Node, *, plugin_path: str) -> AttachEngine:
    """The node's engine, its plugins given ``plugin_path`` as their ``PATH``."""
    return AttachEngine(
        db=node.db,
        resolver=NetworkResolver(),
        boot_id=node.boot_id,
        settings=EngineSettings(delegate_timeout=20.0, node_name="node-a", plugin_env={"PATH": plugin_path}),
    )


def _masquerading_bridge(node: Node, bridge: str) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": "masq",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "ipMasq": True,
                "ipam": {"type": "host-local", "subnet": "10.244.9.0/24", "dataDir": str(node.ipam_dir)},
            }
        ],
    }


def _nat_rules() -> str:
    return subprocess.run(["iptables", "-t", "nat", "-S"], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def container() -> Iterator[str]:
    """A container ID whose masquerade chain, and its POSTROUTING rule, a failing test leaves are
    removed."""
    container_id = new_container_id()
    yield container_id
    chain = masquerade.chain_name("masq", container_id)
    for rule in _nat_rules().splitlines():
        if rule.startswith("-A POSTROUTING") and f"-j {chain}" in rule:
            subprocess.run(["iptables", "-t", "nat", *shlex.split(rule.replace("-A", "-D", 1))], check=False)
    subprocess.run(["iptables", "-t", "nat", "-F", chain], check=False, capture_output=True)
    subprocess.run(["iptables", "-t", "nat", "-X", chain], check=False, capture_output=True)


async def test_the_masquerade_rules_a_blind_del_leaves_are_removed_with_the_plugins_iptables(
    node: Node, tmp_path: Path, container: str
) -> None:
    tools, calls = tmp_path / "tools", tmp_path / "iptables-calls"
    tools.mkdir()
    wrapper = tools / "iptables"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {REAL_IPTABLES} "$@"\n')
    wrapper.chmod(0o755)
    bridge = f"mpycmq{secrets.token_hex(3)}"
    node.host_links.append(bridge)
    node.write_network("masq", _masquerading_bridge(node, bridge))
    engine = _engine(node, plugin_path=f"{tools}:{PLUGIN_PATH}")
    netns = node.new_netns()
    chain = masquerade.chain_name("masq", container)
    await engine.add(node.request(Command.ADD, container, netns, node.conf("masq")))
    assert chain in _nat_rules(), "the plugin masquerades the pod's address"
    added_calls = calls.read_text().splitlines()

    netns.delete()  # the runtime removed it: the plugin's DEL finds no address, removes no rule
    await engine.delete(node.request(Command.DEL, container, netns, node.conf("masq")))

    assert chain not in _nat_rules()
    removals = calls.read_text().splitlines()[len(added_calls) :]
    assert any(f"-X {chain}" in call for call in removals), removals


async def test_the_masquerade_rules_are_removed_when_the_pods_interface_went_before_its_del(
    node: Node, container: str
) -> None:
    """The namespace is there but the pod's interface is not (deleted by hand, or its host end's
    removal took it): the plugin's DEL finds no address on it and removes no rule, as when the
    namespace is gone."""
    bridge = f"mpycmq{secrets.token_hex(3)}"
    node.host_links.append(bridge)
    node.write_network("masq", _masquerading_bridge(node, bridge))
    engine = _engine(node, plugin_path=PLUGIN_PATH)
    netns = node.new_netns()
    chain = masquerade.chain_name("masq", container)
    await engine.add(node.request(Command.ADD, container, netns, node.conf("masq")))
    assert chain in _nat_rules()

    await asyncio.to_thread(subprocess.run, ["ip", "-n", netns.name, "link", "del", "eth0"], check=True)
    assert "eth0" not in netns.links()
    await engine.delete(node.request(Command.DEL, container, netns, node.conf("masq")))

    assert chain not in _nat_rules()
