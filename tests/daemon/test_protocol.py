"""Decoding shim requests: every malformed input is a CNI error naming the field, never a crash."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.attach.requests import Command, NodeRequest, SandboxRequest
from app.cni.types import CniError, ErrorCode
from app.daemon import protocol, spool
from tests.cni.support import descriptors_exhausted

CONF = {"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus-shim"}
NETNS_NAME = f"mp-protocol-{os.getpid()}"
NETNS = f"/var/run/netns/{NETNS_NAME}"
"""A real network namespace: ADD and CHECK need CNI_NETNS to be one."""
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": NETNS,
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=u1",
    "CNI_PATH": "/opt/cni/bin",
}


@pytest.fixture(autouse=True, scope="module")
def _network_namespace() -> Iterator[None]:
    subprocess.run(["ip", "netns", "add", NETNS_NAME], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "netns", "del", NETNS_NAME], check=False)


def body(env: dict[str, str], conf: dict[str, Any] | bytes = CONF) -> bytes:
    raw = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    return json.dumps({"env": env, "config": base64.b64encode(raw).decode()}).encode()


def interpret(raw: bytes, daemon_config: dict[str, Any] | None = None) -> SandboxRequest | NodeRequest:
    return protocol.interpret(protocol.decode_body(raw), daemon_config=daemon_config or {})


def test_an_upstream_shim_request_becomes_a_sandbox_request() -> None:
    request = interpret(body(ENV), {"clusterNetwork": "/etc/cni/net.d/10-x.conflist", "binDir": "/b"})

    assert isinstance(request, SandboxRequest)
    assert request.command is Command.ADD
    assert (request.container_id, request.netns, request.ifname) == ("abc123", NETNS, "eth0")
    assert (request.pod.namespace, request.pod.name, request.pod.uid) == ("default", "web", "u1")
    assert request.conf.cluster_network == "/etc/cni/net.d/10-x.conflist"
    assert request.conf.bin_dir == "/b"


def test_keys_match_case_insensitively_like_gos_decoder() -> None:
    raw = json.dumps({"Env": ENV, "CONFIG": base64.b64encode(json.dumps(CONF).encode()).decode()}).encode()

    assert isinstance(interpret(raw), SandboxRequest)


def test_daemon_config_keys_override_the_shims_conf() -> None:
    conf = {**CONF, "clusterNetwork": "from-shim", "defaultNetworks": ["a"]}

    request = interpret(body(ENV, conf), {"clusterNetwork": "from-daemon"})

    assert isinstance(request, SandboxRequest)
    assert request.conf.cluster_network == "from-daemon"
    assert request.conf.default_networks == ("a",)


def test_the_same_shim_conf_under_another_daemon_config_is_read_again() -> None:
    raw = body(ENV, {**CONF, "clusterNetwork": "from-shim"})
    first, second = ({"clusterNetwork": "daemon-1"}, {"clusterNetwork": "daemon-2"})

    answers = [interpret(raw, config) for config in (first, first, second, {})]

    assert [request.conf.cluster_network for request in answers] == [
        "daemon-1",
        "daemon-1",
        "daemon-2",
        "from-shim",
    ]
    assert answers[1].conf is answers[0].conf  # parsed once for the same bytes and configuration


def test_del_needs_no_netns_and_the_ifname_defaults_to_eth0() -> None:
    env = {**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}
    del env["CNI_IFNAME"]

    request = interpret(body(env))

    assert isinstance(request, SandboxRequest)
    assert (request.netns, request.ifname) == ("", "eth0")


def test_gc_carries_the_runtimes_valid_attachments() -> None:
    conf = {
        **CONF,
        "cniVersion": "1.1.0",
        "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
    }

    request = interpret(body({"CNI_COMMAND": "GC", "CNI_PATH": "/x"}, conf))

    assert isinstance(request, NodeRequest)
    assert [(a.container_id, a.ifname) for a in request.valid_attachments] == [("c1", "eth0")]


@pytest.mark.parametrize(
    "conf_keys",
    [
        {"cni.dev/valid-attachments": None},
        {"cni.dev/valid-attachments": None, "cni.dev/attachments": None},
        {},
    ],
    ids=["null", "both-null", "absent"],
)
def test_a_gc_whose_valid_attachments_are_null_or_absent_lists_none(conf_keys: dict[str, object]) -> None:
    """libcni injects the runtime's Go slice as it is: with no pod of the network left it is nil,
    written ``null`` (CRI-O's GC of a network no pod uses), which Go reads as an empty list. It
    was refused (code 7), so that GC never collected anything."""
    conf = {**CONF, "cniVersion": "1.1.0", **conf_keys}

    request = interpret(body({"CNI_COMMAND": "GC", "CNI_PATH": "/x"}, conf))

    assert isinstance(request, NodeRequest)
    assert request.valid_attachments == ()


def test_a_gc_reads_the_legacy_attachments_key_when_the_valid_attachments_one_is_null() -> None:
    conf = {
        **CONF,
        "cniVersion": "1.1.0",
        "cni.dev/valid-attachments": None,
        "cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}],
    }

    request = interpret(body({"CNI_COMMAND": "GC", "CNI_PATH": "/x"}, conf))

    assert isinstance(request, NodeRequest)
    assert [(a.container_id, a.ifname) for a in request.valid_attachments] == [("c1", "eth0")]


@pytest.mark.parametrize(
    "conf_keys",
    [
        {"CNI.DEV/VALID-ATTACHMENTS": [{"containerID": "c1", "ifname": "eth0"}]},
        {"cni.dev/valid-attachments": [{"ContainerID": "c1", "IFName": "eth0"}]},
        {"cni.dev/valid-attachments": None, "cni.dev/Attachments": [{"containerid": "c1", "ifName": "eth0"}]},
    ],
    ids=["list-key", "item-keys", "legacy-key"],
)
def test_a_gc_reads_valid_attachments_under_keys_in_any_case_as_go_plugins_do(
    conf_keys: dict[str, object],
) -> None:
    """Go's decoder matches ``types.GCAttachment``'s fields whatever their case. The list's key in
    another case was taken for no list (every sandbox invalid); an item's, for a malformed item."""
    conf = {**CONF, "cniVersion": "1.1.0", **conf_keys}

    request = interpret(body({"CNI_COMMAND": "GC", "CNI_PATH": "/x"}, conf))

    assert isinstance(request, NodeRequest)
    assert [(a.container_id, a.ifname) for a in request.valid_attachments] == [("c1", "eth0")]


@pytest.mark.parametrize(
    "listed",
    [
        {"c1": "eth0"},
        [5],
        [["c1", "eth0"]],
        [{"containerID": 5, "ifname": "eth0"}],
        [{"containerID": "c1"}],
    ],
    ids=["object", "number", "pair-as-list", "numeric-container-id", "no-ifname"],
)
def test_a_malformed_valid_attachments_list_is_a_config_error_naming_it(listed: object) -> None:
    """Not an internal error (999), and not a list GC would act on."""
    conf = {**CONF, "cniVersion": "1.1.0", "cni.dev/valid-attachments": listed}

    with pytest.raises(CniError) as caught:
        interpret(body({"CNI_COMMAND": "GC", "CNI_PATH": "/x"}, conf))

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "cni.dev/valid-attachments" in caught.value.msg


@pytest.mark.parametrize(
    ("env_change", "code", "named"),
    [
        ({"CNI_COMMAND": "FROB"}, ErrorCode.INVALID_ENVIRONMENT, "CNI_COMMAND"),
        ({"CNI_COMMAND": None}, ErrorCode.INVALID_ENVIRONMENT, "CNI_COMMAND"),
        ({"CNI_CONTAINERID": None}, ErrorCode.INVALID_ENVIRONMENT, "CNI_CONTAINERID"),
        ({"CNI_ARGS": None}, ErrorCode.INVALID_ENVIRONMENT, "CNI_ARGS"),
        ({"CNI_CONTAINERID": "-bad"}, ErrorCode.INVALID_ENVIRONMENT, "containerID"),
        ({"CNI_NETNS": ""}, ErrorCode.INVALID_ENVIRONMENT, "CNI_NETNS"),
        ({"CNI_IFNAME": "a-very-long-ifname"}, ErrorCode.INVALID_ENVIRONMENT, "interface name"),
        ({"CNI_IFNAME": "eth/0"}, ErrorCode.INVALID_ENVIRONMENT, "interface name"),
        ({"CNI_ARGS": "K8S_POD_NAME"}, ErrorCode.INVALID_ENVIRONMENT, "CNI_ARGS"),
        # What the reference plugins would fail with 999 once the ADD is recorded:
        ({"CNI_ARGS": "IgnoreUnknown=1;MAC=zz"}, ErrorCode.INVALID_ENVIRONMENT, "MAC"),
        ({"CNI_ARGS": "IgnoreUnknown=1;IP=10.0.0.300/24"}, ErrorCode.INVALID_ENVIRONMENT, "IP"),
    ],
)
def test_a_bad_environment_is_an_error_naming_what_is_wrong(
    env_change: dict[str, str | None], code: int, named: str
) -> None:
    env = dict(ENV)
    for key, value in env_change.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = value

    with pytest.raises(CniError) as caught:
        interpret(body(env))

    assert caught.value.code == code
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({**CONF, "defaultNetworks": "not-a-list"}, "defaultNetworks"),
        ({**CONF, "clusterNetwork": 5}, "clusterNetwork"),
        ({**CONF, "runtimeConfig": []}, "runtimeConfig"),
        ({**CONF, "namespaceIsolation": "yes"}, "namespaceIsolation"),
        ({**CONF, "cniVersion": 1}, "cniVersion"),
    ],
)
def test_a_bad_multus_conf_key_is_a_config_error_naming_the_key(conf: dict[str, Any], named: str) -> None:
    with pytest.raises(CniError) as caught:
        interpret(body(ENV, conf))

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert named in str(caught.value)


