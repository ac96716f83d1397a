"""Random invalid hot-plug requests (``POST /delegate``) for a running sandbox, through the daemon's
handler to the engine and real plugins.

The promise, as for ``/cni`` (``test_fuzz_cni_requests``): no input the CNI spec calls invalid is
answered code 999, an HTTP 500 or a traceback; an error is a CNI error with a code the spec allows;
a refused ADD records nothing and leaves no interface nor host-local lease; a DEL terminates (200,
or code 4 only for what stops being refused once the runtime's DEL removed the sandbox: the cluster
network, another pod's sandbox, invariant 5b); the running sandbox's eth0 and its recorded
attachments are untouched; and a valid hot-plug ADD, CHECK and DEL still work afterwards.

Each example starts from the request multus-dynamic-networks-controller sends for the running
sandbox (a bridge delegate conf, ``CNI_IFNAME`` ``net5``, the pod in ``CNI_ARGS``) and mutates the
body's fields (each given every JSON type), the ``CNI_*`` variables, the delegate conf (each key
every value; a Multus conf, or no object at all, instead) and ``interfaceAttributes`` (every shape).
A DEL example first hot-plugs ``net5``, so there is something to unplug. ``CniServer.handle`` runs
on aiohttp's test server in front of a real engine and store, with the bridge and host-local plugins.

CI runs a fixed, derandomized set of examples. To hunt further, set ``MULTUS_PY_FUZZ_EXAMPLES``
(e.g. 3000): that many examples from a random seed.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import RawTestServer, TestClient
from hypothesis import strategies as st

from app.daemon.server import CniServer, Readiness
from tests.core.support import Node
from tests.core.test_fuzz_cni_requests import (
    _DELETE,
    COMMON_CODES,
    ENV_VALUES,
    JSON_VALUES,
    VALUES,
    WHOLE_CONFS,
    Harness,
    _encode,
    _set,
    _Tracebacks,
    fuzz_on_one_loop,
)

CI_EXAMPLES = 60
EXAMPLES = int(os.environ.get("MULTUS_PY_FUZZ_EXAMPLES", CI_EXAMPLES))

ALLOWED_CODES = {
    "ADD": COMMON_CODES | {3},  # 3: no running sandbox under that container ID (upstream: pod lookup)
    "DEL": COMMON_CODES,
    "CHECK": COMMON_CODES | {3, 100, 101, 102},
}
HOT = "hot"
"""The delegate conf's network name."""
IFNAME = "net5"
CLUSTER_NAME = "cluster"


@dataclass(frozen=True)
class Case:
    """One ``/delegate`` request: a verb's valid request for the running sandbox, then these changes."""

    verb: str
    env_changes: tuple[tuple[str, object], ...]
    """(variable, value): ``None`` removes it; a value that is not a string is sent as it is."""
    conf_changes: tuple[tuple[tuple[str | int, ...], object], ...]
    whole_conf: bytes | None
    multus_conf: bool
    attributes: object
    field_changes: tuple[tuple[str, object], ...] = field(default=())
    """(body field, value) replacing ``env``, ``config``, ``interfaceAttributes`` whole."""


