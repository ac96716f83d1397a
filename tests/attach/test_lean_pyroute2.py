"""pyroute2's IPRoute loaded without the package's ``__init__`` (``app.attach.lean_pyroute2``), in a
fresh interpreter (the test process has the whole package already): the netlink calls work, the
rest of pyroute2 stays unloaded, and a later ``from pyroute2 import ...`` still gets everything."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    import threading
    from app.attach import lean_pyroute2

    got = []  # first use from several worker threads at once, as the daemon's netlink calls run
    threads = [threading.Thread(target=lambda: got.append(lean_pyroute2.iproute())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8 and len(set(got)) == 1, got
    IPRoute = lean_pyroute2.iproute()
    with IPRoute() as ipr:
        names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    assert "lo" in names, names
    from pyroute2.netlink.exceptions import NetlinkError
    loaded = sorted(name for name in sys.modules if name.startswith("pyroute2"))
    assert "pyroute2.ndb.main" not in loaded and "pyroute2.conntrack" not in loaded, loaded
    print(len(loaded))

    from pyroute2 import NDB, NetNS, IPRoute as WholeIPRoute
    import pyroute2
    assert WholeIPRoute is IPRoute and pyroute2.NetlinkError is NetlinkError
    assert "pyroute2.ndb.main" in sys.modules
    print(len([name for name in sys.modules if name.startswith("pyroute2")]))
    """
)


def test_iproute_alone_then_the_whole_package_on_demand() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    lean, whole = (int(line) for line in done.stdout.split())
    assert lean < whole