def test_trailing_semicolons_in_cni_args_are_tolerated_unlike_upstream() -> None:
    assert protocol.parse_cni_args("A=1;;B=x;") == (("A", "1"), ("B", "x"))


def test_a_cni_args_pair_with_two_equals_signs_is_refused_as_every_go_delegate_would() -> None:
    with pytest.raises(CniError) as caught:
        protocol.parse_cni_args("A=1;B=x=y")

    assert caught.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert "B=x=y" in caught.value.msg


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400))
def test_arbitrary_bytes_give_a_cni_error_or_a_request(raw: bytes) -> None:
    codes = (ErrorCode.DECODING_FAILURE, ErrorCode.INVALID_ENVIRONMENT, ErrorCode.INVALID_NETWORK_CONFIG)
    assert _error_of(raw) in (None, *codes)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")

envelope_envs = st.fixed_dictionaries(
    # A real command, else every example stops at CNI_COMMAND and nothing after it is ever reached.
    {"CNI_COMMAND": st.sampled_from(COMMANDS)},
    optional={
        **{
            key: st.sampled_from([value, ""]) | st.text(max_size=20)
            for key, value in ENV.items()
            if key != "CNI_COMMAND"
        },
        "X": st.text(max_size=20),
    },
) | st.dictionaries(st.sampled_from([*ENV, "X"]), st.text(max_size=20) | st.integers(), max_size=7)


