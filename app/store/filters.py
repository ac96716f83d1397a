"""Operator query filters: their names, their parsing, their validation. Standard library only.

One definition for both doors into the read model: ``multusctl`` flags (``--pod team-a/web``) and
the daemon query API's parameters (``?pod=team-a/web``) carry the same names and values, and both
are parsed here, so a filter means the same thing whichever way it arrives. Filters are named
tuples rather than dataclasses: this module is on multusctl's start-up path, and importing
``dataclasses`` alone costs several milliseconds there. ``multusctl`` calls
``parse_history``/``parse_attachments`` before connecting to anything (bad input exits before any
I/O); ``app.daemon.query_server`` calls them on every request; ``app.store.history`` and
``app.store.queries`` apply the parsed values. Parsing never touches the database. A bad value
raises ``FilterError`` naming the parameter; an unknown or repeated parameter is refused, never
ignored, and so is a ``command`` or ``trigger`` the history never records.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

HISTORY_PARAMETERS = (
    "pod",
    "namespace",
    "container",
    "network",
    "since",
    "failed",
    "command",
    "trigger",
    "limit",
)
"""Every filter of ``multusctl history`` / ``GET /v1/history``."""
ATTACHMENT_PARAMETERS = ("namespace", "pod", "network")
"""Every filter of ``multusctl attachments`` / ``GET /v1/attachments``."""

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS")
"""The CNI commands the history records (``app.attach.requests.Command``; a test keeps them equal)."""
TRIGGERS = ("runtime", "rollback", "recovery", "gc", "operator", "spool", "delegate", "hotplug")
"""Who asks for an operation (``app.attach.requests.Trigger``; a test keeps them equal)."""

DEFAULT_HISTORY_LIMIT = 200
"""Lines returned when ``limit`` is not given (newest first); ``limit=0`` returns them all."""
MAX_HISTORY_LIMIT = 2**63 - 1
"""The largest ``limit`` SQLite can take (its INTEGER); a larger one is refused, not a crash."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_UTC_SUFFIX = re.compile(r"[Zz]$")
"""RFC 3339's UTC designator, which it allows in lower case too (``datetime`` reads neither)."""
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")
"""A boolean filter's spellings. Not the empty value: ``?failed`` alone reads as asking for failed
lines, and answering every line instead would be a wrong answer, not a refusal."""


class FilterError(ValueError):
    """A filter value (or name) is unusable. ``parameter`` is the filter's name, without dashes."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class HistoryFilter(NamedTuple):
    """What ``history`` returns: lines matching every given filter, newest first.

    ``pod`` without ``namespace`` matches that pod name in any namespace. ``container`` is a
    container ID or a prefix of one. ``network`` is ``namespace/name`` or a bare name, which also
    matches that name in any namespace.
    """

    namespace: str | None = None
    pod: str | None = None
    container: str | None = None
    network: str | None = None
    since: datetime | None = None
    failed: bool = False
    command: str | None = None
    trigger: str | None = None
    limit: int = DEFAULT_HISTORY_LIMIT


class AttachmentFilter(NamedTuple):
    namespace: str | None = None
    pod: str | None = None
    network: str | None = None


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``1h``, ``2d``, or a sum of them (``1h30m``); positive."""
    value = text.strip()
    position, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not value or position != len(value):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit s, m, h or d (30s, 15m, 1h, 2d)"
        )
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: it must be longer than zero")
    try:
        return timedelta(seconds=seconds)
    except OverflowError as exc:
        raise ValueError(f"invalid duration {text!r}: it is too long") from exc


