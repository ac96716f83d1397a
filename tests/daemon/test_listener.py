"""The socket bound before the heavy imports, the socket-in-use check, and the restart marker."""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.daemon import listener


def test_a_connection_made_before_anything_serves_waits_in_the_backlog(tmp_path: Path) -> None:
    path = tmp_path / "run" / "multus.sock"
    sock = listener.bind(path)
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
            client.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            sock.setblocking(True)
            accepted, _ = sock.accept()  # what the HTTP server does once it takes the socket over
            with accepted:
                assert accepted.recv(64).startswith(b"GET /healthz")
    finally:
        sock.close()


def test_a_live_socket_is_refused_and_a_stale_one_replaced(tmp_path: Path) -> None:
    path = tmp_path / "multus.sock"
    live = listener.bind(path)
    try:
        with pytest.raises(listener.SocketInUseError, match="another daemon"):
            listener.bind(path)
    finally:
        live.close()
    assert path.exists()  # stale now: nobody listens
    listener.bind(path).close()


def test_the_restart_marker_says_who_stopped_and_until_when(tmp_path: Path) -> None:
    before = time.time()
    marker = listener.write_restart_marker(tmp_path)
    assert marker == tmp_path / "multus.restarting"
    content = json.loads(marker.read_text())
    assert content["pid"] == os.getpid()
    assert before + listener.RESTART_WAIT_SECONDS <= content["until"] <= time.time() + 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multus.restarting"]  # no temp file left
    assert listener.remove_restart_marker(tmp_path)
    assert not listener.remove_restart_marker(tmp_path)


def test_the_entry_point_binds_before_importing_any_third_party_package() -> None:
    """What runs before the socket is bound (main, settings, logging, listener) is stdlib only."""
    probe = (
        "import sys\n"
        "import app.daemon.main\n"
        "heavy = sorted(name for name in sys.modules if name.split('.')[0] in "
        "('aiohttp', 'sqlalchemy', 'alembic', 'kubernetes_asyncio', 'prometheus_client', 'grpc', 'yarl'))\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


# ---- one daemon per socket directory ----------------------------------------------------------

RACER = """
import os, pathlib, sys, time
from app.daemon import main as entry

name, gates, config = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
unlink = pathlib.Path.unlink


def paused_unlink(self, missing_ok=False):
    # the stale socket's removal waits for the test's go: the race's window, held open
    if self.name == "multus.sock":
        (gates / f"{name}.at-unlink").touch()
        while not (gates / f"{name}.go").exists():
            time.sleep(0.01)
    return unlink(self, missing_ok=missing_ok)


def serve(settings, sock):  # the heavy part of the run, replaced: say so, hold the socket
    (gates / f"{name}.bound").touch()
    while not (gates / "end").exists():
        time.sleep(0.01)
    os._exit(0)


pathlib.Path.unlink = paused_unlink
entry._run = serve
sys.exit(entry.main(["--config", config]))
"""


def _racer_config(tmp_path: Path) -> Path:
    config = tmp_path / "daemon-config.json"
    config.write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "socketDir": str(tmp_path / "run"),
                "stateDir": str(tmp_path / "state"),
                "binDir": str(tmp_path / "bin"),
                "logToStderr": True,
                "multusConfigFile": "none",
            }
        )
    )
    return config


def _stale_socket(path: Path) -> None:
    """A socket file nobody listens on any more (a daemon killed with SIGKILL leaves one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(path))
    assert path.exists()


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within 60 s"
        time.sleep(0.01)


def test_two_daemons_starting_over_a_stale_socket_never_both_bind(tmp_path: Path) -> None:
    """Both found the socket stale; the first bound, then the second removed the first's socket and
    bound its own: the first served nothing, and both went on to open the store and run recovery."""
    config, gates = _racer_config(tmp_path), tmp_path / "gates"
    gates.mkdir()
    _stale_socket(tmp_path / "run" / "multus.sock")
    racers = {
        name: subprocess.Popen(
            [sys.executable, "-c", RACER, name, str(gates), str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    }

    def at_unlink_or_exited(name: str) -> bool:
        return (gates / f"{name}.at-unlink").exists() or racers[name].poll() is not None

    def bound_or_exited(name: str) -> bool:
        return (gates / f"{name}.bound").exists() or racers[name].poll() is not None

    try:
        for name in racers:
            _wait(functools.partial(at_unlink_or_exited, name), f"racer {name} at the stale socket's removal")
        for name in racers:  # each one paused there goes on alone, to its end of start-up
            if (gates / f"{name}.at-unlink").exists():
                (gates / f"{name}.go").touch()
                _wait(functools.partial(bound_or_exited, name), f"racer {name} bound or gone")
        bound = sorted(name for name in racers if (gates / f"{name}.bound").exists())
        assert len(bound) == 1, f"both bound {tmp_path / 'run' / 'multus.sock'}"
        (refused,) = set(racers) - set(bound)
        _, stderr = racers[refused].communicate(timeout=60)
        assert racers[refused].returncode == 3
        assert str(tmp_path / "run" / "multus.sock.lock") in stderr
    finally:
        (gates / "end").touch()
        for racer in racers.values():
            racer.communicate(timeout=60)


FULL_BACKLOG_PROBE = """
import pathlib, sys
from app.daemon import listener
try:
    listener.bind(pathlib.Path(sys.argv[1]))
