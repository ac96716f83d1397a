"""Invariant 5b, DEL always terminates: every refusal path, through a real daemon and shim.

A delegate refused before any plugin executed (a ``type`` that is a path, a plugin not on the
path, one without an execute bit, one whose exec fails) leaves nothing recorded, so the DEL that
follows succeeds. A
delegate recorded with a ``type`` refused by name or a config that does not parse (as an older
version recorded them) is forgotten by DEL, GC and recovery alike, the reason in the history;
only failures that may pass keep an attachment pending.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]


def _counts(cluster: Cluster) -> tuple[int, int]:
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        sandboxes = connection.execute("SELECT count(*) FROM sandboxes").fetchone()[0]
        attachments = connection.execute("SELECT count(*) FROM attachments").fetchone()[0]
    return sandboxes, attachments


def _history(cluster: Cluster, container: str) -> list[tuple[str, str, str, str, str | None]]:
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        return connection.execute(
            "SELECT command, step, trigger, outcome, error_msg FROM history"
            " WHERE container_id = ? ORDER BY id",
            (container,),
        ).fetchall()


def _conf(name: str, plugin_type: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": name, "type": plugin_type}


def _start_with_bad_network(cluster: Cluster, started: Callable[..., Cluster], plugin_type: str) -> Cluster:
    """The cluster network, a healthy second network, then one naming ``plugin_type``."""
    extra = cluster.bridge_conflist(
        "extra0", "10.241.0.0/24", default_route=False, bridge=f"{cluster.bridge}x0"
    )
    cluster.write_network(cluster.conf_dir, "20-extra0.conflist", extra)
    cluster.write_network(cluster.conf_dir, "50-bad.conf", _conf("bad", plugin_type))
    return started(defaultNetworks=["extra0", "bad"])


@pytest.mark.parametrize(
    ("plugin_type", "named"),
    [("../../evil-plugin", "../../evil-plugin"), ("no-such-plugin", "no-such-plugin")],
    ids=["type-is-a-path", "plugin-not-on-the-path"],
)
def test_refused_plugin_type_is_refused_at_add_with_nothing_recorded_and_del_succeeds(
    cluster: Cluster, started: Any, plugin_type: str, named: str
) -> None:
    _start_with_bad_network(cluster, started, plugin_type)
    netns = cluster.new_netns()
    container = new_container_id()

    added = cluster.run_shim("ADD", container_id=container, netns=netns)

    assert added.returncode == 1
    error = added.json()
    assert error["code"] == 7
    assert named in error["msg"]
    assert netns.links() == {"lo"}, "nothing ran: the plugins are checked before any delegate starts"
    assert _counts(cluster) == (0, 0)
    assert cluster.leases() == []
    assert [row[1] for row in _history(cluster, container)] == ["request"], "no delegate line: none ran"
    deleted = cluster.run_shim("DEL", container_id=container, netns=netns)
    assert deleted.returncode == 0, deleted.stdout
    status, report = cluster.post("/gc")
    assert status == 200, report
    assert json.loads(report)["failed"] == []


def test_plugin_without_an_execute_bit_is_refused_at_add_with_nothing_recorded(
    cluster: Cluster, started: Any
) -> None:
    not_executable = cluster.bin_dir / "not-executable"
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    not_executable.chmod(0o644)  # a regular file on the path that exec would refuse
    _start_with_bad_network(cluster, started, "not-executable")
    netns = cluster.new_netns()
    container = new_container_id()

    added = cluster.run_shim("ADD", container_id=container, netns=netns)

    assert added.returncode == 1
    error = added.json()
    assert error["code"] == 7
    assert f"found at {not_executable} is not executable" in error["msg"]
    assert netns.links() == {"lo"}, "nothing ran: the plugins are checked before any delegate starts"
    assert _counts(cluster) == (0, 0)
    assert [row[1] for row in _history(cluster, container)] == ["request"], "no delegate line: none ran"
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0


def test_plugin_that_cannot_be_executed_is_never_left_pending(cluster: Cluster, started: Any) -> None:
    cannot_run = cluster.bin_dir / "cannot-run"
    cannot_run.write_text("#!/nonexistent/interpreter\n")
    cannot_run.chmod(0o755)  # found on the path, but exec fails (its interpreter is missing)
    _start_with_bad_network(cluster, started, "cannot-run")
    netns = cluster.new_netns()
    container = new_container_id()

    added = cluster.run_shim("ADD", container_id=container, netns=netns)

    assert added.returncode == 1
    assert added.json()["code"] == 7, "a plugin that cannot be executed as it is: an invalid config"
    assert "cannot-run" in added.json()["msg"]
    assert netns.links() == {"lo"}, "the delegates that ran were rolled back"
    assert cluster.leases() == []
    assert _counts(cluster) == (0, 0)
    rolled_back = [row[2:4] for row in _history(cluster, container) if row[2] == "rollback"]
    assert rolled_back == [("rollback", "ok"), ("rollback", "ok")], "only eth0 and net1 needed a DEL"
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0


def _corrupt_recorded(cluster: Cluster, container: str, ifname: str, config: bytes) -> None:
    """What an older daemon left behind: an attachment whose DEL can never run."""
    with sqlite3.connect(cluster.state_db) as connection:
        changed = connection.execute(
            "UPDATE attachments SET config = ? WHERE container_id = ? AND ifname = ?",
            (config, container, ifname),
        ).rowcount
    assert changed == 1


UNDELETABLE = {
    "type-is-a-path": json.dumps(_conf("extra0", "../../evil-plugin")).encode(),
    "config-does-not-parse": b'{"cniVersion": "1.0.0", "name": "extra0", "type": ',
}


@pytest.mark.parametrize("config", UNDELETABLE.values(), ids=UNDELETABLE.keys())
@pytest.mark.parametrize("by", ["runtime-del", "gc", "recovery"])
def test_recorded_delegate_whose_del_can_never_run_is_forgotten_with_the_reason(
    started: Any, config: bytes, by: str
) -> None:
    cluster: Cluster = started(default_networks=1)
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    _corrupt_recorded(cluster, container, "net1", config)

    if by == "runtime-del":
        deleted = cluster.run_shim("DEL", container_id=container, netns=netns)
        assert deleted.returncode == 0, deleted.stdout
    elif by == "gc":
        netns.delete()
        status, report = cluster.post("/gc")
        assert status == 200, report
        assert json.loads(report)["failed"] == []
    else:
        cluster.stop_daemon(signal.SIGKILL)
        netns.delete()
        cluster.start_daemon(env={"MULTUS_PY_BOOT_ID": "another-boot"})

    assert _counts(cluster) == (0, 0), "the DEL finished: nothing stays pending"
    delegate_dels = [row for row in _history(cluster, container) if row[0] == "DEL" and row[1] == "delegate"]
    assert [row[3] for row in delegate_dels] == ["error", "ok"], "net1 first (newest), then eth0"
    assert "can never run" in (delegate_dels[0][4] or "")
    if by == "runtime-del":
        assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0


def test_failure_that_may_pass_keeps_the_attachment_pending_until_it_does(started: Any) -> None:
    cluster: Cluster = started(default_networks=1)
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    failing = {
        "cniVersion": "1.0.0",
        "name": "extra0",
        "type": "recorder",
        "recorder": {"fail": {"code": 11, "msg": "busy"}, "failOn": "DEL"},
    }
    _corrupt_recorded(cluster, container, "net1", json.dumps(failing).encode())

    deleted = cluster.run_shim("DEL", container_id=container, netns=netns)

    assert deleted.returncode == 1
    assert deleted.json()["code"] == 11
    assert _counts(cluster) == (1, 1), "a plugin that exited non-zero may succeed later: net1 stays"
    _corrupt_recorded(cluster, container, "net1", json.dumps({**failing, "recorder": {}}).encode())
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0
    assert _counts(cluster) == (0, 0)


def _refusing(conflist: dict[str, Any], index: int) -> dict[str, Any]:
    """``conflist`` with plugin ``index`` given an ``mtu`` its plugin cannot decode: the reference
    plugins refuse the config as they load it, with the same error object at ADD and at DEL."""
    plugins = [dict(plugin) for plugin in conflist["plugins"]]
    plugins[index]["mtu"] = "not-a-number"
    return {**conflist, "plugins": plugins}


def _start_with_refused_network(cluster: Cluster, started: Callable[..., Cluster], refused: str) -> None:
    """The cluster network, a healthy second network, then a third whose bridge (``refused`` is
    "first") or whose tuning plugin after a working bridge ("later") refuses its config."""
    bad = cluster.bridge_conflist(
        "bad",
        "10.242.0.0/24",
        default_route=False,
        bridge=f"{cluster.bridge}x1",
        plugins_after=[{"type": "tuning"}],
    )
    extra = cluster.bridge_conflist(
        "extra0", "10.241.0.0/24", default_route=False, bridge=f"{cluster.bridge}x0"
    )
    cluster.write_network(cluster.conf_dir, "20-extra0.conflist", extra)
    cluster.write_network(cluster.conf_dir, "50-bad.conflist", _refusing(bad, 0 if refused == "first" else 1))
    started(defaultNetworks=["extra0", "bad"])


@pytest.mark.parametrize("refused", ["first", "later"])
def test_plugin_that_refuses_its_config_at_add_and_del_alike_leaves_nothing_pending(
    cluster: Cluster, started: Any, refused: str
) -> None:
    _start_with_refused_network(cluster, started, refused)
    netns = cluster.new_netns()
    container = new_container_id()

    added = cluster.run_shim("ADD", container_id=container, netns=netns)

    assert added.returncode == 1
    assert added.json()["code"] == 999, "the plugin's own error object, passed through"
    assert "cannot unmarshal" in added.json()["msg"]
    assert netns.links() == {"lo"}, "the rollback removed what the delegates before it and its bridge made"
    assert cluster.leases() == [], "a later refusal: the bridge before it was DELed, its lease released"
    assert _counts(cluster) == (0, 0), "the refusal at DEL is the ADD's: nothing of it stays pending"
    rolled_back = [row for row in _history(cluster, container) if row[2] == "rollback"]
    assert [row[3] for row in rolled_back] == ["error", "ok", "ok"], "net2 (newest) first"
    assert "refused this config at ADD alike" in (rolled_back[0][4] or "")
    deleted = cluster.run_shim("DEL", container_id=container, netns=netns)
    assert deleted.returncode == 0, deleted.stdout


def test_a_refusal_alike_is_recognised_after_a_crash_before_the_rollback_was_recorded(
    cluster: Cluster, started: Any
) -> None:
    cluster.daemon_env["MULTUS_PY_CRASH_AT"] = "rollback-after-del"  # after net2's DEL ran, unrecorded
    _start_with_refused_network(cluster, started, "later")
    netns = cluster.new_netns()
    container = new_container_id()
    cluster.run_shim("ADD", container_id=container, netns=netns)  # the daemon died answering it
    assert _counts(cluster) == (1, 3), "the ADD's error is recorded; its rollback is not"

    del cluster.daemon_env["MULTUS_PY_CRASH_AT"]
    cluster.stop_daemon(signal.SIGKILL)
    cluster.start_daemon()  # recovery DELs the sandbox whose ADD never finished

    assert _counts(cluster) == (0, 0)
    assert netns.links() == {"lo"}
    assert cluster.leases() == []
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0


def test_a_plugin_failing_differently_at_del_than_at_add_stays_pending(
    cluster: Cluster, started: Any
) -> None:
    """Only the very refusal of the ADD is taken as "nothing was created": a DEL failure of its own
    (here the same plugin failing because the config changed under it) may pass, so it stays."""
    _start_with_refused_network(cluster, started, "first")
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 1
    assert _counts(cluster) == (0, 0)

    healthy = cluster.bridge_conflist(
        "bad", "10.242.0.0/24", default_route=False, bridge=f"{cluster.bridge}x1"
    )
    cluster.write_network(cluster.conf_dir, "50-bad.conflist", healthy)
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    failing_differently = _refusing(healthy, 0)
    failing_differently["plugins"][0]["mtu"] = {"a": "b"}  # another decoding error than any ADD saw
    _corrupt_recorded(cluster, container, "net2", json.dumps(failing_differently).encode())

    deleted = cluster.run_shim("DEL", container_id=container, netns=netns)

    assert deleted.returncode == 1, "no ADD of it failed: its DEL's failure may pass"
    assert _counts(cluster) == (1, 1)


def test_a_list_of_a_version_its_plugins_do_not_support_leaves_nothing_pending(
    cluster: Cluster, started: Any
) -> None:
    """The reference plugins of this node support CNI up to 1.0.0: a 1.1.0 list's bridge refuses
    it at ADD (code 1), and tuning after it never runs; at DEL both refuse it again. Tuning's DEL
    failure kept the attachment pending for ever, though its ADD never ran."""
    bad = cluster.bridge_conflist(
        "bad",
        "10.242.0.0/24",
        default_route=False,
        bridge=f"{cluster.bridge}x1",
        plugins_after=[{"type": "tuning"}],
    )
    bad["cniVersion"] = "1.1.0"
    cluster.write_network(cluster.conf_dir, "50-bad.conflist", bad)
    started(defaultNetworks=["bad"])
    netns = cluster.new_netns()
    container = new_container_id()

    added = cluster.run_shim("ADD", container_id=container, netns=netns)

    assert added.returncode == 1
    assert added.json()["code"] == 1, "the plugin's own refusal, passed through"
    assert netns.links() == {"lo"}
    assert _counts(cluster) == (0, 0), "neither plugin's DEL failure keeps the attachment pending"
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0
