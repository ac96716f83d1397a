"""``multusctl``: the operator's view of this node's attachments, their history, GC and health.

Commands: ``attachments`` (what is attached now), ``history`` (what happened, newest first),
``show CONTAINER_ID`` (one sandbox: delegates, results, checkpoint state, history), ``gc``
(``--dry-run``), ``status``. Output is ``-o table`` (aligned, relative times) or ``-o json`` (the
documents of ``app.store.queries``, documented in README "Operating").

Reads ask the daemon's read-only query API on ``<socketDir>/multus-query.sock``; when nothing
answers there, multusctl opens ``<stateDir>/state.db`` itself, read-only (crash forensics), and
says so on stderr. ``gc`` needs the daemon (``POST /gc`` on ``multus.sock``). multusctl never
writes to the state database. Locations come from daemon-config.json (``--config``), or
``--socket-dir``/``--state-dir``.

Start-up is most of a daemon-answered query, so that path imports only the standard library's C
modules and small pure ones, and ``app.cli``'s ``quickargs``, ``jsontext``, ``unixhttp`` and
``tables``: no ``argparse`` (unless ``quickargs`` hands over: help, a mistake, an unusual
spelling), ``json``, ``re``, ``typing``, ``pathlib`` or ``datetime``, and nothing of ``app.store``;
not even ``__future__``: as in the shim, an annotation naming what only type checkers import is a
string. Filters are then validated by the daemon (``app.store.filters``, answered 400 and reported
here as ``--<flag>: ...``, exit 2); with the daemon down they are validated here, before the file is
opened. The store (plain ``sqlite3``) and ``app.settings`` are imported only when the file must be read.
``multus-install multusctl`` writes a launcher that runs this module under ``python -I -S``
(``app.cli.launcher``), so Python's ``site`` costs nothing either.

Exit status: 0 done (an empty answer included), 1 the daemon or the database could not answer (or
no such container), 2 bad usage (unknown flag or filter, bad duration, ...).
"""

import sys

from app.cli import jsontext, quickargs, tables, unixhttp

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path
    from typing import Any, NoReturn, TextIO, TypeAlias

    from app.settings import Settings

    Document: TypeAlias = Any
    """A decoded JSON document of the query API."""
    Arguments: TypeAlias = argparse.Namespace | quickargs.Arguments
    """The parsed command line, from argparse or ``quickargs``: the same attributes."""
    FileRead: TypeAlias = Callable[[], Callable[[Any], object]]
    """Validates the filters, then (the store imported) builds the unit of work that reads the file."""

COMMANDS = quickargs.COMMANDS
TRIGGERS = quickargs.TRIGGERS

DEFAULT_CONFIG_PATH = "/etc/cni/net.d/multus.d/daemon-config.json"
DEFAULT_SOCKET_DIR = "/run/multus"
DEFAULT_STATE_DIR = "/var/lib/multus-py"
"""``app.settings``' defaults, repeated so the fast path need not import it (a test keeps them equal)."""
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
ATTACHMENT_PARAMETERS = ("namespace", "pod", "network")
DEFAULT_HISTORY_LIMIT = 200
"""``app.store.filters``' names and default, repeated for the same reason (a test keeps them equal)."""


