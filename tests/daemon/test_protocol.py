"""Decoding shim requests: every malformed input is a CNI error naming the field, never a crash."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.attach.requests import Command, NodeRequest, SandboxRequest
from app.cni.types import CniError, ErrorCode
from app.daemon import protocol

CONF = {"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus-shim"}
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/var/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=u1",
    "CNI_PATH": "/opt/cni/bin",
}


def body(env: dict[str, str], conf: dict[str, Any] | bytes = CONF) -> bytes:
    raw = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    return json.dumps({"env": env, "config": base64.b64encode(raw).decode()}).encode()


def interpret(raw: bytes, daemon_config: dict[str, Any] | None = None) -> SandboxRequest | NodeRequest:
    return protocol.interpret(protocol.decode_body(raw), daemon_config=daemon_config or {})


def test_an_upstream_shim_request_becomes_a_sandbox_request() -> None:
    request = interpret(body(ENV), {"clusterNetwork": "/etc/cni/net.d/10-x.conflist", "binDir": "/b"})

    assert isinstance(request, SandboxRequest)
    assert request.command is Command.ADD
    assert (request.container_id, request.netns, request.ifname) == ("abc123", "/var/run/netns/x", "eth0")
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
    assert protocol.parse_cni_args("A=1;;B=x=y;") == (("A", "1"), ("B", "x=y"))


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


@settings(max_examples=300, deadline=None)
@given(
    env=st.dictionaries(st.sampled_from([*ENV, "X"]), st.text(max_size=20) | st.integers(), max_size=7),
    conf=st.dictionaries(
        st.sampled_from(
            [
                "cniVersion",
                "name",
                "clusterNetwork",
                "defaultNetworks",
                "runtimeConfig",
                "cni.dev/valid-attachments",
                "binDir",
            ]
        ),
        json_values,
        max_size=5,
    ),
)
def test_arbitrary_json_envelopes_give_a_cni_error_or_a_request(
    env: dict[str, Any], conf: dict[str, Any]
) -> None:
    raw = json.dumps({"env": env, "config": base64.b64encode(json.dumps(conf).encode()).decode()}).encode()
    assert _error_of(raw) in (
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
