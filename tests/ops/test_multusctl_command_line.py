"""multusctl's fast path reads what argparse reads, and its launcher is written only where it may be.

``app.cli.quickargs`` answers for the plain spellings and hands everything else to argparse: on
generated command lines, wherever it answers, argparse accepts the same line and gives the same
attributes and command. ``tables.epoch`` (RFC 3339 by hand) agrees with ``datetime``. The names
and defaults the fast path repeats (filters, limits) are ``app.store.filters``'. The launcher
replaces pip's console script or an older launcher, never a file of someone else's.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from operator import itemgetter
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.cli import launcher, quickargs, tables
from app.cli import main as cli
from app.shim import bundle
from app.store import filters
from tests.conftest import child_environment

WORDS = [
    *quickargs.OPTIONS,
    "--config",
    "--socket-dir",
    "--state-dir",
    "-o",
    "--output",
    "--output=json",
    "-o=table",
    "-ojson",
    "--pod",
    "--pod=team-a/web",
    "--po",
    "--namespace",
    "--container",
    "--network",
    "--since",
    "--failed",
    "--failed=1",
    "--command",
    "--command=add",
    "--trigger",
    "--limit",
    "--limit=5",
    "--dry-run",
    "-h",
    "--help",
    "--",
    "-",
    "table",
    "json",
    "xml",
    "add",
    "DEL",
    "Gc",
    "runtime",
    "HOTPLUG",
    "5",
    "0",
    "-1",
    "ten",
    "²",
    "team-a/web",
    "web",
    "a b",
    "",
    "1h",
    "abc123",
    "--colour",
]


VALUES = [
    "table",
    "json",
    "add",
    "DEL",
    "runtime",
    "HOTPLUG",
    "5",
    "0",
    "-1",
    "²",
    "web",
    "a/b",
    "",
    "a b",
    "1h",
]
OPTIONS = sorted(
    {*quickargs.COMMON, "--output", "-o", *(o for table in quickargs.OPTIONS.values() for o in table)}
)
FLAGS = ["--failed", "--dry-run"]


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """Mostly well-formed lines: the command's and the common options with values (separate or
    ``=``), its flags, the command anywhere, a positional, and now and then any option or word."""
    command = draw(st.sampled_from(list(quickargs.OPTIONS)))
    own = sorted({*quickargs.COMMON, "--output", "-o", *quickargs.OPTIONS[command]})
    option = st.one_of(st.sampled_from(own), st.sampled_from(own), st.sampled_from(OPTIONS))
    value = st.sampled_from(VALUES)
    item = st.one_of(
        st.tuples(option, value).map(list),
        st.tuples(option, value).map(lambda pair: ["=".join(pair)]),
        st.sampled_from([*quickargs.FLAGS.get(command, {}), *FLAGS]).map(lambda flag: [flag]),
        st.sampled_from(WORDS).map(lambda word: [word]),
    )
    items = draw(st.lists(item, max_size=5))
    items.insert(draw(st.integers(0, len(items))), [command])
    if command == "show" and draw(st.booleans()):
        after = items.index([command]) + 1
        items.insert(draw(st.integers(after, len(items))), [draw(value)])
    return [token for tokens in items for token in tokens]


def _argparse(argv: list[str]) -> tuple[str, dict[str, object]] | None:
    """(the handler's name, the other attributes) as argparse reads ``argv``; None: it refuses."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            namespace = cli.build_parser().parse_args(argv)
        except SystemExit:
            return None
    values = vars(namespace)
    return values.pop("handler").__name__, values


@settings(max_examples=600)
@given(st.one_of(command_lines(), command_lines(), st.lists(st.sampled_from(WORDS), max_size=7)))
@example(["history", "--pod", "team-a/web"])
@example(["--config", "/etc/x.json", "history", "--pod=team-a/web", "--limit", "5", "-o", "json"])
@example(["-o", "json", "show", "abc123", "--config", "a b"])
@example(["history", "--command", "add", "--trigger", "HOTPLUG", "--failed", "--since", "1h"])
@example(["gc", "--dry-run", "--output=json"])
@example(["status", "--state-dir", ""])
def test_wherever_quickargs_answers_argparse_reads_the_same(argv: list[str]) -> None:
    quick = quickargs.parse(argv)

    if quick is not None:
        command, arguments = quick
        assert _argparse(argv) == (cli.HANDLERS[command].__name__, vars(arguments))


@pytest.mark.parametrize(
    "argv",
    [
        ["history", "--pod", "team-a/web"],
        ["--config", "/etc/x.json", "history", "--pod", "web", "--since", "1h", "--failed", "-o", "json"],
        ["history", "--command", "del", "--trigger=gc", "--limit", "0", "--network", "a/b"],
        ["attachments", "--namespace", "team-a", "--socket-dir", "/run/multus"],
        ["show", "abc123", "--state-dir", "/var/lib/multus-py"],
        ["status", "--output", "json"],
        ["gc", "--dry-run"],
    ],
)
def test_the_plain_spellings_of_every_command_take_the_fast_path(argv: list[str]) -> None:
    assert quickargs.parse(argv) is not None


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["history", "-h"],
        ["history", "--po", "web"],
        ["logs"],
        ["show"],
        ["history", "--limit", "x"],
    ],
)
def test_help_abbreviations_and_mistakes_are_left_to_argparse(argv: list[str]) -> None:
    assert quickargs.parse(argv) is None


