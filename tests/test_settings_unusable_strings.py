"""daemon-config.json strings no system call takes (a ``\\u0000`` or a lone ``\\ud800`` escape) are
refused at start, naming the key. A ``socketDir``, ``stateDir``, ``logFile``, ``spoolDir`` or
``deviceInfoDir`` holding one made the daemon die with a ValueError or UnicodeEncodeError
traceback (exit 1, the key unnamed); a ``binDir``, ``confDir`` or ``cniDir`` holding one was taken,
and merged over every request, each of which the daemon then refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import settings

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "key",
    [
        "socketDir",
        "stateDir",
        "logFile",
        "spoolDir",
        "deviceInfoDir",
        "binDir",
        "confDir",
        "readinessindicatorfile",
    ],
)
@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800"], ids=["nul", "surrogate"])
def test_a_path_holding_what_no_system_call_takes_is_refused_naming_its_key(
    tmp_path: Path, key: str, escape: str
) -> None:
    config = tmp_path / "daemon-config.json"
    config.write_text(f'{{"{key}": "/var/lib/x{escape}y"}}')

    with pytest.raises(settings.SettingsError, match=f"key '{key}' must hold no NUL character nor lone"):
        settings.load(config)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('{"defaultNetworks": ["a", "b\\u0000"]}', "'defaultNetworks[1]'"),
        ('{"watch": {"requestTimeout": 1, "x\\ud800": 1}}', r"'watch.x\ud800'"),
        ('{"logOptions\\u0000": {}}', r"'logOptions\x00'"),
    ],
    ids=["in-a-list", "a-nested-key", "a-top-level-key"],
)
def test_anywhere_in_the_document_the_key_is_named(tmp_path: Path, text: str, named: str) -> None:
    config = tmp_path / "daemon-config.json"
    config.write_text(text)

    with pytest.raises(settings.SettingsError) as refused:
        settings.load(config)

    assert named in str(refused.value)


def test_the_daemon_exits_1_naming_the_key_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "daemon-config.json"
    config.write_text(
        f'{{"socketDir": "{tmp_path}/run", "stateDir": "{tmp_path}/state\\u0000x", "logToStderr": true}}'
    )

    done = subprocess.run(
        [sys.executable, "-m", "app.daemon.main", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        timeout=60,
    )

    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "daemon config key 'stateDir' must hold no NUL character" in done.stderr
