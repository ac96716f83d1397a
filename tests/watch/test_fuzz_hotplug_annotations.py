"""Random ``k8s.v1.cni.cncf.io/networks`` annotations on a running pod, reconciled by native hot-plug.

The promise: whatever a pod's owner writes in the annotation, the reconciler logs no traceback
(its pass ends in a CNI error it retries, or in the changes made), never detaches an attachment the
annotation still selects (an annotation that does not parse detaches nothing), leaves the pod's
eth0 alone, and still works for the next valid change.

Each example sets the annotation to a mutation of one that selects the NADs ``hot-a`` and
``hot-b`` (both the bridge plugin with host-local IPAM): the comma form with every element form
(``name``, ``namespace/name``, ``name@ifname``, odd and empty parts), the JSON form with every key
of a selection element given every JSON type, and documents that are no list of objects. The
attachments an example hot-plugs stay for the next one, so later examples detach and keep them.

Run at the lowest level that holds all the real parts: ``HotplugReconciler.reconcile`` in the
test's process, the engine and SQLite store under it, the plugins in a real netns; the pod and
its NADs come from in-memory sources instead of the mirror (the watch is not under test here).

CI runs a fixed, derandomized set of examples. To hunt further, set ``MULTUS_PY_FUZZ_EXAMPLES``
(e.g. 3000): that many examples from a random seed.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from app.attach import selection as sel
from app.attach.cluster import InterfaceEvent
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.hotplug import HotplugReconciler, OrderedStatusPublisher
from app.attach.networks import ClusterSources, NetworkResolver
from app.attach.requests import Command
from app.cni.types import CniError
from app.store.mirror_records import NadRecord, PodRecord
from tests.core.support import Nads, Node, new_container_id
from tests.core.test_fuzz_cni_requests import JSON_VALUES, PLAUSIBLE_STRINGS, _Tracebacks, fuzz_on_one_loop

CI_EXAMPLES = 50
EXAMPLES = int(os.environ.get("MULTUS_PY_FUZZ_EXAMPLES", CI_EXAMPLES))
NETWORKS = "k8s.v1.cni.cncf.io/networks"


class Pods:
    """The one pod ``default/pod-a``, its annotation set by the test: the engine's pod source and
    the reconciler's mirror at once."""

    def __init__(self) -> None:
        self.pod = PodRecord("default", "pod-a", "uid-a", annotations={})

    def annotate(self, value: str) -> None:
        self.pod = replace(self.pod, annotations={NETWORKS: value})

    async def get_pod(self, namespace: str, name: str, *, uid: str = "") -> PodRecord | None:
        return self.pod if (namespace, name) == self.pod.key else None

    async def mirrored_pod(self, namespace: str, name: str) -> PodRecord | None:
        return await self.get_pod(namespace, name)


