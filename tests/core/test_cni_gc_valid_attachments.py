"""The runtime's ``cni.dev/valid-attachments`` is read as a Go plugin reads it: keys, the list's and
each item's, match whatever their case (``types.GCAttachment``'s fields). A list under
``"CNI.dev/Valid-Attachments"`` was taken for no list at all, and the GC tore down every sandbox,
the ones it listed as valid included."""

from __future__ import annotations

import base64
import json
from typing import Any

from app.attach.requests import NodeRequest
from app.daemon import protocol
from tests.core.support import Command, Node, new_container_id, pending


def _gc_request(node: Node, cluster_network: str, conf_keys: dict[str, Any]) -> NodeRequest:
    shim_conf = {"cniVersion": "1.1.0", "name": "multus-cni-network", "type": "multus-shim", **conf_keys}
    body = json.dumps(
        {
            "env": {"CNI_COMMAND": "GC", "CNI_PATH": str(node.bin_dir)},
            "config": base64.b64encode(json.dumps(shim_conf).encode()).decode(),
        }
    ).encode()
    daemon_config = {
        "clusterNetwork": cluster_network,
        "confDir": str(node.conf_dir),
        "binDir": str(node.bin_dir),
        "cniDir": str(node.cni_dir),
    }
    request = protocol.interpret(protocol.decode_body(body), daemon_config=daemon_config)
    assert isinstance(request, NodeRequest)
    return request


async def test_a_gc_keeps_the_sandboxes_listed_under_keys_in_another_case(node: Node) -> None:
    cluster = node.recorder_network("cluster")
    conf = node.conf(cluster)
    engine = node.engine()
    kept, collected = new_container_id(), new_container_id()
    for container in (kept, collected):
        await engine.add(node.request(Command.ADD, container, node.new_netns(), conf))

    listed = [{"ContainerId": kept, "IfName": "eth0"}]
    await engine.gc(_gc_request(node, cluster, {"CNI.dev/Valid-Attachments": listed}))

    assert pending(node.checkpoint(kept)) == ["eth0"]
    assert node.checkpoint(collected) is None
