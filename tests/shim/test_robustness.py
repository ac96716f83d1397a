"""Whatever it is fed, the shim answers the CNI way: success, or an error object; never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.shim.helpers import SPOOL_FOR_TESTS, ShimRun, StubDaemon, http_reply, run_shim

COMMANDS = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "BOGUS"]
VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "", "1.0", "2.0.0", "x.y"]
FAST = {"MULTUS_SHIM_WAIT_SECONDS": "0", "MULTUS_SHIM_TIMEOUT_SECONDS": "5"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def assert_cni_answer(run: ShimRun) -> None:
    """Exit 0 with nothing or JSON on stdout, or exit 1 with an error object; stderr always empty."""
    assert run.stderr == b"", run.stderr
    assert run.returncode in (0, 1), run
    if run.returncode == 1:
        error = json.loads(run.stdout)
        assert isinstance(error["code"], int)
        assert isinstance(error["msg"], str)
    elif run.stdout:
        json.loads(run.stdout)


HOST_SPOOL = Path("/var/lib/multus-py/spool")
"""The shim's default spool directory (``DEFAULT_SPOOL_DIR``): the host's real one."""


def host_spool_entries() -> set[str]:
    try:
        return set(os.listdir(HOST_SPOOL))
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def _host_spool_untouched() -> Iterator[None]:
    """Fed anything, a shim the tests run spools only where the tests say: never on the host."""
    before = host_spool_entries()
    yield
    assert host_spool_entries() - before == set(), f"the tests spooled DELs in {HOST_SPOOL}"


@pytest.fixture(scope="module")
def module_daemon() -> Iterator[StubDaemon]:
    socket_dir = Path(tempfile.mkdtemp(prefix="mshim-", dir="/tmp"))
    stub = StubDaemon(socket_dir, replies=[http_reply(200, b'{"Result":{"ips":[{"address":"10.0.0.1/8"}]}}')])
    stub.start()
    yield stub
    stub.stop()
    shutil.rmtree(socket_dir, ignore_errors=True)


def confs(socket_dir: str) -> st.SearchStrategy[bytes]:
    """Configs that get past some checks and fail others, encoded as JSON; a DEL they leave
    undelivered is spooled in the tests' scratch directory, never the host's real spool."""
    fields = st.fixed_dictionaries(
        {"spoolDir": st.just(SPOOL_FOR_TESTS)},
        optional={
            "name": st.just("net") | json_values,
            "cniVersion": st.sampled_from(VERSIONS) | json_values,
            "daemonSocketDir": st.just(socket_dir) | json_values,
            "logToStderr": json_values,
        },
    )
    return fields.map(lambda conf: json.dumps(conf).encode())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_stdin_gets_a_cni_answer(launcher: Path, module_daemon: StubDaemon, data: st.DataObject) -> None:
    stdin = data.draw(st.binary(max_size=200) | confs(str(module_daemon.socket_dir)), label="stdin")
    command = data.draw(st.sampled_from(COMMANDS), label="command")
    assert_cni_answer(run_shim(launcher, stdin, env={**FAST, "CNI_COMMAND": command}))


result_fields = st.fixed_dictionaries(
    {},
    optional={
        "cniVersion": st.sampled_from(["1.1.0", "1.0.0", "0.4.0", ""]) | json_values,
        "interfaces": st.lists(
            st.fixed_dictionaries(
                {}, optional={"name": json_values, "mtu": json_values, "mac": st.text(max_size=4)}
            ),
            max_size=2,
        )
        | json_values,
        "ips": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "address": st.sampled_from(["10.0.0.1/8", "fd00::1/64", "junk"]) | json_values,
                    "interface": json_values,
                    "gateway": json_values,
                },
            ),
            max_size=3,
        )
        | json_values,
        "routes": st.lists(
            st.fixed_dictionaries(
                {}, optional={"dst": st.sampled_from(["0.0.0.0/0", "::/0"]), "table": json_values}
            ),
            max_size=2,
        ),
        "dns": st.fixed_dictionaries({}, optional={"nameservers": json_values, "domain": json_values})
        | json_values,
    },
)
bodies = (
    st.binary(max_size=100)
    | json_values.map(lambda value: json.dumps(value).encode())
    | result_fields.map(lambda result: json.dumps({"Result": result}).encode())
    | st.fixed_dictionaries({"code": json_values, "msg": json_values}).map(lambda e: json.dumps(e).encode())
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    status=st.sampled_from([200, 400, 404, 500, 503]),
    body=bodies,
    framing=st.sampled_from(["length", "chunked", "eof"]),
    version=st.sampled_from(VERSIONS[:7]),
)
def test_any_daemon_answer_gets_a_cni_answer(
    launcher: Path, module_daemon: StubDaemon, status: int, body: bytes, framing: str, version: str
) -> None:
    module_daemon.replies = [http_reply(status, body, framing=framing)]
    stdin = json.dumps(
        {"name": "net", "cniVersion": version, "daemonSocketDir": str(module_daemon.socket_dir)}
    )
    assert_cni_answer(run_shim(launcher, stdin.encode(), env=FAST))