def test_the_fast_path_repeats_the_filters_names_and_default_limit() -> None:
    assert cli.HISTORY_PARAMETERS == filters.HISTORY_PARAMETERS
    assert cli.ATTACHMENT_PARAMETERS == filters.ATTACHMENT_PARAMETERS
    assert cli.DEFAULT_HISTORY_LIMIT == filters.DEFAULT_HISTORY_LIMIT
    assert set(quickargs.OPTIONS["history"].values()) | {"failed"} == set(filters.HISTORY_PARAMETERS)
    assert set(quickargs.OPTIONS["attachments"].values()) == set(filters.ATTACHMENT_PARAMETERS)


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
@example(datetime(2026, 2, 28, 23, 59, 59, 500000, tzinfo=UTC), 0)
@example(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), 0)
@example(datetime(2026, 12, 5, 14, 23, 7, 558066, tzinfo=UTC), 0)
@example(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), 0)
def test_epoch_reads_rfc3339_as_datetime_does(moment: datetime, offset_minutes: int) -> None:
    expected = moment.timestamp()
    as_the_api_writes = moment.isoformat().replace("+00:00", "Z")
    other_offset = moment.astimezone(timezone(timedelta(minutes=offset_minutes))).isoformat()

    general = tables.epoch(moment.isoformat())  # "+00:00": not the API's spelling, the general reading
    assert general == pytest.approx(expected, abs=1e-6)
    assert tables.epoch(as_the_api_writes) == general  # its minute new, then known: the same float
    assert tables.epoch(as_the_api_writes) == general
    assert tables.epoch(other_offset) == pytest.approx(expected, abs=1e-6)
    assert tables.age(as_the_api_writes, now=expected + 7260) == "2h"


@pytest.mark.parametrize(
    "text", ["", "a", " a", "a ", "a  b", "a\tb", "a\nb", "a\xa0b", "a\u2028b", "é  ", " "]
)
def test_a_cell_is_one_line_with_single_spaces(text: str) -> None:
    assert tables._cell(text) == (" ".join(text.split()) or "-")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x00x", "\\x00x"),
        ("red \x1b[31mALERT\x1b[0m\x07", "red \\x1b[31mALERT\\x1b[0m\\x07"),
        ("net\u202eevil", "net\\u202eevil"),  # a bidi override would show "net" then "live"
        ("\udcff", "\\udcff"),  # a lone surrogate: stdout cannot even encode it strictly
        ("a\x08\x08b\n\x7f", "a\\x08\\x08b \\x7f"),
    ],
)
def test_a_character_a_terminal_would_act_on_is_shown_escaped(text: str, shown: str) -> None:
    assert tables._cell(text) == shown


def test_a_plugins_escape_sequences_reach_no_line_of_history_show_or_gc() -> None:
    """A plugin that fails with no CNI error object has its stderr's tail recorded as the error's
    details: ANSI colours, a cursor move, a bell. The tables wrote them to the terminal as they were."""
    error = {"code": 999, "msg": "plugin failed\x1b[2J", "details": "\x1b[31mno lease\x1b[0m\x07\nexit 1"}
    line = {
        "at": None, "command": "ADD", "step": "delegate", "trigger": "runtime", "outcome": "error",
        "pod": "ns/web", "container": "c" * 12, "interface": "net1", "network": "net\x1b]0;owned\x07",
        "plugins": "bridge", "durationMs": 1.0, "ips": [], "macs": ["\x1b[8m"], "deviceIDs": [],
        "error": error,
    }  # fmt: skip
    sandbox = {
        "containerID": "c" * 64, "pod": "ns/web", "podUID": "u", "history": [line],
        "checkpoint": {
            "state": "ready", "createdAt": None, "bootID": "b", "netns": "/run/netns/\x1b[1Ax",
            "delegates": [{**line, "position": 1, "state": "added", "lastError": error}],
        },
    }  # fmt: skip
    gc = {"dryRun": False, "failed": [{"containerID": "c" * 64, "error": error}]}

    lines = [*cli.render_history([line]), *cli.render_sandbox(sandbox), *cli.render_gc(gc)]

    assert all(text.isprintable() for text in lines), [text for text in lines if not text.isprintable()]
    assert "999 plugin failed\\x1b[2J (\\x1b[31mno lease\\x1b[0m\\x07 exit 1)" in lines[1]
    assert "Netns:       /run/netns/\\x1b[1Ax" in lines


def _table_cell_by_cell(columns: list[tables.Column], rows: list[dict[str, object]]) -> list[str]:
    """``tables.table`` as its docstring says it, cell by cell: one-line cells, padded, rstripped."""
    grid = []
    for title, render in columns:
        cells = [tables._cell(row[render] if isinstance(render, str) else render(row)) for row in rows]
        width = max(len(title), *map(len, cells)) if cells else len(title)
        grid.append([title.ljust(width), *(cell.ljust(width) for cell in cells)])
    return ["  ".join(line).rstrip() for line in zip(*grid, strict=True)]


