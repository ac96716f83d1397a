"""``python -m bench.store``: the state database's CPU per ADD and per DEL, thread by thread.

Runs, in this process, the store's side of sequential ADDs and DELs exactly as the attach engine
issues it (``app.attach.engine``, ``app.attach.teardown``): per ADD, one commit of the sandbox and
its delegates' intents, then one of their results, their history lines, the sandbox's ``ready`` and
the request's line; per DEL, one commit reading the checkpoint and marking it ``deleting``
(``checkpoints.begin_delete_and_load``), then one of the delegates' history lines, the removals and
the request's line. Nothing else runs (no delegate, no request parsing), so the figures are the
store's alone, including the hand-offs to and from the event loop. For ``--networks`` (default 1 and
4) it prints the CPU milliseconds per ADD and per DEL of the event loop thread, the writer thread
and the reader threads (each thread's own CPU clock), and the wall time per operation; then ADD and
the DEL as it was before the engine made it one trip (a reader's read of the checkpoint, then the
writer's commit of ``deleting``), for comparison. The database lives in a temporary directory on the
disk the system's temporary files use; commits are ``synchronous=FULL`` as in the daemon, so each
one waits for an fsync.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import replace
from functools import partial
from pathlib import Path

from app.attach import recording
from app.store import checkpoints, history
from app.store.database import Database
from app.store.records import DelegateFacts, DelegateIntent, HistoryEntry, PodIdentity, SandboxIntent

POD = PodIdentity("bench", "pod", "0d5e4b1c-2f55-4c1b-9a8e-3c3f0f6f2a11")
CONFIG = json.dumps(
    {
        "cniVersion": "1.0.0",
        "name": "net0",
        "plugins": [
            {"type": "bridge", "bridge": "mpb0", "ipam": {"type": "host-local", "subnet": "10.10.0.0/16"}}
        ],
    }
).encode()
RESULT = json.dumps(
    {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:0a:00:05", "sandbox": "/var/run/netns/x"}],
        "ips": [{"address": "10.10.0.5/16", "gateway": "10.10.0.1", "interface": 0}],
    },
    separators=(",", ":"),
)


def ifname(index: int) -> str:
    return "eth0" if index == 0 else f"net{index}"


def intents(container_id: str, networks: int) -> list[DelegateIntent]:
    return [
        DelegateIntent(
            container_id=container_id,
            ifname=ifname(index),
            position=index,
            is_master=index == 0,
            network_name=f"bench/net{index}",
            plugin_types=("bridge",),
            config=CONFIG,
            cni_args=(
                ("IgnoreUnknown", "true"),
                ("K8S_POD_NAMESPACE", POD.namespace),
                ("K8S_POD_NAME", POD.name),
            ),
            capability_args={},
            cni_path=("/opt/cni/bin",),
            root="/",
        )
        for index in range(networks)
    ]


def line(command: str, step: str, container_id: str, **fields: object) -> recording.UnitOfWork:
    """A history line as the engine stamps it (node name set), as a unit of work."""
    entry = HistoryEntry(
        command=command,
        step=step,
        trigger="runtime",
        outcome="ok",
        container_id=container_id,
        netns="/var/run/netns/x",
        pod=POD,
        duration_ms=12.345,
        **fields,  # type: ignore[arg-type]
    )
    return partial(history.append, entry=replace(entry, node="bench-node"))


async def add(db: Database, container_id: str, networks: int) -> None:
    """The two commits of an ADD, as ``Engine._add_locked`` and ``_run_delegates`` make them."""
    planned = intents(container_id, networks)
    sandbox = SandboxIntent(container_id, "/var/run/netns/x", "eth0", "1.0.0", POD, "boot", "4:4026532")
    await db.write(
        recording.together(
            [
                partial(checkpoints.begin_add, sandbox=sandbox),
                *(partial(checkpoints.record_intent, intent=intent) for intent in planned),
            ]
        )
    )
    pending: list[recording.UnitOfWork] = []
    facts = DelegateFacts(ips=("10.10.0.5/16",), macs=("0a:58:0a:0a:00:05",))
    for intent in planned:
        pending.append(
            partial(
                checkpoints.record_result,
                container_id=container_id,
                ifname=intent.ifname,
                result=RESULT,
                facts=facts,
            )
        )
        pending.append(
            line(
                "ADD",
                "delegate",
                container_id,
                ifname=intent.ifname,
                network_name=intent.network_name,
                plugin_types=intent.plugin_types,
                ips=facts.ips,
                macs=facts.macs,
            )
        )
    pending.append(partial(checkpoints.finish_add, container_id=container_id))
    pending.append(line("ADD", "request", container_id, ifname="eth0", ips=facts.ips, macs=facts.macs))
    await db.write(recording.together(pending))


async def delete(db: Database, container_id: str, *, one_trip: bool = True) -> None:
    """The two commits of a DEL as ``Engine.delete`` makes them (the checkpoint read inside the first:
    ``checkpoints.begin_delete_and_load``); ``one_trip=False``: the earlier flow, a reader's read
    followed by the writer's commit of ``deleting``."""
    if one_trip:
        record = await db.write(partial(checkpoints.begin_delete_and_load, container_id=container_id))
        assert record is not None
    else:
        record = await db.read(partial(checkpoints.load_sandbox, container_id=container_id))
        assert record is not None
        await db.write(partial(checkpoints.begin_delete, container_id=container_id))
    units: list[recording.UnitOfWork] = []
    removed = []
    for attachment in sorted(record.attachments, key=lambda a: a.position, reverse=True):
        units.append(
            line(
                "DEL",
                "delegate",
                container_id,
                ifname=attachment.ifname,
                network_name=attachment.network_name,
                plugin_types=attachment.plugin_types,
                ips=attachment.facts.ips,
                macs=attachment.facts.macs,
            )
        )
        removed.append(attachment.ifname)
    units.append(partial(checkpoints.remove_attachments, container_id=container_id, ifnames=removed))
    units.append(partial(checkpoints.finish_delete, container_id=container_id))
    units.append(line("DEL", "request", container_id, ifname="eth0"))
    await db.write(recording.together(units))


def thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by each live thread of this process, by thread name (pools merged)."""
    used: defaultdict[str, float] = defaultdict(float)
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            seconds = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except OSError:  # the thread ended between the listing and the reading
            continue
        name = "event loop" if thread is threading.main_thread() else thread.name.rsplit("_", 1)[0]
        used[name] += seconds
    return used


async def measure(networks: int, count: int, directory: Path) -> None:
    db = Database.open(directory / f"state-{networks}.db")
    try:
        ids = [f"{networks:02d}{index:062x}" for index in range(count + 10)]
        for index, container_id in enumerate(ids[:10]):  # warm up: statement caches, connections, threads
            await add(db, container_id, networks)
            await delete(db, container_id, one_trip=index % 2 == 0)
        steps = (
            ("ADD", partial(add, networks=networks)),
            ("DEL", delete),
            ("ADD", partial(add, networks=networks)),
            ("DEL read+commit", partial(delete, one_trip=False)),
        )
        for label, step in steps:
            before, started = thread_cpu(), time.perf_counter()
            for container_id in ids[10:]:
                await step(db, container_id)
            wall = (time.perf_counter() - started) / count * 1000
            after = thread_cpu()
            per_op = {name: (after[name] - before.get(name, 0.0)) / count * 1000 for name in after}
            store = sum(ms for name, ms in per_op.items() if name.startswith("store"))
            threads = "  ".join(f"{name} {ms:.3f}" for name, ms in sorted(per_op.items()) if ms >= 0.0005)
            print(
                f"{networks} net  {label}  store threads {store:.3f} ms CPU  all {sum(per_op.values()):.3f}"
                f"  wall {wall:.2f} ms  ({threads})"
            )
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--count", type=int, default=300, help="ADDs (then DELs) measured per network count")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="multus-bench-store-"))
    try:
        for networks in args.networks:
            asyncio.run(measure(networks, args.count, directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
