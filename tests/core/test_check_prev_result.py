"""CHECK consults the runtime's prevResult (CNI: the plugin must check what it names), beside the
ADD results the checkpoint recorded: an interface the runtime expects in the sandbox that is not
there fails CHECK even when the recorded results do not name it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from app.attach.errors import MultusCode
from app.attach.netconf import MultusNetConf
from app.cni.types import CniError, ErrorCode
from tests.core.support import Command, Netns, Node, new_container_id


def _with_prev_result(conf: MultusNetConf, prev_result: Any) -> MultusNetConf:
    return replace(conf, raw={**conf.raw, "prevResult": prev_result})


async def _added(node: Node) -> tuple[str, Netns, MultusNetConf]:
    conf = node.conf(node.recorder_network("cluster", result={"cniVersion": "1.0.0"}))
    container, netns = new_container_id(), node.new_netns()
    await node.engine().add(node.request(Command.ADD, container, netns, conf))
    return container, netns, conf


def _naming(netns: Netns, name: str, **interface: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "interfaces": [{"name": name, "sandbox": netns.path, **interface}]}


async def test_check_fails_when_an_interface_of_the_runtimes_prev_result_is_missing(node: Node) -> None:
    container, netns, conf = await _added(node)
    engine = node.engine()
    await engine.check(node.request(Command.CHECK, container, netns, conf))  # nothing expected: passes

    with pytest.raises(CniError) as failed:
        await engine.check(
            node.request(Command.CHECK, container, netns, _with_prev_result(conf, _naming(netns, "eth9")))
        )

    assert failed.value.code == MultusCode.INTERFACE_MISSING
    assert "eth9" in failed.value.msg
    assert "prevResult" in failed.value.msg


async def test_check_passes_when_the_runtimes_prev_result_names_what_the_sandbox_has(node: Node) -> None:
    container, netns, conf = await _added(node)

    await node.engine().check(
        node.request(Command.CHECK, container, netns, _with_prev_result(conf, _naming(netns, "lo")))
    )


async def test_check_with_a_prev_result_that_cannot_be_read_is_a_decoding_failure(node: Node) -> None:
    container, netns, conf = await _added(node)
    unreadable = {"cniVersion": "1.0.0", "ips": [{"address": "not an address"}]}

    with pytest.raises(CniError) as failed:
        await node.engine().check(
            node.request(Command.CHECK, container, netns, _with_prev_result(conf, unreadable))
        )

    assert failed.value.code == ErrorCode.DECODING_FAILURE
    assert "prevResult" in failed.value.msg
