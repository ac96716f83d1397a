"""``NodeDevices``: every source of a pod's device ids, merged, as the ``DeviceSource`` the engine asks.

The daemon builds one (API client, kubelet pod-resources client, checkpoint path from the settings)
and hands it to the resolver in ``ClusterSources.devices``; the resolver asks it only for NADs with a
``k8s.v1.cni.cncf.io/resourceName``, once per distinct resource of an ADD, for the pod it resolved
(name and UID). One lookup is, as upstream Multus does it but in another order:

1. device-plugin ids from the kubelet pod-resources API;
2. the pod, by a live GET (its uid, node and ``status.resourceClaimStatuses``: the mirror keeps none),
   refused unless it has the UID asked for;
3. when the kubelet did not answer (socket missing, refused, failing, timeout), device-plugin ids
   from the kubelet's device checkpoint file, matched by pod uid;
4. DRA ids from the pod's ResourceClaims and the node's ResourceSlices (``app.watch.dra``);
5. both merged, each id once, sorted.

The pod-resources API knows pods by namespace and name only (``GetPodResourcesRequest``,
``PodResources``: no UID), so a pod recreated under its name (a StatefulSet's) while an ADD of its
predecessor's sandbox asks would have the predecessor handed its successor's VF. Hence the GET
after the kubelet answered: the kubelet learns of a pod from the API only, so a pod of that name
read from the API afterwards with the UID asked for proves the answer was not a successor's;
another UID refuses the lookup (``DeviceDataError``, code 3, as network resolution refuses a
replaced pod). That is as far as a UID check goes with this API: the other way round, a kubelet
still holding a predecessor under the name (force-deleted from the API, its devices not yet freed)
may answer the successor with the predecessor's ids, which no read of the API can tell; while an
attachment of ours records such a VF, invariant 8b refuses it (code 7). The checkpoint file is
matched by UID, DRA claims by the pod read.

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
from app.cni.types import ErrorCode
from app.watch.api import KubeApi
from app.watch.dra import dra_device_ids
from app.watch.errors import ApiError, ApiNotFoundError
from app.watch.kubeletcheckpoint import DEFAULT_CHECKPOINT_PATH, checkpoint_device_ids
from app.watch.podresources import KubeletPodResources
from app.watch.resources import pod_path

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

    async def device_ids(self, *, namespace: str, pod: str, uid: str, resource: str) -> list[str]:
        kubelet_error: DeviceLookupError | None = None
        try:
            from_plugins = await self._kubelet.device_ids(namespace=namespace, pod=pod, resource=resource)
        except DeviceDataError:
            raise
        except DeviceLookupError as error:
            kubelet_error, from_plugins = error, []
        obj = await self._pod(namespace, pod, uid)  # after the kubelet's answer: see the module's doc
        from_dra = (await dra_device_ids(self._api, obj)).get(resource, [])
        if kubelet_error is not None:
            from_plugins = await self._from_checkpoint(obj, resource, kubelet_error, have_dra=bool(from_dra))
        return sorted(set(from_plugins) | set(from_dra))

    async def _pod(self, namespace: str, name: str, uid: str) -> dict[str, Any]:
        try:
            obj = await self._api.get(pod_path(namespace, name))
        except ApiNotFoundError as exc:
            if exc.says_pod_gone(name):
                gone = f"pod {namespace}/{name} not found while reading its devices"
                raise DeviceLookupError(gone) from exc
            raise DeviceLookupError(
                f"cannot read pod {namespace}/{name} for its devices: a 404 that does not name it: {exc}"
            ) from exc
        except ApiError as exc:
            raise DeviceLookupError(f"cannot read pod {namespace}/{name} for its devices: {exc}") from exc
        found = str((obj.get("metadata") or {}).get("uid", ""))
        if uid and found != uid:
            raise DeviceDataError(
                f'expected pod UID "{uid}" but got "{found}" from Kube API: pod {namespace}/{name} was '
                "replaced; the devices of its name are not this sandbox's",
                code=ErrorCode.UNKNOWN_CONTAINER,
            )
        return obj

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
