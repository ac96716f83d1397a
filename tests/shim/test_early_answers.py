"""A daemon that answers before it has read the whole request, and closes the connection.

A daemon may refuse a request by its headers alone: ours answers a body larger than it takes
(``MAX_BODY_BYTES``) with code 6 before reading it (aiohttp then reads and drops the rest for up to
10 s before it closes; an HTTP server that closes at once, as Go's does past 256 KiB unread, leaves
the rest unread). The shim, still sending, meets a broken pipe; the answer was there to read all
the same: a unix socket keeps what the peer sent before it closed. It was reported as a lost
connection (code 11: an ADD retried for ever for a conf the daemon will never take, a DEL spooled
although the daemon answered it). Only when no whole answer came is it the lost connection.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.shim.helpers import StubDaemon, conf_bytes, http_reply, json_reply, run_shim

PADDING = "x" * (2 * 1024 * 1024)
"""Far more than a unix socket buffers, and less than the daemon takes: the shim is still sending
when the stub answers and closes."""
REFUSAL = {"code": 6, "msg": "request body is larger than 4194304 bytes"}


@pytest.mark.parametrize("framing", ["length", "eof"])
def test_an_answer_sent_before_the_request_was_read_whole_is_the_answer(
    launcher: Path, daemon: StubDaemon, framing: str
) -> None:
    daemon.read_body = False
    daemon.replies = [http_reply(400, json.dumps(REFUSAL).encode(), framing=framing)]

    run = run_shim(launcher, conf_bytes(daemon.socket_dir, padding=PADDING))

    assert run.error() == REFUSAL


def test_a_del_answered_before_it_was_read_whole_is_not_spooled(
    launcher: Path, daemon: StubDaemon, tmp_path: Path
) -> None:
    daemon.read_body = False
    daemon.replies = [http_reply(200)]
    spool = tmp_path / "spool"
    conf = conf_bytes(daemon.socket_dir, padding=PADDING, spoolDir=str(spool))

    run = run_shim(launcher, conf, env={"CNI_COMMAND": "DEL"})

    assert (run.returncode, run.stdout, run.stderr) == (0, b"", b"")
    assert not spool.exists()


def test_a_connection_closed_unanswered_while_sending_is_still_code_11_and_a_del_spooled(
    launcher: Path, daemon: StubDaemon, tmp_path: Path
) -> None:
    daemon.read_body = False
    daemon.replies = [b""]
    spool = tmp_path / "spool"
    conf = conf_bytes(daemon.socket_dir, padding=PADDING, spoolDir=str(spool))

    add = run_shim(launcher, conf)
    deletion = run_shim(launcher, conf, env={"CNI_COMMAND": "DEL"})

    error = add.error()
    assert error["code"] == 11
    assert str(error["msg"]).startswith(f"lost the connection to multus daemon at {daemon.path}: ")
    assert (deletion.returncode, deletion.stdout, deletion.stderr) == (0, b"", b"")
    assert len(list(spool.glob("del-*.json"))) == 1


def test_an_answer_cut_off_while_sending_is_code_11(launcher: Path, daemon: StubDaemon) -> None:
    daemon.read_body = False
    whole = json_reply(400, REFUSAL)
    daemon.replies = [whole[: len(whole) - 5]]

    run = run_shim(launcher, conf_bytes(daemon.socket_dir, padding=PADDING))

    assert run.error()["code"] == 11