@settings(max_examples=300, deadline=None)
@given(
    env=envelope_envs,
    conf=st.fixed_dictionaries(
        {},
        optional={
            "cniVersion": st.sampled_from(["1.1.0", "1.0.0", "0.3.1"]) | json_values,
            # Each key well typed or not: a mistyped one stops the example before the keys after it.
            "name": st.text(max_size=8) | json_values,
            "clusterNetwork": st.text(max_size=8) | json_values,
            "defaultNetworks": st.lists(st.text(max_size=8), max_size=2) | json_values,
            "runtimeConfig": st.dictionaries(st.text(max_size=8), json_values, max_size=2) | json_values,
            # Lists of near-attachments, else a GC's list is seldom one and its items never checked.
            "cni.dev/valid-attachments": st.lists(
                json_values | st.fixed_dictionaries({"containerID": json_values, "ifname": json_values}),
                max_size=3,
            )
            | json_values,
            "binDir": st.text(max_size=8) | json_values,
        },
    ),
)
def test_arbitrary_json_envelopes_give_a_cni_error_or_a_request(
    env: dict[str, Any], conf: dict[str, Any]
) -> None:
    raw = json.dumps({"env": env, "config": base64.b64encode(json.dumps(conf).encode()).decode()}).encode()
    try:
        code = _error_of(raw)
    except protocol.NothingRecordedError:  # a DEL of what no ADD could record: served as success
        assert env.get("CNI_COMMAND") == "DEL"
        return
    assert code in (
        None,
        ErrorCode.DECODING_FAILURE,
        ErrorCode.INVALID_ENVIRONMENT,
        ErrorCode.INVALID_NETWORK_CONFIG,
    )


def _error_of(raw: bytes) -> int | None:
    """The CNI error code interpreting ``raw`` raises (any other exception fails the test)."""
    try:
        interpret(raw)
    except CniError as error:
        caught = error
    else:
        return None
    assert caught.msg, "every error says what is wrong"
    return caught.code


