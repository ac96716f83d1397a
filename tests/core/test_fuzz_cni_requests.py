"""Random invalid CNI requests, through the daemon's ``/cni`` handler to the engine and real plugins.

The promise: no input the CNI spec calls invalid ever yields code 999, an HTTP 500 or a traceback;
the answer is a CNI error with a code the spec allows for the verb, a refused ADD leaves nothing
recorded (no sandbox in the checkpoint, no interface in the netns, no host-local lease), a DEL
succeeds (invariant 5b), and the server serves on: a valid ADD, CHECK and DEL work afterwards.

Each example starts from a valid request of one verb (ADD of a fresh container, DEL of a fresh
container, CHECK of a running sandbox with its ADD result as ``prevResult``, GC listing that
sandbox, STATUS) and mutates its environment (``CNI_*`` variables missing or holding what the
spec's rules refuse) and its Multus conf (each key the daemon reads, nested ones too, given every
JSON type, huge numbers, ``NaN``, nesting past the bound, bytes that are not UTF-8, a duplicate
key, a top level that is no object). ``CniServer.handle`` runs on aiohttp's test server in front
of a real engine and store; the cluster network is the bridge plugin with host-local IPAM.

CI runs a fixed, derandomized set of examples. To hunt further, set ``MULTUS_PY_FUZZ_EXAMPLES``
(e.g. 3000): that many examples from a random seed.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import resource
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import RawTestServer, TestClient
from aiohttp.web import BaseRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cni import conf as cniconf
from app.cni.types import CniError, ErrorCode
from app.daemon.server import CniServer, Readiness
from tests.core.support import Netns, Node

CI_EXAMPLES = 60
EXAMPLES = int(os.environ.get("MULTUS_PY_FUZZ_EXAMPLES", CI_EXAMPLES))

COMMON_CODES = frozenset({1, 2, 4, 5, 6, 7, 11})
"""Codes the spec gives any verb for a request it refuses (code 3 and 8 only where they apply)."""
ALLOWED_CODES = {
    "ADD": COMMON_CODES | {8},  # 8: CNI_NETNS is the daemon's own namespace (the Go library's code)
    "CHECK": COMMON_CODES | {3, 8, 100, 101, 102},  # 100+: our CHECK's findings (app.attach.errors)
    "GC": COMMON_CODES,
    "STATUS": COMMON_CODES | {50, 51},
}
CLUSTER = "cluster"


@dataclass(frozen=True)
class Raw:
    """JSON text put in the conf as is: what ``json.dumps`` cannot write (``NaN``, ``1e999``,
    bytes that are not UTF-8, nesting past any bound)."""

    text: bytes


@dataclass(frozen=True)
class Case:
    """One request: a verb's valid request, then these changes."""

    verb: str
    env_changes: tuple[tuple[str, str | None], ...]
    conf_changes: tuple[tuple[tuple[str | int, ...], object], ...]
    """(path, value): the value set at the path (``None`` there is JSON null; ``_DELETE`` removes)."""
    duplicate: tuple[str, object] | None
    whole: bytes | None
    """The conf's bytes replaced whole (not an object, not JSON at all)."""


_DELETE = Raw(b"<delete>")


def _deep(depth: int, opener: bytes, closer: bytes) -> Raw:
    return (
        Raw(opener * depth + b"1" + closer * depth)
        if opener == b"["
        else Raw(b'{"a":' * depth + b"1" + b"}" * depth)
    )


