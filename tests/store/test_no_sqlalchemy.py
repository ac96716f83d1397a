"""The daemon never imports SQLAlchemy (12.9 MiB of its memory): the store it runs is plain SQL.

A fresh interpreter imports what the daemon's start-up, wiring, query API and GC load, then, on a
state database a migration child made current (as the daemon's is), runs a real ADD and DEL
through the in-process engine of ``tests/core`` (real plugins, a real network namespace),
recovery, the mirror's writes, the operator's queries and a retention pass, and reports which
``sqlalchemy`` and ``alembic`` modules it holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import child_environment

REPOSITORY = Path(__file__).resolve().parent.parent.parent

PROBE = """
import asyncio, sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import app.daemon.main, app.daemon.query_server, app.daemon.startup, app.daemon.wiring
import app.gc.collector
from app.gc import recovery
from app.store import history, mirror, queries, schema
from app.store.filters import AttachmentFilter, HistoryFilter
from app.store.mirror_records import PodRecord, WatchState
from tests.core.support import Command, Node, new_container_id


async def run(node: Node) -> None:
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("extra"))
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    await engine.delete(node.request(Command.DEL, container, netns, conf))
    await recovery.recover(engine=engine, db=node.db)
    now = datetime.now(UTC)
    pod = PodRecord("ns", "web", "uid", "node-a", "1", {})
    await node.db.write(lambda connection: mirror.replace_pods(connection, [pod]))
    await node.db.write(partial(mirror.record_relist, key="pods", scope="node", resource_version="1", at=now))
    await node.db.write(partial(mirror.record_progress, key="pods", resource_version="2", events=1, at=now))
    await node.db.write(partial(mirror.set_watch_state, state=WatchState("nads", "all", "3")))
    assert await node.db.read(partial(mirror.get_watch_state, key="pods")) is not None
    await node.db.read(lambda connection: queries.store_status(connection, now=now))
    await node.db.read(lambda connection: queries.history_lines(connection, HistoryFilter()))
    await node.db.read(lambda connection: queries.attachments(connection, AttachmentFilter()))
    await node.db.read(lambda connection: queries.sandbox(connection, container))
    bound = await node.db.read(partial(history.last_id_beyond, max_rows=1))
    assert bound is not None
    await node.db.write(partial(history.delete_oldest, up_to_id=bound, batch=100))


root = Path(sys.argv[1])
schema._upgrade_in_child(str(root / "state.db"))  # the daemon's way: alembic in a child (Node.state_db)
node = Node(root)
try:
    asyncio.run(run(node))
finally:
    node.cleanup()
print(" ".join(sorted(name for name in sys.modules if name.split(".")[0] in {"sqlalchemy", "alembic"})))
"""


def test_the_daemon_and_its_store_never_import_sqlalchemy(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        env=child_environment(),
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []
