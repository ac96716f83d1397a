"""A delegate configuration a namespace user builds (a NAD's ``spec.config``, a selection's
``cni-args``) is accepted only if its recorded bytes parse again from any stack: nested at most
``delegate_inputs.MAX_NESTING`` levels (``app.attach.nad_config``, ``app.attach.delegate_inputs``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import pytest

from app.attach import delegate_inputs, nad_config
from app.cni import conf as cniconf
from app.cni.types import CniError, ErrorCode

T = TypeVar("T")


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def nad(depth: int) -> str:
    return f'{{"cniVersion":"1.0.0","name":"deep","type":"bridge","deep":{nested(depth)}}}'


def accepted(depth: int) -> bytes | None:
    try:
        return nad_config.nad_network_config("deep", nad(depth), namespace="ns")
    except CniError:
        return None


def from_deeper_stack(frames: int, call: Callable[[], T]) -> T:
    """``call()`` run ``frames`` Python frames deeper (a DEL, recovery or GC reads recorded bytes
    from another stack than the ADD that recorded them)."""
    return call() if frames == 0 else from_deeper_stack(frames - 1, call)


def test_the_deepest_spec_config_accepted_parses_again_from_a_deeper_stack() -> None:
    low, high = 1, 5000  # the deepest accepted lies in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if accepted(middle) is not None else (low, middle)
    recorded = accepted(low)
    assert recorded is not None
    cniconf._loaded.clear()  # as after a restart: the bytes are parsed, not found loaded

    net = from_deeper_stack(100, lambda: cniconf.load_network_list(recorded, source="checkpoint"))

    assert net.name == "deep"


def test_a_spec_config_nested_past_the_bound_is_refused_naming_the_nad() -> None:
    assert accepted(delegate_inputs.MAX_NESTING - 1) is not None  # the config object is a level
    with pytest.raises(CniError) as caught:
        nad_config.nad_network_config("deep", nad(delegate_inputs.MAX_NESTING), namespace="ns")

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg == (
        "network-attachment-definition ns/deep: spec.config nests arrays and objects more than "
        f"{delegate_inputs.MAX_NESTING} levels deep"
    )


def test_cni_args_nesting_the_delegate_configuration_past_the_bound_are_refused() -> None:
    conf = b'{"cniVersion":"1.0.0","name":"n","type":"bridge"}'
    fits = json.loads(nested(delegate_inputs.MAX_NESTING - 3))  # in the conf, "args" and "cni"
    assert delegate_inputs.inject_cni_args(conf, {"x": fits})

    with pytest.raises(CniError) as caught:
        delegate_inputs.inject_cni_args(conf, {"x": [fits]})

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "cni-args nests arrays and objects more than" in caught.value.msg
