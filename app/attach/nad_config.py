"""A NetworkAttachmentDefinition's ``spec.config``: the delegate configuration it defines, checked.

Called by network resolution (``app.attach.networks``) on ADD for each selected NAD. It follows
upstream Multus's ``GetCNIConfigFromSpec`` and ``LoadDelegateNetConf``, keeping their error texts
verbatim inside a ``CniError`` code 7 whose message starts ``network-attachment-definition
<ns>/<name>: ``. Pure: no I/O, no Kubernetes client; an empty ``spec.config`` (a confDir file
named like the NAD) is left to the caller to find, and the full configuration check is the
caller's (``app.cni.conf``) when it loads the bytes returned here.

Two refusals upstream lacks. A plugin ``type`` of Multus itself (``multus-shim``, ``multus``), as a
plugin's or as its ``ipam.type``: run as a delegate (or as its IPAM plugin, which the delegate
execs with the CNI_PATH it got from the daemon), the shim asks this daemon to ADD the very sandbox
whose ADD is running it and waits behind that ADD's lock until the delegate timeout kills it; the
rollback's DEL of it waits behind the same lock, and so does each DEL the runtime retries while it
stays pending. And an ``ipam.type`` that is not a plain file name (``/``, ``..``, NUL: the rule the
daemon applies to a plugin ``type``, ``app.cni.invoke.check_plugin_type``): a plugin built on
libcni refuses it only once it runs (code 999 at ADD and DEL, after the intent was recorded and the
``bridge`` plugin has made its bridge), and one that does not would exec a file outside its path.

Three bounds upstream lacks, since whoever may create NADs chooses what the daemon records and runs:
a ``spec.config`` of at most ``MAX_CONFIG_BYTES`` (checked by its length before it is parsed or
encoded), nested at most ``delegate_inputs.MAX_NESTING`` levels (so the recorded bytes parse again
whatever stack DEL, recovery or GC reads them from), and a conflist of at most ``MAX_PLUGINS``
plugins (each runs in turn at ADD).
"""

from __future__ import annotations

import json
from typing import Final

from app.attach import delegate_inputs, gojson
from app.cni import conf as cniconf
from app.cni import invoke, results
from app.cni.types import CniError, ErrorCode, JsonObject, NetworkConfigList

MULTUS_PLUGIN_TYPES = frozenset({"multus", "multus-shim"})
"""Plugin types that are Multus itself: never a NAD's delegate."""

MAX_CONFIG_BYTES: Final = 128 * 1024
"""Bytes of one network's configuration (a NAD's ``spec.config``, UTF-8). Real ones are a few KiB;
128 KiB holds a bridge with some 3,000 static routes (parsed in about 2.5 ms). etcd would take
1.5 MiB, and 256 networks of that would be recorded in one commit and held several times over."""

MAX_PLUGINS: Final = 64
"""Plugins of one network's conflist. Real chains have a handful (bridge, tuning, portmap,
bandwidth...); one NAD could hold some 90,000, run one after another at ADD."""


def falls_back_to_conf_dir(config: str) -> bool:
    """True when a NAD's ``spec.config`` is empty: the network is the confDir file named like the NAD."""
    return config == ""


def nad_network_config(nad_name: str, config: str, *, namespace: str = "") -> bytes:
    """The delegate configuration a NAD's non-empty ``spec.config`` defines (``GetCNIConfigFromSpec``).

    ``nad_name`` is the NAD's metadata.name, injected as ``name`` when the config has none or ``""``.
    A top-level ``type`` makes it a single plugin conf, whatever else it holds: a ``plugins`` key
    beside it is dropped, as upstream ignores it (kept, it was the chain run instead of ``type``,
    unchecked for Multus's own types). Without a ``type`` it is a conflist whose ``plugins`` must
    be present and whose first plugin needs a ``type``. An edited config is re-encoded with sorted
    keys; otherwise its bytes are returned unchanged. Errors name ``<namespace>/<nad_name>``.
    Raises ValueError for an empty config: see ``falls_back_to_conf_dir``.
    """
    if falls_back_to_conf_dir(config):
        raise ValueError("an empty spec.config names a confDir file; the caller resolves it")
    where = (
        f"network-attachment-definition {namespace}/{nad_name}"
        if namespace
        else f"network-attachment-definition {nad_name}"
    )
    _check_size(len(config), where=where)  # characters: a UTF-8 encoding is never shorter
    data = config.encode("utf-8", "surrogatepass")
    _check_size(len(data), where=where)
    document = _spec_document(data, where=where)
    if data.count(b"[") + data.count(b"{") > delegate_inputs.MAX_NESTING:  # else it cannot nest deeper
        delegate_inputs.check_nesting(document, what=f"{where}: spec.config")
    edited = False
    if document.get("name") in (None, ""):
        document["name"] = nad_name
        edited = True
    if delegate_inputs.has_type(document) and "plugins" in document:
        # one plugin, as upstream runs it; app.cni reads any "plugins" key as a conflist
        del document["plugins"]
        edited = True
    _check_delegate_shape(document, where=where)
    return cniconf.encode(document, what=f"{where} spec.config") if edited else data


