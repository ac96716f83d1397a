"""What the shim prints for the daemon's answer: converted ADD results, nothing, or a CNI error."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.shim.helpers import StubDaemon, conf_bytes, go_marshal_indent, http_reply, json_reply, run_shim

DAEMON_RESULT = {
    "cniVersion": "1.1.0",
    "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
    "interfaces": [
        {"mac": "0a:58:0a:01:00:01", "name": "br0"},
        {
            "mac": "0a:58:0a:01:00:05",
            "mtu": 1450,
            "name": "eth0",
            "pciID": "0000:00:1f.6",
            "sandbox": "/var/run/netns/cni-1234",
            "socketPath": "/run/vhost.sock",
        },
    ],
    "ips": [
        {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1},
        {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 1},
        {"address": "10.2.0.5/24", "interface": 0},
    ],
    "routes": [
        {
            "advmss": 1360,
            "dst": "0.0.0.0/0",
            "gw": "10.1.0.1",
            "mtu": 1400,
            "priority": 100,
            "scope": 0,
            "table": 0,
        },
        {"dst": "::/0", "gw": "fd00::1"},
        {"dst": "10.3.0.0/16"},
    ],
}

EXPECTED_V1 = {
    "cniVersion": "<version>",
    "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
    "interfaces": DAEMON_RESULT["interfaces"],
    "ips": DAEMON_RESULT["ips"],
    "routes": DAEMON_RESULT["routes"],
}
EXPECTED_V04 = {
    "cniVersion": "<version>",
    "interfaces": [
        {"name": "br0", "mac": "0a:58:0a:01:00:01"},
        {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/cni-1234"},
    ],
    "ips": [
        {"version": "4", "interface": 1, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
        {"version": "6", "interface": 1, "address": "fd00::5/64", "gateway": "fd00::1"},
        {"version": "4", "interface": 0, "address": "10.2.0.5/24"},
    ],
    "routes": [  # Go's 0.4.0 result shares the route type with 1.1.0: every field kept, struct order
        {
            "dst": "0.0.0.0/0",
            "gw": "10.1.0.1",
            "mtu": 1400,
            "advmss": 1360,
            "priority": 100,
            "table": 0,
            "scope": 0,
        },
        {"dst": "::/0", "gw": "fd00::1"},
        {"dst": "10.3.0.0/16"},
    ],
    "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
}
EXPECTED_V02 = {
    "cniVersion": "<version>",
    "ip4": {
        "ip": "10.1.0.5/24",
        "gateway": "10.1.0.1",
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "10.3.0.0/16"}],
    },
    "ip6": {"ip": "fd00::5/64", "gateway": "fd00::1", "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
    "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
}
PLACEHOLDER = {  # upstream's answer for a pod it cannot find: no dns, one interface, one address
    "cniVersion": "1.1.0",
    "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
    "ips": [{"address": "0.0.0.0/0", "gateway": "0.0.0.0"}],
}


def with_version(expected: Mapping[str, object], version: str) -> dict[str, object]:
    return {**expected, "cniVersion": version}


def add(launcher: Path, daemon: StubDaemon, reply: bytes, version: str | None = "1.1.0") -> bytes:
    daemon.replies = [reply]
    return run_shim(launcher, conf_bytes(daemon.socket_dir, cniVersion=version)).success()


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1.1.0", with_version(EXPECTED_V1, "1.1.0")),
        ("1.0.0", with_version(EXPECTED_V1, "1.0.0")),
        ("0.4.0", with_version(EXPECTED_V04, "0.4.0")),
        ("0.3.1", with_version(EXPECTED_V04, "0.3.1")),
        ("0.3.0", with_version(EXPECTED_V04, "0.3.0")),
        ("0.2.0", with_version(EXPECTED_V02, "0.2.0")),
        ("0.1.0", with_version(EXPECTED_V02, "0.1.0")),
        (None, with_version(EXPECTED_V02, "0.1.0")),
        ("", with_version(EXPECTED_V02, "0.1.0")),
    ],
)
def test_add_result_is_converted_to_the_conf_version(
    launcher: Path, daemon: StubDaemon, version: str | None, expected: dict[str, object]
) -> None:
    stdout = add(launcher, daemon, json_reply(200, {"Result": DAEMON_RESULT}), version)
    assert stdout == go_marshal_indent(expected)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (
            "1.0.0",
            {"cniVersion": "1.0.0", "interfaces": PLACEHOLDER["interfaces"], "ips": PLACEHOLDER["ips"]},
        ),
        (
            "0.3.1",
            {
                "cniVersion": "0.3.1",
                "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
                "ips": [{"version": "4", "address": "0.0.0.0/0", "gateway": "0.0.0.0"}],
                "dns": {},
            },
        ),
        ("0.2.0", {"cniVersion": "0.2.0", "ip4": {"ip": "0.0.0.0/0", "gateway": "0.0.0.0"}, "dns": {}}),
    ],
)
def test_empty_dns_is_left_out_of_1x_and_printed_empty_for_0x(
    launcher: Path, daemon: StubDaemon, version: str, expected: dict[str, object]
) -> None:
    assert add(launcher, daemon, json_reply(200, {"Result": PLACEHOLDER}), version) == go_marshal_indent(
        expected
    )


def test_result_keys_are_matched_case_insensitively(launcher: Path, daemon: StubDaemon) -> None:
    reply = json_reply(
        200, {"result": {"CNIVersion": "1.1.0", "IPS": [{"Address": "10.0.0.2/8", "interface": 0}]}}
    )
    assert add(launcher, daemon, reply, "1.0.0") == go_marshal_indent(
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/8", "interface": 0}]}
    )


def test_a_conf_key_spelt_with_a_long_s_is_read_as_go_reads_it(launcher: Path, daemon: StubDaemon) -> None:
    # "cniVer\u017fion" is cniVersion to Go's decoder (upstream's skel and shim); the shim took the
    # conf as one without a version and printed the result as 0.1.0.
    daemon.replies = [json_reply(200, {"Result": DAEMON_RESULT})]
    conf = conf_bytes(daemon.socket_dir, cniVersion=None, **{"cniVer\u017fion": "0.4.0"})

    stdout = run_shim(launcher, conf).success()

    assert stdout == go_marshal_indent(with_version(EXPECTED_V04, "0.4.0"))


def test_unknown_result_fields_and_zero_values_are_dropped(launcher: Path, daemon: StubDaemon) -> None:
    result = {
        "cniVersion": "1.0.0",
        "extra": {"x": 1},
        "interfaces": [{"name": "", "mac": "", "mtu": 0, "future": True}],
        "ips": [{"address": "10.0.0.2/8", "gateway": None}],
        "routes": [],
        "dns": {"nameservers": [], "domain": ""},
    }
    assert add(launcher, daemon, json_reply(200, {"Result": result})) == go_marshal_indent(
        {"cniVersion": "1.1.0", "interfaces": [{"name": ""}], "ips": [{"address": "10.0.0.2/8"}]}
    )


def test_strings_are_escaped_like_go_and_non_ascii_is_raw(launcher: Path, daemon: StubDaemon) -> None:
    result = {"interfaces": [{"name": 'é<&>\u2028\u2029\t"\\'}], "ips": [{"address": "10.0.0.2/8"}]}
    stdout = add(launcher, daemon, json_reply(200, {"Result": result}))
    assert (
        stdout
        == (
            '{\n    "cniVersion": "1.1.0",\n    "interfaces": [\n        {\n'
            '            "name": "é\\u003c\\u0026\\u003e\\u2028\\u2029\\t\\"\\\\"\n        }\n    ],\n'
            '    "ips": [\n        {\n            "address": "10.0.0.2/8"\n        }\n    ]\n}'
        ).encode()
    )


@pytest.mark.parametrize("framing", ["chunked", "eof"])
def test_add_result_framing_by_chunks_or_by_eof_is_understood(
    launcher: Path, daemon: StubDaemon, framing: str
) -> None:
    body = json.dumps({"Result": PLACEHOLDER}).encode()
    stdout = add(
        launcher, daemon, http_reply(200, body, content_type="text/plain; charset=utf-8", framing=framing)
    )
    assert json.loads(stdout)["ips"] == PLACEHOLDER["ips"]


def test_conversion_to_0x_without_any_address_is_an_error(launcher: Path, daemon: StubDaemon) -> None:
    daemon.replies = [json_reply(200, {"Result": {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0"}]}})]
    run = run_shim(launcher, conf_bytes(daemon.socket_dir, cniVersion="0.2.0"))
    assert run.error() == {"code": 1, "msg": "cannot convert: no valid IP addresses"}


@pytest.mark.parametrize(
    ("reply", "msg"),
    [
        (http_reply(200), "multus daemon answered ADD with an empty body"),
        (json_reply(200, {}), "multus daemon answered ADD without a result"),
        (json_reply(200, {"Result": None}), "multus daemon answered ADD without a result"),
        (
            http_reply(200, b"ok"),
            "failed to unmarshal response 'ok': invalid character 'o' looking for beginning of value",
        ),
        (json_reply(200, [1]), "failed to unmarshal response '[1]': not a JSON object"),
        (
            json_reply(200, {"Result": {"interfaces": [{"name": "eth0", "mtu": "9000"}]}}),
            "failed to unmarshal response: json: cannot unmarshal string into Go struct field "
            "Result.interfaces.mtu of type int",
        ),
        (
            json_reply(200, {"Result": {"ips": [{"address": "10.0.0.1"}]}}),
            "failed to unmarshal response: Result.ips.address: invalid CIDR address: 10.0.0.1",
        ),
        (
            json_reply(200, {"Result": {"cniVersion": "0.4.0", "ips": [{"address": "10.0.0.1/8"}]}}),
            "no converter for CNI result version 0.4.0 to 1.1.0",
        ),
    ],
)
def test_an_unusable_add_answer_is_code_999_not_a_crash(
    launcher: Path, daemon: StubDaemon, reply: bytes, msg: str
) -> None:
    daemon.replies = [reply]
    assert run_shim(launcher, conf_bytes(daemon.socket_dir)).error() == {"code": 999, "msg": msg}


@pytest.mark.parametrize("command", ["DEL", "CHECK", "GC", "STATUS"])
def test_success_of_other_commands_prints_nothing(launcher: Path, daemon: StubDaemon, command: str) -> None:
    daemon.replies = [http_reply(200, b'{"Result": "ignored"}')]
    assert run_shim(launcher, conf_bytes(daemon.socket_dir), env={"CNI_COMMAND": command}).success() == b""


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "GC", "STATUS"])
@pytest.mark.parametrize(
    "error",
    [
        {"code": 11, "msg": "try again later"},
        {"code": 50, "msg": "plugin not ready", "details": "no leases"},
        {"code": 107, "msg": "plugin specific", "details": ""},
    ],
)
def test_daemon_cni_errors_keep_their_code(
    launcher: Path, daemon: StubDaemon, command: str, error: dict[str, object]
) -> None:
    daemon.replies = [json_reply(400, error)]
    run = run_shim(launcher, conf_bytes(daemon.socket_dir), env={"CNI_COMMAND": command})
    assert run.error() == {key: value for key, value in error.items() if value}


@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_upstream_text_errors_are_code_999_with_status_and_body(
    launcher: Path, daemon: StubDaemon, command: str
) -> None:
    body = b'ContainerID:"c5" Netns:"/x" IfName:"eth0" Args:"" Path:"" ERRORED: Link not found\n'
    daemon.replies = [http_reply(400, body, content_type="text/plain; charset=utf-8")]
    run = run_shim(launcher, conf_bytes(daemon.socket_dir), env={"CNI_COMMAND": command})
    assert run.error() == {"code": 999, "msg": f"CNI request failed with status 400: '{body.decode()}'"}


@pytest.mark.parametrize(
    "body",
    [
        b'{"code": 0, "msg": "x"}',
        b'{"code": "11", "msg": "x"}',
        b'{"code": true, "msg": "x"}',
        b'{"msg": "x"}',
        b"[]",
    ],
)
def test_json_bodies_that_are_not_cni_errors_are_reported_as_text(
    launcher: Path, daemon: StubDaemon, body: bytes
) -> None:
    daemon.replies = [http_reply(500, body)]
    run = run_shim(launcher, conf_bytes(daemon.socket_dir))
    assert run.error() == {"code": 999, "msg": f"CNI request failed with status 500: '{body.decode()}'"}


def test_del_failure_is_reported_unlike_upstream(launcher: Path, daemon: StubDaemon) -> None:
    daemon.replies = [http_reply(400, b"DelegateDel: error invoking DelegateDel - macvlan: Link not found\n")]
    run = run_shim(launcher, conf_bytes(daemon.socket_dir), env={"CNI_COMMAND": "DEL"})
    assert run.error()["code"] == 999


def test_a_garbled_response_is_code_999(launcher: Path, daemon: StubDaemon) -> None:
    daemon.replies = [b"SSH-2.0-OpenSSH_9.6\r\n\r\n"]
    assert run_shim(launcher, conf_bytes(daemon.socket_dir), env={"CNI_COMMAND": "DEL"}).error() == {
        "code": 999,
        "msg": f'malformed HTTP response from multus daemon at {daemon.path}: "SSH-2.0-OpenSSH_9.6"',
    }
