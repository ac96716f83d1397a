"""What is at a netns path: a namespace (with its identity), provably none, or nothing knowable.

Only a missing path, or something at it that is no namespace (what an unmounted one leaves), proves
a namespace gone; a path that answers EACCES, ELOOP, ENAMETOOLONG, EIO, ... proves nothing (the
namespace may be a live pod's), and ``list_links`` then says "unreadable", not "gone".
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from app.attach import netns
from app.attach.netns import NetnsGoneError, NetnsState, NetnsUnreadableError
from tests.core.privileges import without_dac_override
from tests.core.support import Node


def looping(tmp_path: Path) -> str:
    """A path whose directory is a symlink to itself: every lookup through it fails with ELOOP."""
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    return str(loop / "ns")


def test_a_live_namespace_is_present_with_its_identity(node: Node) -> None:
    path = node.new_netns().path

    found = netns.look(path)

    info = os.stat(path)
    assert found.state is NetnsState.PRESENT
    assert found.identity == f"{info.st_dev}:{info.st_ino}" == netns.netns_identity(path)


def test_a_missing_path_is_gone_with_nothing_left(tmp_path: Path) -> None:
    for path in (str(tmp_path / "missing"), ""):
        found = netns.look(path)
        assert (found.state, found.leftover) == (NetnsState.GONE, False), path


def test_a_path_below_a_file_is_gone_with_a_leftover(tmp_path: Path) -> None:
    """Nothing can be below a file, but plugins refuse such a path (``ENOTDIR``: "failed to Statfs
    ...: not a directory") where they take a missing one for gone: no DEL may be handed it."""
    (tmp_path / "file").write_text("")

    found = netns.look(str(tmp_path / "file" / "ns"))

    assert (found.state, found.leftover) == (NetnsState.GONE, True)


def test_a_plain_file_left_at_the_path_is_gone_with_a_leftover(tmp_path: Path) -> None:
    (tmp_path / "ns").write_text("")

    found = netns.look(str(tmp_path / "ns"))

    assert (found.state, found.leftover, found.identity) == (NetnsState.GONE, True, "")


def test_a_path_that_loops_or_is_too_long_is_unreadable_not_gone(tmp_path: Path) -> None:
    for path, code in ((looping(tmp_path), errno.ELOOP), ("/" + "n" * 300, errno.ENAMETOOLONG)):
        found = netns.look(path)
        assert (found.state, found.error) == (NetnsState.UNREADABLE, code), path
        assert netns.netns_identity(path) == ""


def test_a_path_answering_permission_denied_is_unreadable_not_gone(node: Node, tmp_path: Path) -> None:
    """Issue: EACCES was read as gone; the namespace behind the locked directory is alive."""
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "ns").symlink_to(node.new_netns().path)
    locked.chmod(0)
    try:
        with without_dac_override():
            found = netns.look(str(locked / "ns"))
    finally:
        locked.chmod(0o755)

    assert (found.state, found.error) == (NetnsState.UNREADABLE, errno.EACCES)


async def test_listing_the_links_of_an_unreadable_netns_says_unreadable_not_gone(tmp_path: Path) -> None:
    with pytest.raises(NetnsUnreadableError) as raised:
        await netns.list_links(looping(tmp_path))

    assert not isinstance(raised.value, NetnsGoneError)
    assert raised.value.errno == errno.ELOOP


async def test_listing_the_links_of_a_gone_netns_says_gone(tmp_path: Path) -> None:
    (tmp_path / "ns").write_text("")

    for path in (str(tmp_path / "missing"), str(tmp_path / "ns")):
        with pytest.raises(NetnsGoneError):
            await netns.list_links(path)


async def test_the_links_of_a_live_netns_are_listed(node: Node) -> None:
    links = await netns.list_links(node.new_netns().path)

    assert set(links) == {"lo"}


def test_a_path_no_system_call_takes_holds_no_namespace() -> None:
    """A NUL, or a lone surrogate that encodes to no bytes: no file has such a name, and nothing
    could enter one (``os.stat`` raises ``ValueError``, not ``OSError``)."""
    for path in ("/run/netns/a\0b", "/run/netns/a\ud800"):
        found = netns.look(path)
        assert (found.state, found.leftover) == (NetnsState.GONE, True), repr(path)
