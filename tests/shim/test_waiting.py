"""How the shim waits for a daemon that is restarting, absent, not ready, or stuck.

The bounds are shortened through the shim's test knobs (MULTUS_SHIM_WAIT_SECONDS,
MULTUS_SHIM_TIMEOUT_SECONDS); no test asserts on elapsed time, only on what was answered and asked.
"Fails at once" is shown by a wait bound far beyond the run's timeout: an answer at all means no wait.
That a shim is retrying is seen in /proc: its only sleep is the pause between two attempts.
"""

from __future__ import annotations

import base64
import json
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from app.shim import shim as shim_module
from tests.shim.helpers import (
    BASE_ENV,
    HANG,
    ShimRun,
    StubDaemon,
    conf_bytes,
    http_reply,
    json_reply,
    read_request,
    run_shim,
)

T = TypeVar("T")

COMMANDS = ["ADD", "DEL", "CHECK", "GC", "STATUS"]
RESULT = {"Result": {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/8"}]}}


def write_marker(socket_dir: Path, until: float, *, pid: int = 4242) -> Path:
    """The marker a gracefully stopping daemon leaves in its socket dir."""
    marker = socket_dir / "multus.restarting"
    marker.write_text(json.dumps({"pid": pid, "until": until}))
    return marker


def wait_until_retrying(shim: subprocess.Popen[bytes]) -> None:
    """Until the shim sleeps between two connection attempts (its only sleep): it has failed once."""
    deadline = time.monotonic() + 60
    while Path(f"/proc/{shim.pid}/wchan").read_text() != "hrtimer_nanosleep":
        assert shim.poll() is None, shim.communicate()
        assert time.monotonic() < deadline, "the shim never retried"
        time.sleep(0.005)


def start_shim(launcher: Path, stdin: bytes, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The shim running in the background, its stdin already written and closed."""
    shim = subprocess.Popen(
        [str(launcher)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**BASE_ENV, **env},
    )
    assert shim.stdin is not None
    shim.stdin.write(stdin)
    shim.stdin.close()
    return shim


def read_outputs(shim: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """All the shim (started by ``start_shim``) writes to stdout and stderr, once it closes them."""
    assert shim.stdout is not None
    assert shim.stderr is not None
    return shim.stdout.read(), shim.stderr.read()


def run_past_a_retry(
    launcher: Path, stdin: bytes, env: dict[str, str], then: Callable[[], T]
) -> tuple[ShimRun, T]:
    """Run the shim until it has failed to reach a daemon once and sleeps before trying again, then
    call ``then`` (which brings a daemon) and let the shim finish; return the run and what ``then``
    returned. A shim still running when a check fails is killed."""
    shim = start_shim(launcher, stdin, env)
    try:
        wait_until_retrying(shim)
        value = then()
        stdout, stderr = read_outputs(shim)
        shim.wait(timeout=60)
    finally:
        if shim.poll() is None:
            shim.kill()
            shim.wait()
    return ShimRun(shim.returncode, stdout, stderr), value


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "DEL"])
def test_absent_daemon_without_a_marker_is_code_11_at_once_for_every_command_but_del(
    launcher: Path, socket_dir: Path, command: str
) -> None:
    # A wait bound far beyond the run's timeout: answering at all proves the shim did not wait.
    env = {"CNI_COMMAND": command, "MULTUS_SHIM_WAIT_SECONDS": "600"}
    assert run_shim(launcher, conf_bytes(socket_dir), env=env).error() == {
        "code": 11,
        "msg": f"multus daemon not reachable at {socket_dir}/multus.sock: No such file or directory",
    }


def test_stale_socket_without_a_listener_is_code_11_at_once(launcher: Path, socket_dir: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_dir / "multus.sock"))
    stale.close()  # the file stays, nobody listens: connect() is refused
    run = run_shim(launcher, conf_bytes(socket_dir), env={"MULTUS_SHIM_WAIT_SECONDS": "600"})
    assert run.error() == {
        "code": 11,
        "msg": f"multus daemon not reachable at {socket_dir}/multus.sock: Connection refused",
    }


@pytest.mark.parametrize("refused", [False, True], ids=["no-socket", "socket-refusing"])
def test_a_restart_marker_makes_the_shim_wait_for_the_new_daemon(
    launcher: Path, socket_dir: Path, refused: bool
) -> None:
    write_marker(socket_dir, time.time() + 120)
    if refused:
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(socket_dir / "multus.sock"))
        stale.close()
    daemon = StubDaemon(socket_dir, replies=[json_reply(200, RESULT)])

    def the_new_daemon_binds() -> None:
        (socket_dir / "multus.sock").unlink(missing_ok=True)
        daemon.start()

    try:
        run, _ = run_past_a_retry(
            launcher, conf_bytes(socket_dir), {"MULTUS_SHIM_WAIT_SECONDS": "0"}, the_new_daemon_binds
        )
    finally:
        daemon.stop()
    assert b'"address": "10.0.0.2/8"' in run.success()
    assert len(daemon.requests) == 1


def test_a_marker_removed_between_a_failed_connect_and_its_read_is_a_daemon_back(
    socket_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new daemon binds its socket, then removes the marker: a shim whose connect failed just
    before the bind reads no marker. It must connect once more, not answer code 11."""
    marker = write_marker(socket_dir, time.time() + 120)
    daemon = StubDaemon(socket_dir, replies=[json_reply(200, RESULT)])
    read_marker = shim_module.restart_marker_until

    def new_daemon_accepts_first(path: str) -> float:
        if marker.exists():  # what the new daemon does between the shim's connect and this read
            daemon.start()
            marker.unlink()
        return read_marker(path)

    monkeypatch.setattr(shim_module, "restart_marker_until", new_daemon_accepts_first)
    try:
        status, body = shim_module.call_daemon(str(daemon.path), shim_module.http_request(b"{}"), 60)
    finally:
        daemon.stop()
    assert status == 200
    assert json.loads(body) == RESULT
    assert len(daemon.requests) == 1


def test_no_daemon_and_no_marker_is_code_11_after_one_more_connect(
    socket_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []
    exchange = shim_module.exchange

    def counted(path: str, request: bytes, deadline: float) -> tuple[int, bytes]:
        attempts.append(path)
        return exchange(path, request, deadline)

    monkeypatch.setattr(shim_module, "exchange", counted)
    path = str(socket_dir / "multus.sock")
    with pytest.raises(shim_module.CniError) as raised:
        shim_module.call_daemon(path, shim_module.http_request(b"{}"), 60)
    assert raised.value.code == 11
    assert attempts == [path, path]


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"pid": 4242, "until": 1.0}),  # long past: a daemon that never came back
        "{not json",
        json.dumps({"pid": 4242}),
        json.dumps({"pid": 4242, "until": "soon"}),
        json.dumps([1, 2]),
    ],
    ids=["stale", "garbage", "no-until", "until-not-a-number", "not-an-object"],
)
def test_a_stale_or_unreadable_marker_is_code_11_at_once(
    launcher: Path, socket_dir: Path, content: str
) -> None:
    (socket_dir / "multus.restarting").write_text(content)
    run = run_shim(launcher, conf_bytes(socket_dir), env={"MULTUS_SHIM_WAIT_SECONDS": "600"})
    assert run.error() == {
        "code": 11,
        "msg": f"multus daemon not reachable at {socket_dir}/multus.sock: No such file or directory",
    }


