"""The launcher an operator runs answers from the running daemon, importing only what that needs.

``multus-install multusctl`` writes the launcher (``#!python -IS``) into a temporary bin dir; it
asks the module's scenario daemon (real rows from real ADD, CHECK, DEL) and must print what
``python -m app.cli.main`` prints. Run under ``-X importtime`` the daemon-answered path loads no
``site``, nothing of ``app`` beyond ``app.cli``, and none of SQLAlchemy, aiohttp, argparse, json,
re, typing, pathlib, datetime or ``__future__``. With the daemon down the same launcher, without
``site``, still finds the store and its SQLAlchemy and reads the file. A filter the daemon refuses
exits 2 and names the flag, as when multusctl validates it itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import child_environment
from tests.ops.conftest import Scenario, json_output

pytestmark = pytest.mark.slow  # starts daemon processes

LEAN = {
    "app",
    "app.cli",
    "app.cli.main",
    "app.cli.quickargs",
    "app.cli.jsontext",
    "app.cli.tables",
    "app.cli.unixhttp",
}
"""Every module of ``app`` a daemon-answered query may import."""
NEVER = {
    "site",
    "sqlalchemy",
    "alembic",
    "aiohttp",
    "argparse",
    "typing",
    "pathlib",
    "datetime",
    "__future__",
}
"""Modules (and packages) the daemon-answered path must not import; a table neither ``json`` nor
``re`` (``-o json`` encodes with ``json``, which imports ``re``)."""


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bin_dir = tmp_path_factory.mktemp("bin")
    subprocess.run(
        [sys.executable, "-m", "app.cli.install", "multusctl", "--bin-dir", str(bin_dir)],
        check=True,
        capture_output=True,
        env=child_environment(),
        timeout=60,
    )
    return bin_dir / "multusctl"


def _run(launcher: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The launcher as an operator runs it: by its path, in a shell's environment."""
    return subprocess.run([str(launcher), *args], capture_output=True, text=True, timeout=60)


def _imported(launcher: Path, *args: str) -> list[str]:
    """Every module the launcher's run imports, from ``-X importtime`` (its own flags, ``-IS``)."""
    interpreter = launcher.read_text().splitlines()[0].removeprefix("#!").split()[0]
    result = subprocess.run(
        [interpreter, "-X", "importtime", "-I", "-S", str(launcher), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert lines, result.stderr
    return [line.rsplit("|", 1)[1].strip() for line in lines[1:]]


def _without_age(table: str) -> list[list[str]]:
    """The table's words, its first column (AGE: it moves with the clock) left out."""
    return [line.split()[1:] for line in table.splitlines()]


def test_the_launcher_answers_a_pods_history_from_the_running_daemon(
    scenario: Scenario, launcher: Path
) -> None:
    config = str(scenario.config)

    answer = _run(launcher, "--config", config, "history", "--pod", "team-a/web", "-o", "json")
    table = _run(launcher, "--config", config, "history", "--pod", "team-a/web")

    assert answer.returncode == 0, answer.stderr
    assert answer.stderr == "", "the daemon answered: no notice of reading the file"
    lines = json.loads(answer.stdout)
    assert lines == json_output(scenario.ctl("history", "--pod", "team-a/web", "-o", "json"))
    assert {line["pod"] for line in lines} == {"team-a/web"}
    assert {(line["command"], line["step"]) for line in lines} >= {("ADD", "request"), ("CHECK", "request")}
    assert table.returncode == 0, table.stderr
    reference = scenario.ctl("history", "--pod", "team-a/web").stdout
    assert _without_age(table.stdout) == _without_age(reference)
    assert table.stdout.splitlines()[0].split()[:5] == ["AGE", "COMMAND", "STEP", "TRIGGER", "OUTCOME"]


@pytest.mark.parametrize(
    "args",
    [
        ("history", "--pod", "team-a/web"),
        ("history", "--namespace", "team-a", "--failed", "-o", "json"),
        ("attachments",),
        ("status",),
    ],
)
def test_a_daemon_answered_query_imports_neither_the_store_nor_site_nor_heavy_modules(
    scenario: Scenario, launcher: Path, args: tuple[str, ...]
) -> None:
    modules = _imported(launcher, "--config", str(scenario.config), *args)

    app_modules = {name for name in modules if name == "app" or name.startswith("app.")}
    assert app_modules <= LEAN, sorted(app_modules - LEAN)
    never = NEVER if "-o" in args else NEVER | {"json", "re"}
    heavy = sorted(name for name in modules if name.split(".")[0] in never)
    assert heavy == [], heavy


def test_show_of_a_container_answers_through_the_launcher(scenario: Scenario, launcher: Path) -> None:
    web = scenario.pods["web"]

    result = _run(launcher, "--config", str(scenario.config), "show", web.container[:16], "-o", "json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["containerID"] == web.container


def test_with_the_daemon_down_the_launcher_reads_the_file_without_site(
    scenario: Scenario, launcher: Path, tmp_path: Path
) -> None:
    database = scenario.copy_database(tmp_path / "state")
    no_daemon = tmp_path / "no-daemon"
    no_daemon.mkdir()
    query = ("history", "--pod", "team-a/web", "-o", "json")

    offline = _run(launcher, "--socket-dir", str(no_daemon), "--state-dir", str(database.parent), *query)

    assert offline.returncode == 0, offline.stderr
    assert f"reading {database} directly" in offline.stderr
    assert json.loads(offline.stdout) == json_output(scenario.ctl(*query))


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("history", "--pod", "a/b/c"), "multusctl: --pod: invalid pod 'a/b/c'"),
        (("history", "--since", "5x"), "multusctl: --since: "),
        (("attachments", "--network", "/x"), "multusctl: --network: invalid network '/x'"),
    ],
)
def test_a_filter_the_daemon_refuses_exits_2_naming_the_flag(
    scenario: Scenario, launcher: Path, args: tuple[str, ...], named: str
) -> None:
    rows = scenario.history_rows()

    result = _run(launcher, "--config", str(scenario.config), *args)

    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(named), result.stderr
    assert "reading" not in result.stderr
    assert result.stdout == ""
    assert scenario.history_rows() == rows
