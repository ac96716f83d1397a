"""Each layer of the watch loop on its own: one stream, one continuous watch, the endless loop."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator
from contextlib import aclosing

import aiohttp
import pytest

from app.sandbox.kubeapi import KubeApiEmulator
from app.store import mirror
from app.store.database import Database
from app.store.mirror_records import PodRecord
from app.watch import watching
from app.watch.api import READ_CHUNK, KubeApi, WatchStream
from app.watch.backoff import Backoff, TokenBucket
from app.watch.errors import ApiGoneError
from app.watch.mirroring import MirrorWriter
from app.watch.readiness import MirrorState
from app.watch.resources import Bookmark, Delete, Upsert, WatchItem, nads_in, pods_on_node
from app.watch.settings import WatchSettings
from tests.watch.support import NODE, OTHER_NODE, eventually, lists_since, pod_manifest

PODS = pods_on_node(NODE, kept_annotations=())


async def collect(stream: AsyncGenerator[list[WatchItem], None], count: int) -> list[list[WatchItem]]:
    batches: list[list[WatchItem]] = []
    async with aclosing(stream) as opened:
        async for batch in opened:
            batches.append(batch)
            if sum(len(items) for items in batches) >= count:
                break
    return batches


async def test_one_stream_delivers_a_burst_in_few_batches_and_only_this_nodes_pods(
    emulator: KubeApiEmulator, api: KubeApi, settings: WatchSettings
) -> None:
    start = emulator.resource_version
    for index in range(5):
        emulator.create_pod(pod_manifest(f"p{index}"))
    emulator.create_pod(pod_manifest("elsewhere", node=OTHER_NODE))
    emulator.delete_pod("default", "p0")

    stream = watching.watch_objs(api=api, target=PODS, since=start, settings=settings)
    batches = await collect(stream, 6)

    items = [item for batch in batches for item in batch]
    assert len(batches) < len(items)
    assert [type(item) for item in items] == [Upsert] * 5 + [Delete]
    assert [item.record.name for item in items if isinstance(item, Upsert)] == [f"p{i}" for i in range(5)]
    assert items[-1] == Delete(("default", "p0"), emulator.resource_version)


async def test_one_stream_raises_gone_for_a_compacted_resource_version(
    emulator: KubeApiEmulator, api: KubeApi, settings: WatchSettings
) -> None:
    old = emulator.resource_version
    emulator.create_pod(pod_manifest("p"))
    emulator.compact()

    with pytest.raises(ApiGoneError):
        await collect(watching.watch_objs(api=api, target=PODS, since=old, settings=settings), 1)


async def test_one_stream_ends_quietly_when_nothing_arrives(
    emulator: KubeApiEmulator, api: KubeApi, settings: WatchSettings
) -> None:
    emulator.bookmark_interval = 60
    quick = dataclasses.replace(settings, watch_inactivity_timeout=0.2)

    batches = await collect(
        watching.watch_objs(api=api, target=PODS, since=emulator.resource_version, settings=quick), 1
    )

    assert batches == []
    await eventually(lambda: asyncio.sleep(0, result=emulator.open_watches()), lambda opened: opened == [])


async def test_one_stream_signals_once_when_it_goes_quiet(
    emulator: KubeApiEmulator, api: KubeApi, settings: WatchSettings
) -> None:
    emulator.bookmark_interval = 60
    stream = watching.watch_objs(
        api=api, target=PODS, since=emulator.resource_version, settings=settings, quiet_after=0.05
    )

    async with aclosing(stream):
        first = await anext(stream)
        emulator.create_pod(pod_manifest("p"))
        second = await anext(stream)

    assert first == []
    assert [type(item) for item in second] == [Upsert]


async def test_bookmarks_come_through_as_bookmarks(
    emulator: KubeApiEmulator, api: KubeApi, settings: WatchSettings
) -> None:
    emulator.create_namespace("elsewhere")

    batches = await collect(watching.watch_objs(api=api, target=PODS, since="1", settings=settings), 1)

    assert batches == [[Bookmark(emulator.resource_version)]]


async def test_a_continuous_watch_without_a_position_lists_marks_synced_then_watches(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    emulator.create_nad("default", "n", '{"type":"macvlan"}')
    writer = MirrorWriter(database=database, target=nads_in(None), state=MirrorState("nads"))
    watch = asyncio.create_task(watching.continuous_watch(api=api, writer=writer, settings=settings))
    async with asyncio.timeout(5):
        await writer.state.synced.wait()
        listed_at = writer.resource_version
        opened = await emulator.wait_for_watch("network-attachment-definitions")

    watch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watch
    assert writer.state.relists == 1
    assert f"resourceVersion={listed_at}&" in opened
    assert "allowWatchBookmarks=true" in opened


async def test_a_continuous_watch_returns_on_410_and_forgets_its_position(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    writer = MirrorWriter(database=database, target=nads_in(None), state=MirrorState("nads"))
    writer.resource_version = emulator.resource_version
    emulator.create_nad("default", "n", '{"type":"macvlan"}')
    emulator.compact()
    since = emulator.last_request_seq

    async with asyncio.timeout(5):
        end = await watching.continuous_watch(api=api, writer=writer, settings=settings)

    assert end is watching.WatchEnd.EXPIRED
    assert writer.resource_version == ""
    assert lists_since(emulator, since) == []


async def test_a_relist_whose_continue_token_expired_lists_again_from_the_first_page(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    """A paged LIST outlived by its snapshot (the API server answers the continue token 410): the
    pages read so far are of a snapshot that can no longer be completed; the relist starts over and
    writes one whole, newer snapshot, with what changed meanwhile."""
    for index in range(7):
        emulator.create_pod(pod_manifest(f"p{index}"))
    emulator.faults.before_next(lambda: emulator.create_pod(pod_manifest("late")), path="continue=")
    emulator.faults.before_next(emulator.compact, path="continue=")
    writer = MirrorWriter(database=database, target=PODS, state=MirrorState("pods"))
    since = emulator.last_request_seq

    await watching.relist(api=api, writer=writer, settings=settings)

    pods = await database.read(mirror.list_pods)
    assert sorted(pod.name for pod in pods) == sorted([*(f"p{index}" for index in range(7)), "late"])
    assert [record.status for record in emulator.requests(since=since)] == [200, 410, 200, 200, 200]
    assert writer.resource_version == emulator.resource_version


async def test_the_endless_loop_backs_off_on_errors_and_stops_after_its_iterations(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    emulator.faults.fail_next(3, status=500, path="/pods")
    writer = MirrorWriter(database=database, target=PODS, state=MirrorState("pods"))
    since = emulator.last_request_seq

    await watching.infinite_watch(api=api, writer=writer, settings=settings, _iterations=3)

    assert writer.state.errors == 3
    assert "HTTP 500" in (writer.state.last_error or "")
    assert len(lists_since(emulator, since)) == 3
    assert not writer.state.synced.is_set()


async def test_the_endless_loop_returns_at_once_when_stopped(
    api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    stop = asyncio.Event()
    stop.set()
    writer = MirrorWriter(database=database, target=PODS, state=MirrorState("pods"))

    await watching.infinite_watch(api=api, writer=writer, settings=settings, stop=stop)

    assert writer.writes == 0


@pytest.mark.parametrize(("status", "retry_after", "waited"), [(429, 7, 7.0), (503, 600, 60.0)])
async def test_a_refused_watch_waits_what_the_server_asked_before_coming_back(
    emulator: KubeApiEmulator,
    api: KubeApi,
    database: Database,
    settings: WatchSettings,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    retry_after: int,
    waited: float,
) -> None:
    """An API server shedding load (API priority and fairness: 429 with ``Retry-After``) is not
    asked again after the first backoff step of a fifth of a second: the reconnection waits what it
    asked, at most ``backoff_max`` (it came back at once, however long the server had asked)."""
    patient = dataclasses.replace(settings, backoff_max=60.0)
    delays: list[float] = []

    async def record(delay: float, stop: asyncio.Event | None) -> None:
        delays.append(delay)

    monkeypatch.setattr(watching, "_sleep_unless_stopped", record)
    emulator.faults.fail_next(1, status=status, retry_after=retry_after, path="/pods")
    writer = MirrorWriter(database=database, target=PODS, state=MirrorState("pods"))

    await watching.infinite_watch(api=api, writer=writer, settings=patient, _iterations=1)

    assert writer.state.errors == 1
    assert delays == [waited]


def test_backoff_doubles_up_to_its_cap_with_bounded_jitter_and_resets() -> None:
    exact = Backoff(initial=0.1, maximum=1.0, jitter=0.0)
    jittered = Backoff(initial=0.1, maximum=1.0, jitter=0.2, rng=lambda: 1.0)

    delays = [exact.next_delay() for _ in range(6)]
    exact.reset()

    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert exact.next_delay() == pytest.approx(0.1)
    assert jittered.next_delay() == pytest.approx(0.12)


def test_backoff_starts_over_after_an_attempt_that_ran_its_reset_time_without_error() -> None:
    now = [0.0]
    backoff = Backoff(initial=0.1, maximum=10.0, jitter=0.0, reset_after=30.0, clock=lambda: now[0])
    delays = []
    for lasted in (1.0, 1.0, 29.0, 30.0, 1.0):
        backoff.started()
        now[0] += lasted
        delays.append(backoff.next_delay())

    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.1, 0.2])


async def test_a_watch_that_ran_long_without_error_reconnects_after_the_first_delay_again(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    """A stream that ran for ``backoff_reset_after`` and then broke is a first failure, however
    many failures came before it: its reconnection does not wait the doubled delay of a failing run
    (here nothing is written meanwhile: no event, bookmarks too few to persist the position)."""
    quiet = dataclasses.replace(
        settings, backoff_initial=0.01, backoff_max=10.0, backoff_jitter=0.0, backoff_reset_after=60.0
    )
    now = [0.0]
    backoff = watching.reconnect_backoff(quiet, clock=lambda: now[0])
    writer = MirrorWriter(
        database=database, target=nads_in(None), state=MirrorState("nads"), persist_interval=3600
    )
    emulator.faults.fail_next(3, status=500, path="network-attachment-definitions.*watch=true")
    loop = asyncio.create_task(
        watching.infinite_watch(api=api, writer=writer, settings=quiet, _iterations=4, _backoff=backoff)
    )
    # 1: the relist is written, its first stream refused; 2, 3: refused again; 4: a stream opens
    async with asyncio.timeout(5):
        await emulator.wait_for_watch("network-attachment-definitions")
    assert backoff.attempt == 3
    writes = writer.writes

    now[0] += 60.0  # the stream runs a minute
    emulator.drop_watches()  # then breaks
    async with asyncio.timeout(5):
        await loop

    assert writer.state.errors == 4
    assert writer.writes == writes, "nothing was written that would reset the backoff anyway"
    assert backoff.attempt == 1, "the break was waited for as a first failure"


async def test_the_token_bucket_allows_a_burst_then_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10.0, burst=3, clock=lambda: now[0])

    for _ in range(3):
        await bucket.acquire()
    now[0] += 0.1
    await bucket.acquire()

    assert now[0] == pytest.approx(0.1)


async def test_stopping_a_watch_in_the_middle_of_a_commit_leaves_the_store_usable(database: Database) -> None:
    writer = MirrorWriter(database=database, target=PODS, state=MirrorState("pods"))
    batch: list[WatchItem] = [
        Upsert(PodRecord("default", f"p{i}", f"u{i}", NODE, str(i))) for i in range(200)
    ]

    write = asyncio.create_task(writer.write_batch(batch))
    await asyncio.sleep(0)  # the commit is now queued on the writer thread
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write

    async with asyncio.timeout(5):
        stored = await database.read(lambda session: mirror.get_watch_state(session, "pods"))
        assert await database.write(lambda session: 42) == 42
    assert stored is not None
    assert writer.resource_version == stored.resource_version == "199"


async def test_a_watch_expired_again_right_after_each_relist_backs_off_instead_of_spinning(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    """A server whose watch answers 410 even from the resourceVersion its own LIST just gave (an
    apiserver whose watch cache does not reach back that far, behind a load balancer): relisting
    at once every time would hammer it with LISTs for ever; the loop backs off as after an error."""
    emulator.create_pod(pod_manifest("p"))
    rule = emulator.faults.fail_next(100_000, status=410, path="/pods.*watch=true")
    writer = MirrorWriter(database=database, target=PODS, state=MirrorState("pods"))
    stop = asyncio.Event()
    since = emulator.last_request_seq

    loop = asyncio.create_task(watching.infinite_watch(api=api, writer=writer, settings=settings, stop=stop))
    await asyncio.sleep(1.0)
    stop.set()
    async with asyncio.timeout(5):
        await loop
    emulator.faults.clear()

    # backoff from 0.02 s doubling to 0.2 s: about ten relists in a second, not hundreds
    assert 1 <= len(lists_since(emulator, since)) <= 20, rule


class Connection:
    """The transport side of an ``aiohttp.StreamReader``: paused once its read buffer is full."""

    def __init__(self) -> None:
        self._reading_paused = False

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._reading_paused = False

    @property
    def paused(self) -> bool:
        return self._reading_paused


async def test_a_stream_reads_no_further_ahead_of_a_lagging_writer_than_its_event_buffer() -> None:
    """A burst the mirror writer cannot keep up with stays in the connection (whose read buffer
    is bounded, so the server is held back), not in the stream's own memory."""
    connection = Connection()
    content = aiohttp.StreamReader(connection, 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    event = b'{"type":"ADDED","object":{"metadata":{"name":"n%04d"},"pad":"%s"}}\n'
    burst = [event % (i, b"x" * 4000) for i in range(300)]  # 1.2 MB, 16 events per read
    for line in burst:
        content.feed_data(line)
    assert connection.paused
    stream = WatchStream(content, read_ahead=10)

    first = await stream.next_lines(4)

    assert connection.paused, "the stream did not empty the connection's buffer"
    assert stream.buffered_lines <= 10 + READ_CHUNK // len(burst[0])
    content.feed_eof()
    rest = []
    while lines := await stream.next_lines(4):
        rest.extend(lines)
        assert stream.buffered_lines <= 10 + READ_CHUNK // len(burst[0])
    assert first + rest == [line.strip() for line in burst]