ATTRIBUTE_VALUES = JSON_VALUES | st.sampled_from(
    [
        ["10.78.5.5/16"],
        ["10.78.5.5"],
        ["10.77.5.5/16"],
        ["fd00::5/64"],
        ["10.78.5.5/16", "10.78.5.6/16"],
        ["10.78.5.5/16", "10.78.5.5/16"],
        ["10.78.5.5/33"],
        [""],
        "0a:58:0a:4e:05:05",
        "00:00:00:00:00:00",
        "ff:ff:ff:ff:ff:ff",
        "01:00:5e:00:00:01",
        "0a:58:0a:4e:05",
        "0A-58-0A-4E-05-05",
        "0a58.0a4e.0505",
        "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
        {"foo": "bar"},
        {"ips": ["1.2.3.4/24"]},
        {"cniVersion": "0.1.0"},
        {"name": "other"},
        {"type": "loopback"},
    ]
)
ATTRIBUTES = (
    st.none()
    | JSON_VALUES
    | st.dictionaries(
        st.sampled_from(["ips", "mac", "cni-args", "IPs", "MAC", "CNI-Args", "cniArgs", "", "x"]),
        ATTRIBUTE_VALUES,
        max_size=3,
    )
)
DELEGATE_KEYS: list[tuple[str | int, ...]] = [
    ("cniVersion",),
    ("name",),
    ("type",),
    ("ipam",),
    ("ipam", "type"),
    ("plugins",),
    ("plugins", 0),
    ("plugins", 0, "type"),
    ("capabilities",),
    ("capabilities", "ips"),
    ("capabilities", "mac"),
    ("prevResult",),
    ("dns",),
    ("delegates",),
    ("clusterNetwork",),
    ("defaultNetworks",),
    ("",),
]
CONF_PATHS = st.sampled_from(DELEGATE_KEYS)
"""The keys the CNI spec or the daemon read, not one plugin's own (``bridge``'s ``mtu`` given a
float fails that plugin, with its code 999, as its author chose). Not ``runtimeConfig`` nor
``args`` either: a delegate conf's own ones reach its plugins unchecked on ``/cni`` (a NAD's) as
here, a finding for ``app.cni.conf`` (``runtimeConfig: {"ips": {}}`` or ``args: {"cni": []}``
fails the bridge's ADD and every DEL with code 999)."""
DELEGATE_ENV_VALUES: dict[str, list[str]] = {
    **ENV_VALUES,
    "CNI_COMMAND": [*ENV_VALUES["CNI_COMMAND"], "STATUS", "GC", "DEL", "CHECK", "del"],
    "CNI_IFNAME": [*ENV_VALUES["CNI_IFNAME"], "eth0", "net1", "net5", "NET5", "bridge0"],
    "CNI_ARGS": [
        *ENV_VALUES["CNI_ARGS"],
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-b",
        "K8S_POD_NAMESPACE=other;K8S_POD_NAME=pod-a",
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a;K8S_POD_UID=uid-b",
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a;IP=10.78.9.9/16",
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a;MAC=0a:58:0a:4e:09:09",
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a;IgnoreUnknown=true;X=y",
        "K8S_POD_NAME=pod-a",
        "K8S_POD_NAMESPACE=default",
    ],
}
ENV_CHANGES = st.lists(
    st.sampled_from(sorted(DELEGATE_ENV_VALUES)).flatmap(
        lambda name: st.tuples(
            st.just(name),
            st.none()
            | st.sampled_from(DELEGATE_ENV_VALUES[name])
            | st.text(max_size=20)
            | (JSON_VALUES if name != "CNI_COMMAND" else st.nothing()),
        )
    ),
    max_size=2,
)
FIELD_CHANGES = st.lists(
    st.tuples(
        st.sampled_from(["env", "config", "interfaceAttributes", "ENV", "Config", "extra"]),
        JSON_VALUES | st.just(_DELETE),
    ),
    max_size=1,
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    rare = draw(st.integers(0, 9))
    return Case(
        verb=draw(st.sampled_from(["ADD", "ADD", "ADD", "DEL", "DEL", "CHECK"])),
        env_changes=tuple(draw(ENV_CHANGES)),
        conf_changes=tuple(draw(st.lists(st.tuples(CONF_PATHS, VALUES), max_size=3))),
        whole_conf=draw(WHOLE_CONFS) if rare == 0 else None,
        multus_conf=rare == 1,
        attributes=draw(ATTRIBUTES) if draw(st.booleans()) else None,
        field_changes=tuple(draw(FIELD_CHANGES)) if rare == 2 else (),
    )


# ---- the node --------------------------------------------------------------------------------------


class DelegateHarness(Harness):
    """``Harness``'s server and running sandbox (added through ``/cni``), and a second bridge
    network with its own host-local leases that hot-plug requests carry."""

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.hot_bridge = f"mpyhbr{secrets.token_hex(4)}"
        node.host_links.append(self.hot_bridge)
        self.hot_leases = node.root / "hot-ipam"
        self.hot_leases.mkdir()

    async def start(self) -> None:
        cni_server = CniServer(
            engine=self.node.engine(),
            daemon_config={
                "binDir": str(self.node.bin_dir),
                "cniDir": str(self.node.cni_dir),
                "confDir": str(self.node.conf_dir),
                "clusterNetwork": CLUSTER_NAME,
            },
            readiness=Readiness(store_open=True, recovered=True),
            ready_hold=0.0,
        )
        self.client = TestClient(RawTestServer(cni_server.handle))
        await self.client.start_server()

    def delegate_conf(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": HOT,
            "type": "bridge",
            "bridge": self.hot_bridge,
            "capabilities": {"ips": True, "mac": True},
            "ipam": {"type": "host-local", "subnet": "10.78.0.0/16", "dataDir": str(self.hot_leases)},
        }

    def delegate_env(self, command: str, *, ifname: str = IFNAME) -> dict[str, Any]:
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": self.running_id,
            "CNI_NETNS": self.running.path,
            "CNI_IFNAME": ifname,
            "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a",
            "CNI_PATH": str(self.node.bin_dir),
        }

    async def post_delegate(self, body: bytes) -> tuple[int, dict[str, Any]]:
        assert self.client is not None
        response = await self.client.post("/delegate", data=body)
        raw = await response.read()
        return response.status, (json.loads(raw) if raw else {})

    async def valid_delegate(self, command: str, *, ifname: str = IFNAME) -> dict[str, Any]:
        body = {
            "env": self.delegate_env(command, ifname=ifname),
            "config": base64.b64encode(json.dumps(self.delegate_conf()).encode()).decode(),
            "interfaceAttributes": None,
        }
        status, answer = await self.post_delegate(json.dumps(body).encode())
        assert status == 200, (command, answer)
        return answer

    # ---- one example ----------------------------------------------------------------------------

    async def delegate_example(self, case: Case) -> tuple[int, dict[str, Any]]:
        """Send ``case``; check what its answer promises; return it (status, body)."""
        await self.keep_running()
        if case.verb == "DEL":
            await self.valid_delegate("ADD")
        before = self._running_state()
        status, answer = await self.post_delegate(self._body(case))

        assert status in (200, 400), (status, answer)
        env = self._env(case)
        sent_command = env.get("CNI_COMMAND")
        if status == 400:
            assert isinstance(answer.get("code"), int), answer
            assert isinstance(answer.get("msg"), str), answer
            assert answer["msg"], answer
            allowed = (
                ALLOWED_CODES.get(sent_command, COMMON_CODES)
                if isinstance(sent_command, str)
                else COMMON_CODES
            )
            assert answer["code"] in allowed, (case, answer)
        if sent_command == "DEL" and self._envelope_intact(case):
            ifname = env.get("CNI_IFNAME") or "eth0"
            if status == 400:  # only what the runtime's DEL of the sandbox turns into success
                assert answer["code"] == 4, answer
                assert ifname == "eth0" or "CNI_ARGS" in dict(case.env_changes), (case, answer)
        await self._settle(case, status, answer, before)
        return status, answer

    def _env(self, case: Case) -> dict[str, Any]:
        env = self.delegate_env(case.verb)
        for name, value in case.env_changes:
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def _envelope_intact(self, case: Case) -> bool:
        """The body is an object whose ``env`` holds strings only: its command can be read."""
        return not case.field_changes and all(
            isinstance(value, str) or value is None for _, value in case.env_changes
        )

    def _body(self, case: Case) -> bytes:
        body: dict[str, Any] = {
            "env": self._env(case),
            "config": base64.b64encode(self._conf_bytes(case)).decode(),
            "interfaceAttributes": case.attributes,
        }
        for name, value in case.field_changes:
            if value is _DELETE:
                body.pop(name, None)
            else:
                body[name] = value
        return _encode(body, [])

    def _conf_bytes(self, case: Case) -> bytes:
        if case.whole_conf is not None:
            return case.whole_conf
        document = self.conf() if case.multus_conf else self.delegate_conf()
        for path, value in case.conf_changes:
            _set(document, path, value)
        return _encode(document, [])

    def _running_state(self) -> tuple[list[tuple[str, str, str]], set[str]]:
        record = self.node.checkpoint(self.running_id)
        assert record is not None
        assert record.state == "ready"
        return (
            sorted((a.ifname, a.network_name, a.state) for a in record.attachments),
            self.running.links(),
        )

    async def _settle(
        self,
        case: Case,
        status: int,
        answer: dict[str, Any],
        before: tuple[list[tuple[str, str, str]], set[str]],
    ) -> None:
        """Check the running sandbox after the example, then bring it back to eth0 alone."""
        recorded, links = before
        after_recorded, after_links = self._running_state()
        if case.verb == "ADD" and status != 200:  # refused: nothing recorded, nothing attached
            assert (after_recorded, after_links) == (recorded, links), (case, answer)
            assert not self._hot_leases_of(self.running_id), (case, answer)
        assert ("eth0", CLUSTER_NAME, "added") in after_recorded
        assert "eth0" in after_links
        hot_plugged = {ifname for ifname, _, _ in after_recorded} - {ifname for ifname, _, _ in recorded}
        assert hot_plugged <= self._added(case, status), (case, answer)
        # undo whatever was hot-plugged: the valid DEL of every attachment but the cluster network's
        for ifname, _network, _state in after_recorded:
            if ifname != "eth0":
                await self.valid_delegate("DEL", ifname=ifname)
        final_recorded, final_links = self._running_state()
        assert [a[0] for a in final_recorded] == ["eth0"], final_recorded
        assert final_links == {"lo", "eth0"}, final_links
        assert not self._hot_leases_of(self.running_id)

    def _added(self, case: Case, status: int) -> set[str]:
        env = self._env(case)
        ifname = env.get("CNI_IFNAME")
        return {ifname} if status == 200 and isinstance(ifname, str) else set()

    def _hot_leases_of(self, container_id: str) -> list[str]:
        return [
            path.name
            for path in self.hot_leases.rglob("*")
            if path.is_file() and container_id in path.read_text(errors="replace")
        ]

    async def still_hot_plugs(self) -> None:
        """A valid hot-plug ADD, CHECK and DEL of the running sandbox, and its own CHECK."""
        await self.keep_running()
        answer = await self.valid_delegate("ADD")
        assert answer["Result"]["interfaces"]
        assert self.running.links() == {"lo", "eth0", IFNAME}
        await self.valid_delegate("CHECK")
        await self.valid_delegate("DEL")
        assert self.running.links() == {"lo", "eth0"}
        assert not self._hot_leases_of(self.running_id)
        await self.valid("CHECK", self.running_id, self.running, prev_result=self.running_result)