ODD_VARIABLES = [
    pytest.param("CNI_ARGS", "K8S_POD_NAME=web\udcff", "CNI_ARGS", id="non-utf8-byte-in-cni-args"),
    pytest.param("CNI_ARGS", "K8S_POD_NAME=web\ud800", "CNI_ARGS", id="lone-surrogate-in-cni-args"),
    pytest.param("CNI_ARGS", "K8S_POD_NAME=we\x00b", "CNI_ARGS", id="nul-in-cni-args"),
    pytest.param("CNI_ARGS", "K8S_POD_NAME=web\n", "CNI_ARGS", id="newline-in-cni-args"),
    pytest.param("CNI_IFNAME", "eth\x000", "CNI_IFNAME", id="nul-in-ifname"),
    pytest.param("CNI_IFNAME", "eth0\x01", "interface name", id="trailing-control-character-in-ifname"),
    pytest.param("CNI_IFNAME", "eth0\x7f", "interface name", id="del-character-in-ifname"),
    pytest.param("CNI_IFNAME", "..", "interface name", id="dotdot-ifname"),
    pytest.param("CNI_IFNAME", "e%s%n", "interface name", id="percent-template-in-ifname"),
    pytest.param("CNI_IFNAME", "eth\u00e0", "interface name", id="utf8-byte-0xa0-in-ifname"),
    pytest.param("CNI_NETNS", "/var/run/netns/\udc80", "CNI_NETNS", id="surrogate-in-netns"),
    pytest.param("CNI_NETNS", "/var/run/netns/x\x00", "CNI_NETNS", id="nul-in-netns"),
    pytest.param("CNI_NETNS", "var/run/netns/x", "CNI_NETNS", id="relative-netns"),
    pytest.param("CNI_NETNS", "/" + "n" * 5000, "CNI_NETNS", id="netns-longer-than-path-max"),
    pytest.param("CNI_CONTAINERID", "abc\udcff", "CNI_CONTAINERID", id="non-utf8-container-id"),
    pytest.param("CNI_CONTAINERID", "abc\x00", "CNI_CONTAINERID", id="nul-in-container-id"),
    pytest.param("CNI_COMMAND", "ADD\x00", "CNI_COMMAND", id="nul-in-command"),
    pytest.param("CNI_PATH", "/opt/cni/bin\udcff", "CNI_PATH", id="non-utf8-cni-path"),
    pytest.param("CNI_ARGS", "K8S_POD_NAME=../../x", "K8S_POD_NAME", id="pod-name-not-a-kubernetes-name"),
    pytest.param("CNI_ARGS", "K8S_POD_NAMESPACE=Default", "K8S_POD_NAMESPACE", id="namespace-uppercase"),
    pytest.param("CNI_ARGS", "K8S_POD_NAMESPACE=" + "a" * 64, "K8S_POD_NAMESPACE", id="namespace-too-long"),
]


@pytest.mark.parametrize(("variable", "value", "named"), ODD_VARIABLES)
@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_odd_bytes_in_a_variable_are_refused_with_code_4_naming_it(
    variable: str, value: str, named: str, command: str
) -> None:
    raw = body({**ENV, "CNI_COMMAND": command, variable: value})

    with pytest.raises(CniError) as caught:
        interpret(raw)

    assert caught.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert named in caught.value.msg
    json.dumps(caught.value.to_json(), ensure_ascii=False).encode()  # the answer can be written


@pytest.mark.parametrize(
    "netns", ["/var/run/netns/mp-does-not-exist", "/", "/etc/hostname", "/proc/self/ns/mnt", "/dev/null"]
)
@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_a_netns_that_is_not_a_network_namespace_is_code_4_before_any_plugin_runs(
    command: str, netns: str
) -> None:
    with pytest.raises(CniError) as caught:
        interpret(body({**ENV, "CNI_COMMAND": command, "CNI_NETNS": netns}))

    assert caught.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert f"CNI_NETNS: {netns}" in caught.value.msg or f"cannot use {netns}" in caught.value.msg


def test_the_nodes_own_netns_is_refused_with_the_go_librarys_code_8() -> None:
    with pytest.raises(CniError) as caught:
        interpret(body({**ENV, "CNI_NETNS": "/proc/self/ns/net"}))

    assert caught.value.code == ErrorCode.INVALID_NETNS


