"""The daemon imports aiohttp with frozenlist's pure-Python lists: its C++ extension would map
libstdc++ (about 1 MiB resident) for lists that are built at start-up and hardly touched after; the
switch does not outlive the import, so no plugin inherits it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from app.daemon import main
from app.sandbox.processes import child_environment
from tests.e2e.conftest import Cluster

PROBE = """
import json, os, sys
from app.daemon.main import FROZENLIST_SWITCH, _pure_python_frozenlist
with _pure_python_frozenlist():
    from app.daemon.startup import Daemon
import frozenlist
maps = open("/proc/self/maps").read()
print(json.dumps({
    "list_module": frozenlist.FrozenList.__module__,
    "libstdcxx_mapped": "libstdc++" in maps,
    "switch_left": FROZENLIST_SWITCH in os.environ,
}))
"""


def test_the_daemons_imports_load_the_pure_python_frozenlist_and_no_libstdcxx() -> None:
    env = child_environment()
    env.pop(main.FROZENLIST_SWITCH, None)
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == {
        "list_module": "frozenlist",
        "libstdcxx_mapped": False,
        "switch_left": False,
    }


def test_a_switch_set_by_the_operator_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(main.FROZENLIST_SWITCH, "")
    with main._pure_python_frozenlist():
        assert os.environ[main.FROZENLIST_SWITCH] == "1"
    assert os.environ[main.FROZENLIST_SWITCH] == ""


@pytest.mark.slow  # starts a daemon process
def test_a_running_daemon_maps_no_libstdcxx(started: Callable[..., Cluster]) -> None:
    cluster = started()
    assert cluster.daemon is not None
    assert "libstdc++" not in Path(f"/proc/{cluster.daemon.pid}/maps").read_text()