def _check_size(size: int, *, where: str) -> None:
    if size > MAX_CONFIG_BYTES:
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"{where}: spec.config is {size} bytes; a network's configuration may be at most "
            f"{MAX_CONFIG_BYTES} bytes",
            "real configurations are a few KiB; nothing of this network was parsed, recorded or run",
        )


def check_plugin_count(count: int, *, where: str) -> None:
    """Refuse a conflist of more than ``MAX_PLUGINS`` plugins; ``where`` names the network."""
    if count > MAX_PLUGINS:
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f'{where}: "plugins" holds {count} plugins; a network may chain at most {MAX_PLUGINS}',
            "each plugin of a chain runs in turn at ADD; real chains have a handful",
        )


def _spec_document(data: bytes, *, where: str) -> JsonObject:
    prefix = f"{where}: GetCNIConfig: err in getCNIConfigFromSpec: failed to unmarshal Spec.Config"
    try:
        document = results.parse_json(data)
    except (ValueError, RecursionError) as err:
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"{prefix}: {err}") from None
    if not isinstance(document, dict):
        kind = "null" if document is None else gojson.kind(document)
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"{prefix}: json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}",
        )
    return document


def _check_delegate_shape(document: JsonObject, *, where: str) -> None:
    """``LoadDelegateNetConf``'s checks; the full configuration check happens when the caller loads it."""
    for key in ("name", "type", "cniVersion"):
        value = document.get(key)
        if value is not None and not isinstance(value, str):
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"{where}: LoadDelegateNetConf: error unmarshalling delegate config: json: cannot unmarshal "
                f"{gojson.kind(value)} into Go struct field NetConf.{key} of type string",
            )
    if delegate_inputs.has_type(document):
        _check_plugin_types(document, field="", where=where)
        return
    plugins = document.get("plugins")
    prefix = f"{where}: LoadDelegateNetConf: failed with: LoadDelegateNetConfList"
    if not isinstance(plugins, list) or not plugins:
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG, f"{prefix}: delegate must have the 'type' or 'plugin' field"
        )
    check_plugin_count(len(plugins), where=where)
    first = plugins[0]
    if not isinstance(first, dict) or not delegate_inputs.has_type(first):
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG, f"{prefix}: a plugin delegate must have the 'type' field"
        )
    for index, plugin in enumerate(plugins):
        if isinstance(plugin, dict):
            _check_plugin_types(plugin, field=f"plugins[{index}].", where=where)


def _check_plugin_types(plugin: JsonObject, *, field: str, where: str) -> None:
    """Refuse Multus itself as the plugin's ``type`` or its ``ipam.type``, and an ``ipam.type``
    that is not a plain file name (the plugin's own ``type`` is checked when it is looked up)."""
    _check_not_multus_plugin(plugin, field=field, where=where)
    kind = _ipam_type(plugin)
    if not isinstance(kind, str) or kind == "":  # no IPAM plugin; a non-string is app.cni.conf's to refuse
        return
    try:
        invoke.check_plugin_type(kind)
    except CniError:
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f'{where}: "{field}ipam.type" is {json.dumps(kind)}: an IPAM plugin type is a file name '
            "and may not be '.' or contain '/', '..' or NUL",
            "the plugin looks its IPAM plugin up by name in CNI_PATH",
        ) from None


def check_not_multus_network(net: NetworkConfigList, *, where: str) -> None:
    """Refuse a network read from a conf file or an inline delegate whose plugin, or IPAM plugin,
    is Multus itself, as a NAD's ``spec.config`` is refused (``nad_network_config``): run as a
    delegate, ``multus-shim`` (in ``binDir`` on a node) would ask this daemon to ADD the very sandbox
    whose ADD runs it, and wait behind that ADD's lock until the delegate timeout."""
    for index, plugin in enumerate(net.plugins):
        _check_not_multus_plugin(
            plugin, field="" if net.is_single_conf else f"plugins[{index}].", where=where
        )


def _ipam_type(plugin: JsonObject) -> object:
    ipam = plugin.get("ipam")
    return ipam.get("type") if isinstance(ipam, dict) else None


def _check_not_multus_plugin(plugin: JsonObject, *, field: str, where: str) -> None:
    """Refuse Multus itself as the plugin's ``type`` or its ``ipam.type``."""
    _check_not_multus(plugin.get("type"), field=f"{field}type", where=where)
    _check_not_multus(_ipam_type(plugin), field=f"{field}ipam.type", where=where)


def is_multus_type(kind: object) -> bool:
    """Whether a plugin's ``type`` is one of Multus's own; a value that is no string is no type
    (``app.cni.conf`` refuses it, naming the field), and no member of a set either."""
    return isinstance(kind, str) and kind in MULTUS_PLUGIN_TYPES


def _check_not_multus(kind: object, *, field: str, where: str) -> None:
    if is_multus_type(kind):
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f'{where}: "{field}" is "{kind}": Multus cannot be a delegate of itself',
            "a NAD's configuration names the plugin that attaches the network (macvlan, bridge, ...)",
        )
