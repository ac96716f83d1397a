"""Hostile bytes on the daemon socket: each symptom of issue 11 item 2 as its own regression test.

Odd bytes in the CNI variables, a body nested 10,000 deep, malformed or truncated HTTP, a client
that half-closes after its request, a body over the size bound: each gets a CNI error object
(codes 4/6/7, never 999) naming what is wrong, nothing is recorded, the daemon keeps serving and
the runtime's DEL for the same sandbox succeeds. Also ``connectionLimit`` (requests beyond it
wait, none dropped) and requests held, not refused, until the daemon is ready.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.sandbox.processes import free_port
from tests.e2e.conftest import Cluster, Netns, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]

MAX_BODY_BYTES = 4 * 1024 * 1024  # app.daemon.server.MAX_BODY_BYTES, seen from outside


def envelope(
    cluster: Cluster, command: str, env: dict[str, str], conf: dict[str, Any] | bytes | None = None
) -> bytes:
    """A ``POST /cni`` body as a shim builds it (lone surrogates travel as ``\\udcxx`` escapes)."""
    raw = conf if isinstance(conf, bytes) else json.dumps(conf or cluster.shim_conf()).encode()
    return json.dumps(
        {"env": {"CNI_COMMAND": command, **env}, "config": base64.b64encode(raw).decode()}
    ).encode()


def runtime_env(cluster: Cluster, container: str, netns: Netns | str) -> dict[str, str]:
    pod_suffix = hashlib.sha256(container.encode()).hexdigest()[:8]
    return {
        "CNI_CONTAINERID": container,
        "CNI_NETNS": netns.path if isinstance(netns, Netns) else netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(cluster.bin_dir),
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{pod_suffix}",
    }


def exchange(
    cluster: Cluster, data: bytes, *, half_close: bool = False, timeout: float = 60
) -> tuple[int, bytes]:
    """Send raw bytes on the daemon socket, optionally half-close, read the whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(cluster.socket_dir / "multus.sock"))
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response, "the daemon closed the connection without an answer"
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def http_post(body: bytes, *, content_length: int | None = None) -> bytes:
    length = len(body) if content_length is None else content_length
    return (
        b"POST /cni HTTP/1.1\r\nHost: dummy\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {length}\r\n\r\n".encode()
        + body
    )


def cni_error(status: int, body: bytes) -> dict[str, Any]:
    assert status in (400, 503), (status, body)
    error = json.loads(body)
    assert isinstance(error["code"], int)
    assert error["code"] != 999, error
    assert error["msg"]
    return dict(error)


def recorded(cluster: Cluster, container: str | None = None) -> tuple[int, int]:
    where, args = ("WHERE container_id = ?", (container,)) if container else ("", ())
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        sandboxes = connection.execute(f"SELECT count(*) FROM sandboxes {where}", args).fetchone()[0]
        attachments = connection.execute(f"SELECT count(*) FROM attachments {where}", args).fetchone()[0]
    return sandboxes, attachments


def assert_deletable_and_gone(cluster: Cluster, container: str, netns: Netns) -> None:
    """The runtime's DEL for the sandbox succeeds and leaves nothing."""
    status, body = cluster.post("/cni", envelope(cluster, "DEL", runtime_env(cluster, container, netns)))
    assert status == 200, body
    assert recorded(cluster, container) == (0, 0)
    assert netns.links() == {"lo"}
    assert cluster.daemon is not None
    assert cluster.daemon.poll() is None


