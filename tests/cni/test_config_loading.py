"""Loading confs and conflists (bytes, files, directories) and building each plugin's stdin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.cni import api, conf
from app.cni.api import CniConfig
from app.cni.types import CniError, ErrorCode, NetworkConfigList, RuntimeConf
from tests.cni.support import Netns, json_values, links, outcome_of, unique


def load(document: Any) -> NetworkConfigList:
    return conf.load_network_list(json.dumps(document).encode(), source="nad default/x")


def load_error(document: Any) -> CniError:
    with pytest.raises(CniError) as caught:
        load(document)
    return caught.value


# --- single confs and conflists ---------------------------------------------------------------------


def test_a_single_conf_becomes_a_list_of_one_plugin_keeping_its_bytes() -> None:
    raw = b'{"cniVersion": "0.4.0", "name": "mynet", "type": "bridge", "bridge": "br0"}'

    net = conf.load_network_list(raw, source="f")

    assert (net.name, net.cni_version, net.is_single_conf, net.raw) == ("mynet", "0.4.0", True, raw)
    assert net.plugins == ({"cniVersion": "0.4.0", "name": "mynet", "type": "bridge", "bridge": "br0"},)


def test_the_same_bytes_load_to_the_same_list_and_bad_bytes_fail_every_time_naming_their_source() -> None:
    raw = b'{"cniVersion": "1.0.0", "name": "again", "plugins": [{"type": "bridge"}]}'
    bad = b'{"cniVersion": "1.0.0", "name": "again", "plugins": []}'

    first = conf.load_network_list(raw, source="checkpoint of a/net1")
    second = conf.load_network_list(bytearray(raw), source="checkpoint of b/net1")

    assert second is first  # parsed once
    assert second.raw == raw
    for source in ("nad default/one", "nad default/two"):
        with pytest.raises(CniError) as caught:
            conf.load_network_list(bad, source=source)
        assert caught.value.msg == f'{source}: "plugins" is empty'


def test_a_list_loaded_from_a_bytearray_keeps_bytes_the_caller_cannot_change() -> None:
    data = bytearray(b'{"cniVersion": "1.0.0", "name": "from-bytearray", "plugins": [{"type": "bridge"}]}')

    net = conf.load_network_list(data, source="request field 'config'")
    data[:] = b"{}"

    assert type(net.raw) is bytes
    assert json.loads(net.raw)["name"] == "from-bytearray"


def test_a_conflist_keeps_its_plugins_in_order_and_its_flags() -> None:
    net = load(
        {
            "cniVersion": "1.1.0",
            "name": "chain",
            "disableCheck": True,
            "disableGC": "TRUE",
            "plugins": [{"type": "bridge"}, {"type": "tuning", "mtu": 1400}],
        }
    )

    assert net.plugin_types == ["bridge", "tuning"]
    assert (net.disable_check, net.disable_gc, net.is_single_conf) == (True, True, False)


def test_a_missing_cni_version_means_0_1_0() -> None:
    assert load({"name": "n", "type": "bridge"}).cni_version == "0.1.0"


@pytest.mark.parametrize(
    ("versions", "declared", "chosen"),
    [
        (["0.4.0", "1.0.0", "2.0.0"], None, "1.0.0"),
        (["1.1.0", "0.3.1"], "1.0.0", "1.1.0"),
        (["0.3.1"], "1.0.0", "1.0.0"),
        (["3.0.0"], "0.4.0", "0.4.0"),
    ],
)
def test_cni_versions_picks_the_highest_supported(
    versions: list[str], declared: str | None, chosen: str
) -> None:
    document: dict[str, Any] = {"name": "n", "cniVersions": versions, "plugins": [{"type": "bridge"}]}
    if declared:
        document["cniVersion"] = declared

    assert load(document).cni_version == chosen


@pytest.mark.parametrize("versions", [["1.0.0", "1.1.0"], ["0.5.0"], "1.1.0", [1]])
def test_a_single_conf_runs_at_its_cni_version_whatever_cni_versions_it_holds(versions: object) -> None:
    # libcni reads "cniVersions" for a conflist only; a single conf took the list's highest
    net = load({"cniVersion": "1.0.0", "cniVersions": versions, "name": "n", "type": "bridge"})

    assert (net.is_single_conf, net.cni_version) == (True, "1.0.0")
    assert net.plugins[0]["cniVersions"] == versions  # the plugin's own key, handed on as given


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"type": "bridge"}, 'missing "name"'),
        ({"name": 5, "type": "bridge"}, '"name" must be a string, got a number'),
        ({"name": "my net", "type": "bridge"}, "invalid characters found in network name; my net"),
        ({"name": "-net", "type": "bridge"}, "invalid characters found in network name; -net"),
        ({"name": "n"}, "no 'type'; perhaps this is a .conflist?"),
        ({"name": "n", "type": ""}, '"type" is empty'),
        ({"name": "n", "type": ["bridge"]}, '"type" must be a string, got a list'),
        ({"name": "n", "plugins": {"type": "bridge"}}, '"plugins" must be a list, got an object'),
        ({"name": "n", "plugins": []}, '"plugins" is empty'),
        ({"name": "n", "plugins": ["bridge"]}, '"plugins[0]" must be an object, got a string'),
        ({"name": "n", "plugins": [{"type": "a"}, {"mtu": 1}]}, 'missing "plugins[1].type"'),
        (
            {"name": "n", "plugins": [{"type": "a", "capabilities": []}]},
            '"plugins[0].capabilities" must be an object',
        ),
        (
            {"name": "n", "plugins": [{"type": "a", "capabilities": {"mac": "yes"}}]},
            '"plugins[0].capabilities.mac" must be true or false, got a string',
        ),
        (
            {"name": "n", "plugins": [{"type": "a", "ipam": "host-local"}]},
            '"plugins[0].ipam" must be an object',
        ),
        ({"name": "n", "type": "a", "ipam": {"type": 1}}, '"ipam.type" must be a string, got a number'),
        (
            {"name": "n", "type": "a", "cniVersion": "0.5.0"},
            'invalid "cniVersion": unsupported CNI version "0.5.0"',
        ),
        ({"name": "n", "type": "a", "cniVersion": 1.0}, '"cniVersion" must be a string, got a number'),
        (
            {"name": "n", "plugins": [{"type": "a"}], "cniVersions": "1.0.0"},
            '"cniVersions" must be a list of strings, got a string',
        ),
        (
            {"name": "n", "plugins": [{"type": "a"}], "cniVersions": ["x"]},
            '"cniVersions[0]": invalid version "x"',
        ),
        (
            {"name": "n", "plugins": [{"type": "a"}], "cniVersions": ["0.5.0"]},
            'no supported version in "cniVersions"/"cniVersion"',
        ),
        ({"name": "n", "type": "a", "disableCheck": "maybe"}, 'invalid value "maybe" for "disableCheck"'),
        ({"name": "n", "type": "a", "disableGC": 1}, 'invalid value 1 for "disableGC"'),
    ],
)
def test_invalid_configs_are_refused_naming_the_source_and_field(
    document: dict[str, Any], message: str
) -> None:
    error = load_error(document)

    assert error.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert str(error).startswith("nad default/x: ")
    assert message in str(error)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{", 6),
        (b'{"name": NaN}', 6),
        (b'{"name": "n", "type": "bridge", "mtu": 1e999}', 6),
        (b'{"name": "n", "type": "bridge", "mtu": -1E400}', 6),
        (b"\xff", 6),
        (b"[]", 7),
        (b"null", 7),
    ],
)
def test_bytes_that_are_not_a_json_object_are_refused(raw: bytes, code: int) -> None:
    with pytest.raises(CniError) as caught:
        conf.load_network_list(raw, source="f.conf")

    assert caught.value.code == code
    assert caught.value.msg.startswith("f.conf: ")


any_json = json_values(max_leaves=15)
conf_keys = st.sampled_from(
    [
        "name",
        "type",
        "cniVersion",
        "cniVersions",
        "plugins",
        "disableCheck",
        "disableGC",
        "capabilities",
        "ipam",
    ]
)
plugin_like = st.dictionaries(conf_keys, any_json | st.just("bridge"), max_size=4)


@given(raw=st.binary(max_size=200))
def test_loading_arbitrary_bytes_raises_only_config_or_decoding_errors(raw: bytes) -> None:
    outcome = outcome_of(conf.load_network_list, raw, source="fuzz")

    assert not isinstance(outcome, CniError) or outcome.code in (6, 7)


@given(
    document=st.dictionaries(
        conf_keys,
        any_json | st.sampled_from(["n", "bridge", "1.0.0"]) | st.lists(plugin_like, max_size=3),
        max_size=6,
    )
)
def test_loading_arbitrary_config_objects_raises_only_config_errors(document: dict[str, Any]) -> None:
    outcome = outcome_of(conf.load_network_list, json.dumps(document).encode(), source="fuzz")

    if isinstance(outcome, CniError):
        assert outcome.code == ErrorCode.INVALID_NETWORK_CONFIG
        assert outcome.msg.startswith("fuzz: ")
    else:
        assert outcome.plugins
        assert all(conf.plugin_type(plugin) for plugin in outcome.plugins)


# --- files and directories ------------------------------------------------------------------------


def write(directory: Path, name: str, document: Any) -> Path:
    path = directory / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def test_find_by_name_scans_conf_files_in_lexical_order(tmp_path: Path) -> None:
    write(tmp_path, "10-a.conflist", {"cniVersion": "1.0.0", "name": "dup", "plugins": [{"type": "first"}]})
    write(tmp_path, "20-b.conf", {"cniVersion": "1.0.0", "name": "dup", "type": "second"})
    write(tmp_path, "30-c.json", {"cniVersion": "1.0.0", "name": "other", "type": "third"})
    write(tmp_path, "05-ignored.txt", {"cniVersion": "1.0.0", "name": "other", "type": "ignored"})

    found = {name: conf.find_by_name(str(tmp_path), name) for name in ("dup", "other", "absent")}

    assert [net.plugin_types if net else None for net in found.values()] == [["first"], ["third"], None]


def test_missing_directories_hold_no_configs(tmp_path: Path) -> None:
    assert conf.find_by_name(str(tmp_path / "nope"), "x") is None
    assert conf.first_in_dir(str(tmp_path / "nope")) is None
    assert conf.first_in_dir(str(tmp_path)) is None


def test_first_in_dir_is_the_lexically_first_file(tmp_path: Path) -> None:
    write(tmp_path, "20-b.conf", {"name": "second", "type": "bridge"})
    write(tmp_path, "10-a.conflist", {"name": "first", "plugins": [{"type": "bridge"}]})
    (tmp_path / "00-dir.conf").mkdir()

    first = conf.first_in_dir(str(tmp_path))

    assert first is not None
    assert first.name == "first"


def test_a_broken_file_before_the_match_is_an_error_naming_it(tmp_path: Path) -> None:
    broken = write(tmp_path, "10-broken.conf", "{not json")
    write(tmp_path, "20-good.conf", {"name": "good", "type": "bridge"})

    with pytest.raises(CniError) as caught:
        conf.find_by_name(str(tmp_path), "good")
    with pytest.raises(CniError):
        conf.first_in_dir(str(tmp_path))

    assert caught.value.code == ErrorCode.DECODING_FAILURE
    assert caught.value.msg.startswith(f"{broken}: error parsing configuration: ")


@pytest.mark.parametrize(
    ("name", "types"),
    [("10-both.conf", ["bridge"]), ("10-both.json", ["bridge"]), ("10-both.conflist", ["macvlan", "tuning"])],
)
def test_a_file_with_both_type_and_plugins_is_read_by_its_extension_as_libcni_reads_it(
    tmp_path: Path, name: str, types: list[str]
) -> None:
    # by content alone a "plugins" key made any file a chain: a .conf holding both ran other
    # plugins than the runtime or upstream Multus run for it (its "type")
    document = {
        "cniVersion": "1.0.0",
        "name": "both",
        "type": "bridge",
        "plugins": [{"type": "macvlan"}, {"type": "tuning"}],
    }
    path = write(tmp_path, name, document)

    loaded = conf.load_file(str(path))

    assert [plugin["type"] for plugin in loaded.plugins] == types
    assert (b'"plugins"' in loaded.raw) is (name.endswith(".conflist")), "what a DEL replays runs the same"


def test_an_unreadable_file_is_an_io_failure(tmp_path: Path) -> None:
    with pytest.raises(CniError) as caught:
        conf.load_file(str(tmp_path / "missing.conf"))

    assert caught.value.code == ErrorCode.IO_FAILURE
    assert str(tmp_path / "missing.conf") in caught.value.msg


# --- plugin stdin ---------------------------------------------------------------------------------


def test_plugin_stdin_is_compact_sorted_json_with_name_version_and_prev_result() -> None:
    plugin = {"type": "tuning", "name": "ignored", "cniVersion": "0.1.0", "mtu": 1400}

    stdin = conf.plugin_stdin(plugin, name="net", cni_version="1.0.0", prev_result={"cniVersion": "1.0.0"})

    assert stdin == (
        b'{"cniVersion":"1.0.0","mtu":1400,"name":"net","prevResult":{"cniVersion":"1.0.0"},"type":"tuning"}'
    )


def test_runtime_config_is_injected_only_for_declared_and_supplied_capabilities() -> None:
    plugin = {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": True, "mac": False}}
    supplied = {"portMappings": [{"hostPort": 80}], "mac": "02:00:00:00:00:01", "ips": ["10.0.0.1/24"]}

    stdin = json.loads(conf.plugin_stdin(plugin, name="n", cni_version="1.0.0", capability_args=supplied))

    assert stdin["runtimeConfig"] == {"portMappings": [{"hostPort": 80}]}
    assert stdin["capabilities"] == plugin["capabilities"]


def test_a_plugins_own_runtime_config_stays_when_no_capability_applies() -> None:
    plugin = {"type": "x", "runtimeConfig": {"static": True}, "capabilities": {"mac": True}}

    stdin = json.loads(conf.plugin_stdin(plugin, name="n", cni_version="1.0.0", capability_args={}))

    assert stdin["runtimeConfig"] == {"static": True}
    assert "prevResult" not in stdin


def test_unencodable_capability_values_are_a_config_error() -> None:
    plugin = {"type": "x", "capabilities": {"bandwidth": True}}

    with pytest.raises(CniError) as caught:
        conf.plugin_stdin(plugin, name="n", cni_version="1.0.0", capability_args={"bandwidth": float("nan")})

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg.startswith('cannot encode configuration for plugin "x": ')


def test_integral_numbers_reach_the_plugin_as_libcni_writes_them() -> None:
    raw = (
        b'{"cniVersion":"1.0.0","name":"n","type":"bridge","mtu":1500.0,"vlan":1e2,'
        b'"ipam":{"type":"host-local","big":1152921504606846976.0,"neg":-3.0,'
        b'"half":0.5,"huge":1e21,"exact":12345678901234567891}}'
    )
    net = conf.load_network_list(raw, source="nad default/n")

    stdin = conf.plugin_stdin(net.plugins[0], name=net.name, cni_version=net.cni_version)

    # Go's float64 re-encoding: integral values as integers (shortest digits, zero-padded) below
    # 1e21; integers as written stay exact (upstream would round them to float64)
    assert stdin == (
        b'{"cniVersion":"1.0.0","ipam":{"big":1152921504606847000,"exact":12345678901234567891,'
        b'"half":0.5,"huge":1e+21,"neg":-3,"type":"host-local"},"mtu":1500,"name":"n","type":"bridge",'
        b'"vlan":100}'
    )
    assert net.raw == raw


async def test_a_bridge_with_an_mtu_written_as_a_float_is_added_and_deleted(
    cni: CniConfig, rt: RuntimeConf, netns: Netns, host_links: list[str]
) -> None:
    bridge = unique("mpf")
    host_links.append(bridge)
    raw = f'{{"cniVersion":"1.0.0","name":"floatmtu","type":"bridge","bridge":"{bridge}","mtu":1400.0}}'
    net = conf.load_network_list(raw.encode(), source="nad default/floatmtu")

    result = await api.add_network_list(cni=cni, net=net, rt=rt)
    mtu_inside = (await links(netns))["eth0"]["mtu"]
    await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=result)

    assert mtu_inside == 1400
    assert "eth0" not in await links(netns)


async def test_a_single_conf_listing_a_version_its_plugin_lacks_in_cni_versions_is_added_and_deleted(
    cni: CniConfig, rt: RuntimeConf
) -> None:
    """The reference plugins know CNI up to 1.0.0: run at 1.1.0, the highest of ``cniVersions``,
    static refused the ADD (incompatible CNI versions), where upstream Multus runs it at 1.0.0."""
    raw = json.dumps(
        {
            "cniVersion": "1.0.0",
            "cniVersions": ["1.0.0", "1.1.0"],
            "name": "static-only",
            "type": "static",
            "ipam": {"type": "static", "addresses": [{"address": "10.77.0.5/24"}]},
        }
    ).encode()
    net = conf.load_network_list(raw, source="nad default/static-only")

    result = await api.add_network_list(cni=cni, net=net, rt=rt)
    await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=result)

    assert (result["cniVersion"], result["ips"][0]["address"]) == ("1.0.0", "10.77.0.5/24")
