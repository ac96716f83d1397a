"""A DEL replayed from upstream's libcni cache whose interface name or CNI_ARGS no plugin's
environment can hold (a NUL, a lone surrogate: ``\\u0000`` and ``\\ud800`` escapes in the cache's
JSON) terminates (invariant 5b): that delegate's DEL can never run, so it is recorded as such, the
others are DELed, and the caches are removed. Before, ``exec`` raised ValueError or
UnicodeEncodeError at every try: the DEL failed with code 999 and the cache stayed, for ever."""

from __future__ import annotations

import json
import logging

import pytest

from app.store.records import HistoryEntry
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
