"""One plugin process on the event loop: spawn it with its input in memory, await its exit, read its output.

``asyncio.create_subprocess_exec`` costs a waiter thread per child (the default child watcher), a
transport and three pipe protocols, and some thirty loop turns per plugin: more CPU than a small
plugin's own run. A plugin needs none of that. Its stdin, stdout and stderr are three memory files
(``memfd_create``; an unlinked temporary file where that is missing): the input is written before
the spawn, the plugin writes its output without ever blocking on a reader, and the output is read
in two calls once it has exited. So nothing but the exit is watched: with a pidfd on the loop
(Linux 5.3), else by a blocking ``waitpid`` in a thread of the child's own. A plugin that leaves a
process of its own behind holding its stdout (a daemon it started) does not hold up its answer, as
it would with pipes: the answer is what the plugin wrote before it exited.

The exit status is read without reaping (``waitid(P_PIDFD, ..., WNOWAIT)``, Linux 5.4): the caller
goes on at once, and the zombie is reaped later, on the loop. Reaping a plugin the instant it exits
is not free: the kernel then drops the plugin's cached ``/proc/<pid>`` entries while its threads are
still being torn down, and for about one ADD in five that took 1 to 8 ms of kernel CPU, during which
the loop served nothing; reaped 0.2 ms or more after the exit, the same plugins cost about 25 µs
each (99 % under 0.1 ms, at 4 networks per pod). A zombie whose exit was noticed ``REAP_DELAY`` ago
is reaped when the loop next starts a child or notices an exit (the next plugin of a pod with
several networks), else by a timer ``REAP_IDLE`` after it: no wake-up of its own per plugin. (A
reaper thread did the same off the loop, but its wake-ups cost twice the reaping itself.) Where
``waitid`` cannot take a pidfd, the child is reaped inline.

A child may also be started before it may have its input (``hold_input``): its stdin is then a
pipe that ``Child.release_input`` fills and closes, the whole input at once (the pipe is made large
enough to take it without a reader, else ``InputTooLargeError`` before anything starts). A CNI plugin
learns what to do only from its input, so until then it waits in its first read, its start-up
(exec, runtime init) done meanwhile.

A child leads a session of its own (its pid is its process group, so ``kill_group`` reaches its
children too). Without a root it is started with ``posix_spawn`` (glibc's vfork-style clone);
with a root (``chrootDir``) it is forked by ``subprocess`` and enters the root before exec.
Every file descriptor this module opens is closed again, and every child it started is reaped,
also when its caller is cancelled or gives up on it: the exit watch outlives ``abandon``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

USE_PIDFD = hasattr(os, "pidfd_open")
"""Watch exits with pidfds where Python offers them (a kernel without them falls back per child)."""
REAP_DELAY = 0.005
"""Seconds after its exit was noticed before a zombie may be reaped (what it costs meanwhile: a pid)."""
REAP_IDLE = 0.05
"""Seconds after its exit was noticed by which a zombie is reaped even when the loop has nothing else
to do (its timer is the one wake-up reaping may cost, per quiet spell rather than per plugin)."""
_PEEK_BY_PIDFD = hasattr(os, "P_PIDFD") and hasattr(os, "WNOWAIT")
"""Read an exit status through the pidfd, leaving the zombie to be reaped later (``_Zombies``), until a
kernel refuses it: Linux 5.3 has pidfds but not ``waitid(P_PIDFD)``."""
_USE_MEMFD = hasattr(os, "memfd_create")
"""Memory files for the child's stdio (until the kernel refuses ``memfd_create``)."""


class InputTooLargeError(Exception):
    """No pipe here can hold this input whole: start the child with its input instead."""


@dataclass(frozen=True, slots=True)
class Finished:
    """How a child ended: its exit code (negative: the signal that killed it) and its output."""

    returncode: int
    stdout: bytes
    stderr: bytes


