"""A minimal HTTP/1.1 client over a unix socket, for ``multusctl``: one request per connection.

Just enough for the daemon's two sockets (``multus.sock``, ``multus-query.sock``), which answer
one request per connection with a ``Content-Length`` (or close the connection after the body).
It is on multusctl's start-up path, so it imports only ``_socket`` (the C module; ``socket`` adds
``selectors`` and ``enum``, ``http.client`` also ``ssl`` and ``email``, each milliseconds per run)
and no ``typing`` or ``pathlib``: paths are anything ``str()`` turns into one.
``DaemonUnreachableError`` means nothing answered (no socket, refused, timed out, or the
connection reset or closed before the first byte of an answer: a daemon stopping or killed with
the request unread); any answer, even an error status, is returned to the caller, and one cut
short is a ``ProtocolError``.
"""

import _socket

TIMEOUT = 10.0
"""Seconds allowed for connecting and for each read."""


class DaemonUnreachableError(ConnectionError):
    """Nothing answered on the socket; ``reason`` says why, in a few words."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"nothing answers on {path} ({reason})")
        self.path = path
        self.reason = reason


class ProtocolError(ConnectionError):
    """Something answered, but not with HTTP this client understands."""


class Response:
    """The status code and the (de-chunked) body of one answer."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body

    def __repr__(self) -> str:
        return f"Response(status={self.status}, body={self.body[:80]!r})"


def request(
    path: object, method: str, target: str, *, body: bytes = b"", timeout: float = TIMEOUT
) -> Response:
    """Send one request to the HTTP server on unix socket ``path``; return its response."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
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
            first = sock.recv(65536)
        except TimeoutError as exc:
            raise DaemonUnreachableError(path, f"no answer within {timeout:g}s") from exc
        except (ConnectionResetError, BrokenPipeError) as exc:  # the server went away, unanswering
            raise DaemonUnreachableError(path, "the connection was reset before an answer") from exc
        if not first:
            raise DaemonUnreachableError(path, "the connection closed before an answer")
        try:
            return _read_response(sock, first)
        except TimeoutError as exc:
            raise DaemonUnreachableError(path, f"no answer within {timeout:g}s") from exc
        except ProtocolError:
            raise
        except OSError as exc:  # reset in the middle: the answer is cut short
            raise ProtocolError(f"the connection failed in the middle of the answer: {exc}") from exc
    finally:
        sock.close()


def _read_response(sock: _socket.socket, data: bytes) -> Response:
    """The response that begins with ``data`` (its first bytes, already received)."""
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
        chunks = [rest]
        received = len(rest)
        while received < int(length):
            chunk = sock.recv(65536)
            if not chunk:
                raise ProtocolError("the connection closed in the middle of the response body")
            chunks.append(chunk)
            received += len(chunk)
        return Response(int(parts[1]), b"".join(chunks)[: int(length)])
    chunks = [rest]
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return Response(int(parts[1]), b"".join(chunks))


def _dechunk(sock: _socket.socket, data: bytes) -> bytes:
    """The body of a chunked answer (the query API streams long ones a page per chunk): each
    chunk's bytes kept once and joined at the end, the buffer trimmed as it is read, so a body
    of many chunks costs time in proportion to its size."""
    parts: list[bytes] = []
    buffer = bytearray(data)
    position = 0
    while True:
        end = buffer.find(b"\r\n", position)
        while end < 0:
            buffer += _more(sock)
            end = buffer.find(b"\r\n", position)
        line = bytes(buffer[position:end])
        try:
            size = int(line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            size = -1
        if size < 0:
            raise ProtocolError(f"not a chunk size: {line[:80]!r}")
        position = end + 2
        if size == 0:
            return b"".join(parts)
        while len(buffer) < position + size + 2:
            buffer += _more(sock)
        parts.append(bytes(buffer[position : position + size]))
        del buffer[: position + size + 2]
        position = 0


def _more(sock: _socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ProtocolError("the connection closed in the middle of a chunked response")
    return chunk
