"""A network-status write answered by something that is not a pod is a write that did not land (or,
answered 2xx, one that landed), never a crash of the write.

The publisher's callers (the ADD, the background retries, hot-plug) handle
``ClusterUnavailableError`` alone, so any other exception out of a status write failed the ADD it
was part of. A small aiohttp server stands in for the API server: the emulator always answers
real pods. Real: the kubernetes_asyncio client over HTTP, the publisher and its event poster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from app.attach.cluster import ClusterUnavailableError
from app.sandbox.kubeconfig import write_kubeconfig
from app.store.mirror_records import PodRecord
from app.watch import client
from app.watch.api import KubeApi
from app.watch.podevents import PodEventPoster
from app.watch.settings import WatchSettings
from app.watch.status import ApiStatusPublisher
from tests.watch.support import FAST_SETTINGS, NODE

POD = PodRecord("default", "p", "uid-1", NODE, "1", {})
STATUS = '[{"name": "default/net1", "interface": "net1", "dns": {}}]'
FORBIDDEN = {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403}


class Answers:
    """What the stand-in server answers: ``patch`` to a PATCH, ``get`` to a GET, ``put`` to a PUT."""

    def __init__(self) -> None:
        self.patch: tuple[int, Any] = (200, {"metadata": {"uid": "uid-1"}})
        self.get: tuple[int, Any] = (200, {"metadata": {"uid": "uid-1", "resourceVersion": "1"}})
        self.put: tuple[int, Any] = (200, {"metadata": {"uid": "uid-1"}})
        self.seen: list[str] = []

    async def answer(self, request: web.Request) -> web.Response:
        self.seen.append(request.method)
        status, body = {"PATCH": self.patch, "GET": self.get, "PUT": self.put}[request.method]
        return web.json_response(body, status=status)


@pytest.fixture
async def answers(tmp_path: Path) -> AsyncIterator[tuple[Answers, KubeApi]]:
    answers = Answers()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answers.answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    access = client.find_access(
        kubeconfig=str(write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}", token="t")),
        environ={},
    )
    assert access is not None
    api = await client.connect(access, settings=FAST_SETTINGS)
    try:
        yield answers, api
    finally:
        await api.close()
        await runner.cleanup()


def publisher(api: KubeApi, settings: WatchSettings = FAST_SETTINGS) -> ApiStatusPublisher:
    return ApiStatusPublisher(
        api=api, settings=settings, events=PodEventPoster(api=api, settings=settings, node_name=NODE)
    )


async def test_a_patch_answered_2xx_with_metadata_that_is_no_object_counts_as_written(
    answers: tuple[Answers, KubeApi],
) -> None:
    server, api = answers
    server.patch = (200, {"kind": "Pod", "metadata": "not an object"})
    writer = publisher(api)

    await writer.publish_network_status(POD, STATUS)

    assert writer.published == 1
    assert server.seen == ["PATCH"]


@pytest.mark.parametrize(
    "pod",
    [
        {"kind": "Pod", "metadata": "not an object"},
        {"kind": "Pod"},
        {"kind": "Pod", "metadata": {"uid": "uid-1", "resourceVersion": "1", "annotations": ["a"]}},
        {"kind": "Pod", "metadata": {"uid": "uid-1", "resourceVersion": "1", "annotations": "a=b"}},
    ],
    ids=["metadata-a-string", "no-metadata", "annotations-a-list", "annotations-a-string"],
)
async def test_a_get_before_put_answering_no_pod_is_a_write_that_did_not_land(
    answers: tuple[Answers, KubeApi], pod: dict[str, Any]
) -> None:
    server, api = answers
    server.patch = (403, FORBIDDEN)
    server.get = (200, pod)
    writer = publisher(api)

    with pytest.raises(ClusterUnavailableError, match="GET /api/v1/namespaces/default/pods/p"):
        await writer.publish_network_status(POD, STATUS)

    assert "PUT" not in server.seen
    assert writer.published == 0