except listener.SocketInUseError as exc:
    print(exc)
    sys.exit(3)
"""


def test_a_socket_whose_listener_never_accepts_is_refused_without_hanging(tmp_path: Path) -> None:
    """The stale-socket probe connected without a timeout: a listener that accepts nothing (hung,
    stopped) with its backlog full held the new daemon's start-up in ``connect`` for ever."""
    path = tmp_path / "multus.sock"
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hung.bind(str(path))
    hung.listen(0)
    queued: list[socket.socket] = []
    try:
        while True:  # fill its backlog
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            queued.append(client)
            try:
                client.connect(str(path))
            except BlockingIOError:
                break
        try:
            probe = subprocess.run(
                [sys.executable, "-c", FULL_BACKLOG_PROBE, str(path)],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("the stale-socket probe hung on a listener that accepts nothing")
        assert probe.returncode == 3, probe.stderr
        assert str(path) in probe.stdout
        assert path.exists()  # not taken over: something still listens there
    finally:
        for client in queued:
            client.close()
        hung.close()


def test_a_daemon_stopping_gracefully_is_waited_for_then_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "run" / "multus.sock"
    predecessor = listener.claim(path)
    listener.write_restart_marker(path.parent)  # what its graceful stop writes first
    claimed: list[listener.Claim] = []
    successor = threading.Thread(target=lambda: claimed.append(listener.claim(path)))
    with caplog.at_level(logging.INFO, logger="app.daemon.listener"):
        successor.start()
        try:
            _wait(lambda: "waiting for the daemon stopping" in caplog.text, "the successor waiting")
            assert successor.is_alive()
            assert not claimed
        finally:
            predecessor.release()  # its process ends
            successor.join(timeout=60)
    (successor_claim,) = claimed
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # the successor's socket
        assert (tmp_path / "run" / "multus.sock.lock").read_text().strip() == str(os.getpid())
    finally:
        successor_claim.release()


def test_a_predecessor_still_stopping_when_its_restart_marker_expires_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "multus.sock"
    predecessor = listener.claim(path)
    try:
        (tmp_path / "multus.restarting").write_text(json.dumps({"pid": 1, "until": time.time() + 0.2}))
        with pytest.raises(listener.SocketInUseError, match="still stopping after its restart marker"):
            listener.claim(path)
    finally:
        predecessor.release()


@pytest.mark.parametrize("marker", [None, "not json", '{"pid": 1}', '{"pid": 1, "until": "soon"}'])
def test_a_daemon_holding_the_lock_without_a_valid_restart_marker_is_not_waited_for(
    tmp_path: Path, marker: str | None
) -> None:
    path = tmp_path / "multus.sock"
    serving = listener.claim(path)
    try:
        if marker is not None:
            (tmp_path / "multus.restarting").write_text(marker)
        with pytest.raises(listener.SocketInUseError, match=f"pid {os.getpid()}.* holds .*multus.sock.lock"):
            listener.claim(path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # the first one's socket is untouched
    finally:
        serving.release()


@pytest.mark.parametrize("grace", [10.0, 60.0])
def test_the_restart_marker_lasts_as_long_as_a_graceful_stop_may_take(tmp_path: Path, grace: float) -> None:
    """A stop drains for up to ``shutdownGraceSeconds``, then gives the background tasks as long
    again: the marker's ``until`` must not pass before that, or shims and the successor waiting on
    it give up on a daemon that is still stopping."""
    from app.daemon.startup import Daemon
    from app.settings import Settings, Timeouts

    settings = Settings(raw={}, socket_dir=tmp_path, timeouts=Timeouts(shutdown_grace=grace))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        stopped_at = time.time()
        Daemon(settings, sock).request_stop()
    finally:
        sock.close()

    content = json.loads((tmp_path / listener.RESTART_MARKER).read_bytes())
    assert content["until"] >= stopped_at + max(listener.RESTART_WAIT_SECONDS, 2 * grace)


NOBODY = 65534


def test_a_socket_dir_of_another_user_is_refused_before_anything_is_written_there(tmp_path: Path) -> None:
    """Its owner could put a listener of theirs in place of ``multus.sock`` for every shim to talk to:
    the daemon only made the directory 0700 (its owner keeps every right) and served there."""
    socket_dir = tmp_path / "run"
    socket_dir.mkdir(mode=0o777)
    os.chown(socket_dir, NOBODY, NOBODY)

    with pytest.raises(listener.UnsafeSocketDirError, match=f"belongs to uid {NOBODY}") as refused:
        listener.claim(socket_dir / "multus.sock")

    assert isinstance(refused.value, OSError)  # the entry point's refusal to listen: exit 3, logged
    assert list(socket_dir.iterdir()) == []


@pytest.mark.parametrize("kind", ["symlink", "hard link"])
def test_a_lock_linked_to_another_file_is_refused_and_that_file_left_alone(tmp_path: Path, kind: str) -> None:
    """A lock placed as a link before the directory was the daemon's alone: the daemon truncated the
    linked file and wrote its pid into it (any file of the host, as root)."""
    victim = tmp_path / "precious"
    victim.write_text("precious\n")
    socket_dir = tmp_path / "run"
    socket_dir.mkdir(mode=0o700)
    lock = socket_dir / "multus.sock.lock"
    if kind == "symlink":
        lock.symlink_to(victim)
    else:
        os.link(victim, lock)

    with pytest.raises(listener.UnsafeSocketDirError, match=r"multus\.sock\.lock"):
        listener.claim(socket_dir / "multus.sock")

    assert victim.read_text() == "precious\n"
    assert not (socket_dir / "multus.sock").exists()


@pytest.mark.parametrize(
    "marker",
    [
        '{"pid": 1, "until": Infinity}',
        '{"pid": 1, "until": NaN}',
        '{"pid": 1, "until": 1e999}',
        '{"pid": 1, "until": ' + "9" * 400 + "}",
        "a FIFO",
    ],
    ids=["infinity", "nan", "overflowing-float", "overflowing-integer", "fifo"],
)
def test_a_restart_marker_whose_until_is_no_time_is_not_waited_for(tmp_path: Path, marker: str) -> None:
    """A marker whose ``until`` is no time a daemon writes (inf, NaN, a number no float holds), or
    that is no file to read, counts as none, as the shim takes it: a daemon started beside a
    serving one waited for ever on an infinite or NaN ``until`` (never exit 3), crashed with a
    traceback on an integer too large for a float, and hung reading a FIFO."""
    path = tmp_path / "multus.sock"
    serving = listener.claim(path)
    claimed: list[listener.Claim] = []
    refused: list[BaseException] = []

    def start() -> None:
        try:
            claimed.append(listener.claim(path))
        except BaseException as exc:
            refused.append(exc)

    successor = threading.Thread(target=start, daemon=True)
    try:
        if marker == "a FIFO":
            os.mkfifo(tmp_path / listener.RESTART_MARKER)
        else:
            (tmp_path / listener.RESTART_MARKER).write_text(marker)
        successor.start()
        successor.join(timeout=30)
        waiting = successor.is_alive()
    finally:
        serving.release()  # a successor still waiting takes over now, and returns
        successor.join(timeout=10)
        for claim in claimed:
            claim.release()
    assert not waiting, "the successor waited on a marker that promises nothing"
    assert len(refused) == 1, (refused, claimed)
    assert isinstance(refused[0], listener.SocketInUseError), refused


def test_a_restart_marker_that_cannot_be_removed_is_logged_and_the_daemon_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory in the marker's place made the entry point's removal raise ``IsADirectoryError``:
    the daemon ended with a traceback before it served, at every restart. Shims and successors
    read no marker there (they take it as none), so it keeps no daemon from serving."""
    (tmp_path / listener.RESTART_MARKER).mkdir()
    with caplog.at_level(logging.ERROR, logger="app.daemon.listener"):
        assert listener.remove_restart_marker(tmp_path) is False
    assert f"cannot remove the restart marker {tmp_path / listener.RESTART_MARKER}" in caplog.text


KILLED_WHILE_WRITING_THE_MARKER = """
import os, pathlib, signal, sys
from app.daemon import listener

path = pathlib.Path(sys.argv[1])
listener.claim(path)
os.replace = lambda *_: os.kill(os.getpid(), signal.SIGKILL)  # killed just before the rename
listener.write_restart_marker(path.parent)
"""


def test_a_restart_marker_temporary_left_by_a_daemon_killed_while_writing_it_is_removed_by_the_next(
    tmp_path: Path,
) -> None:
    """A daemon killed between creating the marker's temporary and renaming it into place left
    ``.multus.restarting.*`` in the socket directory, and nothing ever removed it: one more file
    at every such crash."""
    path = tmp_path / "run" / "multus.sock"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_WRITING_THE_MARKER, str(path)], capture_output=True, text=True
    )
    assert killed.returncode == -9, killed.stderr
    (leftover,) = path.parent.glob(".multus.restarting.*")
    assert not (path.parent / listener.RESTART_MARKER).exists()

    successor = listener.claim(path)  # the lock is its: nobody else writes a marker there now
    try:
        assert not leftover.exists()
        assert sorted(entry.name for entry in path.parent.iterdir()) == ["multus.sock", "multus.sock.lock"]
    finally:
        successor.release()


def test_a_restart_marker_until_absurdly_far_ahead_is_waited_for_only_as_long_as_a_stop_announces(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An ``until`` a billion seconds ahead (a buggy predecessor's, or a clock that stepped back) had
    a daemon started beside the one holding the lock wait that long instead of exit 3; it waits at
    most as long as a stop of its own would announce, counted from when it first saw the marker."""
    path = tmp_path / "multus.sock"
    holder = listener.claim(path)
    (tmp_path / listener.RESTART_MARKER).write_text(json.dumps({"pid": 1, "until": time.time() + 1e9}))
    claimed: list[listener.Claim] = []
    refused: list[BaseException] = []

    def start() -> None:
        try:
            claimed.append(listener.claim(path, longest_stop=0.2))
        except BaseException as exc:
            refused.append(exc)

    successor = threading.Thread(target=start, daemon=True)
    try:
        with caplog.at_level(logging.INFO, logger="app.daemon.listener"):
            successor.start()
            successor.join(timeout=30)
            waiting = successor.is_alive()
    finally:
        holder.release()  # a successor still waiting takes over now, and returns
        successor.join(timeout=10)
        for claim in claimed:
            claim.release()
    assert not waiting, "the successor waited on for an until no stop announces"
    assert "waiting for the daemon stopping" in caplog.text  # it did wait, for a stop's length
    assert len(refused) == 1, (refused, claimed)
    assert isinstance(refused[0], listener.SocketInUseError), refused
    assert f"restart marker {tmp_path / listener.RESTART_MARKER} was first seen" in str(refused[0])


def test_what_a_stop_announces_covers_its_closing() -> None:
    """``restart_wait`` adds ``STOP_CLOSING_SECONDS`` to the two graces: the stragglers' wait, the
    socket's closing, its handlers' answers, and a few seconds for the store, must fit in it."""
    from app.daemon import server, startup

    closing = server.ABANDON_WAIT_SECONDS + startup.CLOSE_SETTLE_SECONDS + 2 * server.CLOSE_ANSWER_SECONDS
    assert closing + 5.0 <= listener.STOP_CLOSING_SECONDS
    assert listener.restart_wait(60.0) == 2 * 60.0 + listener.STOP_CLOSING_SECONDS
    assert listener.restart_wait(0.0) == listener.RESTART_WAIT_SECONDS


CLAIM_RECORDER = """
import sys
from app.daemon import listener, main as entry


def claim(socket_path, **keywords):  # the claim, replaced: say what the entry point asked for
    print(keywords.get("longest_stop"))
    sys.exit(0)


listener.claim = claim
sys.exit(entry.main(["--config", sys.argv[1]]))
"""


def test_a_starting_daemon_waits_for_a_stopping_one_as_long_as_its_own_grace_would_announce(
    tmp_path: Path,
) -> None:
    """A daemon whose ``shutdownGraceSeconds`` makes a stop announce more than 30 s waits for its
    stopping predecessor that long too (the same daemon-config, a rolling restart), not 30 s."""
    config = _racer_config(tmp_path)
    config.write_text(json.dumps({**json.loads(config.read_text()), "shutdownGraceSeconds": 25}))

    run = subprocess.run(
        [sys.executable, "-c", CLAIM_RECORDER, str(config)], capture_output=True, text=True, timeout=60
    )

    assert run.returncode == 0, run.stderr
    assert float(run.stdout) == listener.restart_wait(25.0) == 60.0
