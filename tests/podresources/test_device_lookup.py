"""Which device ids the client reports, and which kubelet method it asks, against a real gRPC server."""

from __future__ import annotations

import asyncio
import sys

import pytest

from app.watch.podresources import KubeletPodResources
from tests.podresources.support import FakeKubelet, GetMode, container, pod

VF = "intel.com/sriov_netdevice"
OTHER_VF = "mellanox.com/cx5_vf"


def script_node(kubelet: FakeKubelet) -> None:
    """The pod under test plus neighbours that must not leak into its answer."""
    kubelet.pods = [
        pod("default", "neighbour", container("app", {VF: ["0000:03:02.7"]})),
        pod(
            "tenant-a",
            "web",
            container("app", {VF: ["0000:03:02.5", "0000:03:02.1"], OTHER_VF: ["0000:81:00.3"]}),
            container("sidecar", {VF: ["0000:03:02.3"]}),
            container("no-devices"),
        ),
        pod("tenant-b", "web", container("app", {VF: ["0000:03:02.6"]})),
    ]


async def test_reports_only_the_pods_ids_of_that_resource_sorted_across_containers(
    kubelet: FakeKubelet, socket_path: str
) -> None:
    script_node(kubelet)
    await kubelet.start()
    source = KubeletPodResources(socket_path)

    assert await source.device_ids(namespace="tenant-a", pod="web", resource=VF) == [
        "0000:03:02.1",
        "0000:03:02.3",
        "0000:03:02.5",
    ]
    assert await source.device_ids(namespace="tenant-a", pod="web", resource=OTHER_VF) == ["0000:81:00.3"]
    assert await source.device_ids(namespace="tenant-b", pod="web", resource=VF) == ["0000:03:02.6"]


async def test_asks_get_for_the_one_pod_when_the_kubelet_serves_it(
    kubelet: FakeKubelet, socket_path: str
) -> None:
    script_node(kubelet)
    await kubelet.start()

    await KubeletPodResources(socket_path).device_ids(namespace="tenant-a", pod="web", resource=VF)

    assert kubelet.calls == ["Get tenant-a/web"]


@pytest.mark.parametrize(
    ("get_mode", "calls"),
    [
        pytest.param("absent", ["List"], id="kubelet-before-1.27-unimplemented"),
        pytest.param("disabled", ["Get tenant-a/web", "List"], id="feature-gate-off-unknown"),
    ],
)
async def test_falls_back_to_list_filtered_to_the_pod_when_get_is_unusable(
    kubelet: FakeKubelet, socket_path: str, get_mode: GetMode, calls: list[str]
) -> None:
    script_node(kubelet)
    kubelet.get_mode = get_mode
    await kubelet.start()

    ids = await KubeletPodResources(socket_path).device_ids(namespace="tenant-a", pod="web", resource=VF)

    assert ids == ["0000:03:02.1", "0000:03:02.3", "0000:03:02.5"]
    assert kubelet.calls[-len(calls) :] == calls
    assert kubelet.calls.count("List") == 1


@pytest.mark.parametrize("get_mode", ["served", "disabled", "absent"])
async def test_a_pod_without_that_resource_has_no_ids(
    kubelet: FakeKubelet, socket_path: str, get_mode: GetMode
) -> None:
    script_node(kubelet)
    kubelet.get_mode = get_mode
    await kubelet.start()
    source = KubeletPodResources(socket_path)

    assert await source.device_ids(namespace="tenant-a", pod="web", resource="nvidia.com/gpu") == []
    assert await source.device_ids(namespace="default", pod="neighbour", resource=OTHER_VF) == []


@pytest.mark.parametrize("get_mode", ["served", "disabled", "absent"])
async def test_a_pod_the_kubelet_does_not_know_has_no_ids(
    kubelet: FakeKubelet, socket_path: str, get_mode: GetMode
) -> None:
    script_node(kubelet)
    kubelet.get_mode = get_mode
    await kubelet.start()

    ids = await KubeletPodResources(socket_path).device_ids(namespace="tenant-a", pod="gone", resource=VF)

    assert ids == []


async def test_an_id_reported_by_two_containers_is_listed_once(
    kubelet: FakeKubelet, socket_path: str
) -> None:
    kubelet.pods = [
        pod("ns", "p", container("init-sidecar", {VF: ["b", "a"]}), container("app", {VF: ["a"]}))
    ]
    await kubelet.start()

    assert await KubeletPodResources(socket_path).device_ids(namespace="ns", pod="p", resource=VF) == [
        "a",
        "b",
    ]


async def test_answers_larger_than_grpcs_default_4_mib_are_accepted(
    kubelet: FakeKubelet, socket_path: str
) -> None:
    filler = [f"{index:04d}:" + "f" * 1000 for index in range(6)]
    kubelet.pods = [pod("bulk", f"pod-{index}", container("c", {VF: filler})) for index in range(900)]
    kubelet.pods.append(pod("ns", "p", container("c", {VF: ["0000:03:02.1"]})))
    kubelet.get_mode = "absent"
    await kubelet.start()

    ids = await KubeletPodResources(socket_path).device_ids(namespace="ns", pod="p", resource=VF)

    assert ids == ["0000:03:02.1"]


async def test_concurrent_lookups_each_get_their_own_pods_answer(
    kubelet: FakeKubelet, socket_path: str
) -> None:
    kubelet.pods = [pod("ns", f"p{index}", container("c", {VF: [f"id-{index}"]})) for index in range(20)]
    await kubelet.start()
    source = KubeletPodResources(socket_path)

    answers = await asyncio.gather(
        *(source.device_ids(namespace="ns", pod=f"p{index}", resource=VF) for index in range(20))
    )

    assert answers == [[f"id-{index}"] for index in range(20)]


async def test_delegates_still_spawn_after_a_lookup_loaded_grpc(
    kubelet: FakeKubelet, socket_path: str
) -> None:
    """gRPC starts threads; the engine forks and execs delegate plugins afterwards."""
    script_node(kubelet)
    await kubelet.start()
    await KubeletPodResources(socket_path).device_ids(namespace="tenant-a", pod="web", resource=VF)

    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print('delegate ran')", stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(child.communicate(), timeout=30)

    assert (child.returncode, stdout) == (0, b"delegate ran\n")
