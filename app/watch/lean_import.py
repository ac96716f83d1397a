"""Importing kubernetes_asyncio without its 800 generated model modules (about 35 MiB).

``import kubernetes_asyncio.client`` runs the package's ``__init__``, which imports every API
class and every model class; the daemon uses none of them: it speaks raw JSON through
``ApiClient.call_api`` (``_preload_content=False``) and needs only the client, its configuration
and the kubeconfig/in-cluster loaders. ``prepare`` registers the ``kubernetes_asyncio``,
``kubernetes_asyncio.client`` and ``kubernetes_asyncio.client.models`` packages as bare package
modules (models resolved lazily, by name, should anything ask), so later imports load only the
submodules they name. This is what lets the daemon meet its memory budget with the mandated
client.

If the library's layout ever defeats this, ``prepare`` undoes its stubs and lets the normal, full
import happen (logged once): correct, only heavier. Called by ``app.watch.client`` before it
imports anything of kubernetes_asyncio; a process that already imported it fully is left alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import sys
import types
from pathlib import Path

log = logging.getLogger(__name__)

_STUBBED = ("kubernetes_asyncio", "kubernetes_asyncio.client", "kubernetes_asyncio.client.models")
_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


def prepare() -> None:
    if "kubernetes_asyncio" in sys.modules:
        return
    spec = importlib.util.find_spec("kubernetes_asyncio")
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: the real import will say so
    root = Path(next(iter(spec.submodule_search_locations)))
    try:
        _install_stubs(root)
    except Exception:  # any surprise in the library's layout: fall back to the full import
        for name in _STUBBED:
            sys.modules.pop(name, None)
        for name in [n for n in sys.modules if n.startswith("kubernetes_asyncio.")]:
            sys.modules.pop(name, None)
        log.warning("lean import of kubernetes_asyncio failed; importing it whole", exc_info=True)


def _package(name: str, path: Path) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    module.__package__ = name
    sys.modules[name] = module
    return module


def _install_stubs(root: Path) -> None:
    package = _package("kubernetes_asyncio", root)
    client = _package("kubernetes_asyncio.client", root / "client")
    models = _package("kubernetes_asyncio.client.models", root / "client" / "models")

    def model(name: str) -> object:
        if not name[:1].isupper():
            raise AttributeError(name)
        module = importlib.import_module(f"{models.__name__}.{_CAMEL_BOUNDARY.sub('_', name).lower()}")
        return getattr(module, name)

    models.__getattr__ = model  # type: ignore[method-assign]
    api_client = importlib.import_module("kubernetes_asyncio.client.api_client")
    configuration = importlib.import_module("kubernetes_asyncio.client.configuration")
    client.ApiClient = api_client.ApiClient  # type: ignore[attr-defined]
    client.Configuration = configuration.Configuration  # type: ignore[attr-defined]
    client.models = models  # type: ignore[attr-defined]
    package.client = client  # type: ignore[attr-defined]
