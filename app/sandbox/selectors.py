"""Label and field selectors: parsing the query-string syntax and matching objects against it.

Used by the store for lists and by the watch hub to filter events. Supports the label syntax of
``k8s.io/apimachinery/pkg/labels`` except ``<``/``>`` (``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``,
``a notin (x)``, ``a``, ``!a``) and field selectors (``=``, ``==``, ``!=``) on the fields each
resource allows. A malformed selector raises ``ApiError`` 400, as the real API server answers. Pure
functions, no I/O. Part of the emulator, a test/demo tool.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.sandbox.resources import Resource
from app.sandbox.status import ApiError, bad_request

_LABEL_KEY = re.compile(
    r"^([a-z0-9A-Z]([-a-z0-9A-Z.]*[a-z0-9A-Z])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SET_REQUIREMENT = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")

FIELD_ALIASES = {"source": "source.component"}
"""Field labels whose value lives elsewhere in the object (core Event's ``source``)."""


@dataclass(frozen=True, slots=True)
class Requirement:
    """One comma-separated term of a selector."""

    key: str
    op: str
    """``=``, ``!=``, ``in``, ``notin``, ``exists`` or ``!exists``."""
    values: frozenset[str] = frozenset()

    def matches(self, value: str | None) -> bool:
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        return value is None or value not in self.values


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(requirement.matches(labels.get(requirement.key)) for requirement in self.requirements)


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(
            requirement.matches(field_value(obj, requirement.key)) for requirement in self.requirements
        )

    def value_of(self, key: str) -> str | None:
        """The value an ``=`` term pins ``key`` to (a hint for indexes), or None."""
        for requirement in self.requirements:
            if requirement.key == key and requirement.op == "=" and len(requirement.values) == 1:
                return next(iter(requirement.values))
        return None


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    terms.append("".join(current).strip())
    return [term for term in terms if term]


def _equality(term: str) -> tuple[str, str, str] | None:
    for op in ("!=", "==", "="):
        key, sep, value = term.partition(op)
        if sep:
            return key.strip(), "!=" if op == "!=" else "=", value.strip()
    return None


def parse_label_selector(text: str | None) -> LabelSelector:
    if not text:
        return LabelSelector()
    requirements: list[Requirement] = []
    for term in _split_terms(text):
        requirements.append(_parse_label_term(term))
    return LabelSelector(tuple(requirements))


def _parse_label_term(term: str) -> Requirement:
    set_match = _SET_REQUIREMENT.match(term)
    if set_match:
        values = frozenset(_label_value(value.strip(), term) for value in set_match["values"].split(","))
        return Requirement(_label_key(set_match["key"], term), set_match["op"], values)
    equality = _equality(term)
    if equality:
        key, op, value = equality
        return Requirement(_label_key(key, term), op, frozenset({_label_value(value, term)}))
    if term.startswith("!"):
        return Requirement(_label_key(term[1:].strip(), term), "!exists")
    return Requirement(_label_key(term, term), "exists")


def _label_key(key: str, term: str) -> str:
    if not _LABEL_KEY.match(key):
        raise bad_request(f'unable to parse requirement: invalid label key "{key}" in "{term}"')
    return key


def _label_value(value: str, term: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise bad_request(f'unable to parse requirement: invalid label value "{value}" in "{term}"')
    return value


def parse_field_selector(text: str | None, resource: Resource) -> FieldSelector:
    if not text:
        return FieldSelector()
    requirements: list[Requirement] = []
    for term in _split_terms(text):
        equality = _equality(term)
        if equality is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        key, op, value = equality
        if key not in resource.field_labels:
            raise ApiError(
                400, f'"{key}" is not a known field selector: only "{", ".join(resource.field_labels)}"'
            )
        requirements.append(Requirement(key, op, frozenset({value})))
    return FieldSelector(tuple(requirements))


def field_value(obj: Mapping[str, Any], key: str) -> str:
    """The string a field selector compares: absent fields read as ``""``, booleans as ``true``/``false``."""
    node: Any = obj
    for part in FIELD_ALIASES.get(key, key).split("."):
        if not isinstance(node, Mapping):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)
