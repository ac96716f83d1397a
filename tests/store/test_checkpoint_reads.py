"""What the checkpoint's and GC's lists read back is what was recorded: values, types and order.

The lists (every sandbox, the unsettled ones, the partial ones, a pod's, the unwritten statuses)
and GC's lease proofs are plain SQL on the unit's cursor: these pin what a reader relies on and the
other tests reach only through a daemon: timestamps back as the aware UTC moments stamped, booleans
as ``bool``, NULLs as None, config as bytes, sandboxes in the order recorded, a pod's newest
status only, the ``states`` filter (empty included), forgetting more proofs at once than SQLite
takes parameters in one statement (250,000 here, 32,766 by default). Real SQLite file, no daemon.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from functools import partial

import pytest

from app.store import checkpoints, history, lease_proofs
from app.store.database import Connection, Database
from app.store.records import (
    DelegateFacts,
    DelegateIntent,
    HistoryEntry,
    PodIdentity,
    SandboxIntent,
    SandboxRecord,
)

MOMENT = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
HOST_LOCAL = b'{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"host-local"}}'


@pytest.fixture(autouse=True)
def _frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every checkpoint write stamped ``MOMENT``."""
    monkeypatch.setattr(checkpoints, "_now", lambda: MOMENT)


def _intent(container_id: str, ifname: str, position: int, **changes: object) -> DelegateIntent:
    intent = DelegateIntent(
        container_id=container_id,
        ifname=ifname,
        position=position,
        is_master=position == 0,
        network_name=f"net-{ifname}",
        plugin_types=("bridge", "tuning"),
        config=b'{"cniVersion":"1.0.0"}',
        cni_args=(("K8S_POD_NAME", "p"),),
        capability_args={"mac": "02:00:00:00:00:01"},
        cni_path=("/opt/cni/bin",),
    )
    return dataclasses.replace(intent, **changes)  # type: ignore[arg-type]


def _record(
    connection: Connection,
    container_id: str,
    *,
    pod: str = "p",
    boot_id: str = "boot",
    ready: bool = True,
    ifnames: tuple[str, ...] = ("eth0", "net1"),
    **sandbox: object,
) -> None:
    """A sandbox of pod ``ns/pod`` with one attachment per ifname (positions in the order given,
    recorded in reverse), ``ready`` with its results or still ``adding``."""
    intent = SandboxIntent(
        container_id, "/var/run/netns/x", "eth0", "1.0.0", PodIdentity("ns", pod, "uid"), boot_id
    )
    checkpoints.begin_add(connection, dataclasses.replace(intent, **sandbox))  # type: ignore[arg-type]
    for position, ifname in reversed(list(enumerate(ifnames))):
        checkpoints.record_intent(connection, _intent(container_id, ifname, position))
    if ready:
        for ifname in ifnames:
            facts = DelegateFacts(ips=("10.0.0.2/24",), macs=("02:00:00:00:00:01",))
            checkpoints.record_result(
                connection, container_id=container_id, ifname=ifname, result="{}", facts=facts
            )
        checkpoints.finish_add(connection, container_id)


def _ids(sandboxes: list[SandboxRecord]) -> list[str]:
    return [sandbox.container_id for sandbox in sandboxes]


def test_listed_sandboxes_read_back_as_recorded_with_their_attachments_by_position(db: Database) -> None:
    db.write_sync(partial(_record, container_id="zz", parallel=True, default_networks=1, netns_id="4:2"))
    db.write_sync(partial(_record, container_id="aa", ready=False, ifnames=("eth0",)))

    listed = db.read_sync(checkpoints.list_sandboxes)

    assert _ids(listed) == ["zz", "aa"], "in the order recorded, not by container ID"
    assert listed == [
        db.read_sync(partial(checkpoints.load_sandbox, container_id=cid)) for cid in ("zz", "aa")
    ]
    zz, aa = listed
    assert (zz.parallel, zz.default_networks, zz.netns_id) == (True, 1, "4:2")
    assert (aa.parallel, aa.default_networks, aa.netns_id) == (False, None, "")
    assert type(zz.parallel) is bool
    assert type(aa.parallel) is bool
    assert zz.created_at == MOMENT
    assert zz.created_at.tzinfo is UTC
    assert [a.ifname for a in zz.attachments] == ["eth0", "net1"]
    eth0, net1 = zz.attachments
    assert (eth0.is_master, net1.is_master) == (True, False)
    assert type(eth0.is_master) is bool
    assert eth0.config == b'{"cniVersion":"1.0.0"}'
    assert type(eth0.config) is bytes
    assert eth0.cni_args == (("K8S_POD_NAME", "p"),)
    assert eth0.capability_args == {"mac": "02:00:00:00:00:01"}
    assert eth0.plugin_types == ("bridge", "tuning")
    assert eth0.facts == DelegateFacts(ips=("10.0.0.2/24",), macs=("02:00:00:00:00:01",))
    assert (eth0.state, eth0.result, eth0.last_error, eth0.device) == ("added", "{}", None, None)
    assert eth0.updated_at == MOMENT
    assert aa.attachments[0].state == "intent"
    assert aa.attachments[0].result is None


def test_the_states_filter_keeps_the_recorded_order_and_an_empty_one_lists_nothing(db: Database) -> None:
    for cid, ready in (("c3", True), ("c1", False), ("c2", True)):
        db.write_sync(partial(_record, container_id=cid, ready=ready))

    def listed(states: list[str] | None) -> list[str]:
        return _ids(db.read_sync(partial(checkpoints.list_sandboxes, states=states)))

    assert listed(None) == ["c3", "c1", "c2"]
    assert listed(["ready"]) == ["c3", "c2"]
    assert listed(["adding", "ready"]) == ["c3", "c1", "c2"]
    assert listed(["deleting"]) == []
    assert listed([]) == []


