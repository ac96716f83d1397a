"""``multus-daemon``: start-up order, supervision of long-lived tasks, and shutdown.

Order matters: settings, then the state database (migrated, locked), then the socket (DEL can be
served from here on) and the read-only query API for ``multusctl`` (``multus-query.sock``), then
recovery of what a previous run left unsettled and the replay of DELs the shim spooled, then
ready; garbage collection (with spool replay) and history retention then run periodically in the
background. On SIGTERM/SIGINT
``/readyz`` turns 500 at once, in-flight operations get a grace period to reach their final
commit, and the process exits 0. ``00-multus.conf`` is kept in place (upstream deletes it, leaving
the node without networks while the daemon restarts).

Exit codes follow upstream: 1 unusable configuration or database, 3 socket/listener failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from contextlib import suppress
from importlib.metadata import PackageNotFoundError, version

from app import settings as settings_module
from app.attach import crashpoints
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.networks import NetworkResolver
from app.attach.node import boot_id
from app.daemon import autoconf, logformat, metrics_server, query_server, server, spool
from app.daemon import cluster as daemon_cluster
from app.gc import recovery
from app.gc.collector import GarbageCollector
from app.settings import Settings, SettingsError
from app.store import retention
from app.store.database import Database, DatabaseLockedError
from app.store.schema import SchemaError
from app.watch.errors import KubeConfigError

log = logging.getLogger("app.daemon")

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "verbose": logging.INFO,
    "error": logging.ERROR,
    "panic": logging.CRITICAL,
}
BOOT_ID_OVERRIDE = "MULTUS_PY_BOOT_ID"
"""Test hook: pretend to run in another boot (a node reboot without rebooting the test machine)."""
MIRROR_CONDITION = "the pod and NAD mirrors to sync"
INDICATOR_CONDITION = "the readiness indicator file"
AUTOCONF_INTERVAL = 2.0
"""Seconds between checks of the primary network configuration (for ``00-multus.conf``)."""
NODE_NAME_VARIABLE = "MULTUS_NODE_NAME"
"""Upstream's variable for this node's name (the downward API sets it); the hostname without it."""


def node_name() -> str:
    """This node's name, as upstream finds it: ``MULTUS_NODE_NAME``, else the hostname."""
    return os.environ.get(NODE_NAME_VARIABLE) or socket.gethostname()


def _package_version() -> str:
    try:
        return version("multus-py")
    except PackageNotFoundError:
        return "unknown"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="multus-daemon", description="multus-py node daemon")
    parser.add_argument(
        "-config",
        "--config",
        dest="config",
        default=settings_module.DEFAULT_CONFIG_PATH,
        help="path to daemon-config.json",
    )
    parser.add_argument(
        "-version", "--version", dest="version", action="store_true", help="print the version"
    )
    return parser.parse_args(argv)


def configure_logging(settings: Settings) -> None:
    level = LOG_LEVELS.get(settings.log_level.lower(), logging.CRITICAL)
    handlers: list[logging.Handler] = []
    if settings.log_file:
        handlers.append(logging.FileHandler(settings.log_file))
    if settings.log_to_stderr or not handlers:
        handlers.append(logging.StreamHandler(sys.stderr))
    line_format = logformat.formatter(settings.log_format)
    for handler in handlers:
        handler.setFormatter(line_format)
    logging.basicConfig(level=level, handlers=handlers, force=True)


