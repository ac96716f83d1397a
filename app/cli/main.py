"""``multusctl``: the operator's view of this node's attachments, their history, GC and health.

Commands: ``attachments`` (what is attached now), ``history`` (what happened, newest first),
``show CONTAINER_ID`` (one sandbox: delegates, results, checkpoint state, history), ``gc``
(``--dry-run``), ``status``. Output is ``-o table`` (aligned, relative times) or ``-o json`` (the
documents of ``app.store.queries``, documented in README "Operating").

Reads ask the daemon's read-only query API on ``<socketDir>/multus-query.sock``; when nothing
answers there, multusctl opens ``<stateDir>/state.db`` itself, read-only (crash forensics), and
says so on stderr. ``gc`` needs the daemon (``POST /gc`` on ``multus.sock``). multusctl never
writes to the state database. Locations come from daemon-config.json (``--config``), or
``--socket-dir``/``--state-dir``. The store (SQLAlchemy) is imported only when the file must be
read, so ``--help`` and every daemon-answered query start in a few tens of milliseconds.

Exit status: 0 done (an empty answer included), 1 the daemon or the database could not answer (or
no such container), 2 bad usage (unknown flag or filter, bad duration, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, urlencode

from app.cli import tables, unixhttp
from app.store import filters

if TYPE_CHECKING:
    from app.settings import Settings

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS")
"""CNI commands recorded in the history (``app.attach.requests.Command``; a test keeps them equal)."""
TRIGGERS = ("runtime", "rollback", "recovery", "gc", "operator", "spool", "delegate", "hotplug")
"""Who asks for an operation (``app.attach.requests.Trigger``; a test keeps them equal)."""

DEFAULT_CONFIG_PATH = "/etc/cni/net.d/multus.d/daemon-config.json"
DEFAULT_SOCKET_DIR = "/run/multus"
DEFAULT_STATE_DIR = "/var/lib/multus-py"
"""``app.settings``' defaults, repeated so the fast path need not import it (a test keeps them equal)."""

Document = Any
"""A decoded JSON document of the query API."""
FileRead = Callable[[], Callable[[Any], object]]
"""Builds, once the store is imported, the unit of work that reads a document from the file."""


