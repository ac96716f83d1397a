"""The daemon builds the Kubernetes side's limits from daemon-config's ``watch`` object."""

from __future__ import annotations

import dataclasses

from app import settings
from app.daemon import cluster
from app.watch.settings import WatchSettings


def test_every_watch_limit_can_be_set_from_daemon_config() -> None:
    assert set(settings.WATCH_KEYS.values()) == {field.name for field in dataclasses.fields(WatchSettings)}


def test_the_watch_settings_take_the_overrides_and_keep_the_other_defaults() -> None:
    built = cluster.watch_settings(
        settings.from_mapping({"watch": {"requestTimeout": 3, "eventBurst": 7, "statusRetryDelays": []}})
    )
    assert built == dataclasses.replace(
        WatchSettings(), request_timeout=3.0, event_burst=7, status_retry_delays=()
    )
    assert cluster.watch_settings(settings.from_mapping({})) == WatchSettings()
