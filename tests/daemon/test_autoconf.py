"""The generated 00-multus.conf: upstream's bytes, upstream's choice of primary, atomic writes."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from app import settings
from app.daemon import autoconf


def _settings(tmp_path: Path, **extra: object) -> settings.Settings:
    base: dict[str, object] = {
        "cniVersion": "1.0.0",
        "logLevel": "verbose",
        "logFile": "$W/logs/multus.log",
        "cniConfigDir": str(tmp_path),
        "multusAutoconfigDir": str(tmp_path),
        "multusConfigFile": "auto",
        "socketDir": "$W/run-multus",
        "daemonSocketDir": "$W/run-multus",
        "cniDir": "$W/cni",
        "binDir": "$W/bin",
        "confDir": "$W/multus-net.d",
    }
    base.update(extra)
    return settings.from_mapping(base)


def test_the_conf_matches_upstreams_recorded_bytes_plus_our_spool_dir(tmp_path: Path) -> None:
    primary = tmp_path / "10-default.conflist"
    primary.write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "default-net", "plugins": [{"type": "bridge"}]})
    )

    rendered = autoconf.render(_settings(tmp_path), primary)

    expected = (
        '{"binDir":"$W/bin","cniVersion":"1.0.0","logFile":"$W/logs/multus.log","logLevel":"verbose",'
        f'"name":"multus-cni-network","clusterNetwork":"{primary}","type":"multus-shim","cniDir":"$W/cni",'
        '"daemonSocketDir":"$W/run-multus","spoolDir":"/var/lib/multus-py/spool"}'
    )
    assert rendered.decode() == expected


def test_the_first_conf_by_name_is_the_primary_and_00_multus_is_skipped(tmp_path: Path) -> None:
    for name in ("00-multus.conf", "30-c.conflist", "20-b.conf", "10-a.json", "notes.txt"):
        (tmp_path / name).write_text("{}")

    assert autoconf.find_primary(_settings(tmp_path)) == tmp_path / "20-b.conf"


def test_capabilities_of_the_primary_plugins_are_offered_to_the_runtime(tmp_path: Path) -> None:
    primary = tmp_path / "10-x.conflist"
    primary.write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "x",
                "plugins": [
                    {"type": "bridge"},
                    {"type": "portmap", "capabilities": {"portMappings": True, "disabled": False}},
                    {"type": "bandwidth", "capabilities": {"bandwidth": True}},
                ],
            }
        )
    )

    conf = json.loads(autoconf.render(_settings(tmp_path), primary))

    assert conf["capabilities"] == {"bandwidth": True, "portMappings": True}


def test_writing_is_atomic_and_idempotent(tmp_path: Path) -> None:
    primary = tmp_path / "10-x.conflist"
    primary.write_text(json.dumps({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge"}]}))
    conf_settings = _settings(tmp_path)

    written = autoconf.write(conf_settings, primary)
    first_inode = written.stat().st_ino
    autoconf.write(conf_settings, primary)

    assert written == tmp_path / "00-multus.conf"
    assert written.stat().st_ino == first_inode, "unchanged content is not rewritten"
    assert oct(written.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00-multus.conf", "10-x.conflist"]


def test_force_cni_version_rewrites_the_primary_conf_keeping_its_mode_and_owner(tmp_path: Path) -> None:
    # upstream's forceCNIVersion: the primary's cniVersion becomes daemon-config's. Its
    # os.WriteFile(path, data, 0644) truncates the existing file, whose mode and owner stay; ours
    # made a primary kept at 0600 by its owner readable to every user of the node, and root's
    primary = tmp_path / "10-default.conf"
    primary.write_text(json.dumps({"cniVersion": "0.4.0", "name": "default-net", "type": "bridge"}))
    primary.chmod(0o600)
    os.chown(primary, 4321, 4322)

    autoconf.write(_settings(tmp_path, forceCNIVersion=True), primary)

    assert json.loads(primary.read_text()) == {"cniVersion": "1.0.0", "name": "default-net", "type": "bridge"}
    kept = primary.stat()
    assert (kept.st_mode & 0o777, kept.st_uid, kept.st_gid) == (0o600, 4321, 4322)


def test_force_cni_version_must_be_true_or_false() -> None:
    with pytest.raises(settings.SettingsError, match="forceCNIVersion"):
        settings.from_mapping({"forceCNIVersion": "yes"})


def test_a_primary_older_than_0_4_0_under_a_newer_top_level_version_is_refused(tmp_path: Path) -> None:
    # upstream: "delegate cni version is 0.3.1 while top level cni version is 1.0.0", no conf
    primary = tmp_path / "10-default.conf"
    primary.write_text(json.dumps({"cniVersion": "0.3.1", "name": "default-net", "type": "bridge"}))

    with pytest.raises(autoconf.AutoconfError, match=r"delegate cni version is 0\.3\.1"):
        autoconf.write(_settings(tmp_path), primary)
    assert not (tmp_path / autoconf.CONF_NAME).exists()


@pytest.mark.parametrize("version", ["1.0.\u00b2", "\u0661.0.0"], ids=["superscript-two", "arabic-indic-one"])
def test_a_primary_version_of_digits_that_are_not_ascii_is_refused_not_a_crash(
    tmp_path: Path, version: str
) -> None:
    """``str.isdigit`` takes these, ``int`` does not (``²``) or reads them as digits Go does not."""
    primary = tmp_path / "10-default.conf"
    primary.write_text(json.dumps({"cniVersion": version, "name": "default-net", "type": "bridge"}))

    with pytest.raises(autoconf.AutoconfError, match="delegate cni version is"):
        autoconf.write(_settings(tmp_path), primary)
    assert not (tmp_path / autoconf.CONF_NAME).exists()


def test_a_primary_larger_than_a_network_configuration_may_be_is_refused_unread(tmp_path: Path) -> None:
    """Read as every network configuration is (invariant 15): not whole into memory, whatever its size."""
    primary = tmp_path / "10-default.conf"
    conf = json.dumps({"cniVersion": "1.0.0", "name": "default-net", "type": "bridge"})
    primary.write_text(conf[:-1] + " " * (2 * 1024 * 1024) + "}")

    with pytest.raises(autoconf.AutoconfError, match="is more than 1048576 bytes"):
        autoconf.write(_settings(tmp_path), primary)
    assert not (tmp_path / autoconf.CONF_NAME).exists()


def test_00_multus_conf_named_as_the_primary_is_refused(tmp_path: Path) -> None:
    # upstream refuses <multusAutoconfigDir>/00-multus.conf as the primary; taking it would make the
    # cluster network the shim itself (every ADD calls the shim again, without end)
    config = _settings(tmp_path, multusMasterCNI=autoconf.CONF_NAME)
    (tmp_path / autoconf.CONF_NAME).write_text(
        '{"cniVersion":"1.0.0","name":"multus-cni-network","type":"multus-shim"}'
    )

    primary = autoconf.find_primary(config)
    with pytest.raises(autoconf.AutoconfError, match="multusMasterCNI"):
        autoconf.write(config, primary or tmp_path / autoconf.CONF_NAME)


def test_an_absolute_multus_master_cni_stays_inside_the_autoconfig_dir(tmp_path: Path) -> None:
    # upstream: filepath.Join(multusAutoconfigDir, multusMasterCNI); never a file elsewhere
    outside = tmp_path / "outside.conf"
    outside.write_text('{"cniVersion":"1.0.0","name":"x","type":"bridge"}')
    inside = tmp_path / "auto"
    inside.mkdir()
    config = _settings(tmp_path, multusAutoconfigDir=str(inside), multusMasterCNI=str(outside))

    assert autoconf.find_primary(config) is None
    (inside / str(outside).lstrip("/")).parent.mkdir(parents=True)
    (inside / str(outside).lstrip("/")).write_text("{}")
    assert autoconf.find_primary(config) == inside / str(outside).lstrip("/")


def test_text_in_the_conf_is_escaped_as_gos_encoder_escapes_it(tmp_path: Path) -> None:
    directory = tmp_path / "net.d & é"
    directory.mkdir()
    primary = directory / "10-default.conf"
    primary.write_text(json.dumps({"cniVersion": "1.0.0", "name": "default-net", "type": "bridge"}))

    rendered = autoconf.render(_settings(directory, logFile="/var/log/<multus>.log"), primary)

    assert b'"logFile":"/var/log/\\u003cmultus\\u003e.log"' in rendered
    assert f'"clusterNetwork":"{tmp_path}/net.d \\u0026 \u00e9/10-default.conf"'.encode() in rendered


def _outcomes(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "app.daemon.autoconf"]


def test_a_missing_primary_is_logged_once_naming_the_directory_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the daemon used to wait for a primary without a word; upstream fails after 120 s
    keeper = autoconf.Keeper(_settings(tmp_path))

    with caplog.at_level(logging.INFO, logger="app.daemon.autoconf"):
        for _ in range(3):
            keeper.step(indicator_missing=False)
        (tmp_path / "10-a.conf").write_text('{"cniVersion":"1.0.0","name":"a","type":"bridge"}')
        keeper.step(indicator_missing=False)
        keeper.step(indicator_missing=False)

    outcomes = _outcomes(caplog)
    assert [level for level, _ in outcomes] == ["WARNING", "INFO"]
    assert f"in {tmp_path} (daemon config key 'multusAutoconfigDir') yet" in outcomes[0][1]
    assert f"cluster network {tmp_path / '10-a.conf'}" in outcomes[1][1]


def test_a_multus_master_cni_naming_a_missing_file_is_logged_naming_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "10-a.conf").write_text('{"cniVersion":"1.0.0","name":"a","type":"bridge"}')
    keeper = autoconf.Keeper(_settings(tmp_path, multusMasterCNI="20-missing.conf"))

    with caplog.at_level(logging.INFO, logger="app.daemon.autoconf"):
        keeper.step(indicator_missing=False)
        keeper.step(indicator_missing=False)

    assert _outcomes(caplog) == [
        (
            "WARNING",
            f"no primary network configuration: {tmp_path / '20-missing.conf'} (daemon config key "
            "'multusMasterCNI') is not a file; 00-multus.conf not written",
        )
    ]
    assert not (tmp_path / autoconf.CONF_NAME).exists()


def test_an_unlistable_autoconfig_dir_is_a_logged_refusal_naming_the_key_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a regular file where the directory should be: the task raised NotADirectoryError on every pass
    # (a traceback per pass, restarted with backoff)
    not_a_directory = tmp_path / "auto"
    not_a_directory.write_text("")
    keeper = autoconf.Keeper(_settings(tmp_path, multusAutoconfigDir=str(not_a_directory)))

    with caplog.at_level(logging.INFO, logger="app.daemon.autoconf"):
        keeper.step(indicator_missing=False)
        keeper.step(indicator_missing=False)

    assert _outcomes(caplog) == [
        (
            "ERROR",
            f"cannot write 00-multus.conf: cannot list {not_a_directory} "
            "(daemon config key 'multusAutoconfigDir'): Not a directory",
        )
    ]


def test_a_primary_being_written_is_logged_once_not_on_every_pass(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    primary = tmp_path / "10-a.conf"
    primary.write_text('{"cniVersion":"1.0.0","name":"a",')
    keeper = autoconf.Keeper(_settings(tmp_path))

    with caplog.at_level(logging.INFO, logger="app.daemon.autoconf"):
        for _ in range(3):
            keeper.step(indicator_missing=False)
        primary.write_text('{"cniVersion":"1.0.0","name":"a","type":"bridge"}')
        keeper.step(indicator_missing=False)

    assert [level for level, _ in _outcomes(caplog)] == ["ERROR", "INFO"]
    assert (tmp_path / autoconf.CONF_NAME).exists()


@pytest.mark.parametrize("force_cni_version", [False, True])
def test_a_primary_nested_too_deep_is_a_logged_refusal_and_the_previous_conf_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, force_cni_version: bool
) -> None:
    # JSON nested too deep to decode (Go's decoder refuses it as well): RecursionError escaped the
    # task on every pass (a traceback each time, restarted with backoff)
    primary = tmp_path / "10-a.conf"
    primary.write_text('{"cniVersion":"1.0.0","name":"a","type":"bridge"}')
    keeper = autoconf.Keeper(_settings(tmp_path, forceCNIVersion=force_cni_version))
    keeper.step(indicator_missing=False)
    written = (tmp_path / autoconf.CONF_NAME).read_bytes()
    primary.write_text(
        '{"cniVersion":"1.0.0","name":"a","type":"bridge","x":' + "[" * 100_000 + "]" * 100_000 + "}"
    )

    with caplog.at_level(logging.INFO, logger="app.daemon.autoconf"):
        keeper.step(indicator_missing=False)
        keeper.step(indicator_missing=False)

    assert _outcomes(caplog) == [
        (
            "ERROR",
            f"cannot write 00-multus.conf: cannot read primary network configuration {primary}: "
            "nested too deep",
        )
    ]
    assert (tmp_path / autoconf.CONF_NAME).read_bytes() == written


def test_force_cni_version_writes_through_a_symlinked_primary(tmp_path: Path) -> None:
    # upstream's os.WriteFile follows the link; replacing the link by a file cut the primary off
    # from its owner, whose later changes to the file it links to were never seen again
    owned = tmp_path / "owner" / "calico.conflist"
    owned.parent.mkdir()
    owned.write_text(
        json.dumps({"cniVersion": "0.4.0", "name": "k8s-pod-network", "plugins": [{"type": "x"}]})
    )
    primary = tmp_path / "10-calico.conflist"
    primary.symlink_to(owned)

    autoconf.write(_settings(tmp_path, forceCNIVersion=True), primary)

    assert primary.is_symlink()
    assert json.loads(owned.read_text())["cniVersion"] == "1.0.0"
    assert sorted(p.name for p in owned.parent.iterdir()) == ["calico.conflist"]


def test_override_network_name_is_written_where_upstreams_generator_writes_it(tmp_path: Path) -> None:
    # upstream's Generate() empties the keys only the daemon reads, but not overrideNetworkName:
    # its conf ends with it, which ours left out
    primary = tmp_path / "10-default.conflist"
    primary.write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "default-net", "plugins": [{"type": "bridge"}]})
    )

    rendered = autoconf.render(_settings(tmp_path, overrideNetworkName=True), primary)

    expected = (
        '{"binDir":"$W/bin","cniVersion":"1.0.0","logFile":"$W/logs/multus.log","logLevel":"verbose",'
        f'"name":"default-net","clusterNetwork":"{primary}","type":"multus-shim","cniDir":"$W/cni",'
        '"daemonSocketDir":"$W/run-multus","overrideNetworkName":true,"spoolDir":"/var/lib/multus-py/spool"}'
    )
    assert rendered.decode() == expected


def test_log_options_are_written_as_upstreams_struct_encodes_them(tmp_path: Path) -> None:
    # upstream decodes logOptions into its LogOptions struct and encodes that: fields in the
    # struct's order, unknown keys dropped; ours copied daemon-config's object as written
    primary = tmp_path / "10-default.conflist"
    primary.write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "default-net", "plugins": [{"type": "bridge"}]})
    )
    log_options = {"compress": False, "rotate": "daily", "maxSize": 10, "maxAge": 3}

    rendered = autoconf.render(_settings(tmp_path, logOptions=log_options), primary)

    assert '"logLevel":"verbose","logOptions":{"maxAge":3,"maxSize":10,"compress":false},"name":' in (
        rendered.decode()
    )


@pytest.mark.parametrize("primary_name", [None, "", 42])
def test_override_network_name_keeps_a_name_when_the_primary_has_none_usable(
    tmp_path: Path, primary_name: object
) -> None:
    # the conf's name is required by the runtime: it was left out (or written as a number)
    primary = tmp_path / "10-default.conf"
    conf: dict[str, object] = {"cniVersion": "1.0.0", "type": "bridge"}
    if primary_name is not None:
        conf["name"] = primary_name
    primary.write_text(json.dumps(conf))

    rendered = json.loads(autoconf.render(_settings(tmp_path, overrideNetworkName=True), primary))

    assert rendered["name"] == "multus-cni-network"


def test_override_network_name_takes_the_primarys_name(tmp_path: Path) -> None:
    primary = tmp_path / "10-default.conf"
    primary.write_text(json.dumps({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "bridge"}))

    rendered = json.loads(autoconf.render(_settings(tmp_path, overrideNetworkName=True), primary))

    assert rendered["name"] == "k8s-pod-network"


def test_a_temporary_left_by_a_daemon_killed_mid_write_is_removed_by_the_next_write(tmp_path: Path) -> None:
    # kill -9 between the temporary's creation and its rename left it in the CNI conf dir for ever;
    # a young one may be another daemon's write in progress (an upgrade) and stays
    primary = tmp_path / "10-x.conflist"
    primary.write_text(json.dumps({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge"}]}))
    stale, young = tmp_path / ".00-multus.conf.k1ll3d_9", tmp_path / ".00-multus.conf.wr1t1ng_"
    stale.write_text('{"cniVersion":')
    young.write_text('{"cniVersion":')
    old = time.time() - 3600
    os.utime(stale, (old, old))

    autoconf.write(_settings(tmp_path), primary)

    assert sorted(p.name for p in tmp_path.iterdir()) == [young.name, "00-multus.conf", "10-x.conflist"]


def test_a_conf_a_runtime_would_take_before_ours_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a runtime takes the first configuration by name: a primary named 00-cilium.conf (or anything
    # sorting before 00-multus.conf) in the runtime's conf dir silently bypasses multus
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (tmp_path / "10-a.conf").write_text('{"cniVersion":"1.0.0","name":"a","type":"bridge"}')
    (conf_dir / "00-cilium.conf").write_text("{}")
    (conf_dir / "00-aaa.txt").write_text("not a conf")
    (conf_dir / "99-late.conflist").write_text("{}")
    keeper = autoconf.Keeper(_settings(tmp_path, cniConfigDir=str(conf_dir)))

    with caplog.at_level(logging.WARNING, logger="app.daemon.autoconf"):
        keeper.step(indicator_missing=False)
        keeper.step(indicator_missing=False)
        (conf_dir / "00-cilium.conf").unlink()
        keeper.step(indicator_missing=False)

    warnings = [message for level, message in _outcomes(caplog) if level == "WARNING"]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"00-cilium.conf in {conf_dir} sorts before 00-multus.conf")


def test_what_cannot_be_removed_among_the_temporaries_names_does_not_stop_the_write(tmp_path: Path) -> None:
    # a directory of a temporary's name (any leftover whose removal fails) made every write raise
    # IsADirectoryError: 00-multus.conf was never written nor refreshed again
    primary = tmp_path / "10-x.conflist"
    primary.write_text(json.dumps({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge"}]}))
    not_ours = tmp_path / ".00-multus.conf.d"
    not_ours.mkdir()
    old = time.time() - 3600
    os.utime(not_ours, (old, old))

    written = autoconf.write(_settings(tmp_path), primary)

    assert json.loads(written.read_bytes())["clusterNetwork"] == str(primary)
    assert not_ours.is_dir()


def test_a_fifo_at_the_conf_s_name_is_replaced_not_waited_on(tmp_path: Path) -> None:
    """Whether the conf changed was read from ``00-multus.conf`` following whatever was there: a
    FIFO held the keeper's thread until a writer came (a device was read whole)."""
    primary = tmp_path / "10-x.conflist"
    primary.write_text(json.dumps({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge"}]}))
    os.mkfifo(tmp_path / autoconf.CONF_NAME)
    outcome: list[Path] = []
    keeper = threading.Thread(
        target=lambda: outcome.append(autoconf.write(_settings(tmp_path), primary)), daemon=True
    )

    keeper.start()
    keeper.join(timeout=10)

    if keeper.is_alive():  # the old code, blocked in open(): let it go before failing
        with open(tmp_path / autoconf.CONF_NAME, "wb"):
            pass
        keeper.join(timeout=10)
        pytest.fail("the keeper waited on the FIFO at 00-multus.conf's name")
    assert json.loads(outcome[0].read_bytes())["clusterNetwork"] == str(primary)
