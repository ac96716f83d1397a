"""Running one CNI plugin: find it, build its environment, execute it, turn a failure into a CniError.

Called by ``app.cni.api`` once per plugin step, through the ``Exec`` protocol (the one seam unit tests
may replace). Knows no policy: no plugin order, no ``prevResult``, no version rules, no retries except
"text file busy" at exec time. Never decodes a successful plugin's stdout (the caller does) and never
leaves a plugin running: a timeout or a cancellation kills the plugin's whole process group, and so
does an output found past what ``app.cni.child`` holds (``STDOUT_CAPACITY``, ``STDERR_CAPACITY``)
while the plugin runs. Such an output (or a stdout past its capacity at the exit) fails the call
with a decoding failure (6) naming the plugin, the stream and the limit. A plugin that cannot be
started because the daemon is short of descriptors, memory or processes (``child.SHORTAGE_ERRNOS``)
fails the call with code 11 (try again later): nothing ran, and the same call may succeed later.

With a ``root`` (daemon-config ``chrootDir``) a plugin is looked up as a process inside that root
sees the file system, and the child enters the root (``chroot`` + ``chdir("/")``) between fork and
exec: its path, environment and stdin are the same as without a root. ``SubprocessExec`` bounds the
plugin processes running at once (``max_running``), serving waiters in arrival order. Every
ADD/DEL/CHECK plugin carries ``MULTUS_PY_DELEGATE=<containerID>/<ifname>`` in its environment, from
its exec on, so that recovery can find (``app.cni.reaper``) what an earlier daemon left running.

``ready``: a plugin may be started before it may act. Until ``ready`` is done it is given no input
(``child.spawn(hold_input=True)``), so it does nothing (a plugin learns what to do from its input
alone) while its exec and start-up overlap with what ``ready`` waits for. Should ``ready`` fail, the
plugin is killed without ever having read a byte, and the call fails with ``NotExecutedError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Final, Literal, Protocol

from app import metrics, rootpath
from app.cni import child
from app.cni.types import (
    CniError,
    ErrorCode,
    NotExecutedError,
    PluginExitError,
    PluginRefusedError,
    RuntimeConf,
)

logger = logging.getLogger(__name__)

Command = Literal["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"]
ATTACHMENT_COMMANDS: Final = frozenset({"ADD", "DEL", "CHECK"})

DEFAULT_BASE_ENV: Final[Mapping[str, str]] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}
"""What plugins get besides the ``CNI_*`` variables when the caller supplies nothing (e.g. for iptables)."""

DELEGATE_MARKER: Final = "MULTUS_PY_DELEGATE"
"""Environment variable naming the attachment (``<containerID>/<ifname>``) an ADD/DEL/CHECK plugin
works for; inherited by its children (IPAM, iptables), read back from ``/proc`` by the reaper."""

_OUTPUT_TAIL: Final = child.STDERR_TAIL
"""How much of a failed plugin's stderr (and of its stdout, when that holds no error object) is
logged and reported: its last bytes."""
_MIB: Final = 1024 * 1024


class Exec(Protocol):
    """Find and execute plugins (libcni's ``invoke.Exec``); ``SubprocessExec`` is the real one."""

    def find_in_path(self, plugin: str, paths: Sequence[str], *, root: str = "") -> str:
        """The path of plugin ``plugin`` in the first directory of ``paths`` holding it; else CniError 7.

        With ``root``, directories are searched inside it and the path returned is the one a process
        chrooted there uses."""
        ...

    async def exec_plugin(
        self,
        *,
        plugin_path: str,
        stdin: bytes,
        env: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109 (a per-call limit of the protocol)
        root: str = "",
        ready: asyncio.Future[None] | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> bytes:
        """The plugin's stdout when it exits 0; otherwise the CniError it printed (or one built for it).

        With ``root``, the plugin runs inside ``chroot(root)``. With ``ready``, it reads no input
        before ``ready`` is done (see the module's docstring). ``wanted`` is asked once the plugin's
        turn has come (its slot held), before anything starts: False, and nothing is started
        (``NotExecutedError``)."""
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


_FOUND_CAPACITY = 256
_found_in_first_dir: dict[tuple[str, str, tuple[str, ...]], str] = {}
"""Plugins found in the first directory of their path: the answer as long as the file stays a file
(no earlier directory can shadow it), without re-checking the name and walking the path."""


def find_in_path(plugin: str, paths: Sequence[str], *, root: str = "") -> str:
    """libcni's ``FindInPath``: ``<dir>/<plugin>`` for the first dir where it is an executable
    regular file.

    With ``root`` (a chroot directory) the file is looked for inside it, symlinks resolved as the
    chrooted plugin will see them; the path returned is the one used inside the root. A regular
    file that cannot be executed (no execute bit, a ``noexec`` mount) is passed over, as a shell's
    lookup does, and named in the error when nothing else is found: refused here, before anything
    is recorded, rather than after the ADD's intent as a failed exec. A ``root`` that is no longer
    a directory (the host root unmounted, a daemon restarted without it) is named as such."""
    key = (plugin, root, tuple(paths))
    known = _found_in_first_dir.get(key)
    if known is not None and _executable_file(root, known) is not None:
        return known  # no directory comes before it: still a plugin there, it is still the answer
    check_plugin_type(plugin)
    inside = f" inside chrootDir {root}" if root else ""
    if root and not os.path.isdir(root):
        raise NotExecutedError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f'failed to find plugin "{plugin}": chrootDir {root} is not a directory',
        )
    first = True
    not_executable = ""
    for directory in paths:
        if not directory:
            continue
        candidate = os.path.join(directory, plugin)
        found = _regular_file(root, candidate)
        if found is not None and os.access(found, os.X_OK):
            if first:
                if len(_found_in_first_dir) >= _FOUND_CAPACITY:
                    _found_in_first_dir.clear()
                _found_in_first_dir[key] = candidate
            return candidate
        if found is not None and not not_executable:
            not_executable = candidate
        first = False
    if not_executable:
        raise NotExecutedError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f'plugin "{plugin}" found at {not_executable}{inside} is not executable',
        )
    raise NotExecutedError(
        ErrorCode.INVALID_NETWORK_CONFIG,
        f'failed to find plugin "{plugin}" in path [{" ".join(paths)}]{inside}',
    )