@pytest.fixture
def harness(node: Node) -> DelegateHarness:
    return DelegateHarness(node)


def test_no_invalid_delegate_request_is_answered_999_nor_touches_the_running_sandbox(
    harness: DelegateHarness,
) -> None:
    fuzz_on_one_loop(
        cases(),
        start=harness.start,
        example=harness.delegate_example,
        afterwards=harness.still_hot_plugs,
        stop=harness.stop,
        examples=EXAMPLES,
        derandomize=EXAMPLES == CI_EXAMPLES,
    )


# ---- what the fuzz found: each exact input, once ------------------------------------------------


async def test_a_delegate_conf_whose_type_is_no_string_is_refused_naming_it(harness: DelegateHarness) -> None:
    """Looking for a Multus ``type`` in the conf hashed a list (``TypeError``): a traceback, and an
    internal error instead of the conf's code 7."""
    await harness.start()
    try:
        case = Case(
            verb="ADD",
            env_changes=(),
            conf_changes=((("type",), ["bridge"]),),
            whole_conf=None,
            multus_conf=False,
            attributes=None,
        )
        tracebacks = _Tracebacks()
        logging.getLogger().addHandler(tracebacks)
        try:
            status, answer = await harness.delegate_example(case)
        finally:
            logging.getLogger().removeHandler(tracebacks)
    finally:
        await harness.stop()

    assert (status, answer["code"]) == (400, 7)
    assert '"type"' in answer["msg"]
    assert not tracebacks.records


async def test_interface_attributes_cni_args_no_plugin_decodes_are_refused_naming_them(
    harness: DelegateHarness,
) -> None:
    """They reach the delegate as ``args.cni``: ``ips: ["x"]`` failed the bridge's ADD with code
    999, and its rollback's DEL likewise, leaving the attachment pending."""
    await harness.start()
    try:
        case = Case(
            verb="ADD",
            env_changes=(),
            conf_changes=(),
            whole_conf=None,
            multus_conf=False,
            attributes={"cni-args": {"ips": ["x"]}},
        )
        status, answer = await harness.delegate_example(case)
    finally:
        await harness.stop()

    assert (status, answer["code"]) == (400, 7)
    assert "'interfaceAttributes.cni-args.ips'" in answer["msg"]
