"""The shim validates an invocation the way Go's CNI skel does, before it contacts the daemon.

No daemon runs in these tests: every case must be answered by the shim alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.shim.helpers import conf_bytes, run_shim

SUPPORTED = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
PLUGIN_SUPPORTS = 'plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]'
NOWHERE = "/nonexistent/multus-shim-test"


def test_without_a_command_prints_about_text_on_stderr(launcher: Path) -> None:
    run = run_shim(launcher, env={"CNI_COMMAND": None})
    assert run.returncode == 0
    assert run.stdout == b""
    assert run.stderr == (
        b"meta-plugin that delegates to other CNI plugins\n"
        b"CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"
    )


def test_an_empty_command_counts_as_no_command(launcher: Path) -> None:
    run = run_shim(launcher, env={"CNI_COMMAND": ""})
    assert run.returncode == 0
    assert run.stderr.startswith(b"meta-plugin")


def test_version_prints_supported_versions_without_reading_stdin(launcher: Path) -> None:
    run = run_shim(launcher, b"not even json", base={"CNI_COMMAND": "VERSION"})
    assert run.success() == (
        b'{"cniVersion":"1.1.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'
    )


def test_unknown_command_is_code_4_after_the_config_checks(launcher: Path) -> None:
    assert run_shim(launcher, conf_bytes(NOWHERE), env={"CNI_COMMAND": "FOO"}).error() == {
        "code": 4,
        "msg": "unknown CNI_COMMAND: FOO",
    }
    # Go skel parses the config before looking at the command.
    assert run_shim(launcher, b"{", env={"CNI_COMMAND": "FOO"}).error()["code"] == 6


@pytest.mark.parametrize(
    ("command", "removed", "missing"),
    [
        ("ADD", ["CNI_PATH"], "CNI_PATH"),
        (
            "ADD",
            ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
            "CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH",
        ),
        ("CHECK", ["CNI_NETNS"], "CNI_NETNS"),
        ("DEL", ["CNI_CONTAINERID", "CNI_IFNAME"], "CNI_CONTAINERID,CNI_IFNAME"),
        ("GC", ["CNI_PATH"], "CNI_PATH"),
        ("STATUS", ["CNI_PATH"], "CNI_PATH"),
    ],
)
def test_missing_required_variables_are_reported_together(
    launcher: Path, command: str, removed: list[str], missing: str
) -> None:
    env: dict[str, str | None] = {"CNI_COMMAND": command, **dict.fromkeys(removed)}
    assert run_shim(launcher, conf_bytes(NOWHERE), env=env).error() == {
        "code": 4,
        "msg": f"required env variables [{missing}] missing",
    }


def test_a_variable_set_to_the_empty_string_is_missing(launcher: Path) -> None:
    error = run_shim(launcher, conf_bytes(NOWHERE), env={"CNI_IFNAME": ""}).error()
    assert error == {"code": 4, "msg": "required env variables [CNI_IFNAME] missing"}


def test_del_needs_no_netns_and_gc_needs_no_container(launcher: Path, tmp_path: Path) -> None:
    # Both get past validation: DEL is spooled for want of a daemon, GC fails for want of one.
    env = {"MULTUS_SHIM_WAIT_SECONDS": "0"}
    spool = tmp_path / "spool"
    deleted = run_shim(
        launcher,
        conf_bytes(NOWHERE, spoolDir=str(spool)),
        env={**env, "CNI_COMMAND": "DEL", "CNI_NETNS": None},
    )
    assert (deleted.returncode, len(list(spool.glob("del-*.json")))) == (0, 1)
    gc_env = {
        **env,
        "CNI_COMMAND": "GC",
        "CNI_CONTAINERID": None,
        "CNI_IFNAME": "bad/name",
        "CNI_NETNS": None,
    }
    assert run_shim(launcher, conf_bytes(NOWHERE), env=gc_env).error()["code"] == 11


@pytest.mark.parametrize("container_id", ["a/b", "-leading-dash", "_x", "x y", "ok\n", "é"])
def test_invalid_container_id_is_code_4_with_the_id_as_details(launcher: Path, container_id: str) -> None:
    assert run_shim(launcher, conf_bytes(NOWHERE), env={"CNI_CONTAINERID": container_id}).error() == {
        "code": 4,
        "msg": "invalid characters in containerID",
        "details": container_id,
    }


def test_container_id_is_checked_before_missing_variables_are_reported(launcher: Path) -> None:
    error = run_shim(launcher, b"", env={"CNI_CONTAINERID": "a/b", "CNI_PATH": None}).error()
    assert error["msg"] == "invalid characters in containerID"


@pytest.mark.parametrize(
    ("ifname", "msg", "details"),
    [
        ("a" * 16, "interface name is too long", "interface name should be less than 16 characters"),
        ("ééééééééé", "interface name is too long", "interface name should be less than 16 characters"),
        (".", "interface name is . or ..", None),
        ("..", "interface name is . or ..", None),
        ("eth/0", "interface name contains / or : or whitespace characters", None),
        ("eth0:1", "interface name contains / or : or whitespace characters", None),
        ("eth 0", "interface name contains / or : or whitespace characters", None),
        ("eth\u00a00", "interface name contains / or : or whitespace characters", None),
    ],
)
def test_invalid_interface_name_is_code_4(launcher: Path, ifname: str, msg: str, details: str | None) -> None:
    expected = {"code": 4, "msg": msg} if details is None else {"code": 4, "msg": msg, "details": details}
    assert run_shim(launcher, conf_bytes(NOWHERE), env={"CNI_IFNAME": ifname}).error() == expected


def test_fifteen_byte_interface_name_is_accepted(launcher: Path) -> None:
    run = run_shim(
        launcher, conf_bytes(NOWHERE), env={"CNI_IFNAME": "a" * 15, "MULTUS_SHIM_WAIT_SECONDS": "0"}
    )
    assert run.error()["code"] == 11  # got as far as looking for the daemon


@pytest.mark.parametrize(
    ("stdin", "reason"),
    [
        (b"", "unexpected end of JSON input"),
        (b"   \n", "unexpected end of JSON input"),
        (b"hello", "invalid character 'h' looking for beginning of value"),
        (b'{"name": "x"} x', "invalid character 'x' after top-level value"),
        (b'{"name": NaN}', "invalid character 'N' looking for beginning of value"),
        (b'{"name": "x",}', "invalid character '}' looking for beginning of object key string"),
        (b'{"name" "x"}', "invalid character '\"' after object key"),
        (b'{"name": "\\q"}', "invalid character 'q' in string escape code"),
        (b'{"name": "\x01"}', "invalid character '\\x01' in string literal"),
        (b'{"name": "x"', "unexpected end of JSON input"),
        (b"\xef\xbb\xbf{}", "invalid character '\\ufeff' looking for beginning of value"),
        (
            b"[1]",
            'json: cannot unmarshal array into Go value of type struct { Name string "json:\\"name\\"" }',
        ),
        (b'{"name": 5}', "json: cannot unmarshal number into Go struct field .name of type string"),
        (b"[" * 100000, "exceeded max depth"),
    ],
)
def test_stdin_that_is_not_a_config_object_is_code_6(launcher: Path, stdin: bytes, reason: str) -> None:
    assert run_shim(launcher, stdin).error() == {
        "code": 6,
        "msg": f"error unmarshall network config: {reason}",
    }


@pytest.mark.parametrize("stdin", [b"{}", b"null", b'{"name": ""}', b'{"name": null}', b'{"type": "x"}'])
def test_config_without_a_name_is_code_7(launcher: Path, stdin: bytes) -> None:
    assert run_shim(launcher, stdin).error() == {"code": 7, "msg": "missing network name"}


@pytest.mark.parametrize("name", ["bad name", "-x", "ünï", "a\u2028"])
def test_network_name_with_invalid_characters_is_code_7(launcher: Path, name: str) -> None:
    assert run_shim(launcher, json.dumps({"name": name}).encode()).error() == {
        "code": 7,
        "msg": "invalid characters found in network name",
        "details": name,
    }


def test_keys_match_case_insensitively_like_go(launcher: Path) -> None:
    # "NAME" is Go's "name"; the later duplicate wins.
    run = run_shim(launcher, b'{"NAME": "bad name", "Name": "good", "cniversion": "9.9.9"}')
    assert run.error() == {
        "code": 1,
        "msg": "incompatible CNI versions",
        "details": f'config is "9.9.9", {PLUGIN_SUPPORTS}',
    }


@pytest.mark.parametrize(("command", "floor"), [("CHECK", "0.4.0"), ("GC", "1.1.0"), ("STATUS", "1.1.0")])
def test_commands_below_their_version_floor_are_code_1(launcher: Path, command: str, floor: str) -> None:
    below = SUPPORTED[SUPPORTED.index(floor) - 1]
    for version in (below, None):  # absent cniVersion means 0.1.0
        run = run_shim(launcher, conf_bytes(NOWHERE, cniVersion=version), env={"CNI_COMMAND": command})
        assert run.error() == {"code": 1, "msg": f"config version does not allow {command}"}


@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_unsupported_version_is_code_1_with_go_details(launcher: Path, command: str) -> None:
    run = run_shim(launcher, conf_bytes(NOWHERE, cniVersion="1.0"), env={"CNI_COMMAND": command})
    assert run.error() == {
        "code": 1,
        "msg": "incompatible CNI versions",
        "details": f'config is "1.0", {PLUGIN_SUPPORTS}',
    }


def test_versions_beyond_ours_do_not_allow_check(launcher: Path) -> None:
    run = run_shim(launcher, conf_bytes(NOWHERE, cniVersion="2.0.0"), env={"CNI_COMMAND": "CHECK"})
    assert run.error() == {"code": 1, "msg": "plugin version does not allow CHECK"}


@pytest.mark.parametrize(
    ("version", "msg"),
    [
        ("1.x.0", 'failed to convert minor version part "x": strconv.Atoi: parsing "x": invalid syntax'),
        ("1.0.0.0", 'invalid version "1.0.0.0": too many parts'),
        (
            5,
            "decoding version from network config: "
            "json: cannot unmarshal number into Go struct field .cniVersion of type string",
        ),
    ],
)
def test_unparsable_version_on_check_is_code_6(launcher: Path, version: object, msg: str) -> None:
    run = run_shim(launcher, conf_bytes(NOWHERE, cniVersion=version), env={"CNI_COMMAND": "CHECK"})
    assert run.error() == {"code": 6, "msg": msg}


@pytest.mark.parametrize(
    ("key", "value", "kind", "go_type"),
    [
        ("daemonSocketDir", 5, "number", "string"),
        ("logToStderr", "yes", "string", "bool"),
        ("logFile", [], "array", "string"),
    ],
)
def test_shim_keys_of_the_wrong_type_are_code_7(
    launcher: Path, key: str, value: object, kind: str, go_type: str
) -> None:
    run = run_shim(launcher, conf_bytes(None, **{key: value}))
    assert run.error() == {
        "code": 7,
        "msg": f"invalid CNI configuration passed to multus-shim: json: cannot unmarshal {kind} "
        f"into Go struct field ShimNetConf.{key} of type {go_type}",
    }


@pytest.mark.parametrize(("key", "value"), [("daemonSocketDir", 5), ("logToStderr", "yes"), ("logFile", [])])
def test_a_del_whose_shim_keys_are_unusable_is_spooled_and_succeeds(
    launcher: Path, tmp_path: Path, key: str, value: object
) -> None:
    """A DEL must not fail for ever on a conf no retry can fix (upstream's answers success): it is
    spooled for the daemon to replay."""
    spool = tmp_path / "spool"

    run = run_shim(
        launcher, conf_bytes(None, spoolDir=str(spool), **{key: value}), env={"CNI_COMMAND": "DEL"}
    )

    assert (run.returncode, run.stdout) == (0, b"")
    [entry] = spool.glob("del-*.json")
    assert json.loads(entry.read_bytes())["env"]["CNI_COMMAND"] == "DEL"
