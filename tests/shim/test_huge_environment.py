"""A runtime whose environment, escaped into the request, is larger than the daemon takes.

The shim sends the whole environment, as upstream's does; escaped as JSON, a non-ASCII character
takes six bytes, so an environment well within the kernel's limits can make a body over the
daemon's 4 MiB, refused (code 6) at every call: such a runtime's DELs would never finish.
"""

from __future__ import annotations

from pathlib import Path

from app.daemon.server import MAX_BODY_BYTES as DAEMON_MAX_BODY_BYTES
from app.shim import shim as shim_module
from tests.shim.helpers import BASE_ENV, StubDaemon, conf_bytes, run_shim

BIG_VALUE = "é" * 60_000
"""120,000 bytes (under the kernel's 128 KiB per string), 360,000 once escaped as ``\\u00e9``."""


def test_the_shim_knows_the_daemons_body_limit() -> None:
    assert shim_module.MAX_BODY_BYTES == DAEMON_MAX_BODY_BYTES


def test_an_environment_too_large_for_the_daemon_is_sent_without_its_other_variables(
    launcher: Path, daemon: StubDaemon
) -> None:
    huge = {f"RUNTIME_NOISE_{n}": BIG_VALUE for n in range(13)}  # 1.56 MB, 4.7 MB escaped

    run = run_shim(launcher, conf_bytes(daemon.socket_dir), env={"CNI_COMMAND": "DEL", **huge})

    assert (run.returncode, run.stdout, run.stderr) == (0, b"", b"")
    [request] = daemon.requests
    assert len(request.body) <= DAEMON_MAX_BODY_BYTES
    expected = {key: value for key, value in BASE_ENV.items() if key.startswith("CNI_")}
    assert request.env() == {**expected, "CNI_COMMAND": "DEL"}


def test_an_environment_the_daemon_takes_is_sent_whole(launcher: Path, daemon: StubDaemon) -> None:
    run_shim(launcher, conf_bytes(daemon.socket_dir), env={"CNI_COMMAND": "DEL", "RUNTIME_NOISE": BIG_VALUE})

    [request] = daemon.requests
    assert request.env()["RUNTIME_NOISE"] == BIG_VALUE
    assert request.env()["PATH"] == BASE_ENV["PATH"]
