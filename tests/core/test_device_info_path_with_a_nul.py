"""A runtimeConfig ``CNIDeviceInfoFile`` holding a NUL byte names no file: it costs no ADD or DEL.

The runtime's ``CNIDeviceInfoFile`` reaches a delegate given no device as the runtime wrote it, and
is read back after its ADD for network-status, as upstream reads it. Device-info files are
informational (``app.attach.device_info``): a path that cannot name a file is warned about and
shown nowhere. One holding a NUL byte made Python's ``open`` and ``unlink`` raise ``ValueError``: the
ADD failed with code 999 after its delegate had run, and, its path ending in the name the daemon
gives its own files, the rollback's DEL and every later DEL of the sandbox failed too, the
attachment pending for ever (invariant 5b).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.attach import device_info
from tests.core.support import Command, Node, new_container_id


async def test_an_add_and_its_del_pass_a_device_info_path_holding_a_nul_byte(node: Node) -> None:
    engine = node.engine()
    container, netns = new_container_id(), node.new_netns()
    # its file name is the one the daemon gives the file it makes for this delegate
    path = f"{node.root}/devinfo\0/cni/cluster-{container}_eth0"
    conf = replace(node.conf(node.recorder_network("cluster")), runtime_config={"CNIDeviceInfoFile": path})

    await engine.add(node.request(Command.ADD, container, netns, conf))
    await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert node.checkpoint(container) is None


@pytest.mark.parametrize("unusable", ["\0", "\ud800"], ids=["nul", "lone-surrogate"])
def test_a_device_info_path_no_system_call_takes_is_read_as_no_file(unusable: str) -> None:
    assert device_info.read_for_status({"CNIDeviceInfoFile": f"/run/devinfo{unusable}.json"}) is None
