"""The generated 00-multus.conf never carries a ``cniVersion`` the runtime cannot load or the shim
refuses: without a daemon-config ``cniVersion`` the primary's is copied, and a broken one (a number,
an object, a version no plugin knows) refuses the primary, logged naming the file and the key,
and the conf written before stays."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from app import settings
from app.daemon import autoconf


def _settings(tmp_path: Path, **extra: object) -> settings.Settings:
    """A daemon config without ``cniVersion``: the primary's is the one written."""
    base: dict[str, object] = {
        "cniConfigDir": str(tmp_path),
        "multusAutoconfigDir": str(tmp_path),
        "multusConfigFile": "auto",
        "socketDir": str(tmp_path / "run"),
    }
    base.update(extra)
    return settings.from_mapping(base)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    ours = (r for r in caplog.records if r.name == "app.daemon.autoconf")
    return [r.getMessage() for r in ours if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("version", "shown"),
    [(1, "a number"), (1.0, "a number"), ({"major": 1}, "an object"), ("9.9.9", '"9.9.9"'), ("1.0", '"1.0"')],
    ids=["integer", "fraction", "object", "unknown-version", "two-part"],
)
def test_a_primary_cni_version_the_shim_cannot_take_is_refused_and_the_previous_conf_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, version: object, shown: str
) -> None:
    primary = tmp_path / "10-a.conflist"
    primary.write_text(json.dumps({"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "bridge"}]}))
    keeper = autoconf.Keeper(_settings(tmp_path))
    keeper.step(indicator_missing=False)
    written = (tmp_path / autoconf.CONF_NAME).read_bytes()
    assert json.loads(written)["cniVersion"] == "1.0.0"
    primary.write_text(json.dumps({"cniVersion": version, "name": "a", "plugins": [{"type": "bridge"}]}))

    with caplog.at_level(logging.INFO, logger="app.daemon.autoconf"):
        keeper.step(indicator_missing=False)
        keeper.step(indicator_missing=False)

    assert (tmp_path / autoconf.CONF_NAME).read_bytes() == written
    errors = _errors(caplog)
    assert len(errors) == 1, "once, not once per pass"
    assert str(primary) in errors[0]
    assert f"'cniVersion' is {shown}" in errors[0]
    assert "daemon config key 'cniVersion'" in errors[0]


@pytest.mark.parametrize("version", ["0.3.1", "1.1.0", None], ids=["0.3.1", "1.1.0", "absent"])
def test_a_primary_cni_version_the_shim_takes_is_copied_absent_stays_absent(
    tmp_path: Path, version: str | None
) -> None:
    primary = tmp_path / "10-a.conf"
    conf = {"name": "a", "type": "bridge"} | ({"cniVersion": version} if version else {})
    primary.write_text(json.dumps(conf))

    written = json.loads(autoconf.write(_settings(tmp_path), primary).read_bytes())

    assert written.get("cniVersion") == version


def test_the_daemon_configs_cni_version_is_written_whatever_the_primary_says_above_0_4_0(
    tmp_path: Path,
) -> None:
    primary = tmp_path / "10-a.conf"
    primary.write_text(json.dumps({"cniVersion": "1.1.0", "name": "a", "type": "bridge"}))

    written = json.loads(autoconf.write(_settings(tmp_path, cniVersion="1.0.0"), primary).read_bytes())

    assert written["cniVersion"] == "1.0.0"
