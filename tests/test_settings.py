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
    assert parsed.device_checkpoint_file == "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint"
    assert parsed.device_info_dir == "/var/run/k8s.cni.cncf.io/devinfo", "the device-info spec's directory"
    assert parsed.hotplug_networks is False
    assert settings.from_mapping({"hotplugNetworks": True}).hotplug_networks is True


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
        ({"maxConcurrentDelegates": 0}, "maxConcurrentDelegates"),
        ({"maxConcurrentDelegates": -3}, "maxConcurrentDelegates"),
        ({"maxConcurrentDelegates": 2.5}, "maxConcurrentDelegates"),
        ({"maxConcurrentDelegates": "8"}, "maxConcurrentDelegates"),
        ({"maxConcurrentDelegates": True}, "maxConcurrentDelegates"),
        ({"chrootDir": 1}, "chrootDir"),
        ({"chrootDir": "relative/root"}, "chrootDir"),
        ({"deviceCheckpointFile": ["/x"]}, "deviceCheckpointFile"),
        ({"deviceInfoDir": 1}, "deviceInfoDir"),
        ({"deviceInfoDir": "devinfo"}, "deviceInfoDir"),
        ({"hotplugNetworks": "true"}, "hotplugNetworks"),
        # written into the shim conf, a relative one would be read from the runtime's working
        # directory: the shim's spooled DELs would land where no daemon looks
        ({"spoolDir": "spool"}, "spoolDir"),
        ({"stateDir": "var/lib/multus-py"}, "stateDir"),
        # copied into 00-multus.conf and merged into every request, where each ADD was refused for it
        ({"namespaceIsolation": "true"}, "namespaceIsolation"),
        ({"globalNamespaces": ["default", "shared"]}, "globalNamespaces"),
        ({"auxiliaryCNIChainName": {"name": "chain"}}, "auxiliaryCNIChainName"),
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


def test_parallel_delegates_is_off_by_default_and_read_as_a_boolean() -> None:
    assert settings.from_mapping({}).parallel_delegates is False
    assert settings.from_mapping({"parallelDelegates": True}).parallel_delegates is True


@pytest.mark.parametrize("value", ["true", 1, []])
def test_parallel_delegates_of_the_wrong_type_is_refused_naming_the_key(value: object) -> None:
    with pytest.raises(settings.SettingsError, match="parallelDelegates"):
        settings.from_mapping({"parallelDelegates": value})


def test_the_delegate_bound_defaults_to_four_per_cpu_and_takes_a_whole_number() -> None:
    assert settings.from_mapping({}).max_concurrent_delegates == settings.default_max_concurrent_delegates()
    assert settings.default_max_concurrent_delegates() >= 4
    assert settings.from_mapping({"maxConcurrentDelegates": 3}).max_concurrent_delegates == 3


def test_chroot_dir_must_be_a_directory_holding_bin_dir(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "lib" / "cni").mkdir(parents=True)
    (root / "opt" / "cni").mkdir(parents=True)
    # an absolute symlink, as on a real host: it must be followed inside the root, not the daemon's
    (root / "opt" / "cni" / "bin").symlink_to("/usr/lib/cni")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")

    def check(config: dict[str, object]) -> settings.Settings:
        parsed = settings.from_mapping(config)
        settings.check_chroot_dir(parsed)
        return parsed

    assert check({"chrootDir": str(root), "binDir": "/opt/cni/bin"}).chroot_dir == str(root)
    assert check({}).chroot_dir == ""
    for bad, reason in [
        (tmp_path / "missing", "is not a directory"),
        (not_a_dir, "is not a directory"),
    ]:
        with pytest.raises(settings.SettingsError, match=f"'chrootDir': {bad} {reason}"):
            check({"chrootDir": str(bad)})
    outside = "'chrootDir': binDir /elsewhere/bin is not a directory inside"
    with pytest.raises(settings.SettingsError, match=outside):
        check({"chrootDir": str(root), "binDir": "/elsewhere/bin"})
    (root / "usr" / "lib" / "cni").rmdir()
    with pytest.raises(settings.SettingsError, match="'chrootDir': binDir /opt/cni/bin"):
        check({"chrootDir": str(root), "binDir": "/opt/cni/bin"})


