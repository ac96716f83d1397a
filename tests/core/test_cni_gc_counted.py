"""What the runtime's CNI GC removes is counted as the periodic GC's is (``multus_py_gc_reclaimed_total``)."""

from __future__ import annotations

import pytest

from app.attach.requests import NodeRequest
from app.cni.types import Attachment, CniError, ContainerId, IfName
from app.metrics import REGISTRY
from tests.core.support import Command, Node, new_container_id, pending


def _sandboxes_reclaimed() -> float:
    return REGISTRY.get_sample_value("multus_py_gc_reclaimed_total", {"kind": "sandbox"}) or 0.0


async def test_cni_gc_counts_each_sandbox_it_removed(node: Node) -> None:
    conf = node.conf(node.recorder_network("cluster"))
    engine = node.engine()
    kept, gone = new_container_id(), new_container_id()
    await engine.add(node.request(Command.ADD, kept, node.new_netns(), conf))
    await engine.add(node.request(Command.ADD, gone, node.new_netns(), conf, pod="pod-b"))
    before = _sandboxes_reclaimed()

    await engine.gc(
        NodeRequest(command=Command.GC, conf=conf, valid_attachments=(Attachment(kept, IfName("eth0")),))
    )

    assert node.checkpoint(gone) is None
    assert _sandboxes_reclaimed() - before == 1


async def test_cni_gc_does_not_count_a_sandbox_whose_teardown_failed(node: Node) -> None:
    conf = node.conf(node.recorder_network("stuck", fail={"code": 11, "msg": "stuck"}, failOn="DEL"))
    engine = node.engine()
    container = ContainerId(new_container_id())
    await engine.add(node.request(Command.ADD, container, node.new_netns(), conf))
    before = _sandboxes_reclaimed()

    with pytest.raises(CniError):
        await engine.gc(NodeRequest(command=Command.GC, conf=conf))

    assert pending(node.checkpoint(container)) == ["eth0"]
    assert _sandboxes_reclaimed() == before
