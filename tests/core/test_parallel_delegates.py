"""parallelDelegates in one process: real plugins and netns, the engine driven directly.

The cluster network runs first and alone, the other networks together, as many at once as the
delegate limit lets plugins run; a failure in any of them undoes every one that ran, the others
left to finish first (none is killed halfway).
A pod's ``v1.multus-cni.io/parallel-delegates`` annotation is honoured only as ``"true"`` or
``"false"``, and ``"true"`` only where the daemon config allows it. Any other value is refused in
the daemon's log, naming the annotation, and that pod's delegates run one after another. The choice
is read back from the checkpoint (``sandboxes.parallel``), which is what every DEL follows.
"""

from __future__ import annotations

import logging

import pytest

from app.attach.cluster import PARALLEL_DELEGATES_ANNOTATION
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.networks import ClusterSources, NetworkResolver
from app.cni.invoke import SubprocessExec
from app.cni.types import CniError
from tests.core.support import Command, Nads, Node, OnePod, delegate_lines, new_container_id


def _engine(node: Node, *, parallel: bool, annotations: dict[str, str] | None = None) -> AttachEngine:
    settings = EngineSettings(delegate_timeout=20.0, node_name="node-a", parallel_delegates=parallel)
    cluster = None if annotations is None else ClusterSources(pods=OnePod(annotations), nads=Nads())
    return AttachEngine(
        db=node.db, resolver=NetworkResolver(cluster=cluster), boot_id=node.boot_id, settings=settings
    )


@pytest.mark.parametrize("value", ["False", "FALSE", "0", "no", "", " false", "TRUE", "1", "yes"])
@pytest.mark.parametrize("configured", [False, True])
async def test_an_annotation_neither_true_nor_false_is_refused_naming_it_and_delegates_run_in_turn(
    node: Node, caplog: pytest.LogCaptureFixture, value: str, configured: bool
) -> None:
    # A pod that says something about running its delegates in parallel, unreadably ("False" meant
    # as an opt-out most likely), gets the safe behaviour, one after another, not the daemon's
    # default: its networks ran concurrently against its owner's wish where the config enabled it.
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("extra"))
    container = new_container_id()
    engine = _engine(node, parallel=configured, annotations={PARALLEL_DELEGATES_ANNOTATION: value})

    with caplog.at_level(logging.WARNING, logger="app.attach.engine"):
        await engine.add(node.request(Command.ADD, container, node.new_netns(), conf))

    record = node.checkpoint(container)
    assert record is not None
    assert record.parallel is False
    # asyncio's debug mode (tests/conftest.py) warns of a slow step on a loaded machine: ours only
    assert [r.getMessage() for r in caplog.records if r.name.startswith("app.")] == [
        f'annotation {PARALLEL_DELEGATES_ANNOTATION}={value!r} refused: it must be "true" or "false"; '
        "delegates run one after another"
    ]


@pytest.mark.parametrize(
    ("configured", "value", "expected"),
    [
        (False, None, False),
        (True, None, True),
        (True, "true", True),
        (True, "false", False),
        (False, "false", False),
    ],
)
async def test_the_annotation_chooses_within_what_the_config_allows(
    node: Node, caplog: pytest.LogCaptureFixture, configured: bool, value: str | None, expected: bool
) -> None:
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("extra"))
    container = new_container_id()
    annotations = {} if value is None else {PARALLEL_DELEGATES_ANNOTATION: value}
    engine = _engine(node, parallel=configured, annotations=annotations)

    with caplog.at_level(logging.WARNING, logger="app.attach.engine"):
        await engine.add(node.request(Command.ADD, container, node.new_netns(), conf))

    record = node.checkpoint(container)
    assert record is not None
    assert record.parallel is expected
    assert [r for r in caplog.records if r.name.startswith("app.")] == []


async def test_true_where_the_config_does_not_allow_it_is_refused_naming_the_key_and_delegates_run_in_turn(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("extra"))
    container = new_container_id()
    engine = _engine(node, parallel=False, annotations={PARALLEL_DELEGATES_ANNOTATION: "true"})

    with caplog.at_level(logging.WARNING, logger="app.attach.engine"):
        await engine.add(node.request(Command.ADD, container, node.new_netns(), conf))

    record = node.checkpoint(container)
    assert record is not None
    assert record.parallel is False
    [refusal] = [r.getMessage() for r in caplog.records if r.name.startswith("app.")]
    assert refusal.startswith(f"annotation {PARALLEL_DELEGATES_ANNOTATION} refused")
    assert "parallelDelegates" in refusal


