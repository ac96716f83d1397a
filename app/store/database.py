"""The state database: one SQLite file, one writer thread, two reader threads.

Owns the connections (``sqlite3``'s, each with the store's pragmas: WAL, ``synchronous=FULL``,
foreign keys, busy timeout, the size the WAL is cut back to), the exclusive lock that keeps a second
daemon off the same file, and the only thread that writes. Coroutines never touch a connection: they
hand a unit of work (a function taking a ``sqlite3.Connection``, ``Connection`` here) to
``write``/``read`` and await its value. ``write`` returns only after the transaction holding that
work has been committed, so "recorded" means "on disk" (for a durable write, below).

Concurrent writes are group-committed: the writer drains what is queued, runs each unit inside
its own savepoint (one failing unit does not undo the others), and commits once. A batch of one
unit needs no savepoint: its failure rolls the transaction back. Batching never weakens a write's
durability: nothing is dropped under load, callers wait. After a full disk or an I/O error SQLite
may roll the whole transaction back by itself: then every unit of the batch fails, with that error
(or ``TransactionLostError`` if the unit caught it), and the next batch begins afresh. No unit
(nor a bug of this module's) ends a store thread: whatever it raises reaches its caller (a
``BaseException`` that is not an ``Exception`` as ``WorkAbortedError``), and the thread serves on.

A write is durable (the default) or not (``durable=False``). A durable write's commit is on disk
(``synchronous=FULL``: the WAL is synced before the commit returns). A write that is not durable is
committed without that sync (``synchronous=NORMAL``): it survives any crash of the process, its
frames being in the kernel's page cache, and the next durable commit syncs it too, but a power loss
before that may undo it (with every commit after it: a WAL loses commits only from its end). Only
what is harmless to undo that way is written so: a teardown's records (undone, the sandbox is
DELed again at start-up, as every sandbox of an earlier boot is), the mirror of the API (a
cache), history retention's deletions, and the mark of a network-status not written yet (undone
only with a reboot, whose sandboxes are all of an earlier boot). A batch holding any durable
write is committed durably.

``write_then_sync`` splits a durable write in two: its value comes back once the work is committed
(unsynced, as above: visible to every reader and kept through any crash of the process), and a
second future completes once the writer thread has synced the WAL (``fdatasync``, as
``synchronous=FULL`` does after a commit; its directory too, the first time a WAL file is seen).
So the caller can start what must not *act* before the write is on disk, and let it act only
then: the ADD starts its first delegate while its intents are being synced, and hands the plugin
its input once they are (``app.attach.engine``).

Each thread keeps its connection open for its whole life, in ``sqlite3``'s autocommit mode, and
frames transactions and savepoints itself (``BEGIN``, ``SAVEPOINT``, ``COMMIT``): a unit of work runs
plain SQL on the connection's cursor (``records_sql.cursor_of``), inside the thread's transaction
and, in the writer, inside a savepoint of its own; it never begins, commits or rolls back. No
module the daemon runs imports SQLAlchemy (12.9 MiB of its memory, and Python-level work on every
transaction; a test checks it): SQLAlchemy describes the tables (``app.store.models``) for alembic's
migrations, which run in a child process (``app.store.schema``). The reader threads start with the
first ``read``. Results reach the awaiting coroutine with one wake-up of its event loop per batch.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import glob
import logging
import os
import queue
import sqlite3
import stat
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from app import metrics
from app.osthreads import name_this_thread
from app.store import schema

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = sqlite3.Connection
"""What a unit of work is given: a connection in autocommit mode, inside the thread's transaction."""
Work = Callable[[Connection], T]
"""A unit of database work: runs in the writer (or a reader) thread on a connection in a transaction."""

__all__ = [
    "Connection",
    "Database",
    "DatabaseLockedError",
    "TransactionLostError",
    "Work",
    "WorkAbortedError",
]

MAX_BATCH = 64
"""Most units of work committed in one transaction."""
BUSY_TIMEOUT_MS = 10_000
WAL_SIZE_LIMIT = 16 * 1024 * 1024
"""Bytes the write-ahead log is cut back to when SQLite starts it over from its beginning. Without
a limit it keeps, for the daemon's life, the size of the largest transaction it ever held (a
relist of many pods, a migration): the auto-checkpoint reuses the file but never shrinks it. Well
above what a steady load needs (1,000 pages of 4 KiB, and the batch that crossed them), so that
the log is cut only after such a spike; SQLite looks at the size once per restart of the log, not
per commit."""
READERS = 2
"""Reader threads (each with its own connection): reads of committed state run beside the writer."""
SPARE_CONNECTIONS = 4
"""Connections kept beyond the threads' own, for ``read_sync``."""


def file_uri(path: str | os.PathLike[str]) -> str:
    """SQLite's URI of the file at ``path`` (made absolute, symlinks kept), without its query:
    every byte a URI gives a meaning to (``%``, ``?``, ``#``) escaped, so a ``stateDir`` holding one
    names that file and not another (``file:/a?b/state.db`` is ``/a`` with a query ``b/state.db``)."""
    return "file:" + urllib.parse.quote(os.path.abspath(path))