def test_a_restarted_daemon_not_ready_yet_is_waited_for_while_the_marker_lives(
    launcher: Path, daemon: StubDaemon
) -> None:
    write_marker(daemon.socket_dir, time.time() + 120)
    not_ready = json_reply(503, {"code": 11, "msg": "multus daemon is not ready: start-up recovery"})
    daemon.replies = [not_ready, not_ready, json_reply(200, RESULT)]
    run = run_shim(launcher, conf_bytes(daemon.socket_dir), env={"MULTUS_SHIM_WAIT_SECONDS": "0"})
    assert b'"address": "10.0.0.2/8"' in run.success()
    assert len(daemon.requests) == 3


def test_a_marker_whose_daemon_does_not_come_back_is_code_11_at_its_until(
    launcher: Path, socket_dir: Path
) -> None:
    write_marker(socket_dir, time.time() + 0.3)
    run = run_shim(launcher, conf_bytes(socket_dir), env={"MULTUS_SHIM_WAIT_SECONDS": "0"}, timeout=60)
    assert run.error()["code"] == 11


def test_a_marker_is_waited_for_no_longer_than_the_calls_deadline(launcher: Path, socket_dir: Path) -> None:
    write_marker(socket_dir, time.time() + 3600)
    env = {"MULTUS_SHIM_TIMEOUT_SECONDS": "0.3"}
    error = run_shim(launcher, conf_bytes(socket_dir), env=env, timeout=60).error()
    assert error["code"] == 11
    assert f"{socket_dir}/multus.sock" in str(error["msg"])


