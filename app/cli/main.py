"""``multusctl``: what this node has attached, read from the daemon's state database.

Opens the SQLite file read-only, so it works while the daemon runs (WAL readers never block the
writer) and after it crashed (forensics); it never modifies anything. The store is imported only
once a command needs it, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app import settings as settings_module

DEFAULT_STATE_DIR = "/var/lib/multus-py"


def _state_db(args: argparse.Namespace) -> Path:
    if args.state_dir:
        return Path(args.state_dir) / "state.db"
    config = Path(args.config)
    if config.exists():
        return settings_module.load(config).database_path
    return Path(DEFAULT_STATE_DIR) / "state.db"


def _sandboxes(db_path: Path) -> list[Any]:
    from app.store import checkpoints
    from app.store.database import Database

    db = Database.open(db_path, read_only=True)
    try:
        return db.read_sync(checkpoints.list_sandboxes)
    finally:
        db.close()


def _addresses(result: str | None) -> str:
    if not result:
        return "-"
    ips = json.loads(result).get("ips", [])
    return ",".join(str(ip.get("address", "")) for ip in ips if isinstance(ip, dict)) or "-"


def cmd_attachments(args: argparse.Namespace) -> int:
    rows = []
    for sandbox in _sandboxes(_state_db(args)):
        pod = f"{sandbox.pod.namespace}/{sandbox.pod.name}".strip("/") or "-"
        for attachment in sandbox.attachments:
            rows.append(
                {
                    "pod": pod,
                    "container": sandbox.container_id[:12],
                    "interface": attachment.ifname,
                    "network": attachment.network_name,
                    "plugins": ",".join(attachment.plugin_types),
                    "state": attachment.state,
                    "addresses": _addresses(attachment.result),
                }
            )
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    columns = ["pod", "container", "interface", "network", "plugins", "state", "addresses"]
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="multusctl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=settings_module.DEFAULT_CONFIG_PATH, help="daemon-config.json")
    parser.add_argument("--state-dir", help="the daemon's stateDir (overrides --config)")
    sub = parser.add_subparsers(dest="command", required=True)
    attachments = sub.add_parser("attachments", help="what is attached now")
    attachments.add_argument("-o", "--output", choices=("table", "json"), default="table")
    attachments.set_defaults(handler=cmd_attachments)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return int(args.handler(args))
    except (OSError, settings_module.SettingsError) as exc:
        print(f"multusctl: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