def test_a_bin_dir_holding_a_nul_is_refused_naming_the_key_not_a_traceback(tmp_path: Path) -> None:
    # os.lstat raises ValueError on a NUL: it escaped check_chroot_dir, and the daemon died with a
    # traceback instead of exiting 1 naming the key (now refused as the file is read)
    root = tmp_path / "root"
    (root / "opt" / "cni" / "bin").mkdir(parents=True)

    with pytest.raises(settings.SettingsError, match="'binDir' must hold no NUL character"):
        settings.check_chroot_dir(
            settings.from_mapping({"chrootDir": str(root), "binDir": "/opt/cni/bin\0x"})
        )


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"logOptions": "big"}, "logOptions"),
        ({"logOptions": {"maxSize": "100"}}, "logOptions.maxSize"),
        ({"logOptions": {"maxAge": -1}}, "logOptions.maxAge"),
        ({"logOptions": {"maxBackups": 1.5}}, "logOptions.maxBackups"),
        ({"logOptions": {"compress": "true"}}, "logOptions.compress"),
        ({"watch": {"requestTimeout": 0}}, "watch.requestTimeout"),
        ({"watch": {"listPageSize": 2.5}}, "watch.listPageSize"),
        ({"watch": {"backoffJitter": 1}}, "watch.backoffJitter"),
        ({"watch": {"eventDelay": -0.1}}, "watch.eventDelay"),
        ({"watch": {"statusRetryDelays": [0.1, "x"]}}, "watch.statusRetryDelays"),
        ({"watch": {"noSuchLimit": 1}}, "watch.noSuchLimit"),
        ({"watch": []}, "watch"),
        ({"shutdownGraceSeconds": -1}, "shutdownGraceSeconds"),
        ({"autoconfIntervalSeconds": 0}, "autoconfIntervalSeconds"),
        ({"historyPruneIntervalSeconds": "60"}, "historyPruneIntervalSeconds"),
        ({"overrideNetworkName": 1}, "overrideNetworkName"),
    ],
)
def test_a_bad_nested_or_interval_value_is_refused_naming_the_key(
    config: dict[str, object], key: str
) -> None:
    with pytest.raises(settings.SettingsError, match=f"'{key}'"):
        settings.from_mapping(config)


def test_log_options_take_upstreams_defaults_field_by_field() -> None:
    assert settings.from_mapping({}).log_options == settings.LogOptions(
        max_size_mb=100, max_age_days=5, max_backups=5, compress=True
    )
    parsed = settings.from_mapping({"logOptions": {"maxSize": 10, "compress": False}})
    assert parsed.log_options == settings.LogOptions(
        max_size_mb=10, max_age_days=5, max_backups=5, compress=False
    )


def test_the_environment_is_read_once_into_the_settings() -> None:
    environ = {
        "MULTUS_NODE_NAME": "node-a",
        "CNI_PATH": "/opt/cni/bin::/usr/lib/cni",
        "PATH": "/bin",
        "KUBECONFIG": "/etc/kube.conf",
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "MULTUS_PY_BOOT_ID": "boot-2",
        "MULTUS_PY_CRASH_AT": "add-after-exec:2",
        "MULTUS_PY_READY_HOLD_SECONDS": "1.5",
    }
    parsed = settings.from_mapping({}, environ=environ).environment
    assert parsed == settings.Environment(
        node_name="node-a",
        cni_path=("/opt/cni/bin", "/usr/lib/cni"),
        plugin_path="/bin",
        kubeconfig="/etc/kube.conf",
        kubernetes_service_host="10.0.0.1",
        kubernetes_service_port="443",
        boot_id="boot-2",
        crash_at="add-after-exec:2",
        ready_hold=1.5,
    )
    bare = settings.from_mapping({}, environ={}).environment
    assert bare.node_name  # the hostname
    assert bare.plugin_path == settings.DEFAULT_PLUGIN_PATH
    assert (bare.cni_path, bare.boot_id, bare.crash_at, bare.ready_hold) == ((), "", "", None)


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "inf", ""])
def test_a_ready_hold_that_is_not_a_number_of_seconds_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(settings.SettingsError, match="MULTUS_PY_READY_HOLD_SECONDS"):
        settings.from_mapping({}, environ={"MULTUS_PY_READY_HOLD_SECONDS": raw})


