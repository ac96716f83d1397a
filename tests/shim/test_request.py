"""What the shim sends: one HTTP/1.1 POST /cni per call, carrying stdin and the whole environment."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from tests.shim.helpers import BASE_ENV, StubDaemon, conf_bytes, http_reply, json_reply, run_shim


def test_request_bytes_are_exactly_one_post_to_cni(launcher: Path, daemon: StubDaemon) -> None:
    stdin = conf_bytes(daemon.socket_dir)
    run_shim(launcher, stdin, env={"CNI_COMMAND": "DEL"}).success()

    [request] = daemon.requests
    body = json.dumps(
        {
            "env": {**dict(sorted({**BASE_ENV, "CNI_COMMAND": "DEL"}.items()))},
            "config": base64.b64encode(stdin).decode(),
        },
        separators=(",", ":"),
    ).encode()
    assert request.raw == (
        b"POST /cni HTTP/1.1\r\n"
        b"Host: dummy\r\n"
        b"User-Agent: multus-shim\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Connection: close\r\n"
        b"\r\n" + body
    )


def test_config_is_the_raw_stdin_bytes_in_base64(launcher: Path, daemon: StubDaemon) -> None:
    # Odd spacing, key order, escapes, non-ASCII and an unknown key all survive byte for byte.
    stdin = (
        b'\n\t {  "type":"multus-shim" ,"name" : "net\\u002d1", "cniVersion":"1.1.0",\r\n'
        b'"daemonSocketDir": "'
        + str(daemon.socket_dir).encode()
        + b'", "x": "\xc3\xa9\\ud800", "n": 1e400 }  \n'
    )
    run_shim(launcher, stdin, env={"CNI_COMMAND": "CHECK"}).success()
    assert daemon.requests[0].config() == stdin


def test_env_is_the_whole_environment_sorted_with_trimmed_keys(launcher: Path, daemon: StubDaemon) -> None:
    extra = {
        "  PADDED_KEY\t": "value kept as is  ",
        "UNRELATED": "x=y;z",
        "EMPTY": "",
        "ÜNICODE": "välue\u2028<&>",
    }
    run_shim(launcher, conf_bytes(daemon.socket_dir), env={**extra, "CNI_COMMAND": "DEL"}).success()

    request = daemon.requests[0]
    expected = {
        **BASE_ENV,
        "CNI_COMMAND": "DEL",
        "PADDED_KEY": "value kept as is  ",
        "UNRELATED": "x=y;z",
        "EMPTY": "",
        "ÜNICODE": "välue\u2028<&>",
    }
    assert request.env() == expected
    assert list(request.env()) == sorted(expected)
    assert list(request.json()) == ["env", "config"]


def test_env_values_that_are_not_utf8_arrive_with_replacement_characters(
    launcher: Path, daemon: StubDaemon
) -> None:
    env = {k.encode(): v.encode() for k, v in BASE_ENV.items()} | {b"CNI_COMMAND": b"DEL", b"RAW": b"a\xffb"}
    proc = subprocess.run(
        [str(launcher)],
        input=conf_bytes(daemon.socket_dir),
        env=env,
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert daemon.requests[0].env()["RAW"] == "a\ufffdb"


@pytest.mark.parametrize("suffix", ["", "/", "//", "/./", "/sub/.."])
def test_socket_path_is_joined_like_go_filepath_join(launcher: Path, daemon: StubDaemon, suffix: str) -> None:
    run_shim(launcher, conf_bytes(f"{daemon.socket_dir}{suffix}"), env={"CNI_COMMAND": "DEL"}).success()
    assert len(daemon.requests) == 1


def test_each_call_uses_a_new_connection(launcher: Path, daemon: StubDaemon) -> None:
    daemon.replies = [json_reply(200, {"Result": {"ips": [{"address": "10.0.0.1/24"}]}}), http_reply(200)]
    for command in ("ADD", "CHECK", "DEL"):
        run_shim(launcher, conf_bytes(daemon.socket_dir), env={"CNI_COMMAND": command}).success()
    # The stub records one request per accepted connection.
    assert [request.env()["CNI_COMMAND"] for request in daemon.requests] == ["ADD", "CHECK", "DEL"]
