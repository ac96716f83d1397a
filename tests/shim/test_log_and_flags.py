"""The shim's failure log (one line per failed call in the conf's ``logFile``, nothing on success) and
its command-line flags (``-version`` as upstream's Go shim: ``flag`` syntax, exit 0)."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from app.shim import shim
from tests.shim.helpers import StubDaemon, conf_bytes, json_reply, run_shim

RESULT = {"Result": {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/8"}]}}
LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[error\] (Cmd\w+) \(shim\): container '3f9a0c1d': (.*)$"
)


def log_lines(log: Path) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    lines = log.read_text().split("\n")
    assert lines[-1] == "", "every line ends with a newline"
    matched = [LINE.match(line) for line in lines[:-1]]
    assert all(matched), lines
    return [(match[1], match[2]) for match in matched if match]


def test_a_successful_call_writes_nothing(launcher: Path, daemon: StubDaemon, tmp_path: Path) -> None:
    log = tmp_path / "multus.log"
    daemon.replies = [json_reply(200, RESULT)]
    for command in ("ADD", "DEL", "CHECK"):
        run_shim(
            launcher, conf_bytes(daemon.socket_dir, logFile=str(log)), env={"CNI_COMMAND": command}
        ).success()
    assert not log.exists()


def test_each_failed_call_appends_one_line(launcher: Path, daemon: StubDaemon, tmp_path: Path) -> None:
    log = tmp_path / "multus.log"
    log.write_text("2026-01-01T00:00:00Z [verbose] the daemon's own line\n")
    daemon.replies = [json_reply(400, {"code": 7, "msg": "bad network", "details": "net1\nsecond line"})]
    conf = conf_bytes(daemon.socket_dir, logFile=str(log))
    run_shim(launcher, conf).error()
    run_shim(launcher, conf, env={"CNI_COMMAND": "DEL"}).error()
    lines = log.read_text().splitlines()
    assert lines[0] == "2026-01-01T00:00:00Z [verbose] the daemon's own line"
    log.write_text("\n".join(lines[1:]) + "\n")
    assert log_lines(log) == [
        ("CmdAdd", "code 7: bad network; net1\\nsecond line"),
        ("CmdDel", "code 7: bad network; net1\\nsecond line"),
    ]


def test_an_unreachable_daemon_and_a_spooled_del_are_logged(
    launcher: Path, socket_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "multus.log"
    spool = tmp_path / "spool"
    conf = conf_bytes(socket_dir, logFile=str(log), spoolDir=str(spool))
    run_shim(launcher, conf, env={"CNI_COMMAND": "ADD"}).error()
    deleted = run_shim(launcher, conf, env={"CNI_COMMAND": "DEL"})
    assert (deleted.returncode, deleted.stdout) == (0, b"")
    unreachable = (
        f"code 11: multus daemon not reachable at {socket_dir}/multus.sock: No such file or directory"
    )
    assert log_lines(log) == [
        ("CmdAdd", unreachable),
        ("CmdDel", f"{unreachable}; spooled in {spool} for the daemon to replay"),
    ]


def test_stderr_stays_empty_even_with_log_to_stderr(launcher: Path, socket_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "multus.log"
    conf = conf_bytes(socket_dir, logToStderr=True, logLevel="panic", logFile=str(log))
    run = run_shim(launcher, conf, env={"CNI_COMMAND": "CHECK"})
    assert run.error()["code"] == 11  # and stderr empty
    assert [command for command, _ in log_lines(log)] == ["CmdCheck"]  # whatever logLevel says


def test_an_unwritable_log_file_does_not_change_the_answer(launcher: Path, socket_dir: Path) -> None:
    conf = conf_bytes(socket_dir, logFile="/nonexistent/dir/multus.log")
    assert run_shim(launcher, conf).error()["code"] == 11


def test_a_log_file_that_is_a_fifo_nobody_reads_does_not_hold_the_answer(
    launcher: Path, socket_dir: Path, tmp_path: Path
) -> None:
    """Opening it for writing waited for a reader for ever: the runtime killed the shim at its own
    deadline, and retried a DEL the shim had spooled but never answered."""
    fifo = tmp_path / "multus.log"
    os.mkfifo(fifo)
    spool = tmp_path / "spool"
    conf = conf_bytes(socket_dir, logFile=str(fifo), spoolDir=str(spool))

    assert run_shim(launcher, conf).error()["code"] == 11
    deleted = run_shim(launcher, conf, env={"CNI_COMMAND": "DEL"})

    assert (deleted.returncode, deleted.stdout, deleted.stderr) == (0, b"", b"")
    assert len(list(spool.glob("del-*.json"))) == 1


def test_a_failure_before_the_conf_is_read_logs_nowhere(launcher: Path, tmp_path: Path) -> None:
    log = tmp_path / "multus.log"
    run = run_shim(launcher, conf_bytes(tmp_path, logFile=str(log)), env={"CNI_IFNAME": "a/b"})
    assert run.error()["code"] == 4
    assert not log.exists()


def version_line() -> bytes:
    return f"multus-shim: version:{shim.SHIM_VERSION}\n".encode()


@pytest.mark.parametrize(
    "args", [["-version"], ["--version"], ["-v"], ["--v"], ["-version=true"], ["-v", "x"]]
)
def test_version_flag_prints_the_version_and_exits_0(launcher: Path, args: list[str]) -> None:
    done = subprocess.run([str(launcher), *args], capture_output=True, env={}, timeout=20, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, version_line(), b"")


def test_the_shim_version_is_the_package_version() -> None:
    pyproject = tomllib.loads((Path(shim.__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == shim.SHIM_VERSION


@pytest.mark.parametrize(
    ("args", "status", "stderr_start"),
    [
        (["-version=false"], None, b""),
        (["-h"], 0, b"Usage of "),
        (["-nope"], 2, b"flag provided but not defined: -nope\nUsage of "),
        (["-version=maybe"], 2, b'invalid boolean value "maybe" for -version: parse error\n'),
        (["---version"], 2, b"bad flag syntax: ---version\n"),
    ],
)
def test_other_flags_behave_as_gos_flag_package(
    launcher: Path, args: list[str], status: int | None, stderr_start: bytes
) -> None:
    done = subprocess.run(
        [str(launcher), *args], capture_output=True, env={"CNI_COMMAND": ""}, timeout=20, check=False
    )
    if status is None:  # no version asked: on to the plugin, which (no CNI_COMMAND) prints its about text
        assert (done.returncode, done.stdout) == (0, b"")
        assert done.stderr.startswith(b"meta-plugin that delegates")
        return
    assert (done.returncode, done.stdout) == (status, b"")
    assert done.stderr.startswith(stderr_start)
    assert done.stderr.endswith(
        b"  -v\tShow application version\n  -version\n    \tShow application version\n"
    )
