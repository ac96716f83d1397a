"""What a delegate receives from a selection and a NAD: capability args, CNI_ARGS, args.cni, deviceID."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from app.attach.cluster import NETWORKS_ANNOTATION
from app.attach.delegate_inputs import (
    capability_args_for,
    cni_args_for,
    cni_device_info_path,
    inject_cni_args,
    inject_device_id,
)
from app.attach.nad_config import falls_back_to_conf_dir, nad_network_config
from app.attach.netconf import MultusNetConf
from app.attach.networks import ClusterSources, NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.attach.selection import NetworkSelection, parse_networks
from app.cni import conf as cniconf
from app.cni.types import CniError, ContainerId, ErrorCode, IfName, RuntimeConf
from app.store.mirror_records import NadRecord, PodRecord
from app.store.records import PodIdentity
from tests.core.support import Nads, OnePod

POD_ARGS = (
    ("IgnoreUnknown", "true"),
    ("K8S_POD_NAMESPACE", "default"),
    ("K8S_POD_NAME", "pa"),
    ("K8S_POD_INFRA_CONTAINER_ID", "<cid>"),
    ("K8S_POD_UID", "<uid>"),
)
MACVLAN_NAD = json.dumps(
    {
        "cniVersion": "1.0.0",
        "type": "macvlan",
        "master": "prb-mv0",
        "mode": "bridge",
        "capabilities": {"mac": True, "ips": True},
        "ipam": {"type": "static"},
    }
)
MACVLAN_ANNOTATION = (
    '[{"name":"macvlan-conf","interface":"mv9","mac":"02:00:00:00:00:31",'
    '"ips":["10.221.0.50/24"],"cni-args":{"foo":"bar"}}]'
)


def test_reference_macvlan_example_gives_the_recorded_cni_args_and_stdin() -> None:
    [selection] = parse_networks(MACVLAN_ANNOTATION, pod_namespace="default")
    config = nad_network_config("macvlan-conf", MACVLAN_NAD, namespace="default")
    assert selection.cni_args is not None
    net = cniconf.load_network_list(
        inject_cni_args(config, selection.cni_args), source="default/macvlan-conf"
    )
    runtime = RuntimeConf(
        container_id=ContainerId("cid"),
        netns="/var/run/netns/x",
        ifname=IfName(selection.interface),
        args=cni_args_for(selection, POD_ARGS),
        capability_args=capability_args_for(selection, {}),
    )
    stdin = cniconf.plugin_stdin(
        net.plugins[0], name=net.name, cni_version=net.cni_version, capability_args=runtime.capability_args
    )

    assert runtime.ifname == "mv9"
    assert runtime.cni_args_string() == (
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pa;K8S_POD_INFRA_CONTAINER_ID=<cid>;"
        "K8S_POD_UID=<uid>;MAC=02:00:00:00:00:31;IP=10.221.0.50/24"
    )
    assert stdin == (
        b'{"args":{"cni":{"foo":"bar"}},"capabilities":{"ips":true,"mac":true},"cniVersion":"1.0.0",'
        b'"ipam":{"type":"static"},"master":"prb-mv0","mode":"bridge","name":"macvlan-conf",'
        b'"runtimeConfig":{"ips":["10.221.0.50/24"],"mac":"02:00:00:00:00:31"},"type":"macvlan"}'
    )


# --- capability args ------------------------------------------------------------------------------------


def test_capability_args_overlay_every_request_on_the_runtime_config() -> None:
    runtime = {
        "portMappings": [{"hostPort": 1, "containerPort": 1}],
        "mac": "runtime-mac",
        "custom": {"x": 1},
    }
    selection = NetworkSelection(
        name="a",
        namespace="p",
        ips=("10.0.0.5/24",),
        mac="02:00:00:00:00:01",
        infiniband_guid="00:00:00:00:00:00:00:01",
        port_mappings=({"hostPort": 80, "containerPort": 8080},),
        bandwidth={"ingressRate": 1, "ingressBurst": 2, "egressRate": 3, "egressBurst": 4},
        device_id="0000:00:1f.0",
    )
    assert capability_args_for(selection, runtime) == {
        "portMappings": [{"hostPort": 80, "containerPort": 8080}],
        "mac": "02:00:00:00:00:01",
        "custom": {"x": 1},
        "bandwidth": {"ingressRate": 1, "ingressBurst": 2, "egressRate": 3, "egressBurst": 4},
        "ips": ["10.0.0.5/24"],
        "infinibandGUID": "00:00:00:00:00:00:00:01",
        "deviceID": "0000:00:1f.0",
    }


def test_runtime_config_passes_unchanged_without_requests_and_is_never_mutated() -> None:
    runtime = {"portMappings": [{"hostPort": 1, "containerPort": 1}], "bandwidth": {"ingressRate": 9}}
    before = copy.deepcopy(runtime)
    merged = capability_args_for(NetworkSelection(name="a", namespace="p"), runtime)
    merged["portMappings"][0]["hostPort"] = 2
    assert merged["bandwidth"] == {"ingressRate": 9}
    assert runtime == before


def test_a_resource_device_id_wins_over_the_requested_one() -> None:
    selection = NetworkSelection(name="a", namespace="p", device_id="requested")
    assert (
        capability_args_for(selection, {}, resource_device_id="from-resource")["deviceID"] == "from-resource"
    )
    assert capability_args_for(selection, {})["deviceID"] == "requested"


def test_device_info_file_path_flattens_slashes() -> None:
    assert cni_device_info_path(network_name="default/sriov-net", container_id="abc123", ifname="net1") == (
        "/var/run/k8s.cni.cncf.io/devinfo/cni/default-sriov-net-abc123_net1"
    )


# --- CNI_ARGS ------------------------------------------------------------------------------------------


def test_cni_args_append_mac_then_comma_joined_ips() -> None:
    selection = NetworkSelection(
        name="a", namespace="p", ips=("10.0.0.5/24", "fd00::5/64"), mac="02:00:00:00:00:01"
    )
    assert cni_args_for(selection, POD_ARGS)[-2:] == (
        ("MAC", "02:00:00:00:00:01"),
        ("IP", "10.0.0.5/24,fd00::5/64"),
    )


def test_cni_args_are_the_base_pairs_without_requests() -> None:
    assert cni_args_for(NetworkSelection(name="a", namespace="p"), POD_ARGS) == POD_ARGS


# --- args.cni ----------------------------------------------------------------------------------------------


def test_cni_args_merge_into_a_single_conf_with_annotation_keys_winning() -> None:
    conf = {"type": "macvlan", "name": "n", "args": {"cni": {"foo": "conf", "keep": 1}, "other": True}}
    before = copy.deepcopy(conf)
    assert json.loads(inject_cni_args(conf, {"foo": "bar", "new": [1]})) == {
        "type": "macvlan",
        "name": "n",
        "args": {"cni": {"foo": "bar", "keep": 1, "new": [1]}, "other": True},
    }
    assert conf == before


def test_cni_args_go_into_every_plugin_of_a_conflist() -> None:
    conflist = b'{"name":"n","plugins":[{"type":"bridge"},{"type":"tuning","args":{"cni":{"a":1}}}]}'
    document = json.loads(inject_cni_args(conflist, {"b": 2}))
    assert [plugin["args"] for plugin in document["plugins"]] == [
        {"cni": {"b": 2}},
        {"cni": {"a": 1, "b": 2}},
    ]
    assert "args" not in document


def test_empty_cni_args_still_add_an_empty_args_cni() -> None:
    assert inject_cni_args(b'{"type":"x","name":"n"}', {}) == b'{"args":{"cni":{}},"name":"n","type":"x"}'


def test_injected_configs_are_compact_with_sorted_keys() -> None:
    assert inject_device_id(b'{"type": "sriov", "name": "n", "a": 1}', "0000:00:1f.0") == (
        b'{"a":1,"deviceID":"0000:00:1f.0","name":"n","pciBusID":"0000:00:1f.0","type":"sriov"}'
    )


def test_device_id_goes_into_every_plugin_of_a_conflist() -> None:
    document = json.loads(
        inject_device_id(b'{"name":"n","plugins":[{"type":"sriov"},{"type":"tuning"}]}', "d1")
    )
    assert [(p["deviceID"], p["pciBusID"]) for p in document["plugins"]] == [("d1", "d1"), ("d1", "d1")]


@pytest.mark.parametrize(
    ("conf", "text"),
    [
        (b'{"name":"n"}', "addCNIArgsInConfList() unable to get plugin list"),
        (b'{"name":"n","plugins":{}}', "addCNIArgsInConfList() unable to typecast plugin list"),
        (b'{"name":"n","plugins":[{"type":"a"},3]}', "addCNIArgsInConfList() unable to typecast plugin #1"),
        (b'{"type":"x","args":[]}', '"args" of the delegate configuration must be an object'),
        (b'{"type":"x","args":{"cni":"s"}}', '"args.cni" of the delegate configuration must be an object'),
        (b"[]", "delegate configuration must be a JSON object"),
    ],
)
def test_cni_args_refuse_confs_upstream_would_panic_or_fail_on(conf: bytes, text: str) -> None:
    with pytest.raises(CniError) as caught:
        inject_cni_args(conf, {"a": 1})
    assert (caught.value.code, caught.value.msg) == (ErrorCode.INVALID_NETWORK_CONFIG, text)


# --- NetworkAttachmentDefinition spec.config ------------------------------------------------------------


def test_only_an_empty_spec_config_falls_back_to_conf_dir() -> None:
    assert falls_back_to_conf_dir("")
    assert not falls_back_to_conf_dir(" ")
    with pytest.raises(ValueError, match="confDir"):
        nad_network_config("n", "")


def test_a_named_config_is_returned_byte_for_byte() -> None:
    config = '{ "name": "own",  "type": "bridge" }'
    assert nad_network_config("nad", config, namespace="ns") == config.encode()


@pytest.mark.parametrize("name", [None, ""])
def test_a_missing_or_empty_name_becomes_the_nads_name(name: str | None) -> None:
    document = {"type": "bridge", "cniVersion": "1.0.0"} | ({} if name is None else {"name": name})
    assert nad_network_config("nad", json.dumps(document)) == (
        b'{"cniVersion":"1.0.0","name":"nad","type":"bridge"}'
    )


def test_a_conflist_is_accepted() -> None:
    config = '{"cniVersion":"1.0.0","plugins":[{"type":"bridge"},{"type":"tuning"}]}'
    assert json.loads(nad_network_config("nad", config))["name"] == "nad"


PREFIX = "network-attachment-definition ns/nad: "
SPEC = PREFIX + "GetCNIConfig: err in getCNIConfigFromSpec: failed to unmarshal Spec.Config: "
LIST = PREFIX + "LoadDelegateNetConf: failed with: LoadDelegateNetConfList: "


@pytest.mark.parametrize(
    ("config", "text"),
    [
        ("[1]", SPEC + "json: cannot unmarshal array into Go value of type map[string]interface {}"),
        ("null", SPEC + "json: cannot unmarshal null into Go value of type map[string]interface {}"),
        ('{"name":"x"}', LIST + "delegate must have the 'type' or 'plugin' field"),
        ('{"name":"x","type":""}', LIST + "delegate must have the 'type' or 'plugin' field"),
        ('{"name":"x","plugins":[]}', LIST + "delegate must have the 'type' or 'plugin' field"),
        ('{"name":"x","plugins":[{"name":"y"}]}', LIST + "a plugin delegate must have the 'type' field"),
        (
            '{"name":5,"type":"x"}',
            PREFIX
            + "LoadDelegateNetConf: error unmarshalling delegate config: json: cannot unmarshal number "
            "into Go struct field NetConf.name of type string",
        ),
    ],
)
def test_nad_config_errors_name_the_nad_and_keep_upstream_text(config: str, text: str) -> None:
    with pytest.raises(CniError) as caught:
        nad_network_config("nad", config, namespace="ns")
    assert (caught.value.code, caught.value.msg) == (ErrorCode.INVALID_NETWORK_CONFIG, text)


def test_nad_config_that_is_not_json_is_code_7() -> None:
    with pytest.raises(CniError) as caught:
        nad_network_config("nad", "{oops", namespace="ns")
    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg.startswith(SPEC)


@pytest.mark.parametrize(
    "plugins",
    [[{"type": "tuning"}], [{"type": "multus-shim"}], [], None, "not a list"],
    ids=["a-chain", "multus-itself", "empty", "null", "a-string"],
)
def test_a_config_with_a_type_is_that_one_plugin_whatever_plugins_it_also_holds(plugins: object) -> None:
    # Upstream's LoadDelegateNetConf reads a config with a top-level type as one plugin and runs it.
    # The "plugins" beside it were loaded as a conflist and run instead: another plugin than the
    # one upstream runs (or none, refused), and Multus itself got past the refusal of its types.
    config = json.dumps({"cniVersion": "1.0.0", "name": "own", "type": "bridge", "plugins": plugins})

    data = nad_network_config("nad", config, namespace="ns")

    net = cniconf.load_network_list(data, source="test")
    assert net.is_single_conf
    assert net.plugin_types == ["bridge"]
    assert json.loads(data) == {"cniVersion": "1.0.0", "name": "own", "type": "bridge"}


@pytest.mark.parametrize("args", ['"args": "x"', '"args": {"cni": 5}'])
async def test_cni_args_a_network_configuration_cannot_take_are_refused_naming_the_network(
    tmp_path: Path, args: str
) -> None:
    """The error named no network: a pod selecting several could not tell which one was at fault."""
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-cluster.conf").write_text('{"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"}')
    fine = NadRecord("default", "fine", "uid-1", config='{"cniVersion": "1.0.0", "type": "macvlan"}')
    odd = NadRecord(
        "default", "odd", "uid-2", config='{"cniVersion": "1.0.0", "type": "macvlan", ' + args + "}"
    )
    selection = '[{"name": "fine", "cni-args": {"a": 1}}, {"name": "odd", "cni-args": {"a": 1}}]'
    pod = PodRecord("default", "web", "pod-uid", annotations={NETWORKS_ANNOTATION: selection})
    resolver = NetworkResolver(cluster=ClusterSources(pods=OnePod(pod=pod), nads=Nads(fine, odd)))
    conf = MultusNetConf(
        name="multus",
        cni_version="1.0.0",
        stdin_cni_version="1.0.0",
        cluster_network="cluster",
        conf_dir=str(conf_dir),
    )
    request = SandboxRequest(
        command=Command.ADD,
        container_id=ContainerId("c0ffee"),
        netns="/var/run/netns/none",
        ifname=IfName("eth0"),
        cni_args=(),
        pod=PodIdentity("default", "web", "pod-uid"),
        conf=conf,
    )

    with pytest.raises(CniError) as caught:
        await resolver.resolve(request)

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg.startswith("network-attachment-definition default/odd: spec.config: ")
    assert "of the delegate configuration must be an object" in caught.value.msg