def test_watch_limits_are_overrides_by_field_name() -> None:
    parsed = settings.from_mapping(
        {
            "watch": {
                "requestTimeout": 3,
                "listPageSize": 50,
                "backoffJitter": 0,
                "statusRetryDelays": [0.1],
                "eventDelay": 0,
            }
        }
    )
    assert parsed.watch == {
        "request_timeout": 3.0,
        "list_page_size": 50,
        "backoff_jitter": 0.0,
        "status_retry_delays": (0.1,),
        "event_delay": 0.0,
    }
    assert settings.from_mapping({}).watch == {}


def test_a_key_set_to_null_takes_its_default_as_upstream_reads_it() -> None:
    # Go's decoder leaves a field alone on null: upstream starts with the default; this refused to
    # start ("'socketDir' must be a string, got null")
    keys = [
        "socketDir",
        "binDir",
        "logToStderr",
        "cniVersion",
        "readinessindicatorfile",
        "multusConfigFile",
        "connectionLimit",
        "metricsPort",
        "logOptions",
        "stateDir",
        "chrootDir",
        "maxConcurrentDelegates",
        "delegateTimeoutSeconds",
        "historyMaxRows",
        "logFormat",
        "parallelDelegates",
        "namespaceIsolation",
        "globalNamespaces",
        "watch",
    ]
    parsed = settings.from_mapping(
        {key: None for key in keys} | {"logOptions": {"maxSize": None}, "watch": {"requestTimeout": None}}
    )

    defaults = settings.from_mapping({})
    assert parsed.socket_path == defaults.socket_path
    assert parsed.log_options == defaults.log_options
    assert parsed.watch == {}
    assert parsed.shim_conf_values == {"logOptions": {}}, "nothing null is copied into 00-multus.conf"
    for name in ("bin_dir", "multus_config_file", "connection_limit", "timeouts", "max_concurrent_delegates"):
        assert getattr(parsed, name) == getattr(defaults, name), name
    assert settings.from_mapping({key: None for key in keys}).log_options == defaults.log_options


def _load(tmp_path: Path, text: str) -> settings.Settings:
    path = tmp_path / "daemon-config.json"
    path.write_text(text, encoding="utf-8")
    return settings.load(path)


def test_keys_are_matched_whatever_their_case_as_upstreams_decoder_matches_them(tmp_path: Path) -> None:
    # Go's encoding/json matches struct fields case-insensitively: upstream waits for a
    # "readinessIndicatorFile" and listens in a "SocketDir"; these were ignored (defaults used)
    parsed = _load(
        tmp_path,
        json.dumps(
            {
                "SocketDir": "/run/elsewhere",
                "readinessIndicatorFile": "/run/flannel/ready",
                "BINDIR": "/usr/lib/cni",
                "\u017ftateDir": "/var/lib/other",  # the long s folds to S in Go
                "LogOptions": {"MaxSize": 10, "compress": None},
                "Watch": {"RequestTimeout": 3},
            }
        ),
    )

    assert parsed.socket_dir == Path("/run/elsewhere")
    assert parsed.readiness_indicator_file == "/run/flannel/ready"
    assert parsed.bin_dir == "/usr/lib/cni"
    assert parsed.state_dir == Path("/var/lib/other")
    assert parsed.log_options.max_size_mb == 10
    assert parsed.watch == {"request_timeout": 3.0}
    assert parsed.shim_conf_values == {"binDir": "/usr/lib/cni", "logOptions": {"maxSize": 10}}, (
        "copied into 00-multus.conf under upstream's spelling, as its generator re-encodes them"
    )
    assert parsed.raw["SocketDir"] == "/run/elsewhere", "merged over requests as written"


