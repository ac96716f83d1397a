"""Updates: PUT and PATCH (merge, strategic, JSON patch), pods/status, optimistic concurrency."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from app.sandbox.kubeapi import KubeApiEmulator
from tests.sandbox.manifests import nad_manifest, pod_manifest

NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
NAD_GROUP, NAD_VERSION, NAD_PLURAL = "k8s.cni.cncf.io", "v1", "network-attachment-definitions"


async def test_merge_patch_of_pod_status_sets_an_annotation(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    created = emulator.create_pod(pod_manifest("ref-pod"))
    patch = {"metadata": {"annotations": {NETWORK_STATUS: '[{"name":"default-net"}]'}}}

    patched = await core.patch_namespaced_pod_status(  # type: ignore[call-arg]  # the stub lacks _content_type
        "ref-pod", "default", patch, _content_type="application/merge-patch+json"
    )

    assert patched.metadata.annotations == {NETWORK_STATUS: '[{"name":"default-net"}]'}
    assert int(patched.metadata.resource_version) > int(created["metadata"]["resourceVersion"])
    assert (
        emulator.get_pod("default", "ref-pod")["metadata"]["annotations"][NETWORK_STATUS]
        == '[{"name":"default-net"}]'
    )


async def test_strategic_merge_patch_is_served_as_a_merge_patch(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("p", app="web"))

    patched = await core.patch_namespaced_pod(
        "p", "default", {"metadata": {"labels": {"app": None, "tier": "x"}}}
    )

    assert patched.metadata.labels == {"tier": "x"}
    assert emulator.requests(method="PATCH")[-1].content_type == "application/strategic-merge-patch+json"


async def test_multus_style_get_then_update_status_writes_the_annotation(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("ref-pod"))
    pod = await core.read_namespaced_pod("ref-pod", "default")
    pod.metadata.annotations = {NETWORK_STATUS: "[]"}
    pod.status.phase = "Running"

    updated = await core.replace_namespaced_pod_status("ref-pod", "default", pod)

    assert updated.metadata.annotations == {NETWORK_STATUS: "[]"}
    assert updated.status.phase == "Running"


async def test_status_update_cannot_change_spec_and_main_update_cannot_change_status(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("p", node="node-a"))

    via_status = await core.patch_namespaced_pod_status(
        "p", "default", {"spec": {"nodeName": "node-b"}, "status": {"phase": "Running"}}
    )
    via_main = await core.patch_namespaced_pod("p", "default", {"status": {"phase": "Failed"}})

    assert via_status.spec.node_name == "node-a"
    assert via_status.status.phase == "Running"
    assert via_main.status.phase == "Running"


async def test_put_with_a_stale_resource_version_answers_409_conflict(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("p"))
    stale = await core.read_namespaced_pod("p", "default")
    emulator.patch_pod("default", "p", {"metadata": {"labels": {"changed": "yes"}}})
    stale.metadata.labels = {"mine": "yes"}

    with pytest.raises(ApiException) as raised:
        await core.replace_namespaced_pod("p", "default", stale)

    assert raised.value.status == 409
    assert raised.value.body is not None
    assert json.loads(raised.value.body)["reason"] == "Conflict"
    assert emulator.get_pod("default", "p")["metadata"]["labels"] == {"changed": "yes"}


async def test_status_put_with_a_stale_resource_version_answers_409(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("p"))
    stale = await core.read_namespaced_pod("p", "default")
    emulator.patch_pod("default", "p", {"status": {"phase": "Running"}}, status=True)

    with pytest.raises(ApiException) as raised:
        await core.replace_namespaced_pod_status("p", "default", stale)

    assert raised.value.status == 409


async def test_patch_naming_a_stale_resource_version_answers_409(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    created = emulator.create_pod(pod_manifest("p"))
    emulator.patch_pod("default", "p", {"metadata": {"labels": {"a": "b"}}})
    patch = {
        "metadata": {"resourceVersion": created["metadata"]["resourceVersion"], "annotations": {"x": "y"}}
    }

    with pytest.raises(ApiException) as raised:
        await core.patch_namespaced_pod_status(  # type: ignore[call-arg]  # the stub lacks _content_type
            "p", "default", patch, _content_type="application/merge-patch+json"
        )

    assert raised.value.status == 409


async def test_put_without_a_resource_version_is_unconditional(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("p"))
    pod = await core.read_namespaced_pod("p", "default")
    emulator.patch_pod("default", "p", {"metadata": {"labels": {"a": "b"}}})
    pod.metadata.resource_version = None  # type: ignore[assignment]  # the stub's setter omits None
    pod.metadata.labels = {"mine": "yes"}

    replaced = await core.replace_namespaced_pod("p", "default", pod)

    assert replaced.metadata.labels == {"mine": "yes"}


async def test_json_patch_adds_replaces_tests_and_removes(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("p", app="web"))
    operations = [
        {"op": "test", "path": "/metadata/labels/app", "value": "web"},
        {"op": "add", "path": "/metadata/annotations", "value": {}},
        {"op": "add", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks", "value": "macvlan-conf"},
        {"op": "replace", "path": "/metadata/labels/app", "value": "api"},
        {"op": "add", "path": "/spec/containers/-", "value": {"name": "sidecar", "image": "busybox"}},
        {"op": "remove", "path": "/spec/containers/0"},
    ]

    patched = await core.patch_namespaced_pod("p", "default", operations)

    assert emulator.requests(method="PATCH")[-1].content_type == "application/json-patch+json"
    assert patched.metadata.labels == {"app": "api"}
    assert patched.metadata.annotations == {"k8s.v1.cni.cncf.io/networks": "macvlan-conf"}
    assert [container.name for container in patched.spec.containers] == ["sidecar"]


async def test_failed_json_patch_test_answers_422_and_changes_nothing(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    created = emulator.create_pod(pod_manifest("p", app="web"))
    operations = [
        {"op": "replace", "path": "/metadata/labels/app", "value": "api"},
        {"op": "test", "path": "/metadata/labels/app", "value": "web"},
    ]

    with pytest.raises(ApiException) as raised:
        await core.patch_namespaced_pod("p", "default", operations)

    assert raised.value.status == 422
    assert emulator.get_pod("default", "p") == created


async def test_unchanged_update_keeps_the_resource_version(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    created = emulator.create_pod(pod_manifest("p", app="web"))

    patched = await core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"app": "web"}}})

    assert patched.metadata.resource_version == created["metadata"]["resourceVersion"]
    assert emulator.resource_version == created["metadata"]["resourceVersion"]


async def test_generation_counts_spec_changes_only(custom: client.CustomObjectsApi) -> None:
    await custom.create_namespaced_custom_object(
        NAD_GROUP, NAD_VERSION, "default", NAD_PLURAL, nad_manifest("n")
    )

    relabelled = await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]  # the stub lacks _content_type
        NAD_GROUP,
        NAD_VERSION,
        "default",
        NAD_PLURAL,
        "n",
        {"metadata": {"labels": {"a": "b"}}},
        _content_type="application/merge-patch+json",
    )
    reconfigured = await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]  # the stub lacks _content_type
        NAD_GROUP,
        NAD_VERSION,
        "default",
        NAD_PLURAL,
        "n",
        {"spec": {"config": "{}"}},
        _content_type="application/merge-patch+json",
    )

    assert relabelled["metadata"]["generation"] == 1
    assert reconfigured["metadata"]["generation"] == 2


async def test_dict_patch_sent_as_json_patch_is_rejected_like_the_real_server(
    custom: client.CustomObjectsApi,
) -> None:
    """CustomObjectsApi labels a dict body application/json-patch+json unless told otherwise."""
    await custom.create_namespaced_custom_object(
        NAD_GROUP, NAD_VERSION, "default", NAD_PLURAL, nad_manifest("n")
    )

    with pytest.raises(ApiException) as raised:
        await custom.patch_namespaced_custom_object(
            NAD_GROUP, NAD_VERSION, "default", NAD_PLURAL, "n", {"spec": {"config": "{}"}}
        )

    assert raised.value.status == 400


async def test_renaming_through_put_answers_400(core: client.CoreV1Api, emulator: KubeApiEmulator) -> None:
    emulator.create_pod(pod_manifest("p"))
    pod = await core.read_namespaced_pod("p", "default")
    pod.metadata.name = "q"

    with pytest.raises(ApiException) as raised:
        await core.replace_namespaced_pod("p", "default", pod)

    assert raised.value.status == 400


async def test_updating_a_missing_pod_answers_404(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as raised:
        await core.patch_namespaced_pod_status("ghost", "default", {"status": {"phase": "Running"}})

    assert raised.value.status == 404


async def test_patch_naming_another_uid_answers_422_field_is_immutable(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    """A PATCH has no uid precondition (only a PUT's body does): the patched object's uid differs
    from the stored one, and update validation refuses it (``metadata.uid``: field is immutable)."""
    old = emulator.create_pod(pod_manifest("p"))
    emulator.delete_pod("default", "p")
    emulator.create_pod(pod_manifest("p"))
    patch = {"metadata": {"uid": old["metadata"]["uid"], "annotations": {NETWORK_STATUS: "[]"}}}

    with pytest.raises(ApiException) as raised:
        await core.patch_namespaced_pod_status(  # type: ignore[call-arg]  # the stub lacks _content_type
            "p", "default", patch, _content_type="application/merge-patch+json"
        )

    assert raised.value.status == 422
    assert raised.value.body is not None
    status = json.loads(raised.value.body)
    assert status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "metadata.uid"
    assert "field is immutable" in status["message"]
    assert NETWORK_STATUS not in (emulator.get_pod("default", "p")["metadata"].get("annotations") or {})


async def test_put_naming_another_uid_answers_409_precondition_failed(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("p"))
    old = await core.read_namespaced_pod("p", "default")
    emulator.delete_pod("default", "p")
    emulator.create_pod(pod_manifest("p"))
    old.metadata.resource_version = None  # type: ignore[assignment]  # the stub's setter omits None

    with pytest.raises(ApiException) as raised:
        await core.replace_namespaced_pod_status("p", "default", old)

    assert raised.value.status == 409
    assert raised.value.body is not None
    assert "Precondition failed: UID in precondition" in json.loads(raised.value.body)["message"]


async def test_deleting_an_absent_annotation_is_a_no_op_that_keeps_the_resource_version(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    """ObjectMeta's maps are ``omitempty``: an empty ``annotations`` is no annotations, so this
    merge patch changes nothing, and a no-op write keeps the resourceVersion (no watch event)."""
    created = emulator.create_pod(pod_manifest("p"))

    patched = await core.patch_namespaced_pod_status(  # type: ignore[call-arg]  # the stub lacks _content_type
        "p",
        "default",
        {"metadata": {"annotations": {"absent": None}}},
        _content_type="application/merge-patch+json",
    )
    main = await core.patch_namespaced_pod(  # type: ignore[call-arg]  # the stub lacks _content_type
        "p",
        "default",
        {"metadata": {"annotations": {"absent": None}}},
        _content_type="application/merge-patch+json",
    )

    assert patched.metadata.resource_version == created["metadata"]["resourceVersion"]
    assert main.metadata.resource_version == created["metadata"]["resourceVersion"]
    assert emulator.resource_version == created["metadata"]["resourceVersion"]


async def test_removing_the_last_annotation_or_label_leaves_no_empty_map(emulator: KubeApiEmulator) -> None:
    emulator.create_pod(
        {
            **pod_manifest("p", app="web"),
            "metadata": {
                "name": "p",
                "labels": {"app": "web"},
                "annotations": {"a": "b"},
                "finalizers": [],
            },
        }
    )

    emulator.patch_pod("default", "p", {"metadata": {"annotations": {"a": None}, "labels": {"app": None}}})

    metadata = emulator.get_pod("default", "p")["metadata"]
    assert "annotations" not in metadata
    assert "labels" not in metadata
    assert "finalizers" not in metadata


ANNOTATIONS_LIMIT = 256 * 1024


async def test_annotations_over_256_kib_in_total_are_refused_with_422(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    """The API server caps the sum of annotation key and value lengths at 256 KiB, on every write
    (a network-status annotation through pods/status included)."""
    emulator.create_pod(pod_manifest("p"))
    fits = "x" * (ANNOTATIONS_LIMIT - len(NETWORK_STATUS))
    await core.patch_namespaced_pod_status(  # type: ignore[call-arg]  # the stub lacks _content_type
        "p",
        "default",
        {"metadata": {"annotations": {NETWORK_STATUS: fits}}},
        _content_type="application/merge-patch+json",
    )

    with pytest.raises(ApiException) as raised:
        await core.patch_namespaced_pod_status(  # type: ignore[call-arg]  # the stub lacks _content_type
            "p",
            "default",
            {"metadata": {"annotations": {"a": "b"}}},
            _content_type="application/merge-patch+json",
        )

    assert raised.value.status == 422
    assert raised.value.body is not None
    status = json.loads(raised.value.body)
    assert status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "metadata.annotations"
    assert "Too long" in status["message"]
    assert "a" not in emulator.get_pod("default", "p")["metadata"]["annotations"]


async def test_creating_with_annotations_over_256_kib_answers_422(core: client.CoreV1Api) -> None:
    manifest = pod_manifest("p")
    manifest["metadata"]["annotations"] = {"big": "x" * ANNOTATIONS_LIMIT}

    with pytest.raises(ApiException) as raised:
        await core.create_namespaced_pod("default", manifest)  # type: ignore[arg-type]  # the stub wants a V1Pod

    assert raised.value.status == 422
