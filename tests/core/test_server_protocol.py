"""The daemon's shim-facing HTTP application in process: upstream's protocol paths, readiness, GC.

``CniServer.handle`` runs on aiohttp's low-level test server (and once on a real unix socket) in front
of a real engine, store and plugins; requests are the bodies a shim sends.
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import RawTestServer, TestClient
from aiohttp.web import BaseRequest

from app.daemon import listener
from app.daemon import server as daemon_server
from app.daemon.server import CniServer, Readiness
from app.gc.collector import GarbageCollector
from tests.core.support import Node, new_container_id, pending
from tests.core.test_spool_retries import dels, upstream_sandbox

SHIM_CONF = {"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus-shim"}


def body(command: str, container_id: str = "", netns: str = "", **env: str) -> bytes:
    environment = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a",
        **env,
    }
    config = base64.b64encode(json.dumps(SHIM_CONF).encode()).decode()
    return json.dumps({"env": environment, "config": config}).encode()


def daemon_config(node: Node, cluster_network: str) -> dict[str, Any]:
    return {
        "stateDir": str(node.root / "state"),  # its spool is the one an operator's GC pass replays
        "socketDir": str(node.root / "run"),  # takes none of the shim default spool's other entries
        "clusterNetwork": cluster_network,
        "confDir": str(node.conf_dir),
        "binDir": str(node.bin_dir),
        "cniDir": str(node.cni_dir),
    }


Serve = Callable[..., Any]


@pytest.fixture
def serve(node: Node) -> Serve:
    """``async with serve(readiness, ...) as client`` — the application on a test server."""

    @asynccontextmanager
    async def serving(
        readiness: Readiness, *, with_collector: bool = False, cluster_network: str = ""
    ) -> AsyncIterator[TestClient[BaseRequest, None]]:
        engine = node.engine()
        collector = GarbageCollector(engine=engine, db=node.db) if with_collector else None
        cni_server = CniServer(
            engine=engine,
            daemon_config=daemon_config(node, cluster_network or node.recorder_network("cluster")),
            readiness=readiness,
            collector=collector,
            ready_hold=0.0,  # a request that needs readiness is refused at once (no waiting here)
        )
        client: TestClient[BaseRequest, None] = TestClient(RawTestServer(cni_server.handle))
        await client.start_server()
        try:
            yield client
        finally:
            await client.close()

    return serving


def ready() -> Readiness:
    return Readiness(store_open=True, recovered=True)


@asynccontextmanager
async def on_a_socket(node: Node) -> AsyncIterator[Path]:
    """A ready daemon server with a recorder cluster network, on a unix socket of its own, as the
    daemon binds it; its path."""
    cni_server = CniServer(
        engine=node.engine(),
        daemon_config=daemon_config(node, node.recorder_network("cluster")),
        readiness=ready(),
    )
    with tempfile.TemporaryDirectory(prefix="mpyc-") as directory:
        socket_path = Path(directory) / "sock" / "multus.sock"
        runner = await daemon_server.start(cni_server, listener.bind(socket_path))
        try:
            yield socket_path
        finally:
            await runner.cleanup()


async def test_add_answers_the_cni_result_and_del_an_empty_200(node: Node, serve: Serve) -> None:
    netns = node.new_netns()
    container = new_container_id()
    async with serve(ready()) as client:
        added = await client.post("/cni", data=body("ADD", container, netns.path))
        answer = await added.json()
        deleted = await client.post("/cni", data=body("DEL", container, netns.path))

        assert added.status == 200
        assert answer["Result"]["cniVersion"] == "1.1.0"
        assert answer["Result"]["ips"] == [{"address": "10.10.1.2/24", "interface": 0}]
        assert added.headers["Connection"] == "close"
        assert deleted.status == 200
        assert await deleted.read() == b""
    assert node.calls() == [("ADD", "cluster", "eth0"), ("DEL", "cluster", "eth0")]
    assert node.checkpoint(container) is None


async def test_before_readiness_add_is_refused_with_code_11_but_del_is_served(
    node: Node, serve: Serve
) -> None:
    netns = node.new_netns()
    container = new_container_id()
    async with serve(Readiness(store_open=True, recovered=False)) as client:
        refused = await client.post("/cni", data=body("ADD", container, netns.path))
        error = await refused.json()
        deleted = await client.post("/cni", data=body("DEL", container, netns.path))
        readyz = await client.get("/readyz")
        healthz = await client.get("/healthz")

    assert refused.status == 503
    assert error["code"] == 11
    assert "start-up recovery has not finished" in error["msg"]
    assert deleted.status == 200
    assert (readyz.status, healthz.status) == (500, 200)
    assert node.calls() == []
    assert node.checkpoint(container) is None


@pytest.mark.parametrize(
    ("payload", "code", "named"),
    [
        (b"{not json", 6, "not valid JSON"),
        (body("ADD", "", "/var/run/netns/x"), 4, "CNI_CONTAINERID"),
        (body("ADD", "abc", ""), 4, "CNI_NETNS"),
        (body("FROB", "abc", "/var/run/netns/x"), 4, "CNI_COMMAND"),
        (body("ADD", "abc", "/var/run/netns/x", CNI_ARGS="novalue"), 4, "CNI_ARGS"),
    ],
    ids=["not-json", "no-container", "no-netns", "bad-command", "bad-args"],
)
async def test_invalid_requests_get_a_cni_error_naming_the_field_and_the_server_serves_on(
    node: Node, serve: Serve, payload: bytes, code: int, named: str
) -> None:
    netns = node.new_netns()
    container = new_container_id()
    async with serve(ready()) as client:
        refused = await client.post("/cni", data=payload)
        error = await refused.json()
        then = await client.post("/cni", data=body("ADD", container, netns.path))

    assert refused.status == 400
    assert error["code"] == code
    assert named in error["msg"] + error.get("details", "")
    assert then.status == 200
    assert pending(node.checkpoint(container)) == ["eth0"]
    assert [call[0] for call in node.calls()] == ["ADD"]


async def test_a_delegates_error_code_reaches_the_shim_unchanged(node: Node, serve: Serve) -> None:
    failing = node.recorder_network("limited", fail={"code": 51, "msg": "limited"}, failOn="ADD")
    netns = node.new_netns()
    async with serve(ready(), cluster_network=failing) as client:
        refused = await client.post("/cni", data=body("ADD", new_container_id(), netns.path))
        error = await refused.json()

    assert refused.status == 400
    assert error["code"] == 51
    assert "limited" in error["msg"]


async def test_unknown_paths_are_404_and_wrong_methods_405_as_upstream_answers_them(serve: Serve) -> None:
    async with serve(ready()) as client:
        missing = await client.post("/nowhere", data=b"")
        wrong = await client.get("/cni")
        wrong_body = await wrong.read()

    assert (missing.status, wrong.status) == (404, 405)
    assert wrong_body == b"Method not allowed\n"
    assert wrong.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert wrong.headers["X-Content-Type-Options"] == "nosniff"
    assert wrong.headers["Allow"] == "POST"


async def test_operator_gc_reports_orphans_and_a_dry_run_collects_nothing(node: Node, serve: Serve) -> None:
    netns = node.new_netns()
    container = new_container_id()
    async with serve(ready(), with_collector=True) as client:
        await client.post("/cni", data=body("ADD", container, netns.path))
        netns.delete()
        dry = await (await client.post("/gc?dryRun=true")).json()
        assert pending(node.checkpoint(container)) == ["eth0"]
        done = await (await client.post("/gc")).json()

    assert dry["dryRun"] is True
    assert [o["reason"] for o in dry["orphans"]] == ["netns-gone"]
    assert dry["collected"] == []
    assert done["collected"] == [container]
    assert node.checkpoint(container) is None


@pytest.mark.parametrize(
    ("query", "code", "named"),
    [
        ("dryrun=true", 2, "'dryrun'"),
        ("dry_run=1", 2, "'dry_run'"),
        ("dryRun=true&force=1", 2, "'force'"),
        ("dryRun=true&dryRun=false", 2, "dryRun is given more than once"),
        ("dryRun=maybe", 6, "dryRun 'maybe'"),
        ("dryRun=", 6, "dryRun ''"),
    ],
)
async def test_an_operator_gc_with_a_misspelt_or_odd_dry_run_is_refused_not_run_for_real(
    node: Node, serve: Serve, query: str, code: int, named: str
) -> None:
    """A dry run asked for with a typo must not collect orphans and replay the spool for real."""
    netns = node.new_netns()
    container = new_container_id()
    async with serve(ready(), with_collector=True) as client:
        await client.post("/cni", data=body("ADD", container, netns.path))
        netns.delete()
        refused = await client.post(f"/gc?{query}")
        answer = await refused.json()

    assert refused.status == 400
    assert answer["code"] == code
    assert named in answer["msg"]
    assert pending(node.checkpoint(container)) == ["eth0"], "nothing collected"


async def test_operator_gc_replays_the_spooled_dels_before_its_pass_as_a_periodic_pass_does(
    node: Node, serve: Serve
) -> None:
    """An operator running ``multusctl gc`` after an outage expects the DELs the shim spooled while
    the daemon was away to be taken too, not left for the next periodic pass."""
    netns = node.new_netns()
    container = new_container_id()
    spool_dir = node.root / "state" / "spool"
    spool_dir.mkdir(parents=True)
    async with serve(ready(), with_collector=True) as client:
        await client.post("/cni", data=body("ADD", container, netns.path))
        entry = spool_dir / f"del-{time.time_ns()}-1-{container}.json"  # named as the shim names it
        entry.write_bytes(body("DEL", container, netns.path))
        dry = await (await client.post("/gc?dryRun=true")).json()
        assert entry.exists(), "a dry run replays nothing"
        done = await (await client.post("/gc")).json()

    assert node.checkpoint(container) is None
    assert not entry.exists()
    assert dry["spool"] is None
    assert done["spool"] == {
        "replayed": [entry.name],
        "failed": [],
        "kept": [],
        "deferred": [],
        "rejected": [],
        "superseded": [],
        "temporariesRemoved": [],
        "unreadable": [],
    }
    assert done["orphans"] == [], "the replayed DEL removed the sandbox before the pass looked"


async def test_operator_gc_tries_a_spooled_del_that_failed_lately_at_once(node: Node, serve: Serve) -> None:
    """A spooled DEL kept after failing waits out its backoff on the periodic passes; an operator
    asking for a pass now gets it tried now, as the pass tries orphans that failed lately."""
    spool_dir = node.root / "state" / "spool"
    spool_dir.mkdir(parents=True)
    container = upstream_sandbox(node)
    entry = spool_dir / f"del-{time.time_ns()}-1-{container}.json"
    entry.write_bytes(body("DEL", container, ""))
    async with serve(ready(), with_collector=True) as client:
        first = await (await client.post("/gc")).json()
        second = await (await client.post("/gc")).json()

    assert dels(node) == 2
    assert [kept["entry"] for kept in first["spool"]["kept"]] == [entry.name]
    assert [(kept["entry"], kept["failures"]) for kept in second["spool"]["kept"]] == [(entry.name, 2)]
    assert second["spool"]["deferred"] == []
    assert entry.exists()


async def test_operator_gc_is_refused_without_a_collector(serve: Serve) -> None:
    async with serve(ready()) as client:
        refused = await client.post("/gc")
        error = await refused.json()

    assert refused.status == 503
    assert error["code"] == 11


async def test_the_server_listens_on_a_private_unix_socket_and_refuses_a_second_one(node: Node) -> None:
    async with on_a_socket(node) as socket_path:
        assert socket_path.stat().st_mode & 0o777 == 0o600
        connector = aiohttp.UnixConnector(path=str(socket_path))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get("http://multus/readyz") as response,
        ):
            assert response.status == 200
        with pytest.raises(listener.SocketInUseError):
            listener.prepare_socket(socket_path)


async def test_a_client_that_expects_100_continue_is_told_to_send_its_body(node: Node) -> None:
    """``Expect: 100-continue`` (curl sends it for a large body): the client waits for the interim
    answer before it sends the body, so the server must send it rather than wait for the body."""
    netns = node.new_netns()
    container = new_container_id()
    request = body("ADD", container, netns.path)
    async with on_a_socket(node) as socket_path:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        writer.write(
            b"POST /cni HTTP/1.1\r\nHost: multus\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(request)
        )
        interim = await reader.readuntil(b"\r\n\r\n")
        writer.write(request)
        answer = await reader.read()
        writer.close()

    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert node.calls() == [("ADD", "cluster", "eth0")]
    assert pending(node.checkpoint(container)) == ["eth0"]


async def test_status_before_the_daemon_is_ready_is_answered_at_once_with_code_50_and_the_reason(
    node: Node,
) -> None:
    """A runtime's STATUS asks whether an ADD can be served now: held for readiness like an ADD
    (30 s), it stalled the runtime's status check and then said code 11, which STATUS does not use."""
    readiness = Readiness(store_open=True, recovered=False)
    cni_server = CniServer(
        engine=node.engine(),
        daemon_config=daemon_config(node, node.recorder_network("cluster")),
        readiness=readiness,
        ready_hold=30.0,
    )
    status = json.dumps({"cniVersion": "1.1.0", "name": "multus-cni-network", "type": "multus-shim"})
    request = json.loads(body("STATUS"))
    request["config"] = base64.b64encode(status.encode()).decode()
    client: TestClient[BaseRequest, None] = TestClient(RawTestServer(cni_server.handle))
    await client.start_server()
    try:
        async with asyncio.timeout(10):  # far below the hold: answered, not held
            answered = await client.post("/cni", data=json.dumps(request).encode())
            answer = await answered.json()
            readiness.recovered = True
            served = await client.post("/cni", data=json.dumps(request).encode())
    finally:
        await client.close()

    assert answered.status == 400
    assert answer["code"] == 50
    assert answer["msg"] == "multus daemon is not ready: start-up recovery has not finished"
    assert served.status == 200


@pytest.mark.parametrize(
    ("framing", "payload"),
    [
        pytest.param(b"Content-Encoding: gzip\r\nContent-Length: 5\r\n", b"hello", id="not-gzip"),
        pytest.param(b"Content-Encoding: deflate\r\nContent-Length: 5\r\n", b"hello", id="not-deflate"),
    ],
)
async def test_a_body_whose_content_encoding_does_not_decode_is_code_6_and_logs_no_traceback(
    node: Node, caplog: pytest.LogCaptureFixture, framing: bytes, payload: bytes
) -> None:
    """The client's fault, answered as such: aiohttp's payload error went past the body's reader
    into code 999 ("internal error") with a traceback, and a second one, "Unhandled exception",
    when aiohttp then drained the body."""
    async with on_a_socket(node) as socket_path:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        writer.write(b"POST /cni HTTP/1.1\r\nHost: multus\r\n" + framing + b"\r\n" + payload)
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()

    head, _, error_body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    error = json.loads(error_body)
    assert error["code"] == 6, error
    assert [record.getMessage() for record in caplog.records if record.exc_info] == []
    assert node.calls() == []
