"""A primary network configuration that is Multus itself (a symlink to the 00-multus.conf this
daemon writes, a copy of one) is refused: as the cluster network the shim would ask the daemon to
ADD the sandbox whose ADD runs it, and every ADD would wait behind its own lock."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from app import settings
from app.daemon import autoconf

PRIMARY = '{"cniVersion":"1.0.0","name":"a","type":"bridge"}'


def _settings(cni_dir: Path, auto_dir: Path, **extra: object) -> settings.Settings:
    base: dict[str, object] = {
        "cniVersion": "1.0.0",
        "cniConfigDir": str(cni_dir),
        "multusAutoconfigDir": str(auto_dir),
        "multusConfigFile": "auto",
        "socketDir": str(cni_dir / "run"),
    }
    base.update(extra)
    return settings.from_mapping(base)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    ours = (r for r in caplog.records if r.name == "app.daemon.autoconf")
    return [r.getMessage() for r in ours if r.levelno >= logging.ERROR]


def test_a_primary_linked_to_our_own_conf_is_refused_and_our_conf_still_names_the_real_primary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """multusAutoconfigDir apart from cniConfigDir, its primary replaced by a link to our output:
    it was taken, and 00-multus.conf named itself as the cluster network."""
    cni_dir, auto_dir = tmp_path / "net.d", tmp_path / "auto"
    cni_dir.mkdir()
    auto_dir.mkdir()
    primary = auto_dir / "10-a.conf"
    primary.write_text(PRIMARY)
    keeper = autoconf.Keeper(_settings(cni_dir, auto_dir))
    keeper.step(indicator_missing=False)
    written = (cni_dir / autoconf.CONF_NAME).read_bytes()
    primary.unlink()
    primary.symlink_to(cni_dir / autoconf.CONF_NAME)

    with caplog.at_level(logging.INFO, logger="app.daemon.autoconf"):
        keeper.step(indicator_missing=False)

    assert (cni_dir / autoconf.CONF_NAME).read_bytes() == written
    [error] = _errors(caplog)
    assert f"cannot use {primary} as the primary network configuration" in error
    assert "'multusAutoconfigDir'" in error
    assert "'multus-shim' is Multus itself" in error


@pytest.mark.parametrize(
    "conf",
    [
        '{"cniVersion":"1.0.0","name":"m","type":"multus-shim"}',
        '{"cniVersion":"1.0.0","name":"m","plugins":[{"type":"multus"}]}',
    ],
    ids=["shim-conf", "thin-plugin-conflist"],
)
def test_a_copy_of_a_multus_conf_named_as_the_primary_is_refused(tmp_path: Path, conf: str) -> None:
    (tmp_path / "05-multus-old.conflist").write_text(conf)
    config = _settings(tmp_path, tmp_path, multusMasterCNI="05-multus-old.conflist")

    primary = autoconf.find_primary(config)
    assert primary is not None
    with pytest.raises(autoconf.AutoconfError, match=r"'multusMasterCNI'.*is Multus itself"):
        autoconf.write(config, primary)
    assert not (tmp_path / autoconf.CONF_NAME).exists()


@pytest.mark.parametrize(
    "conf",
    [
        '{"cniVersion":"1.0.0","name":"m","type":{"a":1}}',
        '{"cniVersion":"1.0.0","name":"m","plugins":[{"type":"bridge"},{"type":["multus"]}]}',
    ],
    ids=["type-an-object", "later-type-a-list"],
)
def test_a_primary_whose_type_is_no_string_is_no_multus_check_crash(tmp_path: Path, conf: str) -> None:
    """A type that is no string is no set member: the Multus-itself check raised ``TypeError``.
    Such a primary is no Multus: it is written as the cluster network, as upstream writes it (and
    as a zero-plugin one is), and each ADD then refuses it naming the field (``app.cni.conf``)."""
    (tmp_path / "05-odd.conflist").write_text(conf)
    config = _settings(tmp_path, tmp_path, multusMasterCNI="05-odd.conflist")
    primary = autoconf.find_primary(config)
    assert primary is not None

    autoconf.write(config, primary)

    written = json.loads((tmp_path / autoconf.CONF_NAME).read_text())
    assert (written["type"], written["clusterNetwork"]) == ("multus-shim", str(primary))
