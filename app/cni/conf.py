"""Network configurations: loading a conf or conflist into a ``NetworkConfigList``, and each plugin's stdin.

Called by ``app.attach`` (delegate configs from NADs, files and checkpoints), by the daemon (the
primary network in ``confDir``) and by ``app.cni.api`` (``plugin_stdin``). Loading never executes
anything, and a config it cannot read is an error naming the source and the field, never "no config".

Decisions: a missing ``cniVersion`` means 0.1.0 and versions outside ``SUPPORTED_VERSIONS`` are refused
at load time (code 7); ``cniVersions`` is read for a conflist only, as libcni reads it; plugins are
only taken inline (``plugins``), never from ``<dir>/<name>/*.conf`` as libcni's
``loadOnlyInlinedPlugins: false`` would (``app.attach.disk_chains`` does that for conf files, so
the bytes recorded hold the whole chain). Parse errors are code 6, shape errors code 7.
An integral number written with a fraction or an exponent (``1500.0``, ``1e3``) reaches the plugin
as an integer, as libcni's float64 re-encoding hands it on (the recorded bytes keep it as written).
"""

from __future__ import annotations

import decimal
import json
import os
import stat
from collections.abc import Callable, Mapping
from typing import Any, Final

from app.cni import names, results
from app.cni.types import CniError, ErrorCode, JsonObject, NetworkConfigList

CONF_EXTENSIONS: Final = (".conf", ".conflist", ".json")
MAX_CONF_FILE_BYTES: Final = 1024 * 1024
"""Bytes of one conf file an admin writes (``confDir``, ``clusterNetwork``, a chained plugin's
file): real ones are well under 10 KiB."""
_encode_like_go: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False).encode
"""Compact, sorted, no NaN: one encoder for every call (``json.dumps`` with options builds one per call)."""


# --- loading --------------------------------------------------------------------------------------


_LOADED_CAPACITY: Final = 128
_loaded: dict[bytes, NetworkConfigList] = {}
"""Lists loaded lately, by their bytes: the same few configurations are loaded again and again (each
DEL replays its recorded one, each ADD loads its NADs'), and a list is immutable once loaded."""

_CACHED_MAX_BYTES: Final = 16 * 1024
"""Lists of more bytes are not kept: real configurations are a few KiB, and 128 of the largest a
NAD may hold (128 KiB, about 1 MiB once parsed) would keep some 130 MiB for the daemon's life.
One of them is parsed again when loaded again (a few milliseconds)."""


def load_network_list(data: bytes | bytearray, *, source: str) -> NetworkConfigList:
    """Decode a single conf (top-level ``type``: a list of one) or a conflist (``plugins``).

    ``source`` (a file path, a NAD's namespace/name, ...) prefixes every error message. The same
    bytes give the same (shared) list, unless they are many (``_CACHED_MAX_BYTES``): callers never
    modify one, nor its plugins' objects. Its
    ``raw`` is ``bytes`` whatever ``data`` was (a later change to a bytearray cannot reach it).
    """
    key = data if type(data) is bytes else bytes(data)
    net = _loaded.get(key)
    if net is not None:
        return net
    document = _parse(key, source=source)
    try:
        net = _network_list(document, raw=key)
    except CniError as err:
        raise err.with_context(source) from None
    if len(key) > _CACHED_MAX_BYTES:
        return net
    if len(_loaded) >= _LOADED_CAPACITY:
        _loaded.clear()  # a node with more distinct networks than this in use parses a few again
    _loaded[key] = net
    return net


def load_file(path: str) -> NetworkConfigList:
    """``load_network_list`` on a file's bytes; an unreadable file is CniError 5 naming it.

    As libcni loads a file by its name, a file that is not a ``.conflist`` and has a top-level
    ``type`` is that one plugin, a ``plugins`` key beside it dropped (the bytes re-encoded): by
    its content alone it would be the ``plugins`` chain, another plugin than the runtime or
    upstream Multus runs for it. A ``.conf`` with ``plugins`` and no ``type`` stays a list."""
    data = read_regular_file(path, limit=MAX_CONF_FILE_BYTES)
    if not path.endswith(".conflist") and b'"plugins"' in data:
        document = _parse(data, source=path)
        if "type" in document and "plugins" in document:
            del document["plugins"]
            data = encode(document, what=path)
    return load_network_list(data, source=path)


