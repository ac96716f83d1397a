"""Whatever happens in the cluster, in whatever order, the mirror ends equal to the API's state.

Random sequences of pod and NAD creates, updates, deletes and node moves, mixed with dropped
streams, compaction of the watch history and daemon restarts, run against the emulator; once the
dust settles, the mirror holds exactly this node's pods and every NAD, with their current uid,
kept annotations and config.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.sandbox.kubeapi import KubeApiEmulator
from app.sandbox.resources import NETWORK_ATTACHMENT_DEFINITIONS, PODS
from app.store.database import Database
from tests.watch.support import (
    FAST_SETTINGS,
    NETWORKS,
    NODE,
    OTHER_NODE,
    Running,
    connected,
    eventually,
    expected_nads,
    expected_pods,
    mirrored_nads,
    mirrored_pods,
    nad_config,
    pod_manifest,
)

NAMESPACES = ("default", "team")
NAMES = ("a", "b", "c")
Op = tuple[Any, ...]

ops = st.one_of(
    st.tuples(
        st.just("create_pod"),
        st.sampled_from(NAMESPACES),
        st.sampled_from(NAMES),
        st.sampled_from((NODE, OTHER_NODE)),
    ),
    st.tuples(
        st.just("annotate_pod"),
        st.sampled_from(NAMESPACES),
        st.sampled_from(NAMES),
        st.sampled_from(("x", "y", None)),
    ),
    st.tuples(
        st.just("move_pod"),
        st.sampled_from(NAMESPACES),
        st.sampled_from(NAMES),
        st.sampled_from((NODE, OTHER_NODE)),
    ),
    st.tuples(st.just("delete_pod"), st.sampled_from(NAMESPACES), st.sampled_from(NAMES)),
    st.tuples(st.just("create_nad"), st.sampled_from(NAMESPACES), st.sampled_from(NAMES)),
    st.tuples(
        st.just("update_nad"),
        st.sampled_from(NAMESPACES),
        st.sampled_from(NAMES),
        st.sampled_from(("v1", "v2")),
    ),
    st.tuples(st.just("delete_nad"), st.sampled_from(NAMESPACES), st.sampled_from(NAMES)),
    st.tuples(st.just("drop_watches")),
    st.tuples(st.just("compact")),
    st.tuples(st.just("restart")),
    st.tuples(st.just("yield"), st.integers(min_value=1, max_value=20)),
)


def apply(emulator: KubeApiEmulator, op: Op) -> None:
    """Apply one operation to the emulator, as the cluster would; impossible ones are no-ops."""
    kind = op[0]
    if kind in ("create_pod", "annotate_pod", "move_pod", "delete_pod"):
        _apply_to_pod(emulator, op)
    elif kind in ("create_nad", "update_nad", "delete_nad"):
        _apply_to_nad(emulator, op)
    elif kind == "drop_watches":
        emulator.drop_watches()
    elif kind == "compact":
        emulator.compact()


def _apply_to_pod(emulator: KubeApiEmulator, op: Op) -> None:
    kind, namespace, name = op[0], op[1], op[2]
    exists = emulator.exists(PODS, namespace, name)
    if kind == "create_pod" and not exists:
        emulator.create_pod(pod_manifest(name, namespace=namespace, node=op[3]))
    elif kind == "annotate_pod" and exists:
        emulator.patch_pod(namespace, name, {"metadata": {"annotations": {NETWORKS: op[3]}}})
    elif kind == "move_pod" and exists:
        emulator.patch_pod(namespace, name, {"spec": {"nodeName": op[3]}})
    elif kind == "delete_pod" and exists:
        emulator.delete_pod(namespace, name)


def _apply_to_nad(emulator: KubeApiEmulator, op: Op) -> None:
    kind, namespace, name = op[0], op[1], op[2]
    exists = emulator.exists(NETWORK_ATTACHMENT_DEFINITIONS, namespace, name)
    if kind == "create_nad" and not exists:
        emulator.create_nad(namespace, name, nad_config("v0"))
    elif kind == "update_nad" and exists:
        emulator.patch(
            NETWORK_ATTACHMENT_DEFINITIONS, namespace, name, {"spec": {"config": nad_config(op[3])}}
        )
    elif kind == "delete_nad" and exists:
        emulator.delete_nad(namespace, name)


async def _settled(read: Callable[[], Awaitable[Any]], expected: Callable[[], Any]) -> None:
    await eventually(read, lambda value: value == expected())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ops, min_size=1, max_size=25))
async def test_the_mirror_ends_equal_to_the_api_whatever_happens(operations: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        emulator = KubeApiEmulator(bookmark_interval=0.2, history_size=200)
        await emulator.start()
        emulator.create_namespace("team")
        database = Database.open(directory / "state.db")
        try:
            async with connected(emulator, directory, FAST_SETTINGS) as api:
                await _run(emulator, api, database, operations)
        finally:
            database.close()
            await emulator.stop()


async def _run(emulator: KubeApiEmulator, api: Any, database: Database, operations: list[Op]) -> None:
    pending = list(operations)
    while True:
        async with Running.start(api=api, database=database, settings=FAST_SETTINGS) as running:
            while pending and pending[0][0] != "restart":
                op = pending.pop(0)
                if op[0] == "yield":
                    for _ in range(op[1]):
                        await asyncio.sleep(0)
                else:
                    apply(emulator, op)
            if not pending:
                await _settled(_pod_identities(database), lambda: expected_pods(emulator))
                await _settled(_nad_contents(database), lambda: expected_nads(emulator))
                await _check_annotations(emulator, database)
                await _check_memory(running, database)
                return
        pending.pop(0)  # a restart: the next Running resumes from the stored position


def _pod_identities(database: Database) -> Callable[[], Awaitable[set[tuple[str, str, str]]]]:
    read = mirrored_pods(database)

    async def identities() -> set[tuple[str, str, str]]:
        return {(pod.namespace, pod.name, pod.uid) for pod in (await read()).values()}

    return identities


def _nad_contents(database: Database) -> Callable[[], Awaitable[set[tuple[str, str, str]]]]:
    read = mirrored_nads(database)

    async def contents() -> set[tuple[str, str, str]]:
        return {(nad.namespace, nad.name, nad.config) for nad in (await read()).values()}

    return contents


async def _check_annotations(emulator: KubeApiEmulator, database: Database) -> None:
    async def current() -> dict[tuple[str, str], dict[str, str]]:
        return {key: dict(pod.annotations) for key, pod in (await mirrored_pods(database)()).items()}

    def wanted() -> dict[tuple[str, str], dict[str, str]]:
        found: dict[tuple[str, str], dict[str, str]] = {}
        for namespace, name, _uid in expected_pods(emulator):
            annotations = emulator.get_pod(namespace, name)["metadata"].get("annotations") or {}
            found[(namespace, name)] = {k: v for k, v in annotations.items() if k == NETWORKS}
        return found

    await _settled(current, wanted)


async def _check_memory(running: Running, database: Database) -> None:
    """What the writers hold in memory (what the ADD path reads) is what the store holds."""
    pod_writer, nad_writer = running.watchers.writers
    probes = [(namespace, name) for namespace in NAMESPACES for name in NAMES]

    async def disagreements() -> list[str]:
        pods, nads = await mirrored_pods(database)(), await mirrored_nads(database)()
        wrong: list[str] = []
        for writer, stored in ((pod_writer, pods), (nad_writer, nads)):
            for key in probes:
                known, record = writer.held(key)
                if known and record != stored.get(key):
                    wrong.append(f"{writer.target.key} {key}: memory {record}, store {stored.get(key)}")
        return wrong

    await eventually(disagreements, lambda wrong: wrong == [])
