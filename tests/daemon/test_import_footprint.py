"""The daemon imports aiohttp without two things it builds at import and the daemon never uses:
frozenlist's C++ extension (it would map libstdc++, about 1 MiB resident, for lists built at start-up
and hardly touched after) and the system's CA bundle parsed into aiohttp's two default TLS contexts
(about 90 ms of CPU per start, 1.8 MiB). The switches do not outlive the import, so no plugin inherits
them and a TLS context built afterwards (the Kubernetes client's) gets the system's CAs."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from app.daemon import main
from app.sandbox.processes import child_environment
from tests.e2e.conftest import Cluster

PROBE = """
import json, os, ssl, sys
from app.daemon.main import IMPORT_SWITCHES, _lean_imports
with _lean_imports():
    from app.daemon.startup import Daemon
import aiohttp.connector
import frozenlist
maps = open("/proc/self/maps").read()
print(json.dumps({
    "list_module": frozenlist.FrozenList.__module__,
    "libstdcxx_mapped": "libstdc++" in maps,
    "switches_left": [name for name in IMPORT_SWITCHES if name in os.environ],
    "default_context_cas": aiohttp.connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"],
    "later_context_cas": ssl.create_default_context().cert_store_stats()["x509_ca"],
}))
"""


def test_the_daemons_imports_skip_libstdcxx_and_the_ca_bundle_and_leave_no_switch() -> None:
    env = child_environment()
    for name in main.IMPORT_SWITCHES:
        env.pop(name, None)
    system_cas = ssl.create_default_context().cert_store_stats()["x509_ca"]
    assert system_cas > 0  # the machine has a CA bundle: there is something to skip
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == {
        "list_module": "frozenlist",
        "libstdcxx_mapped": False,
        "switches_left": [],
        "default_context_cas": 0,
        "later_context_cas": system_cas,
    }


def test_switches_set_by_the_operator_are_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundle = str(tmp_path / "operator-bundle.pem")
    monkeypatch.setenv("FROZENLIST_NO_EXTENSIONS", "")
    monkeypatch.setenv("SSL_CERT_FILE", bundle)
    with main._lean_imports():
        assert os.environ["FROZENLIST_NO_EXTENSIONS"] == "1"
        assert os.environ["SSL_CERT_FILE"] == os.devnull
    assert os.environ["FROZENLIST_NO_EXTENSIONS"] == ""
    assert os.environ["SSL_CERT_FILE"] == bundle


@pytest.mark.slow  # starts a daemon process
@pytest.mark.usefixtures("premigrated_state")  # the first start is not what this is about
def test_a_running_daemon_maps_no_libstdcxx(started: Callable[..., Cluster]) -> None:
    cluster = started()
    assert cluster.daemon is not None
    assert "libstdc++" not in Path(f"/proc/{cluster.daemon.pid}/maps").read_text()
