"""``NodeDevices``: every source of a pod's device ids, merged, as the ``DeviceSource`` the engine asks.

The daemon builds one (API client, kubelet pod-resources client, checkpoint path from the settings)
and hands it to the resolver in ``ClusterSources.devices``; the resolver asks it only for NADs with a
``k8s.v1.cni.cncf.io/resourceName``, once per distinct resource of an ADD. One lookup is, as upstream
Multus does it:

1. the pod, by a live GET (its uid, node and ``status.resourceClaimStatuses``: the mirror keeps none);
2. device-plugin ids from the kubelet pod-resources API; when it does not answer (socket missing,
   refused, failing, timeout), from the kubelet's device checkpoint file, matched by pod uid;
3. DRA ids from the pod's ResourceClaims and the node's ResourceSlices (``app.watch.dra``);
4. both merged, each id once, sorted.

Unlike upstream, a pod whose DRA devices already give ids of the resource does not fail when neither
the kubelet nor its checkpoint can be read (DRA needs neither); otherwise that is a
``DeviceLookupError`` naming both. Malformed data (checkpoint, claim) is always a ``DeviceDataError``,
whatever the other sources say: nothing is attached on half an answer. Never retries, caches
nothing between lookups and writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.attach.devices import DeviceDataError, DeviceLookupError
from app.watch.api import KubeApi
from app.watch.dra import dra_device_ids
from app.watch.errors import ApiError, ApiNotFoundError
from app.watch.kubeletcheckpoint import DEFAULT_CHECKPOINT_PATH, checkpoint_device_ids
from app.watch.podresources import KubeletPodResources

log = logging.getLogger(__name__)


class NodeDevices:
    """Device-plugin ids (kubelet, else its checkpoint) and DRA ids of a pod, for one resource."""

    def __init__(
        self,
        *,
        api: KubeApi,
        kubelet: KubeletPodResources,
        checkpoint_path: str = DEFAULT_CHECKPOINT_PATH,
    ) -> None:
        self._api = api
        self._kubelet = kubelet
        self.checkpoint_path = checkpoint_path
        self.checkpoint_reads = 0
        """Lookups answered from the checkpoint file because the kubelet did not answer."""

    async def device_ids(self, *, namespace: str, pod: str, resource: str) -> list[str]:
        obj = await self._pod(namespace, pod)
        from_dra = (await dra_device_ids(self._api, obj)).get(resource, [])
        try:
            from_plugins = await self._kubelet.device_ids(namespace=namespace, pod=pod, resource=resource)
        except DeviceDataError:
            raise
        except DeviceLookupError as kubelet_error:
            from_plugins = await self._from_checkpoint(obj, resource, kubelet_error, have_dra=bool(from_dra))
        return sorted(set(from_plugins) | set(from_dra))

    async def _pod(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return await self._api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        except ApiNotFoundError as exc:
            raise DeviceLookupError(f"pod {namespace}/{name} not found while reading its devices") from exc
        except ApiError as exc:
            raise DeviceLookupError(f"cannot read pod {namespace}/{name} for its devices: {exc}") from exc

    async def _from_checkpoint(
        self, pod: dict[str, Any], resource: str, kubelet_error: DeviceLookupError, *, have_dra: bool
    ) -> list[str]:
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        log.debug(
            "kubelet pod-resources did not answer (%s): reading %s", kubelet_error, self.checkpoint_path
        )
        try:
            ids = await asyncio.to_thread(
                checkpoint_device_ids, self.checkpoint_path, pod_uid=uid, resource=resource
            )
        except DeviceDataError:
            raise
        except DeviceLookupError as checkpoint_error:
            if have_dra:
                log.info("device ids of %s from DRA only: %s; %s", resource, kubelet_error, checkpoint_error)
                return []
            raise DeviceLookupError(
                f"{kubelet_error}; and the fallback: {checkpoint_error}"
            ) from checkpoint_error
        self.checkpoint_reads += 1
        return ids