def test_del_takes_a_netns_that_is_gone() -> None:
    request = interpret(body({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": "/var/run/netns/mp-gone"}))

    assert isinstance(request, SandboxRequest)


@pytest.mark.parametrize(
    ("variable", "value", "named"), [param for param in ODD_VARIABLES if param.values[0] != "CNI_COMMAND"]
)
def test_a_del_with_a_value_an_add_would_refuse_runs_without_it_so_it_terminates(
    variable: str, value: str, named: str
) -> None:
    raw = body({**ENV, "CNI_COMMAND": "DEL", variable: value})

    if variable == "CNI_CONTAINERID":
        with pytest.raises(protocol.NothingRecordedError):
            interpret(raw)
        return
    request = interpret(raw)

    assert isinstance(request, SandboxRequest)
    assert request.container_id == ENV["CNI_CONTAINERID"]
    dropped = {"CNI_NETNS": request.netns == "", "CNI_IFNAME": request.ifname == "eth0"}
    dropped["CNI_ARGS"] = request.cni_args == () and request.pod.name == ""
    assert dropped.get(variable, True), request


@pytest.mark.parametrize("missing", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_ARGS", "CNI_IFNAME"])
def test_a_del_missing_a_variable_still_terminates(missing: str) -> None:
    env = {key: value for key, value in ENV.items() if key != missing}

    if missing == "CNI_CONTAINERID":
        with pytest.raises(protocol.NothingRecordedError):
            interpret(body({**env, "CNI_COMMAND": "DEL"}))
    else:
        assert isinstance(interpret(body({**env, "CNI_COMMAND": "DEL"})), SandboxRequest)


def test_an_unrelated_variable_with_odd_bytes_is_ignored() -> None:
    assert isinstance(interpret(body({**ENV, "HOME": "/root\udcff\x00"})), SandboxRequest)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [protocol.MAX_JSON_DEPTH + 1, 10_000, 200_000])
def test_a_configuration_nested_too_deep_is_a_decoding_error_not_a_recursion_error(depth: int) -> None:
    conf = f'{{"cniVersion": "1.0.0", "name": "n", "deep": {_nested(depth)}}}'.encode()

    with pytest.raises(CniError) as caught:
        interpret(body(ENV, conf))

    assert caught.value.code == ErrorCode.DECODING_FAILURE
    assert "'config'" in caught.value.msg
    assert str(protocol.MAX_JSON_DEPTH) in caught.value.msg + caught.value.details


def test_a_configuration_at_the_depth_bound_is_accepted() -> None:
    conf = f'{{"cniVersion": "1.0.0", "name": "n", "deep": {_nested(protocol.MAX_JSON_DEPTH - 1)}}}'.encode()

    assert isinstance(interpret(body(ENV, conf)), SandboxRequest)


def test_a_request_body_nested_10000_deep_is_a_decoding_error_not_a_recursion_error() -> None:
    raw = b'{"env": {}, "config": "e30=", "x": ' + _nested(10_000).encode() + b"}"

    with pytest.raises(CniError) as caught:
        interpret(raw)

    assert caught.value.code == ErrorCode.DECODING_FAILURE
    assert "request body" in caught.value.msg


@pytest.mark.parametrize(
    ("conf", "code", "named"),
    [
        pytest.param(
            b'{"cniVersion": "1.0.0", "name": "n\\ud800"}', 6, "'name'", id="surrogate-escape-in-value"
        ),
        pytest.param(b'{"cniVersion": "1.0.0", "n\\udfff": 1}', 6, "key", id="surrogate-escape-in-key"),
        pytest.param(b'{"cniVersion": "1.0.0", "binDir": "/opt\\u0000"}', 7, "'binDir'", id="nul-in-bin-dir"),
        pytest.param(
            b'{"cniVersion": "1.0.0", "runtimeConfig": {"mac": ["\\u0000"]}}',
            7,
            "runtimeConfig.mac[0]",
            id="nul-deep",
        ),
        pytest.param(b'{"cniVersion": "1.0.0", "name": "\xff\xfe"}', 6, "'config'", id="raw-non-utf8-bytes"),
    ],
)
def test_odd_bytes_in_the_configuration_are_refused_naming_where(conf: bytes, code: int, named: str) -> None:
    with pytest.raises(CniError) as caught:
        interpret(body(ENV, conf))

    assert caught.value.code == code
    assert named in caught.value.msg


def test_a_body_that_is_not_utf8_is_a_decoding_error() -> None:
    with pytest.raises(CniError) as caught:
        interpret(b'{"env": {"CNI_COMMAND": "AD\xff"}, "config": "e30="}')

    assert caught.value.code == ErrorCode.DECODING_FAILURE


_TEXTS = st.text(alphabet=st.sampled_from('a\x00\ud800\udfffé\u2028\\"'), max_size=4) | st.text(max_size=4)
_TREES = st.recursive(
    _TEXTS | st.integers(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXTS, children, max_size=3),
    max_leaves=40,
)


@given(tree=st.dictionaries(_TEXTS, _TREES, max_size=4), ascii_only=st.booleans(), deeper=st.integers(1, 70))
def test_a_configuration_let_past_the_tree_walk_is_one_the_walk_accepts(
    tree: dict[str, Any], ascii_only: bool, deeper: int
) -> None:
    tree["deep"] = json.loads(_nested(deeper))
    raw = json.dumps(tree, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")

    if protocol._plainly_within_limits(raw):
        protocol.check_json_tree(json.loads(raw), what="config")  # raises if the shortcut was wrong


# ---- POST /delegate ---------------------------------------------------------------------------

DELEGATE_CONF = {"cniVersion": "1.0.0", "name": "hotplugged", "type": "bridge"}
DELEGATE_ENV = {**ENV, "CNI_IFNAME": "net1"}


def interpret_delegate(raw: bytes) -> Any:
    request, attributes = protocol.decode_delegate_body(raw)
    return protocol.interpret_delegate(request, attributes, daemon_config={})


@pytest.mark.parametrize(
    "netns",
    [
        pytest.param("/var/run/netns/\udcff", id="not-utf8"),
        pytest.param("/var/run/netns/a\x00b", id="nul"),
        pytest.param("/var/run/netns/a\x1bb", id="control-character"),
        pytest.param("relative/netns", id="relative"),
    ],
)
@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_a_delegate_request_with_an_unusable_netns_is_code_4_naming_it(netns: str, command: str) -> None:
    # Unchecked, the value reached the history line, whose UTF-8 encoding failed: code 999.
    raw = body({**DELEGATE_ENV, "CNI_COMMAND": command, "CNI_NETNS": netns}, DELEGATE_CONF)

    with pytest.raises(CniError) as caught:
        interpret_delegate(raw)

    assert caught.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert "CNI_NETNS" in caught.value.msg


def test_a_delegate_del_with_an_unusable_netns_runs_without_it_so_it_terminates() -> None:
    raw = body({**DELEGATE_ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": "/var/run/netns/\udcff"}, DELEGATE_CONF)

    call = interpret_delegate(raw)

    assert call is not None
    assert call.request.netns == ""
    assert call.request.ifname == "net1"


@pytest.mark.parametrize("missing", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"])
def test_a_delegate_del_missing_a_variable_still_terminates(missing: str) -> None:
    # It was refused with code 4 whatever the checkpoint held, so its caller retried it for ever.
    env = {key: value for key, value in DELEGATE_ENV.items() if key != missing}
    raw = body({**env, "CNI_COMMAND": "DEL"}, DELEGATE_CONF)

    if missing == "CNI_CONTAINERID":
        with pytest.raises(protocol.NothingRecordedError):
            interpret_delegate(raw)
        return
    request = interpret_delegate(raw).request

    assert request.container_id == DELEGATE_ENV["CNI_CONTAINERID"]
    expected = {
        "CNI_NETNS": (request.netns, ""),
        "CNI_IFNAME": (request.ifname, "eth0"),  # as on /cni, and upstream's default
        "CNI_ARGS": ((request.cni_args, request.pod.name, request.pod.uid), ((), "", "")),
    }
    assert expected[missing][0] == expected[missing][1]


@pytest.mark.parametrize(
    ("variable", "value"),
    [(param.values[0], param.values[1]) for param in ODD_VARIABLES if param.values[0] == "CNI_CONTAINERID"]
    + [(param.values[0], param.values[1]) for param in ODD_VARIABLES if param.values[0] == "CNI_IFNAME"]
    + [
        ("CNI_CONTAINERID", ""),
        ("CNI_CONTAINERID", "-leading-dash"),
        ("CNI_IFNAME", "a" * 16),
        ("CNI_IFNAME", "net/1"),
        ("CNI_IFNAME", "net 1"),
    ],
)
def test_a_delegate_del_naming_what_no_add_could_have_recorded_succeeds_at_once(
    variable: str, value: str
) -> None:
    # Every ADD checks both before it records anything, so nothing can be removed: success, as the
    # /cni DEL answers for such a container ID. It was refused with code 4, for ever.
    raw = body({**DELEGATE_ENV, "CNI_COMMAND": "DEL", variable: value}, DELEGATE_CONF)

    with pytest.raises(protocol.NothingRecordedError) as nothing:
        interpret_delegate(raw)

    str(nothing.value).encode()  # the log line can be written


@pytest.mark.parametrize(
    ("cni_args", "pod"),
    [
        pytest.param("IgnoreUnknown=1", ("", "", ""), id="no-pod"),
        pytest.param("K8S_POD_UID=u1", ("", "", "u1"), id="only-the-uid"),
        pytest.param(
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;;junk;MAC=zz", ("default", "web", ""), id="junk"
        ),
        pytest.param(
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=Web;K8S_POD_UID=u1", ("default", "", "u1"), id="bad-name"
        ),
        pytest.param("K8S_POD_NAME=we\nb;K8S_POD_UID=u1", ("", "", "u1"), id="control-character"),
        pytest.param("K8S_POD_NAME=web\udcff;K8S_POD_UID=u1", ("", "", "u1"), id="not-utf8"),
        pytest.param("K8S_POD_NAME=we\x00b;K8S_POD_NAMESPACE=default", ("default", "", ""), id="nul"),
        pytest.param(
            "IP=10.1.0.300;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web", ("default", "web", ""), id="ip"
        ),
    ],
)
@pytest.mark.parametrize("endpoint", ["/cni", "/delegate"])
def test_a_del_keeps_the_cni_args_pairs_an_add_would_accept_and_drops_the_others(
    cni_args: str, pod: tuple[str, str, str], endpoint: str
) -> None:
    # One rule for both DELs. The pod they name reaches the DEL: a hot-unplug compares it with the
    # sandbox's (another pod's is refused while it runs), and the runtime's DEL records it in its
    # history line. A pair no ADD would accept names no sandbox. Refused (code 4), the DEL never
    # terminated; dropped with the good pairs (what the /cni DEL did), the pod was lost.
    if endpoint == "/cni":
        request = interpret(body({**ENV, "CNI_COMMAND": "DEL", "CNI_ARGS": cni_args}))
    else:
        raw = body({**DELEGATE_ENV, "CNI_COMMAND": "DEL", "CNI_ARGS": cni_args}, DELEGATE_CONF)
        request = interpret_delegate(raw).request

    assert isinstance(request, SandboxRequest)
    assert (request.pod.namespace, request.pod.name, request.pod.uid) == pod
    assert all(key != "MAC" for key, _ in request.cni_args)


def _delegate_del_body(**fields: Any) -> bytes:
    envelope: dict[str, Any] = json.loads(body({**DELEGATE_ENV, "CNI_COMMAND": "DEL"}, DELEGATE_CONF))
    envelope.update(fields)
    return json.dumps({key: value for key, value in envelope.items() if value is not None}).encode()


def _config(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"config": _config(json.dumps({**CONF, "type": "multus"}).encode())}, id="multus-conf"),
        pytest.param(
            {"config": _config(b'{"cniVersion": "1.0.0", "type": "bridge"}')}, id="conf-without-name"
        ),
        pytest.param({"config": _config(b'{"name": "x", "type": "bridge", "mtu": NaN}')}, id="nan-in-conf"),
        pytest.param({"config": _config(b"{not json")}, id="conf-not-json"),
        pytest.param({"config": _config(b"[1]")}, id="conf-not-an-object"),
        pytest.param({"config": "***"}, id="config-not-base64"),
        pytest.param({"config": None}, id="no-config"),
        pytest.param({"interfaceAttributes": {"ips": ["not-an-ip"]}}, id="attributes-bad-ip"),
        pytest.param({"interfaceAttributes": {"mac": 5}}, id="attributes-mac-not-a-string"),
        pytest.param({"interfaceAttributes": "x"}, id="attributes-not-an-object"),
    ],
)
def test_a_delegate_del_is_not_refused_for_a_config_or_attributes_it_never_reads(
    fields: dict[str, Any],
) -> None:
    # A DEL replays the checkpoint. Refused for them (code 6 or 7), it failed for ever: e.g. once
    # the NAD's config had been edited into one that no longer loads, its interface could not be
    # unplugged. ADD still refuses them (tests above).
    call = interpret_delegate(_delegate_del_body(**fields))

    assert call.net is None
    assert (call.request.container_id, call.request.ifname) == ("abc123", "net1")


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
@pytest.mark.parametrize("missing", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"])
def test_a_delegate_add_or_check_missing_a_variable_is_still_code_4(command: str, missing: str) -> None:
    env = {key: value for key, value in DELEGATE_ENV.items() if key != missing}

    with pytest.raises(CniError) as caught:
        interpret_delegate(body({**env, "CNI_COMMAND": command}, DELEGATE_CONF))

    assert caught.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert missing in caught.value.msg


@pytest.mark.parametrize(
    "value", ["NaN", "Infinity", "-Infinity", "1e999", '{"portMappings": [{"hostPort": -1e400}]}']
)
@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_a_configuration_holding_a_number_json_has_not_is_a_decoding_error(value: str, command: str) -> None:
    # Accepted, such a value reached the delegates' stdin only after the ADD had been recorded,
    # failing it with code 7, and every DEL after it the same way: the sandbox stayed recorded.
    # (A DEL with it is not refused: it runs with the daemon configuration, test below.)
    raw = json.dumps(CONF)[:-1].encode() + b', "runtimeConfig": ' + value.encode() + b"}"

    with pytest.raises(CniError) as caught:
        interpret(body({**ENV, "CNI_COMMAND": command}, raw))

    assert caught.value.code == ErrorCode.DECODING_FAILURE
    assert "request field 'config'" in caught.value.msg


@pytest.mark.parametrize(
    ("attributes", "named"),
    [
        pytest.param({"ips": ["not-an-ip"]}, "interfaceAttributes.ips", id="ip-not-an-address"),
        pytest.param({"ips": ["10.1.1.1/33"]}, "interfaceAttributes.ips", id="cidr-out-of-range"),
        pytest.param(
            {"ips": ["10.1.1.1;K8S_POD_NAME=x"]}, "interfaceAttributes.ips", id="ip-smuggling-a-pair"
        ),
        pytest.param({"mac": "zz:zz:zz:zz:zz:zz"}, "interfaceAttributes.mac", id="mac-not-hex"),
        pytest.param({"mac": "aa=bb"}, "interfaceAttributes.mac", id="mac-with-equals"),
    ],
)
def test_delegate_interface_attributes_get_the_annotation_elements_checks(
    attributes: dict[str, Any], named: str
) -> None:
    # They become the delegate's CNI_ARGS (IP=, MAC=) and runtimeConfig, as an annotation's ips and
    # mac do, which are refused with code 7; unchecked, every delegate parsing them failed (code 999).
    raw = json.loads(body({**DELEGATE_ENV, "CNI_COMMAND": "ADD"}, DELEGATE_CONF))
    raw["interfaceAttributes"] = attributes

    with pytest.raises(CniError) as caught:
        interpret_delegate(json.dumps(raw).encode())

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert named in caught.value.msg


def test_valid_delegate_interface_attributes_are_kept() -> None:
    raw = json.loads(body({**DELEGATE_ENV, "CNI_COMMAND": "ADD"}, DELEGATE_CONF))
    raw["interfaceAttributes"] = {"ips": ["10.1.1.1/24", "fd00::1"], "mac": "0a:58:0a:01:01:01"}

    call = interpret_delegate(json.dumps(raw).encode())

    assert call.attributes.ips == ("10.1.1.1/24", "fd00::1")
    assert call.attributes.mac == "0a:58:0a:01:01:01"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"cniVersion": "1.0.0", "name": "m\xff", "type": "multus-shim"}', id="not-utf8"),
        pytest.param(
            b'{"cniVersion": "1.0.0", "name": "m\\u0000", "type": "multus-shim"}', id="nul-in-a-string"
        ),
        pytest.param(b'{"cniVersion": "1.0.0", "runtimeConfig": NaN}', id="nan"),
        pytest.param(b"[]", id="not-an-object"),
        pytest.param(b"{", id="not-json"),
        pytest.param(json.dumps({**CONF, "delegates": "x"}).encode(), id="delegates-not-a-list"),
        pytest.param(json.dumps({**CONF, "cniVersion": 5}).encode(), id="cni-version-not-a-string"),
    ],
)
def test_a_del_whose_configuration_is_unusable_runs_with_the_daemon_configuration_so_it_terminates(
    raw: bytes,
) -> None:
    # The runtime sends a DEL the conf its ADD got. Refused (code 4, 6 or 7) for a conf its ADD
    # refused too, or for one edited since, the DEL failed at every retry, for ever, and a sandbox
    # the checkpoint holds (or the spool entry of such a DEL) was never torn down (invariant 5b).
    request = interpret(body({**ENV, "CNI_COMMAND": "DEL"}, raw), {"binDir": "/daemon/bin"})

    assert isinstance(request, SandboxRequest)
    assert request.command is Command.DEL
    assert (request.container_id, request.ifname) == ("abc123", "eth0")
    assert request.conf.bin_dir == "/daemon/bin"


@pytest.mark.parametrize(
    "daemon_config",
    [{"systemNamespaces": 5}, {"defaultNetworks": "x"}, {"maxNetworksPerPod": 0}],
    ids=["system-namespaces", "default-networks", "max-networks-per-pod"],
)
@pytest.mark.parametrize("raw", [json.dumps(CONF).encode(), b""], ids=["with-conf", "without-conf"])
def test_a_del_runs_even_when_a_per_request_key_of_daemon_config_is_unusable(
    daemon_config: dict[str, object], raw: bytes
) -> None:
    """Such a key fails every ADD (code 7, naming it); it failed every DEL too, for ever, since the
    DEL's fallback, the daemon configuration alone, did not parse either (invariant 5b)."""
    with pytest.raises(CniError) as refused:
        interpret(body(ENV, json.dumps(CONF).encode()), daemon_config)
    assert refused.value.code == ErrorCode.INVALID_NETWORK_CONFIG

    request = interpret(body({**ENV, "CNI_COMMAND": "DEL"}, raw), daemon_config)

    assert isinstance(request, SandboxRequest)
    assert (request.command, request.container_id) == (Command.DEL, "abc123")


def test_an_add_whose_configuration_has_a_key_of_the_wrong_type_is_still_refused() -> None:
    with pytest.raises(CniError) as caught:
        interpret(body(ENV, json.dumps({**CONF, "delegates": "x"}).encode()), {"binDir": "/daemon/bin"})

    assert caught.value.code in (ErrorCode.DECODING_FAILURE, ErrorCode.INVALID_NETWORK_CONFIG)


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_a_namespace_the_daemon_has_no_descriptor_left_to_open_is_code_11_not_none(command: str) -> None:
    """In a burst of sandboxes at the open-files limit, the look at a live pod's namespace failed
    with EMFILE and the runtime heard code 4, "is not a network namespace", for a valid one."""
    with descriptors_exhausted(), pytest.raises(CniError) as caught:
        interpret(body({**ENV, "CNI_COMMAND": command}))

    assert caught.value.code == ErrorCode.TRY_AGAIN_LATER
    assert NETNS in caught.value.msg


@pytest.mark.parametrize("key", ["daemonSocketDir", "DAEMONSOCKETDIR", "daemon\u017focketDir"])
def test_a_spooled_del_is_addressed_to_the_socket_dir_the_shim_read(key: str) -> None:
    """The spool reads ``daemonSocketDir`` as the shim reads it, Go's way: a key spelt with a long s
    (U+017F) is that key, so an entry is not taken for another daemon's (nor the reverse)."""
    conf = {key: "/run/elsewhere"}
    request = protocol.ShimRequest(env={}, stdin=json.dumps(conf).encode(), stdin_conf=conf)

    assert spool._address(request, b"{}") == Path("/run/elsewhere")
