"""``multus-daemon``: start-up order, supervision of long-lived tasks, and shutdown.

Order matters: settings, then the state database (migrated, locked), then the socket (DEL can be
served from here on), then recovery of what a previous run left unsettled and the replay of DELs
the shim spooled, then ready; garbage collection (with spool replay) then runs periodically. On SIGTERM/SIGINT
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
import sys
from collections.abc import Sequence
from contextlib import suppress
from importlib.metadata import PackageNotFoundError, version

from app import settings as settings_module
from app.attach import crashpoints
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.networks import NetworkResolver
from app.attach.node import boot_id
from app.daemon import autoconf, metrics_server, server, spool
from app.gc import recovery
from app.gc.collector import GarbageCollector
from app.settings import Settings, SettingsError
from app.store.database import Database, DatabaseLockedError
from app.store.schema import SchemaError

log = logging.getLogger("app.daemon")

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "verbose": logging.INFO,
    "error": logging.ERROR,
    "panic": logging.CRITICAL,
}
BOOT_ID_OVERRIDE = "MULTUS_PY_BOOT_ID"
"""Test hook: pretend to run in another boot (a node reboot without rebooting the test machine)."""
AUTOCONF_INTERVAL = 2.0
"""Seconds between checks of the primary network configuration (for ``00-multus.conf``)."""


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
    logging.basicConfig(
        level=level,
        handlers=handlers,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


class Daemon:
    """One daemon run, from opening the store to the last commit before exit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.readiness = server.Readiness()
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
        engine = self._engine(db)
        collector = GarbageCollector(engine=engine, db=db)
        cni_server = server.CniServer(
            engine=engine, daemon_config=self.settings.raw, readiness=self.readiness, collector=collector
        )
        try:
            runner = await server.start(cni_server, self.settings.socket_path)
        except (server.SocketInUseError, OSError) as exc:
            log.critical("cannot listen on %s: %s", self.settings.socket_path, exc)
            return 3
        metrics_runner = None
        if self.settings.metrics_port is not None:
            metrics_runner = await metrics_server.start(self.settings.metrics_port)
        try:
            await recovery.recover(engine=engine, db=db)
            await self._replay_spool(engine)
            self.readiness.recovered = True
            async with asyncio.TaskGroup() as tasks:
                if self.settings.multus_config_file == "auto":
                    tasks.create_task(self._keep_shim_conf_current(), name="autoconf")
                tasks.create_task(self._collect_garbage(collector, engine), name="gc")
                log.info("multus-daemon %s ready on %s", _package_version(), self.settings.socket_path)
                await self._stop.wait()
                remaining = await cni_server.drain(self.settings.timeouts.shutdown_grace)
                if remaining:
                    log.error("stopping with %d operations still running", remaining)
        finally:
            await runner.cleanup()
            if metrics_runner is not None:
                await metrics_runner.cleanup()
        return 0

    async def _replay_spool(self, engine: AttachEngine) -> None:
        await spool.replay(
            spool_dir=self.settings.spool_path, engine=engine, daemon_config=dict(self.settings.raw)
        )

    async def _collect_garbage(self, collector: GarbageCollector, engine: AttachEngine) -> None:
        """Every ``gcIntervalSeconds``: replay spooled DELs, then a GC pass; until stopped."""
        while not self._stop.is_set():
            try:
                await self._replay_spool(engine)
                await collector.run_once()
            except Exception:
                log.exception("garbage collection pass failed")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.timeouts.gc_interval)

    def _engine(self, db: Database) -> AttachEngine:
        extra_path = tuple(part for part in os.environ.get("CNI_PATH", "").split(":") if part)
        return AttachEngine(
            db=db,
            resolver=NetworkResolver(),
            boot_id=os.environ.get(BOOT_ID_OVERRIDE) or boot_id(),
            settings=EngineSettings(
                delegate_timeout=self.settings.timeouts.delegate_exec,
                extra_cni_path=extra_path,
                sysfs_root=self.settings.sysfs_root,
                plugin_env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
            ),
            crash_points=crashpoints.CrashPoints(os.environ.get(crashpoints.ENVIRONMENT_VARIABLE, "")),
        )

    async def _keep_shim_conf_current(self) -> None:
        """Write 00-multus.conf once a primary configuration exists, and again when it changes."""
        while True:
            primary = autoconf.find_primary(self.settings)
            if primary is not None:
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
