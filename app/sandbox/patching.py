"""Patch bodies applied to stored objects: JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

Called by the store for ``PATCH`` requests. Strategic merge patch is served as a plain merge patch
(lists are replaced, never merged by key): enough for annotations, labels and status, which is what
this daemon patches. A patch that cannot apply raises ``PatchError``; the store turns it into the
``ApiError`` the real API server would answer. Pure functions over fresh copies, no I/O. Part of the
emulator, a test/demo tool.
"""

from __future__ import annotations

from typing import Any

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class PatchError(ValueError):
    """A patch body is malformed or one of its operations cannot apply."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces. Mutates ``target``."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge_patch(target.get(key), value)
    return target


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test); returns the patched document. Mutates it."""
    if not isinstance(operations, list):
        raise PatchError("json patch body must be a JSON array of operations")
    for operation in operations:
        if not isinstance(operation, dict) or not isinstance(operation.get("path"), str):
            raise PatchError(f"invalid json patch operation: {operation!r}")
        document = _apply_operation(document, operation)
    return document


def _apply_operation(document: Any, operation: dict[str, Any]) -> Any:
    op = operation.get("op")
    path: str = operation["path"]
    if op == "add":
        return _add(document, path, _required_value(operation))
    if op == "remove":
        return _remove(document, path)[0]
    if op == "replace":
        document, _ = _remove(document, path)
        return _add(document, path, _required_value(operation))
    if op in ("move", "copy"):
        source = operation.get("from")
        if not isinstance(source, str):
            raise PatchError(f'"{op}" operation needs a "from" path')
        value = _get(document, source)
        if op == "move":
            document, _ = _remove(document, source)
        return _add(document, path, value)
    if op == "test":
        if _get(document, path) != _required_value(operation):
            raise PatchError(f"testing value {path} failed: test failed")
        return document
    raise PatchError(f"Unexpected kind: {op}")


def _required_value(operation: dict[str, Any]) -> Any:
    if "value" not in operation:
        raise PatchError(f'"{operation.get("op")}" operation on {operation["path"]} needs a "value"')
    return operation["value"]


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer must start with '/': {path!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _index(container: list[Any], token: str, *, path: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit():
        raise PatchError(f"invalid array index {token!r} in {path}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index {index} out of bounds in {path}")
    return index


def _parent(document: Any, path: str) -> tuple[Any, str]:
    tokens = _tokens(path)
    if not tokens:
        raise PatchError("the root of the document cannot be the target of this operation")
    node = document
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path=path, allow_end=False)]
        else:
            raise PatchError(f"doc is missing path: {path}")
    return node, tokens[-1]


def _get(document: Any, path: str) -> Any:
    node = document
    for token in _tokens(path):
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path=path, allow_end=False)]
        else:
            raise PatchError(f"doc is missing path: {path}")
    return node


def _add(document: Any, path: str, value: Any) -> Any:
    if path == "":
        return value
    parent, token = _parent(document, path)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, path=path, allow_end=True), value)
    else:
        raise PatchError(f"doc is missing path: {path}")
    return document


def _remove(document: Any, path: str) -> tuple[Any, Any]:
    parent, token = _parent(document, path)
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"Unable to remove nonexistent key: {token}: missing value")
        return document, parent.pop(token)
    if isinstance(parent, list):
        return document, parent.pop(_index(parent, token, path=path, allow_end=False))
    raise PatchError(f"doc is missing path: {path}")
