"""daemon-config.json: defaults, our own keys, and errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import settings


def test_defaults_follow_upstream() -> None:
    parsed = settings.from_mapping({})

    assert parsed.socket_path == Path("/run/multus/multus.sock")
    assert parsed.bin_dir == "/opt/cni/bin"
    assert parsed.database_path == Path("/var/lib/multus-py/state.db")
    assert parsed.timeouts.delegate_exec == settings.DEFAULT_DELEGATE_TIMEOUT


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"socketDir": 5}, "socketDir"),
        ({"logToStderr": "yes"}, "logToStderr"),
        ({"metricsPort": 70000}, "metricsPort"),
        ({"delegateTimeoutSeconds": 0}, "delegateTimeoutSeconds"),
        ({"delegateTimeoutSeconds": True}, "delegateTimeoutSeconds"),
        ({"connectionLimit": 0}, "connectionLimit"),
        ({"connectionLimit": -3}, "connectionLimit"),
        ({"connectionLimit": 1.5}, "connectionLimit"),
        ({"connectionLimit": "10"}, "connectionLimit"),
        ({"connectionLimit": True}, "connectionLimit"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(config: dict[str, object], key: str) -> None:
    with pytest.raises(settings.SettingsError, match=key):
        settings.from_mapping(config)


def test_connection_limit_is_unbounded_unless_set() -> None:
    assert settings.from_mapping({}).connection_limit is None
    assert settings.from_mapping({"connectionLimit": 2}).connection_limit == 2


def test_unreadable_or_malformed_files_are_refused_with_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    not_object = tmp_path / "list.json"
    not_object.write_text(json.dumps([1]))

    for path in (missing, broken):
        with pytest.raises(settings.SettingsError, match=str(path)):
            settings.load(path)
    with pytest.raises(settings.SettingsError, match="JSON object"):
        settings.load(not_object)
