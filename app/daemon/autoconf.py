"""The generated shim configuration, ``<cniConfigDir>/00-multus.conf`` (``multusConfigFile: auto``).

Picks the primary network configuration as upstream does (``multusMasterCNI``, else the first
``*.conf``/``*.conflist`` by name in ``multusAutoconfigDir``, skipping ``00-multus*``) and writes a
conf whose keys and order match upstream's generator, so the runtime calls the shim with it.
Unlike upstream the file is written atomically (temp file, fsync, rename; a temporary a killed
daemon left is removed by a later write) and is left in place when the daemon stops: a
restarting daemon must not leave the node without its CNI configuration.
Called by the daemon's ``autoconf`` task (``app.daemon.startup``) every ``autoconfIntervalSeconds``
through ``Keeper``, which says in the log what it did or why it could not, once per change (no
primary yet, an unreadable one, an unlistable directory: a line naming the key, never a crash);
the keys it copies come from ``Settings.shim_conf_values``, never from the raw file. The
primary's ``cniVersion`` is copied only when the daemon config sets none, and only a version the
shim takes: anything else refuses the primary (the conf written before stays), as does a primary
whose plugin is Multus itself (a link to our own output, a copy of one).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.attach import nad_config, network_status
from app.cni import conf as cniconf
from app.cni import results
from app.cni.types import CniError
from app.settings import Settings

CONF_NAME = "00-multus.conf"
DEFAULT_SHIM_SOCKET_DIR = "/run/multus"
NETWORK_NAME = "multus-cni-network"
CONF_SUFFIXES = (".conf", ".conflist")
STALE_TEMPORARY_SECONDS = 60.0
"""Age past which a temporary ``00-multus.conf`` beside the conf is a killed writer's leftover."""

log = logging.getLogger(__name__)

# upstream's MultusConf field order, with the keys its generator empties left out (it keeps
# ``overrideNetworkName``); then multus-py's own ``spoolDir`` (the shim spools DELs there when the
# daemon is unreachable)
PASSED_THROUGH_KEYS = (
    "binDir",
    "capabilities",
    "cniVersion",
    "logFile",
    "logLevel",
    "logToStderr",
    "logOptions",
    "name",
    "clusterNetwork",
    "namespaceIsolation",
    "globalNamespaces",
    "type",
    "cniDir",
    "auxiliaryCNIChainName",
    "daemonSocketDir",
    "overrideNetworkName",
    "spoolDir",
)


class AutoconfError(RuntimeError):
    """No usable primary configuration."""


def find_primary(settings: Settings) -> Path | None:
    """The primary network configuration file, or None if there is none yet."""
    directory = Path(settings.multus_autoconfig_dir or settings.cni_config_dir)
    if settings.multus_master_cni:
        # upstream's filepath.Join: an absolute name is still taken inside the directory
        candidate = directory / settings.multus_master_cni.lstrip("/")
        return candidate if candidate.is_file() else None
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return None
    except OSError as exc:  # not a directory, not readable: nothing to pick until that changes
        raise AutoconfError(
            f"cannot list {directory} (daemon config key {_directory_key(settings)!r}): {exc.strerror}"
        ) from exc
    for name in names:
        if name.startswith("00-multus") or not name.endswith(CONF_SUFFIXES):
            continue
        path = directory / name
        if path.is_file():
            return path
    return None


def _directory_key(settings: Settings) -> str:
    """The daemon-config key that names the directory the primary is looked for in."""
    return "multusAutoconfigDir" if settings.multus_autoconfig_dir else "cniConfigDir"


def missing_primary(settings: Settings) -> str:
    """Why ``find_primary`` found nothing, naming the key to look at."""
    directory = Path(settings.multus_autoconfig_dir or settings.cni_config_dir)
    if settings.multus_master_cni:
        candidate = directory / settings.multus_master_cni.lstrip("/")
        return (
            f"no primary network configuration: {candidate} (daemon config key 'multusMasterCNI') "
            f"is not a file; {CONF_NAME} not written"
        )
    return (
        f"no primary network configuration (*.conf, *.conflist) in {directory} (daemon config key "
        f"{_directory_key(settings)!r}) yet; {CONF_NAME} not written"
    )


