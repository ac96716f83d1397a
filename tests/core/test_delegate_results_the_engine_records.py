"""What a delegate prints that Go's types accept is recorded and answered, not turned into code 999."""

from __future__ import annotations

import json

from tests.core.support import Command, Node, new_container_id


async def test_a_result_with_null_lists_is_recorded_and_answered_as_go_reads_it(node: Node) -> None:
    # Go decodes a null list as an empty one (and prints it as absent); ours once iterated the null
    # while deriving the result's facts, failed the ADD with code 999 and rolled it back.
    printed = {"cniVersion": "1.0.0", "interfaces": None, "ips": None, "routes": None, "dns": None}
    conf = node.conf(node.recorder_network("cluster", result=printed))
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()

    answer = await engine.add(node.request(Command.ADD, container, netns, conf))

    assert answer == {"cniVersion": "1.1.0"}
    record = node.checkpoint(container)
    assert record is not None
    assert record.state == "ready"
    [attachment] = record.attachments
    assert attachment.result is not None
    assert json.loads(attachment.result) == {"cniVersion": "1.0.0"}
    await engine.check(node.request(Command.CHECK, container, netns, conf))
    await engine.delete(node.request(Command.DEL, container, netns, conf))
    assert node.checkpoint(container) is None
