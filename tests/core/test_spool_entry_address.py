"""Whose a spooled DEL is, when its conf does not say: the entry itself carries the socket directory
the shim was looking for.

A DEL too large to send with its conf goes without it (``app.shim.shim.request_body``), and so is it
spooled. In the shim's default directory, shared by every hand-written conf on the node, a daemon
takes only the entries addressed to its socket (or naming a sandbox it holds), and the daemon whose
own ``spoolDir`` that directory is also the unaddressed ones: such an entry, unaddressed, was taken
by that daemon whatever socket the shim was looking for, found nothing to DEL and was removed, so
the daemon that held the sandbox never got it (invariant 7). The entries are written by a real shim
process, replayed in process (real store and plugins).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from app.cli import install
from app.daemon import spool
from app.shim.install import install_shim
from app.shim.shim import MAX_BODY_BYTES
from tests.core.support import Node, new_container_id
from tests.shim.helpers import BASE_ENV, conf_bytes, run_shim

PADDING = "x" * (MAX_BODY_BYTES * 3 // 4 + 1024)
"""Stdin bytes whose base64 alone passes the daemon's bound: the DEL goes without its conf."""


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_shim(str(tmp_path_factory.mktemp("cni-bin")), interpreter=sys.executable)


def spooled_without_its_conf(launcher: Path, *, spool_dir: Path, socket_dir: Path, container: str) -> Path:
    """A DEL too large to carry its conf, spooled by the shim (no daemon listens on ``socket_dir``)."""
    conf = conf_bytes(socket_dir, padding=PADDING, spoolDir=str(spool_dir))
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": container, "MULTUS_SHIM_WAIT_SECONDS": "0"}
    run = run_shim(launcher, conf, env=env)
    assert (run.returncode, run.stdout, run.stderr) == (0, b"", b"")
    [entry] = spool_dir.glob(spool.ENTRY_GLOB)
    assert json.loads(entry.read_bytes())["config"] == ""
    return entry


def daemon_config(node: Node, socket_dir: Path) -> dict[str, object]:
    return {
        "socketDir": str(socket_dir),
        "clusterNetwork": node.recorder_network("cluster"),
        "confDir": str(node.conf_dir),
        "binDir": str(node.bin_dir),
        "cniDir": str(node.cni_dir),
    }


async def test_a_del_spooled_without_its_conf_is_left_to_the_daemon_of_its_socket(
    node: Node, launcher: Path
) -> None:
    shared = node.root / "shared-spool"
    theirs = node.root / "their-sockets"
    ours = node.root / "our-sockets"
    container = new_container_id()
    entry = spooled_without_its_conf(launcher, spool_dir=shared, socket_dir=theirs, container=container)

    # the daemon whose own spoolDir the shared directory is, of another socket directory
    report = await spool.replay(
        spool_dir=shared,
        engine=node.engine(),
        daemon_config=daemon_config(node, ours),
        shim_default_dir=shared,
    )

    assert report.replayed == []
    assert entry.exists(), "another daemon's DEL was taken: the daemon holding the sandbox never gets it"

    # the daemon of the socket the shim was looking for takes it from there
    report = await spool.replay(
        spool_dir=node.root / "its-own-spool",
        engine=node.engine(),
        daemon_config=daemon_config(node, theirs),
        shim_default_dir=shared,
    )

    assert report.replayed == [entry.name]
    assert not entry.exists()


def test_the_installer_purges_such_an_entry_only_for_the_daemon_of_its_socket(
    tmp_path: Path, launcher: Path
) -> None:
    """``uninstall --purge-state`` reads an entry's address as the daemon does."""
    theirs = tmp_path / "their-sockets"
    entry = spooled_without_its_conf(
        launcher, spool_dir=tmp_path / "spool", socket_dir=theirs, container=BASE_ENV["CNI_CONTAINERID"]
    )

    assert install.spooled_address(entry) == str(theirs)


def test_a_del_spooled_with_its_conf_has_the_same_address_in_the_body_and_the_conf(
    tmp_path: Path, launcher: Path
) -> None:
    """The shim adds the address to every entry whose socket directory it knew."""
    spool_dir = tmp_path / "spool"
    conf = conf_bytes(tmp_path / "sockets", spoolDir=str(spool_dir))
    run = run_shim(launcher, conf, env={"CNI_COMMAND": "DEL", "MULTUS_SHIM_WAIT_SECONDS": "0"})
    assert run.returncode == 0

    [entry] = spool_dir.glob(spool.ENTRY_GLOB)
    body = json.loads(entry.read_bytes())
    assert body["daemonSocketDir"] == str(tmp_path / "sockets")
    assert install.spooled_address(entry) == str(tmp_path / "sockets")