class DatabaseLockedError(RuntimeError):
    """Another process holds the state database open for writing."""


class WorkAbortedError(RuntimeError):
    """A unit of work raised a ``BaseException`` that is not an ``Exception`` (``SystemExit``,
    ``GeneratorExit``, a ``CancelledError``, ...); its caller gets this error, caused by it.

    Raised as is, it would end the store's thread (and every later caller would wait for ever) or,
    in the caller's coroutine, pass for a cancellation or stop the event loop. The unit's writes
    are undone like those of any failed unit, and the thread serves on."""


@dataclass(eq=False, slots=True)
class _Job:
    """A unit of work and who waits for it: a coroutine (``waiter`` on ``loop``) or a thread (``future``)."""

    work: Work[Any]
    future: Future[Any] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future[Any] | None = None
    durable: bool = True
    synced: asyncio.Future[None] | None = None
    """``write_then_sync``'s second future: done once the commit is on disk (the job commits unsynced)."""

    def claim(self) -> bool:
        """True when the job is still wanted (and, for a thread's future, marked running)."""
        if self.waiter is not None:
            return not self.waiter.cancelled()  # a read of the state: safe from this thread
        assert self.future is not None
        return self.future.set_running_or_notify_cancel()


_Outcome = tuple[_Job, Any, BaseException | None]


_Wake = tuple[asyncio.Future[Any], Any, BaseException | None]
"""A coroutine's future, and the value or error it is to get."""


class StorageError(OSError):
    """The state database's file could not take a write or a sync, or be read: a full disk
    (``errno`` ENOSPC), an I/O error or a damaged file (EIO: SQLite found a page it cannot make
    sense of). SQLite's own error is its cause; nothing of the failed write is recorded. A failed
    sync of the WAL (``write_then_sync``) is one too, its OS error the cause: that commit was made
    but may not be on disk, so what waited for it must not run (the ADD rolls its intents back)."""


_STORAGE_ERRNOS = {
    sqlite3.SQLITE_FULL: errno.ENOSPC,
    sqlite3.SQLITE_IOERR: errno.EIO,
    sqlite3.SQLITE_CORRUPT: errno.EIO,
    sqlite3.SQLITE_NOTADB: errno.EIO,
}
"""SQLite's primary result codes that mean the storage failed, and the errno each is named by."""


def _storage_error(error: BaseException) -> StorageError | None:
    """``error`` (SQLite's) as a ``StorageError`` when the storage failed under it; None for any
    other error."""
    if not isinstance(error, sqlite3.Error):
        return None
    code = _STORAGE_ERRNOS.get(getattr(error, "sqlite_errorcode", 0) & 0xFF)
    if code is None:
        return None
    storage = StorageError(code, f"state database: {error}")
    storage.__cause__ = error
    return storage


def _sync_failure(error: OSError, wal: Path) -> StorageError:
    """A failed sync of the WAL (``write_then_sync``) as the storage failure it is: the commit may
    not be on disk, so nothing waiting for it may run (its caller answers an I/O failure)."""
    failure = StorageError(
        error.errno or errno.EIO,
        f"state database: syncing its write-ahead log {wal} failed: {error.strerror or error}",
    )
    failure.__cause__ = error
    return failure


def _for_caller(error: BaseException | None) -> BaseException | None:
    """``error`` as its caller is to get it: an ``Exception`` as is (SQLite's for a failed storage as
    a ``StorageError``), else a ``WorkAbortedError``."""
    if error is None:
        return error
    if isinstance(error, Exception):
        return _storage_error(error) or error
    aborted = WorkAbortedError(f"a unit of work of the state database raised {type(error).__name__}: {error}")
    aborted.__cause__ = error
    return aborted


def _settle(outcomes: Iterable[_Outcome]) -> None:
    """Hand each job's value or error to its waiter: futures now, coroutines in one wake-up per loop.

    A job already settled keeps what it got first (``_fail_unanswered`` settles a batch again)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Wake]] = {}
    for job, value, error in outcomes:
        error = _for_caller(error)
        if job.future is not None:
            if job.future.done():
                continue
            if error is None:
                job.future.set_result(value)
            else:
                job.future.set_exception(error)
        elif job.loop is not None and job.waiter is not None:
            by_loop.setdefault(job.loop, []).append((job.waiter, value, error))
    _wake(by_loop)


def _settle_synced(jobs: list[_Job], error: BaseException | None) -> None:
    """Tell ``write_then_sync``'s callers that their commits are on disk (or why not)."""
    error = _for_caller(error)
    by_loop: dict[asyncio.AbstractEventLoop, list[_Wake]] = {}
    for job in jobs:
        if job.synced is not None and job.loop is not None:
            by_loop.setdefault(job.loop, []).append((job.synced, None, error))
    _wake(by_loop)


def _fail_unanswered(jobs: list[_Job], error: BaseException) -> None:
    """After the store's own code failed (a bug): answer every job of ``jobs`` not answered yet with
    ``error``, so that none waits for ever. Answers already on their way win (``_resolve`` skips a
    done future, and each event loop runs its wake-ups in order)."""
    _settle((job, None, error) for job in jobs)
    _settle_synced([job for job in jobs if job.synced is not None], error)