class CliError(Exception):
    """Reported as ``multusctl: <message>``; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Locations:
    """Where the daemon listens and keeps its state (paths as strings: no ``pathlib`` here)."""

    __slots__ = ("config", "database", "query_socket", "socket")

    def __init__(self, *, socket: str, query_socket: str, database: str, config: str | None) -> None:
        self.socket = socket
        self.query_socket = query_socket
        self.database = database
        self.config = config
        """daemon-config.json, when there is one to read."""


def locations(args: "Arguments") -> Locations:
    """Where the daemon listens and keeps its state: flags first, then daemon-config.json.

    Only ``socketDir`` and ``stateDir`` are read here: ``app.settings`` (a frozen dataclass tree)
    would add a quarter of multusctl's start-up. A config that is not a JSON object with string
    values there is handed to ``app.settings`` for its precise error.
    """
    config = str(args.config or DEFAULT_CONFIG_PATH)
    loaded: object
    try:
        with open(config, "rb") as file:
            loaded = jsontext.loads(file.read())
    except FileNotFoundError:
        loaded = None if args.config else {}
    except (OSError, ValueError):
        loaded = None
    given = _as_the_daemon_reads(loaded, ("socketDir", "stateDir")) if isinstance(loaded, dict) else None
    if given is None:
        full_settings(config)  # raises CliError with app.settings' message naming the problem
        raise CliError(f"cannot use daemon config {config}")
    socket_dir = str(args.socket_dir or given["socketDir"] or DEFAULT_SOCKET_DIR)
    state_dir = str(args.state_dir or given["stateDir"] or DEFAULT_STATE_DIR)
    return Locations(
        socket=_join(socket_dir, "multus.sock"),
        query_socket=_join(socket_dir, "multus-query.sock"),
        database=_join(state_dir, "state.db"),
        config=config if loaded else None,
    )


def _as_the_daemon_reads(document: "dict[str, Any]", keys: "tuple[str, ...]") -> "dict[str, str] | None":
    """The string values of ``keys`` ("" when absent) as ``app.settings`` reads them, as Go's
    decoder does: a key matched whatever its case (the Kelvin sign and the long s as ``K`` and
    ``S``), the last spelling winning, null as absent; None when one is not a string."""
    wanted = {_go_fold(key): key for key in keys}
    found = dict.fromkeys(keys, "")
    for key, value in document.items():
        name = wanted.get(_go_fold(key))
        if name is None or value is None:
            continue
        if not isinstance(value, str):
            return None
        found[name] = value
    return found


def _go_fold(key: str) -> str:
    """``app.gofold.fold``, written again: a daemon-answered query imports only ``app.cli``'s own
    modules (``tests/ops/test_multusctl_launcher.py``)."""
    return "".join({"\u212a": "K", "\u017f": "S"}.get(c, c.upper() if c.isascii() else c) for c in key)


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


def full_settings(config: "str | Path | None") -> "Settings":
    """The whole, validated daemon-config (or the defaults), for the slow paths that need it."""
    import os

    from app import settings as settings_module

    try:
        if config is None:
            return settings_module.from_mapping({}, environ=os.environ)
        return settings_module.load(config, environ=os.environ)
    except settings_module.SettingsError as exc:
        raise CliError(str(exc)) from exc


# ---- asking the daemon, or reading the file ---------------------------------------------------------


def ask(where: Locations, target: str, from_file: "FileRead") -> "tuple[Document, str]":
    """GET ``target`` from the query API; if nothing answers, read the file. (document, source)."""
    try:
        response = unixhttp.request(where.query_socket, "GET", target)
    except unixhttp.DaemonUnreachableError as exc:
        work = from_file()  # the filters are validated before anything is said or read
        notice(f"the daemon is not answering on {exc.path} ({exc.reason}); reading {where.database} directly")
        value, _size = read_file(where, work)
        return value, "file"
    except unixhttp.ProtocolError as exc:
        raise CliError(f"the query API on {where.query_socket} answered nonsense: {exc}") from exc
    return decode(response, where.query_socket), "daemon"


def read_file(where: Locations, work: "Callable[[Any], object]") -> "tuple[Document, int]":
    """Run ``work`` on the state database opened read-only; the value as the API would send it.

    The launcher turns the cyclic garbage collector off for the quick daemon-answered path; reading
    the file can go through many rows, so the collector runs again here."""
    import gc
    import json

    gc.enable()

    from app.store import queries

    try:
        value, size = queries.read_file(where.database, work)
    except (queries.StoreReadError, queries.NotFoundError, queries.AmbiguousError) as exc:
        raise CliError(str(exc)) from exc
    return json.loads(json.dumps(value)), size


def decode(response: unixhttp.Response, source: str) -> "Document":
    """The document of a 200 answer; any other status raises ``CliError`` with the daemon's words.

    A 400 naming a ``parameter`` is a refused filter (the daemon validates them on this path): exit
    2, named by its flag (``--pod: invalid pod 'a/b/c'``) as when multusctl validates it itself."""
    try:
        document = jsontext.loads(response.body) if response.body else None
    except ValueError as exc:
        raise CliError(f"{source} answered {response.status} with a body that is not JSON") from exc
    if response.status == 200:
        return document
    message = (document.get("error") or document.get("msg")) if isinstance(document, dict) else None
    parameter = document.get("parameter") if isinstance(document, dict) else None
    if response.status == 400 and isinstance(parameter, str):
        prefix = f"query parameter {parameter!r}: "
        text = str(message or "refused")
        flag = parameter.replace("_", "-")
        raise CliError(f"--{flag}: {text.removeprefix(prefix)}", 2)
    raise CliError(str(message or f"{source} answered {response.status}"))


def notice(message: str) -> None:
    print(f"multusctl: {message}", file=sys.stderr)


def emit(args: "Arguments", document: "Document", render: "Callable[[Document], list[str]]") -> None:
    if args.output == "json":
        print(jsontext.dumps(document, indent=2))
    else:
        lines = render(document)
        if lines:
            print("\n".join(lines))


def _params(args: "Arguments", names: "Sequence[str]") -> dict[str, str]:
    values = {name: getattr(args, name, None) for name in names}
    params = {name: str(value) for name, value in values.items() if value is not None and value is not False}
    if params.get("failed") == "True":
        params["failed"] = "true"
    for name, value in params.items():
        _require_utf8(f"--{name}", value)
    return params


def _require_utf8(argument: str, value: str) -> None:
    """Refuse (exit 2) a command-line value that is not UTF-8: Python hands its bytes over as
    surrogate escapes, which neither a query string nor SQLite can carry (no name recorded is
    anything but UTF-8, so such a value could match nothing anyway)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            shown = value.encode("utf-8", "surrogateescape")  # the bytes as typed
        except UnicodeEncodeError:  # a surrogate no undecodable byte makes: main() called with it
            shown = value.encode("utf-8", "backslashreplace")
        raise CliError(f"{argument}: {shown!r} is not valid UTF-8", 2) from None


