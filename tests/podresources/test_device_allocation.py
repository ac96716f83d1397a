"""Per-ADD allocation: each delegate with a resource takes the next unused id of that resource."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.attach.devices import DeviceAllocator, DeviceLookupError, build_allocator
from app.watch.podresources import KubeletPodResources
from tests.podresources.support import FakeKubelet, container, pod

VF = "intel.com/sriov_netdevice"
GPU = "nvidia.com/gpu"


class RecordingSource:
    """A ``DeviceSource`` that answers from a table and records what it was asked."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[tuple[str, str, str, str]] = []

    async def device_ids(self, *, namespace: str, pod: str, uid: str, resource: str) -> list[str]:
        self.asked.append((namespace, pod, uid, resource))
        return self.table.get(resource, [])


class FailingSource:
    async def device_ids(self, *, namespace: str, pod: str, uid: str, resource: str) -> list[str]:
        raise DeviceLookupError("kubelet pod-resources socket /nowhere is missing")


def test_two_delegates_of_one_resource_get_distinct_ids_in_order() -> None:
    allocator = DeviceAllocator({VF: ["0000:03:02.1", "0000:03:02.3"]})

    assert allocator.next_id(VF) == "0000:03:02.1"
    assert allocator.next_id(VF) == "0000:03:02.3"


def test_a_delegate_gets_no_id_once_the_resource_is_exhausted() -> None:
    allocator = DeviceAllocator({VF: ["0000:03:02.1"], GPU: []})

    assert allocator.next_id(VF) == "0000:03:02.1"
    assert allocator.next_id(VF) is None
    assert allocator.next_id(VF) is None
    assert allocator.next_id(GPU) is None


def test_resources_are_handed_out_independently() -> None:
    allocator = DeviceAllocator({VF: ["vf-0", "vf-1"], GPU: ["gpu-0"]})

    assert [allocator.next_id(VF), allocator.next_id(GPU), allocator.next_id(VF)] == ["vf-0", "gpu-0", "vf-1"]


def test_asking_for_a_resource_that_was_never_listed_is_a_bug_not_a_missing_device() -> None:
    allocator = DeviceAllocator({VF: ["vf-0"]})

    with pytest.raises(KeyError, match="was not listed"):
        allocator.next_id(GPU)


def test_the_allocator_keeps_its_own_copy_of_the_listings() -> None:
    listing = ["vf-0"]
    allocator = DeviceAllocator({VF: listing})
    listing.append("vf-1")

    assert (allocator.next_id(VF), allocator.next_id(VF), allocator.resources) == (
        "vf-0",
        None,
        frozenset({VF}),
    )


@given(
    listings=st.dictionaries(
        st.sampled_from([VF, GPU, "example.com/fpga"]), st.lists(st.text(min_size=1), unique=True, max_size=5)
    ),
    requests=st.lists(st.sampled_from([VF, GPU, "example.com/fpga"]), max_size=20),
)
def test_ids_handed_out_are_each_listings_prefix_in_order(
    listings: dict[str, list[str]], requests: list[str]
) -> None:
    allocator = DeviceAllocator(listings)
    handed: dict[str, list[str | None]] = {resource: [] for resource in listings}

    for resource in requests:
        if resource in listings:
            handed[resource].append(allocator.next_id(resource))

    for resource, ids in handed.items():
        count = Counter(requests)[resource]
        expected = listings[resource][:count] + [None] * max(count - len(listings[resource]), 0)
        assert ids == expected


async def test_build_allocator_asks_once_per_distinct_resource() -> None:
    source = RecordingSource({VF: ["vf-0", "vf-1"], GPU: ["gpu-0"]})

    allocator = await build_allocator(source, namespace="ns", pod="p", uid="u", resources=[VF, GPU, VF, VF])

    assert source.asked == [("ns", "p", "u", VF), ("ns", "p", "u", GPU)]  # each once, in sorted order
    assert [allocator.next_id(VF), allocator.next_id(VF), allocator.next_id(VF)] == ["vf-0", "vf-1", None]


async def test_build_allocator_passes_a_lookup_failure_on() -> None:
    with pytest.raises(DeviceLookupError, match="/nowhere"):
        await build_allocator(FailingSource(), namespace="ns", pod="p", uid="u", resources=[VF])


async def test_two_delegates_get_distinct_vfs_from_the_kubelet(
    kubelet: FakeKubelet, socket_path: str
) -> None:
    kubelet.pods = [
        pod("ns", "p", container("app", {VF: ["0000:03:02.5"]}), container("sidecar", {VF: ["0000:03:02.1"]}))
    ]
    await kubelet.start()
    source = KubeletPodResources(socket_path)

    allocator = DeviceAllocator({VF: await source.device_ids(namespace="ns", pod="p", resource=VF)})

    assert [allocator.next_id(VF), allocator.next_id(VF), allocator.next_id(VF)] == [
        "0000:03:02.1",
        "0000:03:02.5",
        None,
    ]
    assert kubelet.calls == ["Get ns/p"]