RAW_VALUES = st.sampled_from(
    [
        Raw(b"1e999"),
        Raw(b"-1e400"),
        Raw(b"NaN"),
        Raw(b"-Infinity"),
        Raw(b"123456789012345678901234567890123456789"),
        Raw(b"1.7976931348623157e308"),
        Raw(b"-0"),
        Raw(b"4.5e-400"),
        Raw(b'"\\ud800"'),
        Raw(b'"a\\u0000b"'),
        Raw(b'"\xff\xfe"'),
        Raw(b'"\xc3\x28"'),
        Raw(b'"\xed\xa0\x80"'),
        _deep(63, b"[", b"]"),
        _deep(65, b"[", b"]"),
        _deep(63, b"{", b"}"),
        _deep(65, b"{", b"}"),
        _deep(5000, b"[", b"]"),
        _deep(100000, b"[", b"]"),
    ]
)
PLAUSIBLE_STRINGS = st.sampled_from(
    [
        "",
        CLUSTER,
        "1.0.0",
        "0.4.0",
        "0.3.1",
        "0.2.0",
        "0.1.0",
        "1.1.0",
        "99.0.0",
        "x.y",
        "/",
        "/nonexistent",
        "/dev/null",
        "/dev/zero",
        "/dev",
        "/proc/self/ns/net",
        ".",
        "..",
        "../etc",
        "bridge",
        "multus-shim",
        "a/b",
        "debug",
        "verbose",
        "panic",
        "true",
        "10.77.3.3/16",
        "10.77.3.4",
        "00:11:22:33:44:55",
        "eth0",
        "é",
        "\u2028",
        "\x00",
        "a" * 300,
        "0a:58:0a:4d:00:99",
    ]
)
PLAUSIBLE_OBJECTS = st.sampled_from(
    [
        {"cniVersion": "1.0.0", "name": "inline", "type": "loopback"},
        {"cniVersion": "1.0.0", "name": "inline", "type": "bridge"},
        {"name": "inline", "type": "../../bin/true"},
        {"name": "inline", "type": "multus-shim"},
        {"name": "inline", "plugins": [{"type": "loopback"}]},
        {"cniVersion": "1.0.0", "name": "inline", "plugins": []},
        {"type": "loopback"},
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"ingressRate": 1, "ingressBurst": 1},
        {"containerID": "abc", "ifname": "eth0"},
        {"cniVersion": "0.2.0", "ip4": {"ip": "10.77.0.9/16"}},
        {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}], "ips": []},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.77.0.9/16", "interface": 99}]},
    ]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | PLAUSIBLE_STRINGS
    | PLAUSIBLE_OBJECTS
    | st.lists(PLAUSIBLE_STRINGS, min_size=1, max_size=2),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6) | PLAUSIBLE_STRINGS, children, max_size=3)
    ),
    max_leaves=6,
)
VALUES = JSON_VALUES | RAW_VALUES | st.just(_DELETE)

TOP_KEYS = [
    "cniVersion",
    "name",
    "type",
    "delegates",
    "clusterNetwork",
    "defaultNetworks",
    "runtimeConfig",
    "capabilities",
    "logLevel",
    "logFile",
    "logToStderr",
    "logOptions",
    "namespaceIsolation",
    "globalNamespaces",
    "multusNamespace",
    "systemNamespaces",
    "confDir",
    "binDir",
    "cniDir",
    "kubeconfig",
    "readinessindicatorfile",
    "auxiliaryCNIChainName",
    "maxNetworksPerPod",
    "prevResult",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
    "args",
    "daemonSocketDir",
    "spoolDir",
    "retryDeleteOnError",
    "",
]
CAPABILITIES = [
    "portMappings",
    "bandwidth",
    "ips",
    "mac",
    "dns",
    "deviceID",
    "infinibandGUID",
    "aliases",
    "cgroupPath",
    "ipRanges",
    "CNIDeviceInfoFile",
]
NESTED_PATHS: list[tuple[str | int, ...]] = [
    *(("runtimeConfig", name) for name in CAPABILITIES),
    *(("capabilities", name) for name in CAPABILITIES),
    ("runtimeConfig", "portMappings", 0, "hostPort"),
    ("runtimeConfig", "bandwidth", "ingressRate"),
    ("delegates", 0),
    ("delegates", 0, "type"),
    ("delegates", 0, "name"),
    ("delegates", 0, "cniVersion"),
    ("delegates", 0, "plugins"),
    ("delegates", 0, "ipam"),
    ("delegates", 0, "prevResult"),
    ("delegates", 0, "dns"),
    ("defaultNetworks", 0),
    ("prevResult", "cniVersion"),
    ("prevResult", "interfaces"),
    ("prevResult", "interfaces", 0),
    ("prevResult", "interfaces", 0, "name"),
    ("prevResult", "interfaces", 0, "mac"),
    ("prevResult", "interfaces", 0, "sandbox"),
    ("prevResult", "interfaces", 0, "mtu"),
    ("prevResult", "ips"),
    ("prevResult", "ips", 0),
    ("prevResult", "ips", 0, "address"),
    ("prevResult", "ips", 0, "gateway"),
    ("prevResult", "ips", 0, "interface"),
    ("prevResult", "ips", 0, "version"),
    ("prevResult", "routes"),
    ("prevResult", "routes", 0, "dst"),
    ("prevResult", "dns"),
    ("prevResult", "dns", "nameservers"),
    ("prevResult", "ip4"),
    ("prevResult", "ip4", "ip"),
    ("cni.dev/valid-attachments", 0),
    ("cni.dev/valid-attachments", 0, "containerID"),
    ("cni.dev/valid-attachments", 0, "ifname"),
    ("args", "cni", "ips"),
    ("args", "cni", "labels"),
]
PATHS = st.sampled_from([(key,) for key in TOP_KEYS] + NESTED_PATHS) | st.tuples(st.text(max_size=8))

