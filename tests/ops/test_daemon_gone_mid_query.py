"""multusctl when the daemon goes away in the middle of its query: the file answers instead.

A daemon killed (a liveness probe, an OOM kill, ``kill -9``) while multusctl's request waits
unread on the query socket resets the connection; one stopping after it read the request closes
it without a word; one exiting between multusctl's connect and its request breaks the pipe. These
were a traceback (``ConnectionResetError``), "answered nonsense" (exit 1), and exit 0 with nothing
printed (the broken pipe taken for stdout's reader leaving). Nothing answered, so multusctl now
says so and reads the state database itself, as when no daemon listens at all; an answer cut short
stays a protocol error, named with exit 1 by every read command (``status`` let it out as a
traceback). A real daemon and multusctl process, and unix sockets of the test's own
that close as a dying daemon's do.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.cli import main as cli
from app.cli import unixhttp
from app.sandbox.processes import wait_until
from tests.conftest import child_environment
from tests.ops.conftest import add, new_pod


def _pending_connections(listening: Path) -> int:
    """Connections waiting, not yet accepted, on the unix socket listening at ``listening``."""
    fields = subprocess.run(
        ["ss", "-xlH", "src", str(listening)], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(fields[2]) if len(fields) > 2 else 0


@pytest.mark.slow  # starts a daemon process
@pytest.mark.usefixtures("premigrated_state")  # the first start is not what this is about
def test_a_daemon_killed_with_the_query_unread_leaves_multusctl_reading_the_file(started: Any) -> None:
    cluster = started()
    pod = new_pod(cluster, "team-k", "killed")
    assert add(cluster, pod, networks=[]).returncode == 0
    daemon = cluster.daemon
    assert daemon is not None
    query_socket = cluster.socket_dir / "multus-query.sock"
    config = str(cluster.root / "daemon-config.json")
    command = ["--config", config, "history", "--pod", "team-k/killed", "-o", "json"]
    os.kill(daemon.pid, signal.SIGSTOP)  # its query socket keeps listening; nothing accepts
    try:
        query = subprocess.Popen(
            [sys.executable, "-m", "app.cli.main", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_environment(),
        )
        wait_until(lambda: _pending_connections(query_socket) == 1, what="multusctl's connection queued")
    finally:
        cluster.stop_daemon(signal.SIGKILL)
    stdout, stderr = query.communicate(timeout=60)

    assert query.returncode == 0, stderr
    assert f"the daemon is not answering on {query_socket}" in stderr
    assert f"reading {cluster.state_db} directly" in stderr
    lines = json.loads(stdout)
    assert [(line["command"], line["containerID"]) for line in lines] == [("ADD", pod.container)] * len(lines)
    assert lines


def _read_request(connection: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(4096)


def _wait_readable(connection: socket.socket) -> None:
    connection.recv(1, socket.MSG_PEEK)  # blocks until the request arrives; reads nothing


def _read_a_little(connection: socket.socket) -> None:
    connection.recv(1)  # then closed with the rest unread, the client still sending


def _serve_once(path: Path, serve: Callable[[socket.socket], None]) -> threading.Thread:
    """Listen on ``path``; in a thread, accept one connection, ``serve`` it, close it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def run() -> None:
        with listener, listener.accept()[0] as connection:
            serve(connection)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("serve", "body", "reason"),
    [
        (_wait_readable, b"", "the connection was reset before an answer"),  # closed with the request unread
        (_read_request, b"", "the connection closed before an answer"),
        (_read_a_little, b"x" * (8 << 20), "the connection was reset before an answer"),  # a broken pipe
    ],
)
def test_a_connection_reset_or_closed_before_an_answer_is_nothing_answering(
    tmp_path: Path, serve: Callable[[socket.socket], None], body: bytes, reason: str
) -> None:
    path = tmp_path / "query.sock"
    server = _serve_once(path, serve)

    with pytest.raises(unixhttp.DaemonUnreachableError) as unreachable:
        unixhttp.request(path, "GET", "/v1/history", body=body, timeout=30.0)

    server.join(timeout=30)
    assert unreachable.value.reason == reason


def test_an_answer_cut_short_is_still_a_protocol_error(tmp_path: Path) -> None:
    path = tmp_path / "query.sock"

    def half_an_answer(connection: socket.socket) -> None:
        _read_request(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[{")

    server = _serve_once(path, half_an_answer)

    with pytest.raises(unixhttp.ProtocolError, match="in the middle of the response body"):
        unixhttp.request(path, "GET", "/v1/history", timeout=30.0)
    server.join(timeout=30)


@pytest.mark.parametrize("command", [["attachments"], ["history"], ["show", "abc"], ["status"]])
def test_every_read_command_names_an_answer_cut_short_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """``status`` let the ``ProtocolError`` out as a traceback; the other commands named it."""

    def half_an_answer(connection: socket.socket) -> None:
        _read_request(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")

    server = _serve_once(tmp_path / "multus-query.sock", half_an_answer)

    code = cli.main(["--socket-dir", str(tmp_path), "--state-dir", str(tmp_path), *command])

    server.join(timeout=30)
    assert code == 1
    assert capsys.readouterr().err == (
        f"multusctl: the query API on {tmp_path}/multus-query.sock answered nonsense: "
        "the connection closed in the middle of the response body\n"
    )


@pytest.mark.parametrize("size", [b"zz", b"-5"])
def test_a_chunked_answer_with_a_bad_chunk_size_is_a_protocol_error_not_a_value_error(
    tmp_path: Path, size: bytes
) -> None:
    path = tmp_path / "query.sock"

    def garbled(connection: socket.socket) -> None:
        _read_request(connection)
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n"
        connection.sendall(head + size + b"\r\n")

    server = _serve_once(path, garbled)

    with pytest.raises(unixhttp.ProtocolError, match=f"not a chunk size: {size!r}"):
        unixhttp.request(path, "GET", "/v1/history", timeout=30.0)
    server.join(timeout=30)
