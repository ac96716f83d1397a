"""Every Prometheus metric the daemon exports, defined once, in one registry.

Imported by the layers that observe something (the engine, the store's writer, GC and recovery,
the watchers, the socket server); served by ``app.daemon.metrics_server`` on ``metricsPort``.
Names are prefixed ``multus_py_``; upstream's one metric, ``multus_server_request_total``, is kept
under its own name and labels, its values spelt as upstream's (``method="post"``), so existing
dashboards keep working. Label values come from small fixed sets (CNI commands, outcomes, plugin
types, error codes), never from pod names or container IDs. A label whose values come from outside
input (a NAD's plugin chain, a plugin's error code, a socket client's HTTP method) is declared
bounded here, beside its metric, and ``labelled`` reports any value past its bound as ``other``
(a method as ``unknown``, upstream's word): whoever writes NADs or requests cannot grow the series
(memory, every scrape) without end.

The metric classes come from ``prometheus_client``'s own modules without running the package's
``__init__``, which imports the exposition module and with it ``http.server``, ``wsgiref``,
``socketserver`` and ``gzip`` (about 0.7 MiB a daemon without ``metricsPort`` never uses): the
package is registered bare and completes itself, running its real ``__init__``, the first time
anything asks it for a name it does not have yet (``app.daemon.metrics_server`` does).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Collection
from typing import Any, TypeVar


def _bare_package(name: str) -> None:
    """Register package ``name`` without running its ``__init__`` until a name that is neither
    there yet nor a submodule is read."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # not installed: the import below says so
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(attribute: str) -> object:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        if importlib.util.find_spec(f"{name}.{attribute}") is not None:  # a submodule: just that
            return importlib.import_module(f"{name}.{attribute}")
        del package.__getattr__
        loader.exec_module(package)
        return getattr(package, attribute)

    package.__getattr__ = complete  # type: ignore[method-assign]
    sys.modules[name] = package


_bare_package("prometheus_client")

from prometheus_client.metrics import Counter, Gauge, Histogram  # noqa: E402 (after the bare package)
from prometheus_client.registry import CollectorRegistry  # noqa: E402

REGISTRY = CollectorRegistry(auto_describe=True)

_M = TypeVar("_M", Counter, Gauge, Histogram)

OVERFLOW_LABEL = "other"
"""The value a bounded label takes for any value past its bound."""


class BoundedLabel:
    """The values one label takes when outside input chooses them: those in ``known`` and the first
    ``limit`` others seen (each kept for the process's life), none longer than ``max_length``
    characters; any other value is reported as ``OVERFLOW_LABEL``."""

    def __init__(self, *, limit: int, max_length: int = 128, known: Collection[str] = ()) -> None:
        self.limit = limit
        self.max_length = max_length
        self._kept = set(known)
        self._admitted = 0
        self._lock = threading.Lock()

    def value(self, value: str) -> str:
        """``value`` if it is kept (or there is still room for it), else ``OVERFLOW_LABEL``."""
        if value in self._kept:
            return value
        if len(value) > self.max_length:
            return OVERFLOW_LABEL
        with self._lock:
            if value in self._kept:
                return value
            if self._admitted >= self.limit:
                return OVERFLOW_LABEL
            self._admitted += 1
            self._kept.add(value)
        return value


class HttpMethodLabel:
    """The ``method`` label of upstream's ``multus_server_request_total``, as its promhttp
    instrumentation (prometheus/client_golang's ``sanitizeMethod``) writes it: a standard method
    lower-cased (``post``, ``get``), any other ``unknown``; so a dashboard or alert written for
    upstream's daemon selects the same series."""

    def value(self, method: str) -> str:
        return _HTTP_METHOD_LABELS.get(method, UNKNOWN_HTTP_METHOD)


UNKNOWN_HTTP_METHOD = "unknown"
_HTTP_METHOD_LABELS = {
    spelling: method.lower()
    for method in ("GET", "PUT", "HEAD", "POST", "DELETE", "CONNECT", "OPTIONS", "NOTIFY", "TRACE", "PATCH")
    for spelling in (method, method.lower())
}
"""promhttp's known methods, each matched upper- or lower-case exactly, as Go's ``switch`` does."""
HTTP_METHOD = HttpMethodLabel()

_BOUNDS: dict[int, tuple[BoundedLabel | HttpMethodLabel | None, ...]] = {}
"""Per metric (by id), the bound of each of its labels (None: a small fixed set of our own)."""


def _bounded(metric: _M, **bounds: BoundedLabel | HttpMethodLabel) -> _M:
    """``metric``, its labels named in ``bounds`` bounded as given (applied by ``labelled``)."""
    names = metric._labelnames  # prometheus_client keeps the label names there
    unknown = set(bounds) - set(names)
    if unknown:
        raise ValueError(f"{metric._name} has no label {sorted(unknown)}")
    _BOUNDS[id(metric)] = tuple(bounds.get(name) for name in names)
    return metric


