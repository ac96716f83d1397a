"""Go's ``encoding/json`` decoding rules and Go string helpers, for reproducing upstream's errors exactly.

Called by annotation parsing (``app.attach.selection``) and NAD parsing (``app.attach.nad_config``),
which decode user-written JSON the way upstream Multus's Go structs would: objects keep every key in
document order (duplicates included, later ones winning), field names match case-insensitively with
Go's folding, type errors read ``json: cannot unmarshal <kind> into Go struct field ...``, and
integral floats re-encode as integers. Pure: no I/O, inputs are never mutated, and it knows no
Multus field names (callers name their Go structs and fields).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final, TypeGuard

from app import gofold
from app.cni import results

_GO_SPACE: Final = (
    "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
"""Go's ``unicode.IsSpace`` set, which ``strings.TrimSpace`` strips."""
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_INT64: Final = range(-(2**63), 2**63)
_EXACT_FLOAT_INT: Final = 2**53
_GO_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


class DecodeError(Exception):
    """Upstream's error text for one item or element; the caller adds the annotation's name.

    ``where`` names the element at fault (``element 1``) when the text itself does not.
    """

    def __init__(self, text: str, where: str = "") -> None:
        super().__init__(text)
        self.where = where


class Pairs(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs in document order, duplicates included (Go sees them all)."""


def loads(value: str) -> object:
    """``value`` decoded with objects as ``Pairs``; ``NaN``/``Infinity`` and numbers beyond float64's
    range refused as Go refuses them.

    Raises ValueError (with Python's wording for syntax errors) or RecursionError.
    """
    return json.loads(
        value, object_pairs_hook=Pairs, parse_constant=_reject_constant, parse_float=results.finite_float
    )


def _reject_constant(name: str) -> object:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def as_go_reads(text: str) -> str:
    """``text`` as Go's JSON decoder gives it: a lone surrogate (a ``\\ud800`` escape without its
    pair, which Python keeps) is U+FFFD, so a path from a configuration is the one its plugin uses."""
    if text.isascii():
        return text
    return "".join("\ufffd" if 0xD800 <= ord(char) <= 0xDFFF else char for char in text)


fold = gofold.fold
"""Go's case folding for field names (``app.gofold``), re-exported for this module's callers."""


def kind(value: object) -> str:
    """The JSON kind Go names in its type errors (``bool``, ``number``, ``string``, ``array``, ``object``)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if is_array(value):
        return "array"
    return "object"


def is_array(value: object) -> TypeGuard[list[Any]]:
    """True for a JSON array (a list that is not an object's ``Pairs``)."""
    return isinstance(value, list) and not isinstance(value, Pairs)


def type_error(value: object, field: str, *, go_type: str, struct: str) -> DecodeError:
    """Go's error for ``value`` found where ``struct.field`` of type ``go_type`` was expected."""
    return DecodeError(
        f"json: cannot unmarshal {kind(value)} into Go struct field {struct}.{field} of type {go_type}"
    )


def decode_int(value: object, field: str, *, struct: str) -> int:
    """``value`` as a Go ``int`` field: a JSON number with no fraction, within int64."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise type_error(value, field, go_type="int", struct=struct)
    if isinstance(value, float) or value not in _INT64:
        literal = json.dumps(value)
        raise DecodeError(
            f"json: cannot unmarshal number {literal} into Go struct field {struct}.{field} of type int"
        )
    return value


def struct_fields(pairs: Pairs, keys: Sequence[str]) -> dict[str, Any]:
    """The pairs that name one of ``keys`` (case-insensitively), later duplicates winning."""
    folded = {fold(key): key for key in keys}
    found: dict[str, Any] = {}
    for key, value in pairs:
        canonical = key if key in keys else folded.get(fold(key))
        if canonical is not None:
            found[canonical] = value
    return found


def plain(value: object) -> object:
    """A decoded JSON value with objects as dicts (last duplicate wins) and integral floats as ints."""
    if isinstance(value, Pairs):
        return {key: plain(item) for key, item in value}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_FLOAT_INT:
        return int(value)
    return value


# --- Go string helpers ---------------------------------------------------------------------------------


def trim(text: str) -> str:
    """Go's ``strings.TrimSpace``."""
    return text.strip(_GO_SPACE)


def without_surrogates(text: str) -> str:
    """Lone surrogates (``\\ud800`` escapes, a bad caller) become U+FFFD, as Go's decoder makes them."""
    return _SURROGATE.sub("\ufffd", text)


def quote(text: str) -> str:
    """Go's ``%q`` (``strconv.Quote``)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)
