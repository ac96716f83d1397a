"""Fuzzing a running daemon over its socket: malformed HTTP, envelopes, CNI variables, CNI_ARGS
and shim configurations, from a seeded generator bounded in inputs and time.

For every input: a CNI error object (never code 999) or a success within the socket bound, the
daemon alive, nothing recorded or attached after a failed ADD, and the runtime's DEL that follows
succeeding with nothing left (checkpoint, interfaces, leases). Prints a one-line summary (run with
``-s``) and writes it to ``fuzz-summary.json`` in the test's directory. ``MULTUS_FUZZ_SEED`` and
``MULTUS_FUZZ_INPUTS`` replay or widen a run. NAD and annotation inputs are not fuzzed here.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from collections import Counter
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, new_container_id
from tests.e2e.test_hostile_requests import envelope, exchange, http_post, recorded, runtime_env

pytestmark = [
    pytest.mark.slow,  # starts daemon processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]

DEFAULT_SEED = 20261205
DEFAULT_INPUTS = 100
TIME_BUDGET_SECONDS = 35.0
"""Inputs stop being generated after this (the run then finishes the current one)."""
SOCKET_BOUND_SECONDS = 60.0
"""Each answer must arrive within this."""

HOSTILE_TEXT = [
    "",
    " ",
    ".",
    "..",
    "/",
    "\x00",
    "a\x00b",
    "\udcff",
    "\ud800",
    "x\udc80y",
    "\x1b[31m",
    "\n",
    "\t",
    "eth0\x01",
    "\x7f",
    "\x85",
    "é",
    "日本",
    "\u202e",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "a" * 16,
    "a" * 300,
    "a" * 5000,
    "=",
    ";",
    "==;;",
    "../../etc/passwd",
    "${HOME}",
    "%s%n",
    "-1",
    "null",
    "{}",
    "/var/run/netns/",
    "/nonexistent/netns",
    "relative/path",
    "eth0",
    "net1",
    "abc123",
    "Default",
    "K8S_POD_NAME",
]
JSON_SCALARS: list[Any] = [None, True, False, 0, -1, 2**64, 1.5, float("nan"), float("inf"), "", "x"]
CONF_KEYS = [
    "cniVersion",
    "name",
    "type",
    "runtimeConfig",
    "capabilities",
    "args",
    "prevResult",
    "defaultNetworks",
    "namespaceIsolation",
    "globalNamespaces",
    "logLevel",
    "cni.dev/valid-attachments",
    "unknownKey",
]
COMMANDS = ["ADD"] * 6 + ["DEL", "CHECK", "GC", "STATUS", "VERSION", "add", "", "\udcff"]


class Fuzzer:
    """Generates one hostile input per call; ``kind`` names the family for the summary."""

    def __init__(self, rng: random.Random, cluster: Cluster) -> None:
        self.rng = rng
        self.cluster = cluster

    def text(self) -> str:
        rng = self.rng
        choice = rng.random()
        if choice < 0.6:
            return rng.choice(HOSTILE_TEXT)
        if choice < 0.85:
            return rng.choice(HOSTILE_TEXT) + rng.choice(HOSTILE_TEXT)
        alphabet = [
            chr(
                rng.choice(
                    [rng.randrange(0, 0x80), rng.randrange(0x80, 0xD800), rng.randrange(0xD800, 0xE000)]
                )
            )
        ]
        return "".join(alphabet * rng.randrange(1, 20))

    def json_value(self, depth: int = 0) -> Any:
        rng = self.rng
        roll = rng.random()
        if depth > 3 or roll < 0.5:
            return rng.choice([*JSON_SCALARS, self.text()])
        if roll < 0.75:
            return [self.json_value(depth + 1) for _ in range(rng.randrange(0, 4))]
        return {self.text(): self.json_value(depth + 1) for _ in range(rng.randrange(0, 4))}

    def cni_args(self) -> str:
        rng = self.rng
        keys = [
            "K8S_POD_NAME",
            "K8S_POD_NAMESPACE",
            "K8S_POD_UID",
            "IgnoreUnknown",
            "IP",
            "K8S_POD_INFRA_CONTAINER_ID",
        ]
        items = []
        for _ in range(rng.randrange(0, 5)):
            key = rng.choice([*keys, self.text()])
            value = rng.choice(["default", "pod-a", "1", self.text()])
            items.append(rng.choice([f"{key}={value}", key, f"{key}=={value}", ""]))
        return rng.choice([";", ";;", "; "]).join(items)

    def case(self, container: str, netns: str) -> tuple[str, str, bytes, bool]:
        """(kind, command, raw bytes to send, whether they stop short of what they announce) for
        the sandbox ``container`` in ``netns``. Short inputs are followed by a half-close, as a
        client that never sends the rest would otherwise only get its answer after the body
        timeout."""
        rng = self.rng
        env = runtime_env(self.cluster, container, netns)
        conf: dict[str, Any] | bytes = self.cluster.shim_conf()
        command = "ADD"
        kind = rng.choice(
            ["variable", "variable", "cni_args", "cni_args", "config", "config", "envelope", "http"]
        )
        if kind == "variable":
            for _ in range(rng.randrange(1, 3)):
                name = rng.choice(
                    ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH", "CNI_COMMAND"]
                )
                if rng.random() < 0.15:
                    env.pop(name, None)
                elif name == "CNI_COMMAND":
                    command = rng.choice(COMMANDS)
                else:
                    env[name] = self.text()
        elif kind == "cni_args":
            env["CNI_ARGS"] = self.cni_args()
        elif kind == "config":
            mutated = dict(self.cluster.shim_conf())
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.choice(CONF_KEYS)] = self.json_value()
            if rng.random() < 0.2:
                depth = rng.choice([65, 500, 5000, 50_000])
                conf = (json.dumps(mutated)[:-1] + f', "deep": {"[" * depth}{"]" * depth}}}').encode()
            else:
                conf = json.dumps(mutated).encode()
        body = envelope(self.cluster, command, env, conf)
        if kind == "envelope":
            body = rng.choice(
                [
                    b"",
                    b"null",
                    b"[]",
                    b'{"env": [], "config": ""}',
                    b'{"env": {"CNI_COMMAND": 5}, "config": "e30="}',
                    b'{"env": {}, "config": "%%%"}',
                    body.replace(b'"config"', b'"config":"\\udcff", "x"'),
                    body[: rng.randrange(0, len(body))],
                    body + b"trailing",
                    b"\xff\xfe" + body,
                    body.replace(b"CNI_", b"\xffCNI_", 1),
                    b'{"env": {}, "config": "' + base64.b64encode(b"\xff\x00{") + b'"}',
                    b'{"x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
                    bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))),
                ]
            )
        data = http_post(body)
        short = False
        if kind == "http":
            truncated = data[: rng.randrange(1, len(data))]
            longer = http_post(body, content_length=len(body) + rng.randrange(1, 100))
            variants = [
                b"GARBAGE\r\n\r\n",
                bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))),
                longer,
                http_post(body, content_length=max(0, len(body) - rng.randrange(1, 50))),
                data + b"GARBAGE \x00\xff\r\n\r\n",
                data + data,
                data.replace(b"POST /cni", b"PUT /cni", 1),
                data.replace(b"POST /cni", b"POST /" + self.text().encode("utf-8", "surrogatepass"), 1),
                data.replace(b"Host: dummy", b"Host: \x00\xff", 1),
                data.replace(b"Content-Length", b"Transfer-Encoding: chunked\r\nX", 1),
                truncated,
            ]
            data = rng.choice(variants)
            short = data in (truncated, longer, variants[1], variants[-2])  # chunked: no end chunk
        return kind, command, data, short


def test_fuzzed_requests_never_crash_never_999_and_never_leave_anything(started: Any, tmp_path: Any) -> None:
    cluster: Cluster = started()
    seed = int(os.environ.get("MULTUS_FUZZ_SEED", DEFAULT_SEED))
    inputs = int(os.environ.get("MULTUS_FUZZ_INPUTS", DEFAULT_INPUTS))
    rng = random.Random(seed)
    fuzzer = Fuzzer(rng, cluster)
    netns = cluster.new_netns()
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    crashes = leaks = 0
    samples: dict[str, list[str]] = {}
    slowest = (0.0, "")
    began = time.monotonic()
    sent = 0
    while sent < inputs:
        sent += 1
        container = new_container_id()
        kind, command, data, short = fuzzer.case(container, netns.path)
        kinds[kind] += 1
        context = f"seed={seed} input={sent} kind={kind}: {data[:300]!r}"

        half_close = short or rng.random() < 0.3
        asked = time.monotonic()
        status, body = exchange(cluster, data, half_close=half_close, timeout=SOCKET_BOUND_SECONDS)
        slowest = max(slowest, (round(time.monotonic() - asked, 2), f"input {sent} ({kind})"))

        if status in (404, 405):
            outcomes[f"http-{status}"] += 1
        elif status == 200:
            outcomes["ok"] += 1
        else:
            error = json.loads(body)
            assert isinstance(error.get("code"), int), context
            assert isinstance(error.get("msg"), str), context
            assert error["msg"], context
            assert error["code"] != 999, f"{context}: {error}"
            outcomes[f"code-{error['code']}"] += 1
            samples.setdefault(f"code-{error['code']}", []).append(error["msg"][:160])
        if cluster.daemon is None or cluster.daemon.poll() is not None:
            crashes += 1
            raise AssertionError(f"the daemon died on {context}:\n{cluster.daemon_log.read_text()[-3000:]}")
        if command == "ADD" and status != 200:
            assert recorded(cluster) == (0, 0), f"a failed ADD left a record: {context}"
            assert netns.links() == {"lo"}, f"a failed ADD left an interface: {context}"
        # The runtime's DEL, with the same variables as the input (and the node's conf): it must
        # terminate whatever they hold.
        replayed = _runtime_del(cluster, data)
        if replayed is not None:
            deleted, answer = cluster.post("/cni", replayed)
            assert deleted == 200, f"the runtime's DEL after {context}: {answer!r}"
        # The DEL for the sandbox (also for an ADD that succeeded under an odd but valid name).
        for deleting in {container, _effective_container(data, container)}:
            deleted, answer = cluster.post(
                "/cni", envelope(cluster, "DEL", runtime_env(cluster, deleting, netns))
            )
            assert deleted == 200, f"DEL after {context}: {answer!r}"
        if recorded(cluster) != (0, 0) or netns.links() - {"lo"} or cluster.leases():
            leaks += 1
        if time.monotonic() - began > TIME_BUDGET_SECONDS:
            break

    errors = {key: value for key, value in sorted(outcomes.items()) if key.startswith("code-")}
    summary = {
        "seed": seed,
        "inputs": sent,
        "kinds": dict(sorted(kinds.items())),
        "ok": outcomes["ok"],
        "errorsByCode": errors,
        "http": {key: value for key, value in outcomes.items() if key.startswith("http-")},
        "crashes": crashes,
        "leaks": leaks,
        "seconds": round(time.monotonic() - began, 1),
        "slowestAnswer": slowest,
    }
    (tmp_path / "fuzz-summary.json").write_text(json.dumps({**summary, "sampleMessages": samples}, indent=1))
    print(f"\nfuzz summary: {json.dumps(summary)}")
    assert leaks == 0, summary
    assert "code-999" not in errors


def _effective_container(data: bytes, fallback: str) -> str:
    """The container ID an input named, when it is one the spec allows (an ADD may have used it)."""
    try:
        body = data.split(b"\r\n\r\n", 1)[1]
        named = json.loads(body)["env"]["CNI_CONTAINERID"]
    except (IndexError, ValueError, KeyError, TypeError, RecursionError):
        return fallback
    valid = isinstance(named, str) and named[:1].isalnum() and named.isascii()
    return named if valid and all(char.isalnum() or char in "_.-" for char in named) else fallback


def _runtime_del(cluster: Cluster, data: bytes) -> bytes | None:
    """The DEL a runtime sends after the input: its variables, ``CNI_COMMAND=DEL``, the node's
    conf; None when the input carries no environment."""
    try:
        env = json.loads(data.split(b"\r\n\r\n", 1)[1])["env"]
    except (IndexError, ValueError, KeyError, TypeError, RecursionError):
        return None
    if not isinstance(env, dict) or not all(isinstance(value, str) for value in env.values()):
        return None
    return envelope(cluster, "DEL", {**env, "CNI_COMMAND": "DEL"})
