"""The emulator as its own process: ``python -m app.sandbox.kubeapi``, its URL line and its kubeconfig."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from tests.sandbox.manifests import nad_manifest, pod_manifest

pytestmark = pytest.mark.slow  # starts daemon or emulator processes

REPO = Path(__file__).resolve().parents[2]


async def test_separate_process_prints_its_url_and_writes_a_usable_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps([pod_manifest("seeded", node="node-a"), nad_manifest("macvlan-conf")]))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.sandbox.kubeapi",
        "--port",
        "0",
        "--kubeconfig-out",
        str(kubeconfig),
        "--seed",
        str(seed),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            url = (await process.stdout.readline()).decode().strip()
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
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            _, stderr = await process.communicate()

    assert url.startswith("http://127.0.0.1:")
    assert configuration.host == url
    assert configuration.api_key["BearerToken"] == "Bearer multus-py-emulator-token"
    assert [pod.metadata.name for pod in pods.items] == ["seeded"]
    assert [nad["metadata"]["name"] for nad in nads["items"]] == ["macvlan-conf"]
    assert process.returncode == 0, stderr.decode()
    assert kubeconfig.stat().st_mode & 0o777 == 0o600
