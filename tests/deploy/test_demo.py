"""The README's first command: ``./dev.sh demo`` (``python -m app.demo``), crash and recovery included,
runs to its end and leaves the machine as it found it (no netns, link, nat rule or directory of it)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import child_environment

pytestmark = pytest.mark.slow  # starts the emulator and daemon processes


DEMO_PREFIXES = ("mdemo", "mdv", "multus-demo-")
"""How the demo names its bridges, veths and netns (``app.demo``): only those are compared, so
another process's links coming and going cannot fail the test."""


def _demos(names: set[str]) -> set[str]:
    return {name for name in names if name.startswith(DEMO_PREFIXES)}


def _machine() -> tuple[set[str], set[str], set[str]]:
    netns = set(
        subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    )
    links = {
        line.split(":")[1].strip().split("@")[0]
        for line in subprocess.run(
            ["ip", "-o", "link"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    }
    runs = {path.name for path in Path(tempfile.gettempdir()).glob("multus-demo-*")}
    return _demos(netns), _demos(links), _demos(runs)


def test_the_demo_runs_to_its_end_and_cleans_up_after_itself() -> None:
    before = _machine()

    demo = subprocess.run(
        [sys.executable, "-m", "app.demo", "--crash"],
        capture_output=True,
        text=True,
        env=child_environment(),
        timeout=240,
        check=False,
    )

    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "done: the demo cleaned up after itself" in demo.stdout
    assert "net1" in demo.stdout
    assert "recovery" in demo.stdout.lower()
    assert _machine() == before
