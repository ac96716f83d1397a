"""Wiring: the daemon's parts built from the settings, the store and the cluster connection.

Called by ``app.daemon.startup``, in its start-up order. Builds objects and nothing more: it
opens no socket, starts no task and reads no environment or file (everything comes from the
``Settings`` tree, environment inputs included).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from app.attach import crashpoints, hotplug
from app.attach.cluster import StatusPublisher
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.networks import NetworkResolver
from app.attach.node import boot_id
from app.attach.status_retries import StatusRetrySettings
from app.cni.invoke import SubprocessExec
from app.daemon import query_server, server, spool
from app.daemon.cluster import Cluster
from app.gc.collector import GarbageCollector
from app.settings import Settings, SettingsError
from app.store.database import Database


def package_version() -> str:
    try:
        return version("multus-py")
    except PackageNotFoundError:
        return "unknown"


def engine(settings: Settings, db: Database, kube: Cluster | None) -> AttachEngine:
    environment = settings.environment
    try:
        crash_points = crashpoints.CrashPoints(environment.crash_at)
    except ValueError as exc:
        raise SettingsError(f"{crashpoints.ENVIRONMENT_VARIABLE}={environment.crash_at!r}: {exc}") from exc
    return AttachEngine(
        db=db,
        resolver=NetworkResolver(
            cluster=kube.sources if kube is not None else None,
            device_info_dir=settings.device_info_dir,
        ),
        status=status_publisher(settings, kube),
        boot_id=environment.boot_id or boot_id(),
        settings=EngineSettings(
            delegate_timeout=settings.timeouts.delegate_exec,
            extra_cni_path=environment.cni_path,
            sysfs_root=settings.sysfs_root,
            node_name=environment.node_name,
            plugin_env={"PATH": environment.plugin_path},
            chroot_dir=settings.chroot_dir,
            parallel_delegates=settings.parallel_delegates,
        ),
        status_retry=StatusRetrySettings(),
        executor=SubprocessExec(max_running=settings.max_concurrent_delegates),
        crash_points=crash_points,
    )


def status_publisher(settings: Settings, kube: Cluster | None) -> StatusPublisher | None:
    """Where the engine writes network-status: with native hot-plug, through the publisher whose
    writes of one pod take turns with the reconciler's (``hotplug.OrderedStatusPublisher``)."""
    if kube is None:
        return None
    if settings.hotplug_networks:
        return hotplug.OrderedStatusPublisher(kube.watchers.publisher)
    return kube.watchers.publisher


def hotplug_reconciler(
    settings: Settings, engine: AttachEngine, kube: Cluster | None
) -> hotplug.HotplugReconciler | None:
    """Native hot-plug (``hotplugNetworks``), fed by the pod mirror's commits and the engine's ADDs;
    None when off or static. It writes network-status through the engine's publisher."""
    if kube is None or not settings.hotplug_networks:
        return None
    status = engine.status_publisher
    if not isinstance(status, hotplug.OrderedStatusPublisher):
        raise TypeError("native hot-plug needs the engine built by wiring.engine (an ordered publisher)")
    reconciler = hotplug.HotplugReconciler(
        engine=engine,
        resolver=NetworkResolver(cluster=kube.sources),
        pods=kube.watchers.pods,
        conf=hotplug.daemon_conf(settings.request_overrides),
        status=status,
        events=kube.watchers.publisher,
    )
    kube.watchers.on_pod_written(reconciler.pod_changed)
    engine.on_sandbox_added(reconciler.sandbox_added)
    return reconciler


def collector(
    settings: Settings, engine: AttachEngine, db: Database, kube: Cluster | None
) -> GarbageCollector:
    return GarbageCollector(
        engine=engine,
        db=db,
        pods=kube.watchers.presence if kube is not None else None,
        pod_gone_grace=settings.timeouts.pod_gone_grace,
    )


def cni_server(
    settings: Settings,
    *,
    engine: AttachEngine,
    collector: GarbageCollector,
    readiness: server.Readiness,
    activity: query_server.Activity,
) -> server.CniServer:
    return server.CniServer(
        engine=engine,
        daemon_config=settings.request_overrides,
        readiness=readiness,
        collector=collector,
        activity=activity,
        connection_limit=settings.connection_limit,
        spool_dir=settings.spool_path,
        spool_record=spool.record_path(settings.state_dir),
        ready_hold=server.READY_HOLD_SECONDS
        if settings.environment.ready_hold is None
        else settings.environment.ready_hold,
    )


def query_context(
    settings: Settings, *, readiness: server.Readiness, activity: query_server.Activity
) -> query_server.QueryContext:
    return query_server.QueryContext(
        settings=settings,
        readiness=readiness,
        activity=activity,
        node=settings.environment.node_name,
        version=package_version(),
    )
