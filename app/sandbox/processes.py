"""Daemon and emulator processes for the demo, the benchmarks and the tests: start, wait, talk, stop.

One copy of the plumbing every driver of a whole node needs: start ``multus-daemon`` (``python -m
app.daemon.main`` or a command given, e.g. a manifest's) with its output in a log file, wait for
``/readyz`` on its socket while watching that it has not died, POST to its socket as a shim would,
stop it; start the Kubernetes API emulator (``python -m app.sandbox.kubeapi``) and read its URL,
send it JSON, stop it. Called by ``app.demo``, ``bench`` and the process-level tests.

Stdlib only, and it never imports the daemon (``app.daemon`` runs in the child process only), so
importing it costs nothing and keeps the emulator package free of daemon modules. Child processes
never inherit the test suite's asyncio debug switch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ASYNCIO_DEBUG_ENV = "PYTHONASYNCIODEBUG"
SOCKET_NAME = "multus.sock"


class ProcessError(RuntimeError):
    """A daemon or emulator process died, or did not become ready in time; the message has its log."""


def child_environment(**extra: str) -> dict[str, str]:
    """The environment for a child process: ours, without the asyncio debug switch, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key != ASYNCIO_DEBUG_ENV}
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port nobody listens on now on 127.0.0.1 (e.g. for ``metricsPort``)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _log_text(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except OSError:
        return ""


def stop_process(process: subprocess.Popen[bytes] | None, *, timeout: float = 20.0) -> int | None:
    """SIGTERM a process if it still runs and wait for it; SIGKILL it if it outlives ``timeout``."""
    if process is None:
        return None
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


# ---- the daemon ---------------------------------------------------------------------------------


def daemon_command(config: Path) -> list[str]:
    """``multus-daemon --config <config>`` as this interpreter runs it."""
    return [sys.executable, "-m", "app.daemon.main", "--config", str(config)]


@dataclass
class DaemonProcess:
    """One ``multus-daemon`` process serving ``<socket_dir>/multus.sock``, its output in ``log``."""

    socket_dir: Path
    log: Path
    command: Sequence[str]
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_config(cls, config: Path, *, socket_dir: Path, log: Path) -> DaemonProcess:
        return cls(socket_dir=socket_dir, log=log, command=daemon_command(config))

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / SOCKET_NAME

    def start(
        self, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start the daemon (its environment: ours without the debug switch, plus ``env``; in ``cwd``,
        else ours)."""
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(
                list(self.command),
                stdout=output,
                stderr=output,
                env=child_environment(**(env or {})),
                cwd=cwd,
            )
        return self.process

    def log_text(self) -> str:
        return _log_text(self.log)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``/readyz`` until it answers 200; ``ProcessError`` if the daemon dies or times out."""
        self.wait_until(lambda: self.readyz() == 200, what="daemon ready", timeout=timeout)

    def wait_until(
        self, condition: Callable[[], bool], *, what: str, timeout: float = 20.0, interval: float = 0.05
    ) -> None:
        """Poll ``condition`` while the daemon lives (see ``wait_until``)."""
        wait_until(condition, what=what, timeout=timeout, daemon=self, interval=interval)

    def readyz(self) -> int | None:
        """The status ``GET /readyz`` answers now, None when nothing answers on the socket."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(10)
            sock.connect(str(self.socket_path))
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            return int(sock.recv(64).split()[1])
        except (OSError, IndexError, ValueError):
            return None
        finally:
            sock.close()

    def post(self, path: str, body: bytes = b"", *, timeout: float = 60.0) -> tuple[int, bytes]:
        """One POST on the daemon's socket, as a shim makes it: (status, body)."""
        return post_unix(self.socket_path, path, body, timeout=timeout)

    def send_signal(self, sig: int) -> None:
        assert self.process is not None, "the daemon was not started"
        self.process.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, *, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit status (``subprocess.TimeoutExpired`` after ``timeout``)."""
        assert self.process is not None, "the daemon was not started"
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def terminate(self, *, timeout: float = 20.0) -> int | None:
        """Clean-up: SIGTERM if still running, SIGKILL after ``timeout``; the exit status."""
        code = stop_process(self.process, timeout=timeout)
        self.process = None
        return code

    def kill(self) -> None:
        """Clean-up after a failure: SIGKILL if still running."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


def wait_until(
    condition: Callable[[], bool],
    *,
    what: str,
    timeout: float = 20.0,
    daemon: DaemonProcess | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``condition`` every ``interval`` seconds until it holds; ``ProcessError`` (with the
    daemon's log) if ``timeout`` passes or, when a started ``daemon`` is given, it exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        process = daemon.process if daemon is not None else None
        if daemon is not None and process is not None and process.poll() is not None:
            raise ProcessError(f"daemon exited {process.returncode}:\n{daemon.log_text()}")
        if time.monotonic() > deadline:
            log = f":\n{daemon.log_text()}" if daemon is not None else ""
            raise ProcessError(f"{what} not after {timeout}s{log}")
        time.sleep(interval)


def post_unix(socket_path: Path, path: str, body: bytes = b"", *, timeout: float = 60.0) -> tuple[int, bytes]:
    """``POST path`` over a unix socket with a one-request connection: (status, body)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(socket_path))
        head = (
            f"POST {path} HTTP/1.1\r\nHost: dummy\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    finally:
        sock.close()
    return int(response.split(b" ", 2)[1]), response.split(b"\r\n\r\n", 1)[1]


# ---- the Kubernetes API emulator ----------------------------------------------------------------


class EmulatorRequestError(RuntimeError):
    """The emulator answered an HTTP error."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: {status} {body}")
        self.status = status
        self.body = body


@dataclass
class EmulatorProcess:
    """``python -m app.sandbox.kubeapi`` in its own process, driven over HTTP like an API server."""

    kubeconfig: Path
    log: Path
    arguments: Sequence[str] = ()
    """Extra command-line arguments (``--seed``, ``--bookmark-interval``, ``--log-level``...)."""
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self) -> str:
        """Start it and return its URL (the first line it prints); ``ProcessError`` if it prints none."""
        with open(self.log, "ab") as errors:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "app.sandbox.kubeapi",
                    "--port",
                    "0",
                    "--kubeconfig-out",
                    str(self.kubeconfig),
                    *self.arguments,
                ],
                stdout=subprocess.PIPE,
                stderr=errors,
                env=child_environment(),
            )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().decode().strip()
        if not self.url.startswith("http"):
            self.stop()
            raise ProcessError(f"the emulator did not start:\n{_log_text(self.log)}")
        return self.url

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> Any:
        """One JSON request: the decoded answer (None if empty); ``EmulatorRequestError`` on 4xx/5xx."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise EmulatorRequestError(method, path, error.code, error.read().decode()) from error

    def stop(self, *, timeout: float = 10.0) -> int | None:
        """SIGTERM it (SIGKILL after ``timeout``) and close its pipe; the exit status."""
        code = stop_process(self.process, timeout=timeout)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        return code