def test_unsettled_and_partial_sandboxes_come_oldest_first_with_their_attachments(db: Database) -> None:
    db.write_sync(partial(_record, container_id="b-other-boot", boot_id="earlier"))
    db.write_sync(partial(_record, container_id="a-settled"))
    db.write_sync(partial(_record, container_id="c-adding", ready=False))
    db.write_sync(partial(_record, container_id="d-hotplug"))
    db.write_sync(lambda s: checkpoints.begin_detach(s, container_id="d-hotplug", ifname="net1"))

    unsettled = db.read_sync(partial(checkpoints.list_unsettled, boot_id="boot"))
    partial_ones = db.read_sync(checkpoints.list_partial)

    assert _ids(unsettled) == ["b-other-boot", "c-adding"]
    assert unsettled[1] == db.read_sync(partial(checkpoints.load_sandbox, container_id="c-adding"))
    assert _ids(partial_ones) == ["d-hotplug"]
    assert [(a.ifname, a.state) for a in partial_ones[0].attachments] == [
        ("eth0", "added"),
        ("net1", "deleting"),
    ]


def test_summaries_counts_and_ids(db: Database) -> None:
    db.write_sync(partial(_record, container_id="c1", pod="p1"))
    db.write_sync(partial(_record, container_id="c2", pod="p2", ready=False, ifnames=("eth0",)))
    db.write_sync(partial(_record, container_id="c3", pod="p1"))

    summaries = db.read_sync(checkpoints.sandbox_summaries)

    assert sorted(summaries, key=lambda s: s.container_id) == [
        sandbox.summary() for sandbox in db.read_sync(checkpoints.list_sandboxes)
    ]
    assert db.read_sync(partial(checkpoints.sandboxes_of_pod, namespace="ns", name="p1")) == [
        s for s in summaries if s.pod.name == "p1"
    ]
    assert db.read_sync(partial(checkpoints.sandboxes_of_pod, namespace="other", name="p1")) == []
    assert db.read_sync(checkpoints.attachment_counts) == {"added": 4, "intent": 1}
    assert db.read_sync(checkpoints.container_ids) == {"c1", "c2", "c3"}


def test_only_ready_sandboxes_are_marked_and_the_newest_limit_of_pods_come_oldest_first(db: Database) -> None:
    for cid, pod in (("old-of-a", "a"), ("b", "b"), ("new-of-a", "a"), ("c", "c"), ("d", "d")):
        db.write_sync(partial(_record, container_id=cid, pod=pod))
    db.write_sync(partial(_record, container_id="adding", pod="e", ready=False))

    marked = [
        db.write_sync(partial(checkpoints.mark_status_unwritten, container_id=cid))
        for cid in ("old-of-a", "b", "new-of-a", "c", "d", "d", "adding", "unknown")
    ]
    db.write_sync(partial(checkpoints.clear_status_unwritten, container_id="c"))
    db.write_sync(partial(checkpoints.clear_status_unwritten, container_id="unknown"))

    def unwritten(limit: int) -> list[str]:
        return [s.container_id for s in db.read_sync(partial(checkpoints.status_unwritten, limit=limit))]

    assert marked == [True, True, True, True, True, True, False, False]
    assert unwritten(10) == ["b", "new-of-a", "d"], "an older sandbox of pod a is never listed"
    assert unwritten(2) == ["new-of-a", "d"]
    assert unwritten(0) == []


def test_lease_proofs_read_back_in_order_and_forget_more_at_once_than_sqlite_takes_parameters(
    db: Database,
) -> None:
    host_local_at = _intent("c1", "net1", 1, config=HOST_LOCAL, root="/hostroot")

    def removed_twice(connection: Connection) -> None:
        _record(connection, "c1", ifnames=("eth0",))
        checkpoints.record_intent(connection, host_local_at)
        checkpoints.record_intent(connection, _intent("c1", "net2", 2, config=HOST_LOCAL))
        checkpoints.remove_attachments(connection, container_id="c1", ifnames=["net2", "net1"])
        checkpoints.record_intent(connection, host_local_at)

    db.write_sync(removed_twice)
    db.write_sync(
        lambda s: history.append(s, HistoryEntry("ADD", "delegate", "cni", "ok", container_id="c1"))
    )
    db.write_sync(
        lambda s: history.append(s, HistoryEntry("DEL", "delegate", "cni", "ok", container_id="c2"))
    )
    db.write_sync(lambda s: history.append(s, HistoryEntry("ADD", "request", "cni", "ok", container_id="c3")))

    removed = db.read_sync(lease_proofs.removed)

    assert [(r.container_id, r.ifname, r.config, r.root) for r in removed] == [
        ("c1", "net2", HOST_LOCAL, ""),
        ("c1", "net1", HOST_LOCAL, "/hostroot"),
    ]
    assert removed[0].id < removed[1].id
    assert type(removed[0].config) is bytes
    assert db.read_sync(lease_proofs.recorded_configs) == {
        (b'{"cniVersion":"1.0.0"}', ""),
        (HOST_LOCAL, "/hostroot"),
    }
    assert [db.read_sync(partial(lease_proofs.added_by_us, container_id=c)) for c in ("c1", "c2", "c3")] == [
        True,
        False,
        False,
    ]
    many = set(range(removed[1].id + 1, removed[1].id + 300_000)) | {removed[0].id}
    db.write_sync(partial(lease_proofs.forget, ids=many))
    db.write_sync(partial(lease_proofs.forget, ids=()))
    assert db.read_sync(lease_proofs.removed) == [removed[1]]
