"""pyroute2's ``IPRoute`` without the package's ``__init__``, which imports every pyroute2 module.

``from pyroute2 import IPRoute`` runs ``pyroute2/__init__.py``, and that imports the whole library:
NDB and IPDB, conntrack, ethtool, nl80211, ipset, ipvs, the plan9 server, multiprocessing, about
220 modules and 12 MiB of a process's memory, measured in a fresh interpreter. ``app.attach.netns``
needs ``IPRoute`` and ``NetlinkError`` only: loading ``pyroute2.iproute.linux`` on its own takes
about half of that. ``iproute`` registers ``pyroute2`` as a bare package module (its path, no
names), so that submodules load alone; the first read of any other name of the package (a
``from pyroute2 import NetNS`` elsewhere in the process) runs the real ``__init__`` in that module
then, so every other user of pyroute2 sees the package whole, as it would have. A process that
imported pyroute2 before is left alone. If the library's layout defeats this, the full import
happens instead: correct, only heavier.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from typing import Any

PACKAGE = "pyroute2"
IPROUTE_MODULE = "pyroute2.iproute.linux"

_lock = threading.RLock()
"""Held while the bare package is registered or completed (netlink calls run in worker threads)."""


def iproute() -> Any:
    """The ``IPRoute`` class (called once per netlink call). Through ``import_module`` every time,
    not ``sys.modules``: a module another thread is still importing is already there, half made,
    and the import system makes a second importer wait for it to finish."""
    if PACKAGE not in sys.modules:
        with _lock:
            if PACKAGE not in sys.modules:
                _register_bare_package()
    return importlib.import_module(IPROUTE_MODULE).IPRoute


def _register_bare_package() -> None:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # not installed, or laid out otherwise: the real import says so, or happens whole
    loader = spec.loader
    package = importlib.util.module_from_spec(spec)
    completed = False

    def whole_package_name(name: str) -> object:
        """A name the real ``__init__`` defines: run it in this module (once), then read the name.
        A submodule's name is none (the import system asks for it before it imports the submodule)."""
        nonlocal completed
        if name.startswith("__") or completed or importlib.util.find_spec(f"{PACKAGE}.{name}") is not None:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
        with _lock:
            if not completed:
                completed = True
                del package.__getattr__
                loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = whole_package_name  # type: ignore[method-assign]
    sys.modules[PACKAGE] = package