class Keeper:
    """One pass at a time of the ``autoconf`` task: write, refresh or remove ``00-multus.conf``.

    Passes repeat every ``autoconfIntervalSeconds``; the outcome is logged when it differs from the
    previous pass's, so a missing or broken primary is one line (not one every pass) and its repair
    is another."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._last_outcome: str | None = None
        self._last_shadowing: tuple[str, ...] = ()

    def step(self, *, indicator_missing: bool) -> None:
        """Blocking (file I/O): run it off the event loop."""
        try:
            if indicator_missing:
                if remove(self._settings):
                    self._report(logging.WARNING, f"{CONF_NAME} removed: the readiness indicator is absent")
                return
            primary = find_primary(self._settings)
            if primary is None:
                self._report(logging.WARNING, missing_primary(self._settings))
                return
            written = write(self._settings, primary)
            self._report(logging.INFO, f"{written} calls the shim with cluster network {primary}")
            self._report_shadowing(shadowing(written.parent))
        except (AutoconfError, OSError) as exc:
            self._report(logging.ERROR, f"cannot write {CONF_NAME}: {exc}")

    def _report_shadowing(self, names: tuple[str, ...]) -> None:
        if names and names != self._last_shadowing:
            log.warning(
                "%s in %s sorts before %s: a runtime takes the first configuration by name, so its "
                "pods get that network and never reach multus (rename it, or name the primary "
                "multusMasterCNI)",
                ", ".join(names),
                self._settings.cni_config_dir,
                CONF_NAME,
            )
        self._last_shadowing = names

    def _report(self, level: int, outcome: str) -> None:
        if outcome != self._last_outcome:
            log.log(level, "%s", outcome)
            self._last_outcome = outcome


RUNTIME_CONF_SUFFIXES = (".conf", ".conflist", ".json")
"""What a runtime (libcni's ``ConfFiles``) takes from its conf dir, sorted by name, the first winning."""


def shadowing(conf_dir: Path) -> tuple[str, ...]:
    """The configurations in ``conf_dir`` a runtime would take before ``00-multus.conf``."""
    try:
        names = sorted(os.listdir(conf_dir))
    except OSError:
        return ()
    return tuple(
        name
        for name in names
        if name < CONF_NAME and name.endswith(RUNTIME_CONF_SUFFIXES) and (conf_dir / name).is_file()
    )


def render(settings: Settings, primary: Path) -> bytes:
    """The shim's conf for ``primary``: compact JSON in upstream's field order."""
    primary_conf = _load_primary(primary)
    if not isinstance(primary_conf, dict):
        raise AutoconfError(f"primary network configuration {primary} is not a JSON object")
    if primary.name == CONF_NAME:
        raise AutoconfError(
            f"cannot use {primary} as the primary network configuration (multusMasterCNI): "
            "it is the conf this daemon writes"
        )
    _refuse_multus_itself(settings, primary_conf, primary)
    given = settings.shim_conf_values
    _check_versions(settings.cni_version, primary_conf.get("cniVersion"), primary)
    values: dict[str, Any] = {
        "binDir": given.get("binDir"),
        "capabilities": _capabilities(primary_conf) or None,
        "cniVersion": given.get("cniVersion") or _copied_version(primary_conf, primary),
        "logFile": given.get("logFile"),
        "logLevel": given.get("logLevel"),
        "logToStderr": given.get("logToStderr"),
        "logOptions": given.get("logOptions"),  # upstream's struct fields, as settings read them
        "name": _network_name(settings, primary_conf),
        "clusterNetwork": str(primary),
        "namespaceIsolation": given.get("namespaceIsolation"),
        "globalNamespaces": given.get("globalNamespaces"),
        "type": "multus-shim",
        "cniDir": given.get("cniDir"),
        "auxiliaryCNIChainName": given.get("auxiliaryCNIChainName"),
        "daemonSocketDir": given.get("daemonSocketDir") or _own_socket_dir(settings),
        "overrideNetworkName": settings.override_network_name,
        "spoolDir": str(settings.spool_path),
    }
    ordered = {key: values[key] for key in PASSED_THROUGH_KEYS if values[key] not in (None, "", False)}
    # Go's json.Marshal: raw UTF-8, with <, >, & (and U+2028/9) escaped
    return network_status.go_escaped(json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)).encode()


