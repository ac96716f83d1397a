"""The daemon's settings: one frozen tree from daemon-config.json and the environment, validated.

``load(path, environ=...)`` is called once at start-up by ``app.daemon.main`` (before anything
heavy is imported: this module is standard library only) and the tree is handed down. Every key,
interval and environment input the daemon uses is read here and nowhere else: the environment
mapping is passed in (``MULTUS_NODE_NAME``, ``CNI_PATH``, ``PATH`` for plugins, ``KUBECONFIG``
and the in-cluster service variables, the test hooks ``MULTUS_PY_BOOT_ID``,
``MULTUS_PY_CRASH_AT`` and ``MULTUS_PY_READY_HOLD_SECONDS``), and the Kubernetes side's limits
come from the ``watch`` key. Outside
this module only ``app.cli`` reads daemon-config itself (``multusctl`` reads ``socketDir`` and
``stateDir`` to start fast; ``multus-install`` loads the same tree). Each default is written
once, on its field. Keys keep upstream Multus spelling (``socketDir``, ``binDir``, ``cniDir``,
``confDir``, ``clusterNetwork``, ...); keys of our own are marked "multus-py" below. An invalid
value raises ``SettingsError`` naming the key.

Per-request keys (``clusterNetwork``, ``defaultNetworks``, ``confDir``, ``binDir``, ...) are also
parsed from each request's merged configuration by ``app.attach``: upstream lets the shim's conf
carry them and the daemon's file override them.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import gofold, rootpath

DEFAULT_CONFIG_PATH = "/etc/cni/net.d/multus.d/daemon-config.json"
DEFAULT_DELEGATE_TIMEOUT = 60.0
DEFAULT_GC_INTERVAL = 10.0
DEFAULT_POD_GONE_GRACE = 30.0
"""Seconds a sandbox's pod must have been seen gone (or replaced) on the API before GC collects
the sandbox (``app.gc.collector.POD_EVIDENCE``)."""
DEFAULT_HISTORY_MAX_AGE_HOURS = 720.0
DEFAULT_HISTORY_MAX_ROWS = 1_000_000
LOG_FORMATS = ("text", "json")
UNIX_SOCKET_PATH_MAX = 107
"""Longest path, in bytes, of a unix socket: ``sockaddr_un.sun_path`` holds 108 with the NUL."""
DEFAULT_PLUGIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
"""``PATH`` for delegates when the daemon's environment has none."""
NODE_NAME_VARIABLE = "MULTUS_NODE_NAME"
"""Upstream's variable for this node's name (the downward API sets it); the hostname without it."""
BOOT_ID_VARIABLE = "MULTUS_PY_BOOT_ID"
"""Test hook: pretend to run in another boot (a node reboot without rebooting the test machine)."""
CRASH_AT_VARIABLE = "MULTUS_PY_CRASH_AT"
"""Test hook: a crash point of ``app.attach.crashpoints`` to SIGKILL the daemon at."""
READY_HOLD_VARIABLE = "MULTUS_PY_READY_HOLD_SECONDS"
"""Test hook: seconds a request waits for readiness before code 11 (the server's own otherwise)."""
SHIM_CONF_KEYS = (
    "binDir",
    "cniVersion",
    "logFile",
    "logLevel",
    "logToStderr",
    "logOptions",
    "namespaceIsolation",
    "globalNamespaces",
    "cniDir",
    "auxiliaryCNIChainName",
    "daemonSocketDir",
)
"""Keys the generated ``00-multus.conf`` carries as daemon-config has them (upstream's generator)."""
WATCH_KEYS = {
    "requestTimeout": "request_timeout",
    "watchServerTimeout": "watch_server_timeout",
    "watchInactivityTimeout": "watch_inactivity_timeout",
    "listPageSize": "list_page_size",
    "eventBatchSize": "event_batch_size",
    "eventBufferSize": "event_buffer_size",
    "positionPersistInterval": "position_persist_interval",
    "resumeSettle": "resume_settle",
    "backoffInitial": "backoff_initial",
    "backoffMax": "backoff_max",
    "backoffJitter": "backoff_jitter",
    "backoffResetAfter": "backoff_reset_after",
    "podWait": "pod_wait",
    "nadSyncWait": "nad_sync_wait",
    "statusRetryDelays": "status_retry_delays",
    "statusDeadline": "status_deadline",
    "eventQueueSize": "event_queue_size",
    "eventRate": "event_rate",
    "eventBurst": "event_burst",
    "eventTimeout": "event_timeout",
    "eventDelay": "event_delay",
}
"""multus-py ``watch`` object: daemon-config key -> ``app.watch.settings.WatchSettings`` field.
Whole-number fields are those whose name ends in ``size``, ``burst`` or ``server_timeout``."""
LOG_OPTIONS_KEYS = ("maxAge", "maxSize", "maxBackups", "compress")
"""Upstream's ``logOptions`` fields (``pkg/logging``'s ``LogOptions``), in its struct's order."""
_WHOLE_WATCH_FIELDS = (
    "list_page_size",
    "event_batch_size",
    "event_buffer_size",
    "event_queue_size",
    "event_burst",
    "watch_server_timeout",
)


