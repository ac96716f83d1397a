"""The state database: one SQLite file, one writer thread, a small read pool.

Owns the SQLAlchemy engine, its per-connection pragmas (WAL, ``synchronous=FULL``, foreign keys,
busy timeout), the exclusive lock that keeps a second daemon off the same file, and the only thread
that writes. Coroutines never touch a Session: they hand a unit of work (a function taking a
Session) to ``write``/``read`` and await its value. ``write`` returns only after the transaction
holding that work has been committed, so "recorded" always means "on disk".

Concurrent writes are group-committed: the writer drains what is queued, runs each unit inside
its own savepoint (one failing unit does not undo the others), and commits once. Durability is
never traded for speed: nothing is dropped under load, callers wait.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session

from app import metrics
from app.store import schema

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[Session], T]
"""A unit of database work: runs in the writer (or a reader) thread with an open Session."""

__all__ = ["Database", "DatabaseLockedError", "Session", "Work"]

MAX_BATCH = 64
"""Most units of work committed in one transaction."""
BUSY_TIMEOUT_MS = 10_000


class DatabaseLockedError(RuntimeError):
    """Another process holds the state database open for writing."""


@dataclass(eq=False)
class _Job:
    work: Work[Any]
    future: Future[Any] = field(default_factory=Future)


class _Writer(threading.Thread):
    """The single writing thread: runs queued work in savepoints, one commit per batch."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(name="store-writer", daemon=True)
        self._engine = engine
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.batches = 0
        self.jobs = 0

    def submit(self, work: Work[T]) -> Future[T]:
        job = _Job(work)
        self._queue.put(job)
        return job.future

    def stop(self) -> None:
        self._queue.put(None)
        self.join()

    def run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop_after = False
            while len(batch) < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop_after = True
                    break
                batch.append(job)
            self._run_batch([job for job in batch if job.future.set_running_or_notify_cancel()])
            if stop_after:
                return

    def _run_batch(self, batch: list[_Job]) -> None:
        """Run and commit ``batch``; its futures are running, so no caller can cancel them now
        (a write cancelled while still queued is skipped instead, before it starts)."""
        if not batch:
            return
        started = time.monotonic()
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                if len(batch) == 1:  # alone in its transaction: a failure rolls back only itself
                    outcomes.append(_run_alone(session, batch[0]))
                else:
                    outcomes.extend(_run_in_savepoint(session, job) for job in batch)
        except BaseException as exc:  # the commit itself failed: nothing in the batch is recorded
            log.exception("state database commit failed for a batch of %d", len(batch))
            for job in batch:
                job.future.set_exception(exc)
            return
        self.batches += 1
        self.jobs += len(batch)
        metrics.STORE_COMMIT_SECONDS.observe(time.monotonic() - started)
        metrics.STORE_BATCH_SIZE.observe(len(batch))
        for job, value, error in outcomes:
            if error is None:
                job.future.set_result(value)
            else:
                job.future.set_exception(error)


def _run_alone(session: Session, job: _Job) -> tuple[_Job, Any, BaseException | None]:
    try:
        value = job.work(session)
        session.flush()
    except Exception as exc:  # handed to the caller through its future, not swallowed
        session.rollback()
        return job, None, exc
    return job, value, None


def _run_in_savepoint(session: Session, job: _Job) -> tuple[_Job, Any, BaseException | None]:
    try:
        with session.begin_nested():
            value = job.work(session)
            session.flush()
    except Exception as exc:  # handed to the caller through its future, not swallowed
        return job, None, exc
    return job, value, None


def configure_connection(engine: Engine, *, read_only: bool) -> None:
    """Pragmas for every connection, and explicit BEGIN so savepoints work on pysqlite."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            if not read_only:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.connection.driver_connection.execute("BEGIN")  # straight to the driver: every commit


class Database:
    """An open state database. Create with ``Database.open``; close with ``close``."""

    def __init__(self, *, path: Path, engine: Engine, read_only: bool, lock_fd: int | None) -> None:
        self.path = path
        self.engine = engine
        self.read_only = read_only
        self._lock_fd = lock_fd
        self._writer: _Writer | None = None
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-reader")
        if not read_only:
            self._writer = _Writer(engine)
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
            url = f"sqlite:///file:{db_path}?mode=ro&uri=true"
        else:
            db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock_fd = _lock_exclusively(db_path)
            url = f"sqlite:///{db_path}"
        engine = create_engine(url, pool_size=4, max_overflow=0)
        configure_connection(engine, read_only=read_only)
        try:
            with engine.connect() as connection:
                if read_only:
                    _check_readable_schema(connection)
                else:
                    schema.migrate(connection, in_child=migrate_in_child)
                    connection.commit()
        except BaseException:
            engine.dispose()
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return cls(path=db_path, engine=engine, read_only=read_only, lock_fd=lock_fd)

    async def write(self, work: Work[T]) -> T:
        """Run ``work`` in the writer thread; return its value once it is committed."""
        if self._writer is None:
            raise PermissionError(f"state database {self.path} is open read-only")
        return await asyncio.wrap_future(self._writer.submit(work))

    def write_sync(self, work: Work[T]) -> T:
        """``write`` for threads that are not an event loop (start-up, tools, tests)."""
        if self._writer is None:
            raise PermissionError(f"state database {self.path} is open read-only")
        return self._writer.submit(work).result()

    async def read(self, work: Work[T]) -> T:
        """Run ``work`` on a reader thread against committed state."""
        return await asyncio.wrap_future(self._readers.submit(self.read_sync, work))

    def read_sync(self, work: Work[T]) -> T:
        with Session(self.engine) as session, session.begin():
            return work(session)

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
        return (0, 0) if self._writer is None else (self._writer.batches, self._writer.jobs)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        self._readers.shutdown(wait=True)
        self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _lock_exclusively(db_path: Path) -> int:
    lock_path = db_path.with_name(db_path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise DatabaseLockedError(
            f"state database {db_path} is in use by another process (lock {lock_path} is held)"
        ) from exc
    return fd


def _check_readable_schema(connection: Any) -> None:
    current = schema.current_revision(connection)
    if current is None:
        raise schema.SchemaError(
            f"state database has no schema yet (expected revision {schema.head_revision()!r})"
        )
    schema.refuse_if_unknown(current)