def read_regular_file(path: str, *, limit: int) -> bytes:
    """The bytes of the regular file at ``path`` (a symlink followed), at most ``limit`` of them.

    Anything else is refused (code 7) before a byte is read: a device (``/dev/zero`` would be read
    until the daemon runs out of memory, ``/dev/stdin`` waited on), a FIFO (opened without waiting
    for a writer), a directory; so is a file of more than ``limit`` bytes, also one that grows while
    it is read. A file that cannot be opened or read is ``CniError.reading`` (code 5, or 11)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as err:
        raise CniError.reading(path, err) from err
    with os.fdopen(descriptor, "rb") as handle:
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                raise CniError(
                    ErrorCode.INVALID_NETWORK_CONFIG,
                    f"network configuration {path} is not a regular file",
                    "not read: a configuration is a file (a device, FIFO or directory is none)",
                )
            data = b"" if info.st_size > limit else handle.read(limit + 1)
        except OSError as err:
            raise CniError.reading(path, err) from err
    if info.st_size > limit or len(data) > limit:
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"network configuration {path} is more than {limit} bytes",
            "not read whole: real configuration files are a few KiB",
        )
    return data


def list_conf_files(conf_dir: str) -> list[str]:
    """The ``*.conf``, ``*.conflist`` and ``*.json`` regular files of ``conf_dir`` in lexical order.

    A missing directory has none (``[]``); an unreadable one is CniError 5.
    """
    try:
        entries = sorted(os.scandir(conf_dir), key=lambda entry: entry.name)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise CniError.reading(f"directory {conf_dir}", err) from err
    return [entry.path for entry in entries if entry.name.endswith(CONF_EXTENSIONS) and entry.is_file()]


def find_by_name(
    conf_dir: str, name: str, *, loader: Callable[[str], NetworkConfigList] | None = None
) -> NetworkConfigList | None:
    """The first config file of ``conf_dir`` (lexical order) whose network is ``name``; None if none is.

    None covers a missing directory too: callers fall back (e.g. to a NetworkAttachmentDefinition).
    A file that cannot be loaded before the match raises its CniError, as libcni does: which file
    was meant is unknowable, so the scan does not skip it. ``loader`` (default ``load_file``) lets a
    caller cache parsed files.
    """
    return ConfDirReading(conf_dir, loader or load_file).find(name)


class ConfDirReading:
    """One reading of ``conf_dir`` for several lookups by name (``find_by_name``'s rules): listed
    once, each file loaded at most once, in lexical order and only as far as a lookup needs."""

    def __init__(self, conf_dir: str, load: Callable[[str], NetworkConfigList]) -> None:
        self._paths = list_conf_files(conf_dir)
        self._load = load
        self._loaded: list[NetworkConfigList] = []

    def find(self, name: str) -> NetworkConfigList | None:
        for net in self._loaded:
            if net.name == name:
                return net
        while len(self._loaded) < len(self._paths):
            net = self._load(self._paths[len(self._loaded)])  # an error: raised again next time
            self._loaded.append(net)
            if net.name == name:
                return net
        return None


def first_in_dir(
    conf_dir: str, *, loader: Callable[[str], NetworkConfigList] | None = None
) -> NetworkConfigList | None:
    """The config in the lexically first config file of ``conf_dir``; None when there is no such file.

    A first file that cannot be loaded raises its CniError rather than silently promoting the next one.
    """
    files = list_conf_files(conf_dir)
    return (loader or load_file)(files[0]) if files else None


def _number_as_libcni_writes_it(text: str) -> int | float:
    """A JSON number with a fraction or an exponent as a plugin reads it under libcni, which
    decodes each plugin's object into Go's generic map (numbers become float64) and encodes it
    again before the plugin gets it: an integral one is written as an integer (``1500.0``,
    ``1e3`` become ``1500``, ``1000``). Written as Python writes a float, it failed every Go
    plugin decoding it into an integer field (bridge ``"mtu": 1500.0``: code 999 at ADD and DEL),
    which upstream Multus runs. Go writes ``1e21`` and beyond with an exponent: those stay floats."""
    value = results.finite_float(text)
    if not value.is_integer() or abs(value) >= _GO_EXPONENT_FROM:
        return value
    # Go writes float64's shortest decimal digits, zero-padded: 2**60 as 1152921504606847000
    return int(value) if abs(value) <= _EXACT_FLOAT_INT else int(decimal.Decimal(repr(value)))


def _not_json(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


_GO_EXPONENT_FROM: Final = 1e21
_EXACT_FLOAT_INT: Final = 2**53
_CONF_DECODER: Final = json.JSONDecoder(parse_constant=_not_json, parse_float=_number_as_libcni_writes_it)
"""``results.parse_json``'s rules, and numbers as libcni hands them to plugins."""


def _parse(data: bytes, *, source: str) -> JsonObject:
    try:
        document = _CONF_DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except (ValueError, RecursionError) as err:
        raise CniError(ErrorCode.DECODING_FAILURE, f"{source}: error parsing configuration: {err}") from err
    if not isinstance(document, dict):
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"{source}: configuration must be a JSON object")
    return document