def _wake(by_loop: dict[asyncio.AbstractEventLoop, list[_Wake]]) -> None:
    """One wake-up per event loop, resolving its futures there."""
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, settled)
        except RuntimeError:  # the loop was closed while the work ran: nobody waits any more
            continue


def _resolve(settled: list[_Wake]) -> None:
    """In the futures' event loop: resolve those not cancelled meanwhile."""
    for future, value, error in settled:
        if future.done():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


class _Generation:
    """How many times the database's file was put back at its path (``Database.keep_file_in_place``):
    a connection made before the last time is on the old file and is made anew before its next
    transaction. One per path in this process (``_generation_of``), shared by every ``Database``
    of it: the daemon's query API reads through a read-only one of its own."""

    __slots__ = ("__weakref__", "connecting", "value")

    def __init__(self) -> None:
        self.value = 0
        self.connecting = threading.Lock()
        """Held to make a connection, and while the file is put back at its path (no connection
        may open the path before the file is there, nor create a WAL beside it)."""


_GENERATIONS: weakref.WeakValueDictionary[str, _Generation] = weakref.WeakValueDictionary()
_GENERATIONS_LOCK = threading.Lock()


def _generation_of(path: Path) -> _Generation:
    """The generation of the database file at ``path``, shared by every ``Database`` of it open in
    this process (kept while one is)."""
    key = os.path.abspath(path)
    with _GENERATIONS_LOCK:
        generation = _GENERATIONS.get(key)
        if generation is None:
            generation = _Generation()
            _GENERATIONS[key] = generation
        return generation


class _Seat:
    """One connection held open for as long as its user lives.

    The user frames the transactions itself (``begin``); units of work run on ``connection``."""

    def __init__(self, connect: Callable[[], Connection], generation: _Generation) -> None:
        self._connect_anew = connect
        self._generation = generation
        self._connect()

    def _connect(self) -> None:
        self._born = self._generation.value
        self.connection: Connection = self._connect_anew()
        self.durable = True  # ``connect`` sets ``synchronous=FULL`` on every connection

    def make_durable(self, durable: bool) -> None:
        """Commit the next transactions durably (``synchronous=FULL``) or not (``NORMAL``); set
        between transactions, where SQLite takes it."""
        if durable != self.durable:
            self.connection.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
            self.durable = durable

    def reconnect(self) -> None:
        """A fresh connection after one that may be broken (a failed commit or rollback)."""
        try:
            self.connection.close()
        except Exception:  # it is being thrown away: nothing more to learn from it
            log.debug("discarding a state database connection failed", exc_info=True)
        self._connect()

    def begin(self, *, durable: bool = True) -> None:
        """Begin a transaction (to commit durably or not, see ``make_durable``), on a fresh
        connection if the last one was left unusable (closed, or in a transaction), or is on a file
        that no longer is the database's (put back at its path since): checked before the
        ``synchronous`` level is set, which such a connection refuses."""
        try:
            left_in_one = self.connection.in_transaction
        except sqlite3.ProgrammingError:  # closed: a reconnect that failed half-way
            left_in_one = True
        if left_in_one:
            log.warning("a state database connection was left in a transaction; reconnecting")
            self.reconnect()
        elif self._born != self._generation.value:  # the file was put back at its path
            self.reconnect()
        self.make_durable(durable)
        self.connection.execute("BEGIN")

    def rollback(self) -> None:
        """End the transaction, undoing it, if SQLite has not ended it already (a failed COMMIT
        leaves it open; a full disk or an I/O error may have rolled it back by itself)."""
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    def read(self, work: Work[T]) -> T:
        """Run ``work`` in a transaction of its own (one snapshot of committed state)."""
        self.begin()
        try:
            value = work(self.connection)
        except BaseException:
            self._end(commit=False)
            raise
        self._end(commit=True)
        return value

    def _end(self, *, commit: bool) -> None:
        try:
            if commit and self.connection.in_transaction:
                self.connection.execute("COMMIT")
            else:
                self.rollback()
        except Exception:
            log.exception("ending a read of the state database failed; reconnecting")
            self.reconnect()

    def close(self) -> None:
        self.connection.close()


