"""Importing kubernetes_asyncio without its 800 generated model modules and its unused dependencies.

``import kubernetes_asyncio.client`` runs the package's ``__init__``, which imports every API
class and every model class; the daemon uses none of them: it speaks raw JSON through
``ApiClient.call_api`` (``_preload_content=False``) and needs only the client, its configuration
and the kubeconfig/in-cluster loaders. ``prepare`` registers the ``kubernetes_asyncio``,
``kubernetes_asyncio.client``, ``kubernetes_asyncio.client.models`` and
``kubernetes_asyncio.config`` packages as bare package modules (their names resolved lazily,
should anything ask), so later imports load only the submodules they name. This is what lets
the daemon meet its memory budget with the mandated client.

The client's modules also import, at their top, what only paths the daemon never takes use:
urllib3 (HTTP basic auth headers), ``dateutil.parser`` (decoding dates into models) and
``multiprocessing.pool`` (a thread pool for synchronous callers), about 3 MiB together; the
kubeconfig loader imports PyYAML, which a JSON kubeconfig (the emulator's) or the in-cluster
account never needs. While those client modules import, each of these names is a
``DeferredModule`` in ``sys.modules``: the names the client takes from it stand for the real
ones and import them on first use, and the stand-ins leave ``sys.modules`` once the client is
imported, so any other importer gets the real module. The kubeconfig loader's ``yaml.safe_load``
reads JSON itself and hands anything else to PyYAML.

If the library's layout ever defeats this, ``prepare`` undoes its stubs and lets the normal, full
import happen (logged once): correct, only heavier. Called by ``app.watch.client`` before it
imports anything of kubernetes_asyncio; a process that already imported it fully is left alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import re
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

_STUBBED = (
    "kubernetes_asyncio",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.models",
    "kubernetes_asyncio.config",
)
_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")
KUBE_CONFIG = "kubernetes_asyncio.config.kube_config"

CLIENT_DEFERRED: dict[str, tuple[str, ...]] = {
    "urllib3": (),
    "dateutil.parser": ("parse",),
    "multiprocessing.pool": ("ThreadPool",),
}
"""Modules the client imports but the daemon's paths never use, with the names taken from them."""


class DeferredModule(types.ModuleType):
    """Stands in for module ``__name__`` while other modules import it; the real one loads on use.

    ``from <module> import <name>`` for a name in ``proxied`` gets a function that imports the
    real module when called; any other attribute read imports it at once."""

    def __init__(self, name: str, proxied: tuple[str, ...] = ()) -> None:
        super().__init__(name)
        self.__proxied = proxied

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        if attribute in self.__proxied:
            return _on_first_call(self.__name__, attribute)
        return getattr(real_module(self.__name__), attribute)


def real_module(name: str) -> types.ModuleType:
    """The real module ``name``, imported now if needed (a stand-in still registered is dropped)."""
    if isinstance(sys.modules.get(name), DeferredModule):
        del sys.modules[name]
    return importlib.import_module(name)


def _on_first_call(module: str, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(real_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


@contextmanager
def standing_in(deferred: dict[str, tuple[str, ...]]) -> Iterator[None]:
    """``DeferredModule``s for the modules of ``deferred`` not imported yet, for the ``with`` body."""
    inserted = []
    for name, proxied in deferred.items():
        if name not in sys.modules:
            sys.modules[name] = DeferredModule(name, proxied)
            inserted.append(name)
    try:
        yield
    finally:
        for name in inserted:
            if isinstance(sys.modules.get(name), DeferredModule):
                del sys.modules[name]


class _JsonFirstYaml(DeferredModule):
    """PyYAML as the kubeconfig loader sees it: JSON documents are read without importing PyYAML."""

    def __init__(self) -> None:
        super().__init__("yaml")

    @staticmethod
    def safe_load(stream: str | bytes | IO[str] | IO[bytes]) -> Any:
        text = stream.read() if not isinstance(stream, str | bytes) else stream
        try:
            return json.loads(text)
        except ValueError:  # not JSON: YAML proper
            return real_module("yaml").safe_load(text)


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


def kube_config() -> types.ModuleType:
    """``kubernetes_asyncio.config.kube_config``, its ``yaml`` reading JSON without PyYAML."""
    loaded = sys.modules.get(KUBE_CONFIG)
    if loaded is not None:
        return loaded
    if "yaml" in sys.modules:
        return importlib.import_module(KUBE_CONFIG)
    sys.modules["yaml"] = _JsonFirstYaml()
    try:
        return importlib.import_module(KUBE_CONFIG)
    finally:
        if isinstance(sys.modules.get("yaml"), DeferredModule):
            del sys.modules["yaml"]


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
    config = _package("kubernetes_asyncio.config", root / "config")

    def model(name: str) -> object:
        if not name[:1].isupper():
            raise AttributeError(name)
        module = importlib.import_module(f"{models.__name__}.{_CAMEL_BOUNDARY.sub('_', name).lower()}")
        return getattr(module, name)

    def config_name(name: str) -> object:
        """What the real ``kubernetes_asyncio.config`` exports, from the submodule defining it."""
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "ConfigException":
            return importlib.import_module(f"{config.__name__}.config_exception").ConfigException
        if name == "load_incluster_config":
            return importlib.import_module(f"{config.__name__}.incluster_config").load_incluster_config
        return getattr(kube_config(), name)

    models.__getattr__ = model  # type: ignore[method-assign]
    config.__getattr__ = config_name  # type: ignore[method-assign]
    with standing_in(CLIENT_DEFERRED):
        api_client = importlib.import_module("kubernetes_asyncio.client.api_client")
        configuration = importlib.import_module("kubernetes_asyncio.client.configuration")
    client.ApiClient = api_client.ApiClient  # type: ignore[attr-defined]
    client.Configuration = configuration.Configuration  # type: ignore[attr-defined]
    client.models = models  # type: ignore[attr-defined]
    package.client = client  # type: ignore[attr-defined]
    package.config = config  # type: ignore[attr-defined]