def _target(path: str, params: "Mapping[str, str]") -> str:
    if not params:
        return path
    return path + "?" + "&".join(f"{_quote(name)}={_quote(value)}" for name, value in params.items())


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _quote(text: str) -> str:
    """Percent-encoding of every byte but RFC 3986's unreserved characters (``urllib.parse`` is
    milliseconds of start-up: it imports ``ipaddress``)."""
    if _UNRESERVED.issuperset(text):
        return text
    return "".join(
        char if char in _UNRESERVED else "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
        for char in text
    )


# ---- commands ---------------------------------------------------------------------------------------


def cmd_attachments(args: "Arguments", where: Locations) -> int:
    params = _params(args, ATTACHMENT_PARAMETERS)

    def from_file() -> "Callable[[Any], object]":
        from app.store import filters, queries

        parsed = _validated(lambda: filters.parse_attachments(params))
        return lambda connection: queries.attachments(connection, parsed)

    documents, _ = ask(where, _target("/v1/attachments", params), from_file)
    emit(args, documents, render_attachments)
    return 0


def cmd_history(args: "Arguments", where: Locations) -> int:
    params = _params(args, HISTORY_PARAMETERS)

    def from_file() -> "Callable[[Any], object]":
        from datetime import UTC, datetime

        from app.store import filters, queries

        parsed = _validated(lambda: filters.parse_history(params, now=datetime.now(UTC)))
        return lambda connection: queries.history_lines(connection, parsed)

    documents, _ = ask(where, _target("/v1/history", params), from_file)
    emit(args, documents, render_history)
    return 0


DOT_SEGMENTS = (".", "..")
"""Container IDs ``show`` refuses beside those with a ``/`` or a space: in the query API's path
(``/v1/sandboxes/..``) a dot segment is resolved away, and the daemon was asked for another path
(``no endpoint /v1/``). No runtime gives one: a CNI container ID begins with a letter or digit."""


def cmd_show(args: "Arguments", where: Locations) -> int:
    container = str(args.container_id).strip()
    _require_utf8("CONTAINER_ID", container)
    if not container or container in DOT_SEGMENTS or any(ch.isspace() or ch == "/" for ch in container):
        raise CliError(f"invalid container ID {args.container_id!r}", 2)

    def from_file() -> "Callable[[Any], object]":
        from app.store import queries

        return lambda connection: queries.sandbox(connection, container)

    document, _ = ask(where, f"/v1/sandboxes/{_quote(container)}", from_file)
    emit(args, document, render_sandbox)
    return 0


