"""Finding plugins on CNI_PATH, the environment each command gets, and the spec's identifier rules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.cni import invoke, names
from app.cni.types import CniError, ContainerId, ErrorCode, IfName, RuntimeConf

RT = RuntimeConf(
    container_id=ContainerId("ctr-1"),
    netns="/var/run/netns/a",
    ifname=IfName("net1"),
    args=(("IgnoreUnknown", "1"), ("K8S_POD_NAME", "p")),
)


@pytest.fixture
def two_dirs(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second):
        directory.mkdir()
    for plugin, directory in [("bridge", second), ("tuning", second), ("tuning", first), ("macvlan", second)]:
        _executable(directory / plugin, directory.name)
    (first / "macvlan").mkdir()  # a directory is not a plugin
    return first, second


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.mark.parametrize(("plugin", "found_in"), [("bridge", 1), ("tuning", 0), ("macvlan", 1)])
def test_the_first_directory_holding_an_executable_regular_file_wins(
    two_dirs: tuple[Path, Path], plugin: str, found_in: int
) -> None:
    paths = [str(two_dirs[0]), "", str(two_dirs[1])]

    assert invoke.find_in_path(plugin, paths) == str(two_dirs[found_in] / plugin)


def test_repeated_lookups_follow_the_files_as_they_come_and_go(two_dirs: tuple[Path, Path]) -> None:
    first, second = two_dirs
    paths = [str(first), str(second)]
    answers = [invoke.find_in_path("tuning", paths)]
    (first / "tuning").unlink()
    answers.append(invoke.find_in_path("tuning", paths))
    _executable(first / "tuning", "first again")  # found in the second before: the first wins again
    answers.append(invoke.find_in_path("tuning", paths))
    (first / "tuning").unlink()
    (first / "tuning").mkdir()  # no longer a regular file
    answers.append(invoke.find_in_path("tuning", paths))

    assert answers == [
        str(first / "tuning"),
        str(second / "tuning"),
        str(first / "tuning"),
        str(second / "tuning"),
    ]


def test_a_missing_plugin_names_every_directory_searched(two_dirs: tuple[Path, Path]) -> None:
    with pytest.raises(CniError) as caught:
        invoke.find_in_path("ptp", [str(two_dirs[0]), str(two_dirs[1])])

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg == f'failed to find plugin "ptp" in path [{two_dirs[0]} {two_dirs[1]}]'


@pytest.mark.parametrize(
    "plugin", ["", ".", "..", "../bridge", "a/b", "/usr/lib/cni/bridge", "x..y", "nul\0"]
)
def test_plugin_types_that_are_not_plain_file_names_are_refused(
    two_dirs: tuple[Path, Path], plugin: str
) -> None:
    with pytest.raises(CniError) as caught:
        invoke.find_in_path(plugin, [str(two_dirs[1])])

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg.startswith(f'invalid plugin type "{plugin}": ')


def test_attachment_commands_get_the_runtime_identity_and_no_inherited_cni_variables() -> None:
    env = invoke.plugin_env(
        command="DEL",
        cni_path=["/opt/cni/bin", "/usr/lib/cni"],
        base_env={"PATH": "/bin", "CNI_NETNS": "x", "MULTUS_PY_DELEGATE": "other/eth9"},
        rt=RT,
    )

    assert env == {
        "PATH": "/bin",
        "CNI_COMMAND": "DEL",
        "CNI_CONTAINERID": "ctr-1",
        "CNI_NETNS": "/var/run/netns/a",
        "CNI_IFNAME": "net1",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p",
        "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
        "MULTUS_PY_DELEGATE": "ctr-1/net1",
    }


@pytest.mark.parametrize("command", ["GC", "STATUS", "VERSION"])
def test_network_wide_commands_get_only_command_and_path(command: invoke.Command) -> None:
    env = invoke.plugin_env(command=command, cni_path=["/opt/cni/bin"], base_env={"PATH": "/bin"}, rt=RT)

    assert env == {"PATH": "/bin", "CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}


def test_attachment_commands_without_a_runtime_conf_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="CNI_COMMAND=ADD needs a RuntimeConf"):
        invoke.plugin_env(command="ADD", cni_path=[], base_env={})


def test_a_plugin_error_object_on_stdout_is_passed_through_unchanged() -> None:
    error = invoke.failure_error(
        plugin_path="/p",
        returncode=1,
        stdout=b'{"code": 123, "msg": "vendor", "details": "d"}',
        stderr=b"noise",
    )

    assert (error.code, error.msg, error.details) == (123, "vendor", "d")


@pytest.mark.parametrize(
    "stdout", [b"", b'{"code": 0, "msg": "zero is success"}', b'{"msg": "no code"}', b"oops"]
)
def test_failures_without_an_error_object_are_internal_and_carry_stderr(stdout: bytes) -> None:
    error = invoke.failure_error(plugin_path="/p", returncode=2, stdout=stdout, stderr=b"line1\nline2\n")

    assert error.code == ErrorCode.INTERNAL
    assert error.msg.startswith("plugin /p failed (exit status 2)")
    assert error.details == "line1\nline2"


@pytest.mark.parametrize(
    ("check", "value", "code"),
    [
        (names.check_container_id, "", ErrorCode.UNKNOWN_CONTAINER),
        (names.check_container_id, "_leading", ErrorCode.INVALID_ENVIRONMENT),
        (names.check_container_id, "abc\n", ErrorCode.INVALID_ENVIRONMENT),
        (names.check_network_name, "", ErrorCode.INVALID_NETWORK_CONFIG),
        (names.check_network_name, "a:b", ErrorCode.INVALID_NETWORK_CONFIG),
        (names.check_ifname, "", ErrorCode.INVALID_ENVIRONMENT),
        (names.check_ifname, "..", ErrorCode.INVALID_ENVIRONMENT),
        (names.check_ifname, "eth 0", ErrorCode.INVALID_ENVIRONMENT),
        (names.check_ifname, "eth:0", ErrorCode.INVALID_ENVIRONMENT),
        (names.check_ifname, "abcdefghijklmnop", ErrorCode.INVALID_ENVIRONMENT),
        (names.check_ifname, "ééééééééé", ErrorCode.INVALID_ENVIRONMENT),  # 9 characters, 18 bytes
    ],
)
def test_identifiers_outside_the_spec_are_refused(
    check: Callable[[str], None], value: str, code: int
) -> None:
    with pytest.raises(CniError) as caught:
        check(value)

    assert caught.value.code == code


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (names.check_container_id, "0a1b-c_d.e"),
        (names.check_network_name, "macvlan-conf"),
        (names.check_ifname, "abcdefghijklmno"),
        (names.check_ifname, "net1"),
    ],
)
def test_identifiers_within_the_spec_pass(check: Callable[[str], None], value: str) -> None:
    check(value)


def _refusal(check: Callable[[str], None], value: str) -> int | None:
    try:
        check(value)
    except CniError as err:
        return err.code
    return None


@given(
    ifname=st.text(alphabet=st.sampled_from("aZ09_.-/: %\x00\x7f\xa0é\u2028\ud800"), max_size=17)
    | st.text(max_size=17)
)
def test_the_shortcut_for_plain_interface_names_agrees_with_every_rule(ifname: str) -> None:
    assert _refusal(names.check_ifname, ifname) == _refusal(names.check_ifname_fully, ifname)
