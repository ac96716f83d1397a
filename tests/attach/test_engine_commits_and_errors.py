"""The engine in-process with a real checkpoint and the recorder plugin as every delegate.

Two commits per ADD and per DEL whatever the number of networks (counted by the store's commit
histogram); a non-CNI exception inside the engine becomes code 999, logged with its traceback and
the container ID and counted in ``multus_py_engine_unexpected_errors_total``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import metrics
from app.attach import errors
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.netconf import MultusNetConf
from app.attach.networks import NetworkResolver, Resolution
from app.attach.requests import Command, SandboxRequest
from app.cni.api import AddFailure
from app.cni.types import CniError, ContainerId, ErrorCode, IfName
from app.store.database import Database
from app.store.records import PodIdentity

RECORDER = Path(__file__).parent.parent / "plugins" / "recorder.py"


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"mpa{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield f"/var/run/netns/{name}"
    subprocess.run(["ip", "netns", "delete", name], check=False)


def _conf(tmp_path: Path, networks: int) -> MultusNetConf:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    recorder = bin_dir / "recorder"
    recorder.write_text(f"#!{sys.executable} -IS\n" + RECORDER.read_text())
    recorder.chmod(0o755)
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir(exist_ok=True)
    names = [f"net{index}" for index in range(networks)]
    for name in names:
        conf = {"cniVersion": "1.0.0", "name": name, "type": "recorder", "recorder": {}}
        (conf_dir / f"{name}.conf").write_text(json.dumps(conf))
    return MultusNetConf(
        name="multus",
        cni_version="1.0.0",
        stdin_cni_version="1.0.0",
        cluster_network=names[0],
        default_networks=tuple(names[1:]),
        conf_dir=str(conf_dir),
        bin_dir=str(bin_dir),
    )


def _request(command: Command, conf: MultusNetConf, netns: str, container: str) -> SandboxRequest:
    return SandboxRequest(
        command=command,
        container_id=ContainerId(container),
        netns=netns,
        ifname=IfName("eth0"),
        cni_args=(),
        pod=PodIdentity("default", "web", "uid-1"),
        conf=conf,
    )


def _commits() -> float:
    for metric in metrics.STORE_COMMIT_SECONDS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return sample.value
    raise AssertionError("no commit histogram")


def _engine(database: Database, resolver: NetworkResolver | None = None) -> AttachEngine:
    return AttachEngine(
        db=database,
        resolver=resolver or NetworkResolver(),
        boot_id="test-boot",
        settings=EngineSettings(delegate_timeout=20, plugin_env={"PATH": "/usr/bin:/bin"}),
    )


@pytest.mark.parametrize("networks", [1, 4])
async def test_an_add_and_a_del_make_two_commits_each_whatever_the_number_of_networks(
    tmp_path: Path, database: Database, netns: str, networks: int
) -> None:
    conf = _conf(tmp_path, networks)
    engine = _engine(database)
    container = uuid.uuid4().hex

    before = _commits()
    await engine.add(_request(Command.ADD, conf, netns, container))
    after_add = _commits()
    await engine.delete(_request(Command.DEL, conf, netns, container))
    after_del = _commits()

    assert after_add - before == 2
    assert after_del - after_add == 2


class _BrokenResolver(NetworkResolver):
    """A resolver with a bug: what the engine must survive, log and count."""

    async def resolve(self, request: SandboxRequest) -> Resolution:
        raise KeyError("a bug")


def _unexpected(step: str) -> float:
    return float(metrics.ENGINE_UNEXPECTED_ERRORS.labels(step)._value.get())


async def test_a_bug_in_the_engine_is_code_999_logged_with_its_traceback_and_counted(
    tmp_path: Path, database: Database, netns: str, caplog: pytest.LogCaptureFixture
) -> None:
    conf = _conf(tmp_path, 1)
    engine = _engine(database, _BrokenResolver())
    container = uuid.uuid4().hex
    before = _unexpected("add")

    with caplog.at_level(logging.ERROR, logger="app.attach.engine"), pytest.raises(CniError) as raised:
        await engine.add(_request(Command.ADD, conf, netns, container))

    assert raised.value.code == ErrorCode.INTERNAL
    assert "KeyError" in raised.value.msg
    assert _unexpected("add") == before + 1
    [record] = [r for r in caplog.records if r.exc_info]
    assert container in record.getMessage()
    assert getattr(record, "container_id", None) == container
    assert getattr(record, "command", None) == "ADD"
    assert getattr(record, "pod", None) == "default/web"


async def test_a_cni_error_is_neither_logged_as_a_bug_nor_counted(
    tmp_path: Path, database: Database, netns: str, caplog: pytest.LogCaptureFixture
) -> None:
    conf = _conf(tmp_path, 2)
    failing = {
        "cniVersion": "1.0.0",
        "name": "net1",
        "type": "recorder",
        "recorder": {"fail": {"code": 11, "msg": "x"}},
    }
    (Path(conf.conf_dir) / "net1.conf").write_text(json.dumps(failing))
    engine = _engine(database)
    before = _unexpected("delegate-add")

    with caplog.at_level(logging.ERROR, logger="app.attach.engine"), pytest.raises(CniError) as raised:
        await engine.add(_request(Command.ADD, conf, netns, uuid.uuid4().hex))

    assert raised.value.code == 11
    assert _unexpected("delegate-add") == before
    assert [r for r in caplog.records if r.exc_info] == []


def test_an_attachments_recorded_error_keeps_where_its_add_stopped() -> None:
    """A DEL that failed after the ADD's failure records its own error; where the ADD stopped stays
    beside it, since every later DEL of the attachment needs it (``teardown`` passes it on)."""
    failure = AddFailure(1, 999, "failed to load netconf", "mtu", refused=True)
    recorded = errors.attachment_error(CniError(ErrorCode.TRY_AGAIN_LATER, "busy"), failure=failure)

    assert CniError.from_json(json.loads(recorded)).code == ErrorCode.TRY_AGAIN_LATER  # type: ignore[union-attr]
    assert errors.recorded_add_failure(recorded) == failure
    assert errors.recorded_add_failure(errors.attachment_error(CniError(11, "busy"), failure=None)) is None
    assert errors.recorded_add_failure(None) is None
    assert errors.recorded_add_failure('{"addFailure": {"plugin": true, "code": 7}}') is None
    assert errors.recorded_add_failure("not json") is None
