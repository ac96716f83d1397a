"""``KubeApiEmulator``: the Kubernetes API emulator as one object, in-process or as its own process.

The entry point of ``app.sandbox``: it assembles the store, watch hub, fault injector, request log
and HTTP server, starts and stops them, and gives tests direct Python access to objects
(``create_pod``, ``get_pod``, ``create_nad``, ...), faults (``faults.fail_next``, ``drop_watches``,
``compact``, ...) and the request log. ``python -m app.sandbox.kubeapi --port N [--kubeconfig-out PATH]``
runs it as a separate process, prints its URL on the first line of stdout, and stops on SIGTERM or
SIGINT. A test/demo tool, not production code: one event loop, no authentication, no persistence.

Use every method from the event loop thread the emulator runs on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from app.sandbox import resources
from app.sandbox.faults import FaultInjector
from app.sandbox.kubeconfig import write_kubeconfig
from app.sandbox.requestlog import RequestLog, RequestRecord
from app.sandbox.resources import (
    EVENTS,
    EVENTS_V1,
    NAMESPACES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    PODS,
    RESOURCE_CLAIMS,
    RESOURCE_SLICES,
    Resource,
)
from app.sandbox.selectors import parse_field_selector, parse_label_selector
from app.sandbox.server import ServerParts, make_app
from app.sandbox.status import bad_request
from app.sandbox.store import ObjectStore
from app.sandbox.streaming import WatchStreams
from app.sandbox.watching import WatchHub

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]


class KubeApiEmulator:
    """An in-memory Kubernetes API server on a real HTTP port.

    ``history_size``: changes kept per resource for watches from an older resourceVersion (older:
    410). ``bookmark_interval``: seconds between BOOKMARK events on watches that allow them.
    ``watch_timeout``: stream length when a watch gives no ``timeoutSeconds``. ``watch_queue_size``:
    events a watcher may fall behind before it is closed. ``shutdown_timeout``: how long ``stop``
    waits for in-flight requests before cancelling them. ``too_large_wait``: how long a list at a
    resourceVersion not reached yet waits for it before it is answered 504 with the cause
    ``ResourceVersionTooLarge`` (the real API server's watch cache waits 3 s; a watch from such a
    version waits silently until it is reached, as the real one does).

    A cluster whose store went back in time (etcd restored from a backup, without bumping its
    revision) is a second emulator with fewer revisions: a client keeps the first one's
    resourceVersions, which the second has not reached.
    """

    def __init__(
        self,
        *,
        history_size: int = 1000,
        bookmark_interval: float = 60.0,
        watch_timeout: float = 1800.0,
        watch_queue_size: int = 1000,
        request_log_size: int = 100_000,
        shutdown_timeout: float = 2.0,
        too_large_wait: float = 0.1,
    ) -> None:
        self.faults = FaultInjector()
        self.hub = WatchHub(history_size=history_size, queue_size=watch_queue_size)
        self.store = ObjectStore(hub=self.hub)
        self.request_log = RequestLog(max_records=request_log_size)
        self.streams = WatchStreams(
            hub=self.hub,
            faults=self.faults,
            current_resource_version=lambda: self.store.resource_version,
            bookmark_interval=bookmark_interval,
        )
        self._watch_timeout = watch_timeout
        self._too_large_wait = too_large_wait
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: any free port) and return the base URL, e.g. ``http://127.0.0.1:41234``."""
        if self._runner is not None:
            raise RuntimeError(f"the emulator is already running at {self._url}")
        parts = ServerParts(
            store=self.store,
            faults=self.faults,
            requests=self.request_log,
            streams=self.streams,
            default_watch_timeout=self._watch_timeout,
            too_large_wait=self._too_large_wait,
        )
        runner = web.AppRunner(
            make_app(parts),
            handle_signals=False,
            shutdown_timeout=self._shutdown_timeout,
            handler_cancellation=True,
            access_log=None,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        bound_port = runner.addresses[0][1]
        self._runner = runner
        self._url = f"http://[{host}]:{bound_port}" if ":" in host else f"http://{host}:{bound_port}"
        logger.info("Kubernetes API emulator listening at %s", self._url)
        return self._url

    async def stop(self) -> None:
        """Resume a paused server, end every watch cleanly, finish in-flight requests, close the port."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self.faults.resume()
        self.streams.close_all()
        await runner.cleanup()
        logger.info("Kubernetes API emulator at %s stopped", self._url)

    async def __aenter__(self) -> KubeApiEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the emulator has not been started")
        return self._url

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def bookmark_interval(self) -> float:
        return self.streams.bookmark_interval

    @bookmark_interval.setter
    def bookmark_interval(self, seconds: float) -> None:
        self.streams.bookmark_interval = seconds

    def write_kubeconfig(self, path: str | Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig pointing at this emulator (see ``app.sandbox.kubeconfig``)."""
        return write_kubeconfig(path, self.url, namespace=namespace)

    # objects: generic

    @property
    def resource_version(self) -> str:
        """The newest resourceVersion, as the API returns it."""
        return str(self.store.resource_version)

    def create(
        self, resource: Resource, obj: Mapping[str, Any], *, namespace: str | None = None
    ) -> JsonObject:
        """Create ``obj`` as a POST would; ``namespace`` defaults to the object's, then ``default``."""
        body = json.loads(json.dumps(obj))
        if resource.namespaced:
            namespace = namespace or body.get("metadata", {}).get("namespace") or "default"
        return self.store.create(resource, namespace, body).decoded()

    def create_object(self, obj: Mapping[str, Any]) -> JsonObject:
        """Create ``obj``, choosing the resource from its ``apiVersion`` and ``kind``."""
        for resource in resources.ALL:
            if obj.get("apiVersion") == resource.api_version and obj.get("kind") == resource.kind:
                return self.create(resource, obj)
        raise bad_request(f"the emulator serves no {obj.get('apiVersion')}/{obj.get('kind')}")

    def get(self, resource: Resource, namespace: str | None, name: str) -> JsonObject:
        """A copy of the stored object; ``ApiError`` 404 when it does not exist."""
        return self.store.get(resource, namespace, name).decoded()

    def exists(self, resource: Resource, namespace: str | None, name: str) -> bool:
        return self.store.find(resource, namespace, name) is not None

    def list_objects(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[JsonObject]:
        selected = self.store.select(
            resource,
            namespace=namespace,
            labels=parse_label_selector(label_selector),
            fields=parse_field_selector(field_selector, resource),
        )
        return [stored.decoded() for stored in selected]

    def update(
        self, resource: Resource, obj: Mapping[str, Any], *, subresource: str | None = None
    ) -> JsonObject:
        """PUT ``obj`` (409 when its resourceVersion is stale; omit the resourceVersion to force)."""
        body = json.loads(json.dumps(obj))
        metadata = body.get("metadata", {})
        namespace = metadata.get("namespace") if resource.namespaced else None
        stored = self.store.update(
            resource, namespace, metadata.get("name", ""), body, subresource=subresource
        )
        return stored.decoded()

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        merge_patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> JsonObject:
        """Apply a JSON merge patch (to the ``status`` subresource when ``subresource="status"``)."""
        stored = self.store.patch(
            resource,
            namespace,
            name,
            json.loads(json.dumps(merge_patch)),
            content_type="application/merge-patch+json",
            subresource=subresource,
        )
        return stored.decoded()

    def delete(self, resource: Resource, namespace: str | None, name: str) -> JsonObject:
        """Delete at once; returns the deleted object (stamped with the deletion's resourceVersion)."""
        return self.store.delete(resource, namespace, name).decoded()

    # objects: the kinds this daemon uses

    def create_namespace(self, name: str, *, labels: Mapping[str, str] | None = None) -> JsonObject:
        return self.create(NAMESPACES, {"metadata": {"name": name, "labels": dict(labels or {})}})

    def create_pod(self, pod: Mapping[str, Any]) -> JsonObject:
        """Create a pod (namespace ``default`` unless ``metadata.namespace`` says otherwise).

        A given ``status`` is kept (the emulator plays the kubelet); without one the pod is Pending.
        """
        return self.create(PODS, pod)

    def get_pod(self, namespace: str, name: str) -> JsonObject:
        return self.get(PODS, namespace, name)

    def patch_pod(
        self, namespace: str, name: str, merge_patch: Mapping[str, Any], *, status: bool = False
    ) -> JsonObject:
        """Merge-patch a pod; ``status=True`` patches the status subresource (status, labels, annotations)."""
        return self.patch(PODS, namespace, name, merge_patch, subresource="status" if status else None)

    def delete_pod(self, namespace: str, name: str) -> JsonObject:
        return self.delete(PODS, namespace, name)

    def create_nad(
        self,
        namespace: str,
        name: str,
        config: str | Mapping[str, Any] | None = None,
        *,
        annotations: Mapping[str, str] | None = None,
    ) -> JsonObject:
        """Create a NetworkAttachmentDefinition; a mapping ``config`` is JSON-encoded into ``spec.config``.

        ``config=None`` leaves ``spec`` out (Multus then looks the network up in its confDir).
        """
        metadata: JsonObject = {"name": name, "namespace": namespace}
        if annotations:
            metadata["annotations"] = dict(annotations)
        nad: JsonObject = {
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": metadata,
        }
        if config is not None:
            nad["spec"] = {"config": config if isinstance(config, str) else json.dumps(dict(config))}
        return self.create(NETWORK_ATTACHMENT_DEFINITIONS, nad)

    def get_nad(self, namespace: str, name: str) -> JsonObject:
        return self.get(NETWORK_ATTACHMENT_DEFINITIONS, namespace, name)

    def delete_nad(self, namespace: str, name: str) -> JsonObject:
        return self.delete(NETWORK_ATTACHMENT_DEFINITIONS, namespace, name)

    def create_resource_claim(
        self, namespace: str, name: str, *, results: Sequence[Mapping[str, str]] | None
    ) -> JsonObject:
        """Create an allocated DRA ResourceClaim: ``results`` are ``{request, driver, pool, device}``
        items of ``status.allocation.devices.results`` (None: a claim not allocated, no ``status``)."""
        claim: JsonObject = {
            "apiVersion": RESOURCE_CLAIMS.api_version,
            "kind": RESOURCE_CLAIMS.kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"devices": {"requests": []}},
        }
        if results is not None:
            claim["status"] = {"allocation": {"devices": {"results": [dict(item) for item in results]}}}
        return self.create(RESOURCE_CLAIMS, claim)

    def create_resource_slice(
        self,
        name: str,
        *,
        node: str,
        driver: str,
        pool: str,
        devices: Mapping[str, Mapping[str, str]],
    ) -> JsonObject:
        """Create a ResourceSlice of ``node`` whose ``devices`` map a device name to its string attributes."""
        return self.create(
            RESOURCE_SLICES,
            {
                "apiVersion": RESOURCE_SLICES.api_version,
                "kind": RESOURCE_SLICES.kind,
                "metadata": {"name": name},
                "spec": {
                    "driver": driver,
                    "nodeName": node,
                    "pool": {"name": pool, "generation": 1, "resourceSliceCount": 1},
                    "devices": [
                        {
                            "name": device,
                            "attributes": {key: {"string": value} for key, value in attributes.items()},
                        }
                        for device, attributes in devices.items()
                    ],
                },
            },
        )

    def events(self, namespace: str | None = None) -> list[JsonObject]:
        """Core v1 events, plus ``events.k8s.io/v1`` events converted to the core shape, oldest first."""
        core = self.list_objects(EVENTS, namespace=namespace)
        converted = [_as_core_event(event) for event in self.list_objects(EVENTS_V1, namespace=namespace)]
        merged = core + converted
        merged.sort(key=lambda event: int(event["metadata"]["resourceVersion"]))
        return merged

    # faults and observation

    def drop_watches(self) -> int:
        """Abort every open watch connection now; returns how many there were."""
        return self.streams.drop_all()

    def compact(self) -> str:
        """Forget watch history: watches and continue tokens from older versions get 410.

        Returns the resourceVersion compacted to.
        """
        return str(self.store.compact())

    def requests(
        self, *, since: int = 0, method: str | None = None, path: str | None = None
    ) -> list[RequestRecord]:
        """Logged API requests after seq ``since``, filtered by method and by a path regex (searched)."""
        return self.request_log.records(since=since, method=method, path=path)

    async def wait_for_request(
        self, *, since: int = 0, method: str | None = None, path: str | None = None, answered: bool = False
    ) -> RequestRecord:
        """Wait for a logged request matching as ``requests`` does (with a status, if ``answered``).

        Bound it with ``asyncio.timeout``.
        """
        return await self.request_log.wait_for(since=since, method=method, path=path, answered=answered)

    @property
    def last_request_seq(self) -> int:
        return self.request_log.last_seq

    def clear_requests(self) -> None:
        self.request_log.clear()

    def open_watches(self) -> list[str]:
        """The path and query of every open watch stream."""
        return self.streams.open_watches()

    async def wait_for_watch(self, path: str, *, poll: float = 0.01) -> str:
        """Wait until a watch whose path and query match the regex ``path`` is open; return it.

        Bound it with ``asyncio.timeout``.
        """
        pattern = re.compile(path)
        while True:
            for opened in self.open_watches():
                if pattern.search(opened):
                    return opened
            await asyncio.sleep(poll)


def _as_core_event(event: JsonObject) -> JsonObject:
    controller = event.get("reportingController", "")
    core: JsonObject = {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": event["metadata"],
        "involvedObject": event.get("regarding", {}),
        "reason": event.get("reason", ""),
        "message": event.get("note", ""),
        "type": event.get("type", ""),
        "source": {"component": controller},
        "reportingComponent": controller,
        "reportingInstance": event.get("reportingInstance", ""),
        "action": event.get("action", ""),
    }
    if "eventTime" in event:
        core["eventTime"] = event["eventTime"]
    return core


# separate process


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.sandbox.kubeapi",
        description="Kubernetes API emulator for multus-py tests and demos (not production code).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--kubeconfig-out", type=Path, help="write a kubeconfig pointing at the emulator here"
    )
    parser.add_argument(
        "--seed", type=Path, help="JSON file: an object, a list of objects, or a List to create"
    )
    parser.add_argument("--history-size", type=int, default=1000)
    parser.add_argument("--bookmark-interval", type=float, default=60.0)
    parser.add_argument("--watch-timeout", type=float, default=1800.0)
    parser.add_argument(
        "--too-large-wait",
        type=float,
        default=0.1,
        help="seconds a list at a resourceVersion not reached yet waits before its 504 (a real server: 3)",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def _seed_objects(path: Path) -> list[JsonObject]:
    document = json.loads(path.read_text())
    if isinstance(document, dict) and isinstance(document.get("items"), list):
        document = document["items"]
    return document if isinstance(document, list) else [document]


async def _serve(args: argparse.Namespace) -> None:
    emulator = KubeApiEmulator(
        history_size=args.history_size,
        bookmark_interval=args.bookmark_interval,
        watch_timeout=args.watch_timeout,
        too_large_wait=args.too_large_wait,
    )
    if args.seed:
        for obj in _seed_objects(args.seed):
            emulator.create_object(obj)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    url = await emulator.start(args.host, args.port)
    try:
        if args.kubeconfig_out:
            emulator.write_kubeconfig(args.kubeconfig_out)
        print(url, flush=True)
        await stopping.wait()
    finally:
        await emulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