class Statuses:
    """Where the reconciler's network-status writes and events go: kept, never failing."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.events: list[tuple[str, str]] = []

    async def publish_network_status(self, pod: PodRecord, status_json: str) -> bool:
        self.written.append(status_json)
        return True

    def emit_interface_events(self, pod: PodRecord, events: Sequence[InterfaceEvent]) -> None:
        pass

    def emit_pod_event(self, pod: PodRecord, *, reason: str, warning: bool, message: str) -> None:
        self.events.append((reason, message))

    def emit_network_not_found(self, pod: PodRecord, *, namespace: str, name: str, error: str) -> None:
        self.events.append(("NoNetworkFound", f"{namespace}/{name}"))


# ---- annotations ----------------------------------------------------------------------------------

NAMES = ["hot-a", "hot-b", "missing", "Hot_A", "", " ", "a" * 254, "hot-a ", "..", "é"]
NAMESPACES = ["default", "other", "kube-system", "", "Default", "a/b", ".."]
IFNAMES = ["net1", "net2", "net3", "eth0", "lo", "", "n" * 16, "a/b", "a:b", "net 1", ".", "net1\n", "NET1"]
COMMA_ELEMENTS = (
    st.builds(
        lambda namespace, name, ifname: (
            (f"{namespace}/" if namespace is not None else "")
            + name
            + (f"@{ifname}" if ifname is not None else "")
        ),
        st.none() | st.sampled_from(NAMESPACES),
        st.sampled_from(NAMES),
        st.none() | st.sampled_from(IFNAMES),
    )
    | st.sampled_from(["@", "/", "a/b/c", "hot-a@net1@x", "@net1", "hot-a@", "/hot-a", "default/"])
    | st.text(max_size=10)
)
COMMA_FORMS = st.lists(COMMA_ELEMENTS, max_size=4).flatmap(
    lambda parts: st.sampled_from([",", ", ", " ,", ",,"]).map(lambda comma: comma.join(parts))
)
ELEMENT_KEYS = [
    "name",
    "namespace",
    "interface",
    "interfaceRequest",
    "ips",
    "mac",
    "infiniband-guid",
    "portMappings",
    "bandwidth",
    "deviceID",
    "cni-args",
    "default-route",
    "ipam-claim-reference",
    "Name",
    "INTERFACE",
    "",
]
ELEMENT_VALUES: dict[str, Any] = {
    "name": st.sampled_from(NAMES),
    "namespace": st.sampled_from(NAMESPACES),
    "interface": st.sampled_from(IFNAMES),
    "interfaceRequest": st.sampled_from(IFNAMES),
    "ips": st.sampled_from([["10.231.0.77/24"], ["10.231.0.77"], ["fd00::7/64"], ["x"], [""], []]),
    "mac": st.sampled_from(["0a:58:0a:e7:00:4d", "zz", "", "ff:ff:ff:ff:ff:ff", "0a-58-0a-e7-00-4d"]),
    "cni-args": st.sampled_from([{}, {"a": 1}, {"ips": ["x"]}, {"cniVersion": "0.1.0"}]),
    "default-route": st.sampled_from([["10.231.0.1"], ["x"], [""], ["fd00::1"]]),
    "portMappings": st.sampled_from(
        [[{"hostPort": 8080, "containerPort": 80}], [{"hostPort": 1e10}], [None]]
    ),
    "bandwidth": st.sampled_from([{"ingressRate": 1, "ingressBurst": 1}, {"ingressRate": -1}]),
}
JSON_ELEMENT = st.dictionaries(
    st.sampled_from(ELEMENT_KEYS) | st.text(max_size=5),
    st.nothing(),
    max_size=0,
).flatmap(
    lambda _: st.lists(
        st.sampled_from(ELEMENT_KEYS).flatmap(
            lambda key: st.tuples(
                st.just(key), (ELEMENT_VALUES[key] | JSON_VALUES) if key in ELEMENT_VALUES else JSON_VALUES
            )
        ),
        max_size=4,
    ).map(dict)
)
JSON_FORMS = st.lists(
    JSON_ELEMENT
    | st.fixed_dictionaries(
        {"name": st.sampled_from(["hot-a", "hot-b"])}, optional={"interface": st.sampled_from(IFNAMES)}
    )
    | JSON_VALUES,
    max_size=3,
).map(json.dumps)
ODD_DOCUMENTS = (
    JSON_VALUES.map(json.dumps)
    | PLAUSIBLE_STRINGS
    | st.sampled_from(
        [
            "[",
            '[{"name": ',
            "[null]",
            '[{"name": "hot-a"}]garbage',
            '[{"name": "hot-a", "name": "hot-b"}]',
            '[{"name": "hot-a", "interface": "net1"}, {"name": "hot-a", "interface": "net1"}]',
            '[{"name": "hot-a", "ips": ["10.231.0.5/24"], "mac": "0a:58:0a:e7:00:05"}]',
            '[{"name": "\\ud800"}]',
            '[{"name": "hot-a\\u0000"}]',
            "[" * 70 + "]" * 70,
            '[{"name": 1e999}]',
            " [] ",
            "{}",
        ]
    )
)
VALID_ELEMENTS = st.sampled_from(
    [
        "hot-a",
        "hot-b",
        "default/hot-a",
        "default/hot-b@net2",
        "hot-a@net1",
        "hot-a@net3",
        "hot-b@net1",
        "hot-b@x",
    ]
)
MOSTLY_VALID = st.lists(VALID_ELEMENTS, max_size=4).map(", ".join) | st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["hot-a", "hot-b"])},
        optional={
            "interface": st.sampled_from(["net1", "net2", "net3", "x"]),
            "namespace": st.sampled_from(["default", "other"]),
            **{key: ELEMENT_VALUES[key] for key in ("ips", "mac", "cni-args", "default-route")},
        },
    ),
    max_size=3,
).map(json.dumps)
"""Annotations an owner means: attaching, keeping and detaching several attachments in turn."""
ANNOTATIONS = MOSTLY_VALID | MOSTLY_VALID | COMMA_FORMS | JSON_FORMS | ODD_DOCUMENTS


# ---- the node --------------------------------------------------------------------------------------


class Harness:
    """A running sandbox of ``default/pod-a`` (eth0 from the cluster network) and a reconciler for it."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.pods = Pods()
        self.statuses = Statuses()
        cluster = node.bridge_network("cluster", subnet="10.230.0.0/24")
        self.conf = node.conf(cluster)
        nads = [
            NadRecord("default", name, f"uid-{name}", config=json.dumps(self._bridge(name, subnet)))
            for name, subnet in (("hot-a", "10.231.0.0/24"), ("hot-b", "10.232.0.0/24"))
        ]
        resolver = NetworkResolver(
            cluster=ClusterSources(pods=self.pods, nads=Nads(*nads), events=self.statuses)
        )
        self.engine = AttachEngine(
            db=node.db,
            resolver=resolver,
            boot_id=node.boot_id,
            settings=EngineSettings(delegate_timeout=20.0, node_name="node-a"),
        )
        self.reconciler = HotplugReconciler(
            engine=self.engine,
            resolver=resolver,
            pods=self.pods,
            conf=self.conf,
            status=OrderedStatusPublisher(self.statuses),
            events=self.statuses,
        )
        self.netns = node.new_netns()
        self.container_id = new_container_id()

    def _bridge(self, name: str, subnet: str) -> dict[str, Any]:
        bridge = f"mpyfh{secrets.token_hex(4)}"
        self.node.host_links.append(bridge)
        return {
            "cniVersion": "1.0.0",
            "name": name,
            "type": "bridge",
            "bridge": bridge,
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": str(self.node.ipam_dir)},
        }

    async def start(self) -> None:
        request = self.node.request(Command.ADD, self.container_id, self.netns, self.conf)
        await self.engine.add(request)
        self.eth0 = self._eth0()

    def _eth0(self) -> list[str]:
        shown = subprocess.run(
            ["ip", "-n", self.netns.name, "-o", "addr", "show", "dev", "eth0"],
            check=True,
            capture_output=True,
            text=True,
        )
        return shown.stdout.splitlines()

    def recorded(self) -> dict[str, tuple[str, str]]:
        record = self.node.checkpoint(self.container_id)
        assert record is not None
        assert record.state == "ready"
        return {a.ifname: (a.network_name, a.state) for a in record.attachments}

    async def example(self, annotation: str) -> None:
        """Reconcile the pod with ``annotation``; check what a pass promises."""
        before = self.recorded()
        self.pods.annotate(annotation)
        try:
            selections: list[tuple[str, str]] | None = selected(annotation)
        except CniError:
            selections = None
        await self.reconciler.reconcile("default", "pod-a")

        after = self.recorded()
        assert after["eth0"] == before["eth0"]
        assert self._eth0() == self.eth0
        links = self.netns.links()
        attached = {ifname: network for ifname, (network, state) in before.items() if state == "added"}
        del attached["eth0"]
        for ifname, network in must_stay(attached, selections).items():
            assert after.get(ifname) == (network, "added"), (annotation, ifname, after)
            assert ifname in links, (annotation, ifname, links)
        claimed = claimed_names(selections)
        for network, wanted in nameless(selections).items():
            unnamed = [
                i
                for i, n in attached.items()
                if n == network and (n, i) not in (selections or ()) and i not in claimed
            ]
            still = [i for i in unnamed if after.get(i) == (network, "added")]
            assert len(still) >= min(wanted, len(unnamed)), (annotation, network, before, after)
        assert links == {"lo", *after}, (annotation, links, after)

    async def still_works(self) -> None:
        """The next valid changes: one attachment named net7, then none."""
        self.pods.annotate("hot-a@net7")
        assert await self.reconciler.reconcile("default", "pod-a") is None
        assert set(self.recorded()) == {"eth0", "net7"}
        assert self.netns.links() == {"lo", "eth0", "net7"}
        self.pods.annotate("")
        assert await self.reconciler.reconcile("default", "pod-a") is None
        assert set(self.recorded()) == {"eth0"}
        assert self.netns.links() == {"lo", "eth0"}

    async def stop(self) -> None:
        await self.engine.delete(self.node.request(Command.DEL, self.container_id, self.netns, self.conf))