def cmd_gc(args: "Arguments", where: Locations) -> int:
    target = "/gc?dryRun=true" if args.dry_run else "/gc"
    try:
        response = unixhttp.request(where.socket, "POST", target, timeout=300.0)
    except unixhttp.DaemonUnreachableError as exc:
        raise CliError(f"gc needs the daemon, and {exc}") from exc
    except unixhttp.ProtocolError as exc:
        raise CliError(f"the daemon on {where.socket} answered nonsense: {exc}") from exc
    report = decode(response, where.socket)
    emit(args, report, render_gc)
    return 0


def cmd_status(args: "Arguments", where: Locations) -> int:
    try:
        response = unixhttp.request(where.query_socket, "GET", "/v1/status")
    except unixhttp.DaemonUnreachableError as exc:
        notice(f"the daemon is not answering on {exc.path} ({exc.reason}); reading {where.database} directly")
        document = _status_from_file(where)
    except unixhttp.ProtocolError as exc:
        raise CliError(f"the query API on {where.query_socket} answered nonsense: {exc}") from exc
    else:
        document = decode(response, where.query_socket)
    emit(args, document, render_status)
    return 0


def _status_from_file(where: Locations) -> "Document":
    from datetime import UTC, datetime
    from pathlib import Path

    from app.store import queries

    settings = full_settings(where.config)
    readyz = _readyz(where.socket)
    now = datetime.now(UTC)
    store, size = read_file(where, lambda connection: queries.store_status(connection, now=now))
    reason = "the daemon is not running" if readyz is None else f"/readyz answered {readyz}"
    return queries.status_doc(
        source="file",
        node=settings.environment.node_name,
        ready=readyz == 200,
        ready_reason=None if readyz == 200 else reason,
        daemon=None,
        db_path=Path(where.database),
        db_bytes=size,
        store=store,
        last_gc=None,
        retention={
            "maxAgeHours": settings.history_max_age_hours,
            "maxRows": settings.history_max_rows,
            "lastPrune": None,
        },
    )


def _readyz(path: str) -> int | None:
    try:
        return unixhttp.request(path, "GET", "/readyz", timeout=2.0).status
    except (unixhttp.DaemonUnreachableError, unixhttp.ProtocolError):
        return None


def _validated(parse: "Callable[[], Any]") -> "Any":
    from app.store import filters

    try:
        return parse()
    except filters.FilterError as exc:
        raise CliError(f"--{exc.parameter.replace('_', '-')}: {exc}", 2) from exc


# ---- tables -----------------------------------------------------------------------------------------


def render_attachments(documents: "list[Document]") -> list[str]:
    return tables.table(
        [
            ("POD", "pod"),
            ("CONTAINER", "container"),
            ("INTERFACE", "interface"),
            ("NETWORK", "network"),
            ("PLUGINS", "plugins"),
            ("STATE", "state"),
            ("ADDRESSES", lambda d: tables.joined(d["ips"])),
            ("MAC", lambda d: tables.joined(d["macs"])),
            ("AGE", lambda d: tables.age(d["createdAt"])),
        ],
        documents,
    )


def _history_columns(documents: "Sequence[Document]", *, with_pod: bool) -> "list[tables.Column]":
    columns: list[tables.Column] = [
        ("AGE", lambda d: tables.age(d["at"])),
        ("COMMAND", "command"),
        ("STEP", "step"),
        ("TRIGGER", "trigger"),
        ("OUTCOME", "outcome"),
    ]
    if with_pod:
        columns += [("POD", "pod"), ("CONTAINER", "container")]
    columns += [
        ("INTERFACE", "interface"),
        ("NETWORK", "network"),
        ("PLUGINS", "plugins"),
        ("DURATION", lambda d: tables.duration_ms(d["durationMs"])),
        ("ADDRESSES", lambda d: tables.joined(d["ips"])),
        ("MAC", lambda d: tables.joined(d["macs"])),
    ]
    if any(d["deviceIDs"] for d in documents):
        columns.append(("DEVICES", lambda d: tables.joined(d["deviceIDs"])))
    columns.append(("ERROR", lambda d: tables.error(d["error"])))
    return columns


def render_history(documents: "list[Document]") -> list[str]:
    if not documents:
        return ["no history matches"]
    return tables.table(_history_columns(documents, with_pod=True), documents)