def default_max_concurrent_delegates() -> int:
    """``maxConcurrentDelegates`` when unset: 4 per CPU this process may run on, at least 4."""
    return max(4, 4 * len(os.sched_getaffinity(0)))


class SettingsError(ValueError):
    """daemon-config.json (or a key in it) is unusable; the message names the key."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Every timeout and interval of the daemon's own loops, in seconds."""

    delegate_exec: float = DEFAULT_DELEGATE_TIMEOUT
    """multus-py ``delegateTimeoutSeconds``: bound on one plugin execution (ADD, DEL, CHECK, ...)."""
    shutdown_grace: float = 10.0
    """multus-py ``shutdownGraceSeconds``: how long a stopping daemon waits for in-flight
    operations (upstream: 10 s)."""
    gc_interval: float = DEFAULT_GC_INTERVAL
    """multus-py ``gcIntervalSeconds``: pause between two garbage-collection passes."""
    pod_gone_grace: float = DEFAULT_POD_GONE_GRACE
    """multus-py ``gcPodGoneGraceSeconds``: how long a sandbox's pod must have been seen gone or
    replaced on the API before GC collects the sandbox."""
    autoconf_interval: float = 2.0
    """multus-py ``autoconfIntervalSeconds``: between two checks of the primary network
    configuration (``00-multus.conf``) and of the readiness indicator file."""
    history_prune_interval: float = 60.0
    """multus-py ``historyPruneIntervalSeconds``: between two history retention passes."""
    task_restart_initial: float = 0.5
    """First pause before a crashed background task is restarted; doubles up to ``task_restart_max``."""
    task_restart_max: float = 30.0


@dataclass(frozen=True, slots=True)
class Environment:
    """What the daemon takes from its process environment, read once by ``load``."""

    node_name: str = ""
    """``MULTUS_NODE_NAME``, else the hostname: only this node's pods are mirrored."""
    cni_path: tuple[str, ...] = ()
    """``CNI_PATH``: where delegates are searched after ``binDir``."""
    plugin_path: str = DEFAULT_PLUGIN_PATH
    """``PATH`` handed to delegates."""
    kubeconfig: str = ""
    """``KUBECONFIG`` (used when daemon-config has no ``kubeconfig``)."""
    kubernetes_service_host: str = ""
    kubernetes_service_port: str = ""
    """``KUBERNETES_SERVICE_HOST``/``_PORT``: the in-cluster API server."""
    boot_id: str = ""
    """``MULTUS_PY_BOOT_ID`` (test hook); empty: the kernel's boot id."""
    crash_at: str = ""
    """``MULTUS_PY_CRASH_AT`` (test hook); empty: no crash point armed."""
    ready_hold: float | None = None
    """``MULTUS_PY_READY_HOLD_SECONDS`` (test hook): how long a request waits for readiness before
    code 11; None: the server's own (``app.daemon.server.READY_HOLD_SECONDS``)."""

    def kube_environ(self) -> Mapping[str, str]:
        """The variables ``app.watch.client.find_access`` looks at, as found."""
        return {
            "KUBECONFIG": self.kubeconfig,
            "KUBERNETES_SERVICE_HOST": self.kubernetes_service_host,
            "KUBERNETES_SERVICE_PORT": self.kubernetes_service_port,
        }


