"""The shim loads no module beyond a handful of C extensions: its start-up cost is on every pod start.

Each scenario runs the shim module under ``python -I -S`` and compares ``sys.modules`` afterwards with
a bare ``python -I -S``'s, so indirect imports (a stdlib module importing another, a C extension
importing Python code on an error path) are caught too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shim.helpers import BASE_ENV, StubDaemon, conf_bytes, http_reply, json_reply

SHIM_EXTRA_MODULES = {"_json", "_socket", "binascii", "multus_shim_impl"}

PROBE = """
import sys
sys.path.insert(0, {impl_dir!r})
import multus_shim_impl
multus_shim_impl.run()
sys.stderr.write(repr(sorted(sys.modules)))
"""


def bare_interpreter_modules() -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import sys; sys.stderr.write(repr(sorted(sys.modules)))"],
        capture_output=True,
        env=BASE_ENV,
        check=True,
    )
    return set(ast.literal_eval(proc.stderr.decode()))


def shim_modules(launcher: Path, stdin: bytes, env: dict[str, str]) -> set[str]:
    code = PROBE.format(impl_dir=str(launcher.parent / ".multus-shim.d"))
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        input=stdin,
        capture_output=True,
        env={**BASE_ENV, **env},
        timeout=20,
        check=True,
    )
    return set(ast.literal_eval(proc.stderr.decode()))


@pytest.fixture
def replying_daemon(daemon: StubDaemon) -> StubDaemon:
    daemon.replies = [
        json_reply(200, {"Result": {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/8"}]}})
    ]
    return daemon


SCENARIOS = {
    "add-converted-to-0.2.0": (b"", {"CNI_COMMAND": "ADD"}, "0.2.0"),
    "add-converted-to-1.0.0": (b"", {"CNI_COMMAND": "ADD"}, "1.0.0"),
    "del": (b"", {"CNI_COMMAND": "DEL"}, "1.1.0"),
    "version": (b"", {"CNI_COMMAND": "VERSION"}, None),
    "syntax-error-in-conf": (b'{"name": "x", "a": "\\q"}', {"CNI_COMMAND": "ADD"}, None),
    "unterminated-conf": (b'{"name": "x', {"CNI_COMMAND": "ADD"}, None),
    "invalid-env": (b"", {"CNI_IFNAME": "a/b"}, None),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_shim_loads_only_its_c_extensions(launcher: Path, replying_daemon: StubDaemon, scenario: str) -> None:
    stdin, env, version = SCENARIOS[scenario]
    if version is not None:
        stdin = conf_bytes(replying_daemon.socket_dir, cniVersion=version)
    loaded = shim_modules(launcher, stdin, env)
    assert loaded - bare_interpreter_modules() == SHIM_EXTRA_MODULES
    assert "json.decoder" not in loaded


def test_daemon_error_answers_load_nothing_more(launcher: Path, daemon: StubDaemon) -> None:
    daemon.replies = [http_reply(400, b'{"code": 7, "msg": "bad", "details": "\\u00e9"}')]
    loaded = shim_modules(launcher, conf_bytes(daemon.socket_dir), {"CNI_COMMAND": "ADD"})
    assert loaded - bare_interpreter_modules() == SHIM_EXTRA_MODULES


def test_the_installed_launcher_imports_nothing_else(launcher: Path, daemon: StubDaemon) -> None:
    """The real launcher, exit path included, as -X importtime reports what goes through the import
    system: the shim module alone, since its C modules are loaded without it (test_c_module_loading)."""
    daemon.replies = [json_reply(200, {"Result": {"ips": [{"address": "fd00::1/64"}]}})]

    def imported(args: list[str], stdin: bytes) -> set[str]:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-X", "importtime", *args],
            input=stdin,
            capture_output=True,
            env=BASE_ENV,
            timeout=20,
            check=False,
        )
        return set(
            re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", proc.stderr.decode(), re.MULTILINE)
        )

    baseline = imported(["-c", "pass"], b"")
    assert imported([str(launcher)], conf_bytes(daemon.socket_dir)) - baseline == {"multus_shim_impl"}
    assert len(daemon.requests) == 1
