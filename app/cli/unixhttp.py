"""A minimal HTTP/1.1 client over a unix socket, for ``multusctl``: one request per connection.

Just enough for the daemon's two sockets (``multus.sock``, ``multus-query.sock``), which answer
one request per connection with a ``Content-Length`` (or close the connection after the body).
Standard library ``socket`` only: ``http.client`` would pull in ``ssl`` and ``email`` and add
tens of milliseconds to every ``multusctl`` run. ``DaemonUnreachableError`` means nothing answered
(no socket, refused, timed out); any answer, even an error status, is returned to the caller.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import NamedTuple

TIMEOUT = 10.0
"""Seconds allowed for connecting and for each read."""


class DaemonUnreachableError(ConnectionError):
    """Nothing answered on the socket; ``reason`` says why, in a few words."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"nothing answers on {path} ({reason})")
        self.path = path
        self.reason = reason


class ProtocolError(ConnectionError):
    """Something answered, but not with HTTP this client understands."""


class Response(NamedTuple):
    status: int
    body: bytes


def request(path: Path, method: str, target: str, *, body: bytes = b"", timeout: float = TIMEOUT) -> Response:
    """Send one request to the HTTP server on unix socket ``path``; return its response."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError as exc:
            raise DaemonUnreachableError(path, "no such socket") from exc
        except ConnectionRefusedError as exc:
            raise DaemonUnreachableError(path, "connection refused") from exc
        except TimeoutError as exc:
            raise DaemonUnreachableError(path, f"no answer within {timeout:g}s") from exc
        except OSError as exc:
            raise DaemonUnreachableError(path, exc.strerror or type(exc).__name__) from exc
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: multus\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        try:
            sock.sendall(head.encode("ascii") + body)
            return _read_response(sock)
        except TimeoutError as exc:
            raise DaemonUnreachableError(path, f"no answer within {timeout:g}s") from exc
    finally:
        sock.close()


def _read_response(sock: socket.socket) -> Response:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ProtocolError("the connection closed before a complete HTTP response")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return Response(int(parts[1]), _dechunk(sock, rest))
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        while len(rest) < int(length):
            chunk = sock.recv(65536)
            if not chunk:
                raise ProtocolError("the connection closed in the middle of the response body")
            rest += chunk
        return Response(int(parts[1]), rest[: int(length)])
    while chunk := sock.recv(65536):
        rest += chunk
    return Response(int(parts[1]), rest)


def _dechunk(sock: socket.socket, data: bytes) -> bytes:
    body = b""
    while True:
        while b"\r\n" not in data:
            data += _more(sock)
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return body
        while len(data) < size + 2:
            data += _more(sock)
        body += data[:size]
        data = data[size + 2 :]


def _more(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ProtocolError("the connection closed in the middle of a chunked response")
    return chunk