def test_a_del_during_a_restart_reaches_the_new_daemon_instead_of_the_spool(
    launcher: Path, socket_dir: Path, tmp_path: Path
) -> None:
    write_marker(socket_dir, time.time() + 120)
    spool = tmp_path / "spool"
    daemon = StubDaemon(socket_dir)
    try:
        run, _ = run_past_a_retry(
            launcher, conf_bytes(socket_dir, spoolDir=str(spool)), {"CNI_COMMAND": "DEL"}, daemon.start
        )
    finally:
        daemon.stop()
    assert run.success() == b""
    assert len(daemon.requests) == 1
    assert not spool.exists()


def test_not_ready_daemon_is_asked_again_until_it_answers(launcher: Path, daemon: StubDaemon) -> None:
    not_ready = http_reply(503, b"starting\n", content_type="text/plain")
    daemon.replies = [not_ready, not_ready, json_reply(200, RESULT)]
    run = run_shim(launcher, conf_bytes(daemon.socket_dir), env={"MULTUS_SHIM_WAIT_SECONDS": "10"})
    assert b'"address": "10.0.0.2/8"' in run.success()
    assert len(daemon.requests) == 3
    assert len({request.raw for request in daemon.requests}) == 1  # the same request each time


def test_daemon_never_ready_is_code_11_with_its_last_answer(launcher: Path, daemon: StubDaemon) -> None:
    daemon.replies = [http_reply(503, b"starting\n", content_type="text/plain")]
    run = run_shim(launcher, conf_bytes(daemon.socket_dir), env={"MULTUS_SHIM_WAIT_SECONDS": "0.3"})
    assert run.error() == {
        "code": 11,
        "msg": f"multus daemon not ready at {daemon.path}: CNI request failed with status 503: 'starting\n'",
    }
    assert len(daemon.requests) > 1


def test_a_cni_error_sent_with_503_keeps_its_code(launcher: Path, daemon: StubDaemon) -> None:
    daemon.replies = [json_reply(503, {"code": 51, "msg": "no network"})]
    run = run_shim(launcher, conf_bytes(daemon.socket_dir), env={"MULTUS_SHIM_WAIT_SECONDS": "0"})
    assert run.error() == {"code": 51, "msg": "no network"}


def test_other_errors_are_not_retried(launcher: Path, daemon: StubDaemon) -> None:
    daemon.replies = [http_reply(500, b"boom")]
    run = run_shim(launcher, conf_bytes(daemon.socket_dir), env={"MULTUS_SHIM_WAIT_SECONDS": "10"})
    assert run.error()["code"] == 999
    assert len(daemon.requests) == 1