def _network_list(document: JsonObject, *, raw: bytes) -> NetworkConfigList:
    name = _network_name(document)
    plugins, is_single = _plugins(document)
    return NetworkConfigList(
        name=name,
        cni_version=_conf_version(document) if is_single else _cni_version(document),
        plugins=plugins,
        raw=raw,
        disable_check=_flag(document, "disableCheck"),
        disable_gc=_flag(document, "disableGC"),
        is_single_conf=is_single,
    )


def _network_name(document: JsonObject) -> str:
    if "name" not in document:
        raise _invalid('missing "name"')
    name = _string(document["name"], "name")
    names.check_network_name(name)
    return name


def _conf_version(document: JsonObject) -> str:
    """A single conf's ``cniVersion``. A ``cniVersions`` beside it is the plugin's own key: libcni
    reads that list for a conflist only, and runs a single conf (as upstream Multus runs a NAD's
    or a file's) at its ``cniVersion``; taking the list's highest ran it at a version its plugin
    may not know (a reference plugin refused 1.1.0 of ``["1.0.0", "1.1.0"]``)."""
    declared = _string(document["cniVersion"], "cniVersion") if "cniVersion" in document else ""
    return _supported(declared, "cniVersion")


def _cni_version(document: JsonObject) -> str:
    """A conflist's ``cniVersion``, or with ``cniVersions`` the highest supported of both (libcni
    1.1.0 rules)."""
    if "cniVersions" not in document:
        return _conf_version(document)
    declared = _string(document["cniVersion"], "cniVersion") if "cniVersion" in document else ""
    candidates = [*_version_list(document["cniVersions"]), *([declared] if declared else [])]
    usable = [version for version in candidates if version in results.SUPPORTED_VERSIONS]
    if not usable:
        raise _invalid(
            f'no supported version in "cniVersions"/"cniVersion" {candidates}: '
            f"supported versions are {', '.join(results.SUPPORTED_VERSIONS)}"
        )
    return max(usable, key=results.parse_version)


def _version_list(value: object) -> list[str]:
    if not isinstance(value, list):
        raise _invalid(f'"cniVersions" must be a list of strings, got {results.json_kind(value)}')
    versions: list[str] = []
    for index, item in enumerate(value):
        version = _string(item, f"cniVersions[{index}]")
        try:
            results.parse_version(version)
        except CniError as err:
            raise _invalid(f'"cniVersions[{index}]": {err.msg}') from None
        versions.append(version)
    return versions


def _supported(version: str, field: str) -> str:
    try:
        return results.supported_version(version)
    except CniError as err:
        raise _invalid(f'invalid "{field}": {err.msg}') from None


def _flag(document: JsonObject, key: str) -> bool:
    """A boolean that libcni also accepts as the strings "true"/"false" (any case)."""
    value = document.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _invalid(f'invalid value {json.dumps(value)} for "{key}": must be true or false')


def _plugins(document: JsonObject) -> tuple[tuple[JsonObject, ...], bool]:
    if "plugins" not in document:
        if "type" not in document:
            raise _invalid("no 'type'; perhaps this is a .conflist?")
        _check_plugin(document, field="")
        return (document,), True
    plugins = document["plugins"]
    if not isinstance(plugins, list):
        raise _invalid(f'"plugins" must be a list, got {results.json_kind(plugins)}')
    if not plugins:
        raise _invalid('"plugins" is empty')
    for index, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            raise _invalid(f'"plugins[{index}]" must be an object, got {results.json_kind(plugin)}')
        _check_plugin(plugin, field=f"plugins[{index}].")
    return tuple(plugins), False