@pytest.mark.parametrize(
    ("text", "socket_dir"),
    [
        ('{"socketDir": "/a", "SOCKETDIR": "/b"}', "/b"),
        ('{"SOCKETDIR": "/b", "socketDir": "/a"}', "/a"),
        ('{"socketDir": "/a", "SocketDir": "/b", "socketDir": "/c"}', "/c"),
        ('{"socketDir": "/a", "SocketDir": null}', "/a"),
    ],
)
def test_of_several_spellings_of_a_key_the_last_set_wins_as_in_go(
    tmp_path: Path, text: str, socket_dir: str
) -> None:
    assert _load(tmp_path, text).socket_dir == Path(socket_dir)


@pytest.mark.parametrize(
    ("text", "key", "literal"),
    [
        # under uvloop, a NaN interval fails every wait on it ("cannot convert float NaN to integer"):
        # the GC task crashed and restarted for ever
        ('{"gcIntervalSeconds": NaN}', "gcIntervalSeconds", "NaN"),
        ('{"delegateTimeoutSeconds": Infinity}', "delegateTimeoutSeconds", "Infinity"),
        ('{"shutdownGraceSeconds": 1e999}', "shutdownGraceSeconds", "1e999"),
        ('{"historyMaxAgeHours": NaN}', "historyMaxAgeHours", "NaN"),
        ('{"watch": {"backoffMax": -Infinity}}', "watch.backoffMax", "-Infinity"),
        ('{"logOptions": {"maxSize": 1e400}}', "logOptions.maxSize", "1e400"),
        # float() of it raised OverflowError: a traceback, not an error naming the key
        ('{"gcIntervalSeconds": 1' + "0" * 400 + "}", "gcIntervalSeconds", "1" + "0" * 400),
        # keys no setting reads are merged over every request, where Go cannot decode them either
        ('{"myKey": [1, {"deep": NaN}]}', "myKey[1].deep", "NaN"),
    ],
)
def test_a_number_go_cannot_decode_is_refused_naming_the_key(
    tmp_path: Path, text: str, key: str, literal: str
) -> None:
    with pytest.raises(settings.SettingsError) as refused:
        _load(tmp_path, text)
    assert str(refused.value) == f"daemon config key {key!r} must be a finite number, got {literal}"


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_a_file_nested_too_deeply_is_refused_not_a_traceback(tmp_path: Path, depth: int) -> None:
    # the decoder's RecursionError escaped: multus-daemon died with a traceback, not exit 1 naming the file
    with pytest.raises(settings.SettingsError, match="nested too deeply"):
        _load(tmp_path, '{"myKey": ' + "[" * depth + "]" * depth + "}")


def test_a_socket_dir_too_long_for_its_sockets_is_refused_naming_the_key(tmp_path: Path) -> None:
    fits = "/" + "d" * (settings.UNIX_SOCKET_PATH_MAX - len("/multus-query.sock") - 1)
    assert settings.from_mapping({"socketDir": fits}).socket_dir == Path(fits)
    # one byte more: multus.sock still binds, the query API did not (the daemon ran on without it)
    with pytest.raises(settings.SettingsError, match=r"'socketDir'.*multus-query\.sock would take 108"):
        settings.from_mapping({"socketDir": fits + "d"})
    with pytest.raises(settings.SettingsError, match="'socketDir'"):
        settings.from_mapping({"socketDir": fits + "d" * 20})


def test_the_longest_socket_dir_accepted_holds_sockets_that_bind(tmp_path: Path) -> None:
    import socket

    room = settings.UNIX_SOCKET_PATH_MAX - len(str(tmp_path)) - len("/multus-query.sock") - 1
    socket_dir = tmp_path / ("d" * room)
    socket_dir.mkdir()
    parsed = settings.from_mapping({"socketDir": str(socket_dir)})
    for path in (parsed.socket_path, parsed.query_socket_path):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(OSError, match="too long"):
        sock.bind(str(parsed.query_socket_path) + "x")