@pytest.fixture
def serving(started: Any) -> Cluster:
    cluster: Cluster = started()
    return cluster


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        pytest.param(
            "CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p\udcff", "CNI_ARGS", id="non-utf8-byte-in-cni-args"
        ),
        pytest.param(
            "CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p\ud800", "CNI_ARGS", id="lone-surrogate-in-cni-args"
        ),
        pytest.param("CNI_IFNAME", "eth\x000", "CNI_IFNAME", id="nul-in-ifname"),
        pytest.param("CNI_IFNAME", "eth0\x1b", "interface name", id="trailing-control-character-in-ifname"),
        pytest.param("CNI_NETNS", "/var/run/netns/\udcff", "CNI_NETNS", id="surrogate-in-netns"),
        pytest.param("CNI_NETNS", "relative/netns", "CNI_NETNS", id="relative-netns"),
        pytest.param("CNI_NETNS", "/var/run/netns/mp-gone", "CNI_NETNS", id="netns-that-does-not-exist"),
        pytest.param("CNI_CONTAINERID", "../../x", "containerID", id="container-id-with-a-path"),
        pytest.param("CNI_CONTAINERID", "c\udcff", "CNI_CONTAINERID", id="non-utf8-container-id"),
        pytest.param("CNI_PATH", "/opt/cni/bin\x00", "CNI_PATH", id="nul-in-cni-path"),
    ],
)
def test_odd_bytes_in_a_variable_are_code_4_nothing_is_recorded_and_del_succeeds(
    serving: Cluster, variable: str, value: str, named: str
) -> None:
    cluster = serving
    netns = cluster.new_netns()
    container = new_container_id()
    env = {**runtime_env(cluster, container, netns), variable: value}

    error = cni_error(*cluster.post("/cni", envelope(cluster, "ADD", env)))

    assert error["code"] == 4
    assert named in error["msg"]
    assert recorded(cluster) == (0, 0)
    status, body = cluster.post("/cni", envelope(cluster, "DEL", env))
    assert status == 200, f"the runtime's DEL, with the same odd value, must terminate: {body!r}"
    assert_deletable_and_gone(cluster, container, netns)


@pytest.mark.parametrize(
    "conf",
    [
        pytest.param(b'{"cniVersion": "1.0.0", "name": "multus\xff", "type": "multus-shim"}', id="not-utf8"),
        pytest.param(
            json.dumps(
                {"cniVersion": "1.0.0", "name": "m", "type": "multus-shim", "delegates": "x"}
            ).encode(),
            id="delegates-not-a-list",
        ),
    ],
)
def test_a_del_whose_conf_is_unusable_tears_down_what_the_checkpoint_holds(
    serving: Cluster, conf: bytes
) -> None:
    """The conf the runtime sends with a DEL may no longer be the one its ADD got (a shim conf
    edited since, by hand or by a broken installer): the DEL replays the checkpoint, so the conf
    must not make it fail at every retry, for ever, with the pod's interfaces in place."""
    cluster = serving
    netns = cluster.new_netns()
    container = new_container_id()
    env = runtime_env(cluster, container, netns)
    status, body = cluster.post("/cni", envelope(cluster, "ADD", env))
    assert status == 200, body
    assert recorded(cluster, container) != (0, 0)

    status, body = cluster.post("/cni", envelope(cluster, "DEL", env, conf))

    assert status == 200, body
    assert recorded(cluster, container) == (0, 0)
    assert netns.links() == {"lo"}


@pytest.mark.parametrize("where", ["body", "config"])
def test_a_request_nested_10000_deep_is_code_6_not_a_recursion_error(serving: Cluster, where: str) -> None:
    cluster = serving
    netns = cluster.new_netns()
    container = new_container_id()
    deep = "[" * 10_000 + "]" * 10_000
    env = runtime_env(cluster, container, netns)
    if where == "config":
        conf = json.dumps(cluster.shim_conf())[:-1] + f', "deep": {deep}}}'
        body = envelope(cluster, "ADD", env, conf.encode())
    else:
        body = envelope(cluster, "ADD", env)[:-1] + f', "deep": {deep}}}'.encode()

    error = cni_error(*cluster.post("/cni", body))

    assert error["code"] == 6
    assert "nested deeper" in error["msg"] + error.get("details", "")
    assert recorded(cluster) == (0, 0)
    assert_deletable_and_gone(cluster, container, netns)