def _refuse_multus_itself(settings: Settings, primary_conf: Mapping[str, Any], primary: Path) -> None:
    """Refuse a primary whose plugin is Multus itself (``multus-shim``, ``multus``): a symlink to
    the ``00-multus.conf`` this daemon writes (its name is not ours, so the name check misses it),
    or a copy of one. As the cluster network the shim would ask this daemon to ADD the very
    sandbox whose ADD runs it, and every ADD would wait behind its own lock until the delegate
    timeout (``nad_config`` refuses such a NAD for that reason)."""
    plugins = primary_conf.get("plugins")
    sources = plugins if isinstance(plugins, list) else [primary_conf]
    for plugin in sources:
        kind = plugin.get("type") if isinstance(plugin, dict) else None
        if nad_config.is_multus_type(kind):
            key = "multusMasterCNI" if settings.multus_master_cni else _directory_key(settings)
            raise AutoconfError(
                f"cannot use {primary} as the primary network configuration (daemon config key "
                f"{key!r}): its plugin type {kind!r} is Multus itself, so every ADD would call "
                "the shim again"
            )


def _load_primary(primary: Path) -> object:
    """The primary's JSON; what cannot be read or decoded (nested too deep for the decoder
    included) is an ``AutoconfError``, so a broken primary is a logged refusal, never a crash. Read
    as every network configuration is (``cniconf.read_regular_file``): a regular file, at most
    ``MAX_CONF_FILE_BYTES`` (a device or a huge file is refused unread)."""
    try:
        return json.loads(cniconf.read_regular_file(str(primary), limit=cniconf.MAX_CONF_FILE_BYTES))
    except CniError as exc:
        raise AutoconfError(f"cannot read primary network configuration {primary}: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        reason = "nested too deep" if isinstance(exc, RecursionError) else exc
        raise AutoconfError(f"cannot read primary network configuration {primary}: {reason}") from exc


def _network_name(settings: Settings, primary_conf: Mapping[str, Any]) -> str:
    """``multus-cni-network``, or with ``overrideNetworkName`` the primary's name; the runtime
    needs a name, so a primary without a usable one (absent, empty, not a string) keeps ours."""
    name = primary_conf.get("name")
    if settings.override_network_name and isinstance(name, str) and name:
        return name
    return NETWORK_NAME


def _version(text: object) -> tuple[int, ...] | None:
    """``1.0.0`` as ``(1, 0, 0)``; None for anything else (``str.isdigit`` alone takes ``²``, which
    ``int`` refuses)."""
    parts = text.split(".") if isinstance(text, str) else []
    usable = parts and all(part.isascii() and part.isdigit() for part in parts)
    return tuple(int(part) for part in parts) if usable else None


def _check_versions(top: str, delegate: object, primary: Path) -> None:
    """Upstream's rule: under a top-level ``cniVersion`` >= 0.4.0 the primary's must be >= 0.4.0."""
    top_version, delegate_version = _version(top), _version(delegate)
    if top_version is None or top_version < (0, 4, 0):
        return
    if delegate_version is None or delegate_version < (0, 4, 0):
        raise AutoconfError(
            f"primary network configuration {primary}: delegate cni version is {delegate} while "
            f"top level cni version is {top} (daemon config key 'cniVersion')"
        )


def _copied_version(primary_conf: Mapping[str, Any], primary: Path) -> str | None:
    """The primary's ``cniVersion``, for a daemon config without one; refused unless it is a
    version the shim takes (``results.SUPPORTED_VERSIONS``): copied, a number or an object made
    the conf one the runtime cannot load, an unknown version one whose every call the shim
    refuses (code 1). Absent or empty, the conf has none either (0.1.0, as libcni reads it)."""
    version = primary_conf.get("cniVersion")
    if version is None or version == "" or version in results.SUPPORTED_VERSIONS:
        return version
    shown = json.dumps(version) if isinstance(version, str) else results.json_kind(version)
    raise AutoconfError(
        f"primary network configuration {primary}: 'cniVersion' is {shown}, not a CNI version the "
        f"shim supports ({', '.join(results.SUPPORTED_VERSIONS)}), and the daemon config sets none "
        "to write instead (daemon config key 'cniVersion')"
    )


def _force_cni_version(settings: Settings, primary: Path) -> None:
    """``forceCNIVersion``: rewrite the primary's ``cniVersion`` to daemon-config's, as upstream
    does (atomically here), only when it differs. Upstream's ``os.WriteFile`` truncates the file
    in place, so its mode and owner stay (``0644`` applies only to a file it creates): a primary
    its owner keeps unreadable to others stays so. A symlinked primary is rewritten where it links
    to, as upstream's write follows the link: the link stays its owner's."""
    if not (settings.force_cni_version and settings.cni_version):
        return
    conf = _load_primary(primary)
    if not isinstance(conf, dict) or conf.get("cniVersion") == settings.cni_version:
        return
    conf["cniVersion"] = settings.cni_version
    target = primary.resolve()
    kept = target.stat()
    _replace(
        target,
        json.dumps(conf).encode(),
        mode=stat.S_IMODE(kept.st_mode),
        owner=(kept.st_uid, kept.st_gid),
    )


def _own_socket_dir(settings: Settings) -> str | None:
    """Where the shim must find this daemon when ``daemonSocketDir`` is not set: our ``socketDir``
    if it is not the shim's default (upstream writes nothing, and its shim then looks elsewhere)."""
    return None if settings.socket_dir == Path(DEFAULT_SHIM_SOCKET_DIR) else str(settings.socket_dir)


def _capabilities(primary_conf: Mapping[str, Any]) -> dict[str, bool]:
    plugins = primary_conf.get("plugins")
    sources = plugins if isinstance(plugins, list) else [primary_conf]
    enabled: dict[str, bool] = {}
    for plugin in sources:
        capabilities = plugin.get("capabilities") if isinstance(plugin, dict) else None
        if isinstance(capabilities, dict):
            enabled.update({name: True for name, on in capabilities.items() if on is True})
    return dict(sorted(enabled.items()))


def write(settings: Settings, primary: Path) -> Path:
    """Write ``00-multus.conf`` atomically; return its path. Unchanged content is not rewritten."""
    target = Path(settings.cni_config_dir) / CONF_NAME
    _force_cni_version(settings, primary)
    content = render(settings, primary)
    _remove_stale_temporaries(target)
    if _current(target) == content:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _replace(target, content, mode=0o600)
    return target


def _current(target: Path) -> bytes | None:
    """What ``target`` holds now, if it is a regular file of at most ``MAX_CONF_FILE_BYTES``
    (read as every configuration is: a FIFO or a device there is no content, never waited on or
    read whole); None otherwise, and the write replaces it."""
    try:
        return cniconf.read_regular_file(str(target), limit=cniconf.MAX_CONF_FILE_BYTES)
    except CniError:
        return None


def _remove_stale_temporaries(target: Path) -> None:
    """Remove what a daemon killed between creating ``target``'s temporary and renaming it left
    beside it (``_replace``'s name pattern), once older than ``STALE_TEMPORARY_SECONDS``: a younger
    one may be another daemon's write in progress (the old and the new daemon of an upgrade). Only
    regular files are such leftovers; one that cannot be removed is logged and left: the write goes
    on, as a leftover blocks nothing (temporaries get fresh random names)."""
    cutoff = time.time() - STALE_TEMPORARY_SECONDS
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*"):
        try:
            status = leftover.lstat()
            if stat.S_ISREG(status.st_mode) and status.st_mtime < cutoff:
                leftover.unlink()
        except FileNotFoundError:  # its writer renamed or removed it meanwhile
            continue
        except OSError as exc:
            log.warning("cannot remove %s, a temporary a killed writer left: %s", leftover, exc.strerror)


def _replace(target: Path, content: bytes, *, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Temporary file beside ``target``, fsync, rename, fsync of the directory; the file gets
    ``mode`` and, when given, ``owner`` (uid, gid)."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if owner is not None:
            os.chown(temp_name, *owner)
        os.chmod(temp_name, mode)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(settings: Settings) -> bool:
    """Delete ``00-multus.conf`` (the cluster network went away); True if there was one."""
    target = Path(settings.cni_config_dir) / CONF_NAME
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    _fsync_directory(target.parent)
    return True
