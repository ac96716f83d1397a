"""Where the shim spools a DEL the daemon could not take, when its conf names odd paths.

A DEL the shim answers with success must be in a directory the daemon replays (its ``spoolDir``, or
the shim's default directory, ``DEFAULT_SPOOL_DIR``), or it is lost (invariant 7); and whatever the
conf holds, the answer is success or a CNI error that lets the runtime retry, never code 999.

The default directory is a fixed node path, so the shims these tests run see a directory of the
test mounted there, in a mount namespace of their own: the host's directory is never written.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.shim.helpers import BASE_ENV, IN_PRIVATE_DEFAULT_SPOOL, ShimRun, conf_bytes, run_shim

ABSENT_DAEMON_DEL = {"CNI_COMMAND": "DEL", "MULTUS_SHIM_WAIT_SECONDS": "0"}
TOO_LONG = "/tmp/" + "d" * 100
"""A daemonSocketDir whose socket path (``<dir>/multus.sock``) no unix socket can have: over 108 bytes."""


def run_with_private_default_spool(
    launcher: Path, stdin: bytes, *, default_spool: Path, cwd: Path, env: dict[str, str]
) -> ShimRun:
    """The shim, its default spool directory being ``default_spool``, started in ``cwd``."""
    from app.shim.shim import DEFAULT_SPOOL_DIR

    script = cwd.parent / "in-private-default-spool.sh"
    script.write_text(IN_PRIVATE_DEFAULT_SPOOL)
    command = ["unshare", "--mount", "--propagation", "private", "/bin/sh", str(script)]
    done = subprocess.run(
        [*command, DEFAULT_SPOOL_DIR, str(default_spool), str(launcher)],
        input=stdin,
        env={**BASE_ENV, **env},
        cwd=cwd,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return ShimRun(done.returncode, done.stdout, done.stderr)


def entries(directory: Path) -> list[Path]:
    return sorted(directory.rglob("del-*.json"))


@pytest.mark.parametrize(
    "spool_dir",
    ["spool", "run/multus-spool", "./spool", "\u0000/tmp/spool", "/tmp/spool\u0000", "/tmp/\ud800"],
    ids=["relative", "relative-nested", "dot-relative", "nul-first", "nul-last", "lone-surrogate"],
)
def test_a_del_whose_spool_dir_the_daemon_cannot_read_is_spooled_in_the_default_directory(
    launcher: Path, socket_dir: Path, tmp_path: Path, spool_dir: str
) -> None:
    """A relative ``spoolDir`` put the entry under the runtime's working directory, where no daemon
    looks, and answered success: the DEL was lost. A NUL or a lone surrogate made ``posix`` raise
    ValueError: code 999. Either way the entry now goes to the default directory, which the daemon
    replays."""
    default_spool, cwd = tmp_path / "default-spool", tmp_path / "runtime-cwd"
    default_spool.mkdir(mode=0o700)
    cwd.mkdir()
    conf = json.dumps(
        {"cniVersion": "1.1.0", "name": "net", "daemonSocketDir": str(socket_dir), "spoolDir": spool_dir}
    ).encode()

    run = run_with_private_default_spool(
        launcher, conf, default_spool=default_spool, cwd=cwd, env=ABSENT_DAEMON_DEL
    )

    assert (run.returncode, run.stdout, run.stderr) == (0, b"", b"")
    assert entries(cwd) == [], "spooled where no daemon looks"
    [entry] = entries(default_spool)
    assert json.loads(entry.read_bytes())["env"]["CNI_CONTAINERID"] == BASE_ENV["CNI_CONTAINERID"]


@pytest.mark.parametrize(
    "socket_dir_value", ["/tmp/a\u0000b", "/tmp/\ud800", TOO_LONG], ids=["nul", "lone-surrogate", "too-long"]
)
def test_a_del_whose_daemon_socket_dir_is_no_path_is_spooled_and_succeeds(
    launcher: Path, tmp_path: Path, socket_dir_value: str
) -> None:
    """Such a DEL was code 999 (NUL: the restart marker's path made ``posix`` raise ValueError) or
    code 7 (lone surrogate) at every retry, for ever: no daemon can be reached through it, so it is
    spooled like a DEL with unusable shim keys, for the daemon to replay from its checkpoint."""
    spool = tmp_path / "spool"
    conf = conf_bytes(socket_dir_value, spoolDir=str(spool))

    run = run_shim(launcher, conf, env=ABSENT_DAEMON_DEL)

    assert (run.returncode, run.stdout, run.stderr) == (0, b"", b"")
    assert len(entries(spool)) == 1


@pytest.mark.parametrize(
    "socket_dir_value", ["/tmp/a\u0000b", "/tmp/\ud800", TOO_LONG], ids=["nul", "lone-surrogate", "too-long"]
)
def test_an_add_whose_daemon_socket_dir_is_no_path_is_code_7_naming_the_key(
    launcher: Path, tmp_path: Path, socket_dir_value: str
) -> None:
    run = run_shim(launcher, conf_bytes(socket_dir_value, spoolDir=str(tmp_path / "spool")))

    error = run.error()
    assert error["code"] == 7
    assert "daemonSocketDir" in str(error["msg"])
    assert not (tmp_path / "spool").exists()