class _WalSync:
    """Syncs the database's write-ahead log the way ``synchronous=FULL`` does after each commit.

    SQLite places no lock on the WAL file (its locks are on the database and ``-shm`` files), so a
    descriptor of our own is safe to hold and to close. A WAL file opened for the first time also
    has its directory synced, as SQLite does for a journal it has just created. ``open`` and
    ``sync`` are apart so that only the syscall is left once the waiters are woken: the event loop
    then has the interpreter to itself while the disk works."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + "-wal")
        self._fd: int | None = None
        self._new = False

    def open(self) -> None:
        """Hold a descriptor of the WAL as it is now: the one held, unless its file was removed."""
        if self._fd is not None and os.fstat(self._fd).st_nlink > 0:
            return
        self.close()
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._new = True

    def sync(self) -> None:
        """``fdatasync`` the WAL ``open`` holds (its directory too, the first time)."""
        assert self._fd is not None, "open() first"
        os.fdatasync(self._fd)
        if self._new:
            directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            self._new = False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(eq=False, slots=True)
class _Alone:
    """Work the writer thread runs by itself, between two batches, outside any transaction (putting
    the file back at its path): no write is committed meanwhile."""

    work: Callable[[], Any]
    future: Future[Any]

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            value = self.work()
        except BaseException as exc:  # handed to the caller through its future, not swallowed
            self.future.set_exception(exc)
        else:
            self.future.set_result(value)


class _Worker(threading.Thread):
    """A store thread serving a queue of jobs from its own seat (a connection)."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        generation: _Generation,
        jobs: queue.SimpleQueue[Any],
        *,
        name: str,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.jobs = jobs
        self._seat = _Seat(connect, generation)

    def submit(self, job: _Job | _Alone | None) -> None:
        """Queue ``job``; None stops the thread once what is queued before it has run."""
        self.jobs.put(job)

    def close_connection(self) -> None:
        """After the thread has ended: give its connection back."""
        self._seat.close()


class _Writer(_Worker):
    """The single writing thread: runs queued work in savepoints (a lone unit without one), one
    commit per batch."""

    def __init__(self, connect: Callable[[], Connection], generation: _Generation, db_path: Path) -> None:
        super().__init__(connect, generation, queue.SimpleQueue(), name="store-writer")
        self.batches = 0
        self.units = 0
        self._wal = _WalSync(db_path)
        self._carried: _Alone | None = None
        """A job to run alone that ended the last batch, run next."""

    @property
    def seat(self) -> _Seat:
        return self._seat

    def forget_wal(self) -> None:
        """Let go of the WAL's descriptor (the file was put back at its path: a new WAL)."""
        self._wal.close()

    def close_connection(self) -> None:
        super().close_connection()
        self._wal.close()

    def run(self) -> None:
        name_this_thread(self.name)
        stop = False
        while not stop:
            batch, stop = self._next_batch()
            if isinstance(batch, _Alone):
                batch.run()
            elif batch:
                self._serve(batch)
            del batch  # its waiters hold the values handed over: not pinned until the next batch

    def _next_batch(self) -> tuple[list[_Job] | _Alone, bool]:
        """The jobs queued now, waiting for one (at most ``MAX_BATCH``), and whether a stop came; or
        a job to run alone, outside any transaction."""
        first, self._carried = self._carried or self.jobs.get(), None
        if first is None:
            return [], True
        if isinstance(first, _Alone):
            return first, False
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, True
            if isinstance(job, _Alone):
                self._carried = job
                break
            batch.append(job)
        return batch, False

    def _serve(self, batch: list[_Job]) -> None:
        """Run ``batch``; should the writer's own code fail, answer its jobs all the same and go on
        (a dead writer would leave every later write, every DEL's among them, waiting for ever)."""
        try:
            self._run_batch([job for job in batch if job.claim()])
        except BaseException as exc:
            log.critical(
                "the state database's writer failed on a batch of %d; it goes on", len(batch), exc_info=True
            )
            _fail_unanswered(batch, exc)

    def _run_batch(self, batch: list[_Job]) -> None:
        """Run and commit ``batch``; its jobs are claimed, so no caller can cancel them now
        (a write cancelled while still queued is skipped instead, before it starts)."""
        if not batch:
            return
        started = time.monotonic()
        outcomes: list[_Outcome] = []
        seat = self._seat
        durable = any(job.durable for job in batch)
        to_sync = [job for job in batch if job.synced is not None]
        try:
            seat.begin(durable=durable)
            try:
                if len(batch) == 1:
                    outcome = self._run_alone(batch[0])
                    outcomes.append(outcome)
                    to_commit = outcome[2] is None  # a failed unit alone has rolled the transaction back
                else:
                    outcomes.extend(self._run_in_savepoint(job) for job in batch)
                    to_commit = True
                if to_commit:
                    _check_still_in(seat.connection)
                    seat.connection.execute("COMMIT")
            except BaseException:
                try:
                    seat.rollback()  # a failed COMMIT leaves SQLite's transaction open: no PRAGMA may run
                except Exception:
                    log.exception("rolling back a failed batch failed; reconnecting")
                    seat.reconnect()
                raise
        except BaseException as exc:  # the commit itself failed: nothing in the batch is recorded
            log.exception("state database commit failed for a batch of %d", len(batch))
            _settle((job, None, exc) for job in batch)
            _settle_synced(to_sync, exc)
            return
        self.batches += 1
        self.units += len(batch)
        _observe_batch(time.monotonic() - started, len(batch))  # counted before its callers hear of it
        if not to_sync or durable:  # nothing to sync, or SQLite synced the commit itself
            _settle(outcomes)
            _settle_synced(to_sync, None)
        else:
            self._settle_then_sync(outcomes, to_sync)

    def _settle_then_sync(self, outcomes: list[_Outcome], to_sync: list[_Job]) -> None:
        """Wake the waiters of an unsynced commit, then sync the WAL for ``write_then_sync``'s jobs
        and tell them. The WAL's descriptor is opened first, so that once the loop runs only the
        syscall is left here."""
        error: OSError | None = None
        try:
            self._wal.open()
        except OSError as exc:
            error = exc
        _settle(outcomes)
        if error is None:
            try:
                self._wal.sync()
            except OSError as exc:
                error = exc
        if error is not None:
            if isinstance(error, FileNotFoundError):
                log.error(
                    "syncing the state database's WAL %s failed: it was removed under the running daemon"
                    " (ADDs fail until the file check puts the checkpoint back at its path, within %gs)",
                    self._wal.path,
                    FILE_CHECK_SECONDS,
                )
            else:
                log.error("syncing the state database's WAL %s failed: %s", self._wal.path, error)
            self._wal.close()
            error = _sync_failure(error, self._wal.path)
        _settle_synced(to_sync, error)

    def _run_alone(self, job: _Job) -> _Outcome:
        """The batch's only unit, without a savepoint (two statements fewer): its error rolls back
        the transaction, which holds its writes only."""
        try:
            value = job.work(self._seat.connection)
        except BaseException as exc:  # handed to the caller through its waiter, not swallowed
            self._seat.rollback()
            return job, None, exc
        return job, value, None

    def _run_in_savepoint(self, job: _Job) -> _Outcome:
        """One unit in a savepoint of the driver's: its error undoes its own writes only."""
        driver = self._seat.connection
        driver.execute("SAVEPOINT unit")
        try:
            value = job.work(driver)
        except BaseException as exc:  # handed to the caller through its waiter, not swallowed
            if not driver.in_transaction:  # SQLite rolled the whole batch back (disk full, I/O error):
                raise  # the batch fails with this error (there is no savepoint left to roll back to)
            driver.execute("ROLLBACK TO unit")
            driver.execute("RELEASE unit")
            return job, None, exc
        _check_still_in(driver)
        driver.execute("RELEASE unit")
        return job, value, None


