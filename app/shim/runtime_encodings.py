"""The ``encodings`` package of the shim's bundled runtime: a codec search that knows UTF-8 alone.

Who uses it: ``app.shim.bundle`` compiles this file as ``lib/python3.X/encodings/__init__.pyc`` of a
bundle, in place of the standard library's ``encodings`` package (with its alias table and its
``encodings.utf_8`` module). Nothing else imports it; the daemon and the tests' own interpreters keep
the standard library's package.

Why: every interpreter start imports ``encodings`` to look up its file system and stdio codecs, and
the standard package brings the ``codecs`` module (frozen, but its classes are built at each start),
an alias table and ``encodings.utf_8`` read from a file: about 0.4-0.6 ms of each shim call, which is
on every pod's start-up path. The shim always runs in UTF-8 mode (``-X utf8``, the launcher's flags)
and needs no other codec: ASCII and Latin-1 are encoded and decoded by the interpreter's own fast
paths, which never search; error handlers (``surrogateescape``, ``backslashreplace``, ...) are
registered by the interpreter itself.

What it answers, as the standard package would in a runtime that carries only the UTF-8 codec: a
lookup of ``utf-8`` or of any alias of it (normalized as ``encodings.normalize_encoding`` does; the
bundle writes the interpreter's own aliases into ``UTF_8_ALIASES``) gives a ``CodecInfo`` named
``utf-8`` whose functions and incremental encoder and decoder are the C codec's, as the standard
``encodings.utf_8`` builds them; every other name finds nothing (``LookupError``). The stream reader
and writer (``codecs.getreader``, ``codecs.open``) are not carried: the shim never uses them.

Constraints: it imports only ``_codecs`` (built in); annotations name builtins only, cheap to
evaluate; its code must compile and run on every CPython the bundle may be built from (3.11 on).
"""

import _codecs

UTF_8_ALIASES = frozenset({"cp65001", "u8", "utf", "utf8", "utf8_ucs2", "utf8_ucs4"})
"""The names (normalized) that find the UTF-8 codec besides ``utf_8``: ``app.shim.bundle`` writes the
bundled interpreter's own alias table's entries here (this line, replaced whole)."""


class CodecInfo(tuple):  # type: ignore[type-arg]  # the 4-tuple the interpreter's codec registry expects
    """What a lookup answers: the (encode, decode, stream reader, stream writer) tuple the codec
    registry takes, with the attributes ``codecs.CodecInfo`` has and the ``io`` module reads."""

    name: str
    encode: object
    decode: object
    incrementalencoder: type
    incrementaldecoder: type
    streamreader: None
    streamwriter: None
    _is_text_encoding = True

    def __new__(
        cls, name: str, encode: object, decode: object, incrementalencoder: type, incrementaldecoder: type
    ) -> "CodecInfo":
        self = tuple.__new__(cls, (encode, decode, None, None))
        self.name = name
        self.encode = encode
        self.decode = decode
        self.incrementalencoder = incrementalencoder
        self.incrementaldecoder = incrementaldecoder
        self.streamreader = None
        self.streamwriter = None
        return self

    def __repr__(self) -> str:
        return f"<codecs.CodecInfo object for encoding {self.name} at {id(self):#x}>"


def utf_8_encode(text: str, errors: str = "strict") -> "tuple[bytes, int]":
    return _codecs.utf_8_encode(text, errors)


def utf_8_decode(data: bytes, errors: str = "strict") -> "tuple[str, int]":
    return _codecs.utf_8_decode(data, errors, True)


class IncrementalEncoder:
    """``codecs.IncrementalEncoder`` for UTF-8: stateless, each piece encoded whole."""

    def __init__(self, errors: str = "strict") -> None:
        self.errors = errors

    def encode(self, text: str, final: bool = False) -> bytes:
        return _codecs.utf_8_encode(text, self.errors)[0]

    def reset(self) -> None:
        pass

    def getstate(self) -> int:
        return 0

    def setstate(self, state: int) -> None:
        pass


class IncrementalDecoder:
    """``codecs.BufferedIncrementalDecoder`` for UTF-8: a sequence cut between two pieces waits in
    ``buffer`` for the rest."""

    def __init__(self, errors: str = "strict") -> None:
        self.errors = errors
        self.buffer = b""

    def decode(self, data: bytes, final: bool = False) -> str:
        whole = self.buffer + data
        text, consumed = _codecs.utf_8_decode(whole, self.errors, final)
        self.buffer = whole[consumed:]
        return text

    def reset(self) -> None:
        self.buffer = b""

    def getstate(self) -> "tuple[bytes, int]":
        return (self.buffer, 0)

    def setstate(self, state: "tuple[bytes, int]") -> None:
        self.buffer = state[0]


UTF_8 = CodecInfo("utf-8", utf_8_encode, utf_8_decode, IncrementalEncoder, IncrementalDecoder)


def normalize_encoding(encoding: str) -> str:
    """``encodings.normalize_encoding``: runs of characters other than ASCII letters, digits and
    ``.`` become one ``_``, none leading or trailing."""
    chars: list[str] = []
    punctuation = False
    for char in encoding:
        if char.isalnum() or char == ".":
            if punctuation and chars:
                chars.append("_")
            if char.isascii():
                chars.append(char)
            punctuation = False
        else:
            punctuation = True
    return "".join(chars)


def search_function(encoding: str) -> "CodecInfo | None":
    """The codec registry's search: UTF-8 for ``utf_8`` and its aliases, else nothing."""
    name = normalize_encoding(encoding)
    if name == "utf_8" or name in UTF_8_ALIASES or name.replace(".", "_") in UTF_8_ALIASES:
        return UTF_8
    return None


_codecs.register(search_function)  # type: ignore[arg-type]  # a tuple of its shape, as the registry takes