def test_a_client_that_half_closes_after_a_whole_add_still_gets_its_answer(serving: Cluster) -> None:
    cluster = serving
    netns = cluster.new_netns()
    container = new_container_id()

    status, body = exchange(
        cluster, http_post(envelope(cluster, "ADD", runtime_env(cluster, container, netns))), half_close=True
    )

    assert status == 200, body
    assert json.loads(body)["Result"]["ips"][0]["address"].startswith("10.240.0.")
    assert netns.links() == {"lo", "eth0"}
    assert recorded(cluster, container) == (1, 1)
    assert_deletable_and_gone(cluster, container, netns)


@pytest.mark.parametrize(
    ("data", "half_close", "said"),
    [
        pytest.param(b"GARBAGE\r\n\r\n", False, "malformed HTTP", id="garbage-request-line"),
        pytest.param(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 4, True, "malformed HTTP", id="tls-hello"
        ),
        pytest.param(
            b"POST /cni HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n{}",
            False,
            "malformed HTTP",
            id="bad-length",
        ),
        pytest.param(b"POST /cni HTTP/1.1\r\nBad Header\r\n\r\n", False, "malformed HTTP", id="bad-header"),
        pytest.param(
            b"POST /cni HTTP/1.1\r\nHost: x\r\n",
            True,
            "before the end of the headers",
            id="headers-cut-short",
        ),
        pytest.param(
            http_post(b"{}", content_length=100), True, "shorter than its Content-Length", id="length-too-big"
        ),
        pytest.param(
            http_post(b'{"env": {}, "con', content_length=5),
            True,
            "not valid JSON|malformed HTTP",  # the excess is a pipelined second request
            id="length-too-small",
        ),
        pytest.param(
            http_post(b"", content_length=MAX_BODY_BYTES + 1), True, "larger than", id="declared-too-large"
        ),
        pytest.param(http_post(b"x" * (MAX_BODY_BYTES + 10)), False, "larger than", id="body-too-large"),
    ],
)
def test_malformed_http_gets_a_cni_error_body_and_the_daemon_keeps_serving(
    serving: Cluster, data: bytes, half_close: bool, said: str
) -> None:
    cluster = serving

    status, body = exchange(cluster, data, half_close=half_close)

    error = cni_error(status, body)
    assert error["code"] == 6
    assert any(part in error["msg"] + error.get("details", "") for part in said.split("|"))
    assert recorded(cluster) == (0, 0)
    netns = cluster.new_netns()
    assert_deletable_and_gone(cluster, new_container_id(), netns)


def test_garbage_pipelined_after_an_add_gets_a_cni_error_or_the_answer_and_nothing_is_left(
    serving: Cluster,
) -> None:
    cluster = serving
    netns = cluster.new_netns()
    container = new_container_id()
    request = http_post(envelope(cluster, "ADD", runtime_env(cluster, container, netns)))

    status, body = exchange(cluster, request + b"GARBAGE \x00\xff\r\n\r\n")

    if status == 200:  # the ADD arrived in its own read and was served: it must be whole
        assert json.loads(body)["Result"]
        assert recorded(cluster, container) == (1, 1)
    else:
        assert cni_error(status, body)["code"] == 6
        assert recorded(cluster, container) == (0, 0)
    assert_deletable_and_gone(cluster, container, netns)


def _blocking_plugin(cluster: Cluster) -> tuple[Path, Path]:
    """A plugin that logs ``start``/``end`` per ADD and waits for a release file in between."""
    log, release = cluster.root / "blocker.log", cluster.root / "release"
    script = cluster.bin_dir / "blocker"
    script.write_text(
        "#!/bin/sh\n"
        "cat >/dev/null\n"
        f'[ "$CNI_COMMAND" = ADD ] || exit 0\n'
        f'echo "start $CNI_CONTAINERID" >>{log}\n'
        f"while [ ! -e {release} ]; do sleep 0.02; done\n"
        f'echo "end $CNI_CONTAINERID" >>{log}\n'
        'echo \'{"cniVersion": "1.0.0"}\'\n'
    )
    script.chmod(0o755)
    conf = {"cniVersion": "1.0.0", "name": "blocking", "plugins": [{"type": "blocker"}]}
    cluster.write_network(cluster.net_d, "10-blocking.conflist", conf)
    return log, release