def render_sandbox(document: "Document") -> list[str]:
    checkpoint = document["checkpoint"]
    pod = document["pod"] or "-"
    if document["podUID"]:
        pod += f" (uid {document['podUID']})"
    if checkpoint is None:
        state = "none: nothing of it is recorded as attached (history only)"
    else:
        state = (
            f"{checkpoint['state']} since {tables.ago(checkpoint['createdAt'])}, boot {checkpoint['bootID']}"
        )
    lines = tables.fields(
        [
            ("Container", document["containerID"]),
            ("Pod", pod),
            ("Checkpoint", state),
            *([("Netns", checkpoint["netns"])] if checkpoint else []),
        ]
    )
    if checkpoint is not None:
        lines += ["", "DELEGATES"]
        lines += tables.table(
            [
                ("#", lambda d: str(d["position"])),
                ("INTERFACE", "interface"),
                ("NETWORK", "network"),
                ("PLUGINS", "plugins"),
                ("STATE", "state"),
                ("ADDRESSES", lambda d: tables.joined(d["ips"])),
                ("MAC", lambda d: tables.joined(d["macs"])),
                ("DEVICES", lambda d: tables.joined(d["deviceIDs"])),
                ("LAST ERROR", lambda d: _last_error(d["lastError"])),
            ],
            checkpoint["delegates"],
        )
    lines += ["", "HISTORY (oldest first)"]
    lines += tables.table(_history_columns(document["history"], with_pod=False), document["history"])
    return lines


def _last_error(value: object) -> str:
    if isinstance(value, dict):
        return tables.error(value)
    return "-" if value is None else str(value)


def render_gc(report: "Document") -> list[str]:
    title = "GC dry run (nothing removed)" if report.get("dryRun") else "GC pass"
    lines = [
        f"{title}: examined {report.get('examined', 0)} sandboxes, {len(report.get('orphans', []))} orphans, "
        f"collected {len(report.get('collected', []))}, failed {len(report.get('failed', []))}, "
        f"host links {len(report.get('hostLinksRemoved', []))}, "
        f"leases {len(report.get('leasesRemoved', []))}, "
        f"took {tables.duration_ms(report.get('durationMs'))}"
    ]
    if report.get("orphans"):
        orphans = tables.table(
            [
                ("CONTAINER", lambda o: str(o["containerID"])[:12]),
                ("POD", "pod"),
                ("REASON", "reason"),
            ],
            report["orphans"],
        )
        lines += ["", *orphans]
    for failure in report.get("failed", []):
        lines.append(f"failed {str(failure['containerID'])[:12]}: {tables.error(failure.get('error'))}")
    for deferral in report.get("deferred", []):
        lines.append(
            f"deferred {str(deferral['containerID'])[:12]}: {deferral.get('failures')} failed teardowns, "
            f"next try in {float(deferral.get('retryInSeconds') or 0):g} s"
        )
    if report.get("unconfirmed"):  # the pod's absence has not held for the grace yet
        unconfirmed = tables.table(
            [
                ("UNCONFIRMED", lambda u: str(u["containerID"])[:12]),
                ("POD", "pod"),
                ("REASON", "reason"),
                ("COLLECTED IN", lambda u: f"{float(u.get('confirmedInSeconds') or 0):g} s"),
            ],
            report["unconfirmed"],
        )
        lines += ["", *unconfirmed]
    for key, why in (  # the mirror says gone, and the API did not confirm it
        ("disputed", "the API still has the pod (is MULTUS_NODE_NAME right?)"),
        ("unanswered", "the API could not be asked"),
    ):
        for kept in report.get(key, []):
            lines.append(
                f"kept {str(kept['containerID'])[:12]} ({kept.get('pod')}): the mirror says"
                f" {kept.get('reason')}, {why}"
            )
    for kind, key in (("lease", "leasesRemoved"), ("host link", "hostLinksRemoved")):
        lines += [f"{kind}: {item}" for item in report.get(key, [])]
    return lines + _render_spool(report.get("spool"))


