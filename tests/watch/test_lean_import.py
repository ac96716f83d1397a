"""The daemon's process imports kubernetes_asyncio without the generated models, and still works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.sandbox.processes import EmulatorProcess, child_environment

pytestmark = pytest.mark.slow  # starts daemon or emulator processes

PROBE = """
import asyncio, json, resource, sys
from app.watch import client
from app.watch.settings import WatchSettings

async def main():
    access = client.find_access(kubeconfig=sys.argv[1], environ={})
    api = await client.connect(access, settings=WatchSettings())
    try:
        namespaces = await api.get("/api/v1/namespaces")
    finally:
        await api.close()
    loaded = sorted(m for m in sys.modules if m.startswith("kubernetes_asyncio.client.models."))
    print(json.dumps({"namespaces": [n["metadata"]["name"] for n in namespaces["items"]], "models": loaded}))

asyncio.run(main())
"""


def test_connecting_loads_no_model_modules_and_talks_to_the_api(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    server = EmulatorProcess(kubeconfig=kubeconfig, log=tmp_path / "kubeapi.log")
    server.start()
    try:
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
    answer = json.loads(probe.stdout)
    assert "default" in answer["namespaces"]
    assert answer["models"] == []
    assert "lean import of kubernetes_asyncio failed" not in probe.stderr
