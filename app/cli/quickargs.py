"""``multusctl``'s command line read without ``argparse``, for the runs that need nothing else.

``argparse`` (with ``re`` and ``gettext``) and building multusctl's parser cost more than the rest
of a daemon-answered query. ``parse`` reads the plain spellings of every command (long options
with a separate or ``=`` value, ``-o VALUE``, the common options before or after the command) into
the attributes ``app.cli.main.build_parser`` gives, and returns None for anything else: help, an
abbreviation, an unknown or repeated-looking flag, a value that starts with ``-``, a bad choice or
limit. ``main`` then runs argparse, which prints the help or names the mistake as it always did.
A test compares the two on generated command lines: wherever ``parse`` answers, argparse agrees.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS")
"""CNI commands recorded in the history (``app.attach.requests.Command``; a test keeps them equal)."""
TRIGGERS = ("runtime", "rollback", "recovery", "gc", "operator", "spool", "delegate", "hotplug")
"""Who asks for an operation (``app.attach.requests.Trigger``; a test keeps them equal)."""
OUTPUTS = ("table", "json")

COMMON = {"--config": "config", "--socket-dir": "socket_dir", "--state-dir": "state_dir"}
"""Options taking any value, accepted before or after the command."""
COMMON_DEFAULTS: dict[str, object] = {
    "config": None,
    "socket_dir": None,
    "state_dir": None,
    "output": "table",
}

OPTIONS: dict[str, dict[str, str]] = {
    "attachments": {"--namespace": "namespace", "--pod": "pod", "--network": "network"},
    "history": {
        "--pod": "pod",
        "--namespace": "namespace",
        "--container": "container",
        "--network": "network",
        "--since": "since",
        "--command": "command",
        "--trigger": "trigger",
        "--limit": "limit",
    },
    "show": {},
    "gc": {},
    "status": {},
}
"""Each command's options that take a value, and their attribute names."""
FLAGS: dict[str, dict[str, str]] = {"history": {"--failed": "failed"}, "gc": {"--dry-run": "dry_run"}}
"""Each command's ``store_true`` options."""
POSITIONALS: dict[str, str] = {"show": "container_id"}
"""The one positional argument a command requires."""


class Arguments:
    """The parsed command line: the attributes argparse's namespace would have."""

    def __init__(self, values: dict[str, object]) -> None:
        self.__dict__.update(values)

    if TYPE_CHECKING:  # as typeshed's argparse.Namespace: any attribute, of any type

        def __getattr__(self, name: str) -> Any: ...


MAX_LIMIT = 2**63 - 1
"""``app.store.filters.MAX_HISTORY_LIMIT``, repeated (no ``app.store`` on the fast path)."""


def limit(text: str) -> int:
    """``--limit``: a whole number (0: no limit)."""
    if not (text.isascii() and text.isdigit()):  # "²" is a digit to isdigit, not to int
        raise ValueError(f"invalid limit {text!r}: use a whole number (0: no limit)")
    significant = text.lstrip("0") or "0"  # int() refuses strings of over 4300 digits
    if len(significant) > len(str(MAX_LIMIT)) or int(significant) > MAX_LIMIT:
        raise ValueError(f"invalid limit {text!r}: at most {MAX_LIMIT} (0: no limit)")
    return int(significant)


def _command_value(text: str) -> str:
    value = text.upper()
    if value not in COMMANDS:
        raise ValueError(value)
    return value


def _trigger_value(text: str) -> str:
    value = text.lower()
    if value not in TRIGGERS:
        raise ValueError(value)
    return value


def _output_value(text: str) -> str:
    if text not in OUTPUTS:
        raise ValueError(text)
    return text


CONVERT: "dict[str, Callable[[str], object]]" = {
    "command": _command_value,
    "trigger": _trigger_value,
    "limit": limit,
    "output": _output_value,
}


def parse(argv: "Sequence[str]") -> "tuple[str, Arguments] | None":
    """(the command, its arguments), or None: let argparse read this command line."""
    values = dict(COMMON_DEFAULTS)
    command: str | None = None
    positional: str | None = None
    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if not token.startswith("-"):
            if command is None:
                if token not in OPTIONS:
                    return None
                command = token
                values.update(_command_defaults(command))
            elif command in POSITIONALS and positional is None:
                positional = token
            else:
                return None
            continue
        name, has_value, value = token.partition("=")
        flags = FLAGS.get(command or "", {})
        if name in flags and not has_value:
            values[flags[name]] = True
            continue
        if name in ("-o", "--output") and not (has_value and name == "-o"):
            destination = "output"
        elif name in COMMON:
            destination = COMMON[name]
        elif command is not None and name in OPTIONS[command]:
            destination = OPTIONS[command][name]
        else:
            return None
        if not has_value:
            if index == len(argv) or argv[index].startswith("-"):
                return None
            value = argv[index]
            index += 1
        try:
            values[destination] = CONVERT[destination](value) if destination in CONVERT else value
        except ValueError:
            return None
    if command is None or (command in POSITIONALS and positional is None):
        return None
    if command in POSITIONALS:
        values[POSITIONALS[command]] = positional
    return command, Arguments(values)


def _command_defaults(command: str) -> dict[str, object]:
    defaults: dict[str, object] = {"command": command}  # argparse's subparsers dest, before its options
    defaults.update(dict.fromkeys(OPTIONS[command].values()))
    defaults.update(dict.fromkeys(FLAGS.get(command, {}).values(), False))
    return defaults
