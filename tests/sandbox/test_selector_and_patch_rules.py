"""The pure rules under the emulator: selector parsing and matching, merge and JSON patch."""

from __future__ import annotations

from typing import Any

import pytest

from app.sandbox import patching
from app.sandbox.resources import EVENTS, PODS
from app.sandbox.selectors import field_value, parse_field_selector, parse_label_selector
from app.sandbox.status import ApiError


@pytest.mark.parametrize("selector", ["=b", "a in (x", "bad key!=x", "a b", "a=b c", "a=-x"])
def test_malformed_label_selectors_are_refused_with_400(selector: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_label_selector(selector)

    assert raised.value.code == 400


def test_empty_label_values_are_valid() -> None:
    assert parse_label_selector("a=").matches({"a": ""})
    assert not parse_label_selector("a=").matches({})


def test_label_keys_may_carry_a_dns_prefix() -> None:
    selector = parse_label_selector("k8s.v1.cni.cncf.io/networks=macvlan,app.kubernetes.io/name in (a, b)")

    assert selector.matches({"k8s.v1.cni.cncf.io/networks": "macvlan", "app.kubernetes.io/name": "b"})
    assert not selector.matches({"k8s.v1.cni.cncf.io/networks": "macvlan"})


def test_field_selector_reads_absent_fields_as_empty_and_booleans_as_words() -> None:
    unscheduled: dict[str, Any] = {"metadata": {"name": "p"}, "spec": {"hostNetwork": True}}

    assert parse_field_selector("spec.nodeName=", PODS).matches(unscheduled)
    assert parse_field_selector("spec.hostNetwork=true", PODS).matches(unscheduled)
    assert field_value({"source": {"component": "multus"}}, "source") == "multus"
    assert parse_field_selector("involvedObject.name=p,reason=AddedInterface", EVENTS).matches(
        {"involvedObject": {"name": "p"}, "reason": "AddedInterface"}
    )


def test_merge_patch_deletes_with_null_and_replaces_lists() -> None:
    target = {"metadata": {"annotations": {"a": "1", "b": "2"}}, "spec": {"list": [1, 2]}}

    patched = patching.merge_patch(
        target, {"metadata": {"annotations": {"a": None, "c": "3"}}, "spec": {"list": [3]}}
    )

    assert patched == {"metadata": {"annotations": {"b": "2", "c": "3"}}, "spec": {"list": [3]}}


def test_json_patch_moves_and_copies() -> None:
    document = {"a": {"x": 1}, "b": []}

    patched = patching.json_patch(
        document,
        [{"op": "copy", "from": "/a/x", "path": "/b/0"}, {"op": "move", "from": "/a", "path": "/c"}],
    )

    assert patched == {"b": [1], "c": {"x": 1}}


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "remove", "path": "/missing"},
        {"op": "replace", "path": "/a/9", "value": 1},
        {"op": "add", "path": "no-slash", "value": 1},
        {"op": "add", "path": "/a/0"},
        {"op": "frobnicate", "path": "/a"},
        {"op": "test", "path": "/a", "value": []},
    ],
)
def test_json_patch_operations_that_cannot_apply_raise(operation: dict[str, Any]) -> None:
    with pytest.raises(patching.PatchError):
        patching.json_patch({"a": [0]}, [operation])