@dataclass(frozen=True, slots=True)
class LogOptions:
    """Upstream's ``logOptions`` for ``logFile``, with lumberjack's meaning."""

    max_size_mb: int = 100
    """``maxSize``: the file is rotated before it grows beyond this many megabytes (0: 100)."""
    max_age_days: int = 5
    """``maxAge``: rotated files older than this many days are removed (0: kept whatever their age)."""
    max_backups: int = 5
    """``maxBackups``: most rotated files kept (0: all, within ``maxAge``)."""
    compress: bool = True
    """``compress``: rotated files are gzipped."""


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
    parallel_delegates: bool = False
    """multus-py ``parallelDelegates``: after the cluster network, run the other delegates concurrently."""

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / "multus.sock"

    pod_resources_socket: str = "/var/lib/kubelet/pod-resources/kubelet.sock"
    """multus-py ``podResourcesSocket``: the kubelet pod-resources API (device ids for NADs with a
    ``resourceName``); upstream hard-codes the same path."""
    device_checkpoint_file: str = "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint"
    """multus-py ``deviceCheckpointFile``: the kubelet's device-manager checkpoint, read for device
    ids when the pod-resources API does not answer; upstream hard-codes the same path."""
    sysfs_root: Path = Path("/sys")
    """multus-py ``sysfsRoot``: where PCI devices (SR-IOV VFs) are found; tests use a fake tree."""
    device_info_dir: str = "/var/run/k8s.cni.cncf.io/devinfo"
    """multus-py ``deviceInfoDir``: the device-info spec's base directory (device plugins' files in
    ``dp/``, the files written for CNIs in ``cni/``); upstream hard-codes the same path."""
    spool_dir: Path | None = None
    """multus-py ``spoolDir``: where the shim records DELs it could not deliver (default
    ``<stateDir>/spool``); it is written into the generated shim conf."""

    history_max_age_hours: float = DEFAULT_HISTORY_MAX_AGE_HOURS
    """multus-py ``historyMaxAgeHours``: history lines older than this are pruned (0: kept)."""
    history_max_rows: int = DEFAULT_HISTORY_MAX_ROWS
    """multus-py ``historyMaxRows``: the oldest history lines beyond this count are pruned (0: no bound)."""
    log_format: str = "text"
    """multus-py ``logFormat``: ``text`` (upstream-like lines) or ``json`` (one JSON object per line)."""

    chroot_dir: str = ""
    """Upstream's ``chrootDir``: every delegate runs in ``chroot(chrootDir)`` ("" = the daemon's root);
    ``check_chroot_dir`` makes sure, at the daemon's start, that it is a directory holding ``binDir``."""
    max_concurrent_delegates: int = field(default_factory=lambda: default_max_concurrent_delegates())
    """multus-py ``maxConcurrentDelegates``: plugin processes running at once; more wait, in arrival
    order (default ``default_max_concurrent_delegates()``)."""

    hotplug_networks: bool = False
    """multus-py ``hotplugNetworks``: the daemon attaches and detaches networks when the
    ``k8s.v1.cni.cncf.io/networks`` annotation of a running pod changes (``app.attach.hotplug``)."""

    readiness_indicator_file: str = ""
    """Upstream's ``readinessindicatorfile``: ADDs wait (the daemon is not ready) while it is
    absent; in auto mode ``00-multus.conf`` exists only while it does."""

    log_options: LogOptions = field(default_factory=LogOptions)
    """Upstream's ``logOptions``: rotation of ``logFile``."""
    override_network_name: bool = False
    """Upstream's ``overrideNetworkName``: ``00-multus.conf`` is named as the primary network
    (``multus-cni-network`` still when the primary has no name to take)."""
    force_cni_version: bool = False
    """Upstream's ``forceCNIVersion``: the primary conf's ``cniVersion`` is rewritten to
    ``cniVersion`` (atomically, the file's mode and owner kept, as upstream's in-place write keeps
    them)."""
    shim_conf_values: Mapping[str, Any] = field(default_factory=dict)
    """The ``SHIM_CONF_KEYS`` daemon-config sets, as it sets them (copied into ``00-multus.conf``)."""
    watch: Mapping[str, Any] = field(default_factory=dict)
    """multus-py ``watch``: overrides of the Kubernetes side's limits, by ``WatchSettings`` field
    name (the defaults are that class's)."""
    environment: Environment = field(default_factory=Environment)
    """What was read from the process environment."""

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
    def restart_marker_path(self) -> Path:
        """``multus.restarting``: left by a daemon stopping gracefully, for the shim to wait."""
        return self.socket_dir / "multus.restarting"

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.state_dir / "spool"