def spawn(
    path: str,
    *,
    env: Mapping[str, str],
    stdin: bytes = b"",
    preexec: Callable[[], None] | None = None,
    hold_input: bool = False,
) -> Child:
    """Start ``path`` (no arguments) with ``env`` in a session of its own, reading ``stdin``.

    ``preexec`` runs in the child between fork and exec (e.g. entering a root); with it the child
    is forked by ``subprocess`` and a failure of ``preexec`` raises ``subprocess.SubprocessError``.
    A failed exec raises ``OSError`` with the exec's errno (ENOENT, EACCES, ETXTBSY, ...).
    ``hold_input``: ``stdin`` reaches the child only at ``Child.release_input`` (``InputTooLargeError``,
    nothing started, where no pipe can hold it)."""
    fds: list[int] = []
    held: int | None = None
    try:
        if hold_input:
            reading, held = _input_pipe(len(stdin))
            fds.append(reading)
        else:
            fds.append(_memory_file("stdin"))
        for name in ("stdout", "stderr"):
            fds.append(_memory_file(name))
        if min(fds) <= 2:  # only where the daemon's own stdio was closed
            for index, fd in enumerate(fds):
                fds[index] = _above_stdio(fd)
        if held is None:
            _write_all(fds[0], stdin)
        pid = _start(path, env=env, preexec=preexec, stdio=fds)
    except BaseException:
        for fd in (*fds, *(() if held is None else (held,))):
            os.close(fd)
        raise
    os.close(fds[0])  # the child reads its own copy, from the start (``pwrite`` moved no offset)
    return Child(pid, stdout=fds[1], stderr=fds[2], held_input=None if held is None else (held, stdin))


def _input_pipe(size: int) -> tuple[int, int]:
    """A close-on-exec pipe (read end, write end) whose buffer takes ``size`` bytes without a reader."""
    reading, writing = os.pipe2(os.O_CLOEXEC)
    try:
        if fcntl.fcntl(writing, fcntl.F_GETPIPE_SZ) < size:
            try:
                fcntl.fcntl(writing, fcntl.F_SETPIPE_SZ, size)
            except OSError as err:  # EPERM: beyond fs.pipe-max-size, or the user's pipe quota
                raise InputTooLargeError(f"no pipe takes {size} bytes here: {err.strerror}") from None
        os.set_blocking(writing, False)
    except BaseException:
        os.close(reading)
        os.close(writing)
        raise
    return reading, writing


def _memory_file(name: str) -> int:
    """A new close-on-exec file in memory: a memfd, or an unlinked temporary file without one."""
    global _USE_MEMFD
    if _USE_MEMFD:
        try:
            return os.memfd_create(f"plugin-{name}", os.MFD_CLOEXEC)
        except OSError as err:  # ENOSYS (no memfd), EPERM (a seccomp profile refusing it)
            logger.debug("memfd_create refused (%s): plugin stdio goes through temporary files", err)
            _USE_MEMFD = False
    fd, path = tempfile.mkstemp(prefix=f"multus-plugin-{name}-")
    os.unlink(path)
    os.set_inheritable(fd, False)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset:], offset)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    if not size:
        return b""
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break  # truncated meanwhile (by a process the plugin left behind): what is left
        chunks.append(chunk)
        offset += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _above_stdio(fd: int) -> int:
    """``fd``, or a close-on-exec copy of it numbered 3 or above (a daemon started with a closed stdio
    could be handed 0-2, which the child's own stdio would then shadow)."""
    if fd > 2:
        return fd
    above = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return above


def _start(path: str, *, env: Mapping[str, str], preexec: Callable[[], None] | None, stdio: list[int]) -> int:
    if preexec is None:
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
        return os.posix_spawn(path, [path], env, file_actions=actions, setsid=True)
    process = subprocess.Popen(
        [path],
        stdin=stdio[0],
        stdout=stdio[1],
        stderr=stdio[2],
        env=dict(env),
        start_new_session=True,
        preexec_fn=preexec,
    )
    # The child is reaped by ``Child``; Popen must not reap it (or warn about it) behind our back.
    process.returncode = 0
    return process.pid