def _observe_batch(elapsed: float, units: int) -> None:
    """Count a committed batch in the metrics; a failure to count is logged, never let to keep the
    batch from being reported committed."""
    try:
        metrics.STORE_COMMIT_SECONDS.observe(elapsed)
        metrics.STORE_BATCH_SIZE.observe(units)
    except Exception:
        log.exception("counting a committed batch of the state database in the metrics failed")


class TransactionLostError(RuntimeError):
    """SQLite ended a batch's transaction during a unit that then returned normally (it caught the
    error, a full disk or an I/O error, after which SQLite rolls a transaction back by itself)."""


def _check_still_in(driver: sqlite3.Connection) -> None:
    """Refuse to go on with a batch whose transaction SQLite has rolled back by itself: its units'
    writes are gone, so none of them may be reported committed."""
    if not driver.in_transaction:
        raise TransactionLostError(
            "SQLite rolled back the state database's transaction after an error a unit of work caught"
            " (a full disk or an I/O error): its batch is not recorded"
        )


class _Reader(_Worker):
    """A reading thread: each unit in a transaction of its own (one snapshot of committed state)."""

    def run(self) -> None:
        name_this_thread(self.name)
        while (job := self.jobs.get()) is not None:
            self._serve(job)
            job = None  # its waiter holds the value handed over: not pinned until the next read

    def _serve(self, job: _Job) -> None:
        """Run ``job`` and answer it, whatever it raises (a dead reader would leave reads waiting)."""
        try:
            if not job.claim():
                return
            value = self._seat.read(job.work)
        except BaseException as exc:  # handed to the caller through its waiter, not swallowed
            _settle([(job, None, exc)])
        else:
            _settle([(job, value, None)])


def connect(path: Path, *, read_only: bool, existing: bool = False) -> Connection:
    """A connection to the database file at ``path`` with the store's pragmas, in ``sqlite3``'s
    autocommit mode (whoever uses it frames its transactions: ``BEGIN``, so savepoints work), usable
    from any one thread at a time. ``read_only``: opened with ``mode=ro``, changing nothing (no WAL
    switch, no pragma that writes). ``existing``: opened with ``mode=rw``, so a file gone from its
    path is an error, not a new empty database there (``Database``'s connections, made once the
    file is open: ``Database.keep_file_in_place`` puts a removed one back)."""
    if read_only:
        target, uri = f"{file_uri(path)}?mode=ro", True
    elif existing:
        target, uri = f"{file_uri(path)}?mode=rw", True
    else:
        # Not parsed as a URI (a '?' or '#' stays the path's), and absolute: SQLite built with
        # SQLITE_USE_URI (Debian's is) reads a name beginning with "file:" as a URI all the same.
        target, uri = os.path.abspath(path), False
    connection = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False)
    try:
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA foreign_keys=ON")
        if not read_only:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    except BaseException:
        connection.close()
        raise
    return connection


