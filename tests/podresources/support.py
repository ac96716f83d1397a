"""A scripted kubelet for the pod-resources tests: a real ``grpc.aio`` server on a unix socket.

``FakeKubelet`` serves ``v1.PodResourcesLister`` the way the kubelet does: ``List`` returns every
pod, ``Get`` returns one pod or a plain error (gRPC UNKNOWN) for a pod it does not know. ``get_mode``
scripts the kubelet's generations: ``"served"`` (1.34+, or the gate on), ``"disabled"`` (1.27-1.33
with the ``KubeletPodResourcesGet`` gate off: UNKNOWN), ``"absent"`` (before 1.27: the method is not
registered, so the server answers UNIMPLEMENTED). ``hang`` makes a method never answer, ``fail``
makes it answer with a status of the test's choosing, ``on_call`` is run before each answer (what
happens in the cluster while the kubelet is asked). Every call is recorded in ``calls``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import grpc
import grpc.aio

from app.watch._podresources import podresources_v1_pb2 as api

GetMode = Literal["served", "disabled", "absent"]
SERVICE = "v1.PodResourcesLister"


def pod(namespace: str, name: str, *containers: api.ContainerResources) -> api.PodResources:
    return api.PodResources(namespace=namespace, name=name, containers=containers)


def container(name: str, devices: Mapping[str, Sequence[str]] | None = None) -> api.ContainerResources:
    """A container with ``devices`` (resource name -> ids), plus CPUs, as a real kubelet reports."""
    return api.ContainerResources(
        name=name,
        devices=[
            api.ContainerDevices(resource_name=resource, device_ids=ids)
            for resource, ids in (devices or {}).items()
        ],
        cpu_ids=[2, 3],
    )


@dataclass
class FakeKubelet:
    socket_path: str
    pods: list[api.PodResources] = field(default_factory=list)
    get_mode: GetMode = "served"
    hang: set[str] = field(default_factory=set)
    fail: dict[str, tuple[grpc.StatusCode, str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    on_call: Callable[[str], None] | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    _server: grpc.aio.Server | None = None

    async def start(self) -> None:
        handlers = {
            "List": grpc.unary_unary_rpc_method_handler(
                self._list,
                request_deserializer=api.ListPodResourcesRequest.FromString,
                response_serializer=api.ListPodResourcesResponse.SerializeToString,
            )
        }
        if self.get_mode != "absent":
            handlers["Get"] = grpc.unary_unary_rpc_method_handler(
                self._get,
                request_deserializer=api.GetPodResourcesRequest.FromString,
                response_serializer=api.GetPodResourcesResponse.SerializeToString,
            )
        server = grpc.aio.server(options=[("grpc.max_send_message_length", -1)])
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        server.add_insecure_port(f"unix:{self.socket_path}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    async def _list(
        self, request: api.ListPodResourcesRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> api.ListPodResourcesResponse:
        await self._answer("List", context)
        return api.ListPodResourcesResponse(pod_resources=self.pods)

    async def _get(
        self, request: api.GetPodResourcesRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> api.GetPodResourcesResponse:
        await self._answer(f"Get {request.pod_namespace}/{request.pod_name}", context)
        if self.get_mode == "disabled":
            await context.abort(grpc.StatusCode.UNKNOWN, "PodResources API Get method disabled")
        for entry in self.pods:
            if entry.name == request.pod_name and entry.namespace == request.pod_namespace:
                return api.GetPodResourcesResponse(pod_resources=entry)
        await context.abort(
            grpc.StatusCode.UNKNOWN, f"pod {request.pod_name} in namespace {request.pod_namespace} not found"
        )
        raise AssertionError("abort returns only by raising")

    async def _answer(self, call: str, context: grpc.aio.ServicerContext[object, object]) -> None:
        self.calls.append(call)
        if self.on_call is not None:
            self.on_call(call)
        method = call.split()[0]
        if method in self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if method in self.fail:
            code, details = self.fail[method]
            await context.abort(code, details)
