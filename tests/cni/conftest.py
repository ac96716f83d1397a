"""Fixtures for app.cni: a plugin directory (recorder + reference plugins), its log, network namespaces.

Everything created here carries a short random suffix and is removed at teardown, also when a test
fails halfway: namespaces with ``ip netns del``, host links with ``ip link del``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cni import child
from app.cni.api import CniConfig
from app.cni.types import ContainerId, IfName, RuntimeConf
from tests.cni.support import Netns, RecorderLog, unique
from tests.conftest import CNI_PLUGIN_DIR

RECORDER_SOURCE = Path(__file__).resolve().parent.parent / "plugins" / "recorder.py"
REFERENCE_PLUGINS = ("bridge", "host-local", "static", "tuning", "ptp", "macvlan", "loopback")


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed on this machine")


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    recorder = directory / "recorder"
    recorder.write_text(f"#!{sys.executable} -IS\n{RECORDER_SOURCE.read_text()}")
    recorder.chmod(0o755)
    for name in REFERENCE_PLUGINS:
        (directory / name).symlink_to(Path(CNI_PLUGIN_DIR) / name)
    return directory


@pytest.fixture
def recorder_log(tmp_path: Path) -> RecorderLog:
    return RecorderLog(tmp_path / "recorder.jsonl")


@pytest.fixture
def cni(bin_dir: Path) -> CniConfig:
    return CniConfig(path=(str(bin_dir),), timeout=20.0)


@pytest.fixture
def rt(netns: Netns) -> RuntimeConf:
    return RuntimeConf(
        container_id=ContainerId(unique("ctr")),
        netns=netns.path,
        ifname=IfName("eth0"),
        args=(("IgnoreUnknown", "true"), ("K8S_POD_NAME", "pod-a")),
    )


@pytest.fixture
def netns() -> Iterator[Netns]:
    _require("ip")
    namespace = Netns(unique("mpy-"))
    subprocess.run(["ip", "netns", "add", namespace.name], check=True)
    try:
        yield namespace
    finally:
        subprocess.run(["ip", "netns", "del", namespace.name], check=False, capture_output=True)


@pytest.fixture
def host_links() -> Iterator[list[str]]:
    """Names of host interfaces a test creates (or makes a plugin create); deleted at teardown."""
    created: list[str] = []
    yield created
    for name in created:
        subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)


@pytest.fixture(autouse=True)
def quick_late_reaps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child no other child's exit reaps is reaped on a timer (``child.LATE_REAP_SECONDS``, a
    second): shortened here, where tests wait for processes they killed or gave up to be reaped."""
    monkeypatch.setattr(child, "LATE_REAP_SECONDS", 0.02)