class Daemon:
    """One daemon run, from opening the store to the last commit before exit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.readiness = server.Readiness()
        self.activity = query_server.Activity()
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self.readiness.stopping = True
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        try:
            db = await asyncio.to_thread(Database.open, self.settings.database_path)
        except (SchemaError, DatabaseLockedError, OSError) as exc:
            log.critical("cannot open the state database: %s", exc)
            return 1
        try:
            return await self._serve(db)
        finally:
            await asyncio.to_thread(db.close)

    async def _serve(self, db: Database) -> int:
        self.readiness.store_open = True
        self._indicator_missing()
        try:
            kube = await daemon_cluster.connect(self.settings, db, node=node_name())
        except KubeConfigError as exc:
            log.critical("cannot reach Kubernetes: %s", exc)
            return 1
        try:
            return await self._serve_with(db, kube)
        finally:
            if kube is not None:
                await kube.close()

    async def _serve_with(self, db: Database, kube: daemon_cluster.Cluster | None) -> int:
        engine = self._engine(db, kube)
        collector = GarbageCollector(engine=engine, db=db, pods=kube.watchers.presence if kube else None)
        cni_server = server.CniServer(
            engine=engine,
            daemon_config=self.settings.request_overrides,
            readiness=self.readiness,
            collector=collector,
            activity=self.activity,
            connection_limit=self.settings.connection_limit,
        )
        try:
            runner = await server.start(cni_server, self.settings.socket_path)
        except (server.SocketInUseError, OSError) as exc:
            log.critical("cannot listen on %s: %s", self.settings.socket_path, exc)
            return 3
        metrics_runner = None
        if self.settings.metrics_port is not None:
            metrics_runner = await metrics_server.start(self.settings.metrics_port)
        query_runner = await query_server.start(self._query_context())
        try:
            await recovery.recover(engine=engine, db=db)
            await self._replay_spool(engine)
            self.readiness.recovered = True
            async with asyncio.TaskGroup() as tasks:
                if kube is not None:
                    self.readiness.extra_conditions[MIRROR_CONDITION] = False
                    tasks.create_task(kube.watchers.run(), name="watchers")
                    tasks.create_task(self._mark_synced(kube), name="mirror-synced")
                if self.settings.multus_config_file == "auto":
                    tasks.create_task(self._keep_shim_conf_current(), name="autoconf")
                elif self.settings.readiness_indicator_file:
                    tasks.create_task(self._watch_indicator(), name="readiness-indicator")
                tasks.create_task(self._collect_garbage(collector, engine), name="gc")
                tasks.create_task(self._prune_history(db), name="history-retention")
                log.info("multus-daemon %s ready on %s", _package_version(), self.settings.socket_path)
                await self._stop.wait()
                remaining = await cni_server.drain(self.settings.timeouts.shutdown_grace)
                if remaining:
                    log.error("stopping with %d operations still running", remaining)
                if kube is not None:
                    kube.watchers.stop()
        finally:
            await runner.cleanup()
            if metrics_runner is not None:
                await metrics_runner.cleanup()
            if query_runner is not None:
                await query_runner.cleanup()
        return 0

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

    async def _watch_indicator(self) -> None:
        """Follow ``readinessindicatorfile`` when no autoconf loop does (non-auto mode)."""
        while not self._stop.is_set():
            self._indicator_missing()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), AUTOCONF_INTERVAL / 2)

    async def _mark_synced(self, kube: daemon_cluster.Cluster) -> None:
        """Ready only once the pod and NAD mirrors have synced since start-up."""
        waiting = asyncio.ensure_future(kube.watchers.wait_synced())
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, stopping):
                task.cancel()
        if kube.watchers.synced:
            self.readiness.extra_conditions[MIRROR_CONDITION] = True
            log.info("pod and NAD mirrors synced")

    def _query_context(self) -> query_server.QueryContext:
        return query_server.QueryContext(
            settings=self.settings,
            readiness=self.readiness,
            activity=self.activity,
            node=node_name(),
            version=_package_version(),
        )

    async def _replay_spool(self, engine: AttachEngine) -> None:
        await spool.replay(
            spool_dir=self.settings.spool_path,
            engine=engine,
            daemon_config=dict(self.settings.request_overrides),
        )

    async def _collect_garbage(self, collector: GarbageCollector, engine: AttachEngine) -> None:
        """Every ``gcIntervalSeconds``: replay spooled DELs, then a GC pass; until stopped."""
        while not self._stop.is_set():
            try:
                await self._replay_spool(engine)
                report = await collector.run_once()
                self.activity.gc_finished(report, trigger="periodic")
            except Exception:
                log.exception("garbage collection pass failed")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.timeouts.gc_interval)

    async def _prune_history(self, db: Database) -> None:
        """Every ``retention.PRUNE_INTERVAL`` seconds: one history retention pass; until stopped."""
        limits = retention.Retention.from_limits(
            max_age_hours=self.settings.history_max_age_hours, max_rows=self.settings.history_max_rows
        )
        while not self._stop.is_set():
            try:
                report = await retention.prune(db, limits, stop=self._stop.is_set)
                self.activity.history_pruned(report)
                if report.deleted_by_age or report.deleted_by_rows:
                    log.info("history retention: %s", report.as_json())
            except Exception:
                log.exception("history retention pass failed")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), retention.PRUNE_INTERVAL)

    def _engine(self, db: Database, kube: daemon_cluster.Cluster | None) -> AttachEngine:
        extra_path = tuple(part for part in os.environ.get("CNI_PATH", "").split(":") if part)
        return AttachEngine(
            db=db,
            resolver=NetworkResolver(cluster=kube.sources if kube is not None else None),
            status=kube.watchers.publisher if kube is not None else None,
            boot_id=os.environ.get(BOOT_ID_OVERRIDE) or boot_id(),
            settings=EngineSettings(
                delegate_timeout=self.settings.timeouts.delegate_exec,
                extra_cni_path=extra_path,
                sysfs_root=self.settings.sysfs_root,
                node_name=node_name(),
                plugin_env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
            ),
            crash_points=crashpoints.CrashPoints(os.environ.get(crashpoints.ENVIRONMENT_VARIABLE, "")),
        )

    async def _keep_shim_conf_current(self) -> None:
        """Write 00-multus.conf once a primary configuration exists, and again when it changes.

        With ``readinessindicatorfile`` set, the conf exists only while that file does: its
        absence means the cluster network is not there (yet, or any more), and a node without
        the conf tells the runtime so, as upstream's does."""
        while True:
            primary = autoconf.find_primary(self.settings)
            indicator_missing = self._indicator_missing()
            if indicator_missing:
                await asyncio.to_thread(autoconf.remove, self.settings)
            elif primary is not None:
                try:
                    await asyncio.to_thread(autoconf.write, self.settings, primary)
                except (autoconf.AutoconfError, OSError) as exc:
                    log.error("cannot write %s: %s", autoconf.CONF_NAME, exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), AUTOCONF_INTERVAL)
            if self._stop.is_set():
                return


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.version:
        print(f"multus-daemon: version:{_package_version()}")
        return 0
    try:
        settings = settings_module.load(args.config)
    except SettingsError as exc:
        print(f"multus-daemon: {exc}", file=sys.stderr)
        return 1
    configure_logging(settings)
    return asyncio.run(Daemon(settings).run())


if __name__ == "__main__":
    sys.exit(main())