def _regular_file(root: str, path: str) -> str | None:
    """The daemon's path of ``path`` (seen inside ``root``, if any) when it is a regular file."""
    found = rootpath.resolve(root, path) if root else path
    return found if found is not None and os.path.isfile(found) else None


def _executable_file(root: str, path: str) -> str | None:
    """``_regular_file``, when the file may also be executed (``access(X_OK)``: an execute bit
    for root, not on a ``noexec`` mount)."""
    found = _regular_file(root, path)
    return found if found is not None and os.access(found, os.X_OK) else None


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
    env = {
        key: value for key, value in base_env.items() if not key.startswith("CNI_") and key != DELEGATE_MARKER
    }
    env["CNI_COMMAND"] = command
    env["CNI_PATH"] = os.pathsep.join(cni_path)
    if command in ATTACHMENT_COMMANDS:
        if rt is None:
            raise ValueError(f"CNI_COMMAND={command} needs a RuntimeConf")
        env["CNI_CONTAINERID"] = rt.container_id
        env["CNI_NETNS"] = rt.netns
        env["CNI_IFNAME"] = rt.ifname
        env["CNI_ARGS"] = rt.cni_args_string()
        env[DELEGATE_MARKER] = delegate_marker(rt.container_id, rt.ifname)
    return env


def delegate_marker(container_id: str, ifname: str) -> str:
    """The value of ``MULTUS_PY_DELEGATE`` for a plugin working on (container ID, interface)."""
    return f"{container_id}/{ifname}"


