"""One daemon run: start-up order, the background tasks, and the staged shutdown.

Run by ``app.daemon.main`` once the socket is bound (connections wait in its backlog meanwhile).
Start-up: the state database (migrated, locked), Kubernetes (or static mode), the HTTP server on
the pre-bound ``multus.sock`` (DEL can be served from here on; ADD waits for readiness), the
metrics endpoint and the read-only query API (``multus-query.sock``), recovery of what a previous
run left unsettled and the replay of DELs the shim spooled, then ready. The long-lived tasks
(watchers, mirror-synced, the network-status writes a previous run left unwritten once the
mirrors have synced, ``00-multus.conf`` or the readiness indicator, garbage collection with
spool replay, history retention, the check that the state database's file is still at its path)
run under ``app.daemon.supervise``: a crash is logged with its
traceback and the task restarted with backoff while the daemon serves on, and so is an early
return of one that must run until the daemon stops (the watchers, hot-plug, every periodic loop).

Shutdown is staged, on SIGTERM/SIGINT or when a task that cannot be restarted crashes: not ready
(``/readyz`` turns 500 at once; on a signal the restart marker ``multus.restarting`` is written
for the shim) → in-flight operations drained for ``shutdownGraceSeconds``, then the stragglers
named and cancelled (their plugins killed, their connections closed unanswered: the shim spools a
DEL and answers an ADD code 11; what they recorded is settled by the next daemon's recovery); a
start-up recovery or spool replay still running gets the same grace, then is cancelled too → the
servers stop accepting (``multus.sock`` unlinked first, the connections it already queued
answered, each handler given ``server.CLOSE_ANSWER_SECONDS``) → watchers and background tasks
stopped (``shutdownGraceSeconds`` again, then cancelled and named) → the cluster client and the
store closed. So a stop ends within the restart marker's ``until`` (``listener.restart_wait``). Once
stopping, start-up recovery begins no further sandbox's teardown, the spool replay (at start-up or
in a periodic pass) no further entry's DEL, and a periodic pass (or an operator's) no further
teardown or sweep: what they leave, the next daemon's recovery, replay and passes take on.
``00-multus.conf`` is kept in place (upstream deletes it, leaving the node without networks while
the daemon restarts).

Exit codes follow upstream: 0 after a signal, 1 unusable configuration or database or a fatal
task crash (3, socket failure, is decided by ``app.daemon.main`` before this runs).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack

from aiohttp import web

from app.attach import hotplug
from app.attach.engine import AttachEngine
from app.attach.status_retries import StatusRetries
from app.daemon import autoconf, listener, query_server, server, spool, wiring
from app.daemon import cluster as daemon_cluster
from app.daemon.supervise import Backoff, Supervisor
from app.gc import recovery
from app.gc.collector import GarbageCollector
from app.osthreads import name_this_thread
from app.settings import BOOT_ID_VARIABLE, Settings, SettingsError
from app.store import database, retention
from app.store.database import Database, DatabaseLockedError
from app.store.schema import SchemaError
from app.watch.errors import KubeConfigError

log = logging.getLogger("app.daemon")

MIRROR_CONDITION = "the pod and NAD mirrors to sync"
INDICATOR_CONDITION = "the readiness indicator file"
STATE_FILE_CONDITION = "the state database file back at its path"
ACCEPT_TURN_SECONDS = 0.01
CLOSE_SETTLE_SECONDS = 2.0
"""Most a stopping daemon waits for connections still open on ``multus.sock`` to be answered."""


def _name_executor_thread() -> None:
    """Show a thread of the loop's executor (``asyncio.to_thread``) to the OS by its Python name."""
    name_this_thread(threading.current_thread().name)


