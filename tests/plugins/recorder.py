"""A CNI test plugin that records each invocation and behaves as its configuration says (stdlib only).

Installed by tests/cni/conftest.py as an executable ``recorder`` whose shebang is the test's Python.
Every invocation appends one JSON line ``{"command", "env": {CNI_*}, "stdin", "pid", "pgid"}`` to the
log named by ``recorder.log`` in its config, else by the ``RECORDER_LOG`` environment variable.

Behaviour, from the ``recorder`` object of its config::

    {"type": "recorder", "recorder": {
        "log": "/path/log.jsonl",
        "result": {...},                    # ADD prints this (else prevResult, else {"cniVersion": ...})
        "fail": {"code": 11, "msg": "..."}, # print this error object and exit 1 (or "exit")
        "garbage": true,                    # print text that is not JSON and exit 0 (or "exit")
        "hang": true,                       # start a child in the same process group, then sleep
        "stderr": "text",                   # written to stderr
        "failOn": "ADD",                    # the commands fail/garbage/hang apply to (default: all)
        "checkpoint": "/path/state.db",     # log what multus-py's checkpoint holds for this
                                            # (CNI_CONTAINERID, CNI_IFNAME), read-only, while running
        "rendezvous": {"dir": "/path", "count": 3, "timeout": 30, "commands": ["ADD"]}
    }}                                      # ADD: create <dir>/<CNI_IFNAME>, then wait until <count>
                                            # files are there (fail with code 11 after <timeout> s);
                                            # the other ``commands`` meet likewise in <dir>-<command>

When ``runtimeConfig.CNIDeviceInfoFile`` is given, the line also has ``deviceInfoFile``: that file's
text as the invocation found it (null when absent).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

ALL_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def main() -> int:
    command = os.environ.get("CNI_COMMAND", "")
    raw = sys.stdin.buffer.read()
    config = _parse(raw)
    settings: dict[str, Any] = config["recorder"] if isinstance(config.get("recorder"), dict) else {}
    entry: dict[str, Any] = {
        "command": command,
        "env": {key: value for key, value in os.environ.items() if key.startswith("CNI_")},
        "stdin": config if config else raw.decode("utf-8", "replace"),
        "pid": os.getpid(),
        "pgid": os.getpgrp(),
    }
    if settings.get("checkpoint"):
        entry["checkpoint"] = _read_checkpoint(str(settings["checkpoint"]))
    runtime_config = config.get("runtimeConfig")
    if isinstance(runtime_config, dict) and isinstance(runtime_config.get("CNIDeviceInfoFile"), str):
        entry["deviceInfoFile"] = _read_text(runtime_config["CNIDeviceInfoFile"])
    log = settings.get("log") or os.environ.get("RECORDER_LOG")
    if settings.get("stderr"):
        sys.stderr.write(str(settings["stderr"]))
    if _applies(settings, command) and settings.get("hang"):
        return _hang(log, entry)
    if _meets(settings, command) and not _rendezvous(settings, command):
        _append(log, {**entry, "rendezvous": "timed out"})
        print(
            json.dumps({"code": 11, "msg": "rendezvous timed out: the other delegates did not run alongside"})
        )
        return 1
    _append(log, entry)
    return _respond(command, config, settings)


def _meets(settings: dict[str, Any], command: str) -> bool:
    meeting = settings.get("rendezvous")
    return isinstance(meeting, dict) and command in meeting.get("commands", ["ADD"])


def _rendezvous(settings: dict[str, Any], command: str) -> bool:
    """Arrive at the meeting point, then wait for everyone: only delegates running together meet."""
    meeting = settings["rendezvous"]
    directory = str(meeting["dir"]) if command == "ADD" else f"{meeting['dir']}-{command}"
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, os.environ.get("CNI_IFNAME", "unknown")), "w", encoding="utf-8"):
        pass
    deadline = time.monotonic() + float(meeting.get("timeout", 30))
    while time.monotonic() < deadline:
        if len(os.listdir(directory)) >= int(meeting["count"]):
            return True
        time.sleep(0.02)
    return False


def _read_text(path: str) -> str | None:
    """The file's text as this invocation found it, None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _respond(command: str, config: dict[str, Any], settings: dict[str, Any]) -> int:
    applies = _applies(settings, command)
    if applies and "fail" in settings:
        print(json.dumps(settings["fail"]))
        return int(settings.get("exit", 1))
    if applies and settings.get("garbage"):
        sys.stdout.write("this is { not JSON")
        return int(settings.get("exit", 0))
    if command == "VERSION":
        print(
            json.dumps({"cniVersion": config.get("cniVersion", "1.1.0"), "supportedVersions": ALL_VERSIONS})
        )
    elif command == "ADD":
        result = (
            settings.get("result") or config.get("prevResult") or {"cniVersion": config.get("cniVersion")}
        )
        print(json.dumps(result))
    return 0


def _hang(log: str | None, entry: dict[str, Any]) -> int:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    entry["child"] = child.pid
    _append(log, entry)
    time.sleep(3600)
    return 1


def _read_checkpoint(db_path: str) -> dict[str, Any] | None:
    """The committed checkpoint row of this invocation's attachment, as another process sees it."""
    import sqlite3

    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as connection:
        row = connection.execute(
            "SELECT a.state, a.config, a.cni_args, s.state FROM attachments a "
            "JOIN sandboxes s ON s.container_id = a.container_id "
            "WHERE a.container_id = ? AND a.ifname = ?",
            (os.environ.get("CNI_CONTAINERID", ""), os.environ.get("CNI_IFNAME", "")),
        ).fetchone()
    if row is None:
        return None
    state, config, cni_args, sandbox_state = row
    return {
        "state": state,
        "config": config.decode(),
        "cni_args": json.loads(cni_args),
        "sandbox_state": sandbox_state,
    }


def _applies(settings: dict[str, Any], command: str) -> bool:
    fail_on = settings.get("failOn")
    if fail_on is None:
        return True
    return command == fail_on if isinstance(fail_on, str) else command in fail_on


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        config = json.loads(raw)
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


def _append(log: str | None, entry: dict[str, Any]) -> None:
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


if __name__ == "__main__":
    sys.exit(main())