class DelegateSlots:
    """At most ``limit`` plugin processes at once (0: no bound); waiters are served in arrival order,
    except that a plugin run ``first`` (a DEL's: it frees what ADDs wait to take) goes ahead of every
    other waiter, behind the ``first`` ones before it. In a burst (a node's reboot, a rollout), a
    runtime's DEL then never waits for the queue of ADDs' plugins to drain.

    A slot is held from before the fork until the plugin has exited, or has been killed (SIGKILL to
    its group) and then either cancelled or given ``reap_grace`` to exit: a killed plugin runs no
    more of its code, and one that does not die (stuck in the kernel) must not keep a slot for ever,
    which would stall every later plugin once enough of them are stuck. A released slot is handed to
    the oldest waiter directly, so a newcomer never overtakes it. Not tied to an event loop: a
    waiter's future belongs to the loop it waits in.
    """

    held_in_process = 0
    """Slots held now by every ``DelegateSlots`` of the process: ``multus_py_delegates_running``,
    read when the metrics are scraped (a gauge updated per plugin run costs a lock each way)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._first: deque[asyncio.Future[None]] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for queue in (self._first, self._waiters) for waiter in queue if not waiter.done())

    @contextlib.asynccontextmanager
    async def slot(self, *, first: bool = False) -> AsyncIterator[None]:
        """Hold a slot for the body of an ``async with``."""
        await self.acquire(first=first)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, *, first: bool = False) -> None:
        """Take a slot, waiting in line while all are taken (``first``: ahead of those not
        ``first``); ``release`` it exactly once."""
        line = self._first if first else self._waiters
        if self.limit and (self.running >= self.limit or line or self._first):
            queued = time.monotonic()
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            line.append(waiter)
            metrics.DELEGATES_WAITING.inc()
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # handed a slot at the moment we were cancelled: pass it on
                else:  # still queued (unless a release already dropped it as cancelled)
                    with contextlib.suppress(ValueError):
                        line.remove(waiter)
                raise
            finally:
                metrics.DELEGATES_WAITING.dec()
            metrics.DELEGATE_QUEUE_SECONDS.observe(time.monotonic() - queued)
        else:
            self.running += 1
            metrics.DELEGATE_QUEUE_SECONDS.observe(0.0)
        DelegateSlots.held_in_process += 1

    def release(self) -> None:
        """Give back the slot ``acquire`` took (to the oldest waiter, if any)."""
        DelegateSlots.held_in_process -= 1
        self._release()

    def _release(self) -> None:
        for line in (self._first, self._waiters):
            while line:
                waiter = line.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot changes hands: ``running`` stays as it is
                    return
        self.running -= 1


metrics.DELEGATES_RUNNING.set_function(lambda: DelegateSlots.held_in_process)


@dataclass(frozen=True, slots=True)
class SubprocessExec:
    """Plugins as child processes (``app.cni.child``), each in a session of its own.

    ``busy_retries``/``busy_delay``: how often, and after how long (growing linearly), to retry an exec
    that failed with ETXTBSY (a plugin binary still being written). ``reap_grace``: how long to wait for
    a plugin killed at its timeout to exit before giving up on it (logged, never silent; it is
    reaped whenever it exits).
    ``max_running``: how many plugin processes may run at once (0: no bound); executions beyond it
    wait, in arrival order (a DEL's ahead of the others: ``DelegateSlots``), and the wait does not
    count against ``timeout``.
    """

    max_running: int = 0
    busy_retries: int = 5
    busy_delay: float = 0.05
    reap_grace: float = 5.0
    slots: DelegateSlots = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "slots", DelegateSlots(self.max_running))

    def find_in_path(self, plugin: str, paths: Sequence[str], *, root: str = "") -> str:
        return find_in_path(plugin, paths, root=root)

    async def exec_plugin(
        self,
        *,
        plugin_path: str,
        stdin: bytes,
        env: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109 (a per-call limit of the protocol)
        root: str = "",
        ready: asyncio.Future[None] | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> bytes:
        await self.slots.acquire(first=env.get("CNI_COMMAND") == "DEL")
        try:
            if wanted is not None and not wanted():
                raise NotExecutedError(
                    ErrorCode.TRY_AGAIN_LATER,
                    f"plugin {plugin_path} not started: its request had failed while it waited for its turn",
                )
            return await self._exec(
                plugin_path=plugin_path, stdin=stdin, env=env, timeout=timeout, root=root, ready=ready
            )
        finally:
            self.slots.release()

    async def _exec(
        self,
        *,
        plugin_path: str,
        stdin: bytes,
        env: Mapping[str, str],
        timeout: float,  # noqa: ASYNC109 (a per-call limit of the protocol)
        root: str,
        ready: asyncio.Future[None] | None,
    ) -> bytes:
        deadline = asyncio.get_running_loop().time() + timeout
        process: child.Child | None = None
        try:
            if ready is not None and not _went_well(ready):
                if not ready.done():
                    with contextlib.suppress(child.InputTooLargeError):  # then started once ready
                        process = await self._start(
                            plugin_path, env, root, stdin=stdin, deadline=deadline, hold_input=True
                        )
                async with asyncio.timeout_at(deadline):
                    await _await_ready(ready, plugin_path)
            if process is None:
                process = await self._start(plugin_path, env, root, stdin=stdin, deadline=deadline)
            else:
                process.release_input()
            finished = await process.communicate(deadline=deadline)
        except TimeoutError:
            if process is not None:
                await self._kill_and_reap(process, plugin_path)
            raise CniError(
                ErrorCode.INTERNAL,
                f"plugin {plugin_path} timed out after {timeout:g}s; its process group was killed",
            ) from None
        except child.OutputOverflowError as overflow:
            if overflow.running and process is not None:  # raised by its ``communicate`` only
                await self._kill_and_reap(process, plugin_path)
            raise overflow_error(plugin_path=plugin_path, overflow=overflow) from None
        except BaseException:
            # Cancelled (or worse) while the plugin runs: never leave it behind us (it is reaped
            # when it has exited).
            if process is not None:
                process.kill_group(signal.SIGKILL)
                process.abandon()
            raise
        _log_stderr(plugin_path, finished.stderr)
        if finished.returncode == 0:
            return finished.stdout
        raise failure_error(
            plugin_path=plugin_path,
            returncode=finished.returncode,
            stdout=finished.stdout,
            stderr=finished.stderr,
        )

    async def _start(
        self,
        plugin_path: str,
        env: Mapping[str, str],
        root: str,
        *,
        stdin: bytes,
        deadline: float,
        hold_input: bool = False,
    ) -> child.Child:
        # The child enters the root after fork, before exec (Go's SysProcAttr.Chroot): a function of
        # C calls on a path encoded beforehand, so the forked child runs almost no Python.
        in_root = partial(enter_root, os.fsencode(root)) if root else None
        for attempt in range(self.busy_retries + 1):
            try:
                return child.spawn(plugin_path, env=env, stdin=stdin, preexec=in_root, hold_input=hold_input)
            except subprocess.SubprocessError as err:
                # Only the pre-exec step raises this: the root could not be entered.
                raise NotExecutedError(
                    ErrorCode.INTERNAL,
                    f"failed to execute plugin {plugin_path}: cannot enter chrootDir {root}",
                ) from err
            except OSError as err:
                if err.errno == errno.ETXTBSY and attempt < self.busy_retries:
                    logger.debug(
                        "plugin %s: text file busy, retrying exec (attempt %d)", plugin_path, attempt + 1
                    )
                    async with asyncio.timeout_at(deadline):  # TimeoutError: the plugin's time is up
                        await asyncio.sleep(self.busy_delay * (attempt + 1))
                    continue
                inside = f" inside chrootDir {root}" if root else ""
                if err.errno in child.SHORTAGE_ERRNOS:
                    raise NotExecutedError(
                        ErrorCode.TRY_AGAIN_LATER,
                        f"failed to execute plugin {plugin_path}{inside}: {err.strerror}: the daemon "
                        "is short of descriptors, memory or processes for now",
                    ) from err
                raise NotExecutedError(
                    _EXEC_ERROR_CODES.get(err.errno or 0, ErrorCode.INTERNAL),
                    f"failed to execute plugin {plugin_path}{inside}: {err.strerror}",
                ) from err
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _kill_and_reap(self, process: child.Child, plugin_path: str) -> None:
        process.kill_group(signal.SIGKILL)
        if not await process.reap(self.reap_grace):
            # SIGKILL did not end it (stuck in the kernel); the timeout error is raised anyway.
            logger.error(
                "plugin %s (pid %d) killed but not reaped after %gs",
                plugin_path,
                process.pid,
                self.reap_grace,
            )


_EXEC_ERROR_CODES: Final = {
    errno.ETXTBSY: ErrorCode.TRY_AGAIN_LATER,
    **dict.fromkeys(
        (errno.ENOEXEC, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR),
        ErrorCode.INVALID_NETWORK_CONFIG,
    ),
    errno.EIO: ErrorCode.IO_FAILURE,
}
"""The CNI code of an exec that failed after the lookup had found an executable file. A file still
being written (``ETXTBSY`` past the retries) passes: try again later. A file that cannot be executed
as it is (not a format the kernel runs, a missing script interpreter, the execute bit or the file
gone since the lookup, a ``noexec`` mount) is what the lookup refuses as code 7, found one step
later. Anything else (``E2BIG``, ...) stays an internal error."""


def _went_well(ready: asyncio.Future[None]) -> bool:
    return ready.done() and not ready.cancelled() and ready.exception() is None


async def _await_ready(ready: asyncio.Future[None], plugin_path: str) -> None:
    """Wait for ``ready`` (shielded: the future belongs to the caller); its failure means the plugin
    was never given its input."""
    try:
        await asyncio.shield(ready)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not ready.cancelled() or (task is not None and task.cancelling()):
            raise  # this call itself is cancelled (perhaps as ``ready`` is given up): it stays so
        raise NotExecutedError(
            ErrorCode.INTERNAL,
            f"plugin {plugin_path} was not given its input: what it waited for was given up",
        ) from None
    except OSError as err:
        raise NotExecutedError(
            ErrorCode.INTERNAL,
            f"plugin {plugin_path} was not given its input: what it waited for failed ({err})",
        ) from err


def enter_root(root: bytes) -> None:
    """Run in a child between fork and exec: enter ``root`` (Go's ``SysProcAttr.Chroot``)."""
    os.chroot(root)
    os.chdir(b"/")


def failure_error(*, plugin_path: str, returncode: int | None, stdout: bytes, stderr: bytes) -> CniError:
    """The CniError for a plugin that exited non-zero: its own error object from stdout, code unchanged.

    Without a valid error object on stdout: code 999 naming the plugin and exit status, ``details``
    the tail of stderr. A ``PluginExitError`` when it exited by itself (a positive status), not by a
    signal.
    """
    error_type = PluginExitError if returncode is not None and returncode > 0 else CniError
    try:
        printed = CniError.from_json(json.loads(stdout))
    except (ValueError, RecursionError):
        printed = None
    if printed is not None:
        return error_type(printed.code, printed.msg, printed.details)
    status = _describe_status(returncode)
    if stdout.strip():
        msg = f"plugin {plugin_path} failed ({status}) and printed no CNI error object: {_tail(stdout)!r}"
    else:
        msg = f"plugin {plugin_path} failed ({status}) with no error on stdout"
    return error_type(ErrorCode.INTERNAL, msg, _tail(stderr).strip())


def overflow_error(*, plugin_path: str, overflow: child.OutputOverflowError) -> CniError:
    """The CniError for a plugin that wrote more than the daemon holds of one of its outputs: a
    decoding failure (6), as for any output that cannot be taken as an answer, and the daemon's own
    finding (not 999, which stands for a plugin's own untyped error)."""
    limit = f"over the daemon's limit on a plugin's {overflow.stream} ({overflow.capacity // _MIB} MiB)"
    ending = "; its process group was killed" if overflow.running else ", none of it read"
    return CniError(
        ErrorCode.DECODING_FAILURE,
        f"plugin {plugin_path} wrote more than {overflow.capacity} bytes to {overflow.stream}, {limit}"
        f"{ending}",
    )


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
