"""Plugin chains configured on disk: a conflist's ``<dir>/<name>/*.conf``, and ``auxiliaryCNIChainName``.

Called by network resolution (``app.attach.networks``) on ADD only. Both produce configuration
bytes that already hold the whole chain, so the bytes the engine records before running the
delegate are the chain DEL, recovery and GC replay: nothing here is read again after the ADD.

* A ``*.conflist`` file whose ``loadOnlyInlinedPlugins`` is not true gets, after its inline
  ``plugins``, the plugin confs ``<dir of the file>/<network name>/*.conf`` in lexical order, as
  libcni's ``NetworkConfFromFile`` loads them (CNI spec 1.1.0); such a file may then omit ``plugins``.
* ``auxiliaryCNIChainName: <chain>`` (with ``clusterNetwork`` a path) appends one last delegate named
  ``<chain>``: a conflist whose first plugin is ``{"type": "passthru", "name": "passthru-cni"}``
  followed by ``<dir of clusterNetwork>/<chain>/*.conf``, as upstream Multus does, and only when that
  directory has at least one plugin. ``passthru`` is installed next to the shim by ``multus-install``
  (``app.cli.passthru``) because Debian's plugins lack it.

Errors are CNI errors naming the file and field (code 7; an unreadable file code 5). No execution.
"""

from __future__ import annotations

import json
import os
from typing import Final

from app.cni import conf as cniconf
from app.cni import results
from app.cni.types import CniError, ErrorCode, JsonObject, NetworkConfigList

PASSTHRU_PLUGIN: Final = {"type": "passthru", "name": "passthru-cni"}
INLINED_ONLY_KEY: Final = "loadOnlyInlinedPlugins"


def load_conflist_file(path: str, data: bytes) -> NetworkConfigList:
    """A conf file's network, a ``*.conflist`` one with its on-disk plugins appended (see above)."""
    if not path.endswith(".conflist"):
        return cniconf.load_network_list(data, source=path)
    try:
        document = results.parse_json(data)
    except (ValueError, RecursionError):
        return cniconf.load_network_list(data, source=path)  # its error names the file
    if not isinstance(document, dict) or _inlined_only(document, path):
        return cniconf.load_network_list(data, source=path)
    name = document.get("name")
    if not isinstance(name, str) or not name:
        return cniconf.load_network_list(data, source=path)
    extra = plugins_in(os.path.join(os.path.dirname(path), name))
    if not extra:
        return cniconf.load_network_list(data, source=path)
    inline = document.get("plugins", [])
    if not isinstance(inline, list):
        return cniconf.load_network_list(data, source=path)
    document["plugins"] = [*inline, *extra]
    merged = cniconf.encode(document, what=f"{path} with the plugins of {name}/")
    return cniconf.load_network_list(merged, source=path)


def auxiliary_chain(*, chain: str, cluster_network: str, cni_version: str) -> NetworkConfigList | None:
    """The ``auxiliaryCNIChainName`` delegate; None when ``<dir(clusterNetwork)>/<chain>`` has no plugin."""
    if not chain or "/" in chain or chain in (".", ".."):
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "invalid multus configuration: key 'auxiliaryCNIChainName' must be a directory name",
            f"got {json.dumps(chain)}",
        )
    if "/" not in cluster_network:
        return None
    extra = plugins_in(os.path.join(os.path.dirname(cluster_network), chain))
    if not extra:
        return None
    document: JsonObject = {
        "cniVersion": cni_version,
        "name": chain,
        "plugins": [dict(PASSTHRU_PLUGIN), *extra],
    }
    data = cniconf.encode(document, what=f"auxiliary CNI chain {chain}")
    return cniconf.load_network_list(data, source=f"auxiliary CNI chain {chain}")


def plugins_in(directory: str) -> list[JsonObject]:
    """The plugin objects of ``directory``'s ``*.conf`` files, lexical order; ``[]`` if it is absent."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory) if entry.name.endswith(".conf"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise CniError.reading(f"directory {directory}", exc) from exc
    plugins: list[JsonObject] = []
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            plugins.append(_plugin_file(path))
    return plugins


def _plugin_file(path: str) -> JsonObject:
    """One chained plugin's conf (libcni ``NetworkPluginConfFromBytes``: an object with a ``type``)."""
    data = cniconf.read_regular_file(path, limit=cniconf.MAX_CONF_FILE_BYTES)
    try:
        plugin = results.parse_json(data)
    except (ValueError, RecursionError) as exc:
        raise CniError(ErrorCode.DECODING_FAILURE, f"{path}: error parsing configuration: {exc}") from exc
    if not isinstance(plugin, dict):
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"{path}: configuration must be a JSON object")
    kind = plugin.get("type")
    if not isinstance(kind, str) or not kind:
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG, f"{path}: error parsing configuration: missing 'type'"
        )
    return plugin


def _inlined_only(document: JsonObject, path: str) -> bool:
    """``loadOnlyInlinedPlugins``: true/false, or the strings libcni also accepts (any case)."""
    value = document.get(INLINED_ONLY_KEY, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CniError(
        ErrorCode.INVALID_NETWORK_CONFIG,
        f'{path}: invalid value {json.dumps(value)} for "{INLINED_ONLY_KEY}": must be true or false',
    )
