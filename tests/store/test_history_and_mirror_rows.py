"""History and mirror rows as stored: timestamps, NULLs, defaults, bounds and orders the filters and
relists rely on, read back through the store's own functions (plain SQL on the unit's cursor)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any

import pytest

from app.store import history, mirror
from app.store.database import Connection, Database
from app.store.filters import HistoryFilter
from app.store.mirror_records import PodRecord, WatchState
from app.store.records import HistoryEntry, PodIdentity
from app.store.records_sql import cursor_of

MOMENT = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


def _line(container_id: str = "c1", *, at: datetime = MOMENT, **fields: Any) -> HistoryEntry:
    return HistoryEntry(
        command="ADD",
        step="delegate",
        trigger="runtime",
        outcome="ok",
        container_id=container_id,
        at=at,
        **fields,
    )


def _scalar(db: Database, sql: str, *parameters: object) -> Any:
    return db.read_sync(lambda connection: cursor_of(connection).execute(sql, parameters).fetchone()[0])


# ---- watch state ----------------------------------------------------------------------------------


def test_a_watch_position_first_recorded_by_progress_starts_from_empty_defaults(db: Database) -> None:
    db.write_sync(partial(mirror.record_progress, key="pods", resource_version="7", events=3, at=None))

    assert db.read_sync(partial(mirror.get_watch_state, key="pods")) == WatchState(
        key="pods", scope="", resource_version="7", synced_at=None, last_event_at=None, relists=0, events=3
    )


def test_watch_times_are_stored_as_naive_utc_text_and_read_back_equal_and_aware(db: Database) -> None:
    given = MOMENT.astimezone(PLUS_TWO)
    db.write_sync(partial(mirror.record_relist, key="pods", scope="node", resource_version="1", at=given))
    db.write_sync(partial(mirror.record_relist, key="pods", scope="node", resource_version="2", at=given))
    db.write_sync(partial(mirror.record_progress, key="pods", resource_version="3", events=2, at=given))

    state = db.read_sync(partial(mirror.get_watch_state, key="pods"))

    assert state == WatchState("pods", "node", "3", MOMENT, MOMENT, relists=2, events=2)
    assert state is not None
    assert state.synced_at is not None
    assert state.synced_at.tzinfo == UTC
    stored = _scalar(db, 'SELECT synced_at FROM watch_state WHERE "key" = ?', "pods")
    assert stored == "2026-03-04 05:06:07.890123"


def test_a_whole_watch_state_with_no_times_keeps_them_null(db: Database) -> None:
    db.write_sync(partial(mirror.set_watch_state, state=WatchState("nads", "all", "5", MOMENT, MOMENT, 1, 1)))
    db.write_sync(partial(mirror.set_watch_state, state=WatchState("nads", "all", "6")))

    assert db.read_sync(partial(mirror.get_watch_state, key="nads")) == WatchState("nads", "all", "6")
    assert (
        _scalar(db, "SELECT count(*) FROM watch_state WHERE synced_at IS NULL AND last_event_at IS NULL") == 1
    )


def test_forgetting_the_position_of_an_unknown_watch_writes_no_row(db: Database) -> None:
    db.write_sync(partial(mirror.forget_resource_version, key="pods"))

    assert db.read_sync(partial(mirror.get_watch_state, key="pods")) is None


# ---- mirror rows ----------------------------------------------------------------------------------


def test_a_relist_names_what_it_deleted_by_namespace_and_name(db: Database) -> None:
    written = [PodRecord(namespace, name, "u") for namespace, name in [("b", "x"), ("a", "z"), ("a", "y")]]
    db.write_sync(partial(mirror.replace_pods, snapshot=written))

    outcome = db.write_sync(partial(mirror.replace_pods, snapshot=[PodRecord("c", "kept", "u")]))

    assert outcome.deleted == (("a", "y"), ("a", "z"), ("b", "x"))
    assert [pod.key for pod in db.read_sync(mirror.list_pods)] == [("c", "kept")]


def test_pod_annotations_are_stored_as_sorted_json(db: Database) -> None:
    db.write_sync(partial(mirror.upsert_pod, pod=PodRecord("ns", "p", "u", annotations={"b": "2", "a": "é"})))

    assert _scalar(db, "SELECT annotations FROM mirror_pods") == '{"a": "\\u00e9", "b": "2"}'


# ---- history --------------------------------------------------------------------------------------


def test_a_line_reads_back_every_field_with_its_time_aware_and_equal(db: Database) -> None:
    line = _line(
        netns="/run/netns/x",
        ifname="net1",
        network_name="ns/net",
        plugin_types=("bridge", "tuning"),
        pod=PodIdentity("ns", "pod", "uid"),
        duration_ms=2.5,
        ips=("10.0.0.2/24",),
        macs=("0a:00:00:00:00:01",),
        error_code=7,
        error_msg="msg",
        error_details="details",
        at=MOMENT.astimezone(PLUS_TWO),
        node="node-a",
        device_ids=("0000:00:01.0",),
    )
    db.write_sync(partial(history.append, entry=line))

    (read,) = db.read_sync(partial(history.for_container, container_id="c1"))

    assert read == line
    assert read.at is not None
    assert read.at.tzinfo == UTC
    assert _scalar(db, "SELECT at FROM history") == "2026-03-04 05:06:07.890123"


def test_the_summary_of_an_empty_history_has_no_times(db: Database) -> None:
    assert db.read_sync(history.summary) == (0, None, None)


def test_the_summary_dates_the_first_and_last_lines_recorded(db: Database) -> None:
    later = MOMENT + timedelta(microseconds=1)
    db.write_sync(partial(history.append_all, entries=[_line(at=later), _line(at=MOMENT), _line(at=later)]))

    assert db.read_sync(history.summary) == (3, later, later)


def test_since_includes_a_line_at_that_very_microsecond_and_not_the_one_before(db: Database) -> None:
    before = MOMENT - timedelta(microseconds=1)
    db.write_sync(
        partial(history.append_all, entries=[_line("early", at=before), _line("on-time", at=MOMENT)])
    )

    lines = db.read_sync(partial(history.query, where=HistoryFilter(since=MOMENT.astimezone(PLUS_TWO))))

    assert [line.entry.container_id for line in lines] == ["on-time"]


def test_a_container_prefix_is_a_prefix_not_a_like_pattern(db: Database) -> None:
    ids = ["c_1", "cx1", "c%2", "cy2", "C_1", "c"]
    db.write_sync(partial(history.append_all, entries=[_line(container_id) for container_id in ids]))

    def containers(prefix: str) -> list[str]:
        lines = db.read_sync(partial(history.query, where=HistoryFilter(container=prefix, limit=0)))
        return sorted(line.entry.container_id for line in lines)

    assert containers("c_") == ["c_1"]
    assert containers("c%") == ["c%2"]
    assert containers("c") == ["c", "c%2", "c_1", "cx1", "cy2"]
    assert db.read_sync(partial(history.containers_with_prefix, prefix="c_", limit=10)) == ["c_1"]


def test_a_pod_in_several_namespaces_reads_the_same_pages_merged_or_with_one_in_list(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [
        _line(f"c{index}", pod=PodIdentity(namespace, pod, ""), network_name=network)
        for index, (namespace, pod, network) in enumerate(
            (namespace, pod, network)
            for _ in range(5)
            for namespace in ("a", "b", "")
            for pod in ("web", "db")
            for network in ("a/net", "b/net", "net")
        )
    ]
    db.write_sync(partial(history.append_all, entries=entries))
    where = HistoryFilter(pod="web", network="net", limit=0)

    def pages(size: int) -> list[list[int]]:
        def read(connection: Connection) -> list[list[int]]:
            result, before = [], None
            while lines := history.page(connection, where, before_id=before, size=size):
                result.append([line.id for line in lines])
                before = lines[-1].id
            return result

        return db.read_sync(read)

    merged = pages(4)
    monkeypatch.setattr(history, "MERGED_ALTERNATIVES", 1)
    with_in_list = pages(4)

    expected = [
        index + 1
        for index, entry in enumerate(entries)
        if entry.pod.name == "web" and entry.network_name in ("a/net", "b/net", "net")
    ][::-1]
    assert merged == with_in_list
    assert [line_id for page in merged for line_id in page] == expected
    assert {len(page) for page in merged[:-1]} == {4}


def test_a_filter_naming_nothing_recorded_reads_no_statement(db: Database) -> None:
    db.write_sync(partial(history.append, entry=_line(network_name="ns/net")))

    assert (
        db.read_sync(
            partial(history.page_statement, where=HistoryFilter(network="other"), before_id=None, size=5)
        )
        is None
    )
    assert db.read_sync(partial(history.query, where=HistoryFilter(network="net"))) != []


def test_pruning_by_age_takes_lines_of_one_time_in_the_order_they_were_recorded(db: Database) -> None:
    old = MOMENT - timedelta(days=1)
    db.write_sync(
        partial(
            history.append_all,
            entries=[_line("new", at=MOMENT), _line("a", at=old), _line("b", at=old), _line("c", at=old)],
        )
    )
    bound = db.read_sync(partial(history.last_id_if_any_before, cutoff=MOMENT))
    assert bound == 4

    deleted = db.write_sync(partial(history.delete_oldest, up_to_id=bound, before=MOMENT, batch=2))

    assert deleted == 2
    remaining = db.read_sync(partial(history.query, where=HistoryFilter(limit=0)))
    assert [line.entry.container_id for line in remaining] == ["c", "new"]
    assert db.read_sync(partial(history.last_id_if_any_before, cutoff=old)) is None


def test_pruning_by_rows_keeps_the_newest(db: Database) -> None:
    db.write_sync(partial(history.append_all, entries=[_line(f"c{index}") for index in range(5)]))

    assert db.read_sync(partial(history.last_id_beyond, max_rows=5)) is None
    bound = db.read_sync(partial(history.last_id_beyond, max_rows=2))
    assert bound == 3
    assert db.write_sync(partial(history.delete_oldest, up_to_id=bound, batch=100)) == 3
    assert db.read_sync(history.summary)[0] == 2


def test_history_lines_are_written_once_when_one_of_them_needs_its_surrogates_escaped(db: Database) -> None:
    """``executemany`` had inserted the lines before the one it could not encode when it refused it;
    the retry with every line escaped wrote those lines a second time."""
    names = ["plain-0", "plain-1", "odd-\udcff", "plain-3"]
    lines = [_line(network_name=name) for name in names]

    db.write_sync(partial(history.append_all, entries=lines))

    networks = db.read_sync(
        lambda connection: connection.execute("SELECT network_name FROM history ORDER BY id").fetchall()
    )
    assert [name for (name,) in networks] == ["plain-0", "plain-1", "odd-\\udcff", "plain-3"]
