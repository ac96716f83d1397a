"""What a user who may create NADs and pods can make one ADD hold and run: bounded at resolution.

The fixtures of ``test_hostile_pod_and_nad_input`` (the API emulator over real HTTP, the real
watchers and mirror, the in-process engine with its real store, the recorder plugin, a real
netns). Each ADD is refused with code 7 naming the NAD, the field and the bound, before anything
is recorded or run; the runtime's DEL afterwards succeeds.
"""

from __future__ import annotations

import json
import tracemalloc

from app.attach import nad_config
from app.attach.networks import MAX_ADD_CONFIG_BYTES
from app.cni.types import ErrorCode
from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Database
from tests.watch.support import NETWORKS
from tests.watch.test_hostile_pod_and_nad_input import Node, create_pod, node, with_nads

__all__ = ["node"]  # the fixture, imported for these tests


def recorder_config(node: Node, size: int) -> str:
    """The recorder's NAD config padded to exactly ``size`` bytes."""
    bare = json.loads(node.recorder_nad())
    bare["pad"] = ""
    padding = size - len(json.dumps(bare))
    bare["pad"] = "x" * padding
    return json.dumps(bare)


async def test_a_nad_config_of_a_mebibyte_is_refused_before_it_is_parsed(
    emulator: KubeApiEmulator, database: Database, node: Node
) -> None:
    """1.4 MiB (etcd takes it) was parsed, recorded and run; 256 selections of it, 350 MiB."""
    size = 1400 * 1024
    await with_nads(emulator, database, {("default", "big"): recorder_config(node, size)})
    uid = create_pod(emulator, {NETWORKS: "big"})
    request = node.request(uid)

    tracemalloc.start()
    try:
        error = await node.refused_add(request)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert error.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert error.msg == (
        f"network-attachment-definition default/big: spec.config is {size} bytes; "
        f"a network's configuration may be at most {nad_config.MAX_CONFIG_BYTES} bytes"
    )
    assert peak < size, "the refused ADD held less than the config it refused"


async def test_a_conflist_of_five_thousand_plugins_is_refused_before_any_runs(
    emulator: KubeApiEmulator, database: Database, node: Node
) -> None:
    """Each plugin of a chain runs in turn: 90,000 fit in one NAD (hours of ADD), 5,000 within
    ``nad_config.MAX_CONFIG_BYTES``."""
    chain = {"cniVersion": "1.0.0", "plugins": [{"type": "recorder"}] * 5000}
    compact = json.dumps(chain, separators=(",", ":"))
    assert len(compact) <= nad_config.MAX_CONFIG_BYTES
    await with_nads(emulator, database, {("default", "chain"): compact})
    uid = create_pod(emulator, {NETWORKS: "chain"})

    error = await node.refused_add(node.request(uid))

    assert error.msg == (
        'network-attachment-definition default/chain: "plugins" holds 5000 plugins; '
        f"a network may chain at most {nad_config.MAX_PLUGINS}"
    )


async def test_networks_whose_configs_together_pass_the_bound_are_refused_before_any_is_recorded(
    emulator: KubeApiEmulator, database: Database, node: Node
) -> None:
    """Each within its own bound, 66 selections of a 127 KiB NAD came to 8.2 MiB of intents."""
    await with_nads(emulator, database, {("default", "wide"): recorder_config(node, 127 * 1024)})
    selections = MAX_ADD_CONFIG_BYTES // (127 * 1024) + 1
    uid = create_pod(emulator, {NETWORKS: ",".join(["wide"] * selections)})

    error = await node.refused_add(node.request(uid))

    assert error.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert error.msg.startswith("network-attachment-definition default/wide: spec.config: brings the ADD's")
    assert error.msg.endswith(f"one ADD may record at most {MAX_ADD_CONFIG_BYTES} bytes")