class CliError(Exception):
    """Reported as ``multusctl: <message>``; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Locations(NamedTuple):
    socket: Path
    query_socket: Path
    database: Path
    config: Path | None
    """daemon-config.json, when there is one to read."""


def locations(args: argparse.Namespace) -> Locations:
    """Where the daemon listens and keeps its state: flags first, then daemon-config.json.

    Only ``socketDir`` and ``stateDir`` are read here, with ``json``: ``app.settings`` (a frozen
    dataclass tree) would add a quarter of multusctl's start-up. A config that is not a JSON object
    with string values there is handed to ``app.settings`` for its precise error.
    """
    config = Path(args.config or DEFAULT_CONFIG_PATH)
    document: dict[str, Any] = {}
    if args.config or config.exists():
        try:
            loaded = json.loads(config.read_bytes())
        except (OSError, ValueError):
            loaded = None
        if not isinstance(loaded, dict) or not all(
            isinstance(loaded.get(key, ""), str) for key in ("socketDir", "stateDir")
        ):
            full_settings(config)  # raises CliError with app.settings' message naming the problem
            raise CliError(f"cannot use daemon config {config}")
        document = loaded
    socket_dir = Path(args.socket_dir or document.get("socketDir") or DEFAULT_SOCKET_DIR)
    state_dir = Path(args.state_dir or document.get("stateDir") or DEFAULT_STATE_DIR)
    return Locations(
        socket=socket_dir / "multus.sock",
        query_socket=socket_dir / "multus-query.sock",
        database=state_dir / "state.db",
        config=config if document else None,
    )


def full_settings(config: Path | None) -> Settings:
    """The whole, validated daemon-config (or the defaults), for the slow paths that need it."""
    from app import settings as settings_module

    try:
        return settings_module.load(config) if config is not None else settings_module.from_mapping({})
    except settings_module.SettingsError as exc:
        raise CliError(str(exc)) from exc


# ---- asking the daemon, or reading the file ---------------------------------------------------------


def ask(where: Locations, target: str, from_file: FileRead) -> tuple[Document, str]:
    """GET ``target`` from the query API; if nothing answers, read the file. (document, source)."""
    try:
        response = unixhttp.request(where.query_socket, "GET", target)
    except unixhttp.DaemonUnreachableError as exc:
        notice(f"the daemon is not answering on {exc.path} ({exc.reason}); reading {where.database} directly")
        value, _size = read_file(where, from_file())
        return value, "file"
    except unixhttp.ProtocolError as exc:
        raise CliError(f"the query API on {where.query_socket} answered nonsense: {exc}") from exc
    return decode(response, where.query_socket), "daemon"


def read_file(where: Locations, work: Callable[[Any], object]) -> tuple[Document, int]:
    """Run ``work`` on the state database opened read-only; the value as the API would send it."""
    from app.store import queries

    try:
        value, size = queries.read_file(where.database, work)
    except (queries.StoreReadError, queries.NotFoundError, queries.AmbiguousError) as exc:
        raise CliError(str(exc)) from exc
    return json.loads(json.dumps(value)), size


def decode(response: unixhttp.Response, source: Path) -> Document:
    try:
        document = json.loads(response.body) if response.body else None
    except ValueError as exc:
        raise CliError(f"{source} answered {response.status} with a body that is not JSON") from exc
    if response.status == 200:
        return document
    message = (document.get("error") or document.get("msg")) if isinstance(document, dict) else None
    code = 2 if response.status == 400 and isinstance(document, dict) and "parameter" in document else 1
    raise CliError(str(message or f"{source} answered {response.status}"), code)


def notice(message: str) -> None:
    print(f"multusctl: {message}", file=sys.stderr)


def emit(args: argparse.Namespace, document: Document, render: Callable[[Document], list[str]]) -> None:
    if args.output == "json":
        print(json.dumps(document, indent=2))
    else:
        lines = render(document)
        if lines:
            print("\n".join(lines))


def _params(args: argparse.Namespace, names: Sequence[str]) -> dict[str, str]:
    values = {name: getattr(args, name, None) for name in names}
    params = {name: str(value) for name, value in values.items() if value not in (None, False)}
    if params.get("failed") == "True":
        params["failed"] = "true"
    return params


def _target(path: str, params: Mapping[str, str]) -> str:
    return f"{path}?{urlencode(params)}" if params else path


# ---- commands ---------------------------------------------------------------------------------------


def cmd_attachments(args: argparse.Namespace, where: Locations) -> int:
    params = _params(args, filters.ATTACHMENT_PARAMETERS)
    parsed = _validated(lambda: filters.parse_attachments(params))

    def from_file() -> Callable[[Any], object]:
        from app.store import queries

        return lambda session: queries.attachments(session, parsed)

    documents, _ = ask(where, _target("/v1/attachments", params), from_file)
    emit(args, documents, render_attachments)
    return 0


def cmd_history(args: argparse.Namespace, where: Locations) -> int:
    params = _params(args, filters.HISTORY_PARAMETERS)
    parsed = _validated(lambda: filters.parse_history(params, now=datetime.now(UTC)))

    def from_file() -> Callable[[Any], object]:
        from app.store import queries

        return lambda session: queries.history_lines(session, parsed)

    documents, _ = ask(where, _target("/v1/history", params), from_file)
    emit(args, documents, render_history)
    return 0


def cmd_show(args: argparse.Namespace, where: Locations) -> int:
    container = str(args.container_id).strip()
    if not container or any(ch.isspace() or ch == "/" for ch in container):
        raise CliError(f"invalid container ID {args.container_id!r}", 2)

    def from_file() -> Callable[[Any], object]:
        from app.store import queries

        return lambda session: queries.sandbox(session, container)

    document, _ = ask(where, f"/v1/sandboxes/{quote(container, safe='')}", from_file)
    emit(args, document, render_sandbox)
    return 0


def cmd_gc(args: argparse.Namespace, where: Locations) -> int:
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


def cmd_status(args: argparse.Namespace, where: Locations) -> int:
    try:
        response = unixhttp.request(where.query_socket, "GET", "/v1/status")
    except unixhttp.DaemonUnreachableError as exc:
        notice(f"the daemon is not answering on {exc.path} ({exc.reason}); reading {where.database} directly")
        document = _status_from_file(where)
    else:
        document = decode(response, where.query_socket)
    emit(args, document, render_status)
    return 0


def _status_from_file(where: Locations) -> Document:
    from app.store import queries

    settings = full_settings(where.config)
    readyz = _readyz(where.socket)
    now = datetime.now(UTC)
    store, size = read_file(where, lambda session: queries.store_status(session, now=now))
    reason = "the daemon is not running" if readyz is None else f"/readyz answered {readyz}"
    return queries.status_doc(
        source="file",
        node=_node_name(),
        ready=readyz == 200,
        ready_reason=None if readyz == 200 else reason,
        daemon=None,
        db_path=where.database,
        db_bytes=size,
        store=store,
        last_gc=None,
        retention={
            "maxAgeHours": settings.history_max_age_hours,
            "maxRows": settings.history_max_rows,
            "lastPrune": None,
        },
    )


def _readyz(path: Path) -> int | None:
    try:
        return unixhttp.request(path, "GET", "/readyz", timeout=2.0).status
    except (unixhttp.DaemonUnreachableError, unixhttp.ProtocolError):
        return None


def _node_name() -> str:
    import os
    import socket

    return os.environ.get("MULTUS_NODE_NAME") or socket.gethostname()


def _validated(parse: Callable[[], Any]) -> Any:
    try:
        return parse()
    except filters.FilterError as exc:
        raise CliError(f"--{exc.parameter}: {exc}", 2) from exc


# ---- tables -----------------------------------------------------------------------------------------


def render_attachments(documents: list[Document]) -> list[str]:
    return tables.table(
        [
            ("POD", lambda d: d["pod"]),
            ("CONTAINER", lambda d: d["container"]),
            ("INTERFACE", lambda d: d["interface"]),
            ("NETWORK", lambda d: d["network"]),
            ("PLUGINS", lambda d: d["plugins"]),
            ("STATE", lambda d: d["state"]),
            ("ADDRESSES", lambda d: tables.joined(d["ips"])),
            ("MAC", lambda d: tables.joined(d["macs"])),
            ("AGE", lambda d: tables.age(d["createdAt"])),
        ],
        documents,
    )


def _history_columns(documents: Sequence[Document], *, with_pod: bool) -> list[tables.Column]:
    columns: list[tables.Column] = [
        ("AGE", lambda d: tables.age(d["at"])),
        ("COMMAND", lambda d: d["command"]),
        ("STEP", lambda d: d["step"]),
        ("TRIGGER", lambda d: d["trigger"]),
        ("OUTCOME", lambda d: d["outcome"]),
    ]
    if with_pod:
        columns += [("POD", lambda d: d["pod"]), ("CONTAINER", lambda d: d["container"])]
    columns += [
        ("INTERFACE", lambda d: d["interface"]),
        ("NETWORK", lambda d: d["network"]),
        ("PLUGINS", lambda d: d["plugins"]),
        ("DURATION", lambda d: tables.duration_ms(d["durationMs"])),
        ("ADDRESSES", lambda d: tables.joined(d["ips"])),
        ("MAC", lambda d: tables.joined(d["macs"])),
    ]
    if any(d["deviceIDs"] for d in documents):
        columns.append(("DEVICES", lambda d: tables.joined(d["deviceIDs"])))
    columns.append(("ERROR", lambda d: tables.error(d["error"])))
    return columns


def render_history(documents: list[Document]) -> list[str]:
    if not documents:
        return ["no history matches"]
    return tables.table(_history_columns(documents, with_pod=True), documents)


def render_sandbox(document: Document) -> list[str]:
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
                ("INTERFACE", lambda d: d["interface"]),
                ("NETWORK", lambda d: d["network"]),
                ("PLUGINS", lambda d: d["plugins"]),
                ("STATE", lambda d: d["state"]),
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


def render_gc(report: Document) -> list[str]:
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
                ("POD", lambda o: o["pod"]),
                ("REASON", lambda o: o["reason"]),
            ],
            report["orphans"],
        )
        lines += ["", *orphans]
    for failure in report.get("failed", []):
        lines.append(f"failed {str(failure['containerID'])[:12]}: {tables.error(failure.get('error'))}")
    for kind, key in (("lease", "leasesRemoved"), ("host link", "hostLinksRemoved")):
        lines += [f"{kind}: {item}" for item in report.get(key, [])]
    return lines


def render_status(document: Document) -> list[str]:
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


def _last_gc(gc: Mapping[str, Any] | None, offline: bool) -> str:
    if gc is None:
        return "unknown (the daemon is not answering)" if offline else "none since the daemon started"
    return (
        f"{tables.ago(gc['at'])} ({gc['trigger']}): examined {gc['examined']}, orphans {len(gc['orphans'])}, "
        f"collected {len(gc['collected'])}, failed {len(gc['failed'])}, "
        f"took {tables.duration_ms(gc['durationMs'])}"
    )


def _mirror(mirror: Mapping[str, Any] | None) -> str:
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


def _since(text: str) -> str:
    try:
        filters.parse_since(text, now=datetime.now(UTC))
    except filters.FilterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _limit(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid limit {text!r}: use a whole number (0: no limit)")
    return int(text)


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before or after the command (defaults set once, on the main parser)."""
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


def build_parser() -> argparse.ArgumentParser:
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
    history.add_argument(
        "--since", type=_since, help="a duration back from now (30s, 15m, 1h, 2d) or an RFC 3339 time"
    )
    history.add_argument("--failed", action="store_true", help="failed steps only")
    history.add_argument("--command", type=str.upper, choices=COMMANDS, help="one CNI command")
    history.add_argument("--trigger", type=str.lower, choices=TRIGGERS, help="who asked for it")
    history.add_argument(
        "--limit",
        type=_limit,
        help=f"at most this many lines (default {filters.DEFAULT_HISTORY_LIMIT}, 0: all)",
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        where = locations(args)
        return int(args.handler(args, where))
    except CliError as exc:
        print(f"multusctl: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:  # `multusctl history | head`: the reader left, nothing more to say
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
