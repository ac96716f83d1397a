"""``python -m bench.parallel``: ADD with 4 networks, delegates one after another vs ``parallelDelegates``.

Each network is a bridge followed by ``sleep``, a tiny plugin of this benchmark that waits a fixed
time (``--delay-ms``) at ADD and at DEL and passes its ``prevResult`` on, so the delegates take long
enough for the difference to show. Prints ADD and DEL p50/p95 for both modes and the ratios of the
p50s (a sandbox added in parallel is deleted in parallel too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from bench.__main__ import percentile, run_sequential
from bench.node import BenchNode

SLEEP_PLUGIN = """#!{python} -IS
import json, os, sys, time
conf = json.loads(sys.stdin.buffer.read() or b"{{}}")
command = os.environ.get("CNI_COMMAND", "")
if command == "VERSION":
    print(json.dumps({{"cniVersion": conf.get("cniVersion", "1.0.0"),
                      "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}}))
    sys.exit(0)
if command in ("ADD", "DEL"):
    time.sleep(conf.get("sleepMs", 0) / 1000)
if command == "ADD":
    print(json.dumps(conf.get("prevResult") or {{"cniVersion": conf.get("cniVersion")}}))
"""


def _node(*, networks: int, parallel: bool, delay_ms: int) -> BenchNode:
    node = BenchNode(networks=networks)
    node.prepare()
    plugin = node.bin_dir / "sleep"
    plugin.write_text(SLEEP_PLUGIN.format(python=sys.executable))
    plugin.chmod(0o755)
    conf_dir = node.root / "multus.d"
    for index, conf in enumerate(node.confs):
        conf["plugins"].append({"type": "sleep", "sleepMs": delay_ms})
        (conf_dir / f"{10 + index}-net{index}.conflist").write_text(json.dumps(conf))
    config_path = node.root / "daemon-config.json"
    config = json.loads(config_path.read_text())
    config["parallelDelegates"] = parallel
    config_path.write_text(json.dumps(config))
    return node


def bench_mode(*, networks: int, parallel: bool, delay_ms: int, pods: int) -> tuple[list[float], list[float]]:
    node = _node(networks=networks, parallel=parallel, delay_ms=delay_ms)
    try:
        node.start_daemon()
        time.sleep(0.5)
        timed_pods = node.make_pods(pods)
        run_sequential(node, timed_pods[:3], "multus")  # warm-up
        return run_sequential(node, timed_pods, "multus")
    finally:
        node.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.parallel", description=__doc__)
    parser.add_argument("--networks", type=int, default=4)
    parser.add_argument(
        "--delay-ms", type=int, default=100, help="how long each network's sleep plugin waits"
    )
    parser.add_argument("--pods", type=int, default=20, help="pods timed one by one, per mode")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root")
    print(
        f"multus-py parallel delegates: {os.cpu_count()} CPUs, {args.networks} networks "
        f"(bridge + {args.delay_ms} ms sleep each), times in ms (p50 p95)"
    )
    p50: dict[bool, float] = {}
    del_p50: dict[bool, float] = {}
    for parallel in (False, True):
        adds, dels = bench_mode(
            networks=args.networks, parallel=parallel, delay_ms=args.delay_ms, pods=args.pods
        )
        mode = "parallel  " if parallel else "sequential"
        p50[parallel] = percentile(adds, 0.5)
        del_p50[parallel] = percentile(dels, 0.5)
        print(
            f"{mode}  ADD {percentile(adds, 0.5):7.1f} {percentile(adds, 0.95):7.1f}  "
            f"DEL {percentile(dels, 0.5):7.1f} {percentile(dels, 0.95):7.1f}",
            flush=True,
        )
    print(f"ADD p50 parallel / sequential: {p50[True] / p50[False]:.2f}")
    print(f"DEL p50 parallel / sequential: {del_p50[True] / del_p50[False]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