_DEFAULTS = Settings(raw={})
_DEFAULT_TIMEOUTS = Timeouts()
_DEFAULT_LOG_OPTIONS = LogOptions()


def load(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate daemon-config.json at ``path``, with the daemon's ``environ``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read daemon config {path}: {exc.strerror}") from exc
    try:
        try:
            document = json.loads(
                data, object_pairs_hook=_Pairs, parse_constant=_NotFinite, parse_float=_float, parse_int=_int
            )
        except ValueError as exc:
            raise SettingsError(f"daemon config {path} is not valid JSON: {exc}") from exc
        _refuse_not_finite(document)
        return from_mapping(document, environ=environ)
    except RecursionError as exc:  # the decoder's, or a walk of what it decoded
        raise SettingsError(f"daemon config {path} is nested too deeply") from exc


def from_mapping(obj: object, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Validate a decoded daemon-config object (a dict, or as ``load`` decodes it: objects as
    their pairs in document order); ``environ`` is the process environment (none: an empty one,
    as tests of the file alone want)."""
    if not _is_object(obj):
        raise SettingsError("daemon config must be a JSON object")
    _refuse_unusable_strings(obj)
    reader = _Reader(obj)
    d = _DEFAULTS
    t = _DEFAULT_TIMEOUTS
    parsed = Settings(
        raw=_plain_object(obj),
        socket_dir=Path(reader.string("socketDir", str(d.socket_dir))),
        state_dir=Path(reader.absolute_path("stateDir", str(d.state_dir))),
        bin_dir=reader.string("binDir", d.bin_dir),
        chroot_dir=reader.absolute_path("chrootDir", "", empty_ok=True),
        max_concurrent_delegates=reader.positive_int(
            "maxConcurrentDelegates", default_max_concurrent_delegates()
        ),
        cni_dir=reader.string("cniDir", d.cni_dir),
        conf_dir=reader.string("confDir", d.conf_dir),
        cni_config_dir=reader.string("cniConfigDir", d.cni_config_dir),
        multus_autoconfig_dir=reader.string("multusAutoconfigDir", d.multus_autoconfig_dir),
        multus_config_file=reader.string("multusConfigFile", d.multus_config_file),
        multus_master_cni=reader.string("multusMasterCNI", d.multus_master_cni),
        cni_version=reader.string("cniVersion", d.cni_version),
        daemon_socket_dir=reader.string("daemonSocketDir", d.daemon_socket_dir),
        log_file=reader.string("logFile", d.log_file),
        log_level=reader.string("logLevel", d.log_level),
        log_to_stderr=reader.boolean("logToStderr", d.log_to_stderr),
        kubeconfig=reader.string("kubeconfig", d.kubeconfig),
        metrics_port=reader.port("metricsPort"),
        connection_limit=reader.positive_integer("connectionLimit"),
        spool_dir=Path(spool) if (spool := reader.absolute_path("spoolDir", "", empty_ok=True)) else None,
        sysfs_root=Path(reader.string("sysfsRoot", str(d.sysfs_root))),
        device_info_dir=reader.absolute_path("deviceInfoDir", d.device_info_dir),
        readiness_indicator_file=reader.string("readinessindicatorfile", d.readiness_indicator_file),
        hotplug_networks=reader.boolean("hotplugNetworks", d.hotplug_networks),
        pod_resources_socket=reader.string("podResourcesSocket", d.pod_resources_socket),
        device_checkpoint_file=reader.string("deviceCheckpointFile", d.device_checkpoint_file),
        history_max_age_hours=reader.non_negative_number("historyMaxAgeHours", d.history_max_age_hours),
        history_max_rows=int(reader.non_negative_number("historyMaxRows", d.history_max_rows, whole=True)),
        log_format=reader.choice("logFormat", LOG_FORMATS),
        parallel_delegates=reader.boolean("parallelDelegates", False),
        timeouts=Timeouts(
            delegate_exec=reader.positive_number("delegateTimeoutSeconds", t.delegate_exec),
            gc_interval=reader.positive_number("gcIntervalSeconds", t.gc_interval),
            pod_gone_grace=reader.non_negative_number("gcPodGoneGraceSeconds", t.pod_gone_grace),
            shutdown_grace=reader.non_negative_number("shutdownGraceSeconds", t.shutdown_grace),
            autoconf_interval=reader.positive_number("autoconfIntervalSeconds", t.autoconf_interval),
            history_prune_interval=reader.positive_number(
                "historyPruneIntervalSeconds", t.history_prune_interval
            ),
        ),
        log_options=_log_options(reader.value("logOptions")),
        override_network_name=reader.boolean("overrideNetworkName", d.override_network_name),
        force_cni_version=reader.boolean("forceCNIVersion", d.force_cni_version),
        shim_conf_values=_shim_conf_values(reader),
        watch=_watch(reader.value("watch")),
        environment=_environment(environ or {}),
    )
    _check_socket_dir(parsed)
    return parsed


def _check_socket_dir(settings: Settings) -> None:
    """Refuse a ``socketDir`` too long for the sockets the daemon binds in it: ``multus.sock``
    failed to bind (exit 3, the key unnamed) and, a few bytes shorter, ``multus-query.sock`` did,
    the daemon serving on without ``multusctl``'s query API (an error line in the log)."""
    longest = max((settings.socket_path, settings.query_socket_path), key=lambda path: len(bytes(path)))
    if len(bytes(longest)) > UNIX_SOCKET_PATH_MAX:
        raise SettingsError(
            f"daemon config key 'socketDir' must be a directory whose sockets' paths fit in "
            f"{UNIX_SOCKET_PATH_MAX} bytes, got {json.dumps(str(settings.socket_dir))} "
            f"({longest.name} would take {len(bytes(longest))})"
        )


def _shim_conf_values(reader: _Reader) -> Mapping[str, Any]:
    """The ``SHIM_CONF_KEYS`` the file sets, once each has upstream's type: the keys no field of
    ``Settings`` reads are checked here, or a wrong one would be copied into ``00-multus.conf``
    and merged into every request, each ADD refused for it (upstream refuses the file). A key
    set to null is not copied, and each is copied under its own spelling, however the file
    spells it (upstream's generator re-encodes its struct)."""
    reader.boolean("namespaceIsolation", False)
    reader.string("globalNamespaces", "")
    reader.string("auxiliaryCNIChainName", "")
    values = {key: _plain(value) for key in SHIM_CONF_KEYS if (value := reader.value(key)) is not None}
    log_options = reader.value("logOptions")
    if _is_object(log_options):
        fields = _Reader(log_options)
        values["logOptions"] = {
            key: value for key in LOG_OPTIONS_KEYS if (value := fields.value(key)) is not None
        }
    return values


def check_chroot_dir(settings: Settings) -> None:
    """Refuse (SettingsError naming ``chrootDir``) a root delegates cannot run in: not a directory,
    or without ``binDir`` inside it. The daemon calls this at start-up, before it serves anything;
    readers of the file that run elsewhere (the installer, multusctl) do not."""
    root, bin_dir = settings.chroot_dir, settings.bin_dir
    if not root:
        return
    if not os.path.isdir(root):
        raise SettingsError(f"daemon config key 'chrootDir': {root} is not a directory")
    if not rootpath.is_dir(root, bin_dir):
        raise SettingsError(
            f"daemon config key 'chrootDir': binDir {bin_dir} is not a directory inside {root}"
        )


def _environment(environ: Mapping[str, str]) -> Environment:
    return Environment(
        node_name=environ.get(NODE_NAME_VARIABLE) or socket.gethostname(),
        cni_path=tuple(part for part in environ.get("CNI_PATH", "").split(":") if part),
        plugin_path=environ.get("PATH") or DEFAULT_PLUGIN_PATH,
        kubeconfig=environ.get("KUBECONFIG", ""),
        kubernetes_service_host=environ.get("KUBERNETES_SERVICE_HOST", ""),
        kubernetes_service_port=environ.get("KUBERNETES_SERVICE_PORT", ""),
        boot_id=environ.get(BOOT_ID_VARIABLE, ""),
        crash_at=environ.get(CRASH_AT_VARIABLE, ""),
        ready_hold=_seconds_variable(environ, READY_HOLD_VARIABLE),
    )


def _seconds_variable(environ: Mapping[str, str], name: str) -> float | None:
    raw = environ.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"environment variable {name}: {raw!r} is not a number of seconds (0 or more)")
    return value


def _log_options(value: object) -> LogOptions:
    """``logOptions``: each field optional (absent: upstream's default)."""
    if value is None:
        return _DEFAULT_LOG_OPTIONS
    if not _is_object(value):
        raise SettingsError(
            f"daemon config key 'logOptions' must be an object, got {json.dumps(_plain(value))}"
        )
    reader = _Reader(value, prefix="logOptions.")
    o = _DEFAULT_LOG_OPTIONS
    return LogOptions(
        max_size_mb=int(reader.non_negative_number("maxSize", o.max_size_mb, whole=True)),
        max_age_days=int(reader.non_negative_number("maxAge", o.max_age_days, whole=True)),
        max_backups=int(reader.non_negative_number("maxBackups", o.max_backups, whole=True)),
        compress=reader.boolean("compress", o.compress),
    )


def _watch(value: object) -> Mapping[str, Any]:
    """``watch``: known keys only, positive numbers (``backoffJitter`` in [0, 1), whole numbers
    where the field counts something, ``statusRetryDelays`` a list of numbers >= 0)."""
    if value is None:
        return {}
    if not _is_object(value):
        raise SettingsError(f"daemon config key 'watch' must be an object, got {json.dumps(_plain(value))}")
    reader = _Reader(value, prefix="watch.")
    overrides: dict[str, Any] = {}
    for given_key, given in _pairs(value):
        key = _WATCH_KEYS_FOLDED.get(gofold.fold(given_key), given_key)
        name = WATCH_KEYS.get(key)
        if name is None:
            raise SettingsError(
                f"daemon config key 'watch.{key}' is unknown (known: {', '.join(sorted(WATCH_KEYS))})"
            )
        if given is None:
            continue  # null: no override, as if absent
        if name == "status_retry_delays":
            overrides[name] = reader.number_list(key)
        elif name == "backoff_jitter":
            overrides[name] = reader.fraction(key)
        elif name == "event_delay":
            overrides[name] = reader.non_negative_number(key, 0)
        elif name in _WHOLE_WATCH_FIELDS:
            overrides[name] = int(reader.positive_number(key, 1, whole=True))
        else:
            overrides[name] = reader.positive_number(key, 1)
    return overrides


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as ``load`` decodes it: its pairs in document order, duplicates included."""


def _is_object(value: object) -> bool:
    return isinstance(value, dict | _Pairs)


def _pairs(obj: Any) -> Any:
    """The key/value pairs of a decoded object, in document order."""
    return obj if isinstance(obj, _Pairs) else obj.items()


def _plain(value: Any) -> Any:
    """A decoded value with its objects as dicts, a repeated key taking its last value (as Go
    decodes the file into the map it merges over every request)."""
    if isinstance(value, _Pairs):
        return _plain_object(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _plain_object(obj: Any) -> dict[str, Any]:
    return {key: _plain(value) for key, value in _pairs(obj)}


class _NotFinite:
    """A number as written that Go does not decode (``NaN`` and ``Infinity`` are not JSON, and a
    number beyond float64's range is no float64): upstream refuses the file, or fails every
    request it merges it into; kept to be refused naming its key."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _float(text: str) -> float | _NotFinite:
    value = float(text)
    return value if math.isfinite(value) else _NotFinite(text)


def _int(text: str) -> int | _NotFinite:
    value = int(text)
    return value if abs(value) <= sys.float_info.max else _NotFinite(text)


def _nodes(document: object) -> Iterator[tuple[str, object]]:
    """Every value of a decoded document with the key path naming it (``watch.backoffMax``,
    ``defaultNetworks[1]``; the document itself ``""``), depth first, in document order."""
    pending: list[tuple[str, object]] = [("", document)]
    while pending:
        where, value = pending.pop()
        yield where, value
        if _is_object(value):
            pending.extend(
                (f"{where}.{key}" if where else key, item) for key, item in reversed(list(_pairs(value)))
            )
        elif isinstance(value, list):
            pending.extend((f"{where}[{index}]", item) for index, item in reversed(list(enumerate(value))))


def _refuse_not_finite(document: object) -> None:
    """Raise ``SettingsError`` naming the first key (``watch.backoffMax``, ``defaultNetworks[1]``)
    whose value is a ``_NotFinite``."""
    for where, value in _nodes(document):
        if isinstance(value, _NotFinite):
            raise SettingsError(f"daemon config key {where!r} must be a finite number, got {value.text}")


_UNUSABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")
"""A NUL or a lone surrogate: what no system call takes in a path (``app.cni.names`` too, a layer
above this module)."""


def _refuse_unusable_strings(document: object) -> None:
    """Raise ``SettingsError`` naming the first key whose name or string value holds a NUL or a
    lone surrogate (a ``\\u0000`` or ``\\ud800`` escape): no system call takes such a path (a
    ``socketDir``, ``stateDir``, ``logFile``, ``spoolDir`` or ``deviceInfoDir`` of one made the
    daemon die at start with a ValueError or UnicodeEncodeError traceback), and the keys merged
    over every request would have each of them refused."""
    for where, value in _nodes(document):
        if isinstance(value, str) and _UNUSABLE_CHARACTER.search(value):
            raise SettingsError(
                f"daemon config key {where!r} must hold no NUL character nor lone surrogate, "
                f"got {json.dumps(value)[:200]}"
            )
        if _is_object(value):
            for key, _ in _pairs(value):
                if _UNUSABLE_CHARACTER.search(key):
                    named = f"{where}.{key}" if where else key
                    raise SettingsError(
                        f"daemon config key {named!r}: a key must hold no NUL character nor lone surrogate"
                    )


_WATCH_KEYS_FOLDED = {gofold.fold(key): key for key in WATCH_KEYS}


class _Reader:
    """Typed access to keys of a JSON object, raising ``SettingsError`` that names the key.

    Keys are matched as Go's decoder matches struct fields, so as upstream reads the file: whatever
    their case (``SocketDir``, ``readinessIndicatorFile``), the last of the spellings in document
    order winning. A key set to null reads as absent: Go's decoder leaves a field alone on null, so
    upstream keeps its default (or the value an earlier spelling gave)."""

    def __init__(self, obj: Any, *, prefix: str = "") -> None:
        self._fields = {gofold.fold(key): value for key, value in _pairs(obj) if value is not None}
        self._prefix = prefix

    def value(self, key: str) -> Any:
        """The value of ``key`` as given; None when it is absent or null."""
        return self._fields.get(gofold.fold(key))

    def _error(self, key: str, expected: str, value: object) -> SettingsError:
        return SettingsError(
            f"daemon config key {self._prefix + key!r} must be {expected}, got {json.dumps(_plain(value))}"
        )

    def string(self, key: str, default: str) -> str:
        value = self.value(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._error(key, "a string", value)
        return value or default

    def absolute_path(self, key: str, default: str, *, empty_ok: bool = False) -> str:
        """A path that must be absolute (or, with ``empty_ok``, empty: the feature is off)."""
        value = self.string(key, default)
        if not value.startswith("/") and not (empty_ok and value == ""):
            raise self._error(key, "an absolute path", value)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.value(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._error(key, "true or false", value)
        return value

    def port(self, key: str) -> int | None:
        value = self.value(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
            raise self._error(key, "a TCP port number", value)
        return value

    def positive_integer(self, key: str) -> int | None:
        """An optional whole number > 0 (None when the key is absent)."""
        value = self.value(key)
        return None if value is None else self._whole_positive(key, value)

    def positive_number(self, key: str, default: float, *, whole: bool = False) -> float:
        value = self.value(key)
        if value is None:
            return float(default)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or value <= 0
            or (whole and not float(value).is_integer())
        ):
            raise self._error(key, "a positive whole number" if whole else "a positive number", value)
        return float(value)

    def positive_int(self, key: str, default: int) -> int:
        """A whole number > 0, ``default`` when the key is absent."""
        value = self.value(key)
        return default if value is None else self._whole_positive(key, value)

    def _whole_positive(self, key: str, value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise self._error(key, "a whole number > 0", value)
        return value

    def non_negative_number(self, key: str, default: float, *, whole: bool = False) -> float:
        value = self.value(key)
        if value is None:
            return float(default)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or value < 0
            or (whole and not float(value).is_integer())
        ):
            raise self._error(key, f"{'a whole number' if whole else 'a number'} >= 0", value)
        return float(value)

    def fraction(self, key: str) -> float:
        value = self.value(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1:
            raise self._error(key, "a number in [0, 1)", value)
        return float(value)

    def number_list(self, key: str) -> tuple[float, ...]:
        value = self.value(key)
        if not isinstance(value, list) or not all(
            isinstance(item, int | float) and not isinstance(item, bool) and item >= 0 for item in value
        ):
            raise self._error(key, "a list of numbers >= 0", value)
        return tuple(float(item) for item in value)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.value(key)
        if value is None:
            return choices[0]
        if value not in choices:
            raise self._error(key, f"one of {', '.join(map(json.dumps, choices))}", value)
        return str(value)
