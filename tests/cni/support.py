"""Helpers for app.cni tests: namespaces, the recorder's log, unique names, non-blocking ``ip`` queries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from app.cni import child
from app.cni.types import CniError


@dataclass(frozen=True)
class Netns:
    name: str

    @property
    def path(self) -> str:
        return f"/var/run/netns/{self.name}"


@dataclass(frozen=True)
class RecorderLog:
    """The recorder plugin's invocation log (one JSON object per line)."""

    path: Path

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def commands(self) -> list[str]:
        return [entry["command"] for entry in self.entries()]


def open_descriptors() -> set[int]:
    """This process's open descriptors, less the exit watches' (``child.ExitWatch``: one per event
    loop that ran a child, open until the loop is gone, which a test's earlier loop may be at any time)."""
    watches = child.exit_watch_descriptors()
    return {int(name) for name in os.listdir("/proc/self/fd")} - watches


def unique(prefix: str) -> str:
    """A name with a short random suffix; short enough for an interface (≤ 15 bytes) when prefix ≤ 7."""
    return f"{prefix}{secrets.token_hex(4)}"


async def run(*argv: str) -> str:
    """Run a command without blocking the loop; its stdout, or an AssertionError with its stderr."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, f"{argv} failed: {stderr.decode()}"
    return stdout.decode()


async def links(netns: Netns | None = None) -> dict[str, dict[str, Any]]:
    """``ip -j addr`` of a namespace (or the host) by interface name."""
    argv = ["ip", "-j", "addr"] if netns is None else ["ip", "-n", netns.name, "-j", "addr"]
    return {link["ifname"]: link for link in json.loads(await run(*argv))}


def addresses(link: dict[str, Any]) -> list[str]:
    return [f"{info['local']}/{info['prefixlen']}" for info in link.get("addr_info", [])]


def outcome_of(function: Any, *args: Any, **kwargs: Any) -> Any:
    """What ``function`` returns, or the CniError it raises; anything else propagates and fails the test."""
    try:
        return function(*args, **kwargs)
    except CniError as err:
        return err


def json_values(*, max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any JSON value (no NaN or infinities: those are not JSON)."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    return st.recursive(
        scalars | st.text(max_size=16),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


async def wait_until(condition: Any, *, within: float = 10.0) -> None:
    """Poll ``condition`` until it holds; process exits of grandchildren have no event to wait on."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def script(directory: Path, name: str, body: str, *, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return path


def blocked_reading_stdin(pid: int) -> bool:
    """True while ``pid`` sits in ``read(0, ...)`` (``/proc/PID/syscall``: number 0, first argument 0)."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return fields[:2] == ["0", "0x0"]


@contextlib.contextmanager
def descriptors_exhausted() -> Iterator[None]:
    """This process out of file descriptors (``EMFILE``) for the body of a ``with``: the soft
    ``RLIMIT_NOFILE`` lowered to the lowest free descriptor number, put back afterwards. Descriptors
    open already stay usable; the next one opened (memfd, pipe, socket, pidfd) is refused."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
