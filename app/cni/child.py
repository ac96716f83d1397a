"""One plugin process on the event loop: spawn it with its input in memory, await its exit, read its output.

``asyncio.create_subprocess_exec`` costs a waiter thread per child (the default child watcher), a
transport and three pipe protocols, and some thirty loop turns per plugin: more CPU than a small
plugin's own run. A plugin needs none of that. Its stdin, stdout and stderr are three memory files
(``memfd_create``; an unlinked temporary file where that is missing): the input is written before
the spawn, the plugin writes its output without ever blocking on a reader, and the output is read
in two calls once it has exited. So nothing but the exit is watched: with a pidfd (Linux 5.3) in
the loop's exit watch, else by a blocking ``waitpid`` in a thread of the child's own. A plugin that leaves a
process of its own behind holding its stdout (a daemon it started) does not hold up its answer, as
it would with pipes: the answer is what the plugin wrote before it exited. Nor can such a process
fill them further once the plugin has exited: the files are sealed against growth then (its writes
fail, as they would on a pipe nobody reads), else what it wrote would pile up in memory, unread, for
as long as it runs.

What a plugin writes is held in the daemon's memory (and counted in its cgroup), so it is bounded
while the plugin runs too, not only once it has exited: the timer that serves the caller's deadline
also looks at the two files' sizes every ``OUTPUT_CHECK_INTERVAL``, and a file past its capacity
(``STDOUT_CAPACITY``, ``STDERR_CAPACITY``) makes ``communicate`` raise ``OutputOverflowError``,
the child left running for its caller to kill, as at a timeout. A run shorter than one interval
(nearly all) is looked at only at its exit: it costs the one timer its deadline needed anyway. The
size (``fstat``), not the file offset, is what is looked at: a shell plugin that reopens its stdout
or stderr by name (``> /dev/stdout``, ``>> /dev/stderr``, ``2>/dev/stdout``) writes through an open
file of its own, truncating or appending, which the parent's offset never sees. Nothing is sealed
or pre-sized before the exit, so such a plugin works as it does with pipes. At the exit a stdout
past its capacity is not read at all (``OutputOverflowError``), and of a stderr past its capacity
only its last ``STDERR_TAIL`` bytes are read (all that a caller logs or reports of it). So what a
plugin run holds is at most its two capacities plus what it writes between two looks (one interval,
and however late the loop runs the look); the looks start with ``communicate``, so a child held
for its input (``hold_input``) is not looked at before it is given it.

The exit watch is one epoll set per event loop (``ExitWatch``), itself one reader of the loop, that
holds the pidfds of every child running: adding a child to it and taking it out again are one
``epoll_ctl`` each, where a reader of the loop's own per child costs the loop a handle made, started,
stopped and closed (0.035-0.05 ms of the parent's CPU per plugin run on this project's test
machines: two trees taken pod by pod, real ``bridge`` ADDs and DELs, 1 and 4 networks). Its
descriptor stays open for the loop's life.

When its exit is noticed, the child's status is read through its pidfd without reaping it
(``waitid`` with ``WNOWAIT``), and the zombie is reaped when the process's next child exits, in any
event loop (its teardown long over by then), or, if none does, ``LATE_REAP_SECONDS`` later (one
timer per loop for all of them). Reaping a plugin at the instant its pidfd is readable meets the
kernel still tearing the plugin's other threads down on another CPU (a Go plugin that entered a
network namespace has ``/proc`` entries under several threads): the parent's ``release_task`` then
spins in ``d_invalidate`` for milliseconds, for 5-10 % of real ADDs and DELs on this project's 2-CPU
test machines (in the daemon, 600 reaps: a median of 22-28 µs, a mean of 185-303 µs). Reaped at the
next exit instead, the daemon's CPU per ADD+DEL pair fell by 0.54-0.81 ms at one network and
1.05-1.17 ms at four (``bench.compare``, three runs of 150 pods). Reaping at the next spawn saved
less at four networks (the previous plugin exited a fraction of a millisecond before), and a timer
per child a few milliseconds later (an earlier version) cost more than it saved: a loop wake-up
each.

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
``reap_exited`` reaps at once those whose exit was read (a caller about to count processes).
A zombie holds its pid, so no other process can take it meanwhile: a signal to its process group
still reaches only what the plugin left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import select
import signal
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from app.cni import types

logger = logging.getLogger(__name__)

USE_PIDFD = hasattr(os, "pidfd_open")
"""Watch exits with pidfds where Python offers them (a kernel without them falls back per child)."""
_WAITID_PIDFD = hasattr(os, "P_PIDFD")
"""Whether an exit's status can be read through the pidfd without reaping (Linux 5.4; cleared at
the first ``EINVAL`` of an older kernel, which then reaps at once)."""
LATE_REAP_SECONDS: Final = 1.0
"""How long a child whose exit was read may stay a zombie when no other child's exit reaps it."""
_USE_MEMFD = hasattr(os, "memfd_create")
"""Memory files for the child's stdio (until the kernel refuses ``memfd_create`` for good: a shortage
of descriptors or memory, ``SHORTAGE_ERRNOS``, fails that one spawn and changes nothing)."""


_RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
"""Signals Python ignores at start-up, put back to their default in the child (an ignored signal
stays ignored across exec): what ``subprocess`` does with ``restore_signals``, the forked path's too."""


_MIB: Final = 1024 * 1024

STDOUT_CAPACITY: Final = 4 * _MIB
"""The most of a plugin's stdout the daemon takes; a plugin that writes more has failed. A CNI
result is a few KiB, even with hundreds of routes; 4 MiB is also the most a request to the daemon
may carry."""
STDERR_CAPACITY: Final = 1 * _MIB
"""The most of a plugin's stderr held while it runs; a plugin that writes more while running is
stopped. Only the tail of stderr is ever logged or reported (``STDERR_TAIL``)."""
STDERR_TAIL: Final = 2048
"""What is read of a stderr that is past its capacity at the exit: its last bytes, as many as any
caller uses (``app.cni.invoke`` logs and reports the last 2 KiB)."""
OUTPUT_CHECK_INTERVAL: Final = 0.1
"""Seconds between looks at a running child's output sizes. The memory a run can hold is a
capacity plus what the child writes between two looks; a run shorter than this costs no look."""

SHORTAGE_ERRNOS: Final = types.SHORTAGE_ERRNOS | {errno.EAGAIN}
"""What ``spawn`` fails with while the daemon or the node is short of descriptors (``EMFILE``,
``ENFILE``), memory (``ENOMEM``) or processes (``EAGAIN``): a shortage that passes, so the same
call may succeed later. Never taken as a sign that memory files or the plugin are unusable."""

_STREAMS: Final = ("stdout", "stderr")
_CAPACITIES: Final = (STDOUT_CAPACITY, STDERR_CAPACITY)


class InputTooLargeError(Exception):
    """No pipe here can hold this input whole: start the child with its input instead."""


class OutputOverflowError(Exception):
    """The child wrote more than ``capacity`` bytes to ``stream`` (stdout or stderr); ``running``:
    found while it ran (the caller kills it), else at its exit (nothing of that stream was read)."""

    def __init__(self, stream: str, capacity: int, *, running: bool) -> None:
        when = "while it ran" if running else "when it exited"
        super().__init__(f"{stream} was past its capacity of {capacity} bytes {when}")
        self.stream = stream
        self.capacity = capacity
        self.running = running


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
    try:
        return Child(pid, stdout=fds[1], stderr=fds[2], held_input=None if held is None else (held, stdin))
    except BaseException:  # no way to watch its exit (no pidfd, and no thread could start)
        _give_up_started(pid, [*fds[1:], *(() if held is None else (held,))])
        raise