def _render_spool(spool: "Document | None") -> list[str]:
    """The operator pass's replay of the DEL spool (absent from a dry run and from older daemons)."""
    if not spool:
        return []
    lines = [
        f"spool: replayed {len(spool.get('replayed', []))} DELs ({len(spool.get('failed', []))} left "
        f"work pending), rejected {len(spool.get('rejected', []))}, meant for an earlier sandbox "
        f"{len(spool.get('superseded', []))}, abandoned temporaries removed "
        f"{len(spool.get('temporariesRemoved', []))}"
    ]
    for failure in spool.get("failed", []):
        error = tables.error(failure.get("error"))
        lines.append(f"spool entry {failure['entry']} left work pending: {error}")
    for rejection in spool.get("rejected", []):
        lines.append(f"spool entry {rejection['entry']} set aside: {rejection.get('reason')}")
    for kept in spool.get("kept", []):
        lines.append(
            f"spool entry {kept['entry']} kept, its DEL failed ({kept['failures']} in a row): "
            f"tried again in {kept['retryInSeconds']:.0f} s at the earliest"
        )
    for deferred in spool.get("deferred", []):
        lines.append(
            f"spool entry {deferred['entry']} not tried, its DEL failed lately ({deferred['failures']} "
            f"in a row): due in {deferred['retryInSeconds']:.0f} s"
        )
    for unreadable in spool.get("unreadable", []):
        lines.append(f"spool directory {unreadable['directory']} cannot be read: {unreadable.get('reason')}")
    return lines


def render_status(document: "Document") -> list[str]:
    store = document["store"]
    daemon = document["daemon"]
    history = store["history"]
    retention = document["retention"]
    if daemon is None:
        source = f"file {store['path']} (the daemon is not answering)"
    else:
        started = tables.ago(daemon["startedAt"])
        source = f"daemon pid {daemon['pid']}, multus-py {daemon['version']}, started {started}"
    ready = "yes" if document["ready"] else f"no ({document['readyReason']})"
    prune = retention["lastPrune"]
    pruned = (
        f"last pass {tables.ago(prune['at'])}, {prune['deletedByAge'] + prune['deletedByRows']} lines deleted"
        if prune
        else "no pass yet"
    )
    return tables.fields(
        [
            ("Node", document["node"]),
            ("Source", source),
            ("Ready", ready),
            ("Store", f"{store['path']}, {tables.size(store['bytes'])}, schema {store['schemaRevision']}"),
            ("Sandboxes", tables.counts(store["sandboxes"])),
            ("Attachments", tables.counts(store["attachments"])),
            (
                "History",
                f"{history['rows']} lines, oldest {tables.ago(history['oldest'])}, "
                f"newest {tables.ago(history['newest'])}",
            ),
            (
                "Retention",
                f"{_age_limit(retention['maxAgeHours'])}, {_row_limit(retention['maxRows'])}; {pruned}",
            ),
            ("Last GC", _last_gc(document["lastGc"], daemon is None)),
            ("Mirror", _mirror(document["mirror"])),
        ]
    )


def _age_limit(hours: float) -> str:
    return f"max age {hours:g}h" if hours else "no age limit"


def _row_limit(rows: int) -> str:
    return f"max {rows:,} lines" if rows else "no line limit"


def _last_gc(gc: "Mapping[str, Any] | None", offline: bool) -> str:
    if gc is None:
        return "unknown (the daemon is not answering)" if offline else "none since the daemon started"
    return (
        f"{tables.ago(gc['at'])} ({gc['trigger']}): examined {gc['examined']}, orphans {len(gc['orphans'])}, "
        f"collected {len(gc['collected'])}, failed {len(gc['failed'])}, "
        f"took {tables.duration_ms(gc['durationMs'])}"
    )


def _mirror(mirror: "Mapping[str, Any] | None") -> str:
    if mirror is None:
        return "no mirror tables"
    if not mirror["watches"]:
        return f"{mirror['pods']} pods, {mirror['nads']} NADs; no watch has run (static mode?)"
    watches = "; ".join(
        f"{w['key']} {'synced ' + tables.ago(w['syncedAt']) if w['synced'] else 'not synced'}"
        f", lag {'-' if w['lagSeconds'] is None else format(w['lagSeconds'], '.1f') + 's'}"
        for w in mirror["watches"]
    )
    return f"{mirror['pods']} pods, {mirror['nads']} NADs; {watches}"


# ---- arguments --------------------------------------------------------------------------------------