DELEGATE_PLUGINS = BoundedLabel(limit=64, max_length=128)
"""``multus_py_delegate_seconds``'s ``plugins``: the first 64 distinct plugin chains of a daemon's
life, each at most 128 characters; any other chain is counted as ``other`` (the history keeps its
exact plugin types)."""

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

SERVER_REQUESTS = _bounded(
    Counter(
        "multus_server_request_total",
        "Requests on the daemon socket, as upstream Multus counts them (method lower-cased as "
        "promhttp writes it; one that is not a standard HTTP method counted as unknown).",
        ["handler", "code", "method"],
        registry=REGISTRY,
    ),
    method=HTTP_METHOD,
)
SERVER_REQUESTS_ACTIVE = Gauge(
    "multus_py_server_requests_active",
    "Requests to /cni, /delegate and /gc on the daemon socket being served now (at most "
    "connectionLimit when it is set; health and readiness probes not counted).",
    registry=REGISTRY,
)
SERVER_REQUESTS_WAITING = Gauge(
    "multus_py_server_requests_waiting",
    "Requests to /cni, /delegate and /gc on the daemon socket waiting for a connectionLimit slot "
    "(always 0 without connectionLimit).",
    registry=REGISTRY,
)
CNI_OPERATION_SECONDS = Histogram(
    "multus_py_cni_operation_seconds",
    "Duration of the whole CNI operations the engine writes to the history (a runtime's request, a "
    "/delegate call, a native hot-plug, a replayed spooled DEL; not a GC pass's teardowns), by "
    "command and outcome.",
    ["command", "outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CNI_ERRORS = _bounded(
    Counter(
        "multus_py_cni_errors_total",
        "The operations of multus_py_cni_operation_seconds that failed, by command and "
        "CNI error code (a plugin prints the code it likes: past the first 64 distinct codes, other).",
        ["command", "code"],
        registry=REGISTRY,
    ),
    code=BoundedLabel(limit=64, max_length=20),
)
DELEGATE_SECONDS = _bounded(
    Histogram(
        "multus_py_delegate_seconds",
        "Duration of one delegate (network) invocation, by command, plugin types (the chain's, "
        "comma-separated; past the first 64 distinct chains, or longer than 128 characters: other) "
        "and outcome.",
        ["command", "plugins", "outcome"],
        buckets=_LATENCY_BUCKETS,
        registry=REGISTRY,
    ),
    plugins=DELEGATE_PLUGINS,
)
STORE_COMMIT_SECONDS = Histogram(
    "multus_py_store_commit_seconds",
    "Duration of one state-database transaction (a batch of units of work), commit included.",
    buckets=_FAST_BUCKETS,
    registry=REGISTRY,
)
STORE_BATCH_SIZE = Histogram(
    "multus_py_store_batch_units",
    "Units of work committed together by the store's writer.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
    registry=REGISTRY,
)
KUBE_API_SECONDS = Histogram(
    "multus_py_kube_api_request_seconds",
    "Duration of the Kubernetes API requests the daemon made, failed ones included (watch streams "
    "not counted), by HTTP method (the verb label) and resource.",
    ["verb", "resource"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
WATCH_EVENTS = Counter(
    "multus_py_watch_events_total",
    "Watch events received, by resource and type (upsert: added or modified, delete, bookmark).",
    ["resource", "type"],
    registry=REGISTRY,
)
WATCH_RELISTS = Counter(
    "multus_py_watch_relists_total",
    "Full lists made by the watchers (start-up without a stored resourceVersion, 410 Gone).",
    ["resource"],
    registry=REGISTRY,
)
GC_RECLAIMED = Counter(
    "multus_py_gc_reclaimed_total",
    "What garbage collection reclaimed, by kind: sandbox (torn down by a GC pass or the runtime's "
    "CNI GC), host_link (a leftover host veth), lease (a host-local lease); and vf: a VF that a "
    "teardown, whatever its trigger, found under another name or MAC and restored.",
    ["kind"],
    registry=REGISTRY,
)
GC_PASS_SECONDS = Histogram(
    "multus_py_gc_pass_seconds",
    "Duration of one garbage-collection pass, periodic or an operator's (dry runs not counted; the "
    "spool replay before it not included).",
    buckets=(*_FAST_BUCKETS, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
RECOVERY_ACTIONS = Counter(
    "multus_py_recovery_actions_total",
    "Sandboxes start-up recovery tore down, by action (adding: an ADD rolled back, deleting: a DEL "
    "finished, earlier-boot) and outcome (ok, error; spool replay not counted).",
    ["action", "outcome"],
    registry=REGISTRY,
)
ATTACHMENTS = Gauge(
    "multus_py_attachments",
    "Attachments recorded in the checkpoint, by state (intent, added, deleting), as of the last "
    "garbage-collection pass.",
    ["state"],
    registry=REGISTRY,
)
MIRRORED_OBJECTS = Gauge(
    "multus_py_mirrored_objects",
    "Kubernetes objects in the local mirror, by resource.",
    ["resource"],
    registry=REGISTRY,
)
STORE_BYTES = Gauge(
    "multus_py_store_bytes",
    "Size of the state database files (main file and write-ahead log), as of the last "
    "garbage-collection pass.",
    registry=REGISTRY,
)
STORE_FILE_RESTORES = Counter(
    "multus_py_store_file_restores_total",
    "Times the state database's file (or its write-ahead log or shared-memory file) was found "
    "removed or replaced under the daemon, by outcome: restored (the checkpoint written back at "
    "its path from the open connection) or failed (not ready for ADDs until it is).",
    ["outcome"],
    registry=REGISTRY,
)
EVENTS_DROPPED = Counter(
    "multus_py_events_dropped_total",
    "Kubernetes Events not posted because their queue was full.",
    registry=REGISTRY,
)
ENGINE_UNEXPECTED_ERRORS = Counter(
    "multus_py_engine_unexpected_errors_total",
    "Exceptions that were neither CNI errors nor a failed storage write (bugs), in the engine's "
    "operations, start-up recovery, GC and the spool replay, by step (a request's is answered with "
    "code 999).",
    ["step"],
    registry=REGISTRY,
)
DELEGATE_QUEUE_SECONDS = Histogram(
    "multus_py_delegate_queue_seconds",
    "Time a plugin execution waited for a slot under maxConcurrentDelegates before it started (0 "
    "for one that found a slot free).",
    buckets=(0.0, *_LATENCY_BUCKETS),
    registry=REGISTRY,
)
DELEGATES_RUNNING = Gauge(
    "multus_py_delegates_running",
    "Plugin processes running now (each holds a maxConcurrentDelegates slot from just before its "
    "fork until it has exited or been killed, so at most that many).",
    registry=REGISTRY,
)
DELEGATES_WAITING = Gauge(
    "multus_py_delegates_waiting",
    "Plugin executions waiting for a slot under maxConcurrentDelegates.",
    registry=REGISTRY,
)
ORPHANS_REAPED = Counter(
    "multus_py_orphaned_delegates_reaped_total",
    "Plugin processes of an earlier operation killed before their attachments were torn down: by "
    "start-up recovery, or by GC for a half-done sandbox whose process would not die at start-up.",
    registry=REGISTRY,
)
TASK_CRASHES = Counter(
    "multus_py_task_crashes_total",
    "Crashes of the daemon's background tasks (logged with a traceback, then restarted; a task meant "
    "to run until the daemon stops that returned, or was cancelled unasked, counts too), by task.",
    ["task"],
    registry=REGISTRY,
)
HOTPLUG_OPERATIONS = Counter(
    "multus_py_hotplug_operations_total",
    "Delegates added to or removed from running sandboxes, by source (delegate: POST /delegate; "
    "native: hotplugNetworks), command and outcome.",
    ["source", "command", "outcome"],
    registry=REGISTRY,
)
HOTPLUG_PENDING = Gauge(
    "multus_py_hotplug_pending_pods",
    "Pods whose networks annotation cannot be satisfied yet (retried with backoff).",
    registry=REGISTRY,
)
STATUS_WRITES_PENDING = Gauge(
    "multus_py_network_status_writes_pending",
    "Pods whose network-status write failed at ADD and is being retried in the background (those a "
    "previous daemon run left unwritten included, once the pod mirror has synced).",
    registry=REGISTRY,
)
STATUS_WRITES_RETRIED = Counter(
    "multus_py_network_status_retries_total",
    "Background retries of network-status writes, by outcome (written, failed: tried again later, "
    "moot: sandbox gone or no longer ready, or the pod deleted or replaced, superseded: a newer ADD of "
    "the pod wrote, dropped: the oldest pending pod past the bound).",
    ["outcome"],
    registry=REGISTRY,
)

_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def labelled(metric: _M, *values: str) -> _M:
    """``metric.labels(*values)``, each value past its label's bound (``_bounded``) reported as
    ``OVERFLOW_LABEL``; looked up once per distinct label set: ``labels`` validates and locks on
    every call, and the hot path observes a few labelled series per CNI request. The registry keeps
    every labelled series anyway (none is ever removed here), so caching them keeps nothing alive
    that would otherwise go; the cache is keyed by bounded values only, so it is bounded too."""
    key = (id(metric), values)
    child = _CHILDREN.get(key)  # only values within their bounds are ever cached
    if child is None:
        bounds = _BOUNDS.get(id(metric))
        if bounds is not None:
            values = tuple(v if b is None else b.value(v) for b, v in zip(bounds, values, strict=True))
            key = (id(metric), values)
            child = _CHILDREN.get(key)
        if child is None:
            child = _CHILDREN[key] = metric.labels(*values)
    return child
