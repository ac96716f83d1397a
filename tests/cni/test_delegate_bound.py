"""maxConcurrentDelegates: at most N plugin processes at once, waiters in arrival order, queue time recorded.

A plugin that records how many of its kind run at once, and blocks until the test releases it, makes
the bound observable without timing: the test waits until the bound is reached, checks who waits,
then lets everything finish and reads the peak the plugins themselves saw.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from app import metrics
from app.cni import api, conf, invoke
from app.cni.types import ContainerId, IfName, RuntimeConf

GAUGE_PLUGIN = r"""
import fcntl, json, os, sys, time
config = json.loads(sys.stdin.buffer.read())
settings = config["gauge"]

def update(delta):
    # under a lock file; the state is replaced whole, so a reader never sees half of it
    with open(settings["state"] + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(settings["state"]) as handle:
                data = json.load(handle)
        except FileNotFoundError:
            data = {"running": 0, "peak": 0, "started": []}
        data["running"] += delta
        data["peak"] = max(data["peak"], data["running"])
        if delta > 0:
            data["started"].append(os.environ["CNI_CONTAINERID"])
        with open(settings["state"] + ".new", "w") as handle:
            handle.write(json.dumps(data))
        os.replace(settings["state"] + ".new", settings["state"])

update(1)
deadline = time.monotonic() + 120
while not os.path.exists(settings["release"]) and time.monotonic() < deadline:
    time.sleep(0.01)
update(-1)
print(json.dumps({"cniVersion": config["cniVersion"]}))
"""


def _sample(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


async def _until(condition: Any, what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_burst_never_runs_more_plugins_than_the_bound_and_every_wait_is_recorded(
    tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gauge").write_text(f"#!{sys.executable} -IS\n{GAUGE_PLUGIN}")
    (bin_dir / "gauge").chmod(0o755)
    state, release = tmp_path / "gauge.json", tmp_path / "release"
    net = conf.load_network_list(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "gauged",
                "plugins": [{"type": "gauge", "gauge": {"state": str(state), "release": str(release)}}],
            }
        ).encode(),
        source="test",
    )
    executor = invoke.SubprocessExec(max_running=2)
    cni = api.CniConfig(path=(str(bin_dir),), timeout=120.0, exec=executor)
    queued_before = _sample("multus_py_delegate_queue_seconds_count")
    waited_before = _sample("multus_py_delegate_queue_seconds_sum")

    def running() -> int:
        return int(json.loads(state.read_text())["running"]) if state.exists() else 0

    async def add(index: int) -> Any:
        rt = RuntimeConf(
            container_id=ContainerId(f"burst-{index}"), netns="/var/run/netns/x", ifname=IfName("eth0")
        )
        return await api.add_network_list(cni=cni, net=net, rt=rt)

    burst = [asyncio.create_task(add(index)) for index in range(7)]
    await _until(lambda: running() == 2 and executor.slots.waiting == 5, "2 plugins running and 5 waiting")

    assert _sample("multus_py_delegates_running") == 2
    assert _sample("multus_py_delegates_waiting") == 5
    release.touch()
    results = await asyncio.gather(*burst)

    final = json.loads(state.read_text())
    assert len(results) == 7
    assert (final["peak"], final["running"]) == (2, 0)
    assert sorted(final["started"]) == sorted(f"burst-{index}" for index in range(7))
    assert set(final["started"][2:]) == {f"burst-{index}" for index in range(2, 7)}
    assert (executor.slots.running, executor.slots.waiting) == (0, 0)
    assert _sample("multus_py_delegate_queue_seconds_count") - queued_before == 7
    assert _sample("multus_py_delegate_queue_seconds_sum") > waited_before  # five of them waited
    assert _sample("multus_py_delegates_running") == 0


async def test_waiters_get_slots_in_arrival_order_and_a_cancelled_one_holds_none() -> None:
    slots = invoke.DelegateSlots(1)
    order: list[str] = []
    hold = asyncio.Event()

    async def use(name: str, wait: asyncio.Event | None = None) -> None:
        async with slots.slot():
            order.append(name)
            if wait is not None:
                await wait.wait()

    holder = asyncio.create_task(use("holder", hold))
    await asyncio.sleep(0)
    waiters = {name: asyncio.create_task(use(name)) for name in ("w1", "w2", "w3", "w4")}
    await asyncio.sleep(0)
    assert (slots.running, slots.waiting) == (1, 4)
    waiters["w2"].cancel()
    await asyncio.sleep(0)
    assert slots.waiting == 3

    hold.set()
    late = asyncio.create_task(use("late"))  # arrives after the release: must not overtake anyone
    await asyncio.gather(holder, late, *(task for name, task in waiters.items() if name != "w2"))

    assert order == ["holder", "w1", "w3", "w4", "late"]
    assert (slots.running, slots.waiting) == (0, 0)


async def test_a_del_waits_only_behind_earlier_dels_not_behind_queued_adds() -> None:
    slots = invoke.DelegateSlots(1)
    order: list[str] = []
    hold = asyncio.Event()

    async def use(name: str, *, first: bool = False, wait: asyncio.Event | None = None) -> None:
        async with slots.slot(first=first):
            order.append(name)
            if wait is not None:
                await wait.wait()

    holder = asyncio.create_task(use("holder", wait=hold))
    await asyncio.sleep(0)
    queued = [asyncio.create_task(use(name)) for name in ("add1", "add2")]
    queued += [asyncio.create_task(use(name, first=True)) for name in ("del1", "del2")]
    queued.append(asyncio.create_task(use("add3")))
    await asyncio.sleep(0)
    assert (slots.running, slots.waiting) == (1, 5)
    queued[2].cancel()  # del1 gives up its place: it holds none
    await asyncio.sleep(0)

    hold.set()
    await asyncio.gather(holder, *(task for index, task in enumerate(queued) if index != 2))

    assert order == ["holder", "del2", "add1", "add2", "add3"]
    assert (slots.running, slots.waiting) == (0, 0)


async def test_without_a_bound_nothing_waits() -> None:
    slots = invoke.DelegateSlots(0)
    entered = 0

    async def use() -> None:
        nonlocal entered
        async with slots.slot():
            entered += 1
            await asyncio.sleep(0)

    await asyncio.gather(*(use() for _ in range(50)))
    assert entered == 50
    assert (slots.running, slots.waiting) == (0, 0)
