"""JSON for ``multusctl``'s start-up path: decoding with the C scanner, without the ``json`` package.

``import json`` costs ``re`` (and with it ``enum``, ``functools``, ``collections``): several
milliseconds of every multusctl run, more than the rest of its work. ``_json.make_scanner`` is
the C parser ``json.loads`` itself uses; ``loads`` runs it with ``json.loads``' defaults and hands
anything it does not accept whole to ``json.loads`` (imported then), so a bad document gets the
standard library's exact error. Encoding (``-o json``) is rare enough to import ``json``.
"""

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_SPACE = " \t\n\r"
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Context:
    """The attributes ``_json.make_scanner`` reads, as ``json.JSONDecoder()`` sets them."""

    def __init__(self) -> None:
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = None
        self.parse_float = float
        self.parse_int = int
        self.parse_constant = _CONSTANTS.__getitem__
        self.memo: dict[str, str] = {}


_SCAN = _json.make_scanner(_Context())  # type: ignore[arg-type]


def loads(data: bytes | str) -> "Any":
    """The value of one JSON document; ``ValueError`` (``json.JSONDecodeError``) when it is not one."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        value, end = _SCAN(text, start)
    except Exception:  # any refusal: json.loads names it exactly
        value, end = None, -1
    if end == -1 or text[end:].strip(_SPACE):
        import json

        return json.loads(text)
    return value


def dumps(value: object, *, indent: int | None = None) -> str:
    import json

    return json.dumps(value, indent=indent)
