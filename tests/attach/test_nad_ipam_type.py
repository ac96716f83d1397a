"""A NAD's ``ipam.type`` names a plugin its delegate execs as root: only a plain file name other
than Multus itself is taken (``app.attach.nad_config``), before anything is recorded or run."""

from __future__ import annotations

import json

import pytest

from app.attach import nad_config
from app.cni import conf as cniconf
from app.cni.types import CniError, ErrorCode


def single(ipam: object) -> str:
    return json.dumps(
        {"cniVersion": "1.0.0", "name": "net", "type": "macvlan", "master": "eth0", "ipam": ipam}
    )


@pytest.mark.parametrize("kind", ["../../../bin/sh", "/bin/sh", "sub/host-local", "..", ".", "host\0local"])
def test_an_ipam_type_that_is_not_a_file_name_is_refused_naming_the_nad_and_field(kind: str) -> None:
    with pytest.raises(CniError) as caught:
        nad_config.nad_network_config("net", single({"type": kind}), namespace="ns")

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg.startswith(
        f'network-attachment-definition ns/net: "ipam.type" is {json.dumps(kind)}: '
        "an IPAM plugin type is a file name"
    )


@pytest.mark.parametrize("kind", ["multus-shim", "multus"])
def test_multus_itself_as_the_ipam_plugin_of_a_conflist_is_refused(kind: str) -> None:
    chain = {
        "cniVersion": "1.0.0",
        "plugins": [{"type": "bridge"}, {"type": "macvlan", "ipam": {"type": kind}}],
    }

    with pytest.raises(CniError) as caught:
        nad_config.nad_network_config("net", json.dumps(chain), namespace="ns")

    assert caught.value.msg == (
        f'network-attachment-definition ns/net: "plugins[1].ipam.type" is "{kind}": '
        "Multus cannot be a delegate of itself"
    )


@pytest.mark.parametrize("ipam", [{"type": "host-local"}, {"type": ""}, {}, {"type": "dhcp.v2"}])
def test_usual_ipam_sections_are_taken_unchanged(ipam: object) -> None:
    config = single(ipam)

    assert nad_config.nad_network_config("net", config, namespace="ns") == config.encode()


@pytest.mark.parametrize("kind", [{}, ["bridge"]])
def test_a_later_plugin_whose_type_is_no_string_is_a_cni_error_naming_the_field(kind: object) -> None:
    """Not a ``TypeError`` from the Multus check (an object or a list is no set member), which the
    ADD answered as code 999: the conflist's own decoding names the field."""
    chain = {"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}, {"type": kind}]}

    with pytest.raises(CniError) as caught:
        cniconf.load_network_list(
            nad_config.nad_network_config("net", json.dumps(chain), namespace="ns"), source="NAD ns/net"
        )

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert '"plugins[1].type" must be a string' in caught.value.msg
