"""A daemon whose ``chrootDir`` is unusable never starts half-configured: it exits 1 before it
binds its socket, naming the key (issue 10, "Bad input")."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster

pytestmark = pytest.mark.slow  # starts daemon processes


@pytest.mark.parametrize("problem", ["missing", "a file", "without binDir"])
def test_an_unusable_chroot_dir_is_a_start_up_error_naming_the_key(
    cluster: Cluster, tmp_path: Path, problem: str
) -> None:
    root = tmp_path / "hostroot"
    if problem == "a file":
        root.write_text("")
    elif problem == "without binDir":
        root.mkdir()
    cluster.daemon_config["chrootDir"] = str(root)

    cluster.start_daemon(wait=False)
    assert cluster.daemon is not None
    code = cluster.daemon.wait(timeout=60)

    assert code == 1
    log = cluster.daemon_log.read_text()
    assert "'chrootDir'" in log
    assert str(root) in log
    assert not (cluster.socket_dir / "multus.sock").exists(), "nothing was served"
