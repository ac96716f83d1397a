"""How Go's ``encoding/json`` matches a JSON object's key to a struct field: the one folding rule.

Every reader of a file or request that upstream Multus (or a Go plugin) decodes into a struct
matches keys with it: daemon-config (``app.settings``), the merged Multus conf, annotations and GC
lists (``app.attach.gojson``), the ``daemonSocketDir`` of a spooled DEL (``field``:
``app.daemon.spool``, ``app.cli.install``). ``multusctl``'s quick read of daemon-config keeps a
copy of its own (``app.cli.main``): a query the daemon answers imports nothing of ``app`` but ``app.cli``.
Standard library only, no state, no import: the lowest layer.
"""

from __future__ import annotations

_SPECIAL = {"\u212a": "K", "\u017f": "S"}
"""The two non-ASCII characters whose simple case folding reaches an ASCII letter."""


def fold(key: str) -> str:
    """``key`` as Go compares it with a field name: ASCII letters whatever their case, the Kelvin
    sign as ``K`` and the long s as ``S``; any other character as it is (none folds to ASCII)."""
    return "".join(_SPECIAL.get(char, char.upper() if char.isascii() else char) for char in key)


def field(obj: dict[str, object], name: str) -> object:
    """What Go's decoder puts in the struct field ``name`` from the JSON object ``obj``: the value of
    the last key that folds like ``name`` (the last one wins), None when no key does."""
    wanted = fold(name)
    value: object = None
    for key, item in obj.items():
        if fold(key) == wanted:
            value = item
    return value