def _gauge(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(0.05)


def test_connection_limit_1_answers_two_concurrent_adds_one_at_a_time(cluster: Cluster) -> None:
    log, release = _blocking_plugin(cluster)
    port = free_port()
    cluster.daemon_config.update(
        clusterNetwork=str(cluster.net_d / "10-blocking.conflist"), connectionLimit=1, metricsPort=port
    )
    cluster.start_daemon()
    containers = [new_container_id(), new_container_id()]
    answers: dict[str, tuple[int, bytes]] = {}

    netnses = {container: cluster.new_netns() for container in containers}

    def add(container: str) -> None:
        env = runtime_env(cluster, container, netnses[container])
        answers[container] = cluster.post("/cni", envelope(cluster, "ADD", env))

    first = threading.Thread(target=add, args=(containers[0],))
    first.start()
    _wait_for(lambda: log.exists() and log.read_text().count("start") == 1, "the first ADD running")
    second = threading.Thread(target=add, args=(containers[1],))
    second.start()
    _wait_for(lambda: _gauge(port, "multus_py_server_requests_waiting") == 1, "the second ADD waiting")
    assert log.read_text().count("start") == 1, "the second ADD ran beside the first"
    assert _gauge(port, "multus_py_server_requests_active") == 1
    release.write_text("")
    first.join(60)
    second.join(60)

    assert [answers[c][0] for c in containers] == [200, 200], answers
    assert log.read_text().split() == [
        "start",
        containers[0],
        "end",
        containers[0],
        "start",
        containers[1],
        "end",
        containers[1],
    ]
    assert _gauge(port, "multus_py_server_requests_waiting") == 0
    for container in containers:
        env = runtime_env(cluster, container, netnses[container])
        status, _ = cluster.post("/cni", envelope(cluster, "DEL", env))
        assert status == 200


def test_an_add_before_the_daemon_is_ready_is_held_and_served_not_refused(cluster: Cluster) -> None:
    indicator = cluster.root / "primary-ready"
    cluster.write_network(
        cluster.net_d, "10-primary.conflist", cluster.bridge_conflist("primary", "10.240.0.0/24")
    )
    cluster.daemon_config.update(
        clusterNetwork=str(cluster.net_d / "10-primary.conflist"),
        readinessindicatorfile=str(indicator),
        autoconfIntervalSeconds=0.1,  # the indicator is looked for every 0.05 s, not every second
    )
    cluster.start_daemon(wait=False)
    _wait_for(lambda: cluster._readyz() == 500, "the daemon serving, not ready")
    netns, early = cluster.new_netns(), cluster.new_netns()
    container, other = new_container_id(), new_container_id()
    answer: list[tuple[int, bytes]] = []
    held = threading.Thread(
        target=lambda: answer.append(
            cluster.post("/cni", envelope(cluster, "ADD", runtime_env(cluster, container, netns)))
        )
    )
    held.start()
    _wait_for(lambda: "holding ADD" in cluster.daemon_log.read_text(), "the ADD held")

    status, _body = cluster.post("/cni", envelope(cluster, "DEL", runtime_env(cluster, other, early)))
    assert status == 200, "DEL needs no readiness"
    assert not answer, "the ADD was answered before the daemon was ready"
    indicator.write_text("")
    held.join(60)

    assert answer
    assert answer[0][0] == 200, answer
    assert netns.links() == {"lo", "eth0"}
    assert_deletable_and_gone(cluster, container, netns)
