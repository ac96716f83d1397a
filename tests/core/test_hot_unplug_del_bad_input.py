"""A hot-unplug DEL (``POST /delegate``) carrying values an ADD would refuse still terminates.

multus-dynamic-networks-controller retries a failed DEL for ever, so a refusal that no retry can
turn into success loops for ever (invariant 5b). As on ``/cni``: what names nothing an ADD could
have recorded (a malformed container ID or interface name) succeeds at once, touching nothing;
values the DEL does not need are dropped; the refusals that stay (the cluster network, another
pod's sandbox) are answered while the sandbox runs and turn into success once the runtime's DEL
removed it. Served by the daemon's HTTP application in process, on a real engine, store and plugins.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import RawTestServer, TestClient
from aiohttp.web import BaseRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.attach.netconf import MultusNetConf
from app.daemon.server import CniServer, Readiness
from app.store import checkpoints
from tests.core.support import Command, Netns, Node, new_container_id, pending, request_lines

DELEGATE_CONF = {"cniVersion": "1.0.0", "name": "extra", "type": "recorder"}
POD_ARGS = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a;K8S_POD_UID=uid-a"


def delegate_body(
    command: str, container_id: str, netns: str, *, conf: object = DELEGATE_CONF, **env: str | None
) -> bytes:
    """A ``/delegate`` body as the controller sends it; a variable given as None is left out."""
    environment: dict[str, str | None] = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "net1",
        "CNI_ARGS": POD_ARGS,
        "CNI_PATH": "/opt/cni/bin",
        **env,
    }
    config = base64.b64encode(json.dumps(conf).encode()).decode()
    sent = {key: value for key, value in environment.items() if value is not None}
    return json.dumps({"env": sent, "config": config, "interfaceAttributes": None}).encode()


@asynccontextmanager
async def serving(node: Node) -> AsyncIterator[TestClient[BaseRequest, None]]:
    server = CniServer(
        engine=node.engine(),
        daemon_config={"binDir": str(node.bin_dir), "cniDir": str(node.cni_dir)},
        readiness=Readiness(store_open=True, recovered=True),
        ready_hold=0.0,
    )
    client: TestClient[BaseRequest, None] = TestClient(RawTestServer(server.handle))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def running_sandbox(node: Node) -> tuple[str, Netns, MultusNetConf]:
    """A sandbox added by the runtime with the cluster network (eth0) and ``extra`` (net1)."""
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("extra"))
    netns = node.new_netns()
    container = new_container_id()
    await node.engine().add(node.request(Command.ADD, container, netns, conf))
    return container, netns, conf


async def answer(client: TestClient[BaseRequest, None], payload: bytes) -> tuple[int, dict[str, Any]]:
    response = await client.post("/delegate", data=payload)
    raw = await response.read()
    return response.status, json.loads(raw) if raw else {}


async def test_a_hot_unplug_del_without_the_pod_in_cni_args_removes_the_interface_it_names(
    node: Node,
) -> None:
    container, netns, _conf = await running_sandbox(node)

    async with serving(node) as client:
        status, error = await answer(client, delegate_body("DEL", container, netns.path, CNI_ARGS=None))

    assert (status, error) == (200, {}), "was code 4 (CNI_ARGS missing), for ever"
    assert pending(node.checkpoint(container)) == ["eth0"]
    assert node.calls()[-1] == ("DEL", "extra", "net1")


async def test_a_hot_unplug_del_with_an_invalid_pod_name_refuses_another_pods_uid_only_while_it_runs(
    node: Node,
) -> None:
    # The usable fields still guard the sandbox: only the malformed name is dropped. It was refused
    # for the name (code 4) for ever, also once the runtime had DELed the sandbox.
    container, netns, conf = await running_sandbox(node)
    args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=Pod_A;K8S_POD_UID=uid-b"
    payload = delegate_body("DEL", container, netns.path, CNI_ARGS=args)

    async with serving(node) as client:
        status, error = await answer(client, payload)
        kept = pending(node.checkpoint(container))
        await node.engine().delete(node.request(Command.DEL, container, netns, conf))
        then, _ = await answer(client, payload)

    assert status == 400
    assert error["code"] == 4
    assert "K8S_POD_UID" in error["msg"]
    assert kept == ["eth0", "net1"]
    assert then == 200


async def test_a_hot_unplug_del_of_an_interface_name_no_add_could_use_succeeds_and_touches_nothing(
    node: Node,
) -> None:
    container, netns, _conf = await running_sandbox(node)
    calls = node.calls()

    async with serving(node) as client:
        answers = [
            await answer(client, delegate_body("DEL", container, netns.path, CNI_IFNAME=ifname))
            for ifname in ("net1/", "n" * 16, "net\x001", "net\udcff", "..")
        ]

    assert answers == [(200, {})] * 5, "each was code 4, for ever"
    assert pending(node.checkpoint(container)) == ["eth0", "net1"]
    assert node.calls() == calls


async def test_a_hot_unplug_del_without_a_usable_container_id_succeeds(node: Node) -> None:
    container, netns, _conf = await running_sandbox(node)

    async with serving(node) as client:
        answers = [
            await answer(client, delegate_body("DEL", bad, netns.path))
            for bad in ("", f"{container}/x", f"\udcff{container}")
        ]
        missing = await answer(client, delegate_body("DEL", "", netns.path, CNI_CONTAINERID=None))

    assert [*answers, missing] == [(200, {})] * 4
    assert pending(node.checkpoint(container)) == ["eth0", "net1"]


async def test_a_hot_unplug_del_without_a_netns_removes_the_interface_from_the_checkpoints_netns(
    node: Node,
) -> None:
    container, _netns, _conf = await running_sandbox(node)

    async with serving(node) as client:
        status, _ = await answer(client, delegate_body("DEL", container, "", CNI_NETNS=None))

    assert status == 200
    assert pending(node.checkpoint(container)) == ["eth0"]


async def test_a_hot_unplug_del_without_cni_ifname_is_eth0_refused_only_until_the_runtime_dels_the_sandbox(
    node: Node,
) -> None:
    """Upstream's daemon, and our /cni, take a missing CNI_IFNAME for eth0: here the cluster
    network, which only the runtime's DEL removes. The refusal was for ever (variable missing)."""
    container, netns, conf = await running_sandbox(node)
    payload = delegate_body("DEL", container, netns.path, CNI_IFNAME=None)

    async with serving(node) as client:
        refused, error = await answer(client, payload)
        await node.engine().delete(node.request(Command.DEL, container, netns, conf))
        then, _ = await answer(client, payload)

    assert refused == 400
    assert error["code"] == 4
    assert "cluster network" in error["msg"]
    assert then == 200
    assert node.checkpoint(container) is None
    lines = request_lines(node.history(container), "DEL")
    assert [(line.ifname, line.trigger, line.outcome) for line in lines][-1] == ("eth0", "delegate", "ok")


