"""Metric labels fed by outside input keep a bounded number of series.

A NAD's author chooses its plugin chain (which plugins, how many, in what order), and a socket
client chooses its HTTP method: neither may grow the daemon's series, its memory and every scrape
without bound.
"""

from __future__ import annotations

from app import metrics
from app.attach import recording
from app.store.records import HistoryEntry


def _label_values(family_name: str, label: str) -> set[str]:
    return {
        sample.labels[label]
        for family in metrics.REGISTRY.collect()
        if family.name == family_name
        for sample in family.samples
        if label in sample.labels
    }


def _delegate_line(plugin_types: tuple[str, ...]) -> HistoryEntry:
    return HistoryEntry(
        command="ADD",
        step="delegate",
        trigger="runtime",
        outcome="error",
        plugin_types=plugin_types,
        duration_ms=1.0,
    )


def test_delegate_latency_series_stay_bounded_whatever_plugin_chains_nads_name() -> None:
    """Thousands of NADs with chains nobody else uses (made-up types, real types repeated) whose
    ADDs fail add a bounded number of ``plugins`` values, not one each."""
    for index in range(600):
        recording.observe(_delegate_line((f"made-up-{index}",)))
    for length in range(2, 400):
        recording.observe(_delegate_line(("tuning",) * length))

    values = _label_values("multus_py_delegate_seconds", "plugins")

    assert len(values) <= 200
    assert metrics.OVERFLOW_LABEL in values
    assert max(map(len, values)) <= metrics.DELEGATE_PLUGINS.max_length


def test_a_plugin_chain_seen_before_the_bound_keeps_its_own_value() -> None:
    plugins = metrics.BoundedLabel(limit=2, max_length=20)

    assert [plugins.value(v) for v in ("bridge", "bridge,tuning", "macvlan", "bridge")] == [
        "bridge",
        "bridge,tuning",
        metrics.OVERFLOW_LABEL,
        "bridge",
    ]
    assert plugins.value("x" * 21) == metrics.OVERFLOW_LABEL


def test_made_up_http_methods_on_the_socket_share_one_series() -> None:
    for index in range(300):
        metrics.labelled(metrics.SERVER_REQUESTS, "/cni", "405", f"METHOD{index}").inc()
    metrics.labelled(metrics.SERVER_REQUESTS, "/cni", "200", "POST").inc()

    methods = _label_values("multus_server_request", "method")  # a counter's family drops "_total"

    assert "post" in methods
    assert not any(method.upper().startswith("METHOD") for method in methods)
    assert metrics.UNKNOWN_HTTP_METHOD in methods


def test_error_codes_plugins_make_up_share_a_bounded_number_of_series() -> None:
    """A plugin prints whatever ``code`` it likes: failed requests counted by code keep a bounded
    number of ``code`` values (the well-known codes among the first seen keep theirs)."""
    for code in (7, 11, 999):
        recording.observe(_request_line(code))
    for code in range(1000, 1600):
        recording.observe(_request_line(code))

    codes = _label_values("multus_py_cni_errors", "code")

    assert {"7", "11", "999"} <= codes
    assert len(codes) <= 100
    assert metrics.OVERFLOW_LABEL in codes


def _request_line(code: int) -> HistoryEntry:
    return HistoryEntry(
        command="ADD",
        step="request",
        trigger="runtime",
        outcome="error",
        error_code=code,
        duration_ms=1.0,
    )