def test_stuck_daemon_is_code_11_at_the_deadline(launcher: Path, daemon: StubDaemon) -> None:
    daemon.replies = [HANG]
    run = run_shim(launcher, conf_bytes(daemon.socket_dir), env={"MULTUS_SHIM_TIMEOUT_SECONDS": "0.3"})
    assert run.error() == {"code": 11, "msg": f"no answer from multus daemon at {daemon.path} within 0.3 s"}


KUBELET_RUNTIME_REQUEST_TIMEOUT_SECONDS = 120
"""kubelet's default ``--runtime-request-timeout``: the runtime's whole StopPodSandbox, the DEL included."""


def test_a_dels_deadline_leaves_the_runtime_time_to_hear_its_success() -> None:
    """A DEL the daemon accepts and never answers must be spooled before the runtime kills the shim
    (then nothing is spooled, and every retry meets the same hung daemon): half the runtime's bound
    at most, the rest for the runtime's own steps and the spool's fsyncs."""
    assert shim_module.call_timeout("DEL") <= KUBELET_RUNTIME_REQUEST_TIMEOUT_SECONDS / 2
    assert shim_module.call_timeout("ADD") == shim_module.REQUEST_TIMEOUT_SECONDS


def test_a_del_the_daemon_accepts_but_never_answers_is_spooled_at_its_deadline_and_succeeds(
    launcher: Path, daemon: StubDaemon, tmp_path: Path
) -> None:
    """The other commands' bound (here far beyond the run's timeout) does not hold a DEL up."""
    daemon.replies = [HANG]
    spool = tmp_path / "spool"
    env = {
        "CNI_COMMAND": "DEL",
        "MULTUS_SHIM_TIMEOUT_SECONDS": "3600",
        "MULTUS_SHIM_DEL_TIMEOUT_SECONDS": "0.3",
    }
    run = run_shim(launcher, conf_bytes(daemon.socket_dir, spoolDir=str(spool)), env=env)
    assert (run.returncode, run.stdout, run.stderr) == (0, b"", b"")
    assert len(daemon.requests) == 1
    [entry] = _spooled(spool)
    assert entry["env"]["CNI_COMMAND"] == "DEL"


def test_an_add_keeps_its_own_deadline_whatever_a_dels_is(launcher: Path, daemon: StubDaemon) -> None:
    daemon.replies = [HANG]
    env = {"MULTUS_SHIM_TIMEOUT_SECONDS": "0.4", "MULTUS_SHIM_DEL_TIMEOUT_SECONDS": "0.1"}
    run = run_shim(launcher, conf_bytes(daemon.socket_dir), env=env)
    assert run.error() == {"code": 11, "msg": f"no answer from multus daemon at {daemon.path} within 0.4 s"}


def test_daemon_closing_without_an_answer_is_code_11(launcher: Path, daemon: StubDaemon) -> None:
    daemon.replies = [b""]
    run = run_shim(launcher, conf_bytes(daemon.socket_dir), env={"CNI_COMMAND": "CHECK"})
    assert run.error() == {
        "code": 11,
        "msg": f"multus daemon at {daemon.path} closed the connection without answering",
    }
    assert len(daemon.requests) == 1  # not retried: the daemon may have acted on it


def test_daemon_closing_in_the_middle_of_its_answer_is_code_11(launcher: Path, daemon: StubDaemon) -> None:
    daemon.replies = [http_reply(200, b'{"Result": {}}')[:-3]]  # Content-Length promises 3 more bytes
    run = run_shim(launcher, conf_bytes(daemon.socket_dir))
    assert run.error() == {
        "code": 11,
        "msg": f"multus daemon at {daemon.path} closed the connection in the middle of its answer",
    }