async def test_a_hot_unplug_del_whose_nad_config_no_longer_loads_still_removes_the_interface(
    node: Node,
) -> None:
    """The NAD edited after the hot-plug: the DEL replays the checkpoint, the config sent is not
    read. It was refused (code 7) for ever, the interface attached until the pod went."""
    container, netns, _conf = await running_sandbox(node)
    edited = {"cniVersion": "1.0.0", "type": "recorder"}  # its name deleted

    async with serving(node) as client:
        status, error = await answer(client, delegate_body("DEL", container, netns.path, conf=edited))
        add, added = await answer(client, delegate_body("ADD", container, netns.path, conf=edited))

    assert (status, error) == (200, {})
    assert pending(node.checkpoint(container)) == ["eth0"]
    assert node.calls()[-1] == ("DEL", "extra", "net1")
    assert add == 400, "an ADD still refuses it"
    assert added["code"] == 7


ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
"""Any string, lone surrogates (bytes that were not UTF-8) and NULs included."""
VARIABLE = st.one_of(
    st.none(),
    ANY_TEXT,
    st.sampled_from(["", "eth0", "net1", "abc123", "/var/run/netns/x", "/proc/self/ns/net", POD_ARGS]),
)
CONFIG = st.one_of(
    st.none(),
    ANY_TEXT,
    st.binary(max_size=40).map(lambda raw: base64.b64encode(raw).decode()),
    st.dictionaries(st.sampled_from(["cniVersion", "name", "type", "delegates", "plugins"]), VARIABLE).map(
        lambda conf: base64.b64encode(json.dumps(conf).encode()).decode()
    ),
)
ATTRIBUTES = st.one_of(
    st.none(),
    ANY_TEXT,
    st.fixed_dictionaries(
        {},
        optional={
            "ips": st.one_of(st.lists(ANY_TEXT, max_size=3), ANY_TEXT),
            "mac": VARIABLE,
            "cni-args": st.one_of(st.none(), st.dictionaries(ANY_TEXT, ANY_TEXT, max_size=2), ANY_TEXT),
        },
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    command=st.sampled_from(["ADD", "DEL", "CHECK", "STATUS", "GC", "", "del", "DEL\x00"]),
    env=st.fixed_dictionaries(
        {},
        optional={
            key: VARIABLE for key in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
        },
    ),
    config=CONFIG,
    attributes=ATTRIBUTES,
)
async def test_no_delegate_request_is_answered_999_and_every_del_of_nothing_recorded_succeeds(
    node: Node, command: str, env: dict[str, str | None], config: str | None, attributes: object
) -> None:
    """Fuzzing the ``/delegate`` body: an error is always a CNI error with the code of what is
    wrong (never 999, never HTTP 500); and since nothing is recorded on this node, every DEL
    has nothing to remove and succeeds, whatever else it carries."""
    sent: dict[str, Any] = {
        "env": {"CNI_COMMAND": command, **{key: value for key, value in env.items() if value is not None}},
        "interfaceAttributes": attributes,
    }
    if config is not None:
        sent["config"] = config

    async with serving(node) as client:
        status, answered = await answer(client, json.dumps(sent).encode())

    if command == "DEL":
        assert (status, answered) == (200, {})
    else:
        assert status in (200, 400), answered
        assert answered == {} or answered["code"] in (1, 2, 3, 4, 6, 7), answered
        assert not answered or isinstance(answered["msg"], str)
    assert node.db.read_sync(checkpoints.sandbox_summaries) == [], "nothing was recorded"