def _give_up_started(pid: int, descriptors: list[int]) -> None:
    """A child started that nothing will watch: kill its session, close our ends of its stdio, and
    reap it from the event loop's timer (no thread, no descriptor: what failed was getting one)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # a session leader: its group is its pid
    for fd in descriptors:
        os.close(fd)
    _reap_when_gone(asyncio.get_running_loop(), pid, _GIVE_UP_REAP_LOOKS)


_GIVE_UP_REAP_INTERVAL: Final = 0.05
_GIVE_UP_REAP_LOOKS: Final = 1200
"""How often, and how many times (a minute), a given-up child is looked for its exit: killed, it
exits at once unless the kernel holds it in an uninterruptible call."""


def _reap_when_gone(loop: asyncio.AbstractEventLoop, pid: int, looks_left: int) -> None:
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return  # reaped already
    if done == 0 and looks_left > 0:
        loop.call_later(_GIVE_UP_REAP_INTERVAL, _reap_when_gone, loop, pid, looks_left - 1)
    elif done == 0:
        logger.warning("plugin process %d, given up before it could be watched, did not exit", pid)


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
            return os.memfd_create(f"plugin-{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError as err:  # ENOSYS (no memfd), EPERM (a seccomp profile refusing it)
            if err.errno in SHORTAGE_ERRNOS:
                raise  # out of descriptors or memory for now: memfds still work once that passes
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


def _seal(fd: int) -> None:
    """Let the file neither grow nor shrink any more: a process the child left behind holding it
    gets EPERM on writes past its end (a temporary file, where memfds are refused, cannot be sealed)."""
    try:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except OSError as err:  # EINVAL: not a memfd
        logger.debug("cannot seal plugin output file: %s", err)


_SEALS: Final = fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK


def _read_stdout(fd: int) -> bytes:
    """The whole of a sealed stdout file; ``OutputOverflowError`` (nothing read) past its capacity."""
    size = os.fstat(fd).st_size
    if size > STDOUT_CAPACITY:
        raise OutputOverflowError("stdout", STDOUT_CAPACITY, running=False)
    return _read_range(fd, 0, size)


def _read_stderr(fd: int) -> bytes:
    """A sealed stderr file: whole within its capacity, else only its last ``STDERR_TAIL`` bytes."""
    size = os.fstat(fd).st_size
    start = size - STDERR_TAIL if size > STDERR_CAPACITY else 0
    return _read_range(fd, start, size)


def _overflow(outputs: tuple[int, int]) -> OutputOverflowError | None:
    """The error for the first output file past its capacity while the child runs, else None. The
    size is what counts: writes through a reopened ``/dev/stdout`` move no offset of ours."""
    for stream, fd, capacity in zip(_STREAMS, outputs, _CAPACITIES, strict=True):
        if os.fstat(fd).st_size > capacity:
            return OutputOverflowError(stream, capacity, running=True)
    return None


def _read_range(fd: int, start: int, size: int) -> bytes:
    """Bytes ``start`` to ``size`` of ``fd`` (fewer if the file was cut meanwhile)."""
    if start >= size:
        return b""
    chunks: list[bytes] = []
    offset = start
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
        return os.posix_spawn(
            path, [path], env, file_actions=actions, setsid=True, setsigdef=_RESTORED_SIGNALS
        )
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
        self._timer: asyncio.TimerHandle | None = None
        """The deadline's or the next output look's, while ``communicate`` waits."""
        self._held_input = held_input
        """A pipe's write end and the input ``release_input`` writes into it (``hold_input``)."""
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
        """Wait for the exit, then read what the child wrote to stdout and stderr.

        A cancellation, ``TimeoutError`` at ``deadline`` (the loop's clock) or an
        ``OutputOverflowError`` found while the child runs (``running``) leaves it running: the
        caller kills it (``kill_group``) and ``abandon``s or ``reap``s it. At the exit, a stdout past
        its capacity raises ``OutputOverflowError`` too, none of it read."""
        if self._returncode is None:
            # A future of this call's own (not the child's): cancelling the call cancels only it.
            waiter = self._exit_waiter = self._loop.create_future()
            self._arm_timer(waiter, deadline)
            try:
                await waiter
            finally:
                self._exit_waiter = None
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
        assert self._returncode is not None
        outputs = self._outputs
        if outputs is None:
            raise RuntimeError(f"the output of plugin {self.pid} was given up already")
        self._outputs = None
        try:
            _seal(outputs[0])
            _seal(outputs[1])
            return Finished(self._returncode, _read_stdout(outputs[0]), _read_stderr(outputs[1]))
        finally:
            for fd in outputs:
                os.close(fd)

    def _arm_timer(self, waiter: asyncio.Future[None], deadline: float | None) -> None:
        """One timer on ``waiter`` (this call's own future) for the deadline and the output looks
        alike: a run that ends within one interval costs the one timer a deadline alone cost, and
        nothing but this call can be interrupted by it (cheaper than a timeout scope around it)."""
        look_at = self._loop.time() + OUTPUT_CHECK_INTERVAL
        if deadline is not None and deadline <= look_at:
            self._timer = self._loop.call_at(deadline, _time_out, waiter)
        else:
            self._timer = self._loop.call_at(look_at, self._look_at_output, waiter, deadline)

    def _look_at_output(self, waiter: asyncio.Future[None], deadline: float | None) -> None:
        self._timer = None
        if waiter.done():
            return
        outputs = self._outputs
        overflow = None if outputs is None else _overflow(outputs)
        if overflow is not None:
            waiter.set_exception(overflow)
        else:
            self._arm_timer(waiter, deadline)

    def kill_group(self, signal_number: int) -> None:
        """Signal the child's process group (the child leads its own session), its children included."""
        if self._returncode is not None:
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
        for fd in outputs or ():
            _seal(fd)
            os.close(fd)
        if held is not None:
            os.close(held[0])

    # ---- the exit -----------------------------------------------------------------------------

    def _watch_exit(self) -> None:
        if USE_PIDFD:
            pidfd: int | None = None
            try:
                pidfd = os.pidfd_open(self.pid)
                exit_watch(self._loop).add(pidfd, self)
            except OSError as err:  # ENOSYS before Linux 5.3; EMFILE, ENOMEM: out of descriptors or memory
                if pidfd is not None:
                    os.close(pidfd)
                logger.debug("no pidfd watch for %d (%s): waiting for its exit in a thread", self.pid, err)
            else:
                self._pidfd = pidfd
                return
        # A thread of its own per child (as asyncio's own watcher does): a shared pool could make a
        # quick plugin's exit wait behind long-running ones.
        threading.Thread(target=self._wait_in_thread, name=f"waitpid-{self.pid}", daemon=True).start()

    def _on_exit(self) -> None:
        assert self._pidfd is not None
        status = self._exit_status(self._pidfd)
        if status is None:
            return  # not yet (spurious wake-up)
        returncode, reaped = status
        watch = exit_watch(self._loop)
        watch.remove(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        _UNREAPED.reap()  # those that exited before: their teardown is long over
        if not reaped:
            _UNREAPED.add(self.pid)
            watch.arm_reap_timer()
        self._exit(returncode)

    def _exit_status(self, pidfd: int) -> tuple[int, bool] | None:
        """(the exit code, ``-signal`` if killed; whether the child was reaped to read it), read
        without reaping it where the kernel allows; None if it has not exited."""
        global _WAITID_PIDFD
        if _WAITID_PIDFD:
            try:
                info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOWAIT | os.WNOHANG)
            except ChildProcessError:
                return 255, True  # reaped elsewhere: its status is lost
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                _WAITID_PIDFD = False  # before Linux 5.4: no waitid on a pidfd
            else:
                if info is None:
                    return None
                return (info.si_status if info.si_code == os.CLD_EXITED else -info.si_status), False
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return 255, True
        return None if pid == 0 else (os.waitstatus_to_exitcode(status), True)

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


