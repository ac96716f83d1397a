"""``python -m bench.history``: operator queries over a million history lines, and what history costs.

Fills a state database with ``--rows`` history lines (default 1,000,000) spread over ``--pods``
pods (default 5,000) in 50 namespaces over the last 7 days: each pod's sandboxes come and go (ADD
of 1-3 networks, a CHECK now and then, DEL), 2 % of ADDs fail on their last delegate and are
rolled back, and each pod's newest sandbox is still attached (checkpoint rows too). Then prints:

- ``multusctl history --pod NS/NAME`` end to end, as a process (p50/p95 over ``--runs`` pods), the
  way an operator runs it: the launcher ``multus-install multusctl`` writes (``#!python -IS``,
  written into the run directory here), asked of a running daemon through the query API; and,
  for comparison, pip's console script (with ``site``), and the file read with the daemon down;
- in the same loop, pod by pod (paired, so a busy machine slows all three alike; ``--rounds``
  times over the pods): a bare interpreter's start ``python -I -S -c pass`` and the query API's
  answer alone (the same request from this process, no multusctl start-up); the verdict is
  multusctl's p50 over the sum of their p50s, against issue 14's 1.3; then the CPU time of the
  launcher's runs and of the bare starts (less noisy than wall time on a shared machine): their
  difference is multusctl's own work (imports, decoding, the table) without the wait;
- ``multusctl --help`` (start-up, argparse included);
- the same query in process (SQL and documents only), for scale;
- what history adds to an ADD of 3 networks: the writer's time in the history units (4 lines per
  ADD), and the ADD's four commits with and without those lines (``synchronous=FULL``);
- a retention pass deleting 10,000 lines: the longest single batch write (what an attach can wait).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from app.cli import launcher
from app.sandbox.processes import DaemonProcess
from app.store import checkpoints, history, queries, retention
from app.store.database import Connection, Database
from app.store.filters import HistoryFilter
from app.store.records import DelegateFacts, DelegateIntent, HistoryEntry, PodIdentity, SandboxIntent

BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
LIVE_NETNS = "/proc/1/ns/net"
"""A namespace that exists: GC must find nothing to collect while the benchmark queries."""
NETWORKS = ("cluster", "storage", "sriov")
SPAN = timedelta(days=7)
COLUMNS = (
    "at, duration_ms, command, step, trigger, outcome, container_id, netns, ifname, network_name, "
    "plugin_types, pod_namespace, pod_name, pod_uid, ips, macs, error_code, error_msg, error_details, "
    "node, device_ids"
)


START_RATIO_TARGET = 1.3
"""Issue 14: multusctl history --pod <= 1.3 x (bare ``python -I -S`` start + the daemon's answer)."""


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# ---- filling ----------------------------------------------------------------------------------------


class Filler:
    """Generates history lines in time order, as the daemon would have written them."""

    def __init__(self, *, pods: int, rows: int, seed: int = 7) -> None:
        self.random = random.Random(seed)
        self.pods = [(f"ns-{index % 50:02d}", f"pod-{index:05d}") for index in range(pods)]
        self.rows = rows
        self.now = datetime.now(UTC)
        self.live: dict[tuple[str, str], tuple[str, int]] = {}
        """Per pod, its newest sandbox (container ID, networks): left attached."""

    def lines(self) -> Iterator[tuple[Any, ...]]:
        per_sandbox = 5.5  # average lines of one sandbox's life (ADD + DEL + CHECKs)
        sandboxes = int(self.rows / per_sandbox) + len(self.pods)
        events: list[tuple[float, int, str, tuple[Any, ...]]] = []
        start = self.now - SPAN
        for serial in range(sandboxes):
            namespace, name = self.pods[serial % len(self.pods)]
            networks = self.random.choice((1, 1, 2, 3))
            container = self.random.getrandbits(256).to_bytes(32, "big").hex()
            added = self.random.uniform(0, SPAN.total_seconds() * 0.98)
            life = (namespace, name, container, networks)
            heapq.heappush(events, (added, serial, "ADD", life))
            self.live[(namespace, name)] = (container, networks)
        emitted = 0
        while events and emitted < self.rows:
            at, serial, kind, life = heapq.heappop(events)
            namespace, name, container, networks = life
            moment = start + timedelta(seconds=at)
            if kind == "ADD":
                failed = self.random.random() < 0.02
                for line in self._add(moment, life, failed=failed):
                    yield line
                    emitted += 1
                if failed:
                    continue
                if self.live.get((namespace, name), ("",))[0] != container:
                    ending = at + self.random.uniform(60, 86400)
                    if self.random.random() < 0.3:
                        heapq.heappush(events, (at + self.random.uniform(5, 600), serial, "CHECK", life))
                    if ending < SPAN.total_seconds():
                        heapq.heappush(events, (ending, serial, "DEL", life))
            elif kind == "CHECK":
                yield self._line(
                    moment, "CHECK", "request", "runtime", "ok", life, ifname="eth0", duration=80.0
                )
                emitted += 1
            else:
                for line in self._del(moment, life):
                    yield line
                    emitted += 1

    def _line(
        self,
        moment: datetime,
        command: str,
        step: str,
        trigger: str,
        outcome: str,
        life: tuple[Any, ...],
        *,
        ifname: str,
        network: str = "",
        plugins: str = "",
        duration: float,
        addresses: tuple[str, str] | None = None,
        error: tuple[int, str, str] | None = None,
    ) -> tuple[Any, ...]:
        namespace, name, container, _ = life
        ips, macs = ([addresses[0]], [addresses[1]]) if addresses else ([], [])
        code, msg, details = error or (None, None, None)
        return (
            moment.replace(tzinfo=None).isoformat(sep=" "),
            duration,
            command,
            step,
            trigger,
            outcome,
            container,
            f"/var/run/netns/cni-{container[:8]}",
            ifname,
            network,
            plugins,
            namespace,
            name,
            f"uid-{container[:16]}",
            json.dumps(ips),
            json.dumps(macs),
            code,
            msg,
            details,
            "bench-node",
            "[]",
        )

    def _address(self, position: int, container: str) -> tuple[str, str]:
        host = int(container[:6], 16)
        return (
            f"10.{100 + position}.{host >> 8 & 255}.{host & 255}/16",
            ":".join(container[i : i + 2] for i in range(0, 12, 2)),
        )

    def _add(self, moment: datetime, life: tuple[Any, ...], *, failed: bool) -> Iterator[tuple[Any, ...]]:
        container, networks = life[2], life[3]
        for position in range(networks):
            broken = failed and position == networks - 1
            yield self._line(
                moment,
                "ADD",
                "delegate",
                "runtime",
                "error" if broken else "ok",
                life,
                ifname="eth0" if position == 0 else f"net{position}",
                network=NETWORKS[position],
                plugins="bridge" if position == 0 else "macvlan",
                duration=self.random.uniform(5, 40),
                addresses=None if broken else self._address(position, container),
                error=(11, "no capacity", "retry later") if broken else None,
            )
        if failed:
            for position in reversed(range(networks)):
                yield self._line(
                    moment,
                    "DEL",
                    "delegate",
                    "rollback",
                    "ok",
                    life,
                    ifname="eth0" if position == 0 else f"net{position}",
                    network=NETWORKS[position],
                    plugins="bridge" if position == 0 else "macvlan",
                    duration=self.random.uniform(5, 30),
                )
        yield self._line(
            moment,
            "ADD",
            "request",
            "runtime",
            "error" if failed else "ok",
            life,
            ifname="eth0",
            duration=self.random.uniform(20, 120),
            addresses=None if failed else self._address(0, container),
            error=(11, "no capacity", "retry later") if failed else None,
        )

    def _del(self, moment: datetime, life: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        for position in reversed(range(life[3])):
            yield self._line(
                moment,
                "DEL",
                "delegate",
                "runtime",
                "ok",
                life,
                ifname="eth0" if position == 0 else f"net{position}",
                network=NETWORKS[position],
                plugins="bridge" if position == 0 else "macvlan",
                duration=self.random.uniform(5, 30),
                addresses=self._address(position, life[2]),
            )
        yield self._line(moment, "DEL", "request", "runtime", "ok", life, ifname="eth0", duration=40.0)


def fill(db_path: Path, *, rows: int, pods: int) -> tuple[int, list[tuple[str, str]]]:
    """Create and fill the database; return (history lines written, pods with attachments)."""
    Database.open(db_path).close()  # migrated to this release's schema
    filler = Filler(pods=pods, rows=rows)
    written = 0
    with sqlite3.connect(db_path, isolation_level=None) as raw:
        raw.execute("PRAGMA synchronous=OFF")
        raw.execute("BEGIN")
        statement = f"INSERT INTO history ({COLUMNS}) VALUES ({', '.join('?' * 21)})"
        batch: list[tuple[Any, ...]] = []
        for line in filler.lines():
            batch.append(line)
            if len(batch) == 50_000:
                raw.executemany(statement, batch)
                written += len(batch)
                batch.clear()
        raw.executemany(statement, batch)
        written += len(batch)
        raw.execute("COMMIT")
    db = Database.open(db_path)
    try:
        db.write_sync(partial(_record_live, live=filler.live))
    finally:
        db.close()
    return written, sorted(filler.live)


def _record_live(connection: Connection, live: dict[tuple[str, str], tuple[str, int]]) -> None:
    for (namespace, name), (container, networks) in live.items():
        checkpoints.begin_add(
            connection,
            SandboxIntent(
                container,
                LIVE_NETNS,
                "eth0",
                "1.0.0",
                PodIdentity(namespace, name, f"uid-{container[:16]}"),
                BOOT_ID,
            ),
        )
        for position in range(networks):
            _record_delegate(connection, container, position)
        checkpoints.finish_add(connection, container)


def _record_delegate(connection: Connection, container: str, position: int) -> None:
    ifname = "eth0" if position == 0 else f"net{position}"
    config = json.dumps(
        {"cniVersion": "1.0.0", "name": NETWORKS[position], "type": "bridge", "ipam": {"type": "static"}}
    )
    checkpoints.record_intent(
        connection,
        DelegateIntent(
            container,
            ifname,
            position,
            position == 0,
            NETWORKS[position],
            ("bridge",),
            config.encode(),
            (),
            {},
            (),
        ),
    )
    address = f"10.{100 + position}.0.2/16"
    result = {"cniVersion": "1.0.0", "ips": [{"address": address}]}
    checkpoints.record_result(
        connection,
        container_id=container,
        ifname=ifname,
        result=json.dumps(result),
        facts=DelegateFacts(ips=(address,)),
    )


# ---- multusctl as a process ------------------------------------------------------------------------


def console_script() -> list[str]:
    """pip's ``multusctl`` of this interpreter (``python -m app.cli.main`` without one)."""
    installed = Path(sys.executable).with_name("multusctl")
    if installed.exists() and not launcher.is_ours(installed):
        return [str(installed)]
    return [sys.executable, "-m", "app.cli.main"]


def time_process(argv: Sequence[str], runs: int) -> tuple[list[float], str]:
    timings, output = [], ""
    for _ in range(runs):
        elapsed, output = run_once(argv)
        timings.append(elapsed)
    return timings, output


def run_once(argv: Sequence[str]) -> tuple[float, str]:
    """(wall ms, stdout) of one run, which must succeed."""
    elapsed, _cpu, output = run_timed(argv)
    return elapsed, output


def run_timed(argv: Sequence[str]) -> tuple[float, float, str]:
    """(wall ms, the child's CPU ms (utime + stime), stdout) of one run, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    elapsed = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return elapsed, cpu, done.stdout


class Paired:
    """Per pod, one after another: the launcher, a bare start, the answer alone, the console script."""

    def __init__(self) -> None:
        self.launcher: list[float] = []
        self.launcher_cpu: list[float] = []
        self.bare: list[float] = []
        self.bare_cpu: list[float] = []
        self.answer: list[float] = []
        self.console: list[float] = []
        self.lines = 0


def time_paired(
    ctl: list[str],
    console: list[str],
    query_socket: Path,
    pods: Sequence[tuple[str, str]],
    *,
    config: Path,
    rounds: int,
) -> Paired:
    from app.cli import unixhttp

    paired = Paired()
    bare = [ctl_interpreter(ctl), "-I", "-S", "-c", "pass"]
    for namespace, name in [pod for _round in range(rounds) for pod in pods]:
        query = ["--config", str(config), "history", "--pod", f"{namespace}/{name}"]
        run_once([*ctl, *query])  # the daemon's page cache and statement cache warm for this pod
        elapsed, cpu, output = run_timed([*ctl, *query])
        paired.launcher.append(elapsed)
        paired.launcher_cpu.append(cpu)
        paired.lines = max(paired.lines, len(output.splitlines()) - 1)
        elapsed, cpu, _ = run_timed(bare)
        paired.bare.append(elapsed)
        paired.bare_cpu.append(cpu)
        started = time.perf_counter()
        answer = unixhttp.request(query_socket, "GET", f"/v1/history?pod={namespace}/{name}")
        paired.answer.append((time.perf_counter() - started) * 1000)
        if answer.status != 200:
            raise RuntimeError(f"query API answered {answer.status}: {answer.body[:200]!r}")
        paired.console.append(run_once([*console, *query])[0])
    return paired


def ctl_interpreter(ctl: list[str]) -> str:
    """The interpreter named on the launcher's ``#!`` line: the floor is that Python's start."""
    with open(ctl[0], "rb") as file:
        return file.readline().decode()[2:].split()[0]


def time_pod_queries(
    base: list[str], pods: Sequence[tuple[str, str]], runs: int
) -> tuple[list[float], list[float], int]:
    """(first query of each pod, the same query again, most lines shown)."""
    first, again, lines = [], [], 0
    for namespace, name in pods[:runs]:
        argv = [*base, "history", "--pod", f"{namespace}/{name}"]
        elapsed, output = time_process(argv, 1)
        first.extend(elapsed)
        again.extend(time_process(argv, 1)[0])
        lines = max(lines, len(output.splitlines()) - 1)
    return first, again, lines


def start_daemon(root: Path) -> tuple[DaemonProcess, Path]:
    config = root / "daemon-config.json"
    config.write_text(
        json.dumps(
            {
                "socketDir": str(root / "run"),
                "stateDir": str(root / "state"),
                "cniConfigDir": str(root / "net.d"),
                "multusConfigFile": str(root / "none.conf"),
                "logLevel": "error",
                "logFile": str(root / "daemon.log"),
                "gcIntervalSeconds": 3600,
                "historyMaxRows": 0,
                "historyMaxAgeHours": 0,
            }
        )
    )
    daemon = DaemonProcess.for_config(config, socket_dir=root / "run", log=root / "daemon.out")
    daemon.start()
    query = root / "run" / "multus-query.sock"
    daemon.wait_until(lambda: _start_up_done(query), what="the query API and a first GC pass", timeout=60)
    return daemon, config


def _start_up_done(query_socket: Path) -> bool:
    """The query API answers and the daemon's first GC pass is over (it stats every sandbox)."""
    from app.cli import unixhttp

    try:
        answer = unixhttp.request(query_socket, "GET", "/v1/status")
    except unixhttp.DaemonUnreachableError:
        return False
    return answer.status == 200 and json.loads(answer.body)["lastGc"] is not None


# ---- in process -------------------------------------------------------------------------------------


def in_process_query(db_path: Path, pods: Sequence[tuple[str, str]], runs: int) -> list[float]:
    db = Database.open(db_path, read_only=True)
    timings = []
    try:
        for namespace, name in pods[:runs]:
            where = HistoryFilter(namespace=namespace, pod=name)
            started = time.perf_counter()
            db.read_sync(partial(queries.history_lines, where=where))
            timings.append((time.perf_counter() - started) * 1000)
    finally:
        db.close()
    return timings


class HistoryClock:
    """Times ``history.append`` inside the writer thread."""

    def __init__(self) -> None:
        self.spent: list[float] = []

    def append(self, connection: Connection, entry: HistoryEntry) -> None:
        started = time.perf_counter()
        history.append(connection, entry)
        self.spent.append((time.perf_counter() - started) * 1000)


def add_cost(db_path: Path, adds: int) -> dict[str, float]:
    """A 3-network ADD's four commits, as the engine makes them, with and without history."""
    db = Database.open(db_path)
    clock = HistoryClock()
    with_history: list[float] = []
    without: list[float] = []
    try:
        for serial in range(adds):
            for recorded, into in ((True, with_history), (False, without)):
                container = f"bench{serial:06d}{int(recorded)}".ljust(64, "0")
                into.append(_one_add(db, container, clock if recorded else None))
        per_add_history = sum(clock.spent) / adds
    finally:
        db.close()
    return {
        "with": statistics.median(with_history),
        "without": statistics.median(without),
        "writer_ms": per_add_history,
    }


def _one_add(db: Database, container: str, clock: HistoryClock | None) -> float:
    pod = PodIdentity("bench", container[:12], "")

    def entry(position: int | None) -> Callable[[Connection], None]:
        line = HistoryEntry(
            command="ADD",
            step="request" if position is None else "delegate",
            trigger="runtime",
            outcome="ok",
            container_id=container,
            netns=LIVE_NETNS,
            ifname="eth0" if not position else f"net{position}",
            network_name="" if position is None else NETWORKS[position],
            plugin_types=() if position is None else ("bridge",),
            pod=pod,
            duration_ms=12.5,
            ips=("10.100.0.2/16",),
            macs=("02:00:00:00:00:01",),
            node="bench-node",
        )
        return (lambda s: clock.append(s, line)) if clock else (lambda s: None)

    def unit(*steps: Callable[[Connection], object]) -> Callable[[Connection], None]:
        def run(connection: Connection) -> None:
            for step in steps:
                step(connection)

        return run

    sandbox = SandboxIntent(container, LIVE_NETNS, "eth0", "1.0.0", pod, BOOT_ID)
    started = time.perf_counter()
    db.write_sync(unit(partial(checkpoints.begin_add, sandbox=sandbox), _intent(container, 0)))
    db.write_sync(unit(_result(container, 0), entry(0), _intent(container, 1)))
    db.write_sync(unit(_result(container, 1), entry(1), _intent(container, 2)))
    db.write_sync(
        unit(
            _result(container, 2),
            entry(2),
            partial(checkpoints.finish_add, container_id=container),
            entry(None),
        )
    )
    return (time.perf_counter() - started) * 1000


def _intent(container: str, position: int) -> Callable[[Connection], object]:
    config = json.dumps({"cniVersion": "1.0.0", "name": NETWORKS[position], "type": "bridge"}).encode()
    intent = DelegateIntent(
        container,
        "eth0" if position == 0 else f"net{position}",
        position,
        position == 0,
        NETWORKS[position],
        ("bridge",),
        config,
        (),
        {},
        (),
    )
    return partial(checkpoints.record_intent, intent=intent)


def _result(container: str, position: int) -> Callable[[Connection], object]:
    return partial(
        checkpoints.record_result,
        container_id=container,
        ifname="eth0" if position == 0 else f"net{position}",
        result='{"cniVersion":"1.0.0","ips":[{"address":"10.100.0.2/16"}]}',
        facts=DelegateFacts(ips=("10.100.0.2/16",)),
    )


def prune_cost(db_path: Path, lines: int) -> tuple[int, float, list[float]]:
    """(lines deleted, pass ms, each write's ms) of a retention pass deleting up to ``lines`` lines
    (at most half of what there is: a small ``--rows`` keeps some)."""
    db = Database.open(db_path)
    try:
        total = db.read_sync(history.summary)[0]
        lines = min(lines, total // 2)
        writes: list[float] = []
        original = db.write

        async def timed_write(work: Any, *, durable: bool = True) -> Any:
            started = time.perf_counter()
            try:
                return await original(work, durable=durable)
            finally:
                writes.append((time.perf_counter() - started) * 1000)

        db.write = timed_write  # type: ignore[method-assign]
        report = asyncio.run(retention.prune(db, retention.Retention(max_age=None, max_rows=total - lines)))
    finally:
        db.close()
    return report.deleted_by_rows, report.duration_ms, writes


# ---- main -------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pods", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=20, help="pod queries timed per path")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds over those pods of the paired launcher / bare start / answer timing (default 3)",
    )
    parser.add_argument("--adds", type=int, default=200, help="ADDs timed with and without history")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="multus-bench-history-"))
    db_path = root / "state" / "state.db"
    try:
        started = time.perf_counter()
        written, live_pods = fill(db_path, rows=args.rows, pods=args.pods)
        print(
            f"filled {written:,} history lines, {len(live_pods):,} pods attached, "
            f"{os.path.getsize(db_path) / 2**20:.0f} MiB, in {time.perf_counter() - started:.1f} s"
        )
        os.sync()  # the fill's dirty pages are written back now, not while queries are timed
        picks = random.Random(1).sample(live_pods, min(args.runs, len(live_pods)))
        (root / "bin").mkdir()
        ctl = [str(launcher.install(root / "bin"))]  # what `multus-install multusctl` writes
        console = console_script()

        help_ms, _ = time_process([*ctl, "--help"], args.runs)
        daemon, config = start_daemon(root)
        try:
            paired = time_paired(
                ctl, console, root / "run" / "multus-query.sock", picks, config=config, rounds=args.rounds
            )
        finally:
            daemon.terminate()
        empty = root / "no-daemon"
        empty.mkdir()
        file_ms, file_again, file_lines = time_pod_queries(
            [*ctl, "--config", str(config), "--socket-dir", str(empty)], picks, args.runs
        )
        sql_ms = in_process_query(db_path, picks, args.runs)
        cost = add_cost(db_path, args.adds)
        pruned, prune_ms, prune_writes = prune_cost(db_path, 10_000)

        def p(values: Sequence[float]) -> str:
            return f"p50 {percentile(values, 0.5):6.1f} ms  p95 {percentile(values, 0.95):6.1f} ms"

        print(f"multusctl: the launcher {ctl[0]} (python -I -S); console script: {' '.join(console)}")
        print(f"multusctl --help (argparse)                   {p(help_ms)}")
        print(
            f"multusctl history --pod NS/NAME (query API)   {p(paired.launcher)}   "
            f"({paired.lines} lines shown, each pod asked once before; {len(paired.launcher)} runs)"
        )
        print(f"  bare start: python -I -S -c pass            {p(paired.bare)}")
        print(f"  the daemon's answer alone (same pods)       {p(paired.answer)}")
        print(f"  the same with the console script (site)     {p(paired.console)}")
        print(f"multusctl history --pod NS/NAME (file, ro)    {p(file_ms)}   ({file_lines} lines shown)")
        print(f"  the same pod again                          {p(file_again)}")
        print(f"  the same query in process (SQL + documents) {p(sql_ms)}")
        floor = percentile(paired.bare, 0.5) + percentile(paired.answer, 0.5)
        ratio = percentile(paired.launcher, 0.5) / floor
        console_ratio = percentile(paired.console, 0.5) / floor
        verdict = "meets" if ratio <= START_RATIO_TARGET else "MISSES"
        bare_p50, answer_p50 = percentile(paired.bare, 0.5), percentile(paired.answer, 0.5)
        print(
            f"multusctl history --pod / (bare start {bare_p50:.1f} ms + the answer {answer_p50:.1f} ms"
            f" = {floor:.1f} ms): {ratio:.2f}, {verdict} the target <= {START_RATIO_TARGET} "
            f"(console script: {console_ratio:.2f})"
        )
        launcher_cpu, bare_cpu = percentile(paired.launcher_cpu, 0.5), percentile(paired.bare_cpu, 0.5)
        print(
            f"  CPU (utime + stime) p50: the launcher {launcher_cpu:.1f} ms, the bare start "
            f"{bare_cpu:.1f} ms: multusctl's own work {launcher_cpu - bare_cpu:+.1f} ms"
        )
        print(
            f"history in a 3-network ADD: {cost['writer_ms']:.3f} ms of writer time for its 4 lines; "
            f"the ADD's 4 commits p50 {cost['with']:.2f} ms with history, {cost['without']:.2f} ms without "
            f"(+{cost['with'] - cost['without']:.2f} ms)"
        )
        if prune_writes:
            print(
                f"retention pass deleting {pruned:,} lines: {prune_ms:.0f} ms in {len(prune_writes)} writes "
                f"of {retention.BATCH}: write p50 {percentile(prune_writes, 0.5):.1f} ms, "
                f"longest {max(prune_writes):.1f} ms"
            )
        else:
            print("retention pass: nothing to delete (too few history lines)")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
