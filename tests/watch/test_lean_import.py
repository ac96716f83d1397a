"""The daemon's process imports kubernetes_asyncio without the generated models and without the
dependencies only unused paths need (urllib3, dateutil, multiprocessing, PyYAML for a JSON
kubeconfig), and still works: the deferred names load the real modules when used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.sandbox.processes import EmulatorProcess, child_environment

pytestmark = pytest.mark.slow  # starts daemon or emulator processes

PROBE = """
import asyncio, json, resource, sys
from app.watch import client
from app.watch.settings import WatchSettings

DEFERRED = ("urllib3", "yaml", "dateutil", "multiprocessing")

def loaded(prefixes):
    return sorted(m for m in sys.modules if m.split(".")[0] in prefixes)

async def main():
    access = client.find_access(kubeconfig=sys.argv[1], environ={})
    api = await client.connect(access, settings=WatchSettings())
    try:
        namespaces = await api.get("/api/v1/namespaces")
    finally:
        await api.close()
    models = sorted(m for m in sys.modules if m.startswith("kubernetes_asyncio.client.models."))
    deferred = loaded(DEFERRED)
    api_client = sys.modules["kubernetes_asyncio.client.api_client"]
    configuration = sys.modules["kubernetes_asyncio.client.configuration"]
    used = {
        "date": api_client.parse("2024-05-01T10:00:00Z").isoformat(),
        "auth": configuration.urllib3.util.make_headers(basic_auth="a:b")["authorization"],
    }
    print(json.dumps({
        "namespaces": [n["metadata"]["name"] for n in namespaces["items"]],
        "models": models,
        "deferred": deferred,
        "used": used,
        "after_use": loaded(("urllib3", "dateutil")),
    }))

asyncio.run(main())
"""


def _connect_with(tmp_path: Path, *, as_yaml: bool) -> tuple[dict[str, Any], str]:
    kubeconfig = tmp_path / "kubeconfig"
    server = EmulatorProcess(kubeconfig=kubeconfig, log=tmp_path / "kubeapi.log")
    server.start()
    try:
        if as_yaml:
            kubeconfig.write_text(yaml.safe_dump(json.loads(kubeconfig.read_text())))
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, str(kubeconfig)],
            capture_output=True,
            text=True,
            env=child_environment(),
            timeout=60,
        )
    finally:
        server.stop()
    assert probe.returncode == 0, probe.stderr
    return json.loads(probe.stdout), probe.stderr


def test_connecting_loads_no_model_modules_and_talks_to_the_api(tmp_path: Path) -> None:
    answer, stderr = _connect_with(tmp_path, as_yaml=False)
    assert "default" in answer["namespaces"]
    assert answer["models"] == []
    assert "lean import of kubernetes_asyncio failed" not in stderr


def test_a_json_kubeconfig_loads_none_of_the_deferred_dependencies(tmp_path: Path) -> None:
    answer, _ = _connect_with(tmp_path, as_yaml=False)
    assert answer["deferred"] == []


def test_deferred_names_load_the_real_modules_when_used(tmp_path: Path) -> None:
    answer, _ = _connect_with(tmp_path, as_yaml=False)
    assert answer["used"] == {"date": "2024-05-01T10:00:00+00:00", "auth": "Basic YTpi"}
    assert "urllib3" in answer["after_use"]
    assert "dateutil.parser" in answer["after_use"]


def test_a_yaml_kubeconfig_is_read_with_pyyaml(tmp_path: Path) -> None:
    answer, _ = _connect_with(tmp_path, as_yaml=True)
    assert "default" in answer["namespaces"]
    assert "yaml" in answer["deferred"]
