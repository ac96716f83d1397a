"""The daemon's event loop: uvloop's where it is installed (a dependency), asyncio's otherwise."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

import pytest
import uvloop

from app.daemon import main
from tests.e2e.conftest import Cluster, new_container_id


def test_the_factory_makes_uvloop_loops_where_uvloop_is_installed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.daemon")
    factory = main.event_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    assert "event loop: uvloop" in caplog.text


def test_without_uvloop_the_daemon_runs_on_asyncios_loop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # ``import uvloop`` raises ImportError
    caplog.set_level(logging.INFO, logger="app.daemon")
    assert main.event_loop_factory() is None
    with asyncio.Runner(loop_factory=None) as runner:  # what the daemon then runs on
        assert not isinstance(runner.get_loop(), uvloop.Loop)
    assert "event loop: asyncio's (uvloop is not installed)" in caplog.text


@pytest.mark.slow  # starts a daemon process
@pytest.mark.usefixtures("premigrated_state")  # the first start is not what this is about
def test_a_daemon_process_serves_on_uvloop(started: Callable[..., Cluster]) -> None:
    cluster = started()
    container_id = new_container_id()
    netns = cluster.new_netns()
    assert cluster.run_shim("ADD", container_id=container_id, netns=netns).returncode == 0
    assert cluster.run_shim("DEL", container_id=container_id, netns=netns).returncode == 0
    assert "event loop: uvloop" in cluster.daemon_log.read_text()
