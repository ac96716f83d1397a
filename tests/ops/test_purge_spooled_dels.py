"""``multus-install uninstall --purge-state`` and the DELs spooled for the daemon.

A shim conf without ``spoolDir`` spools in the shim's default directory, shared by every such conf
on the node; the daemon replays from it the entries addressed to its socket (``app.daemon.spool``).
The purge removed only the daemon's own ``spoolDir``: its entries in the default directory stayed on
the host, and when that directory was its own ``spoolDir`` every other daemon's entries went too.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from app.cli import install
from app.cni.types import CniError
from app.daemon import protocol, server, spool
from app.settings import Settings, from_mapping

SHIM_CONF = {"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus-shim"}


def body(conf: object = None, *, command: str = "DEL", config: object = None) -> bytes:
    """A spooled request as the shim writes it; ``config`` overrides the encoded ``conf``."""
    environment = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c0ffee", "CNI_IFNAME": "eth0"}
    encoded = base64.b64encode(json.dumps(conf or SHIM_CONF).encode()).decode()
    return json.dumps({"env": environment, "config": encoded if config is None else config}).encode()


def addressed(socket_dir: object) -> bytes:
    return body({**SHIM_CONF, "daemonSocketDir": socket_dir})


def layout_of(root: Path) -> install.Layout:
    return install.Layout(host_root=root, bin_dir=root / "opt/cni/bin", conf_dir=root / "etc/cni/net.d")


def write(directory: Path, name: str, content: bytes) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(content)
    return path


def settings_of(**config: Any) -> Settings:
    return from_mapping({"socketDir": "/run/mine", "stateDir": "/var/lib/mine", **config})


def test_the_installer_looks_where_the_shim_spools_and_the_daemon_replays() -> None:
    assert str(spool.SHIM_DEFAULT_SPOOL_DIR) == install.SHIM_DEFAULT_SPOOL_DIR
    assert install.SHIM_DEFAULT_SOCKET_DIR == spool.SHIM_DEFAULT_SOCKET_DIR
    assert install.MAX_SPOOL_ENTRY_BYTES == server.MAX_BODY_BYTES
    assert install.MAX_CONF_DEPTH == protocol.MAX_JSON_DEPTH


def test_the_daemons_entries_in_the_shims_default_directory_are_purged_and_no_others(
    tmp_path: Path,
) -> None:
    """Its own spoolDir elsewhere (``<stateDir>/spool``): the entries a hand-written shim conf
    spooled for it in the default directory stayed on the host for ever."""
    default = tmp_path / str(spool.SHIM_DEFAULT_SPOOL_DIR).lstrip("/")
    own = write(tmp_path / "var/lib/mine/spool", "del-1-1-a.json", addressed("/run/mine"))
    ours = [
        write(default, "del-2-1-b.json", addressed("/run/mine/")),
        write(default, "del-3-1-c.json.rejected", addressed("/run//mine")),
        write(default, ".del-4-1-d.json.tmp", addressed("/run/mine")),
    ]
    theirs = [
        write(default, "del-5-1-e.json", addressed("/run/other")),
        write(default, "del-6-1-f.json", body()),  # the shim's default socket: another daemon's
        write(default, "del-7-1-g.json", b'{"env": {"CNI_COMM'),  # no address: the owner's to judge
        write(default, "del-8-1-h.json.rejected", addressed(5)),
    ]

    removed = install.purge_daemon_state(layout_of(tmp_path), settings_of())

    assert [path for path in [own, *ours] if path.exists()] == []
    assert [path for path in theirs if not path.exists()] == []
    assert set(ours) <= set(removed)
    assert default.is_dir(), "other daemons' entries keep it"


def test_the_shims_default_directory_goes_once_it_held_only_the_daemons_entries(tmp_path: Path) -> None:
    default = tmp_path / str(spool.SHIM_DEFAULT_SPOOL_DIR).lstrip("/")
    entry = write(default, "del-1-1-a.json", addressed("/run/mine"))

    removed = install.purge_daemon_state(layout_of(tmp_path), settings_of())

    assert not entry.exists()
    assert not default.exists()
    assert default in removed


def test_a_daemon_whose_spool_dir_is_the_default_one_purges_only_its_own_entries(tmp_path: Path) -> None:
    """The default settings (``stateDir`` ``/var/lib/multus-py``) make the shim's default directory
    the daemon's own: the purge removed every other daemon's spooled DELs with it, DELs their
    runtimes had heard success for."""
    default = tmp_path / str(spool.SHIM_DEFAULT_SPOOL_DIR).lstrip("/")
    ours = [
        write(default, "del-1-1-a.json", body()),  # the shim's default socket is this daemon's
        write(default, "del-2-1-b.json", b"torn"),  # no address: this daemon's to replay or reject
        write(default, "del-3-1-c.json.rejected", addressed(5)),
    ]
    theirs = write(default, "del-4-1-d.json", addressed("/run/other"))

    removed = install.purge_daemon_state(layout_of(tmp_path), from_mapping({}))

    assert [path for path in ours if path.exists()] == []
    assert theirs.exists()
    assert not set(removed) & {theirs, default}


def test_an_entry_addressed_through_a_link_to_the_daemons_socket_dir_is_its_own(tmp_path: Path) -> None:
    (tmp_path / "run/mine").mkdir(parents=True)
    (tmp_path / "run/link").symlink_to("mine")
    default = tmp_path / str(spool.SHIM_DEFAULT_SPOOL_DIR).lstrip("/")
    entry = write(default, "del-1-1-a.json", addressed("/run/link"))

    install.purge_daemon_state(layout_of(tmp_path), settings_of())

    assert not entry.exists()


DEEP: Any = {}
for _ in range(70):
    DEEP = {"x": DEEP}

BODIES = {
    "no key": body(),
    "empty": addressed(""),
    "null": addressed(None),
    "trailing slash": addressed("/run/other/"),
    "a number": addressed(5),
    "folded key": body({**SHIM_CONF, "DAEMON\u017focketdir": "/run/folded"}),
    "the last key wins": body({**SHIM_CONF, "daemonSocketDir": "/run/a", "DaemonSocketDir": "/run/b"}),
    "a DEL whose config is no base64": body(config="%%%"),
    "a DEL whose config is no object": body(config=base64.b64encode(b"[1]").decode()),
    "an ADD whose config is no base64": body(command="ADD", config="%%%"),
    "a NUL in the conf": body({**SHIM_CONF, "daemonSocketDir": "/run/a", "x": "a\u0000b"}),
    "a lone surrogate in the conf": body({**SHIM_CONF, "daemonSocketDir": "/run/a", "x": "\ud800"}),
    "nested too deep": body({**SHIM_CONF, "daemonSocketDir": "/run/a", "deep": DEEP}),
    "NaN": body(config=base64.b64encode(b'{"daemonSocketDir": "/run/a", "x": NaN}').decode()),
    "beyond float64": body(config=base64.b64encode(b'{"daemonSocketDir": "/run/a", "x": 1e999}').decode()),
    "not JSON": b"torn",
    "no object": b"[]",
    "env of a number": json.dumps({"env": {"CNI_COMMAND": 1}, "config": ""}).encode(),
    "env keys with blanks": json.dumps({"ENV": {" CNI_COMMAND ": "DEL"}, "Config": "%"}).encode(),
    "no conf, the body's address": json.dumps(
        {"env": {"CNI_COMMAND": "DEL"}, "config": "", "daemonSocketDir": "/run/b"}
    ).encode(),
    "no conf, the body's address folded": json.dumps(
        {"env": {"CNI_COMMAND": "DEL"}, "config": "", "DAEMON\u017focketdir": "/run/b"}
    ).encode(),
    "no conf, the body's address a number": json.dumps(
        {"env": {"CNI_COMMAND": "DEL"}, "config": "", "daemonSocketDir": 5}
    ).encode(),
    "no conf, the body's address with a NUL": json.dumps(
        {"env": {"CNI_COMMAND": "DEL"}, "config": "", "daemonSocketDir": "/run/\u0000"}
    ).encode(),
    "a conf, the body's address ignored": json.dumps(
        {"env": {"CNI_COMMAND": "DEL"}, "config": "e30=", "daemonSocketDir": "/run/b"}
    ).encode(),
}


@pytest.mark.parametrize("content", BODIES.values(), ids=BODIES.keys())
def test_the_installer_reads_an_entrys_address_as_the_daemon_does(tmp_path: Path, content: bytes) -> None:
    try:
        expected = spool._address(protocol.decode_body(content), content)
    except CniError:
        expected = None
    entry = write(tmp_path, "del-1-1-a.json", content)

    address = install.spooled_address(entry)

    assert (None if address is None else Path(address)) == expected


def test_an_entry_that_is_no_regular_file_or_too_large_has_no_address(tmp_path: Path) -> None:
    large = write(tmp_path, "del-1-1-a.json", b" " * (install.MAX_SPOOL_ENTRY_BYTES + 1))
    link = tmp_path / "del-2-1-b.json"
    link.symlink_to(write(tmp_path, "target", body()))

    assert install.spooled_address(large) is None
    assert install.spooled_address(link) is None


def test_the_installer_reads_the_record_of_earlier_spool_dirs_the_daemon_writes() -> None:
    assert install.SPOOL_RECORD_NAME == spool.SPOOL_RECORD_NAME


def test_the_spool_dirs_of_earlier_runs_the_daemon_recorded_are_purged_with_the_record(
    tmp_path: Path,
) -> None:
    """The daemon still replays an earlier ``spoolDir`` (``spoolDir`` changed across a restart): its
    entries stayed on the host, and the directory."""
    settings = settings_of(spoolDir="/var/lib/spool-b")
    record = tmp_path / "var/lib/mine" / spool.SPOOL_RECORD_NAME
    earlier = tmp_path / "var/lib/spool-a"
    entries = [
        write(earlier, "del-1-1-a.json", addressed("/run/other")),  # every entry there is the daemon's
        write(earlier, "del-2-1-b.json.rejected", b"torn"),
    ]
    write(
        record.parent,
        record.name,
        json.dumps({"spoolDirs": ["/var/lib/spool-a", "/var/lib/spool-b"]}).encode(),
    )

    removed = install.purge_daemon_state(layout_of(tmp_path), settings)

    assert [path for path in entries if path.exists()] == []
    assert not earlier.exists()
    assert not record.exists()
    assert {record, earlier} <= set(removed)
