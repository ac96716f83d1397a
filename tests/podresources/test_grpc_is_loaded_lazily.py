"""grpc and protobuf cost about 20 MiB of RSS: the daemon loads them only for a first real lookup."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import child_environment


def modules_after(script: str) -> set[str]:
    """The top-level-and-below module names a fresh interpreter has after running ``script``."""
    probe = f"{script}\nimport sys\nprint('\\n'.join(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=child_environment(),
    )
    return set(done.stdout.split())


def heavy(modules: set[str]) -> list[str]:
    return sorted(
        name for name in modules if name.split(".")[0] == "grpc" or name.startswith("google.protobuf")
    )


def test_importing_and_building_the_client_loads_no_grpc() -> None:
    modules = modules_after(
        "import app.attach.devices, app.watch.podresources\n"
        "app.watch.podresources.KubeletPodResources('/nowhere/kubelet.sock')"
    )

    assert "app.watch.podresources" in modules
    assert heavy(modules) == []


def test_a_lookup_that_finds_no_socket_loads_no_grpc() -> None:
    modules = modules_after(
        "import asyncio\n"
        "from app.attach.devices import DeviceLookupError\n"
        "from app.watch.podresources import KubeletPodResources\n"
        "async def main():\n"
        "    source = KubeletPodResources('/nowhere/kubelet.sock')\n"
        "    try:\n"
        "        await source.device_ids(namespace='n', pod='p', resource='r')\n"
        "    except DeviceLookupError:\n"
        "        pass\n"
        "asyncio.run(main())"
    )

    assert heavy(modules) == []
