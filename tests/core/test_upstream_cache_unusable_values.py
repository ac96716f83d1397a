"""A DEL replayed from upstream's libcni cache that holds what no plugin can be given terminates
(invariant 5b): an interface name or CNI_ARGS pair no plugin's environment can hold (a NUL, a lone
surrogate: ``\\u0000`` and ``\\ud800`` escapes in the cache's JSON), or capability args a plugin
declaring them cannot decode. That delegate's DEL can never run, so it is recorded as such, the
others are DELed, and the caches are removed. Before, ``exec`` raised ValueError or
UnicodeEncodeError, or the plugin refused its config, at every try: the DEL failed with code 999
and the cache stayed, for ever."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from app.store.records import HistoryEntry
from tests.conftest import CNI_PLUGIN_DIR
from tests.core.support import Command, Node, new_container_id
from tests.core.test_delete_from_upstream_cache import recorder_conf


@pytest.mark.parametrize(
    "unusable",
    [
        {"ifName": "et\x00h1"},
        {"ifName": "\ud800"},
        {"cniArgs": [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "old\x00pod"]]},
        {"cniArgs": [["K8S_POD_NAME\ud800", "old-pod"]]},
    ],
    ids=["ifname-nul", "ifname-surrogate", "cni-args-nul", "cni-args-surrogate"],
)
async def test_a_cached_value_no_environment_holds_does_not_fail_the_del_for_ever(
    node: Node, unusable: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    container = new_container_id()
    cluster = node.write_upstream_cache(
        container, network=recorder_conf(node, "upstream-cluster"), ifname="eth0", netns=""
    )
    extra = node.write_upstream_cache(
        container, network=recorder_conf(node, "upstream-extra"), ifname="net1", netns=""
    )
    extra.write_text(json.dumps({**json.loads(extra.read_text()), **unusable}))
    conf = node.conf(node.recorder_network("cluster"))
    caplog.set_level(logging.DEBUG)

    await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert node.calls() == [("DEL", "upstream-cluster", "eth0")]
    assert not cluster.exists()
    assert not extra.exists()
    lines: dict[str, HistoryEntry] = {
        entry.network_name: entry
        for entry in node.history(container)
        if entry.command == "DEL" and entry.step == "delegate"
    }
    outcomes = {name: (entry.outcome, entry.error_code) for name, entry in lines.items()}
    assert outcomes == {
        "upstream-cluster (upstream cache)": ("ok", None),
        "upstream-extra (upstream cache)": ("error", 6),
    }
    assert "DEL can never run" in (lines["upstream-extra (upstream cache)"].error_msg or "")
    assert not [record.getMessage() for record in caplog.records if record.exc_info]


def bridge_portmap_bandwidth(node: Node) -> dict[str, object]:
    """A conflist whose plugins declare ``ips``, ``mac``, ``portMappings`` and ``bandwidth``."""
    for plugin in ("portmap", "bandwidth"):
        if not (node.bin_dir / plugin).exists():
            (node.bin_dir / plugin).symlink_to(Path(CNI_PLUGIN_DIR) / plugin)
    return {
        "cniVersion": "1.0.0",
        "name": "upstream-chain",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "mpycbrnever",  # no netns: the DEL never reaches the bridge
                "capabilities": {"ips": True, "mac": True},
                "ipam": {"type": "host-local", "subnet": "10.98.0.0/16", "dataDir": str(node.ipam_dir)},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        ],
    }


@pytest.mark.parametrize(
    "capability_args",
    [
        {"ips": "10.98.0.5/16"},
        {"mac": 5},
        {"portMappings": "8080:80"},
        {"bandwidth": {"ingressRate": -1, "ingressBurst": 1}},
        {"bandwidth": {"ingressRate": float("nan"), "ingressBurst": 1}},
    ],
    ids=["ips-string", "mac-number", "port-mappings-string", "bandwidth-negative", "bandwidth-nan"],
)
async def test_cached_capability_args_no_plugin_decodes_do_not_fail_the_del_for_ever(
    node: Node, capability_args: dict[str, object]
) -> None:
    """The plugin declaring the capability refused its DEL ("json: cannot unmarshal ..."), or the
    NaN could not be encoded, at every try: code 999 (7), the cache kept for ever."""
    container = new_container_id()
    cache = node.write_upstream_cache(
        container, network=bridge_portmap_bandwidth(node), ifname="eth0", netns=""
    )
    cache.write_text(json.dumps({**json.loads(cache.read_text()), "capabilityArgs": capability_args}))
    conf = node.conf(node.recorder_network("cluster"))

    await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert not cache.exists()
    [line] = [entry for entry in node.history(container) if entry.step == "delegate"]
    assert (line.outcome, line.error_code) == ("error", 7)
    assert f"cached capabilityArgs.{next(iter(capability_args))} must be" in (line.error_msg or "")
    assert "DEL can never run" in (line.error_msg or "")


async def test_a_cached_mac_that_is_no_mac_address_is_still_handed_to_the_del(node: Node) -> None:
    """Plugins decode a ``mac`` as a string and parse it only at ADD: their DEL runs with it."""
    container = new_container_id()
    cache = node.write_upstream_cache(
        container, network=bridge_portmap_bandwidth(node), ifname="eth0", netns=""
    )
    cache.write_text(json.dumps({**json.loads(cache.read_text()), "capabilityArgs": {"mac": "zz"}}))
    conf = node.conf(node.recorder_network("cluster"))

    await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert not cache.exists()
    [line] = [entry for entry in node.history(container) if entry.step == "delegate"]
    assert (line.outcome, line.error_code) == ("ok", None)
