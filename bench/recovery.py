"""``python -m bench.recovery``: start-up recovery and garbage collection at scale.

Prints: time from daemon start to ready with 1,000 recorded attachments (and with none, for the
baseline); one GC pass with nothing to do over 1,000 attachments; one GC pass collecting 100
leaked attachments (real bridge + host-local DELs, netns deleted behind the daemon's back).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from app.attach import netconf
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.networks import NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni.types import ContainerId, IfName
from app.gc.collector import GarbageCollector
from app.store import checkpoints
from app.store.database import Connection, Database
from app.store.records import DelegateIntent, PodIdentity, SandboxIntent
from bench.node import BenchNode

BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def fill(db: Database, *, count: int, netns: str, boot_id: str) -> None:
    """``count`` ready sandboxes of one attachment each, recorded as a real ADD would leave them."""

    def work(connection: Connection) -> None:
        for index in range(count):
            cid = f"{index:064x}"
            checkpoints.begin_add(
                connection,
                SandboxIntent(cid, netns, "eth0", "1.0.0", PodIdentity("bench", f"pod-{index}", ""), boot_id),
            )
            checkpoints.record_intent(
                connection,
                DelegateIntent(
                    cid, "eth0", 0, True, "net0", ("bridge",), b'{"cniVersion":"1.0.0"}', (), {}, ()
                ),
            )
            checkpoints.record_result(
                connection, container_id=cid, ifname="eth0", result='{"cniVersion":"1.0.0"}'
            )
            checkpoints.finish_add(connection, cid)

    db.write_sync(work)


def time_to_ready(node: BenchNode) -> float:
    started = time.perf_counter()
    node.start_daemon()
    elapsed = time.perf_counter() - started
    node.stop_daemon()
    return elapsed


def bench_startup(attachments: int) -> tuple[float, float]:
    """(seconds to ready with an empty store, with ``attachments`` recorded)."""
    results = []
    for count in (0, attachments):
        node = BenchNode(networks=1)
        try:
            node.prepare()
            netns = node.make_pods(1)[0].netns_path
            boot = BOOT_ID
            db = Database.open(node.root / "state" / "state.db")
            fill(db, count=count, netns=netns, boot_id=boot)
            db.close()
            results.append(statistics.median(time_to_ready(node) for _ in range(3)))
        finally:
            node.close()
    return results[0], results[1]


async def bench_gc(attachments: int, leaked: int) -> tuple[float, float, int]:
    """(idle pass seconds over ``attachments``, collecting pass seconds, collected count)."""
    node = BenchNode(networks=1)
    try:
        node.prepare()
        db = Database.open(node.root / "state" / "state.db")
        engine = AttachEngine(
            db=db,
            resolver=NetworkResolver(),
            boot_id=BOOT_ID,
            settings=EngineSettings(plugin_env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}),
        )
        collector = GarbageCollector(engine=engine, db=db)
        keeper = node.make_pods(1)[0]
        fill(db, count=attachments, netns=keeper.netns_path, boot_id=engine.boot_id)
        await collector.run_once()  # warm caches
        idle = []
        for _ in range(5):
            started = time.perf_counter()
            report = await collector.run_once()
            idle.append(time.perf_counter() - started)
            assert not report.orphans
        config = json.loads(await asyncio.to_thread((node.root / "daemon-config.json").read_text))
        conf = netconf.parse(
            netconf.merge({"cniVersion": "1.0.0", "name": "m"}, config), stdin_cni_version="1.0.0"
        )
        pods = node.make_pods(leaked)
        for pod in pods:
            await engine.add(
                SandboxRequest(
                    command=Command.ADD,
                    container_id=ContainerId(pod.container_id),
                    netns=pod.netns_path,
                    ifname=IfName("eth0"),
                    cni_args=(),
                    pod=PodIdentity("bench", pod.netns, ""),
                    conf=conf,
                )
            )
        for pod in pods:  # the leak: namespaces gone behind the daemon's back
            await asyncio.to_thread(subprocess.run, ["ip", "netns", "del", pod.netns], check=True)
        started = time.perf_counter()
        report = await collector.run_once()
        collecting = time.perf_counter() - started
        db.close()
        return statistics.median(idle), collecting, len(report.collected)
    finally:
        node.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__)
    parser.add_argument("--attachments", type=int, default=1000)
    parser.add_argument("--leaked", type=int, default=100)
    args = parser.parse_args(argv)
    empty, full = bench_startup(args.attachments)
    print(
        f"daemon start to ready: {empty * 1000:.0f} ms empty, {full * 1000:.0f} ms with {args.attachments} "
        f"recorded attachments (recovery adds {max(0.0, full - empty) * 1000:.0f} ms)"
    )
    idle, collecting, collected = asyncio.run(bench_gc(args.attachments, args.leaked))
    print(f"gc pass with nothing to do over {args.attachments} attachments: {idle * 1000:.1f} ms")
    print(f"gc pass collecting {collected} leaked attachments (real DELs): {collecting:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
