"""Device ids of a pod from every source: kubelet pod-resources, its checkpoint file, DRA claims and slices.

The API is the emulator over real HTTP (kubernetes-asyncio), the kubelet a real gRPC server on a unix
socket (or no socket at all), the checkpoint a real file.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from app.attach.devices import DeviceDataError, DeviceLookupError
from app.cni.types import ErrorCode
from app.sandbox.kubeapi import KubeApiEmulator
from app.watch.api import KubeApi
from app.watch.nodedevices import NodeDevices
from app.watch.podresources import KubeletPodResources
from tests.podresources.support import FakeKubelet, container, pod
from tests.watch.support import NODE, OTHER_NODE, pod_manifest

NIC = "sriov_nic_1"
PLUGIN_VF = "intel.com/sriov_netdevice"
DRIVER = "sriov.k8snetworkplumbingwg.io"
GPU_DRIVER = "gpu.example.com"


@pytest.fixture
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("kubelet") / "kubelet.sock")


@pytest.fixture
async def kubelet(socket_path: str) -> AsyncIterator[FakeKubelet]:
    fake = FakeKubelet(socket_path)
    yield fake
    await fake.stop()


def devices(api: KubeApi, socket_path: str, checkpoint: Path) -> NodeDevices:
    return NodeDevices(
        api=api, kubelet=KubeletPodResources(socket_path, timeout=2.0), checkpoint_path=str(checkpoint)
    )


def dra_pod(emulator: KubeApiEmulator, name: str, claims: dict[str, str | None]) -> dict[str, Any]:
    """A pod on NODE whose ``resourceClaimStatuses`` map claim reference names to generated claims."""
    manifest = pod_manifest(name)
    manifest["spec"]["resourceClaims"] = [
        {"name": ref, "resourceClaimTemplateName": "vf-template"} for ref in claims
    ]
    manifest["status"] = {
        "phase": "Pending",
        "resourceClaimStatuses": [
            {"name": ref, **({"resourceClaimName": claim} if claim else {})} for ref, claim in claims.items()
        ],
    }
    return emulator.create_pod(manifest)


def publish_slices(emulator: KubeApiEmulator) -> None:
    """The SR-IOV DRA driver's devices on NODE (and on another node), and a GPU driver's on NODE."""
    emulator.create_resource_slice(
        "node-a-sriov",
        node=NODE,
        driver=DRIVER,
        pool=NODE,
        devices={
            "vf-0": {"k8s.cni.cncf.io/deviceID": "0000:81:00.2", "k8s.cni.cncf.io/resourceName": NIC},
            "vf-1": {"k8s.cni.cncf.io/deviceID": "0000:81:00.3", "k8s.cni.cncf.io/resourceName": NIC},
            "vf-2": {"k8s.cni.cncf.io/deviceID": "0000:81:00.4"},  # not published for CNI
        },
    )
    emulator.create_resource_slice(
        "node-b-sriov",
        node=OTHER_NODE,
        driver=DRIVER,
        pool=NODE,  # same pool name on another node: must not be read
        devices={"vf-1": {"k8s.cni.cncf.io/deviceID": "0000:99:99.9", "k8s.cni.cncf.io/resourceName": NIC}},
    )
    emulator.create_resource_slice(
        "node-a-gpu", node=NODE, driver=GPU_DRIVER, pool="gpus", devices={"gpu-0": {"model": "x"}}
    )


def result(request: str, driver: str, pool: str, device: str) -> dict[str, str]:
    return {"request": request, "driver": driver, "pool": pool, "device": device}


def write_checkpoint(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(
        json.dumps(
            {
                "Data": {"PodDeviceEntries": entries, "RegisteredDevices": {PLUGIN_VF: ["a", "b"]}},
                "Checksum": 1,
            }
        )
    )
    return path


async def test_dra_devices_give_their_device_ids_without_any_kubelet(
    emulator: KubeApiEmulator, api: KubeApi, socket_path: str, tmp_path: Path
) -> None:
    publish_slices(emulator)
    emulator.create_resource_claim(
        "default",
        "web-vf-abcde",
        results=[result("vf", DRIVER, NODE, "vf-1"), result("vf", DRIVER, NODE, "vf-0")],
    )
    emulator.create_resource_claim(
        "default", "web-gpu-fghij", results=[result("gpu", GPU_DRIVER, "gpus", "gpu-0")]
    )
    uid = dra_pod(emulator, "web", {"vf": "web-vf-abcde", "gpu": "web-gpu-fghij", "unused": None})[
        "metadata"
    ]["uid"]
    since = emulator.last_request_seq

    source = devices(api, socket_path, tmp_path / "no-checkpoint")
    ids = await source.device_ids(namespace="default", pod="web", uid=uid, resource=NIC)

    assert ids == ["0000:81:00.2", "0000:81:00.3"], "this node's slice, sorted; the other node's vf-1 unused"
    slice_lists = [urlsplit(r.path) for r in emulator.requests(since=since, path="resourceslices")]
    assert [(url.path, parse_qs(url.query)["fieldSelector"]) for url in slice_lists] == [
        ("/apis/resource.k8s.io/v1/resourceslices", [f"spec.nodeName={NODE},spec.driver={DRIVER}"]),
        ("/apis/resource.k8s.io/v1/resourceslices", [f"spec.nodeName={NODE},spec.driver={GPU_DRIVER}"]),
    ], "one LIST per driver, this node's slices only"


async def test_dra_ids_are_merged_with_the_kubelets_device_plugin_ids(
    emulator: KubeApiEmulator, api: KubeApi, kubelet: FakeKubelet, socket_path: str, tmp_path: Path
) -> None:
    publish_slices(emulator)
    emulator.create_resource_claim("default", "web-vf", results=[result("vf", DRIVER, NODE, "vf-0")])
    uid = dra_pod(emulator, "web", {"vf": "web-vf"})["metadata"]["uid"]
    kubelet.pods = [
        pod("default", "web", container("app", {NIC: ["0000:03:02.1"], PLUGIN_VF: ["0000:03:02.5"]}))
    ]
    await kubelet.start()

    source = devices(api, socket_path, tmp_path / "no-checkpoint")

    assert await source.device_ids(namespace="default", pod="web", uid=uid, resource=NIC) == [
        "0000:03:02.1",
        "0000:81:00.2",
    ]
    assert await source.device_ids(namespace="default", pod="web", uid=uid, resource=PLUGIN_VF) == [
        "0000:03:02.5"
    ]
    assert (
        await source.device_ids(namespace="default", pod="web", uid=uid, resource="gpu.example.com/gpu") == []
    )


@pytest.mark.parametrize(
    "device_ids",
    [{"-1": ["0000:03:02.3"], "0": ["0000:03:02.1"]}, ["0000:03:02.3", "0000:03:02.1"]],
    ids=["per-numa-node", "pre-1.20-list"],
)
async def test_without_a_kubelet_socket_the_checkpoint_file_gives_the_pods_ids(
    emulator: KubeApiEmulator, api: KubeApi, socket_path: str, tmp_path: Path, device_ids: Any
) -> None:
    uid = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
    checkpoint = write_checkpoint(
        tmp_path / "kubelet_internal_checkpoint",
        [
            {
                "PodUID": uid,
                "ContainerName": "app",
                "ResourceName": PLUGIN_VF,
                "DeviceIDs": device_ids,
                "AllocResp": "e30=",
            },
            {"PodUID": uid, "ContainerName": "app", "ResourceName": "other", "DeviceIDs": {"0": ["x"]}},
            {
                "PodUID": "another-pod",
                "ContainerName": "app",
                "ResourceName": PLUGIN_VF,
                "DeviceIDs": {"0": ["y"]},
            },
        ],
    )
    source = devices(api, socket_path, checkpoint)

    assert await source.device_ids(namespace="default", pod="web", uid=uid, resource=PLUGIN_VF) == [
        "0000:03:02.1",
        "0000:03:02.3",
    ]
    assert source.checkpoint_reads == 1


async def test_a_kubelet_that_answers_wins_over_the_checkpoint(
    emulator: KubeApiEmulator, api: KubeApi, kubelet: FakeKubelet, socket_path: str, tmp_path: Path
) -> None:
    uid = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
    checkpoint = write_checkpoint(
        tmp_path / "cp", [{"PodUID": uid, "ResourceName": PLUGIN_VF, "DeviceIDs": {"0": ["stale"]}}]
    )
    kubelet.pods = [pod("default", "web", container("app", {PLUGIN_VF: ["0000:03:02.5"]}))]
    await kubelet.start()
    source = devices(api, socket_path, checkpoint)

    assert await source.device_ids(namespace="default", pod="web", uid=uid, resource=PLUGIN_VF) == [
        "0000:03:02.5"
    ]
    assert source.checkpoint_reads == 0


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("{not json", "not JSON"),
        ('{"Data": ' + "[" * 100_000 + "]" * 100_000 + "}", "not JSON"),  # nested too deep: not a bug
        ('["a"]', "the document must be a JSON object"),
        ('{"Checksum": 1}', "'Data' must be an object"),
        ('{"Data": {"PodDeviceEntries": {}}}', "'Data.PodDeviceEntries' must be a list"),
        (
            '{"Data": {"PodDeviceEntries": [{"ResourceName": "r", "DeviceIDs": []}]}}',
            "'Data.PodDeviceEntries[0].PodUID'",
        ),
        (
            '{"Data": {"PodDeviceEntries": [{"PodUID": "u", "ResourceName": "r", "DeviceIDs": "0:3:2.1"}]}}',
            "'Data.PodDeviceEntries[0].DeviceIDs' must be an object of lists",
        ),
        (
            '{"Data": {"PodDeviceEntries": [{"PodUID": "u", "ResourceName": "r", "DeviceIDs": {"0": [1]}}]}}',
            "'Data.PodDeviceEntries[0].DeviceIDs.0[0]' must be a non-empty string",
        ),
    ],
)
async def test_a_malformed_checkpoint_is_an_error_naming_the_field(
    emulator: KubeApiEmulator, api: KubeApi, socket_path: str, tmp_path: Path, content: str, field: str
) -> None:
    uid = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
    checkpoint = tmp_path / "kubelet_internal_checkpoint"
    checkpoint.write_text(content)

    with pytest.raises(DeviceDataError, match="malformed") as raised:
        await devices(api, socket_path, checkpoint).device_ids(
            namespace="default", pod="web", uid=uid, resource=PLUGIN_VF
        )

    assert field in str(raised.value)
    assert str(checkpoint) in str(raised.value)
    assert raised.value.code == ErrorCode.DECODING_FAILURE


async def test_no_kubelet_and_no_checkpoint_is_a_lookup_error_naming_both(
    emulator: KubeApiEmulator, api: KubeApi, socket_path: str, tmp_path: Path
) -> None:
    uid = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
    missing = tmp_path / "kubelet_internal_checkpoint"

    with pytest.raises(DeviceLookupError) as raised:
        await devices(api, socket_path, missing).device_ids(
            namespace="default", pod="web", uid=uid, resource=PLUGIN_VF
        )

    assert not isinstance(raised.value, DeviceDataError)
    assert f"kubelet pod-resources socket {socket_path} is missing" in str(raised.value)
    assert f"kubelet device checkpoint {missing} is missing" in str(raised.value)


@pytest.mark.parametrize(
    ("results", "field"),
    [
        (None, "status.allocation is missing (not allocated)"),
        ([], "status.allocation.devices.results is empty"),
        (
            [{"request": "vf", "driver": DRIVER, "pool": NODE}],
            "status.allocation.devices.results[0].device is missing",
        ),
        (
            [result("vf", DRIVER, NODE, "vf-0"), {"request": "vf", "pool": NODE, "device": "vf-1"}],
            "status.allocation.devices.results[1].driver is missing",
        ),
    ],
    ids=["not-allocated", "no-results", "no-device", "no-driver"],
)
async def test_a_claim_that_names_no_device_is_an_error_naming_the_field(
    emulator: KubeApiEmulator,
    api: KubeApi,
    socket_path: str,
    tmp_path: Path,
    results: list[dict[str, str]] | None,
    field: str,
) -> None:
    publish_slices(emulator)
    emulator.create_resource_claim("default", "web-vf", results=results)
    uid = dra_pod(emulator, "web", {"vf": "web-vf"})["metadata"]["uid"]

    with pytest.raises(DeviceDataError) as raised:
        await devices(api, socket_path, tmp_path / "cp").device_ids(
            namespace="default", pod="web", uid=uid, resource=NIC
        )

    assert str(raised.value) == f"ResourceClaim default/web-vf names no device: {field}"
    assert raised.value.code == ErrorCode.INVALID_NETWORK_CONFIG


async def test_a_claim_named_by_the_pod_but_absent_is_an_error_naming_the_field(
    emulator: KubeApiEmulator, api: KubeApi, socket_path: str, tmp_path: Path
) -> None:
    uid = dra_pod(emulator, "web", {"vf": "web-vf-gone"})["metadata"]["uid"]

    with pytest.raises(DeviceDataError, match=r"status\.resourceClaimStatuses\[0\]\.resourceClaimName"):
        await devices(api, socket_path, tmp_path / "cp").device_ids(
            namespace="default", pod="web", uid=uid, resource=NIC
        )


async def test_an_api_that_cannot_answer_is_a_lookup_error(
    emulator: KubeApiEmulator, api: KubeApi, socket_path: str, tmp_path: Path
) -> None:
    publish_slices(emulator)
    emulator.create_resource_claim("default", "web-vf", results=[result("vf", DRIVER, NODE, "vf-0")])
    uid = dra_pod(emulator, "web", {"vf": "web-vf"})["metadata"]["uid"]
    emulator.faults.fail_next(1, status=503, method="GET", path="resourceslices")

    with pytest.raises(DeviceLookupError, match="cannot list ResourceSlices of driver"):
        await devices(api, socket_path, tmp_path / "cp").device_ids(
            namespace="default", pod="web", uid=uid, resource=NIC
        )


async def test_a_pod_recreated_under_its_name_gives_its_predecessors_sandbox_none_of_its_devices(
    emulator: KubeApiEmulator, api: KubeApi, kubelet: FakeKubelet, socket_path: str, tmp_path: Path
) -> None:
    old = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
    emulator.delete_pod("default", "web")
    new = emulator.create_pod(pod_manifest("web"))["metadata"]["uid"]
    checkpoint = write_checkpoint(
        tmp_path / "cp", [{"PodUID": new, "ResourceName": PLUGIN_VF, "DeviceIDs": {"0": ["0000:03:02.5"]}}]
    )
    kubelet.pods = [pod("default", "web", container("app", {PLUGIN_VF: ["0000:03:02.5"]}))]
    await kubelet.start()
    source = devices(api, socket_path, checkpoint)

    with pytest.raises(DeviceDataError) as raised:
        await source.device_ids(namespace="default", pod="web", uid=old, resource=PLUGIN_VF)

    assert raised.value.code == ErrorCode.UNKNOWN_CONTAINER
    assert f'expected pod UID "{old}" but got "{new}"' in str(raised.value)
    assert await source.device_ids(namespace="default", pod="web", uid=new, resource=PLUGIN_VF) == [
        "0000:03:02.5"
    ], "the new pod gets its own"


async def test_a_404_that_names_no_claim_is_a_lookup_error_not_a_missing_claim(
    emulator: KubeApiEmulator, api: KubeApi, socket_path: str, tmp_path: Path
) -> None:
    """A proxy's 404 (its ``Status``, if any, names no ResourceClaim) is the API not answering:
    retried (code 11 at ADD), never the pod's claim reported missing (code 7, a configuration
    error no retry mends)."""
    publish_slices(emulator)
    emulator.create_resource_claim("default", "web-vf", results=[result("vf", DRIVER, NODE, "vf-0")])
    uid = dra_pod(emulator, "web", {"vf": "web-vf"})["metadata"]["uid"]
    emulator.faults.fail_next(1, status=404, method="GET", path="resourceclaims")

    with pytest.raises(DeviceLookupError, match="cannot read ResourceClaim default/web-vf") as raised:
        await devices(api, socket_path, tmp_path / "cp").device_ids(
            namespace="default", pod="web", uid=uid, resource=NIC
        )
    assert not isinstance(raised.value, DeviceDataError)