CELL_VALUES = st.one_of(
    st.sampled_from(["", "-", "a", "a b", "a|b", "a | b", "|", " |", "| ", "a ", " a", "a  b", "é"]),
    st.text(alphabet=st.sampled_from(["a", " ", "|", "\t", "\n", "\x00", "\xa0", "-", "é"]), max_size=6),
    st.integers(-5, 5),
    st.none(),
)


@given(
    st.lists(st.tuples(st.sampled_from(["A", "BB", "C C"]), st.booleans()), min_size=1, max_size=4),
    st.lists(st.lists(CELL_VALUES, min_size=4, max_size=4), max_size=5),
)
@example([("A", True)], [["a "], ["b"]])  # each rule of the one-go check, broken beside a ``|``
@example([("A", True)], [["a"], [" b"]])
@example([("A", True)], [["a"], ["b  c"], ["d"]])
@example([("A", True)], [["a"], ["b\tc"], ["d"]])
@example([("A", True)], [["a"], [""], ["d"]])
@example([("A", True)], [[""], [" "]])
@example([("A", True), ("B", False)], [["a|", "b"], ["", "|"]])
def test_a_table_is_drawn_as_cell_by_cell_padding_would_draw_it(
    shape: list[tuple[str, bool]], values: list[list[object]]
) -> None:
    rows = [{f"k{index}": value for index, value in enumerate(line)} for line in values]
    columns: list[tables.Column] = [
        (title, f"k{index}" if by_key else itemgetter(f"k{index}"))
        for index, (title, by_key) in enumerate(shape)
    ]

    assert tables.table(columns, rows) == _table_cell_by_cell(columns, rows)


# ---- the launcher ---------------------------------------------------------------------------------


def _install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli.install", "multusctl", *args],
        capture_output=True,
        text=True,
        env=child_environment(),
        timeout=60,
    )


def test_multus_install_writes_a_launcher_run_without_site_that_finds_this_installation(
    tmp_path: Path,
) -> None:
    result = _install("--bin-dir", str(tmp_path))

    target = tmp_path / "multusctl"
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"installed {target}\n"
    lines = target.read_text().splitlines()
    assert lines[0] == f"#!{sys.executable} -IS"
    assert launcher.is_ours(target)
    assert target.stat().st_mode & 0o777 == 0o755
    assert str(Path(cli.__file__).resolve().parents[2]) in lines[3]
    usage = subprocess.run([str(target), "--help"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0, usage.stderr
    assert usage.stdout.startswith("usage: multusctl")


def test_the_launcher_replaces_pips_console_script_and_itself(tmp_path: Path) -> None:
    console_script = (
        f"#!{sys.executable}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n"
        "from app.cli.main import main\nif __name__ == '__main__':\n    sys.exit(main())\n"
    )
    (tmp_path / "multusctl").write_text(console_script)

    first = _install("--bin-dir", str(tmp_path))
    again = _install("--bin-dir", str(tmp_path))

    assert (first.returncode, again.returncode) == (0, 0), first.stderr + again.stderr
    assert launcher.is_ours(tmp_path / "multusctl")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["multusctl"]


def test_a_foreign_multusctl_is_left_alone(tmp_path: Path) -> None:
    foreign = tmp_path / "multusctl"
    foreign.write_text("#!/bin/sh\necho someone else's\n")

    result = _install("--bin-dir", str(tmp_path))

    assert result.returncode == 1
    assert f"{foreign} exists and is neither our launcher nor pip's multusctl" in result.stderr
    assert foreign.read_text() == "#!/bin/sh\necho someone else's\n"


def test_a_missing_bin_dir_is_named(tmp_path: Path) -> None:
    result = _install("--bin-dir", str(tmp_path / "nowhere"))

    assert result.returncode == 1
    assert f"{tmp_path / 'nowhere'} is not a directory" in result.stderr


def test_reading_the_file_runs_with_the_garbage_collector_the_launcher_turned_off(tmp_path: Path) -> None:
    import gc

    from app.store.database import Database

    database = tmp_path / "state.db"
    Database.open(database).close()
    where = cli.Locations(socket="", query_socket="", database=str(database), config=None)
    gc.disable()
    try:
        value, _size = cli.read_file(where, lambda _connection: {"rows": 0})
        assert gc.isenabled()
    finally:
        gc.enable()
    assert value == {"rows": 0}


def test_an_interpreter_path_too_long_for_the_launchers_first_line_is_refused() -> None:
    """Linux reads 256 bytes of a script to find its interpreter: a longer ``#!`` line would lose
    ``-IS`` (the launcher would then run with ``site``) or not run at all."""
    fits = "/" + "p" * (bundle.BINPRM_BUF_SIZE - len("#! -IS\n") - 1)
    assert launcher.launcher_text(fits, []).index("\n") + 1 == bundle.BINPRM_BUF_SIZE

    with pytest.raises(launcher.LauncherError, match="256"):
        launcher.launcher_text(fits + "p", [])
