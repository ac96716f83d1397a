"""``multusctl show .`` and ``show ..`` are refused as container IDs (exit 2), as ``a/b`` is.

In the query API's path a dot segment is resolved away: ``GET /v1/sandboxes/..`` asked the daemon
for ``/v1/``, which answered "no endpoint /v1/" (exit 1), while the file read looked the text up as
a container ID prefix. In process: the query API on a unix socket over a read-only database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from app.cli import main as cli
from app.daemon.query_server import QueryServer
from app.store.database import Database


@pytest.mark.parametrize("container", [".", ".."])
def test_a_dot_segment_is_refused_as_a_container_id_with_the_daemon_answering(
    tmp_path: Path, empty_state_template: Path, capsys: pytest.CaptureFixture[str], container: str
) -> None:
    database = tmp_path / "state.db"
    database.write_bytes(empty_state_template.read_bytes())
    sockets = tmp_path / "run"
    sockets.mkdir()

    async def serve_and_show() -> int:
        db = Database.open(database, read_only=True)
        runner = web.AppRunner(QueryServer(db=db, context=None).application())  # type: ignore[arg-type]
        await runner.setup()
        try:
            await web.UnixSite(runner, str(sockets / "multus-query.sock")).start()
            argv = ["--socket-dir", str(sockets), "--state-dir", str(tmp_path), "show", container]
            return await asyncio.to_thread(cli.main, argv)
        finally:
            await runner.cleanup()
            db.close()

    code = asyncio.run(serve_and_show())
    error = capsys.readouterr().err

    assert (code, error.strip()) == (2, f"multusctl: invalid container ID {container!r}")
