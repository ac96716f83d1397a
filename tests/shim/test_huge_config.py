"""A conf on stdin whose request is larger than the daemon takes (4 MiB once in base64).

The runtime sends a DEL the conf its ADD got, at every retry: were the request refused for its
size (code 6), or spooled at that size (the daemon rejects such an entry unreplayed), the DEL would
never finish (invariant 5b) or be lost (invariant 7). A DEL goes without its conf instead, which
the daemon answers from its checkpoint with its own configuration.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from app.shim.shim import MAX_BODY_BYTES
from tests.shim.helpers import BASE_ENV, StubDaemon, conf_bytes, run_shim

PADDING = "x" * (MAX_BODY_BYTES * 3 // 4 + 1024)
"""Stdin bytes whose base64 alone passes the daemon's bound."""

CNI_ENV = {key: value for key, value in BASE_ENV.items() if key.startswith("CNI_")}


def test_a_del_whose_conf_the_daemon_would_refuse_for_its_size_is_sent_without_it(
    launcher: Path, daemon: StubDaemon
) -> None:
    run = run_shim(launcher, conf_bytes(daemon.socket_dir, padding=PADDING), env={"CNI_COMMAND": "DEL"})

    assert (run.returncode, run.stdout, run.stderr) == (0, b"", b"")
    [request] = daemon.requests
    assert len(request.body) <= MAX_BODY_BYTES
    assert request.config() == b""
    assert request.env() == {**CNI_ENV, "CNI_COMMAND": "DEL"}


def test_such_a_del_the_daemon_cannot_take_is_spooled_within_the_size_the_daemon_replays(
    launcher: Path, socket_dir: Path, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    conf = conf_bytes(socket_dir, padding=PADDING, spoolDir=str(spool))

    run = run_shim(launcher, conf, env={"CNI_COMMAND": "DEL", "MULTUS_SHIM_WAIT_SECONDS": "0"})

    assert (run.returncode, run.stdout, run.stderr) == (0, b"", b"")
    [entry] = spool.glob("del-*.json")
    assert entry.stat().st_size <= MAX_BODY_BYTES
    body = json.loads(entry.read_bytes())
    assert base64.b64decode(body["config"]) == b""
    assert body["env"]["CNI_CONTAINERID"] == BASE_ENV["CNI_CONTAINERID"]


def test_an_add_with_such_a_conf_is_sent_whole_for_the_daemon_to_refuse(
    launcher: Path, daemon: StubDaemon
) -> None:
    conf = conf_bytes(daemon.socket_dir, padding=PADDING)

    run_shim(launcher, conf)

    [request] = daemon.requests
    assert request.config() == conf
