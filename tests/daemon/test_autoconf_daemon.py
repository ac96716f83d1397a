"""The daemon's ``autoconf`` task in a real daemon process: a configuration it cannot use yet is one
line in the log naming the key, and the task writes ``00-multus.conf`` as soon as it can."""

from __future__ import annotations

import pytest

from app.sandbox.processes import ProcessError, wait_until
from tests.e2e.conftest import Cluster

pytestmark = [
    pytest.mark.slow,  # starts a daemon process
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what this is about
]


def test_an_autoconfig_dir_that_is_a_file_is_refused_in_one_line_not_a_crash_loop(cluster: Cluster) -> None:
    # before: NotADirectoryError escaped the task on every pass, a traceback each time
    autoconf_dir = cluster.root / "auto"
    autoconf_dir.write_text("not a directory")
    cluster.daemon_config.update(multusAutoconfigDir=str(autoconf_dir), autoconfIntervalSeconds=0.05)
    cluster.start_daemon()
    refusal = f"cannot list {autoconf_dir} (daemon config key 'multusAutoconfigDir'): Not a directory"
    try:
        wait_until(
            lambda: refusal in cluster.daemon_log.read_text(), what="the refusal", daemon=cluster.process
        )
        autoconf_dir.unlink()
        cluster.write_network(
            autoconf_dir, "10-primary.conflist", cluster.bridge_conflist("p", "10.240.0.0/24")
        )
        generated = cluster.net_d / "00-multus.conf"
        wait_until(generated.exists, what="00-multus.conf", daemon=cluster.process)
    except ProcessError as failed:
        raise AssertionError(str(failed)) from None

    assert cluster.stop_daemon() == 0
    log = cluster.daemon_log.read_text()
    assert log.count(refusal) == 1, "logged once, not on every pass"
    assert "crashed" not in log
    assert "Traceback" not in log
    assert str(autoconf_dir / "10-primary.conflist") in generated.read_text()