ENV_VALUES: dict[str, list[str]] = {
    "CNI_COMMAND": ["", "add", "Add", " ADD", "ADD ", "FROB", "VERSION", "ADD\x00", "\udcff", "A" * 500],
    "CNI_CONTAINERID": [
        *("", "-abc", "_a", "a b", "a/b", "a:b", "é", "a\x00", "a\n", "\udcff", "a" * 5000),
        *("zero", "urandom", "stdin"),  # valid, and the name of an endless file under cniDir /dev
    ],
    "CNI_NETNS": [
        "",
        "relative/ns",
        "/nonexistent/ns",
        "/proc/self/ns/net",
        "/proc/self/ns/mnt",
        "/proc/1/ns/net",
        "/",
        "/dev/null",
        "/etc/hostname",
        "/var/run/netns/",
        "/x\x00y",
        "/x\ny",
        "/\udcff",
        "/" + "a" * 5000,
    ],
    "CNI_IFNAME": [
        "",
        ".",
        "..",
        "a/b",
        "a:b",
        "a b",
        "a\tb",
        "x" * 16,
        "é" * 8,
        "eth%d",
        "net\x01",
        "\udcff",
        "a\u00a0b",
        "eth0\n",
        "lo",
        "net7",
        "-",
        "ñ",
    ],
    "CNI_ARGS": [
        "",
        ";",
        ";;",
        "a",
        "=",
        "=x",
        "a=b=c",
        "FOO=bar",
        "IgnoreUnknown=maybe;FOO=bar",
        "IgnoreUnknown=1;K8S_POD_NAME=Bad_Name",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + "a" * 64,
        "IgnoreUnknown=1;K8S_POD_UID=" + "u" * 300,
        "IgnoreUnknown=1;IP=notanip",
        "IgnoreUnknown=1;IP=10.1.1.300",
        "IgnoreUnknown=1;IP=10.0.0.1/33",
        "IgnoreUnknown=1;IP=",
        "IgnoreUnknown=1;MAC=zz",
        "IgnoreUnknown=1;MAC=",
        "a=b\n",
        "a=\x00",
        "a=\udcff",
        "K8S_POD_NAME=p;K8S_POD_NAME=q",
    ],
    "CNI_PATH": ["", "relative", "/nonexistent", "/", "a:b", "\x00", "\udcff"],
}
ENV_CHANGES = st.lists(
    st.sampled_from(sorted(ENV_VALUES)).flatmap(
        lambda name: st.tuples(
            st.just(name),
            st.none() | st.sampled_from(ENV_VALUES[name]) | st.text(max_size=20),
        )
    ),
    max_size=2,
)
WHOLE_CONFS = st.sampled_from(
    [b"", b"null", b"[]", b'"x"', b"1", b"{", b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"{}garbage"]
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    verb = draw(st.sampled_from(["ADD", "ADD", "ADD", "DEL", "CHECK", "CHECK", "GC", "STATUS"]))
    whole = draw(st.none() | WHOLE_CONFS) if draw(st.integers(0, 9)) == 0 else None
    duplicate = draw(st.tuples(st.sampled_from(TOP_KEYS), VALUES)) if draw(st.integers(0, 5)) == 0 else None
    return Case(
        verb=verb,
        env_changes=tuple(draw(ENV_CHANGES)),
        conf_changes=tuple(draw(st.lists(st.tuples(PATHS, VALUES), max_size=3))),
        duplicate=duplicate,
        whole=whole,
    )


# ---- building requests ----------------------------------------------------------------------------


def _set(document: dict[str, Any], path: tuple[str | int, ...], value: object) -> None:
    """Put ``value`` at ``path``, making the objects and lists on the way (``_DELETE``: remove)."""
    holder: Any = document
    for step, following in itertools.pairwise(path):
        fresh: Any = [] if isinstance(following, int) else {}
        if isinstance(step, int):
            if not isinstance(holder, list) or not holder:
                return  # the parent was replaced by something else: nothing to reach
            if not isinstance(holder[0], type(fresh)):
                holder[0] = fresh
            holder = holder[0]
        else:
            if not isinstance(holder.get(step), type(fresh)):
                holder[step] = fresh
            holder = holder[step]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(holder, list):
            return
        if value is _DELETE:
            holder.clear()
        elif holder:
            holder[0] = value
        else:
            holder.append(value)
    elif not isinstance(holder, dict):
        return
    elif value is _DELETE:
        holder.pop(last, None)
    else:
        holder[last] = value


def _encode(document: object, raws: list[bytes]) -> bytes:
    """JSON of ``document`` with each ``Raw`` written as its text."""

    def placeholder(value: object) -> object:
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"@@raw{len(raws) - 1}@@"
        raise TypeError(type(value))

    text = json.dumps(document, default=placeholder).encode()
    for index, raw in enumerate(raws):
        text = text.replace(f'"@@raw{index}@@"'.encode(), raw)
    return text


def _conf_bytes(base: dict[str, Any], case: Case) -> bytes:
    if case.whole is not None:
        return case.whole
    document = json.loads(json.dumps(base))
    for path, value in case.conf_changes:
        _set(document, path, value)
    raws: list[bytes] = []
    text = _encode(document, raws)
    if case.duplicate is not None and text.endswith(b"}") and len(text) > 2:
        key, value = case.duplicate
        text = text[:-1] + b"," + _encode({key: value}, raws)[1:]
    return text


def _body(env: dict[str, str], conf: bytes) -> bytes:
    return json.dumps({"env": env, "config": base64.b64encode(conf).decode()}).encode()


# ---- the node --------------------------------------------------------------------------------------


class _Tracebacks(logging.Handler):
    """Every log record that carries a traceback."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


def fuzz_on_one_loop(
    values: st.SearchStrategy[Any],
    *,
    start: Callable[[], Coroutine[Any, Any, None]],
    example: Callable[[Any], Coroutine[Any, Any, object]],
    afterwards: Callable[[], Coroutine[Any, Any, None]],
    stop: Callable[[], Coroutine[Any, Any, None]],
    examples: int,
    derandomize: bool,
) -> None:
    """Run ``example`` for ``examples`` of ``values`` (a fixed, derandomised set in CI, no example
    database), all on one event loop in asyncio debug mode between ``start`` and ``stop``, then
    ``afterwards``: the node must still serve. Any log record that carries a traceback fails the
    example it came in."""
    tracebacks = _Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    with asyncio.Runner(debug=True) as runner:
        runner.run(start())
        try:

            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=derandomize,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(value=values)
            def every_value(value: Any) -> None:
                runner.run(example(value))
                assert not tracebacks.records, [record.getMessage() for record in tracebacks.records]

            every_value()
            runner.run(afterwards())
        finally:
            runner.run(stop())
            logging.getLogger().removeHandler(tracebacks)


class Harness:
    """The server on a real engine and store, a running sandbox (``running``) for CHECK and GC,
    and an empty netns (``spare``) every ADD goes to."""

    def __init__(self, node: Node) -> None:
        self.node = node
        bridge = f"mpycbr{secrets.token_hex(4)}"
        node.host_links.append(bridge)
        node.write_network(
            CLUSTER,
            {
                "cniVersion": "1.0.0",
                "name": CLUSTER,
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": bridge,
                        "capabilities": {"mac": True, "ips": True},  # runtimeConfig reaches the plugins
                        "ipam": {
                            "type": "host-local",
                            "subnet": "10.77.0.0/16",
                            "dataDir": str(node.ipam_dir),
                        },
                    }
                ],
            },
        )
        self.running = node.new_netns()
        self.spare = node.new_netns()
        self.running_id = ""
        self.running_result: dict[str, Any] = {}
        self.client: TestClient[BaseRequest, None] | None = None

    def conf(self) -> dict[str, Any]:
        """The shim's conf, holding every Multus key (the daemon configuration holds none)."""
        return {
            "cniVersion": "1.0.0",
            "name": "multus-cni-network",
            "type": "multus-shim",
            "clusterNetwork": CLUSTER,
            "defaultNetworks": [],
            "confDir": str(self.node.conf_dir),
            "binDir": str(self.node.bin_dir),
            "cniDir": str(self.node.cni_dir),
            "logLevel": "verbose",
            "namespaceIsolation": False,
            "multusNamespace": "kube-system",
            "runtimeConfig": {"portMappings": []},
            "capabilities": {"portMappings": True},
        }

    def env(self, command: str, container_id: str, netns: Netns) -> dict[str, str]:
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns.path,
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a",
            "CNI_PATH": str(self.node.bin_dir),
        }

    async def start(self) -> None:
        cni_server = CniServer(
            engine=self.node.engine(),
            daemon_config={
                "stateDir": str(self.node.root / "state"),
                "socketDir": str(self.node.root / "run"),
            },
            readiness=Readiness(store_open=True, recovered=True),
            ready_hold=0.0,
        )
        self.client = TestClient(RawTestServer(cni_server.handle))
        await self.client.start_server()

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def post(self, env: dict[str, str], conf: bytes) -> tuple[int, dict[str, Any] | None]:
        assert self.client is not None
        response = await self.client.post("/cni", data=_body(env, conf))
        raw = await response.read()
        return response.status, (json.loads(raw) if raw else None)

    async def valid(
        self, command: str, container_id: str, netns: Netns, *, prev_result: object = None
    ) -> dict[str, Any] | None:
        document = self.conf()
        if prev_result is not None:
            document["prevResult"] = prev_result
        conf = json.dumps(document).encode()
        status, answer = await self.post(self.env(command, container_id, netns), conf)
        assert status == 200, (command, answer)
        return answer

    async def keep_running(self) -> None:
        """The running sandbox, ADDed again if a GC example collected it."""
        if self.running_id and self.node.checkpoint(self.running_id) is not None:
            return
        self.running_id = secrets.token_hex(16)
        answer = await self.valid("ADD", self.running_id, self.running)
        assert answer is not None
        self.running_result = answer["Result"]

    # ---- one example ----------------------------------------------------------------------------

    async def example(self, case: Case) -> tuple[int, dict[str, Any] | None]:
        """Send ``case``; check what its answer promises; return the answer (status, body)."""
        await self.keep_running()
        container_id = self.running_id if case.verb == "CHECK" else secrets.token_hex(16)
        env = self._base_env(case.verb, container_id)
        base = self.conf()
        if case.verb == "CHECK":
            base["prevResult"] = self.running_result
        if case.verb == "GC":
            base["cniVersion"] = "1.1.0"
            base["cni.dev/valid-attachments"] = [{"containerID": self.running_id, "ifname": "eth0"}]
        for name, value in case.env_changes:
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        conf = _conf_bytes(base, case)
        status, answer = await self.post(env, conf)

        assert status in (200, 400), (status, answer)
        command_changed = any(name == "CNI_COMMAND" for name, _ in case.env_changes)
        if status == 400:
            assert isinstance(answer, dict), answer
            assert isinstance(answer.get("code"), int), answer
            assert isinstance(answer.get("msg"), str), answer
            assert answer["msg"], answer
            # the body is decoded before its command is looked at: a conf that does not decode says so
            allowed = COMMON_CODES if command_changed else ALLOWED_CODES.get(case.verb, frozenset())
            assert answer["code"] in allowed, (case.verb, answer)
        if case.verb == "DEL" and not command_changed:
            assert status == 200, answer  # a DEL terminates, whatever it was sent (invariant 5b)
        if case.verb == "ADD" and not command_changed:
            if status == 200:
                await self._undo(env, conf, container_id)
            self._assert_nothing_left(container_id)
        return status, answer

    def _base_env(self, verb: str, container_id: str) -> dict[str, str]:
        if verb in ("GC", "STATUS"):
            return {"CNI_COMMAND": verb, "CNI_PATH": str(self.node.bin_dir)}
        return self.env(verb, container_id, self.running if verb == "CHECK" else self.spare)

    async def _undo(self, env: dict[str, str], conf: bytes, container_id: str) -> None:
        """An ADD the daemon took: the runtime's DEL (the same request) undoes it."""
        status, answer = await self.post({**env, "CNI_COMMAND": "DEL"}, conf)
        assert status == 200, answer

    def _assert_nothing_left(self, container_id: str) -> None:
        assert self.node.checkpoint(container_id) is None
        assert self.spare.links() == {"lo"}
        leases = [path for path in self.node.ipam_dir.rglob("*") if path.is_file()]
        assert not [path for path in leases if container_id in path.read_text(errors="replace")]

    async def still_serves(self) -> None:
        """After every example: a valid ADD, CHECK and DEL of a new sandbox, and the running one's CHECK."""
        await self.keep_running()
        container_id = secrets.token_hex(16)
        answer = await self.valid("ADD", container_id, self.spare)
        assert answer is not None
        assert answer["Result"]["interfaces"]
        assert self.spare.links() == {"lo", "eth0"}
        await self.valid("CHECK", container_id, self.spare, prev_result=answer["Result"])
        await self.valid("DEL", container_id, self.spare)
        self._assert_nothing_left(container_id)
        # the bridge's MAC is its ports' lowest: the running sandbox checks alone on it, as it was added
        await self.valid("CHECK", self.running_id, self.running, prev_result=self.running_result)