def selected(annotation: str) -> list[tuple[str, str]]:
    """(network, interface) of every selection the annotation makes (interface ``""`` if unnamed)."""
    selections = sel.parse_networks(annotation, pod_namespace="default", max_networks=256)
    return [(selection.qualified_name, selection.interface) for selection in selections]


def must_stay(attached: dict[str, str], selections: list[tuple[str, str]] | None) -> dict[str, str]:
    """The attachments (interface: network) a pass may not detach: all of them when the annotation
    does not parse, else those a selection names by network and interface."""
    if selections is None:
        return attached
    return {ifname: network for ifname, network in attached.items() if (network, ifname) in selections}


def claimed_names(selections: list[tuple[str, str]] | None) -> set[str]:
    """The interface names exactly one selection asks for: a nameless selection's attachment that
    holds one is attached again under another name."""
    named = [ifname for _, ifname in selections or () if ifname]
    return {ifname for ifname in named if named.count(ifname) == 1}


def nameless(selections: list[tuple[str, str]] | None) -> dict[str, int]:
    """How many selections of each network name no interface: each keeps one of its attachments."""
    counts: dict[str, int] = {}
    for network, ifname in selections or ():
        if not ifname:
            counts[network] = counts.get(network, 0) + 1
    return counts


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    built = Node(tmp_path)
    try:
        yield built
    finally:
        built.cleanup()