def _limit(text: str) -> int:
    import argparse

    try:
        return quickargs.limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _common(suppress: bool) -> "argparse.ArgumentParser":
    """Options accepted before or after the command (defaults set once, on the main parser)."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--config",
        default=default(None),
        help=f"daemon-config.json (default {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument(
        "--socket-dir", default=default(None), help="the daemon's socketDir (overrides --config)"
    )
    parser.add_argument(
        "--state-dir", default=default(None), help="the daemon's stateDir (overrides --config)"
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default=default("table"),
        help="output format (default table)",
    )
    return parser


def build_parser() -> "argparse.ArgumentParser":
    """The whole command line, help and errors included; ``quickargs`` reads the common cases alike."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="multusctl",
        description="Query this node's multus-py daemon: attachments, history, GC, status.",
        parents=[_common(False)],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common(True)]

    attachments = sub.add_parser("attachments", parents=common, help="what is attached now")
    attachments.add_argument("--namespace", help="pods of this namespace")
    attachments.add_argument("--pod", help="pod NAME or NAMESPACE/NAME")
    attachments.add_argument("--network", help="network NAME or NAMESPACE/NAME")
    attachments.set_defaults(handler=cmd_attachments)

    history = sub.add_parser("history", parents=common, help="what happened, newest first")
    history.add_argument("--pod", help="pod NAMESPACE/NAME (or NAME: any namespace)")
    history.add_argument("--namespace", help="pods of this namespace")
    history.add_argument("--container", help="container ID or a prefix of it")
    history.add_argument("--network", help="network NAME or NAMESPACE/NAME")
    history.add_argument("--since", help="a duration back from now (30s, 15m, 1h, 2d) or an RFC 3339 time")
    history.add_argument("--failed", action="store_true", help="failed steps only")
    history.add_argument("--command", type=str.upper, choices=COMMANDS, help="one CNI command")
    history.add_argument("--trigger", type=str.lower, choices=TRIGGERS, help="who asked for it")
    history.add_argument(
        "--limit",
        type=_limit,
        help=f"at most this many lines (default {DEFAULT_HISTORY_LIMIT}, 0: all)",
    )
    history.set_defaults(handler=cmd_history)

    show = sub.add_parser("show", parents=common, help="one sandbox: delegates, results, checkpoint, history")
    show.add_argument("container_id", metavar="CONTAINER_ID", help="container ID or a unique prefix of it")
    show.set_defaults(handler=cmd_show)

    gc = sub.add_parser("gc", parents=common, help="run a garbage-collection pass in the daemon")
    gc.add_argument("--dry-run", action="store_true", help="only report what would be collected")
    gc.set_defaults(handler=cmd_gc)

    status = sub.add_parser("status", parents=common, help="readiness, store, history, mirror, last GC")
    status.set_defaults(handler=cmd_status)
    return parser


HANDLERS: "dict[str, Callable[[Arguments, Locations], int]]" = {
    "attachments": cmd_attachments,
    "history": cmd_history,
    "show": cmd_show,
    "gc": cmd_gc,
    "status": cmd_status,
}


def parse_args(
    argv: "Sequence[str] | None" = None,
) -> "tuple[Callable[[Arguments, Locations], int], Arguments]":
    """(the command's handler, the arguments): ``quickargs`` when it can, else argparse."""
    line = sys.argv[1:] if argv is None else list(argv)
    quick = quickargs.parse(line)
    if quick is not None:
        return HANDLERS[quick[0]], quick[1]
    args = build_parser().parse_args(line)
    return args.handler, args


def main(argv: "Sequence[str] | None" = None) -> int:
    handler, args = parse_args(argv)
    try:
        where = locations(args)
        return int(handler(args, where))
    except CliError as exc:
        print(f"multusctl: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:  # `multusctl history | head`: the reader left, nothing more to say
        sys.stderr.close()
        return 0


def run() -> "NoReturn":
    """The launcher's entry point: ``main()``, then out without the interpreter's teardown.

    Freeing a 200-line answer's objects one by one and finalizing the interpreter costs more
    than a millisecond of a run that has nothing left to clean: no files but stdout and stderr
    (flushed here), no atexit work. ``posix`` is built in and already loaded (``os`` is not)."""
    import posix

    code = main()
    _flush(sys.stdout)
    _flush(sys.stderr)
    posix._exit(code)


def _flush(stream: "TextIO") -> None:
    try:
        stream.flush()
    except (BrokenPipeError, ValueError):
        return  # the reader left (and main closed stderr after that): nothing more to say


if __name__ == "__main__":
    sys.exit(main())
