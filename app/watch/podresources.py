"""The kubelet pod-resources client: the device ids the kubelet allocated to a pod of a given name.

The daemon builds one ``KubeletPodResources`` with the socket path from its settings;
``NodeDevices`` (``app.watch.nodedevices``) asks it first, for NADs with a
``k8s.v1.cni.cncf.io/resourceName`` only. It speaks the kubelet's ``v1.PodResourcesLister`` service
over the kubelet's unix socket: ``Get`` for the one pod (kubelet 1.27+), falling back to ``List`` filtered
to the pod, as upstream Multus does, when the kubelet has no ``Get`` (UNIMPLEMENTED) or answers it
with a plain error (UNKNOWN: the ``KubeletPodResourcesGet`` gate is off, the default before 1.34, or
the kubelet does not know the pod). Both calls share one deadline (``timeout``, 10 s like upstream)
and accept answers up to 16 MiB.

Covered: device-plugin allocations (``ContainerResources.devices``): the ids of one resource across
all the pod's containers as the kubelet reports them (restartable init containers included), each id
once, sorted. Not covered: ``dynamic_resources`` (upstream takes DRA devices from ResourceClaims in
the API server: ``app.watch.dra``), cpu_ids, memory, ``GetAllocatableResources``. A kubelet that
cannot be asked is a ``DeviceLookupError`` here; ``app.watch.nodedevices`` then reads the kubelet's
device checkpoint file instead, as upstream does.

grpc and protobuf (about 20 MiB of RSS) are imported on the first lookup, in a worker thread, never at
module import, so a daemon without such NADs never loads them. Each lookup opens its own channel (with
its own subchannel pool, so a kubelet restart is not masked by a reconnect backoff) and closes it
before returning. It never retries, starts no background task and writes nothing: the engine decides
what a failed lookup means for the ADD.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import stat
from collections.abc import Iterable
from typing import TYPE_CHECKING

from app.attach.devices import DeviceLookupError

if TYPE_CHECKING:
    import grpc.aio

    from app.watch._podresources import podresources_v1_pb2 as api

log = logging.getLogger(__name__)

DEFAULT_SOCKET_PATH = "/var/lib/kubelet/pod-resources/kubelet.sock"
DEFAULT_TIMEOUT = 10.0
MAX_RECEIVE_MESSAGE_BYTES = 16 * 1024 * 1024
"""As upstream (``defaultPodResourcesMaxSize``): a node with many pods answers ``List`` with a lot."""

GET_METHOD = "/v1.PodResourcesLister/Get"
LIST_METHOD = "/v1.PodResourcesLister/List"

_API_MODULE = "app.watch._podresources.podresources_v1_pb2"
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
    ("grpc.use_local_subchannel_pool", 1),
)


class KubeletPodResources:
    """The kubelet pod-resources API on ``socket_path``; lookups end by ``timeout``.

    Not a ``DeviceSource`` on its own: the API names pods by namespace and name, never by UID, so
    its answer for a name may be a successor's; ``NodeDevices`` checks the UID around it.
    """

    def __init__(self, socket_path: str = DEFAULT_SOCKET_PATH, timeout: float = DEFAULT_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.socket_path = socket_path
        self.timeout = timeout

    async def device_ids(self, *, namespace: str, pod: str, resource: str) -> list[str]:
        """The sorted ids of ``resource`` allocated to pod ``namespace/pod`` ([] if none).

        Raises ``DeviceLookupError`` naming the socket when the kubelet cannot be asked.
        """
        pods = await self.pod_resources(namespace=namespace, pod=pod)
        return device_ids_of(pods, namespace=namespace, pod=pod, resource=resource)

    async def pod_resources(self, *, namespace: str, pod: str) -> list[api.PodResources]:
        """What the kubelet reports for pod ``namespace/pod``: Get's answer, else List's entries for it."""
        self._check_socket()
        await _load_grpc()
        import grpc.aio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        async with grpc.aio.insecure_channel(f"unix:{self.socket_path}", options=_CHANNEL_OPTIONS) as channel:
            try:
                return [await _get(channel, namespace=namespace, pod=pod, time_left=self.timeout)]
            except grpc.aio.AioRpcError as error:
                if error.code() not in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNKNOWN):
                    raise self._lookup_error(GET_METHOD, error) from error
                log.debug("kubelet Get unusable (%s: %s), using List", error.code().name, error.details())
            try:
                listed = await _list(channel, time_left=max(deadline - loop.time(), 0.0))
            except grpc.aio.AioRpcError as error:
                raise self._lookup_error(LIST_METHOD, error) from error
        return [entry for entry in listed if entry.name == pod and entry.namespace == namespace]

    def _check_socket(self) -> None:
        try:
            mode = os.stat(self.socket_path).st_mode
        except FileNotFoundError as error:
            raise DeviceLookupError(f"kubelet pod-resources socket {self.socket_path} is missing") from error
        except OSError as error:
            raise DeviceLookupError(f"kubelet pod-resources socket {self.socket_path}: {error}") from error
        if not stat.S_ISSOCK(mode):
            raise DeviceLookupError(f"kubelet pod-resources socket {self.socket_path} is not a socket")

    def _lookup_error(self, method: str, error: grpc.aio.AioRpcError) -> DeviceLookupError:
        import grpc

        where = f"kubelet pod-resources {method} on {self.socket_path}"
        if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeviceLookupError(f"{where}: no answer within {self.timeout:g} s")
        return DeviceLookupError(f"{where} failed: {error.code().name}: {error.details()}")


def device_ids_of(pods: Iterable[api.PodResources], *, namespace: str, pod: str, resource: str) -> list[str]:
    """The ids of ``resource`` in pod ``namespace/pod``'s entries: all containers, each id once, sorted."""
    ids = {
        device_id
        for entry in pods
        if entry.name == pod and entry.namespace == namespace
        for container in entry.containers
        for devices in container.devices
        if devices.resource_name == resource
        for device_id in devices.device_ids
    }
    return sorted(ids)


async def _get(channel: grpc.aio.Channel, *, namespace: str, pod: str, time_left: float) -> api.PodResources:
    from app.watch._podresources import podresources_v1_pb2 as api

    call = channel.unary_unary(
        GET_METHOD,
        request_serializer=api.GetPodResourcesRequest.SerializeToString,
        response_deserializer=api.GetPodResourcesResponse.FromString,
    )
    response: api.GetPodResourcesResponse = await call(
        api.GetPodResourcesRequest(pod_name=pod, pod_namespace=namespace), timeout=time_left
    )
    return response.pod_resources


async def _list(channel: grpc.aio.Channel, *, time_left: float) -> list[api.PodResources]:
    from app.watch._podresources import podresources_v1_pb2 as api

    call = channel.unary_unary(
        LIST_METHOD,
        request_serializer=api.ListPodResourcesRequest.SerializeToString,
        response_deserializer=api.ListPodResourcesResponse.FromString,
    )
    response: api.ListPodResourcesResponse = await call(api.ListPodResourcesRequest(), timeout=time_left)
    return list(response.pod_resources)


_grpc_loaded = False


async def _load_grpc() -> None:
    """Import grpc.aio and the generated messages once, in a worker thread (tens of ms, off the loop)."""
    global _grpc_loaded
    if not _grpc_loaded:
        try:
            await asyncio.to_thread(_import_grpc)
        except ImportError as error:
            raise DeviceLookupError(f"the kubelet pod-resources client cannot be loaded: {error}") from error
        _grpc_loaded = True


def _import_grpc() -> None:
    importlib.import_module("grpc.aio")
    importlib.import_module(_API_MODULE)