class Daemon:
    """One daemon run, from opening the store to the last commit before exit."""

    def __init__(
        self, settings: Settings, sock: socket.socket, *, signalled: Callable[[], bool] = lambda: False
    ) -> None:
        self.settings = settings
        self._signalled = signalled
        self.readiness = server.Readiness()
        self.activity = query_server.Activity()
        self._sock = sock
        self._stopping = asyncio.Event()
        self._graceful = False
        self._grace_ends = 0.0
        """When the stop's ``shutdownGraceSeconds`` ends (``time.monotonic``), once one is requested."""
        self.exit_code = 0
        self._hotplug: hotplug.HotplugReconciler | None = None
        self._shim_conf = autoconf.Keeper(settings)
        self.tasks = Supervisor(
            stopping=self._stopping,
            backoff=Backoff(settings.timeouts.task_restart_initial, settings.timeouts.task_restart_max),
            on_fatal=self._task_failed,
        )

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: a graceful stop (the shim may wait for the next daemon)."""
        if not self._stopping.is_set():
            self._graceful = True
            self._begin_stop()

    def _task_failed(self, name: str) -> None:
        log.critical("stopping: task %s cannot continue", name)
        self.exit_code = 1
        self._begin_stop()

    def _begin_stop(self) -> None:
        """Stage 1: not ready at once; the restart marker before the socket stops accepting."""
        self.readiness.stopping = True
        if not self._stopping.is_set():
            self._grace_ends = time.monotonic() + self.settings.timeouts.shutdown_grace
        log.info("stopping: not ready any more")
        if self._graceful:
            try:
                listener.write_restart_marker(
                    self.settings.socket_dir,
                    wait=listener.restart_wait(self.settings.timeouts.shutdown_grace),
                )
            except OSError as exc:
                log.error("cannot write the restart marker in %s: %s", self.settings.socket_dir, exc)
        self._stopping.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(
            ThreadPoolExecutor(thread_name_prefix="executor", initializer=_name_executor_thread)
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        if self._signalled():  # SIGTERM/SIGINT came while the entry point was importing this
            self.request_stop()
        try:
            async with AsyncExitStack() as stack:
                return await self._start(stack)
        finally:
            self._sock.close()

    async def _start(self, stack: AsyncExitStack) -> int:
        """Start-up in order; each part's closing is pushed on ``stack`` (closed in reverse)."""
        try:
            db = await asyncio.to_thread(Database.open, self.settings.database_path, migrate_in_child=True)
        except (SchemaError, DatabaseLockedError, OSError) as exc:
            log.critical("cannot open the state database: %s", exc)
            return 1
        stack.push_async_callback(asyncio.to_thread, db.close)
        self.readiness.store_open = True
        self._indicator_missing()
        try:
            kube = await daemon_cluster.connect(self.settings, db)
        except (KubeConfigError, SettingsError) as exc:
            log.critical("cannot reach Kubernetes: %s", exc)
            return 1
        if kube is not None:
            stack.push_async_callback(kube.close)
        try:
            engine = wiring.engine(self.settings, db, kube)
        except SettingsError as exc:
            log.critical("%s", exc)
            return 1
        if self.settings.environment.boot_id:
            log.warning(
                "%s=%r: a test hook; this boot's sandboxes are told from an earlier boot's by it, not by the"
                " kernel's boot id: a daemon started with another value tears down every pod on the node",
                BOOT_ID_VARIABLE,
                self.settings.environment.boot_id,
            )
        collector = wiring.collector(self.settings, engine, db, kube)
        self._hotplug = wiring.hotplug_reconciler(self.settings, engine, kube)
        cni_server = wiring.cni_server(
            self.settings,
            engine=engine,
            collector=collector,
            readiness=self.readiness,
            activity=self.activity,
        )
        stack.push_async_callback(self._stop_tasks, kube)
        if engine.status_retries is not None:  # after the servers (their ADDs may hand it a write)
            stack.push_async_callback(engine.status_retries.stop)
        servers = AsyncExitStack()
        stack.push_async_callback(self._stop_servers, servers, cni_server)
        try:
            servers.push_async_callback(self._close_cni_server, await server.start(cni_server, self._sock))
        except OSError as exc:
            log.critical("cannot serve on %s: %s", self.settings.socket_path, exc)
            return 3
        if self.settings.metrics_port is not None:
            from app.daemon import metrics_server  # prometheus_client's exposition: only when served

            metrics_runner = await metrics_server.start(self.settings.metrics_port)
            if metrics_runner is not None:
                servers.push_async_callback(metrics_runner.cleanup)
        query_runner = await query_server.start(
            wiring.query_context(self.settings, readiness=self.readiness, activity=self.activity)
        )
        if query_runner is not None:
            servers.push_async_callback(query_runner.cleanup)
        try:
            recovered = await self._recover(engine, db)
        except Exception:
            log.critical("start-up recovery failed: stopping", exc_info=True)
            self.exit_code = 1
            self._begin_stop()
        else:
            self.readiness.recovered = recovered
            if not self._stopping.is_set():
                self._start_tasks(kube, collector, engine, db)
                settle_memory()
                log.info("multus-daemon %s ready on %s", wiring.package_version(), self.settings.socket_path)
        await self._stopping.wait()
        await self._drain(cni_server)
        return self.exit_code

    def _start_tasks(
        self,
        kube: daemon_cluster.Cluster | None,
        collector: GarbageCollector,
        engine: AttachEngine,
        db: Database,
    ) -> None:
        timeouts = self.settings.timeouts
        if kube is not None:
            self.readiness.extra_conditions[MIRROR_CONDITION] = False
            self.tasks.spawn("watchers", kube.watchers.run, until_stopped=True)
            self.tasks.spawn("mirror-synced", lambda: self._mark_synced(kube))
            reconciler = self._hotplug
            if reconciler is not None:
                self.tasks.spawn(
                    "hotplug", lambda: reconciler.run(ready=kube.watchers.wait_synced), until_stopped=True
                )
            retries = engine.status_retries
            if retries is not None:
                self.tasks.spawn("network-status-resume", lambda: self._resume_status_writes(kube, retries))
        if self.settings.multus_config_file == "auto":
            self.tasks.every("autoconf", timeouts.autoconf_interval, self._keep_shim_conf_current)
        elif self.settings.readiness_indicator_file:
            self.tasks.every("readiness-indicator", timeouts.autoconf_interval / 2, self._follow_indicator)
        self.tasks.every("state-file", database.FILE_CHECK_SECONDS, lambda: self._keep_state_file(db))
        self.tasks.every("gc", timeouts.gc_interval, lambda: self._collect_garbage(collector, engine))
        limits = retention.Retention.from_limits(
            max_age_hours=self.settings.history_max_age_hours, max_rows=self.settings.history_max_rows
        )
        self.tasks.every(
            "history-retention", timeouts.history_prune_interval, lambda: self._prune(db, limits)
        )

    async def _recover(self, engine: AttachEngine, db: Database) -> bool:
        """Start-up recovery, then the replay of the spooled DELs; True once both have run to their
        end. A stop requested meanwhile gives them what is left of ``shutdownGraceSeconds``, as it
        gives the operations in flight (a rollback's DEL may wait on a plugin up to
        ``delegateTimeoutSeconds``, per sandbox): then they are cancelled, their plugins killed, and
        named; what they left recorded the next daemon's recovery settles. Their failure is raised."""
        recovering = asyncio.ensure_future(self._recover_then_replay(engine, db))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({recovering, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not recovering.done():
                await asyncio.wait({recovering}, timeout=self._grace_left())
        finally:
            stopping.cancel()
            if not recovering.done():
                recovering.cancel()
        if recovering.cancelled() or not recovering.done():
            log.error(
                "stopping with start-up recovery still running after %gs: cancelled (what it left "
                "unsettled, the next daemon's recovery settles)",
                self.settings.timeouts.shutdown_grace,
            )
            await asyncio.wait({recovering}, timeout=server.ABANDON_WAIT_SECONDS)
            if recovering.done() and not recovering.cancelled() and recovering.exception() is not None:
                log.error("start-up recovery, cancelled, failed: %s", recovering.exception())
            return False
        recovering.result()
        return True

    async def _recover_then_replay(self, engine: AttachEngine, db: Database) -> None:
        await recovery.recover(
            engine=engine, db=db, device_info_dir=self.settings.device_info_dir, stop=self._stopping.is_set
        )
        await self._replay_spool(engine)

    # ---- staged shutdown --------------------------------------------------------------------------

    def _grace_left(self) -> float:
        """What is left of ``shutdownGraceSeconds`` since the stop was requested."""
        return max(0.0, self._grace_ends - time.monotonic())

    async def _drain(self, cni_server: server.CniServer) -> None:
        """Stage 2: in-flight operations get ``shutdownGraceSeconds`` from the stop's request (the
        start-up recovery it may have cut short had the same) to reach their final commit."""
        running = cni_server.in_flight()
        if running:
            log.info("stopping: waiting for %d operations in flight", len(running))
        remaining = await cni_server.drain(self._grace_left())
        if remaining:
            log.error(
                "stopping with %d operations still running after %gs: %s; cancelled, their connections "
                "closed unanswered (what they recorded is settled by the next daemon's recovery)",
                remaining,
                self.settings.timeouts.shutdown_grace,
                ", ".join(cni_server.in_flight()),
            )
            await cni_server.abandon()

    async def _stop_servers(self, servers: AsyncExitStack, cni_server: server.CniServer) -> None:
        """Stage 3: ``multus.sock``, the metrics endpoint and the query API stop accepting. An
        operation that began after the drain (a DEL queued behind an abandoned one of its sandbox)
        is cancelled too: the store closes after this."""
        await servers.aclose()
        late = await cni_server.abandon()
        if late:
            log.error("stopping: cancelled operations begun after the drain: %s", ", ".join(late))
        log.debug("stopping: servers closed")

    async def _close_cni_server(self, runner: web.BaseRunner) -> None:
        """``multus.sock`` stops accepting without resetting anyone: its path goes first (a shim
        connecting from now on finds no daemon and waits for the next, as the marker says), the
        connections already queued or open are answered (503 while stopping), then it closes."""
        self.settings.socket_path.unlink(missing_ok=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_SETTLE_SECONDS
        await asyncio.sleep(ACCEPT_TURN_SECONDS)  # the loop accepts what the backlog still holds
        while runner.server is not None and runner.server.connections and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(ACCEPT_TURN_SECONDS)  # aiohttp has no event for "no connection left"
        await runner.cleanup()

    async def _stop_tasks(self, kube: daemon_cluster.Cluster | None) -> None:
        """Stage 4: watchers and background tasks end (the stop event is set; late ones cancelled)."""
        self._stopping.set()
        if kube is not None:
            kube.watchers.stop()
        if self._hotplug is not None:
            self._hotplug.stop()
        cancelled = await self.tasks.stop(grace=self.settings.timeouts.shutdown_grace)
        if cancelled:
            log.warning("stopping: cancelled background tasks %s", ", ".join(cancelled))
        log.debug("stopping: background tasks ended")

    # ---- the background tasks -------------------------------------------------------------------

    def _indicator_missing(self) -> bool:
        """True when a ``readinessindicatorfile`` is configured and absent (also sets readiness)."""
        indicator = self.settings.readiness_indicator_file
        if not indicator:
            return False
        present = os.path.exists(indicator)
        if self.readiness.extra_conditions.get(INDICATOR_CONDITION) != present:
            log.log(
                logging.INFO if present else logging.WARNING,
                "readiness indicator %s %s",
                indicator,
                "present" if present else "absent: not ready for ADDs",
            )
        self.readiness.extra_conditions[INDICATOR_CONDITION] = present
        return not present

    async def _follow_indicator(self) -> None:
        """Follow ``readinessindicatorfile`` when no autoconf loop does (non-auto mode)."""
        self._indicator_missing()

    async def _mark_synced(self, kube: daemon_cluster.Cluster) -> None:
        """Ready only once the pod and NAD mirrors have synced since start-up."""
        if await self._synced_unless_stopping(kube):
            self.readiness.extra_conditions[MIRROR_CONDITION] = True
            settle_memory()
            log.info("pod and NAD mirrors synced")

    async def _resume_status_writes(self, kube: daemon_cluster.Cluster, retries: StatusRetries) -> None:
        """Once the mirrors have synced (a write needs the pod as the API has it), the network-status
        writes a previous run left unwritten go to the background retries."""
        if await self._synced_unless_stopping(kube):
            await retries.resume(kube.watchers.pods)

    async def _synced_unless_stopping(self, kube: daemon_cluster.Cluster) -> bool:
        """Wait until the pod and NAD mirrors have synced since start-up, or the daemon stops;
        True when they have synced."""
        waiting = asyncio.ensure_future(kube.watchers.wait_synced())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, stopping):
                task.cancel()
        return kube.watchers.synced

    async def _replay_spool(self, engine: AttachEngine) -> spool.SpoolReport:
        """Replay the spooled DELs, none begun once the daemon is stopping (left to the next one)."""
        return await spool.replay(
            spool_dir=self.settings.spool_path,
            engine=engine,
            daemon_config=dict(self.settings.request_overrides),
            record=spool.record_path(self.settings.state_dir),
            stop=self._stopping.is_set,
        )

    async def _collect_garbage(self, collector: GarbageCollector, engine: AttachEngine) -> None:
        """One periodic pass: replay spooled DELs, then garbage collection, unless the daemon has
        begun stopping meanwhile: a pass tears orphans down one after another, and one begun now
        would be cancelled mid-teardown at the end of the grace (what it would collect, the next
        daemon's recovery and passes do)."""
        replayed = await self._replay_spool(engine)
        if self._stopping.is_set():
            return
        report = await collector.run_once(stop=self._stopping.is_set)
        self.activity.gc_finished(report, trigger="periodic", spool=replayed.as_json())

    async def _keep_state_file(self, db: Database) -> None:
        """Put the state database back at its path if it was removed or replaced under the daemon;
        not ready for ADDs while that fails (``Database.keep_file_in_place``). The look itself is a
        few ``stat`` calls on the loop: a thread only when there is something to put back."""
        in_place = db.file_in_place() or await asyncio.to_thread(db.keep_file_in_place)
        if self.readiness.extra_conditions.get(STATE_FILE_CONDITION, True) != in_place:
            self.readiness.extra_conditions[STATE_FILE_CONDITION] = in_place

    async def _prune(self, db: Database, limits: retention.Retention) -> None:
        """One history retention pass."""
        report = await retention.prune(db, limits, stop=self._stopping.is_set)
        self.activity.history_pruned(report)
        if report.deleted_by_age or report.deleted_by_rows:
            log.info("history retention: %s", report.as_json())

    async def _keep_shim_conf_current(self) -> None:
        """Write 00-multus.conf once a primary configuration exists, and again when it changes.

        With ``readinessindicatorfile`` set, the conf exists only while that file does: its
        absence means the cluster network is not there (yet, or any more), and a node without
        the conf tells the runtime so, as upstream's does."""
        await asyncio.to_thread(self._shim_conf.step, indicator_missing=self._indicator_missing())


def settle_memory() -> None:
    """After start-up (and after the first mirror sync, which decodes every pod and NAD once): collect
    what start-up left, freeze the long-lived objects out of the cyclic collector's passes (every
    later collection walks only what requests allocate), and hand freed heap back to the system."""
    gc.collect()
    gc.freeze()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the heap stays as it is
        log.debug("malloc_trim is not available")