@pytest.fixture
def harness(node: Node) -> Harness:
    return Harness(node)


def test_no_invalid_request_is_answered_999_or_leaves_anything_and_the_daemon_serves_on(
    harness: Harness,
) -> None:
    fuzz_on_one_loop(
        cases(),
        start=harness.start,
        example=harness.example,
        afterwards=harness.still_serves,
        stop=harness.stop,
        examples=EXAMPLES,
        derandomize=EXAMPLES == CI_EXAMPLES,
    )


# ---- what the fuzz found: each exact input, once ------------------------------------------------


async def _answer(harness: Harness, case: Case) -> tuple[int, dict[str, Any]]:
    """``case`` sent as the fuzz sends it (its promises checked); the refusal it got."""
    await harness.start()
    try:
        status, answer = await harness.example(case)
    finally:
        await harness.stop()
    assert answer is not None
    return status, answer


def _add(*conf_changes: tuple[tuple[str | int, ...], object], **env: str) -> Case:
    return Case(
        verb="ADD", env_changes=tuple(env.items()), conf_changes=conf_changes, duplicate=None, whole=None
    )


async def test_a_cluster_network_path_to_a_device_is_refused_unread(harness: Harness) -> None:
    status, answer = await _answer(harness, _add((("clusterNetwork",), "/dev/null")))

    assert (status, answer["code"]) == (400, 7)
    assert "/dev/null is not a regular file" in answer["msg"]


