"""A delegate writing past the daemon's limit on its stdout fails like any delegate: an ADD is rolled
back, a DEL stays pending and is retried.

The delegate is a real shell script on the node's plugin path that floods its stdout (64 MiB, then
it exits) on the command named in a file of the node (``flood-on``), and otherwise answers as a
plugin does. Whether the flood is found while it runs or at its exit, the call fails the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cni.types import CniError, ErrorCode
from tests.core.support import Command, Node, delegate_lines, new_container_id, pending, request_lines

LIMIT_MESSAGE = (
    "wrote more than 4194304 bytes to stdout, over the daemon's limit on a plugin's stdout (4 MiB)"
)


def flood_network(node: Node, name: str) -> tuple[str, Path]:
    """A network whose plugin floods stdout on the command written to the file returned (none yet)."""
    switch = node.root / "flood-on"
    plugin = node.bin_dir / "flood"
    plugin.write_text(
        "#!/bin/sh\n"
        "cat > /dev/null\n"
        f'if [ "$CNI_COMMAND" = "$(cat {switch} 2>/dev/null)" ]; then exec head -c 67108864 /dev/zero; fi\n'
        'echo \'{"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]}\'\n'
    )
    plugin.chmod(0o755)
    node.write_network(name, {"cniVersion": "1.0.0", "name": name, "type": "flood"})
    return name, switch


async def test_an_add_whose_delegate_floods_its_output_is_rolled_back(node: Node) -> None:
    flooded, switch = flood_network(node, "flooded")
    switch.write_text("ADD")
    conf = node.conf(node.recorder_network("cluster"), flooded)
    container = new_container_id()

    with pytest.raises(CniError) as failed:
        await node.engine().add(node.request(Command.ADD, container, node.new_netns(), conf))

    assert failed.value.code == ErrorCode.DECODING_FAILURE
    assert LIMIT_MESSAGE in failed.value.msg
    assert node.calls() == [("ADD", "cluster", "eth0"), ("DEL", "cluster", "eth0")]
    assert node.checkpoint(container) is None
    lines = node.history(container)
    assert delegate_lines(lines, "DEL") == [("net1", "rollback", "ok"), ("eth0", "rollback", "ok")]
    assert [(line.outcome, line.error_code) for line in request_lines(lines, "ADD")] == [("error", 6)]


async def test_a_del_whose_delegate_floods_its_output_stays_pending_until_a_retry_succeeds(
    node: Node,
) -> None:
    flooded, switch = flood_network(node, "flooded")
    conf = node.conf(node.recorder_network("cluster"), flooded)
    netns = node.new_netns()
    container = new_container_id()
    engine = node.engine()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    switch.write_text("DEL")

    with pytest.raises(CniError) as failed:
        await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert failed.value.code == ErrorCode.DECODING_FAILURE
    assert LIMIT_MESSAGE in failed.value.msg
    record = node.checkpoint(container)
    assert pending(record) == ["net1"]
    assert record is not None
    assert record.state == "deleting"

    switch.write_text("")
    await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert node.checkpoint(container) is None
