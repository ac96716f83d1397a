"""The daemon's settings: one frozen tree read from daemon-config.json, every field validated.

Read once at start-up by ``app.daemon`` and handed down; no other module reads the file, the
environment or global state for configuration (except ``multusctl``, which reads only
``socketDir`` and ``stateDir`` itself to start fast; a test keeps its defaults equal to these).
Keys keep upstream Multus spelling (``socketDir``, ``binDir``, ``cniDir``, ``confDir``,
``clusterNetwork``, ...); keys of our own are marked "multus-py" below. An invalid value raises
``SettingsError`` naming the key.

Per-request keys (``clusterNetwork``, ``defaultNetworks``, ``confDir``, ``binDir``, ...) are also
parsed from each request's merged configuration by ``app.attach``: upstream lets the shim's conf
carry them and the daemon's file override them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = "/etc/cni/net.d/multus.d/daemon-config.json"
DEFAULT_DELEGATE_TIMEOUT = 60.0
DEFAULT_GC_INTERVAL = 10.0
DEFAULT_HISTORY_MAX_AGE_HOURS = 720.0
DEFAULT_HISTORY_MAX_ROWS = 1_000_000
LOG_FORMATS = ("text", "json")


class SettingsError(ValueError):
    """daemon-config.json (or a key in it) is unusable; the message names the key."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Every timeout the daemon applies, in seconds."""

    delegate_exec: float = DEFAULT_DELEGATE_TIMEOUT
    """multus-py ``delegateTimeoutSeconds``: bound on one plugin execution (ADD, DEL, CHECK, ...)."""
    shutdown_grace: float = 10.0
    """How long a stopping daemon keeps serving in-flight requests (upstream: 10 s)."""
    gc_interval: float = DEFAULT_GC_INTERVAL
    """multus-py ``gcIntervalSeconds``: pause between two garbage-collection passes."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The parsed daemon-config.json. ``raw`` is the file's object, merged over every request."""

    raw: Mapping[str, Any]
    socket_dir: Path = Path("/run/multus")
    state_dir: Path = Path("/var/lib/multus-py")
    bin_dir: str = "/opt/cni/bin"
    cni_dir: str = "/var/lib/cni/multus"
    conf_dir: str = "/etc/cni/multus/net.d"
    cni_config_dir: str = "/etc/cni/net.d"
    multus_autoconfig_dir: str = ""
    multus_config_file: str = "auto"
    multus_master_cni: str = ""
    cni_version: str = ""
    daemon_socket_dir: str = ""
    log_file: str = ""
    log_level: str = "panic"
    log_to_stderr: bool = False
    kubeconfig: str = ""
    metrics_port: int | None = None
    connection_limit: int | None = None
    """Upstream's ``connectionLimit``: CNI requests served at once on the socket, the rest wait
    (None: no bound)."""
    timeouts: Timeouts = field(default_factory=Timeouts)

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / "multus.sock"

    pod_resources_socket: str = "/var/lib/kubelet/pod-resources/kubelet.sock"
    """multus-py ``podResourcesSocket``: the kubelet pod-resources API (device ids for NADs with a
    ``resourceName``); upstream hard-codes the same path."""
    sysfs_root: Path = Path("/sys")
    """multus-py ``sysfsRoot``: where PCI devices (SR-IOV VFs) are found; tests use a fake tree."""
    spool_dir: Path | None = None
    """multus-py ``spoolDir``: where the shim records DELs it could not deliver (default
    ``<stateDir>/spool``); it is written into the generated shim conf."""

    history_max_age_hours: float = DEFAULT_HISTORY_MAX_AGE_HOURS
    """multus-py ``historyMaxAgeHours``: history lines older than this are pruned (0: kept)."""
    history_max_rows: int = DEFAULT_HISTORY_MAX_ROWS
    """multus-py ``historyMaxRows``: the oldest history lines beyond this count are pruned (0: no bound)."""
    log_format: str = "text"
    """multus-py ``logFormat``: ``text`` (upstream-like lines) or ``json`` (one JSON object per line)."""

    readiness_indicator_file: str = ""
    """Upstream's ``readinessindicatorfile``: ADDs wait (the daemon is not ready) while it is
    absent; in auto mode ``00-multus.conf`` exists only while it does."""

    @property
    def request_overrides(self) -> Mapping[str, Any]:
        """What is merged over every request's conf: the file's keys, without the readiness
        indicator in auto mode (upstream strips it there)."""
        if self.multus_config_file == "auto" and "readinessindicatorfile" in self.raw:
            return {key: value for key, value in self.raw.items() if key != "readinessindicatorfile"}
        return self.raw

    @property
    def database_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def query_socket_path(self) -> Path:
        """The read-only query API's socket (``multusctl``), next to ``multus.sock``."""
        return self.socket_dir / "multus-query.sock"

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.state_dir / "spool"


