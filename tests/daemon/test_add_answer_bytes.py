"""The answers' bytes ({"Result": ...}, CNI errors) are those upstream's daemon writes for the same outcome.

Upstream reads the cluster network's result into the CNI library's 1.1.0 ``Result`` type and writes
it through a map (shared/reference: shim-daemon-protocol.md §6, cni-spec-essentials.md §4): sorted
keys at every level, only the type's fields, zero ``omitempty`` fields and an empty ``dns`` left out.
"""

from __future__ import annotations

import pytest

from app.cni import results
from app.cni.types import CniError, ErrorCode
from app.daemon import protocol

RECORDED_BRIDGE_RESULT = (
    b'{"cniVersion":"1.0.0","interfaces":[{"mac":"92:e7:b1:34:01:58","name":"hmref-br0"},'
    b'{"mac":"92:e7:b1:34:01:58","name":"veth8362d73d"},'
    b'{"mac":"56:48:44:96:3e:e4","name":"eth0","sandbox":"/var/run/netns/hmref-pod"}],'
    b'"ips":[{"address":"10.210.0.2/24","gateway":"10.210.0.1","interface":2}],'
    b'"routes":[{"dst":"0.0.0.0/0","gw":"10.210.0.1"}],"dns":{}}'
)
"""The bridge result of recorded-multus-run.md, as the plugin prints it (with its empty ``dns``)."""
RECORDED_ANSWER = (
    b'{"Result":{"cniVersion":"1.1.0","interfaces":[{"mac":"92:e7:b1:34:01:58","name":"hmref-br0"},'
    b'{"mac":"92:e7:b1:34:01:58","name":"veth8362d73d"},'
    b'{"mac":"56:48:44:96:3e:e4","name":"eth0","sandbox":"/var/run/netns/hmref-pod"}],'
    b'"ips":[{"address":"10.210.0.2/24","gateway":"10.210.0.1","interface":2}],'
    b'"routes":[{"dst":"0.0.0.0/0","gw":"10.210.0.1"}]}}'
)
"""The daemon's answer in the recording's log (``ADD finished CNI request ... result: ...``)."""


def _answer(stdout: bytes, *, version: str = "1.0.0") -> bytes:
    result = results.decode_result(stdout, version=version, plugin="p", to_version="1.1.0")
    return protocol.add_response_body(result)


def test_the_recorded_answer_is_reproduced_byte_for_byte_and_an_empty_dns_is_left_out() -> None:
    assert _answer(RECORDED_BRIDGE_RESULT) == RECORDED_ANSWER


@pytest.mark.parametrize(
    ("stdout", "answer"),
    [
        pytest.param(
            b'{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}],"dns":{"nameservers":[],"search":[]}}',
            b'{"Result":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.2/24"}]}}',
            id="dns-with-only-empty-lists-is-empty",
        ),
        pytest.param(
            b'{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"","mtu":0,"sandbox":"/n","x":1}],'
            b'"ips":[{"address":"10.0.0.2/24","interface":0}],"routes":[{"dst":"0.0.0.0/0","mtu":0}],'
            b'"extra":{"a":1}}',
            b'{"Result":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/n"}],'
            b'"ips":[{"address":"10.0.0.2/24","interface":0}],"routes":[{"dst":"0.0.0.0/0"}]}}',
            id="unknown-keys-and-zero-fields-left-out-interface-0-kept",
        ),
        pytest.param(
            b'{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mtu":9000,"pciID":"0000:01:00.1"}],'
            b'"routes":[{"dst":"10.9.0.0/16","priority":5,"table":0,"scope":253,"advmss":1400}],'
            b'"dns":{"options":["ndots:2"],"search":["svc"],"domain":"d","nameservers":["10.0.0.10"]}}',
            b'{"Result":{"cniVersion":"1.1.0","dns":{"domain":"d","nameservers":["10.0.0.10"],'
            b'"options":["ndots:2"],"search":["svc"]},"interfaces":[{"mtu":9000,"name":"eth0",'
            b'"pciID":"0000:01:00.1"}],"routes":[{"advmss":1400,"dst":"10.9.0.0/16","priority":5,'
            b'"scope":253,"table":0}]}}',
            id="every-1.1.0-field-sorted",
        ),
        pytest.param(
            b'{"cniVersion":"1.0.0","ips":[{"address":"FD00:0:0::5/64","gateway":"FD00::1"},'
            b'{"address":"::ffff:10.1.0.5/120"}],"routes":[{"dst":"::/0","gw":"fd00:0::1"}]}',
            b'{"Result":{"cniVersion":"1.1.0","ips":[{"address":"fd00::5/64","gateway":"fd00::1"},'
            b'{"address":"10.1.0.5/24"}],"routes":[{"dst":"::/0","gw":"fd00::1"}]}}',
            id="addresses-as-go-prints-them",
        ),
        pytest.param(
            b'{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}],"dns":{"domain":"a<b&c\xc3\xa9"}}',
            b'{"Result":{"cniVersion":"1.1.0","dns":{"domain":"a\\u003cb\\u0026c\xc3\xa9"},'
            b'"ips":[{"address":"10.0.0.2/24"}]}}',
            id="text-escaped-as-gos-encoder",
        ),
    ],
)
def test_the_answer_holds_what_gos_result_type_writes(stdout: bytes, answer: bytes) -> None:
    assert _answer(stdout) == answer


def test_an_older_results_answer_drops_the_ip_version_as_the_conversion_does() -> None:
    stdout = (
        b'{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/n"}],'
        b'"ips":[{"version":"4","address":"10.0.0.2/24","interface":0}],"dns":{}}'
    )
    assert _answer(stdout, version="0.4.0") == (
        b'{"Result":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/n"}],'
        b'"ips":[{"address":"10.0.0.2/24","interface":0}]}}'
    )


def test_an_error_answer_is_written_as_gos_encoder_writes_a_cni_error() -> None:
    error = CniError(ErrorCode.PLUGIN_NOT_AVAILABLE, "plugin not ready: <no leases> & é", "pool\u2028x")
    assert protocol.error_body(error) == (
        b'{"code":50,"msg":"plugin not ready: \\u003cno leases\\u003e \\u0026 \xc3\xa9",'
        b'"details":"pool\\u2028x"}'
    )
