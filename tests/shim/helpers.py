"""Test doubles and runners for the shim: a stub daemon on a real unix socket, a real shim process,
variants of a built runtime bundle.

The stub speaks raw HTTP on purpose: the tests assert the exact bytes the shim sends and script the
exact bytes it gets back (status, headers, framing), which an HTTP framework would normalise.
"""

from __future__ import annotations

import atexit
import base64
import json
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.shim import bundle

HANG = b"<hang>"
"""A reply that never comes: the stub holds the connection open until it is stopped."""

BASE_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "3f9a0c1d",
    "CNI_NETNS": "/var/run/netns/cni-1234",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-0",
    "PATH": "/usr/sbin:/usr/bin",
    # Set so that Python's C-locale coercion (PEP 538) adds no LC_CTYPE: the env stays exactly ours.
    "LC_ALL": "C.UTF-8",
}


def http_reply(
    status: int,
    body: bytes = b"",
    *,
    content_type: str | None = "application/json",
    framing: str = "length",
) -> bytes:
    """A complete HTTP/1.1 response; ``framing`` is "length", "chunked" or "eof" (no length at all)."""
    lines = [f"HTTP/1.1 {status} Scripted", "Connection: close"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        half = len(body) // 2
        parts = [part for part in (body[:half], body[half:]) if part]
        body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def json_reply(status: int, obj: object, *, content_type: str = "application/json") -> bytes:
    """An HTTP response whose body is ``obj`` as compact JSON."""
    return http_reply(status, json.dumps(obj, separators=(",", ":")).encode(), content_type=content_type)


@dataclass
class Recorded:
    """One request as the stub received it."""

    raw: bytes
    head: bytes = b""
    body: bytes = b""

    def __post_init__(self) -> None:
        self.head, _, self.body = self.raw.partition(b"\r\n\r\n")

    def json(self) -> dict[str, object]:
        decoded = json.loads(self.body)
        assert isinstance(decoded, dict)
        return decoded

    def env(self) -> dict[str, str]:
        env = self.json()["env"]
        assert isinstance(env, dict)
        return env

    def config(self) -> bytes:
        config = self.json()["config"]
        assert isinstance(config, str)
        return base64.b64decode(config, validate=True)


@dataclass
class StubDaemon:
    """The multus daemon's socket, played by a thread: records requests, sends scripted replies in
    order (the last one repeats)."""

    socket_dir: Path
    replies: list[bytes] = field(default_factory=lambda: [http_reply(200)])
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event | None = None
    """When set: every reply waits until this event is set (a shim held in the middle of its call)."""
    read_body: bool = True
    """False: the reply goes as soon as the headers are read, and the connection is closed on the
    rest of the body (a daemon that refuses a request by its headers alone)."""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None

    @property
    def path(self) -> Path:
        return self.socket_dir / "multus.sock"

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(16)
        listener.settimeout(0.02)
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="stub-multus-daemon", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            assert not self._thread.is_alive(), "stub daemon thread did not stop"
        if self._listener is not None:
            self._listener.close()
        self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        self.requests.append(Recorded(read_request(conn) if self.read_body else read_head(conn)))
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if reply == HANG:
            self._stop.wait()
            return
        if self.release is not None:
            self.release.wait(timeout=120)
        conn.sendall(reply)


def read_head(conn: socket.socket) -> bytes:
    """At least the headers (and whatever part of the body came with them)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


def read_request(conn: socket.socket) -> bytes:
    """Headers, then as many body bytes as Content-Length says."""
    data = read_head(conn)
    if b"\r\n\r\n" not in data:
        return data
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


SPOOL_FOR_TESTS = tempfile.mkdtemp(prefix="multus-shim-test-spool-")
"""Where a DEL the tests leave without a daemon is spooled: never the host's real spool (removed
when the test process exits)."""
atexit.register(shutil.rmtree, SPOOL_FOR_TESTS, ignore_errors=True)


def conf_bytes(socket_dir: Path | str | None, **fields: object) -> bytes:
    """A shim conf: name and cniVersion defaulted, ``daemonSocketDir`` pointing at ``socket_dir``,
    ``spoolDir`` at a scratch directory unless given."""
    fields.setdefault("spoolDir", SPOOL_FOR_TESTS)
    conf: dict[str, object] = {"cniVersion": "1.1.0", "name": "multus-cni-network", "type": "multus-shim"}
    if socket_dir is not None:
        conf["daemonSocketDir"] = str(socket_dir)
    conf.update(fields)
    return json.dumps({key: value for key, value in conf.items() if value is not None}).encode()


def go_marshal_indent(obj: object) -> bytes:
    """Go's ``json.MarshalIndent(obj, "", "    ")`` (dicts in their order): Python's layout is the same;
    Go also escapes <, >, &, U+2028 and U+2029, characters that JSON text has only inside strings."""
    text = json.dumps(obj, indent=4, ensure_ascii=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text.encode()


@dataclass
class ShimRun:
    """A finished shim process."""

    returncode: int
    stdout: bytes
    stderr: bytes

    def error(self) -> dict[str, object]:
        """The CNI error object it printed (asserting exit 1, Go's layout, no traceback)."""
        assert self.returncode == 1, (self.returncode, self.stdout, self.stderr)
        assert self.stderr == b"", self.stderr
        assert not self.stdout.endswith(b"\n")
        obj = json.loads(self.stdout)
        assert isinstance(obj, dict)
        assert list(obj) in (["code", "msg"], ["code", "msg", "details"]), obj
        assert self.stdout == go_marshal_indent(obj)
        return obj

    def success(self) -> bytes:
        """Its stdout, asserting exit 0 and a clean stderr."""
        assert self.returncode == 0, (self.returncode, self.stdout, self.stderr)
        assert self.stderr == b"", self.stderr
        return self.stdout


def run_shim(
    launcher: Path,
    stdin: bytes = b"",
    *,
    env: Mapping[str, str | None] | None = None,
    base: Mapping[str, str] = BASE_ENV,
    timeout: float = 20,
) -> ShimRun:
    """Run the installed shim with ``base`` env updated by ``env`` (a None value removes a variable)."""
    full = dict(base)
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    proc = subprocess.run(
        [str(launcher)], input=stdin, env=full, capture_output=True, timeout=timeout, check=False
    )
    return ShimRun(proc.returncode, proc.stdout, proc.stderr)


def variant(source: Path, destination: Path, tag: str) -> Path:
    """A copy of the built bundle ``source`` under another manifest: what a rebuild looks like to the
    installer (it gets a runtime directory of its own)."""
    shutil.copytree(source, destination)
    manifest = json.loads((destination / bundle.MANIFEST_NAME).read_text())
    manifest["build"] = tag
    (destination / bundle.MANIFEST_NAME).write_text(json.dumps(manifest))
    return destination


IN_PRIVATE_DEFAULT_SPOOL = r"""
set -e
target="$1"; backing="$2"; shift 2
if [ ! -d "$target" ]; then  # a tmpfs over its deepest existing ancestor makes room for it
    ancestor=$(dirname "$target")
    while [ ! -d "$ancestor" ]; do ancestor=$(dirname "$ancestor"); done
    mount -t tmpfs tmpfs "$ancestor"
    mkdir -p "$target"
fi
mount --bind "$backing" "$target"
exec "$@"
"""
"""Run as ``sh SCRIPT TARGET BACKING COMMAND...``: mounts BACKING at TARGET, executes COMMAND."""