class FullBacklog:
    """A daemon socket whose listen backlog is full: listening with a backlog of none, one
    connection already queued and never accepted, so the next connect fails with EAGAIN."""

    def __init__(self, socket_dir: Path) -> None:
        self.path = socket_dir / "multus.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(0)
        self.queued = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.queued.connect(str(self.path))
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        with probe, pytest.raises(BlockingIOError):
            probe.connect(str(self.path))

    def answer_once(self, reply: bytes) -> bytes:
        """Take the queued connection off the backlog, then accept the next one, read its request
        and send ``reply``; return the request."""
        self.listener.settimeout(30)
        first, _ = self.listener.accept()
        first.close()
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(30)
            request = read_request(conn)
            conn.sendall(reply)
        return request

    def close(self) -> None:
        self.queued.close()
        self.listener.close()


def test_a_daemon_whose_backlog_is_full_is_asked_again_until_it_accepts(
    launcher: Path, socket_dir: Path
) -> None:
    busy = FullBacklog(socket_dir)
    try:
        run, request = run_past_a_retry(
            launcher,
            conf_bytes(socket_dir),
            {"MULTUS_SHIM_WAIT_SECONDS": "120"},
            lambda: busy.answer_once(json_reply(200, RESULT)),
        )
    finally:
        busy.close()
    assert b'"address": "10.0.0.2/8"' in run.success()
    assert request.startswith(b"POST /cni HTTP/1.1\r\n")


def test_a_daemon_whose_backlog_stays_full_is_code_11_for_an_add_and_spools_a_del(
    launcher: Path, socket_dir: Path, tmp_path: Path
) -> None:
    busy = FullBacklog(socket_dir)
    spool = tmp_path / "spool"
    conf = conf_bytes(socket_dir, spoolDir=str(spool))
    try:
        added = run_shim(launcher, conf, env={"MULTUS_SHIM_WAIT_SECONDS": "0.2"})
        deleted = run_shim(launcher, conf, env={"CNI_COMMAND": "DEL", "MULTUS_SHIM_WAIT_SECONDS": "0.2"})
    finally:
        busy.close()
    assert added.error() == {
        "code": 11,
        "msg": f"multus daemon not reachable at {busy.path}: Resource temporarily unavailable",
    }
    assert (deleted.returncode, deleted.stdout, deleted.stderr) == (0, b"", b"")
    assert [entry["env"]["CNI_COMMAND"] for entry in _spooled(spool)] == ["DEL"]


def test_unreachable_for_another_reason_is_code_11_at_once(launcher: Path, socket_dir: Path) -> None:
    not_a_dir = socket_dir / "file"
    not_a_dir.write_text("")
    run = run_shim(launcher, conf_bytes(not_a_dir), env={"MULTUS_SHIM_WAIT_SECONDS": "30"}, timeout=10)
    assert run.error() == {
        "code": 11,
        "msg": f"multus daemon not reachable at {not_a_dir}/multus.sock: Not a directory",
    }


def _spooled(spool: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(path.read_bytes()) for path in sorted(spool.glob("del-*.json"))]


def test_del_with_the_daemon_absent_is_spooled_durably_and_succeeds(
    launcher: Path, socket_dir: Path, tmp_path: Path
) -> None:
    spool = tmp_path / "state" / "spool"
    conf = conf_bytes(socket_dir, spoolDir=str(spool))
    env = {"CNI_COMMAND": "DEL", "MULTUS_SHIM_WAIT_SECONDS": "0.2"}

    run = run_shim(launcher, conf, env=env)

    assert (run.returncode, run.stdout) == (0, b"")
    [entry] = _spooled(spool)
    assert entry["env"]["CNI_COMMAND"] == "DEL"
    assert entry["env"]["CNI_CONTAINERID"] == BASE_ENV["CNI_CONTAINERID"]
    assert base64.b64decode(str(entry["config"])) == conf
    assert [p.name for p in spool.iterdir() if p.name.startswith(".")] == [], "no temporary file left"