def test_no_annotation_makes_the_reconciler_fail_detach_what_it_selects_or_touch_eth0(node: Node) -> None:
    harness = Harness(node)
    fuzz_on_one_loop(
        ANNOTATIONS,
        start=harness.start,
        example=harness.example,
        afterwards=harness.still_works,
        stop=harness.stop,
        examples=EXAMPLES,
        derandomize=EXAMPLES == CI_EXAMPLES,
    )


# ---- what the fuzz found: each exact input, once ------------------------------------------------


@pytest.mark.parametrize(
    "annotation",
    ['[{"name": "\\ud800"}]', '[{"name": "hot-a", "namespace": "\\udcff"}]'],
    ids=["name", "namespace"],
)
async def test_a_lone_surrogate_in_the_annotation_is_refused_and_recorded_without_a_traceback(
    node: Node, annotation: str
) -> None:
    """JSON's ``\\ud800`` decodes to a lone surrogate, which the refusal's message quoted: its
    history line could not be encoded for the store (UnicodeEncodeError), and the pass ended in a
    traceback instead of a refusal retried."""
    tracebacks = _Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    harness = Harness(node)
    await harness.start()
    try:
        harness.pods.annotate(annotation)
        error = await harness.reconciler.reconcile("default", "pod-a")
    finally:
        await harness.stop()
        logging.getLogger().removeHandler(tracebacks)

    assert error is not None
    assert error.code == 7
    assert "\\ud" in f"{error.msg} {error.details}"  # the surrogate shown escaped
    assert not tracebacks.records
    assert harness.statuses.events[-1][0] == "FailedAddingInterface"


@pytest.mark.parametrize(
    "cni_args",
    [{"ips": ["x"]}, {"IPs": "10.231.0.9/24"}, {"ips": [5]}, {"mac": "zz"}, {"Mac": 5}],
    ids=["ips-text", "ips-string", "ips-number", "mac-text", "mac-number"],
)
async def test_cni_args_no_plugin_decodes_are_refused_before_anything_is_attached(
    node: Node, cni_args: dict[str, object]
) -> None:
    """``cni-args`` reach the delegate as ``args.cni``: ``ips: ["x"]`` failed the bridge's ADD
    ("invalid IP address x", code 999), and the rollback's DEL failed the same way, leaving the
    attachment pending ("deleting") for every DEL after it."""
    harness = Harness(node)
    await harness.start()
    try:
        harness.pods.annotate(json.dumps([{"name": "hot-a", "interface": "net1", "cni-args": cni_args}]))
        error = await harness.reconciler.reconcile("default", "pod-a")
        recorded = harness.recorded()
    finally:
        await harness.stop()

    assert error is not None
    assert error.code == 7
    assert "cni-args." in f"{error.msg} {error.details}"
    assert set(recorded) == {"eth0"}
