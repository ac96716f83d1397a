"""The emulator as its own process: ``python -m app.sandbox.kubeapi``, its URL line and its kubeconfig."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from app.sandbox.processes import EmulatorProcess
from tests.sandbox.manifests import nad_manifest, pod_manifest

pytestmark = pytest.mark.slow  # starts daemon or emulator processes


async def test_separate_process_prints_its_url_and_writes_a_usable_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps([pod_manifest("seeded", node="node-a"), nad_manifest("macvlan-conf")]))
    emulator = EmulatorProcess(
        kubeconfig=kubeconfig, log=tmp_path / "kubeapi.log", arguments=("--seed", str(seed))
    )
    try:
        async with asyncio.timeout(10):
            url = await asyncio.to_thread(emulator.start)
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        async with client.ApiClient(configuration) as api:
            pods = await client.CoreV1Api(api).list_pod_for_all_namespaces(
                field_selector="spec.nodeName=node-a"
            )
            nads = await client.CustomObjectsApi(api).list_cluster_custom_object(
                "k8s.cni.cncf.io", "v1", "network-attachment-definitions"
            )
    finally:
        async with asyncio.timeout(15):
            returncode = await asyncio.to_thread(emulator.stop)  # SIGTERM

    assert url.startswith("http://127.0.0.1:")
    assert configuration.host == url
    assert configuration.api_key["BearerToken"] == "Bearer multus-py-emulator-token"
    assert [pod.metadata.name for pod in pods.items] == ["seeded"]
    assert [nad["metadata"]["name"] for nad in nads["items"]] == ["macvlan-conf"]
    assert returncode == 0, emulator.log.read_text()
    assert kubeconfig.stat().st_mode & 0o777 == 0o600