async def test_a_failure_while_another_delegate_still_runs_rolls_back_every_one_that_ran(node: Node) -> None:
    conf = node.conf(
        node.bridge_network("cluster", subnet="10.252.0.0/24"),
        node.bridge_network("extra", subnet="10.252.1.0/24"),
        node.recorder_network("broken", fail={"code": 11, "msg": "no capacity"}, failOn="ADD"),
        node.recorder_network("slow", hang=True, failOn="ADD"),
    )
    netns = node.new_netns()
    container = new_container_id()
    settings = EngineSettings(delegate_timeout=1.0, node_name="node-a", parallel_delegates=True)
    engine = AttachEngine(db=node.db, resolver=NetworkResolver(), boot_id=node.boot_id, settings=settings)

    with pytest.raises(CniError) as failed:
        await engine.add(node.request(Command.ADD, container, netns, conf))

    assert failed.value.code == 11
    assert 'network "broken" as net2' in failed.value.msg
    assert [call for call in node.calls() if call[1] == "slow"] == [
        ("ADD", "slow", "net3"),
        ("DEL", "slow", "net3"),
    ]
    assert netns.links() == {"lo"}
    assert [path for path in node.ipam_dir.rglob("10.252.*")] == [], "every lease given back"
    assert node.checkpoint(container) is None
    assert delegate_lines(node.history(container), "DEL") == [
        ("net3", "rollback", "ok"),
        ("net2", "rollback", "ok"),
        ("net1", "rollback", "ok"),
        ("eth0", "rollback", "ok"),
    ]


def _limited_engine(node: Node, limit: int) -> AttachEngine:
    """Delegates in parallel, at most ``limit`` plugins running at once (maxConcurrentDelegates)."""
    settings = EngineSettings(delegate_timeout=20.0, node_name="node-a", parallel_delegates=True)
    return AttachEngine(
        db=node.db,
        resolver=NetworkResolver(),
        boot_id=node.boot_id,
        settings=settings,
        executor=SubprocessExec(max_running=limit),
    )


@pytest.mark.parametrize(("limit", "met"), [(3, True), (2, False)])
async def test_the_networks_run_together_within_the_delegate_limit(node: Node, limit: int, met: bool) -> None:
    # three networks that succeed only if all three run at the same time: with two plugins at most
    # running at once (maxConcurrentDelegates), the first two give up waiting for the third
    meeting = {"dir": str(node.root / "rendezvous"), "count": 3, "timeout": 1}
    together = [node.recorder_network(f"meet{index}", rendezvous=meeting) for index in range(3)]
    conf = node.conf(node.recorder_network("cluster"), *together)
    container = new_container_id()
    engine = _limited_engine(node, limit)
    request = node.request(Command.ADD, container, node.new_netns(), conf)

    if met:
        await engine.add(request)
    else:
        with pytest.raises(CniError, match="rendezvous timed out"):
            await engine.add(request)

    assert (node.checkpoint(container) is not None) is met


async def test_after_a_failure_no_delegate_still_waiting_for_its_turn_is_started(node: Node) -> None:
    # one plugin at a time: the first of the parallel networks fails while the other two wait for
    # the slot; as in sequential mode, nothing is started after a failure (they were started, then
    # DELed, taking slots other pods wait for), and the runtime hears the failure, not "not started"
    conf = node.conf(
        node.recorder_network("cluster"),
        node.recorder_network("broken", fail={"code": 11, "msg": "no capacity"}, failOn="ADD"),
        node.recorder_network("waiting1"),
        node.recorder_network("waiting2"),
    )
    container = new_container_id()
    engine = _limited_engine(node, 1)

    with pytest.raises(CniError) as failed:
        await engine.add(node.request(Command.ADD, container, node.new_netns(), conf))

    assert failed.value.code == 11
    assert 'network "broken" as net1' in failed.value.msg
    assert node.calls() == [
        ("ADD", "cluster", "eth0"),
        ("ADD", "broken", "net1"),
        ("DEL", "broken", "net1"),
        ("DEL", "cluster", "eth0"),
    ]
    assert node.checkpoint(container) is None
    not_started = [
        line for line in delegate_lines(node.history(container), "ADD") if line[0] in ("net2", "net3")
    ]
    assert not_started == [("net2", "runtime", "error"), ("net3", "runtime", "error")]
