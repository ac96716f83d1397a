"""Connecting the daemon to Kubernetes, or deciding it runs in static mode.

Called once by ``app.daemon.startup`` after the store is open. Finds how to reach the API server
(daemon-config ``kubeconfig``, else ``KUBECONFIG``, else the in-cluster service account; the
variables as ``app.settings`` read them), opens the client, builds the watchers that mirror this
node's pods and the NADs with the limits of daemon-config's ``watch`` object, and hands the engine
what it needs (pod and NAD sources, the network-status publisher and its NoNetworkFound
warnings, device ids from the kubelet, its checkpoint file or DRA) and GC
what proves a pod gone. Only the pods of this node (``MULTUS_NODE_NAME``) are mirrored. Without
any way to reach a cluster the daemon runs in static mode and this returns None;
kubernetes_asyncio is then never imported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.attach.networks import ClusterSources
from app.settings import Settings, SettingsError
from app.store.database import Database
from app.watch import client
from app.watch.api import KubeApi
from app.watch.nodedevices import NodeDevices
from app.watch.podresources import KubeletPodResources
from app.watch.settings import WatchSettings
from app.watch.watchers import Watchers

log = logging.getLogger(__name__)


@dataclass
class Cluster:
    api: KubeApi
    watchers: Watchers
    pod_resources_socket: str
    device_checkpoint_file: str

    @property
    def sources(self) -> ClusterSources:
        return ClusterSources(
            pods=self.watchers.pods,
            nads=self.watchers.nads,
            devices=NodeDevices(
                api=self.api,
                kubelet=KubeletPodResources(socket_path=self.pod_resources_socket),
                checkpoint_path=self.device_checkpoint_file,
            ),
            events=self.watchers.publisher,
        )

    async def close(self) -> None:
        await self.api.close()


def watch_settings(settings: Settings) -> WatchSettings:
    """``WatchSettings`` with daemon-config's ``watch`` overrides; ``SettingsError`` if they clash."""
    try:
        return WatchSettings(**settings.watch)
    except ValueError as exc:
        raise SettingsError(f"daemon config key 'watch': {exc}") from exc


async def connect(settings: Settings, database: Database) -> Cluster | None:
    """The daemon's Kubernetes side, or None in static mode. Raises ``KubeConfigError`` for a
    kubeconfig that is named but unusable (never silently static)."""
    limits = watch_settings(settings)
    access = client.find_access(kubeconfig=settings.kubeconfig, environ=settings.environment.kube_environ())
    if access is None:
        log.info("no Kubernetes configured: static mode (networks from conf files only)")
        return None
    api = await client.connect(access, settings=limits)
    node = settings.environment.node_name
    watchers = Watchers(api=api, database=database, node_name=node, settings=limits)
    return Cluster(
        api=api,
        watchers=watchers,
        pod_resources_socket=settings.pod_resources_socket,
        device_checkpoint_file=settings.device_checkpoint_file,
    )
