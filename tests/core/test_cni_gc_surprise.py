"""A surprise in one sandbox's teardown does not end the runtime's CNI GC: the others are still
collected, the runtime hears the failure, and the GC has its history line."""

from __future__ import annotations

import pytest

from app.attach.requests import NodeRequest
from app.cni.types import CniError, ErrorCode
from app.metrics import REGISTRY
from tests.core.support import Command, Node, SurpriseAtFirstDel, new_container_id, pending


def _unexpected_gc_errors() -> float:
    return REGISTRY.get_sample_value("multus_py_engine_unexpected_errors_total", {"step": "gc"}) or 0.0


async def test_a_surprise_in_one_sandboxs_teardown_does_not_end_the_runtimes_gc(node: Node) -> None:
    engine = node.engine(crash=SurpriseAtFirstDel())
    conf = node.conf(node.recorder_network("cluster"))
    first, second = new_container_id(), new_container_id()
    await engine.add(node.request(Command.ADD, first, node.new_netns(), conf))
    await engine.add(node.request(Command.ADD, second, node.new_netns(), conf, pod="pod-b"))
    counted = _unexpected_gc_errors()

    with pytest.raises(CniError) as failed:
        await engine.gc(NodeRequest(command=Command.GC, conf=conf))

    assert failed.value.code == ErrorCode.INTERNAL
    records = {container: node.checkpoint(container) for container in (first, second)}
    assert sorted(pending(record) for record in records.values()) == [[], ["eth0"]]
    assert _unexpected_gc_errors() == counted + 1
    lines = [line for line in node.history("") if line.command == Command.GC]
    assert [(line.step, line.error_code) for line in lines] == [("request", ErrorCode.INTERNAL)]