def test_a_fifo_as_a_conf_file_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "cluster.conf"
    os.mkfifo(fifo)
    refused: list[CniError] = []

    def load() -> None:
        try:
            cniconf.load_file(str(fifo))
        except CniError as error:
            refused.append(error)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # still waiting in open() for a writer: give it one, so the thread ends
        with open(fifo, "wb"):
            pass
        reader.join()

    assert [error.code for error in refused] == [ErrorCode.INVALID_NETWORK_CONFIG]
    assert "is not a regular file" in refused[0].msg


def test_endless_files_are_not_read_as_a_conf_file_nor_as_upstreams_cache() -> None:
    """``clusterNetwork: /dev/zero`` was read until the daemon ran out of memory; so was upstream's
    scratch file of a DEL for container ``zero`` with ``cniDir: /dev``. Run with 1 GiB of address
    space: what reads without end fails with MemoryError, exit 1."""
    program = (
        "from app.cni import conf\n"
        "from app.cni.types import CniError\n"
        "from app.attach import upstream_cache\n"
        "try:\n"
        "    conf.load_file('/dev/zero')\n"
        "except CniError as error:\n"
        "    print(error.code, error.msg)\n"
        "print(upstream_cache.load('/dev', 'zero'))\n"
    )

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=limited,  # only a setrlimit between fork and exec
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["7 network configuration /dev/zero is not a regular file", "[]"]