def _check_plugin(plugin: JsonObject, *, field: str) -> None:
    """The fields Go's ``types.NetConf`` decodes must have its types (every plugin decodes them: one
    of another type fails its ADD and DEL alike, code 999); everything else is the plugin's."""
    if "type" not in plugin:
        raise _invalid(f'missing "{field}type"')
    if not _string(plugin["type"], f"{field}type"):
        raise _invalid(f'"{field}type" is empty')
    for key in ("name", "cniVersion"):
        if plugin.get(key) is not None:
            _string(plugin[key], f"{field}{key}")
    capabilities = plugin.get("capabilities")
    if capabilities is not None:
        _capabilities(capabilities, f"{field}capabilities")
    ipam = plugin.get("ipam")
    if ipam is not None:
        if not isinstance(ipam, dict):
            raise _invalid(f'"{field}ipam" must be an object, got {results.json_kind(ipam)}')
        if ipam.get("type") is not None:
            _string(ipam["type"], f"{field}ipam.type")
    prev_result = plugin.get("prevResult")
    if prev_result is not None and not isinstance(prev_result, dict):
        raise _invalid(f'"{field}prevResult" must be an object, got {results.json_kind(prev_result)}')
    dns = plugin.get("dns")
    if dns is not None:
        _dns(dns, f"{field}dns")


def _dns(value: object, field: str) -> None:
    """``types.DNS``: string ``domain``, string lists ``nameservers``, ``search``, ``options``."""
    if not isinstance(value, dict):
        raise _invalid(f'"{field}" must be an object, got {results.json_kind(value)}')
    if value.get("domain") is not None:
        _string(value["domain"], f"{field}.domain")
    for key in ("nameservers", "search", "options"):
        items = value.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise _invalid(f'"{field}.{key}" must be a list of strings, got {results.json_kind(items)}')
        for index, item in enumerate(items):
            if item is not None:
                _string(item, f"{field}.{key}[{index}]")


def _capabilities(value: object, field: str) -> None:
    if not isinstance(value, dict):
        raise _invalid(f'"{field}" must be an object, got {results.json_kind(value)}')
    for key, enabled in value.items():
        if not isinstance(enabled, bool):
            raise _invalid(f'"{field}.{key}" must be true or false, got {results.json_kind(enabled)}')


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f'"{field}" must be a string, got {results.json_kind(value)}')
    return value


def _invalid(msg: str) -> CniError:
    return CniError(ErrorCode.INVALID_NETWORK_CONFIG, msg)


# --- plugin stdin ---------------------------------------------------------------------------------


def runtime_config(plugin: JsonObject, capability_args: Mapping[str, Any]) -> JsonObject:
    """``{capability: value}`` for each capability ``plugin`` declares true and the runtime supplied."""
    capabilities = plugin.get("capabilities")
    if not isinstance(capabilities, dict):
        return {}
    return {
        capability: capability_args[capability]
        for capability, enabled in capabilities.items()
        if enabled is True and capability in capability_args
    }


def plugin_stdin(
    plugin: JsonObject,
    *,
    name: str,
    cni_version: str,
    prev_result: JsonObject | None = None,
    capability_args: Mapping[str, Any] | None = None,
    extra: Mapping[str, object] | None = None,
) -> bytes:
    """The exact bytes a plugin of list ``name`` reads on stdin (libcni ``buildOneConfig``).

    The plugin's object with ``name`` and ``cniVersion`` of the list, ``prevResult`` when given,
    ``runtimeConfig`` when any declared capability was supplied (otherwise the plugin's own key, if
    any, stays), and ``extra`` keys (GC's attachment lists); serialized compactly with sorted keys.
    The caller converts ``prev_result`` to ``cni_version`` first.
    """
    config: JsonObject = {**plugin, "name": name, "cniVersion": cni_version}
    if prev_result is not None:
        config["prevResult"] = prev_result
    granted = runtime_config(plugin, capability_args or {})
    if granted:
        config["runtimeConfig"] = granted
    config.update(extra or {})
    return encode(config, what=f'configuration for plugin "{plugin.get("type")}"')


def encode(document: JsonObject, *, what: str) -> bytes:
    """Compact JSON with sorted keys, as Go's ``json.Marshal`` of a map; unencodable values are CniError 7."""
    try:
        return _encode_like_go(document).encode()
    except (TypeError, ValueError, RecursionError) as err:
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"cannot encode {what}: {err}") from err


def plugin_type(plugin: JsonObject) -> str:
    """The plugin's ``type``: a string when loaded; ``""`` for a hand-built object without one."""
    value = plugin.get("type", "")
    return value if isinstance(value, str) else ""