class Database:
    """An open state database. Create with ``Database.open``; close with ``close``."""

    def __init__(self, *, path: Path, read_only: bool, lock_fd: int | None) -> None:
        self.path = path
        self.read_only = read_only
        self._connect_to_path = partial(connect, path, read_only=read_only, existing=True)
        self._generation = _generation_of(path)
        self._connecting = self._generation.connecting
        self._identities: dict[str, tuple[int, int] | None] = {}
        """``(st_dev, st_ino)`` of the database file, its WAL and shared-memory file (by suffix) as
        the writer's connection opened them."""
        self._spares: list[_Seat] = []
        """Connections ``read_sync`` gave back, for the next one (at most ``SPARE_CONNECTIONS``)."""
        self._lock_fd = lock_fd
        self._writer: _Writer | None = None
        self._reads: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._readers: list[_Reader] = []
        self._lock = threading.Lock()
        """Held to close, to start the readers and to queue a job: a job queued by a caller that
        found the database open is ahead of the stops ``close`` queues, so it runs."""
        self._closed = False
        if not read_only:
            self._writer = _Writer(self._connect, self._generation, path)
            self._identities = _identities(path)
            self._writer.start()

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, read_only: bool = False, migrate_in_child: bool = False
    ) -> Database:
        """Open (and, for writing, lock and migrate) the database file at ``path``.

        ``migrate_in_child``: a database that needs migrating is migrated by a child process, so
        alembic never stays in this one's memory (the daemon asks for it; a short-lived caller,
        such as a test, saves the child's start-up)."""
        db_path = Path(path)
        lock_fd = None
        if read_only:
            if not db_path.exists():
                raise FileNotFoundError(f"state database {db_path} does not exist")
        else:
            db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock_fd = _lock_exclusively(db_path)
            try:
                _report_cut_short(db_path)
                _keep_private(db_path)
                schema.refuse_if_foreign(db_path)  # before a connection of ours sets WAL on it
            except BaseException:
                os.close(lock_fd)
                raise
        try:
            with closing(connect(db_path, read_only=read_only)) as connection:
                if read_only:
                    _check_readable_schema(connection)
                else:
                    schema.migrate(connection, db_path, in_child=migrate_in_child)
            return cls(path=db_path, read_only=read_only, lock_fd=lock_fd)
        except BaseException as exc:
            if lock_fd is not None:
                os.close(lock_fd)
            # Not a database (corrupt, foreign), or, for the daemon, one SQLite cannot open or lock: a
            # clear refusal, not a traceback (a read-only caller tells "locked" apart itself).
            if isinstance(exc, sqlite3.Error) and not (
                read_only and isinstance(exc, sqlite3.OperationalError)
            ):
                raise schema.SchemaError(f"state database {db_path} cannot be used: {exc}") from exc
            raise

    async def write(self, work: Work[T], *, durable: bool = True) -> T:
        """Run ``work`` in the writer thread; return its value once it is committed (on disk, unless
        ``durable`` is False: then a power loss may undo it, see the module's docstring)."""
        return await self.submit_write(work, durable=durable)

    def submit_write(self, work: Work[T], *, durable: bool = True) -> asyncio.Future[T]:
        """Hand ``work`` to the writer thread now; the future gets its value once it is committed.

        For a coroutine with something else to do meanwhile: it must await the future before it
        relies on the work being on disk (cancelling the future gives the work up if it has not
        started yet)."""
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._submit(_Job(work, loop=waiter.get_loop(), waiter=waiter, durable=durable))
        return waiter

    async def write_then_sync(self, work: Work[T]) -> tuple[T, asyncio.Future[None]]:
        """Run ``work`` in the writer thread; return its value once it is committed, unsynced (see
        ``durable=False``), with a future that completes once the commit is on disk, as a durable
        write's is when ``write`` returns (or holds the ``OSError`` that kept it off the disk)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        synced: asyncio.Future[None] = loop.create_future()
        self._submit(_Job(work, loop=loop, waiter=waiter, durable=False, synced=synced))
        try:
            value = await waiter
        except BaseException:
            synced.cancel()  # nobody will wait for it: a sync error must not be logged as unretrieved
            raise
        return value, synced

    def write_sync(self, work: Work[T], *, durable: bool = True) -> T:
        """``write`` for threads that are not an event loop (start-up, tools, tests)."""
        future: Future[T] = Future()
        self._submit(_Job(work, future=future, durable=durable))
        return future.result()

    async def read(self, work: Work[T]) -> T:
        """Run ``work`` on a reader thread against committed state."""
        self._check_open()
        if not self._readers:
            self._start_readers()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._submit(_Job(work, loop=loop, waiter=waiter), read=True)
        return await waiter

    def read_sync(self, work: Work[T]) -> T:
        """``read`` for any thread, on a connection of its own (not a reader thread's), kept for the
        next call once it is done."""
        self._check_open()
        with self._lock:
            seat = self._spares.pop() if self._spares else None
        if seat is None:
            seat = _Seat(self._connect, self._generation)
        try:
            return seat.read(work)
        finally:
            with self._lock:
                kept = not self._closed and len(self._spares) < SPARE_CONNECTIONS
                if kept:
                    self._spares.append(seat)
            if not kept:
                seat.close()

    def _start_readers(self) -> None:
        """The reader threads, on the first ``read`` (a caller that only ever uses ``read_sync``, such
        as ``multusctl`` reading the file, opens no connection for them)."""
        with self._lock:
            if self._readers or self._closed:
                return
            readers = []
            try:
                for index in range(READERS):
                    name = f"store-reader_{index}"
                    readers.append(_Reader(self._connect, self._generation, self._reads, name=name))
            except BaseException:
                for reader in readers:
                    reader.close_connection()
                raise
            for reader in readers:
                reader.start()
            self._readers = readers

    def _connect(self) -> Connection:
        with self._connecting:
            return self._connect_to_path()

    def file_in_place(self) -> bool:
        """Whether the database's path (and its WAL's, shared-memory file's and lock's) still names
        the file this daemon has open (always, for a read-only one): a few ``stat`` calls, cheap
        enough for the event loop, so that a check which finds nothing changed, as nearly all do,
        costs no hop to a thread; ``keep_file_in_place`` puts the file back when it is not."""
        return self._writer is None or self._closed or not self._what_changed()

    def keep_file_in_place(self) -> bool:
        """Check that the database's path (and its WAL's and shared-memory file's, and its lock's)
        still names the file this daemon has open; put the checkpoint back there if not. True when
        the file is (now) in place; False, the error logged naming the path, when it could not be
        put back (the caller stops taking ADDs: what they record would be lost at the next start).

        A file removed or replaced under a running daemon (``rm``, ``mv``, its directory removed or
        mounted over) gives SQLite no error: the daemon would go on writing the old, unlinked file,
        and its next start would find the checkpoint gone (every sandbox's DEL then finds nothing
        to undo). So the checkpoint, as the open connection sees it, is written to a file beside
        the path (``VACUUM INTO``), synced and renamed there, by the writer thread between two
        batches (no commit is lost), and every connection is made anew on it. A file that replaced
        it is kept beside it (``<name>.displaced-<time>``). Blocking (a few ``stat`` calls when
        nothing changed): run it in a thread, every ``FILE_CHECK_SECONDS``, never per commit."""
        writer = self._writer
        if writer is None or self._closed:
            return True
        changed = self._what_changed()
        if not changed:
            return True
        log.error(
            "state database %s: %s under the running daemon; putting the checkpoint back at its path"
            " from the open connection",
            self.path,
            ", ".join(changed),
        )
        future: Future[None] = Future()
        try:
            with self._lock:
                self._check_open()
                writer.submit(_Alone(partial(self._put_back, writer), future))
            future.result()
        except (OSError, sqlite3.Error, DatabaseLockedError) as exc:
            metrics.STORE_FILE_RESTORES.labels("failed").inc()
            log.error(
                "state database %s could not be put back at its path (%s): not ready for ADDs until it"
                " is (what they record would be lost at the next start); checked again every %gs",
                self.path,
                exc,
                FILE_CHECK_SECONDS,
            )
            return False
        metrics.STORE_FILE_RESTORES.labels("restored").inc()
        log.error(
            "state database %s put back at its path from the open connection: the checkpoint is whole",
            self.path,
        )
        return True

    def _what_changed(self) -> list[str]:
        """What no longer names the file this daemon has open, in words (none: all in place)."""
        changed = []
        now = _identities(self.path)
        for suffix, identity in self._identities.items():
            if identity is None:  # not created yet when the connection was made: from now on
                self._identities[suffix] = now[suffix]
            elif now[suffix] != identity:
                name = self.path.name + suffix
                changed.append(f"{name} {'removed' if now[suffix] is None else 'replaced'}")
        if self._lock_fd is not None and _identity(_lock_path(self.path)) != _fd_identity(self._lock_fd):
            changed.append(f"{_lock_path(self.path).name} removed or replaced")
        return changed

    def _put_back(self, writer: _Writer) -> None:
        """In the writer thread, between batches: the checkpoint written back at the path from the
        writer's connection, and every connection made anew on it (see ``keep_file_in_place``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # its directory removed
        self._take_lock_again()
        # a name of its own: one a put-back cut short left may be the only copy (``_cut_short``)
        copy = self.path.with_name(f"{self.path.name}{RESTORE_SUFFIX}-{time.time_ns()}")
        os.close(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        try:
            writer.seat.rollback()
            writer.seat.connection.execute("VACUUM INTO ?", (str(copy),))
            _fsync_path(copy)
            with self._connecting:
                self._displace()
                for suffix in PRIVATE_FILE_SUFFIXES[1:]:  # the old file's: never to be read with the new
                    self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
                os.rename(copy, self.path)
                _fsync_path(self.path.parent)
                self._generation.value += 1
        except BaseException:
            copy.unlink(missing_ok=True)
            raise
        writer.forget_wal()
        writer.seat.reconnect()
        writer.seat.connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the WAL
        self._identities = _identities(self.path)

    def _displace(self) -> None:
        """Keep a file that replaced the database at its path beside it, under another name. The
        daemon's own file, still at its path when only its WAL, shared-memory or lock file went, is
        left for the copy to replace: kept, it would be a stale copy of the checkpoint."""
        if _identity(self.path) in (None, self._identities[""]):
            return
        try:
            os.rename(self.path, self.path.with_name(f"{self.path.name}.displaced-{time.time_ns()}"))
        except FileNotFoundError:
            return
        log.error("state database %s: the file that replaced it is kept beside it as displaced", self.path)

    def _take_lock_again(self) -> None:
        """Lock the path's lock file again when it is not the one this daemon holds (removed with the
        directory, or replaced): refused (``DatabaseLockedError``) while another process holds it."""
        if self._lock_fd is None or _identity(_lock_path(self.path)) == _fd_identity(self._lock_fd):
            return
        fd = _lock_exclusively(self.path)
        os.close(self._lock_fd)
        self._lock_fd = fd

    def _writable(self) -> _Writer:
        self._check_open()
        if self._writer is None:
            raise PermissionError(f"state database {self.path} is open read-only")
        return self._writer

    def _submit(self, job: _Job, *, read: bool = False) -> None:
        """Queue ``job`` for the writer (or, ``read``, the readers) if the database is still open:
        checked and queued under the lock ``close`` takes, so no job lands behind its stops."""
        with self._lock:
            if read:
                self._check_open()
                self._reads.put(job)
            else:
                self._writable().submit(job)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"state database {self.path} is closed")

    def size_bytes(self) -> int:
        """Bytes on disk: the database file and its write-ahead log."""
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue
        return total

    @property
    def commit_stats(self) -> tuple[int, int]:
        """(batches committed, units of work committed) since open."""
        return (0, 0) if self._writer is None else (self._writer.batches, self._writer.units)

    def close(self) -> None:
        """Finish what is queued, stop the threads, close every connection and release the lock."""
        self._stop_threads()
        with self._lock:
            spares, self._spares = self._spares, []
        for seat in spares:
            seat.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _stop_threads(self) -> None:
        """Stop the threads once what is queued has run (nothing can be queued after that)."""
        with self._lock:
            self._closed = True
            writer, readers = self._writer, self._readers
            self._writer, self._readers = None, []
        if writer is not None:
            writer.submit(None)
        for _ in readers:
            self._reads.put(None)
        threads = [*([writer] if writer is not None else []), *readers]
        for thread in threads:
            thread.join()
            thread.close_connection()


