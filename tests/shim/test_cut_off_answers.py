"""Answers the daemon stops sending halfway (killed, or restarted, while it wrote them).

However it framed the answer, one that ends early is code 11, so that the runtime retries, and a
DEL is spooled and succeeds (invariant 7): the daemon may or may not have run it, and a DEL may be
repeated. Never code 999, which says the plugin itself failed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.shim.helpers import StubDaemon, conf_bytes, http_reply, run_shim

RESULT = json.dumps({"Result": {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/8"}]}}).encode()
CHUNKED = http_reply(200, RESULT, framing="chunked")

CUT_OFF_CHUNKED = {
    "in-a-chunk": CHUNKED[: CHUNKED.index(b"\r\n\r\n") + 4 + 10],
    "before-the-last-chunk": CHUNKED[: -len(b"0\r\n\r\n")],
    "in-a-size-line": CHUNKED[: -len(b"\r\n\r\n")],
}


@pytest.mark.parametrize("reply", list(CUT_OFF_CHUNKED.values()), ids=list(CUT_OFF_CHUNKED))
def test_a_chunked_answer_cut_off_is_code_11(launcher: Path, daemon: StubDaemon, reply: bytes) -> None:
    """It was code 999, "malformed chunked body"."""
    daemon.replies = [reply]

    run = run_shim(launcher, conf_bytes(daemon.socket_dir))

    assert run.error() == {
        "code": 11,
        "msg": f"multus daemon at {daemon.path} closed the connection in the middle of its answer",
    }


@pytest.mark.parametrize("reply", list(CUT_OFF_CHUNKED.values()), ids=list(CUT_OFF_CHUNKED))
def test_a_del_whose_chunked_answer_is_cut_off_is_spooled_and_succeeds(
    launcher: Path, daemon: StubDaemon, tmp_path: Path, reply: bytes
) -> None:
    daemon.replies = [reply]
    spool = tmp_path / "spool"

    run = run_shim(launcher, conf_bytes(daemon.socket_dir, spoolDir=str(spool)), env={"CNI_COMMAND": "DEL"})

    assert (run.returncode, run.stdout, run.stderr) == (0, b"", b"")
    assert len(list(spool.glob("del-*.json"))) == 1


def test_a_chunk_size_that_is_no_number_is_still_a_malformed_answer(
    launcher: Path, daemon: StubDaemon
) -> None:
    head = CHUNKED[: CHUNKED.index(b"\r\n\r\n") + 4]
    daemon.replies = [head + b"zz\r\n" + RESULT + b"\r\n0\r\n\r\n"]

    run = run_shim(launcher, conf_bytes(daemon.socket_dir))

    assert run.error() == {"code": 999, "msg": f"malformed chunked body from multus daemon at {daemon.path}"}