class Child:
    """A started child and its two output files (the parent's descriptors): run it with ``communicate``."""

    def __init__(
        self, pid: int, *, stdout: int, stderr: int, held_input: tuple[int, bytes] | None = None
    ) -> None:
        self.pid = pid
        self._outputs: tuple[int, int] | None = (stdout, stderr)
        self._returncode: int | None = None
        self._pidfd: int | None = None
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._exit_waiter: asyncio.Future[None] | None = None
        self._held_input = held_input
        """A pipe's write end and the input ``release_input`` writes into it (``hold_input``)."""
        _zombies.reap_due(self._loop)
        self._watch_exit()

    # ---- running ------------------------------------------------------------------------------

    def release_input(self) -> None:
        """Hand a child started with ``hold_input`` its whole input, then end it (EOF). A child that
        is gone without reading it is left to tell by its exit."""
        held, self._held_input = self._held_input, None
        if held is None:
            return
        fd, data = held
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BrokenPipeError:
            logger.debug("plugin %d exited before reading its input", self.pid)
        finally:
            os.close(fd)

    async def communicate(self, *, deadline: float | None = None) -> Finished:
        """Wait for the exit, then read what the child wrote to stdout and stderr. A cancellation, or
        ``TimeoutError`` at ``deadline`` (the loop's clock), leaves the child running: the caller
        kills it (``kill_group``) and ``abandon``s or ``reap``s it."""
        if self._returncode is None:
            # A future of this call's own (not the child's): cancelling the call cancels only it.
            waiter = self._exit_waiter = self._loop.create_future()
            # A timer on this call's own future: cheaper than a timeout scope around the call, and
            # nothing but this call can be interrupted by it.
            timer = None if deadline is None else self._loop.call_at(deadline, _time_out, waiter)
            try:
                await waiter
            finally:
                self._exit_waiter = None
                if timer is not None:
                    timer.cancel()
        assert self._returncode is not None
        outputs = self._outputs
        if outputs is None:
            raise RuntimeError(f"the output of plugin {self.pid} was given up already")
        self._outputs = None
        try:
            return Finished(self._returncode, _read_all(outputs[0]), _read_all(outputs[1]))
        finally:
            for fd in outputs:
                os.close(fd)

    def kill_group(self, signal_number: int) -> None:
        """Signal the child's process group (the child leads its own session), its children included."""
        if self._returncode is not None and self._pidfd is None:
            return  # reaped: its pid may belong to someone else by now
        try:
            os.killpg(self.pid, signal_number)
        except ProcessLookupError:
            logger.debug("process group %d already gone", self.pid)

    async def reap(self, grace: float) -> bool:
        """Wait up to ``grace`` seconds for the exit; True if it came. The output is given up, and
        the child is reaped in any case, now or when it exits."""
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(self._exited)
        except TimeoutError:
            return False
        finally:
            self.abandon()
        return True

    def abandon(self) -> None:
        """Give up the output (and any input still held: the child reads EOF) now; the exit watch
        stays until the child is reaped, then closes too."""
        outputs, self._outputs = self._outputs, None
        held, self._held_input = self._held_input, None
        for fd in (*(outputs or ()), *(() if held is None else (held[0],))):
            os.close(fd)

    # ---- the exit -----------------------------------------------------------------------------

    def _watch_exit(self) -> None:
        if USE_PIDFD:
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except OSError as err:  # ENOSYS before Linux 5.3; EMFILE: out of descriptors
                logger.debug("pidfd_open(%d) failed (%s): waiting for its exit in a thread", self.pid, err)
            else:
                self._loop.add_reader(self._pidfd, self._on_exit)
                return
        # A thread of its own per child (as asyncio's own watcher does): a shared pool could make a
        # quick plugin's exit wait behind long-running ones.
        threading.Thread(target=self._wait_in_thread, name=f"waitpid-{self.pid}", daemon=True).start()

    def _on_exit(self) -> None:
        assert self._pidfd is not None
        returncode = self._peek_exit(self._pidfd) if _PEEK_BY_PIDFD else None
        if returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 255 << 8  # reaped elsewhere: its status is lost
            if pid == 0:
                return  # not yet (spurious wake-up)
            returncode = os.waitstatus_to_exitcode(status)
        else:
            _zombies.add(self.pid, self._loop)
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self._exit(returncode)

    def _peek_exit(self, pidfd: int) -> int | None:
        """The exit code, the zombie left in place; None: not exited yet, reaped by somebody else, or
        no such ``waitid`` here (then reaping inline from now on): ``waitpid`` then tells which."""
        global _PEEK_BY_PIDFD
        try:
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None  # reaped elsewhere: waitpid says so too, and the status is lost
        except OSError as err:  # EINVAL: a kernel with pidfds but without waitid(P_PIDFD)
            logger.debug("waitid(P_PIDFD) refused (%s): reaping children inline", err)
            _PEEK_BY_PIDFD = False
            return None
        if info is None:
            return None  # not yet (spurious wake-up); waitpid below agrees
        if info.si_code == os.CLD_EXITED:
            return info.si_status
        return -info.si_status  # killed (or dumped core): the signal, negative as waitpid's

    def _wait_in_thread(self) -> None:
        returncode = _wait_blocking(self.pid)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._exit, returncode)

    def _exit(self, returncode: int) -> None:
        self._returncode = returncode
        if not self._exited.done():
            self._exited.set_result(returncode)
        waiter = self._exit_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Zombies:
    """Children whose exit status was read and who wait to be reaped, oldest first.

    Reaped in passing (``reap_due``, whenever a loop starts a child or notices an exit) once
    ``REAP_DELAY`` old, and by one timer per loop for what the loop's own activity has not reaped
    ``REAP_IDLE`` after its exit; the timer is dropped once nothing is left to reap. Shared by the
    loops of all threads (a lock keeps the queue consistent)."""

    def __init__(self) -> None:
        self._waiting: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()
        self._timers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.TimerHandle] = (
            weakref.WeakKeyDictionary()
        )

    def add(self, pid: int, loop: asyncio.AbstractEventLoop) -> None:
        """``pid`` has exited (its status read): reap what is due, queue it, make sure a timer runs."""
        now = time.monotonic()
        self.reap_due(loop, now)
        with self._lock:
            self._waiting.append((now, pid))
        if loop not in self._timers:
            self._timers[loop] = loop.call_at(loop.time() + REAP_IDLE, self._on_timer, loop)

    def reap_due(self, loop: asyncio.AbstractEventLoop, now: float | None = None) -> None:
        """Reap every queued child noticed ``REAP_DELAY`` or more before ``now``; with none left,
        ``loop`` (the caller's, running) needs its timer no more."""
        if self._waiting:
            threshold = (time.monotonic() if now is None else now) - REAP_DELAY
            while True:
                with self._lock:
                    if not self._waiting or self._waiting[0][0] > threshold:
                        break
                    _, pid = self._waiting.popleft()
                _reap_exited(pid)
        if not self._waiting:
            timer = self._timers.pop(loop, None)
            if timer is not None:
                timer.cancel()

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timers.pop(loop, None)
        self.reap_due(loop)
        with self._lock:
            oldest = self._waiting[0][0] if self._waiting else None
        if oldest is not None:  # noticed since (or by another loop): its own turn comes later
            delay = max(oldest + REAP_IDLE - time.monotonic(), REAP_DELAY)
            self._timers[loop] = loop.call_at(loop.time() + delay, self._on_timer, loop)


def _reap_exited(pid: int) -> None:
    """Reap a child whose exit was already read (a zombie until now); it no longer blocks."""
    with contextlib.suppress(ChildProcessError):  # reaped elsewhere: nothing is left to do
        os.waitpid(pid, os.WNOHANG)


_zombies = _Zombies()


def _wait_blocking(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255
        return os.waitstatus_to_exitcode(status)