def _lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def _lock_exclusively(db_path: Path) -> int:
    lock_path = _lock_path(db_path)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise DatabaseLockedError(
            f"state database {db_path} is in use by another process (lock {lock_path} is held)"
        ) from exc
    return fd


PRIVATE_FILE_SUFFIXES = ("", "-wal", "-shm")
"""The database file and the companions SQLite creates beside it (with the database file's mode)."""
RESTORE_SUFFIX = ".restoring"
"""The file the checkpoint is written to before it is renamed to the database's path (with
``-<time>`` after it: each put-back writes a file of its own)."""
FILE_CHECK_SECONDS = 2.0
"""Between two checks that the database's path still names the file the daemon has open."""


def _identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the file at ``path``; None when there is none."""
    try:
        found = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return found.st_dev, found.st_ino


def _fd_identity(fd: int) -> tuple[int, int]:
    found = os.fstat(fd)
    return found.st_dev, found.st_ino


def _identities(db_path: Path) -> dict[str, tuple[int, int] | None]:
    """The identity of the database file and its companions, by suffix."""
    return {suffix: _identity(db_path.with_name(db_path.name + suffix)) for suffix in PRIVATE_FILE_SUFFIXES}


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _report_cut_short(db_path: Path) -> None:
    """Say which copies a put-back cut short left beside the database (the daemon killed between
    ``VACUUM INTO`` and the rename; ``Database.keep_file_in_place``): the file at the path was gone
    then, so such a copy may hold the only checkpoint of that time. Never removed here: an operator
    decides (a complete one can be put at the path while no daemon runs)."""
    for left in sorted(db_path.parent.glob(glob.escape(db_path.name + RESTORE_SUFFIX) + "-*")):
        log.error(
            "state database %s: %s was left by a daemon stopped while it put the checkpoint back "
            "at its path; it may hold the checkpoint of that time (kept for the operator)",
            db_path,
            left.name,
        )


def _keep_private(db_path: Path) -> None:
    """Make the database file readable by its owner alone before SQLite opens it: created ``0600``
    when it does not exist, and group and other bits taken off it and off its ``-wal`` and ``-shm``
    when they have any. It records every delegate's configuration (which may hold credentials) and
    SQLite creates it, and then the WAL and shared-memory files with its mode, under the process's
    umask (``0644``) in a state directory that may already exist readable by all (a hostPath
    kubelet made ``0755``): upstream's cache of the same configurations is ``0600``."""
    os.close(os.open(db_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for suffix in PRIVATE_FILE_SUFFIXES:
        path = db_path.with_name(db_path.name + suffix)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(path, mode & ~0o077)


def _check_readable_schema(connection: Connection) -> None:
    # A revision this release knows, or a newer one that records this release may read it.
    if schema.check_revision(connection) is None:
        raise schema.SchemaError(
            f"state database has no schema yet (expected revision {schema.head_revision()!r})"
        )
