"""The daemon's process imports kubernetes_asyncio without the generated models, and still works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import child_environment

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
    server = subprocess.Popen(
        [sys.executable, "-m", "app.sandbox.kubeapi", "--port", "0", "--kubeconfig-out", str(kubeconfig)],
        stdout=subprocess.PIPE,
        env=child_environment(),
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, str(kubeconfig)],
            capture_output=True,
            text=True,
            env=child_environment(),
            timeout=60,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert probe.returncode == 0, probe.stderr
    answer = json.loads(probe.stdout)
    assert "default" in answer["namespaces"]
    assert answer["models"] == []
    assert "lean import of kubernetes_asyncio failed" not in probe.stderr