async def test_an_add_as_lo_is_refused_before_anything_is_recorded(harness: Harness) -> None:
    """The bridge plugin failed it with code 999, and the rollback's DEL of ``lo`` failed for ever
    ("operation not supported"), leaving the attachment pending."""
    status, answer = await _answer(harness, _add(CNI_IFNAME="lo"))

    assert (status, answer["code"]) == (400, 4)
    assert "CNI_IFNAME: lo" in answer["msg"]


@pytest.mark.parametrize(
    ("capability", "value"),
    [("mac", 5), ("mac", "zz"), ("ips", ["x"]), ("ips", "10.77.0.5/16"), ("ips", [5])],
    ids=["mac-number", "mac-text", "ips-text", "ips-string", "ips-numbers"],
)
async def test_a_runtime_config_value_no_plugin_decodes_is_refused_before_anything_is_recorded(
    harness: Harness, capability: str, value: object
) -> None:
    """The plugin that declares the capability got the value: code 999, and for most of these
    the rollback's DEL failed the same way (its recorded stdin holds it), leaving the attachment
    pending for every DEL after it."""
    status, answer = await _answer(harness, _add((("runtimeConfig", capability), value)))

    assert (status, answer["code"]) == (400, 7)
    assert f"'runtimeConfig.{capability}'" in answer["msg"]


@pytest.mark.parametrize(
    ("key", "value"),
    [("prevResult", 5), ("dns", {"nameservers": "10.0.0.10"}), ("dns", [])],
    ids=["prev-result-number", "dns-nameservers-string", "dns-list"],
)
async def test_a_delegate_conf_whose_netconf_fields_no_plugin_decodes_is_refused(
    harness: Harness, key: str, value: object
) -> None:
    """Every plugin decodes ``types.NetConf``'s ``prevResult`` and ``dns``: the loopback plugin
    failed the ADD with code 999 ("failed to parse network config")."""
    delegate = {"cniVersion": "0.4.0", "name": "inline", "type": "loopback", key: value}
    status, answer = await _answer(harness, _add((("clusterNetwork",), ""), (("delegates",), [delegate])))

    assert (status, answer["code"]) == (400, 7)
    assert f'"{key}' in answer["msg"]
