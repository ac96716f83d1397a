"""Running one CNI plugin: find it, build its environment, execute it, turn a failure into a CniError.

Called by ``app.cni.api`` once per plugin step, through the ``Exec`` protocol (the one seam unit tests
may replace). Knows no policy: no plugin order, no ``prevResult``, no version rules, no retries except
"text file busy" at exec time. Never decodes a successful plugin's stdout (the caller does) and never
leaves a plugin running: a timeout or a cancellation kills the plugin's whole process group.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from app.cni.types import CniError, ErrorCode, NotExecutedError, PluginRefusedError, RuntimeConf

logger = logging.getLogger(__name__)

Command = Literal["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"]
ATTACHMENT_COMMANDS: Final = frozenset({"ADD", "DEL", "CHECK"})

DEFAULT_BASE_ENV: Final[Mapping[str, str]] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}
"""What plugins get besides the ``CNI_*`` variables when the caller supplies nothing (e.g. for iptables)."""

_OUTPUT_TAIL = 2048


class Exec(Protocol):
    """Find and execute plugins (libcni's ``invoke.Exec``); ``SubprocessExec`` is the real one."""

    def find_in_path(self, plugin: str, paths: Sequence[str]) -> str:
        """The path of plugin ``plugin`` in the first directory of ``paths`` holding it; else CniError 7."""
        ...

    async def exec_plugin(
        self,
        *,
        plugin_path: str,
        stdin: bytes,
        env: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109 (a per-call limit of the protocol)
    ) -> bytes:
        """The plugin's stdout when it exits 0; otherwise the CniError it printed (or one built for it)."""
        ...


def check_plugin_type(plugin: str) -> None:
    """Refuse a plugin ``type`` that is not a plain file name (CniError 7), before anything executes."""
    if not plugin:
        problem = "it is empty"
    elif "/" in plugin or "\0" in plugin:
        problem = "a plugin type is a file name and may not contain '/' or NUL"
    elif ".." in plugin or plugin == ".":
        problem = "a plugin type may not be '.' or contain '..'"
    else:
        return
    raise PluginRefusedError(ErrorCode.INVALID_NETWORK_CONFIG, f'invalid plugin type "{plugin}": {problem}')


def find_in_path(plugin: str, paths: Sequence[str]) -> str:
    """libcni's ``FindInPath``: ``<dir>/<plugin>`` for the first dir where it is a regular file."""
    check_plugin_type(plugin)
    for directory in paths:
        if not directory:
            continue
        candidate = os.path.join(directory, plugin)
        if os.path.isfile(candidate):
            return candidate
    raise NotExecutedError(
        ErrorCode.INVALID_NETWORK_CONFIG,
        f'failed to find plugin "{plugin}" in path [{" ".join(paths)}]',
    )


def plugin_env(
    *,
    command: Command,
    cni_path: Sequence[str],
    base_env: Mapping[str, str],
    rt: RuntimeConf | None = None,
) -> dict[str, str]:
    """The plugin's environment: ``base_env`` without any ``CNI_*`` of its own, plus the spec's variables.

    ADD, DEL and CHECK need ``rt`` and get ``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME`` and
    ``CNI_ARGS``; GC, STATUS and VERSION get only ``CNI_COMMAND`` and ``CNI_PATH``.
    """
    env = {key: value for key, value in base_env.items() if not key.startswith("CNI_")}
    env["CNI_COMMAND"] = command
    env["CNI_PATH"] = os.pathsep.join(cni_path)
    if command in ATTACHMENT_COMMANDS:
        if rt is None:
            raise ValueError(f"CNI_COMMAND={command} needs a RuntimeConf")
        env["CNI_CONTAINERID"] = rt.container_id
        env["CNI_NETNS"] = rt.netns
        env["CNI_IFNAME"] = rt.ifname
        env["CNI_ARGS"] = rt.cni_args_string()
    return env


@dataclass(frozen=True, slots=True)
class SubprocessExec:
    """Plugins as child processes (``asyncio.create_subprocess_exec``), each in a session of its own.

    ``busy_retries``/``busy_delay``: how often, and after how long (growing linearly), to retry an exec
    that failed with ETXTBSY (a plugin binary still being written). ``reap_grace``: how long to wait for
    a killed plugin's pipes to close before giving up on reaping it (logged, never silent).
    ``max_running``: how many plugin processes may run at once (0: no bound).
    """

    max_running: int = 0
    busy_retries: int = 5
    busy_delay: float = 0.05
    reap_grace: float = 5.0

    def find_in_path(self, plugin: str, paths: Sequence[str]) -> str:
        return find_in_path(plugin, paths)

    async def exec_plugin(
        self,
        *,
        plugin_path: str,
        stdin: bytes,
        env: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109 (a per-call limit of the protocol)
    ) -> bytes:
        process: asyncio.subprocess.Process | None = None
        try:
            async with asyncio.timeout(timeout):
                process = await self._start(plugin_path, env)
                stdout, stderr = await process.communicate(stdin)
                returncode = process.returncode
        except TimeoutError:
            if process is not None:
                await self._kill_and_reap(process, plugin_path)
            raise CniError(
                ErrorCode.INTERNAL,
                f"plugin {plugin_path} timed out after {timeout:g}s; its process group was killed",
            ) from None
        except BaseException:
            # Cancelled (or worse) while the plugin runs: never leave it behind us.
            if process is not None:
                _kill_group(process)
            raise
        _log_stderr(plugin_path, stderr)
        if returncode == 0:
            return stdout
        raise failure_error(plugin_path=plugin_path, returncode=returncode, stdout=stdout, stderr=stderr)

    async def _start(self, plugin_path: str, env: Mapping[str, str]) -> asyncio.subprocess.Process:
        for attempt in range(self.busy_retries + 1):
            try:
                return await asyncio.create_subprocess_exec(
                    plugin_path,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=dict(env),
                    start_new_session=True,
                )
            except OSError as err:
                if err.errno == errno.ETXTBSY and attempt < self.busy_retries:
                    logger.debug(
                        "plugin %s: text file busy, retrying exec (attempt %d)", plugin_path, attempt + 1
                    )
                    await asyncio.sleep(self.busy_delay * (attempt + 1))
                    continue
                raise NotExecutedError(
                    ErrorCode.INTERNAL, f"failed to execute plugin {plugin_path}: {err.strerror}"
                ) from err
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _kill_and_reap(self, process: asyncio.subprocess.Process, plugin_path: str) -> None:
        _kill_group(process)
        try:
            async with asyncio.timeout(self.reap_grace):
                await process.wait()
        except TimeoutError:
            # Something outside the group still holds the plugin's pipes; the timeout error is raised anyway.
            logger.error(
                "plugin %s (pid %d) killed but not reaped after %gs",
                plugin_path,
                process.pid,
                self.reap_grace,
            )


def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the plugin's process group (its pid: it leads its own session), children included."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        logger.debug("process group %d already gone", process.pid)


def failure_error(*, plugin_path: str, returncode: int | None, stdout: bytes, stderr: bytes) -> CniError:
    """The CniError for a plugin that exited non-zero: its own error object from stdout, code unchanged.

    Without a valid error object on stdout: code 999 naming the plugin and exit status, ``details``
    the tail of stderr.
    """
    try:
        printed = CniError.from_json(json.loads(stdout))
    except (ValueError, RecursionError):
        printed = None
    if printed is not None:
        return printed
    status = _describe_status(returncode)
    if stdout.strip():
        msg = f"plugin {plugin_path} failed ({status}) and printed no CNI error object: {_tail(stdout)!r}"
    else:
        msg = f"plugin {plugin_path} failed ({status}) with no error on stdout"
    return CniError(ErrorCode.INTERNAL, msg, _tail(stderr).strip())


def _describe_status(returncode: int | None) -> str:
    if returncode is None:
        return "exit status unknown"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _tail(data: bytes) -> str:
    return data[-_OUTPUT_TAIL:].decode("utf-8", "replace")


def _log_stderr(plugin_path: str, stderr: bytes) -> None:
    if stderr.strip():
        logger.debug("plugin %s stderr: %s", plugin_path, _tail(stderr).rstrip())
