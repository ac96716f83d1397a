"""When the kubelet cannot be asked, the lookup raises ``DeviceLookupError`` naming the socket."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from pathlib import Path

import grpc
import pytest

from app.attach.devices import DeviceLookupError
from app.watch.podresources import KubeletPodResources
from tests.podresources.support import FakeKubelet, container, pod

VF = "intel.com/sriov_netdevice"
SAFETY_NET = 30.0
"""Seconds after which a test fails rather than hang; no test waits anywhere near it."""


def stale_socket(path: str) -> None:
    """A socket file nobody listens on, as a crashed kubelet leaves behind."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)


async def lookup(source: KubeletPodResources) -> list[str]:
    async with asyncio.timeout(SAFETY_NET):
        return await source.device_ids(namespace="ns", pod="p", resource=VF)


async def test_a_missing_socket_is_named_in_the_error(socket_path: str) -> None:
    with pytest.raises(DeviceLookupError, match=re.escape(f"socket {socket_path} is missing")):
        await lookup(KubeletPodResources(socket_path))


async def test_a_path_that_is_not_a_socket_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "kubelet.sock"
    path.write_text("")

    with pytest.raises(DeviceLookupError, match=re.escape(f"{path} is not a socket")):
        await lookup(KubeletPodResources(str(path)))


async def test_a_kubelet_that_is_down_is_named_in_the_error(socket_path: str) -> None:
    stale_socket(socket_path)

    with pytest.raises(
        DeviceLookupError, match=re.escape(f"Get on {socket_path} failed: UNAVAILABLE")
    ) as raised:
        await lookup(KubeletPodResources(socket_path))

    assert isinstance(raised.value.__cause__, grpc.aio.AioRpcError)


async def test_a_lookup_succeeds_as_soon_as_the_kubelet_is_back(
    kubelet: FakeKubelet, socket_path: str
) -> None:
    """No reconnect backoff carries over from the failed lookup to the next one."""
    stale_socket(socket_path)
    source = KubeletPodResources(socket_path)
    with pytest.raises(DeviceLookupError):
        await lookup(source)

    os.unlink(socket_path)
    kubelet.pods = [pod("ns", "p", container("c", {VF: ["0000:03:02.1"]}))]
    await kubelet.start()

    assert await lookup(source) == ["0000:03:02.1"]


async def test_get_is_bounded_by_the_timeout(kubelet: FakeKubelet, socket_path: str) -> None:
    kubelet.hang = {"Get"}
    await kubelet.start()

    with pytest.raises(DeviceLookupError, match=re.escape(f"Get on {socket_path}: no answer within 0.3 s")):
        await lookup(KubeletPodResources(socket_path, timeout=0.3))

    await asyncio.wait_for(kubelet.cancelled.wait(), SAFETY_NET)  # the kubelet saw the deadline too


async def test_the_list_fallback_is_bounded_by_the_same_timeout(
    kubelet: FakeKubelet, socket_path: str
) -> None:
    kubelet.get_mode = "disabled"
    kubelet.hang = {"List"}
    await kubelet.start()

    with pytest.raises(DeviceLookupError, match=re.escape(f"List on {socket_path}: no answer within 0.3 s")):
        await lookup(KubeletPodResources(socket_path, timeout=0.3))

    assert kubelet.calls == ["Get ns/p", "List"]


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED]
)
async def test_other_get_failures_raise_without_listing(
    kubelet: FakeKubelet, socket_path: str, code: grpc.StatusCode
) -> None:
    kubelet.fail = {"Get": (code, "scripted failure")}
    await kubelet.start()

    with pytest.raises(
        DeviceLookupError, match=re.escape(f"Get on {socket_path} failed: {code.name}: scripted failure")
    ):
        await lookup(KubeletPodResources(socket_path))

    assert kubelet.calls == ["Get ns/p"]


async def test_a_failing_list_fallback_raises(kubelet: FakeKubelet, socket_path: str) -> None:
    kubelet.get_mode = "absent"
    kubelet.fail = {"List": (grpc.StatusCode.UNAVAILABLE, "kubelet shutting down")}
    await kubelet.start()

    with pytest.raises(
        DeviceLookupError,
        match=re.escape(f"List on {socket_path} failed: UNAVAILABLE: kubelet shutting down"),
    ):
        await lookup(KubeletPodResources(socket_path))


async def test_an_answer_over_16_mib_is_refused(kubelet: FakeKubelet, socket_path: str) -> None:
    filler = [f"{index:04d}:" + "f" * 1000 for index in range(20)]
    kubelet.pods = [pod("bulk", f"pod-{index}", container("c", {VF: filler})) for index in range(900)]
    kubelet.get_mode = "absent"
    await kubelet.start()

    with pytest.raises(
        DeviceLookupError, match=re.escape(f"List on {socket_path} failed: RESOURCE_EXHAUSTED")
    ):
        await lookup(KubeletPodResources(socket_path))


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        KubeletPodResources(timeout=0)