def parse_since(text: str, *, now: datetime) -> datetime:
    """A duration back from ``now`` (``1h``), or an RFC 3339 time (``2026-11-25T10:00:00Z``)."""
    try:
        duration = parse_duration(text)
    except ValueError as duration_error:
        if not re.match(r"\d{4}-\d\d-\d\d", text.strip()):
            raise FilterError("since", str(duration_error)) from duration_error
    else:
        try:
            return now - duration
        except OverflowError as exc:
            raise FilterError("since", f"invalid duration {text!r}: it goes back too far") from exc
    try:
        moment = datetime.fromisoformat(_UTC_SUFFIX.sub("+00:00", text.strip()))
    except ValueError as exc:
        raise FilterError("since", f"invalid time {text!r}: use RFC 3339, e.g. 2026-11-25T10:00:00Z") from exc
    if moment.tzinfo is None:
        raise FilterError("since", f"time {text!r} has no time zone: add Z (UTC) or an offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise FilterError("since", f"invalid time {text!r}: it is out of range in UTC") from exc


def parse_history(params: Mapping[str, str], *, now: datetime) -> HistoryFilter:
    """Validate ``history`` filters given by name (query parameters, or flags without dashes)."""
    _refuse_unknown(params, HISTORY_PARAMETERS)
    namespace, pod = _pod(params)
    since = params.get("since")
    return HistoryFilter(
        namespace=namespace,
        pod=pod,
        container=_word(params, "container"),
        network=_network(params),
        since=None if since is None else parse_since(since, now=now),
        failed=_boolean(params, "failed"),
        command=_choice(params, "command", COMMANDS, str.upper),
        trigger=_choice(params, "trigger", TRIGGERS, str.lower),
        limit=_limit(params),
    )


def parse_attachments(params: Mapping[str, str]) -> AttachmentFilter:
    """Validate ``attachments`` filters given by name."""
    _refuse_unknown(params, ATTACHMENT_PARAMETERS)
    namespace, pod = _pod(params)
    return AttachmentFilter(namespace=namespace, pod=pod, network=_network(params))


def _refuse_unknown(params: Mapping[str, str], known: tuple[str, ...]) -> None:
    """Refuse a name that is no filter, and a filter given twice: a query string may repeat a name
    (``?pod=a&pod=b``), and reading one value of it would ignore the other rather than combine them."""
    repeated = _repeated(params)
    if repeated is not None:
        raise FilterError(repeated, f"filter {repeated} is given more than once: give it once")
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise FilterError(
            unknown[0], f"unknown filter {', '.join(unknown)}: the filters are {', '.join(known)}"
        )


def _repeated(params: Mapping[str, str]) -> str | None:
    """A name ``params`` holds more than once (the items of a multidict, as aiohttp's query, hold
    a name once per value), or None."""
    seen: set[str] = set()
    for name, _value in params.items():
        if name in seen:
            return name
        seen.add(name)
    return None


def _word(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value or any(ch.isspace() for ch in value):
        raise FilterError(name, f"invalid {name} {params[name]!r}: it must be a non-empty word")
    return value


def _pod(params: Mapping[str, str]) -> tuple[str | None, str | None]:
    namespace = _word(params, "namespace")
    pod = _word(params, "pod")
    if pod is None or "/" not in pod:
        return namespace, pod
    pod_namespace, _, name = pod.partition("/")
    if not pod_namespace or not name or "/" in name:
        raise FilterError("pod", f"invalid pod {pod!r}: use NAMESPACE/NAME or NAME")
    if namespace is not None and namespace != pod_namespace:
        raise FilterError("pod", f"pod {pod!r} is not in namespace {namespace!r}")
    return pod_namespace, name


def _network(params: Mapping[str, str]) -> str | None:
    network = _word(params, "network")
    if network is not None and (network.startswith("/") or network.endswith("/") or network.count("/") > 1):
        raise FilterError("network", f"invalid network {network!r}: use NAMESPACE/NAME or NAME")
    return network


def boolean_value(text: str) -> bool | None:
    """A boolean parameter's value, any case (``true``/``1``/``yes``, ``false``/``0``/``no``); None
    for anything else. The operator's ``POST /gc?dryRun=`` takes the same spellings."""
    value = text.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def _boolean(params: Mapping[str, str], name: str) -> bool:
    value = boolean_value(params.get(name, "false").strip())
    if value is None:
        raise FilterError(name, f"invalid {name} {params[name]!r}: use true or false")
    return value


def _choice(
    params: Mapping[str, str], name: str, choices: tuple[str, ...], spelling: Callable[[str], str]
) -> str | None:
    """One of ``choices`` (in either case): a value that is none of them is refused, not answered
    with nothing (the history records no other)."""
    value = _word(params, name)
    if value is None:
        return None
    if spelling(value) not in choices:
        raise FilterError(name, f"invalid {name} {params[name]!r}: use one of {', '.join(choices)}")
    return spelling(value)


def _limit(params: Mapping[str, str]) -> int:
    text = params.get("limit")
    if text is None:
        return DEFAULT_HISTORY_LIMIT
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()):
        raise FilterError("limit", f"invalid limit {text!r}: use a whole number (0: no limit)")
    significant = digits.lstrip("0") or "0"  # int() refuses strings of over 4300 digits
    limit = int(significant) if len(significant) <= len(str(MAX_HISTORY_LIMIT)) else MAX_HISTORY_LIMIT + 1
    if limit > MAX_HISTORY_LIMIT:
        raise FilterError("limit", f"invalid limit {text!r}: at most {MAX_HISTORY_LIMIT} (0: no limit)")
    return limit