def load(path: str | os.PathLike[str]) -> Settings:
    """Read and validate daemon-config.json at ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read daemon config {path}: {exc.strerror}") from exc
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise SettingsError(f"daemon config {path} is not valid JSON: {exc}") from exc
    return from_mapping(obj)


def from_mapping(obj: object) -> Settings:
    """Validate a decoded daemon-config object."""
    if not isinstance(obj, dict):
        raise SettingsError("daemon config must be a JSON object")
    reader = _Reader(obj)
    return Settings(
        raw=dict(obj),
        socket_dir=Path(reader.string("socketDir", "/run/multus")),
        state_dir=Path(reader.string("stateDir", "/var/lib/multus-py")),
        bin_dir=reader.string("binDir", "/opt/cni/bin"),
        cni_dir=reader.string("cniDir", "/var/lib/cni/multus"),
        conf_dir=reader.string("confDir", "/etc/cni/multus/net.d"),
        cni_config_dir=reader.string("cniConfigDir", "/etc/cni/net.d"),
        multus_autoconfig_dir=reader.string("multusAutoconfigDir", ""),
        multus_config_file=reader.string("multusConfigFile", "auto"),
        multus_master_cni=reader.string("multusMasterCNI", ""),
        cni_version=reader.string("cniVersion", ""),
        daemon_socket_dir=reader.string("daemonSocketDir", ""),
        log_file=reader.string("logFile", ""),
        log_level=reader.string("logLevel", "panic"),
        log_to_stderr=reader.boolean("logToStderr", False),
        kubeconfig=reader.string("kubeconfig", ""),
        metrics_port=reader.port("metricsPort"),
        connection_limit=reader.positive_integer("connectionLimit"),
        spool_dir=Path(reader.string("spoolDir", "")) if reader.string("spoolDir", "") else None,
        sysfs_root=Path(reader.string("sysfsRoot", "/sys")),
        readiness_indicator_file=reader.string("readinessindicatorfile", ""),
        pod_resources_socket=reader.string(
            "podResourcesSocket", "/var/lib/kubelet/pod-resources/kubelet.sock"
        ),
        history_max_age_hours=reader.non_negative_number("historyMaxAgeHours", DEFAULT_HISTORY_MAX_AGE_HOURS),
        history_max_rows=int(
            reader.non_negative_number("historyMaxRows", DEFAULT_HISTORY_MAX_ROWS, whole=True)
        ),
        log_format=reader.choice("logFormat", LOG_FORMATS),
        timeouts=Timeouts(
            delegate_exec=reader.positive_number("delegateTimeoutSeconds", DEFAULT_DELEGATE_TIMEOUT),
            gc_interval=reader.positive_number("gcIntervalSeconds", DEFAULT_GC_INTERVAL),
        ),
    )


class _Reader:
    """Typed access to keys of a JSON object, raising ``SettingsError`` that names the key."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self._obj = obj

    def string(self, key: str, default: str) -> str:
        value = self._obj.get(key, default)
        if not isinstance(value, str):
            raise SettingsError(f"daemon config key {key!r} must be a string, got {json.dumps(value)}")
        return value or default

    def boolean(self, key: str, default: bool) -> bool:
        value = self._obj.get(key, default)
        if not isinstance(value, bool):
            raise SettingsError(f"daemon config key {key!r} must be true or false, got {json.dumps(value)}")
        return value

    def port(self, key: str) -> int | None:
        value = self._obj.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
            raise SettingsError(
                f"daemon config key {key!r} must be a TCP port number, got {json.dumps(value)}"
            )
        return value

    def positive_integer(self, key: str) -> int | None:
        """An optional whole number > 0 (None when the key is absent)."""
        value = self._obj.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise SettingsError(
                f"daemon config key {key!r} must be a whole number > 0, got {json.dumps(value)}"
            )
        return value

    def positive_number(self, key: str, default: float) -> float:
        value = self._obj.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise SettingsError(
                f"daemon config key {key!r} must be a positive number, got {json.dumps(value)}"
            )
        return float(value)

    def non_negative_number(self, key: str, default: float, *, whole: bool = False) -> float:
        value = self._obj.get(key, default)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or value < 0
            or (whole and not float(value).is_integer())
        ):
            kind = "a whole number" if whole else "a number"
            raise SettingsError(f"daemon config key {key!r} must be {kind} >= 0, got {json.dumps(value)}")
        return float(value)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self._obj.get(key, choices[0])
        if value not in choices:
            raise SettingsError(
                f"daemon config key {key!r} must be one of {', '.join(map(json.dumps, choices))}, "
                f"got {json.dumps(value)}"
            )
        return str(value)
