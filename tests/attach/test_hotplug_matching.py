"""Which attachments a running pod's ``networks`` annotation adds, keeps and removes (native hot-plug).

DNC's keys: a named selection matches the attachment of that name; a nameless one the oldest of its
NAD. Refusals never cause a detach; the cluster network and ``defaultNetworks`` are never touched.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from app.attach.hotplug import plan_changes
from app.attach.selection import parse_networks
from app.store.records import AttachmentRecord, PodIdentity, SandboxRecord

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _attachment(position: int, ifname: str, network: str) -> AttachmentRecord:
    return AttachmentRecord(
        container_id="c",
        ifname=ifname,
        position=position,
        is_master=position == 0,
        network_name=network,
        plugin_types=("bridge",),
        config=b"{}",
        cni_args=(),
        capability_args={},
        cni_path=(),
        state="added",
        result="{}",
        last_error=None,
        created_at=NOW,
        updated_at=NOW,
    )


def _sandbox(*attachments: tuple[str, str]) -> SandboxRecord:
    return SandboxRecord(
        container_id="c",
        state="ready",
        netns="/var/run/netns/x",
        ifname="eth0",
        cni_version="1.0.0",
        pod=PodIdentity("default", "p", "u"),
        boot_id="b",
        created_at=NOW,
        updated_at=NOW,
        attachments=tuple(
            _attachment(position, ifname, network)
            for position, (ifname, network) in enumerate([("eth0", "primary"), *attachments])
        ),
    )


def _plan(
    record: SandboxRecord, annotation: str, *, defaults: int = 0
) -> tuple[list[str], list[str], list[str]]:
    changes = plan_changes(
        record, parse_networks(annotation, pod_namespace="default"), default_networks=defaults
    )
    return (
        [f"{selection.qualified_name}@{ifname}" for selection, ifname in changes.add],
        [attachment.ifname for attachment in changes.remove],
        [refusal.error.msg for refusal in changes.refused],
    )


@pytest.mark.parametrize(
    ("recorded", "annotation", "adds", "removes"),
    [
        ([("net1", "default/a")], "a", [], []),
        ([("net1", "default/a")], "a, b", ["default/b@net2"], []),
        ([("net1", "default/a")], "a, b@x, c", ["default/b@x", "default/c@net2"], []),
        ([("net1", "default/a"), ("net2", "default/b")], "b", [], ["net1"]),
        ([("net1", "default/a"), ("net3", "default/a")], "a", [], ["net3"]),
        ([("net1", "default/a"), ("net3", "default/a")], "a@net3", [], ["net1"]),
        ([("net1", "default/a"), ("net2", "default/b")], "", [], ["net2", "net1"]),
        ([("net1", "default/a")], "b@net1", ["default/b@net1"], ["net1"]),
    ],
)
def test_selections_and_attachments_match_as_dnc_keys_them(
    recorded: list[tuple[str, str]], annotation: str, adds: list[str], removes: list[str]
) -> None:
    planned_adds, planned_removes, _ = _plan(_sandbox(*recorded), annotation)

    assert planned_adds == adds
    assert planned_removes == removes


@pytest.mark.parametrize(
    ("recorded", "annotation", "adds", "removes"),
    [
        ([("net1", "default/a")], "a, b@net1", ["default/a@net2", "default/b@net1"], ["net1"]),
        (
            [("net3", "default/slow")],
            "hot-a@net3, slow",
            ["default/hot-a@net3", "default/slow@net2"],
            ["net3"],
        ),
        ([("net1", "default/a"), ("net2", "default/a")], "b@net1, a", ["default/b@net1"], ["net1"]),
        ([("net1", "default/a")], "a, b@net1, c@net1", [], []),
    ],
)
def test_a_name_one_selection_asks_for_is_taken_from_a_nameless_selections_attachment(
    recorded: list[tuple[str, str]], annotation: str, adds: list[str], removes: list[str]
) -> None:
    """The nameless selection kept the name and the named one was refused ("already used") until
    the next edit: ``slow@net3`` edited into ``hot-a@net3, slow`` never got hot-a. The nameless one
    is attached again under a generated name (or keeps another attachment of its NAD); a name two
    selections ask for is refused and takes nothing."""
    planned_adds, planned_removes, refused = _plan(_sandbox(*recorded), annotation)

    assert (planned_adds, planned_removes) == (adds, removes)
    assert all("requested twice" in message for message in refused)


def test_a_name_an_attachment_the_annotation_does_not_govern_holds_is_refused_and_kept() -> None:
    record = _sandbox(("net1", "kube-system/extra-default"), ("net2", "dnc-conf-name"))

    adds, removes, refused = _plan(record, "b@net1, c@net2, d@eth0", defaults=1)

    assert (adds, removes) == ([], [])
    assert refused == [
        'interface "net1" is already used by network "kube-system/extra-default"',
        'interface "net2" is already used by network "dnc-conf-name"',
        'interface "eth0" is already used by network "primary"',
    ]


def test_a_second_nameless_selection_of_one_nad_is_refused_not_guessed() -> None:
    adds, removes, refused = _plan(_sandbox(("net1", "default/a")), "a, a, b")

    assert (adds, removes) == (["default/b@net2"], [])
    assert refused == [
        "network default/a is selected more than once: "
        "an interface name is needed to tell its attachments apart"
    ]


@pytest.mark.parametrize(
    ("recorded", "annotation", "adds", "removes"),
    [
        ([], "a@x, b@x, c", ["default/c@net1"], []),
        ([("net1", "default/a")], "a@net1, a@net1", [], []),
        ([("net1", "default/a")], "b@net1, a@net1, c", ["default/c@net2"], []),
        ([], "a@net1, b@net1, c", ["default/c@net2"], []),
        ([("x", "default/c")], "a@x, b@x", [], ["x"]),
    ],
)
def test_an_interface_name_two_selections_give_is_refused_once_and_neither_is_added(
    recorded: list[tuple[str, str]], annotation: str, adds: list[str], removes: list[str]
) -> None:
    """Both were added, the second to fail in the engine ("already attached") or, for one network
    named twice, to be taken as satisfied, where ADD refuses the annotation; an attachment one of
    them selects was kept only when the first did, and a generated name could take the refused one."""
    planned_adds, planned_removes, refused = _plan(_sandbox(*recorded), annotation)

    assert (planned_adds, planned_removes) == (adds, removes)
    assert len(refused) == 1
    assert "requested twice" in refused[0]


def test_default_networks_the_cluster_network_and_delegate_api_attachments_are_never_detached() -> None:
    record = _sandbox(("net1", "kube-system/extra-default"), ("net2", "default/a"), ("net3", "dnc-conf-name"))

    _, removes, _ = _plan(record, "", defaults=1)

    assert removes == ["net2"]


def _generated(record: SandboxRecord, annotation: str, present: set[str]) -> tuple[list[str], list[str]]:
    changes = plan_changes(
        record, parse_networks(annotation, pod_namespace="default"), default_networks=0, present=present
    )
    return (
        [f"{selection.qualified_name}@{ifname}" for selection, ifname in changes.add],
        [attachment.ifname for attachment in changes.remove],
    )


def test_a_generated_name_skips_an_interface_the_netns_already_has() -> None:
    record = _sandbox(("net1", "default/a"))

    adds, _ = _generated(record, "a, b, c@net3, d", {"lo", "eth0", "net1", "net2", "net4"})

    assert adds == ["default/b@net5", "default/c@net3", "default/d@net6"]


def test_a_generated_name_is_never_one_an_attachment_being_removed_holds() -> None:
    """It was: removals run first, but one may fail and stay pending, and the new network, given
    its name, then failed with it ("already attached") on every retry for as long as it stayed."""
    record = _sandbox(("net1", "default/a"), ("net3", "default/x"))

    adds, removes = _generated(record, "a, b", {"lo", "eth0", "net1", "net3"})

    assert (adds, removes) == (["default/b@net4"], ["net3"])


def test_an_unplug_left_pending_keeps_its_name_from_a_new_network() -> None:
    """A stuck unplug (its DEL failed: ``deleting``) of net2, no longer in the netns; a new
    nameless selection got net2 and failed as long as the unplug stayed stuck."""
    record = _sandbox(("net2", "default/x"))
    record = replace(
        record,
        attachments=tuple(
            replace(a, state="deleting") if a.ifname == "net2" else a for a in record.attachments
        ),
    )

    adds, removes = _generated(record, "b", {"lo", "eth0"})

    assert (adds, removes) == (["default/b@net3"], ["net2"])