def test_a_spool_write_that_fails_leaves_no_temporary_file(
    launcher: Path, socket_dir: Path, tmp_path: Path
) -> None:
    """The entry's temporary file is removed when writing it fails (here: a file size limit, EFBIG);
    the DEL is then code 11, and the runtime retries it."""
    spool = tmp_path / "spool"
    conf = conf_bytes(socket_dir, spoolDir=str(spool), padding="x" * 8192)

    def small_files_only() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    done = subprocess.run(
        [str(launcher)],
        input=conf,
        env={**BASE_ENV, "CNI_COMMAND": "DEL", "MULTUS_SHIM_WAIT_SECONDS": "0"},
        capture_output=True,
        preexec_fn=small_files_only,
        timeout=20,
        check=False,
    )
    assert done.returncode == 1, done
    assert "cannot spool the DEL" in json.loads(done.stdout)["msg"]
    assert list(spool.iterdir()) == []


def test_a_del_of_a_container_id_too_long_for_a_file_name_is_spooled_whole(
    launcher: Path, socket_dir: Path, tmp_path: Path
) -> None:
    """A file name holds at most 255 bytes: the entry's name must not grow with the ID (its content
    holds the whole request), or such a DEL fails with code 11 until the daemon is back."""
    spool = tmp_path / "spool"
    container_id = "c" + "0123456789abcdef" * 20
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": container_id, "MULTUS_SHIM_WAIT_SECONDS": "0"}

    run = run_shim(launcher, conf_bytes(socket_dir, spoolDir=str(spool)), env=env)

    assert (run.returncode, run.stdout, run.stderr) == (0, b"", b"")
    [entry] = _spooled(spool)
    assert entry["env"]["CNI_CONTAINERID"] == container_id


@pytest.mark.parametrize("until", ["1" + "0" * 400, "1e400", "-1e400"], ids=["huge-int", "inf", "-inf"])
def test_a_marker_whose_until_is_no_time_is_ignored_and_the_del_still_spooled(
    launcher: Path, socket_dir: Path, tmp_path: Path, until: str
) -> None:
    """A corrupt marker (an ``until`` no float holds) counts as no marker: no code 999, no lost DEL."""
    (socket_dir / "multus.restarting").write_text('{"pid": 4242, "until": ' + until + "}")
    spool = tmp_path / "spool"
    env = {"CNI_COMMAND": "DEL", "MULTUS_SHIM_WAIT_SECONDS": "0.2"}

    run = run_shim(launcher, conf_bytes(socket_dir, spoolDir=str(spool)), env=env)

    assert (run.returncode, run.stdout, len(_spooled(spool))) == (0, b"", 1)


def test_del_cut_off_mid_answer_is_spooled_since_del_may_be_repeated(
    launcher: Path, daemon: StubDaemon, tmp_path: Path
) -> None:
    daemon.replies = [b""]
    spool = tmp_path / "spool"
    run = run_shim(launcher, conf_bytes(daemon.socket_dir, spoolDir=str(spool)), env={"CNI_COMMAND": "DEL"})
    assert (run.returncode, len(_spooled(spool))) == (0, 1)


def test_del_is_not_spooled_when_the_daemon_answers(
    launcher: Path, daemon: StubDaemon, tmp_path: Path
) -> None:
    daemon.replies = [json_reply(400, {"code": 7, "msg": "bad"})]
    spool = tmp_path / "spool"
    run = run_shim(launcher, conf_bytes(daemon.socket_dir, spoolDir=str(spool)), env={"CNI_COMMAND": "DEL"})
    assert run.error() == {"code": 7, "msg": "bad"}
    assert not spool.exists()


def test_del_that_cannot_be_spooled_is_code_11_so_the_runtime_retries(
    launcher: Path, socket_dir: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    conf = conf_bytes(socket_dir, spoolDir=str(blocker / "spool"))
    run = run_shim(launcher, conf, env={"CNI_COMMAND": "DEL", "MULTUS_SHIM_WAIT_SECONDS": "0"})
    error = run.error()
    assert error["code"] == 11
    assert "cannot spool the DEL" in str(error["msg"])