class _Unreaped:
    """The children whose exit was read and who are left zombies for now (the module's docstring
    says why), for the whole process: the next child's exit in any event loop reaps them, or the
    timer of the loop that saw them exit, so none waits on a loop that has closed since."""

    def __init__(self) -> None:
        self._pids: list[int] = []
        self._lock = threading.Lock()

    def add(self, pid: int) -> None:
        with self._lock:
            self._pids.append(pid)

    def reap(self) -> None:
        """Reap every child left unreaped."""
        with self._lock:
            if not self._pids:
                return
            pids, self._pids = self._pids, []
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


_UNREAPED = _Unreaped()


class ExitWatch:
    """The pidfds of one event loop's running children in one epoll set, which the loop watches as
    one reader: a child's exit calls its ``Child._on_exit`` on the loop. Also the loop's timer that
    reaps the children left unreaped when no other child's exit comes to."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._children: dict[int, Child] = {}
        """By pidfd: every child added and not removed yet."""
        self._reap_timer: asyncio.TimerHandle | None = None
        try:
            loop.add_reader(self._epoll.fileno(), self._on_ready)
        except BaseException:
            self._epoll.close()
            raise

    def fileno(self) -> int:
        """The epoll set's descriptor (open for the loop's life)."""
        return self._epoll.fileno()

    def add(self, pidfd: int, child: Child) -> None:
        self._epoll.register(pidfd, select.EPOLLIN)
        self._children[pidfd] = child

    def remove(self, pidfd: int) -> None:
        """Stop watching ``pidfd``, before it is closed: a copy of it in a process forked meanwhile
        would otherwise keep it in the set."""
        del self._children[pidfd]
        self._epoll.unregister(pidfd)

    def arm_reap_timer(self) -> None:
        """Reap what is left unreaped ``LATE_REAP_SECONDS`` from now, unless a timer will already."""
        if self._reap_timer is None:
            self._reap_timer = self._loop.call_later(LATE_REAP_SECONDS, self._reap_on_timer)

    def _reap_on_timer(self) -> None:
        self._reap_timer = None
        _UNREAPED.reap()

    def _on_ready(self) -> None:
        for pidfd, _events in self._epoll.poll(0):
            child = self._children.get(pidfd)
            if child is not None:  # else removed by an exit handled earlier in this same turn
                child._on_exit()


_exit_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ExitWatch] = weakref.WeakKeyDictionary()


def exit_watch_descriptors() -> set[int]:
    """The descriptors of the exit watches alive: one per event loop that has run a child, open until
    the loop is gone (a test that counts descriptors leaves them out)."""
    return {watch.fileno() for watch in list(_exit_watches.values())}


def reap_exited() -> None:
    """Reap now the children whose exit was read (a caller about to count processes)."""
    _UNREAPED.reap()


def exit_watch(loop: asyncio.AbstractEventLoop) -> ExitWatch:
    """The exit watch of ``loop`` (the loop's thread only), made at its first child; it goes with the loop."""
    watch = _exit_watches.get(loop)
    if watch is None:
        watch = _exit_watches[loop] = ExitWatch(loop)
    return watch


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _wait_blocking(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255
        return os.waitstatus_to_exitcode(status)
