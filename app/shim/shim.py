"""multus-shim: the CNI plugin the container runtime executes; it forwards each CNI call to the daemon.

Who runs it: the container runtime, for every pod sandbox ADD/DEL/CHECK/GC/STATUS, through the
launcher ``app.shim.install`` writes: by default run by the shim's own runtime (``app.shim.bundle``:
an interpreter with its libraries and loader, this module precompiled inside), or by a host Python
as ``python -IS <launcher>``; or through the ``multus-shim`` console script (same behaviour, slower
start). Whatever runs it, it must need nothing beyond the modules named below.

What it does, in order (the wire format is the repository's docs/protocol.md):

1. validates the invocation exactly as Go's CNI ``skel`` package would (env variables, container id,
   interface name, network name, config version gates), answering VERSION and "no command" itself;
2. sends one HTTP/1.1 ``POST /cni`` over the unix socket ``<daemonSocketDir>/multus.sock``, carrying the
   raw stdin (base64) and the whole environment. While the daemon answers 503 or its listen backlog is
   full, it retries every ``RETRY_INTERVAL_SECONDS`` for up to ``DAEMON_WAIT_SECONDS`` (503s for as
   long as a restart marker is live, see below). When the socket
   is missing or refuses connections, it waits only if the daemon announced a graceful restart: a
   marker ``<daemonSocketDir>/multus.restarting`` (JSON ``{"pid": int, "until": Unix time}``, written by
   the stopping daemon, removed by the next one once it accepts) whose ``until`` is still ahead; then
   it retries every ``RESTART_POLL_SECONDS`` until ``until`` or its own deadline. Without a live marker
   (a crashed daemon, or none started yet) it connects once more (the new daemon may have removed the
   marker since the failed connect) and then fails at once with code 11, as upstream does;
3. prints the answer the CNI way: the ADD result converted to the stdin conf's ``cniVersion``
   (Go ``json.MarshalIndent`` layout), nothing for the other commands, or a CNI error object;
4. on failure only, appends one line to the conf's ``logFile`` (never to stderr: that stays empty).

``multus-shim -version`` (or ``-v``; Go ``flag`` syntax) prints the version and exits 0, as upstream's.

Where it does better than upstream's Go shim: the daemon's CNI error codes are printed unchanged
(upstream turns them all into 999); DEL failures are reported, so the runtime retries (upstream exits
0), except that a DEL the daemon cannot take (absent, not ready) or whose shim keys are unusable is
spooled durably for the daemon to replay and answered success (upstream's is lost); an unreachable
daemon is code 11 "try again later" after seconds, not a 60 s readiness poll; the whole call has a
deadline (``REQUEST_TIMEOUT_SECONDS``; upstream has none), a DEL a shorter one inside the runtime's
own, after which it is spooled (``DEL_TIMEOUT_SECONDS``); a 200 ADD answer without a result is an
error, not a crash; error messages do not embed the whole stdin conf; a graceful daemon restart is
waited for instead of failing the pod.

Constraints, and why:

* It runs on every pod's start-up path, so start-up time is the budget. It imports only C modules
  that load no Python code: ``_json``, ``_socket`` and ``binascii`` (``C_MODULES``), plus ``posix``,
  ``sys``, ``time``, ``_imp`` and importlib's own frozen bootstrap (``_frozen_importlib``,
  ``_frozen_importlib_external``), which every interpreter has loaded before running a script. Not
  ``os``, ``socket``, ``json``, ``re`` or ``typing`` (each pulls in Python modules), not even ``from
  __future__ import annotations`` (it imports ``__future__``): annotations name only builtins and
  classes, cheap to evaluate. ``tests/shim`` starts the shim under ``-I -S`` and compares
  ``sys.modules`` with a bare interpreter's. Even the three C modules skip importlib's search:
  ``load_c_modules`` opens them where the interpreter keeps them, the plain ``import`` is its fallback.
* It may be copied alone onto a host, so it imports nothing from ``app``.
* It never ends with a Python traceback: every failure becomes a CNI error object on stdout, exit 1.
* ``_json``'s C scanner raises ``json.decoder.JSONDecodeError`` for most syntax errors: Python 3.11
  looks the module up in ``sys.modules`` (and fails with a SystemError if ``json`` was never
  imported), 3.12 imports it (the whole ``json`` package, ``re`` included). ``scan_value`` lends it a
  stand-in ``json.decoder`` for the duration of the call.

Test knobs (tests only; a deployment never sets them): ``MULTUS_SHIM_WAIT_SECONDS`` overrides
``DAEMON_WAIT_SECONDS``, ``MULTUS_SHIM_TIMEOUT_SECONDS`` ``REQUEST_TIMEOUT_SECONDS`` (a DEL's bound
too, when shorter) and ``MULTUS_SHIM_DEL_TIMEOUT_SECONDS`` ``DEL_TIMEOUT_SECONDS``.
"""

import _frozen_importlib
import _frozen_importlib_external
import _imp
import posix
import sys
import time

C_MODULES = ("_json", "_socket", "binascii")
"""The C modules the shim needs beyond those every interpreter has loaded before it runs a script."""


def load_c_modules(names: tuple[str, ...]) -> None:
    """Put the C modules ``names`` into ``sys.modules`` without the import system's search, so that the
    ``import`` statements below find them there.

    A plain ``import _json`` runs importlib's Python code and, for an extension module, the path
    finder: it tries each ``sys.path`` entry in turn and lists ``lib-dynload``, only to open the file
    this function names directly: ``<the interpreter's lib-dynload>/<name><its ABI suffix>``, where
    both the interpreter's own layout and the bundle (``app.shim.bundle``) put it. A built-in module
    is created from the interpreter's table. Either way the module gets the spec, loader and file
    attributes importlib would give it, and a multi-phase module is executed as importlib would.
    A module already imported is left as it is; one that is not where expected, or cannot be loaded
    from there (``ImportError``, or any other failure), is left to the plain ``import``, which finds
    it wherever it is or fails exactly as it would have: so an interpreter upgraded or laid out
    differently still works."""
    builtin = sys.builtin_module_names
    directory = ""
    for entry in sys.path:
        if entry.endswith("/lib-dynload"):
            directory = entry
            break
    suffixes = _imp.extension_suffixes()
    suffix = suffixes[0] if suffixes else ""
    for name in names:
        if name in sys.modules:
            continue
        try:
            if name in builtin:
                importer = _frozen_importlib.BuiltinImporter  # the class is the loader, as in importlib
                spec = _frozen_importlib.ModuleSpec(name, importer, origin="built-in")  # type: ignore[arg-type]
                module = _imp.create_builtin(spec)
                _imp.exec_builtin(module)
            elif directory and suffix:
                path = f"{directory}/{name}{suffix}"
                loader = _frozen_importlib_external.ExtensionFileLoader(name, path)
                spec = _frozen_importlib.ModuleSpec(name, loader, origin=path)
                spec.has_location = True
                module = _imp.create_dynamic(spec)
                _imp.exec_dynamic(module)
                module.__file__ = path
            else:
                continue
        except Exception:  # whatever went wrong here, the plain import below decides
            continue  # not there, not loadable from there (ImportError), or anything else
        module.__spec__ = spec
        module.__loader__ = spec.loader
        module.__package__ = ""
        sys.modules[name] = module


load_c_modules(C_MODULES)

import _json  # noqa: E402 (found in sys.modules, put there by load_c_modules)
import _socket  # noqa: E402
import binascii  # noqa: E402

DAEMON_WAIT_SECONDS = 3.0
"""How long a not-ready (503) or overloaded (backlog full) daemon is waited for before code 11."""
RETRY_INTERVAL_SECONDS = 0.1
"""Pause between two attempts while waiting for the daemon."""
RESTART_MARKER_NAME = "multus.restarting"
"""In the socket dir: written by a daemon that stops gracefully, ``{"pid": int, "until": Unix time}``."""
RESTART_POLL_SECONDS = 0.02
"""Pause between two connection attempts while a restart marker is live."""
MAX_MARKER_BYTES = 4096
INFINITY = float("inf")
SHIM_VERSION = "0.1.0"
"""multus-py's version (``pyproject.toml``; a test keeps them equal), printed by ``-version``."""
VERSION_FLAGS = ("version", "v")
REQUEST_TIMEOUT_SECONDS = 180.0
"""Deadline for the whole call of an ADD, CHECK, GC or STATUS, waiting included. Past it the call
fails (code 11) and the runtime decides what next; being killed by the runtime first costs nothing."""
DEL_TIMEOUT_SECONDS = 60.0
"""A DEL's deadline, waiting included: past it the DEL is spooled and answered success. Well inside
the runtime's own bound on the request the DEL is part of (kubelet's ``--runtime-request-timeout``,
2 minutes by default, covers a whole StopPodSandbox), so that a daemon which accepts the DEL but
does not answer cannot keep it from finishing: a shim killed by the runtime spools nothing, and its
retries would meet the same daemon. A DEL replayed that the daemon did run after all is harmless
(DEL is idempotent); a DEL the daemon runs after the answer leaves any failure pending in its
checkpoint, as a live one would."""
WAIT_SECONDS_ENV = b"MULTUS_SHIM_WAIT_SECONDS"
TIMEOUT_SECONDS_ENV = b"MULTUS_SHIM_TIMEOUT_SECONDS"
DEL_TIMEOUT_SECONDS_ENV = b"MULTUS_SHIM_DEL_TIMEOUT_SECONDS"

DEFAULT_SOCKET_DIR = "/run/multus/"
MAX_BODY_BYTES = 4 * 1024 * 1024
"""The largest request body the daemon takes (``app.daemon.server.MAX_BODY_BYTES``; a test keeps them
equal)."""
SOCKET_NAME = "multus.sock"
MAX_SOCKET_PATH_BYTES = 108
"""The longest path a unix socket address takes (``sun_path``)."""
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
ABOUT = "meta-plugin that delegates to other CNI plugins"
VERSION_REPLY = (
    '{"cniVersion":"1.1.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'
)

ERR_INCOMPATIBLE_VERSION = 1
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODING = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_INTERNAL = 999

EPERM = 1
"""The errno of a spool directory refused for its owner or mode (``errno`` costs an import)."""

GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
GO_SPACE += "\u2028\u2029\u202f\u205f\u3000"
"""What Go's ``unicode.IsSpace`` accepts (``str.isspace`` differs: it also takes \\x1c-\\x1f)."""
JSON_SPACE = " \t\n\r"
NAME_FIRST = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
NAME_REST = NAME_FIRST + b"_.-"
MAX_IFNAME_BYTES = 15
FILE_NAME_ENCODING = sys.getfilesystemencoding()
"""How ``posix`` encodes a ``str`` path (with ``surrogateescape``): UTF-8 under ``-I -S`` and any locale."""
SHIM_CONF_KEYS = (
    ("daemonSocketDir", str),
    ("logFile", str),
    ("logLevel", str),
    ("logToStderr", bool),
    ("spoolDir", str),
)
"""The keys of upstream's ``ShimNetConf`` besides ``cniVersion``, with the JSON type Go decodes them as;
``spoolDir`` is multus-py's own (written into the generated 00-multus.conf)."""
DEFAULT_SPOOL_DIR = "/var/lib/multus-py/spool"
"""Where a DEL the daemon could not take is recorded for it to replay (the daemon's ``<stateDir>/spool``)."""
SPOOL_NAME_ID_CHARS = 64
"""How much of the container ID a spool entry's name shows (a CRI sandbox ID is 64 hex digits): for
the operator only; whatever the ID's length the name stays far below the 255 bytes a name may have."""
VERSION_FLOORS = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
V1_TARGETS = ("1.0.0", "1.1.0")
V04_TARGETS = ("0.3.0", "0.3.1", "0.4.0")
RESULT_VERSIONS = ("1.0.0", "1.1.0")
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class CniError(Exception):
    """A CNI error object: printed as ``{"code", "msg", "details"}`` on stdout, exit status 1."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


class DaemonAbsentError(Exception):
    """Connecting failed because the daemon is busy (its listen backlog is full): worth a short wait."""


class DaemonGoneError(DaemonAbsentError):
    """No daemon listens (no socket, or refused): waited for only while a restart marker is live."""


# --- JSON ---------------------------------------------------------------------------------------------


class JsonSyntaxError(ValueError):
    """Malformed JSON. ``_json``'s C scanner raises it too, through the stand-in ``json.decoder``,
    with its own message and the offending offset; ``str()`` rephrases that the way Go words it."""

    def __init__(self, msg: str, doc: str = "", pos: int = -1) -> None:
        super().__init__(msg)
        self.msg = msg
        self.doc = doc
        self.pos = pos

    def __str__(self) -> str:
        if self.pos < 0:
            return self.msg
        phrase = GO_SYNTAX_PHRASES.get(self.msg)
        pos = self.pos
        if self.msg == "Invalid \\escape":
            pos += 1
        elif self.msg == "Invalid \\uXXXX escape":
            pos += 1 + len(self.doc[pos + 1 : pos + 5]) - len(self.doc[pos + 1 : pos + 5].lstrip(HEX_DIGITS))
        if pos >= len(self.doc) or self.msg.startswith("Unterminated string"):
            return "unexpected end of JSON input"
        if phrase is None:
            return f"{self.msg} at offset {self.pos}"
        return f"invalid character {go_char(self.doc[pos])} {phrase}"


GO_SYNTAX_PHRASES = {
    "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
    "Expecting ':' delimiter": "after object key",
    "Expecting ',' delimiter": "after object key:value pair or array element",
    "Invalid control character at": "in string literal",
    "Invalid \\escape": "in string escape code",
    "Invalid \\uXXXX escape": "in \\u hexadecimal character escape",
}
"""The C scanner's messages and how Go's decoder phrases the same errors (after the character)."""
HEX_DIGITS = "0123456789abcdefABCDEF"


def fold_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """Build an object whose keys are lower-cased, the last duplicate winning: Go's decoder matches
    struct fields case-insensitively and lets a later key overwrite an earlier one. Go folds a
    character to the smallest of its ``unicode.SimpleFold`` set, where two non-ASCII characters
    meet ASCII letters: the Kelvin sign (U+212A), which ``str.lower`` makes ``k`` too, and the long s
    (U+017F), which it leaves as it is, where Go reads a key spelt with it as one spelt with ``s``."""
    return {
        key.lower() if key.isascii() else key.lower().replace("\u017f", "s"): value for key, value in pairs
    }


def parse_int_literal(text: str) -> object:
    """Integers; a literal too long for ``int()`` (4300 digits) becomes a float, as Go would read it."""
    return int(text) if len(text) < 4000 else float(text)


def reject_constant(name: str) -> object:
    """NaN and Infinity are Python extensions, not JSON."""
    raise JsonSyntaxError(f"invalid character {go_char(name[0])} looking for beginning of value")


class ScannerContext:
    """The attributes ``_json.make_scanner`` reads: strict JSON, objects with case-folded keys."""

    def __init__(self) -> None:
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = fold_keys
        self.parse_float = float
        self.parse_int = parse_int_literal
        self.parse_constant = reject_constant
        self.memo: dict[str, str] = {}


SCAN = _json.make_scanner(ScannerContext())  # type: ignore[arg-type]
DECODER_STAND_IN = type(sys)("json.decoder")
DECODER_STAND_IN.__dict__["JSONDecodeError"] = JsonSyntaxError


def scan_value(text: str, start: int) -> tuple[object, int]:
    """Run the C scanner with the ``json.decoder`` stand-in installed (unless the real one is loaded);
    every syntax error comes out as a ``JsonSyntaxError``."""
    lend = "json.decoder" not in sys.modules
    if lend:
        sys.modules["json.decoder"] = DECODER_STAND_IN
    try:
        value, end = SCAN(text, start)
        return value, end
    except StopIteration as stop:
        raise beginning_of_value_error(text, stop.value) from None
    except RecursionError:
        raise JsonSyntaxError("exceeded max depth") from None
    except JsonSyntaxError:
        raise
    except ValueError as err:  # the real JSONDecodeError: json.decoder was loaded before us
        raise JsonSyntaxError(str(getattr(err, "msg", err)), text, getattr(err, "pos", -1)) from None
    finally:
        if lend and sys.modules.get("json.decoder") is DECODER_STAND_IN:
            del sys.modules["json.decoder"]


def beginning_of_value_error(text: str, pos: int) -> JsonSyntaxError:
    """Go's wording for "no value here"."""
    if pos >= len(text):
        return JsonSyntaxError("unexpected end of JSON input")
    return JsonSyntaxError(f"invalid character {go_char(text[pos])} looking for beginning of value")


def parse_json(text: str) -> object:
    """Parse one JSON document, whitespace around it allowed, the way Go's ``json.Unmarshal`` accepts."""
    start = len(text) - len(text.lstrip(JSON_SPACE))
    value, end = scan_value(text, start)
    rest = text[end:].lstrip(JSON_SPACE)
    if rest:
        raise JsonSyntaxError(f"invalid character {go_char(rest[0])} after top-level value")
    return value


def go_kind(value: object) -> str:
    """The JSON kind Go names in ``cannot unmarshal <kind> into ...`` messages."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote`` (``%q``), close enough for messages."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        elif char in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(char)])
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def go_char(char: str) -> str:
    """How Go's JSON syntax errors quote a character: ``'x'``."""
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    return "'" + go_quote(char)[1:-1] + "'"


def go_string(text: str) -> str:
    """A JSON string as Go's encoder writes it: raw UTF-8, but <, >, &, U+2028 and U+2029 escaped."""
    out = _json.encode_basestring(text)
    if "<" in out or ">" in out or "&" in out or "\u2028" in out or "\u2029" in out:
        out = out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        out = out.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return out


def go_indent_json(value: object, indent: str = "") -> str:
    """Go's ``json.MarshalIndent(value, "", "    ")`` for dicts (in their order), lists and scalars."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = indent + "    "
        members = [f"{inner}{go_string(key)}: {go_indent_json(item, inner)}" for key, item in value.items()]
        return "{\n" + ",\n".join(members) + "\n" + indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        inner = indent + "    "
        items = [inner + go_indent_json(item, inner) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    if isinstance(value, str):
        return go_string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def format_error(err: CniError) -> str:
    """The error object as Go's ``types.Error.Print`` writes it: no ``cniVersion``, no empty details."""
    obj: dict[str, object] = {"code": err.code, "msg": err.msg}
    if err.details:
        obj["details"] = err.details
    return go_indent_json(obj)


# --- Invocation checks (Go skel) -----------------------------------------------------------------------


def decode_bytes(raw: bytes) -> str:
    """Environment and wire bytes as text; invalid UTF-8 becomes U+FFFD, as Go's JSON encoder does."""
    return raw.decode("utf-8", "replace")


def is_cni_name(raw: bytes) -> bool:
    """``^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$``, the rule for container ids and network names."""
    return bool(raw) and not raw[:1].translate(None, NAME_FIRST) and not raw[1:].translate(None, NAME_REST)


def validate_container_id(raw: bytes) -> None:
    """Go ``utils.ValidateContainerID`` for a non-empty id."""
    if not is_cni_name(raw):
        raise CniError(ERR_INVALID_ENV, "invalid characters in containerID", decode_bytes(raw))


def validate_interface_name(raw: bytes) -> None:
    """Go ``utils.ValidateInterfaceName`` for a non-empty name (the length counts bytes)."""
    if len(raw) > MAX_IFNAME_BYTES:
        details = f"interface name should be less than {MAX_IFNAME_BYTES + 1} characters"
        raise CniError(ERR_INVALID_ENV, "interface name is too long", details)
    if raw in (b".", b".."):
        raise CniError(ERR_INVALID_ENV, "interface name is . or ..")
    for char in decode_bytes(raw):
        if char in "/:" or char in GO_SPACE:
            raise CniError(ERR_INVALID_ENV, "interface name contains / or : or whitespace characters")


ENV_VARS = (
    (b"CNI_COMMAND", ("ADD", "CHECK", "DEL", "GC", "STATUS"), None),
    (b"CNI_CONTAINERID", ("ADD", "CHECK", "DEL"), validate_container_id),
    (b"CNI_NETNS", ("ADD", "CHECK"), None),
    (b"CNI_IFNAME", ("ADD", "CHECK", "DEL"), validate_interface_name),
    (b"CNI_ARGS", (), None),
    (b"CNI_PATH", ("ADD", "CHECK", "DEL", "GC", "STATUS"), None),
    (b"CNI_NETNS_OVERRIDE", (), None),
)
"""Go skel's table, in its order: (variable, commands requiring it, check of a present value)."""


def check_environment(command: str) -> None:
    """Go skel ``getCmdArgsFromEnv``: a present required value is checked at once, in table order;
    missing ones (set but empty counts as missing) are reported together afterwards."""
    missing = []
    for name, required_by, validate in ENV_VARS:
        value = posix.environ.get(name, b"")
        if not value:
            if command in required_by or name == b"CNI_COMMAND":
                missing.append(name.decode())
        elif validate is not None and command in required_by:
            validate(value)
    if missing:
        raise CniError(ERR_INVALID_ENV, f"required env variables [{','.join(missing)}] missing")


def read_stdin() -> bytes:
    """All of stdin, unchanged: the daemon gets these exact bytes."""
    chunks = []
    try:
        while chunk := posix.read(0, 65536):
            chunks.append(chunk)
    except OSError as err:
        raise CniError(ERR_IO, f"error reading from stdin: {err.strerror or err}") from None
    return b"".join(chunks)


def parse_network_config(stdin: bytes) -> dict[str, object]:
    """Go skel ``validateConfig``: JSON (code 6) with a valid ``name`` (code 7). Keys come case-folded."""
    try:
        conf = parse_json(decode_bytes(stdin))
    except JsonSyntaxError as err:
        raise CniError(ERR_DECODING, f"error unmarshall network config: {err}") from None
    if conf is None:
        conf = {}
    if not isinstance(conf, dict):
        target = 'struct { Name string "json:\\"name\\"" }'
        msg = f"json: cannot unmarshal {go_kind(conf)} into Go value of type {target}"
        raise CniError(ERR_DECODING, f"error unmarshall network config: {msg}")
    check_network_name(conf.get("name"))
    return conf


def check_network_name(name: object) -> None:
    """A string (code 6), not empty, matching the CNI name rule (code 7)."""
    if name is not None and not isinstance(name, str):
        msg = f"json: cannot unmarshal {go_kind(name)} into Go struct field .name of type string"
        raise CniError(ERR_DECODING, f"error unmarshall network config: {msg}")
    if not name:
        raise CniError(ERR_INVALID_CONFIG, "missing network name")
    if not is_cni_name(name.encode("utf-8", "surrogatepass")):
        raise CniError(ERR_INVALID_CONFIG, "invalid characters found in network name", name)


def config_version(conf: dict[str, object]) -> str:
    """Go ``version.ConfigDecoder``: the conf's ``cniVersion``, ``0.1.0`` when absent or empty."""
    value = conf.get("cniversion")
    if value is None or value == "":
        return "0.1.0"
    if not isinstance(value, str):
        msg = f"json: cannot unmarshal {go_kind(value)} into Go struct field .cniVersion of type string"
        raise CniError(ERR_DECODING, f"decoding version from network config: {msg}")
    return value


def parse_version_part(text: str, part: str, version: str) -> int:
    """Go ``strconv.Atoi`` on one part of a version, with ``ParseVersion``'s error wording."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not (digits.isascii() and digits.isdigit()):
        reason = f"strconv.Atoi: parsing {go_quote(text)}: invalid syntax"
    elif len(digits) > 19 or not INT64_MIN <= int(text) <= INT64_MAX:
        reason = f"strconv.Atoi: parsing {go_quote(text)}: value out of range"
    else:
        return int(text)
    raise CniError(ERR_DECODING, f"failed to convert {part} version part {go_quote(text)}: {reason}")


def parse_version(version: str) -> tuple[int, int, int]:
    """Go ``version.ParseVersion``: ``major[.minor[.micro]]``."""
    parts = version.split(".")
    if len(parts) >= 4:
        raise CniError(ERR_DECODING, f"invalid version {go_quote(version)}: too many parts")
    labels = ("major", "minor", "micro")[: len(parts)]
    numbers = [parse_version_part(text, label, version) for text, label in zip(parts, labels, strict=True)]
    numbers += [0] * (3 - len(numbers))
    return numbers[0], numbers[1], numbers[2]


def version_at_least(version: str, other: str) -> bool:
    """Go ``version.GreaterThanOrEqualTo``."""
    return parse_version(version) >= parse_version(other)


def require_supported(version: str) -> None:
    """Go ``version.Reconciler.Check``: the exact version string must be one we support."""
    if version not in SUPPORTED_VERSIONS:
        plugin = " ".join(go_quote(supported) for supported in SUPPORTED_VERSIONS)
        details = f"config is {go_quote(version)}, plugin supports [{plugin}]"
        raise CniError(ERR_INCOMPATIBLE_VERSION, "incompatible CNI versions", details)


def check_command_version(command: str, conf: dict[str, object]) -> None:
    """Go skel's per-command gate: unknown commands (code 4), version decoding (code 6), CHECK from
    0.4.0, GC and STATUS from 1.1.0, and support of the exact version (code 1)."""
    if command in ("ADD", "DEL"):
        require_supported(config_version(conf))
        return
    floor = VERSION_FLOORS.get(command)
    if floor is None:
        raise CniError(ERR_INVALID_ENV, f"unknown CNI_COMMAND: {command}")
    version = config_version(conf)
    if not version_at_least(version, floor):
        raise CniError(ERR_INCOMPATIBLE_VERSION, f"config version does not allow {command}")
    if not any(version_at_least(supported, version) for supported in SUPPORTED_VERSIONS):
        raise CniError(ERR_INCOMPATIBLE_VERSION, f"plugin version does not allow {command}")
    require_supported(version)


def go_clean_path(path: str) -> str:
    """Go ``filepath.Clean``: drop empty and ``.`` elements, resolve ``..`` lexically."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part != "..":
            parts.append(part)
        elif parts and parts[-1] != "..":
            parts.pop()
        elif not rooted:
            parts.append(part)
    cleaned = "/".join(parts)
    return "/" + cleaned if rooted else cleaned or "."


def daemon_socket_path(conf: dict[str, object]) -> str:
    """``<daemonSocketDir>/multus.sock``, after checking the types of the keys the shim reads (code 7)."""
    for key, expected in SHIM_CONF_KEYS:
        value = conf.get(key.lower())
        if value is not None and not isinstance(value, expected):
            field = f"ShimNetConf.{key} of type {'bool' if expected is bool else 'string'}"
            reason = f"json: cannot unmarshal {go_kind(value)} into Go struct field {field}"
            raise CniError(ERR_INVALID_CONFIG, f"invalid CNI configuration passed to multus-shim: {reason}")
    directory = conf.get("daemonsocketdir") or DEFAULT_SOCKET_DIR
    if not isinstance(directory, str) or not is_path(directory):
        shown = go_quote(str(directory))
        msg = f"invalid CNI configuration passed to multus-shim: daemonSocketDir {shown} is no path"
        raise CniError(ERR_INVALID_CONFIG, msg)
    path = go_clean_path(f"{directory}/{SOCKET_NAME}")
    size = len(path.encode(FILE_NAME_ENCODING, "surrogateescape"))
    if size > MAX_SOCKET_PATH_BYTES:  # no daemon can listen there: no retry can reach one
        msg = (
            f"invalid CNI configuration passed to multus-shim: daemonSocketDir {go_quote(directory)}"
            f" makes the socket path {size} bytes long, past the {MAX_SOCKET_PATH_BYTES} bytes"
            " a unix socket's path may have"
        )
        raise CniError(ERR_INVALID_CONFIG, msg)
    return path


def is_path(text: str) -> bool:
    """Whether the kernel can be handed ``text`` as a path: no NUL (it would end the path there) and
    encodable as the interpreter encodes file names (a lone surrogate, which a ``\\ud800`` escape in
    JSON makes, is not). ``posix`` raises ValueError for either, which no caller should meet."""
    if "\0" in text:
        return False
    try:
        text.encode(FILE_NAME_ENCODING, "surrogateescape")
    except UnicodeError:
        return False
    return True


# --- The request -----------------------------------------------------------------------------------------


def environment() -> dict[str, str]:
    """The whole environment, keys trimmed of whitespace like upstream's shim does."""
    env = {}
    for key, value in posix.environ.items():
        if key:
            env[decode_bytes(key).strip(GO_SPACE)] = decode_bytes(value)
    return env


def request_body(stdin: bytes, command: str) -> bytes:
    """``{"env": {...}, "config": "<base64>"}``, compact, env keys sorted: what Go's ``json.Marshal``
    writes for upstream's ``api.Request``.

    The whole environment, as upstream's shim sends it, unless that makes the body larger than the
    daemon takes (``MAX_BODY_BYTES``; escaped, a byte that is not UTF-8 grows sixfold): then only the
    ``CNI_`` variables, the only ones a daemon reads. Otherwise such a runtime's every call, and so
    its DEL, would be refused for ever (code 6). A DEL still too large (its conf is: base64 makes
    3 MiB of stdin 4 MiB) goes without its conf, an empty ``config``: the daemon takes a DEL whose
    conf does not decode with its own configuration alone and replays the checkpoint, where the
    whole body would be refused (code 6) at every retry of the runtime, and spooled, rejected
    unreplayed. Other commands keep their conf: the daemon's refusal is their answer."""
    env = environment()
    body = encode_request(env, stdin)
    if len(body) > MAX_BODY_BYTES:
        env = {key: value for key, value in env.items() if key.startswith("CNI_")}
        body = encode_request(env, stdin)
        if len(body) > MAX_BODY_BYTES and command == "DEL":
            body = encode_request(env, b"")
    return body


def encode_request(env: dict[str, str], stdin: bytes) -> bytes:
    """The body ``request_body`` describes, for this ``env``."""
    quote = _json.encode_basestring_ascii
    pairs = ",".join(f"{quote(key)}:{quote(value)}" for key, value in sorted(env.items()))
    config = binascii.b2a_base64(stdin, newline=False).decode("ascii")
    return f'{{"env":{{{pairs}}},"config":"{config}"}}'.encode("ascii")


def http_request(body: bytes) -> bytes:
    """One ``POST /cni``. ``Connection: close`` makes any HTTP/1.1 server end the exchange with EOF."""
    head = (
        "POST /cni HTTP/1.1\r\n"
        "Host: dummy\r\n"
        "User-Agent: multus-shim\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Content-Type: application/json\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


# --- Talking to the daemon ------------------------------------------------------------------------------


def seconds_setting(name: bytes, default: float) -> float:
    """A duration from a test knob in the environment, else ``default``."""
    raw = posix.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if 0 <= value < 1e9 else default


def call_timeout(command: str) -> float:
    """Seconds the whole call of ``command`` may take: ``DEL_TIMEOUT_SECONDS`` for a DEL (never more
    than the others' bound), ``REQUEST_TIMEOUT_SECONDS`` for the others."""
    limit = seconds_setting(TIMEOUT_SECONDS_ENV, REQUEST_TIMEOUT_SECONDS)
    if command == "DEL":
        return min(limit, seconds_setting(DEL_TIMEOUT_SECONDS_ENV, DEL_TIMEOUT_SECONDS))
    return limit


def call_daemon(path: str, request: bytes, limit: float) -> tuple[int, bytes]:
    """Send the request; while the daemon answers 503 or its backlog is full, retry until the wait
    bound; while it is absent, retry only as long as a live restart marker says it is coming back
    (and a 503 too, then: a restarted daemon finishing its start-up). Returns (HTTP status, body) of
    the last answer; code 11 once ``limit`` seconds have passed."""
    now = time.monotonic()
    deadline = now + limit
    wait_until = min(deadline, now + seconds_setting(WAIT_SECONDS_ENV, DAEMON_WAIT_SECONDS))
    connect_again = True
    while True:
        try:
            status, body = exchange(path, request, deadline)
        except TimeoutError:
            raise CniError(
                ERR_TRY_AGAIN_LATER, f"no answer from multus daemon at {path} within {limit:g} s"
            ) from None
        except DaemonGoneError as gone:
            pause = restart_pause(path, deadline)
            if pause < 0 and connect_again:
                # The next daemon removes the marker once its socket accepts: it may have done so
                # between this connect and that read. One more connect tells that from no daemon.
                connect_again = False
                continue
            if pause < 0:
                raise CniError(
                    ERR_TRY_AGAIN_LATER, f"multus daemon not reachable at {path}: {gone}"
                ) from None
            connect_again = True
            time.sleep(pause)
            continue
        except DaemonAbsentError as absent:
            if time.monotonic() >= wait_until:
                msg = f"multus daemon not reachable at {path}: {absent}"
                raise CniError(ERR_TRY_AGAIN_LATER, msg) from None
        else:
            if status != 503:
                return status, body
            # not ready: the wait bound, or longer while a restart marker says the daemon is coming back
            if time.monotonic() >= wait_until and restart_pause(path, deadline) < 0:
                return status, body
        time.sleep(max(0.0, min(RETRY_INTERVAL_SECONDS, deadline - time.monotonic())))


def restart_pause(path: str, deadline: float) -> float:
    """How long to pause before connecting again to a daemon that is gone: ``RESTART_POLL_SECONDS``
    (less near the end) while a restart marker promises it back, -1 when not to wait (no marker, an
    unreadable one, its ``until`` passed, or the call's deadline reached)."""
    until = restart_marker_until(path.rpartition("/")[0] + "/" + RESTART_MARKER_NAME)
    left = min(until - time.time(), deadline - time.monotonic())
    return min(RESTART_POLL_SECONDS, left) if left > 0 else -1.0


def restart_marker_until(marker: str) -> float:
    """The marker's ``until`` (Unix time), or 0 when there is no readable marker."""
    try:
        fd = posix.open(marker, posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NONBLOCK)
    except OSError:
        return 0.0
    try:
        data = posix.read(fd, MAX_MARKER_BYTES)
    except OSError:
        return 0.0
    finally:
        posix.close(fd)
    try:
        content = parse_json(decode_bytes(data))
    except JsonSyntaxError:
        return 0.0
    until = content.get("until") if isinstance(content, dict) else None
    if isinstance(until, bool) or not isinstance(until, int | float):
        return 0.0
    try:
        seconds = float(until)
    except OverflowError:  # an integer no float holds: no time a daemon wrote
        return 0.0
    return seconds if -INFINITY < seconds < INFINITY else 0.0  # nor is inf or NaN


def exchange(path: str, request: bytes, deadline: float) -> tuple[int, bytes]:
    """One connection, one request, one response; ``TimeoutError`` once ``deadline`` has passed."""
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError as err:
        raise CniError(ERR_TRY_AGAIN_LATER, f"cannot create a socket: {err.strerror or err}") from None
    try:
        connect(sock, path, deadline)
        try:
            try:
                send_all(sock, request, deadline)
            except (BrokenPipeError, ConnectionResetError) as broken:
                return answer_after_broken_send(sock, path, deadline, broken)
            return read_response(sock, path, deadline)
        except TimeoutError:
            raise
        except OSError as err:
            raise lost_connection(path, err) from None
    finally:
        sock.close()


def lost_connection(path: str, err: OSError) -> CniError:
    """Code 11: the connection failed before a whole answer came (a DEL is then spooled)."""
    return CniError(
        ERR_TRY_AGAIN_LATER, f"lost the connection to multus daemon at {path}: {err.strerror or err}"
    )


def answer_after_broken_send(
    sock: _socket.socket, path: str, deadline: float, broken: OSError
) -> tuple[int, bytes]:
    """The daemon's answer to a request it closed the connection on before reading it whole: one it
    refuses by its headers alone (a body larger than it takes: code 6). Its answer waits in our
    receive queue, the kernel keeps it there. Without a whole answer it is the lost connection
    (code 11) that sending met."""
    try:
        return read_response(sock, path, deadline)
    except TimeoutError:
        raise
    except (CniError, OSError):
        raise lost_connection(path, broken) from None


def remaining(deadline: float) -> float:
    """Seconds left before ``deadline``; a timeout once none are left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def connect(sock: _socket.socket, path: str, deadline: float) -> None:
    """Connect, telling a daemon that is not there yet (retry) from other failures (code 11 now)."""
    try:
        sock.settimeout(remaining(deadline))
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError) as err:
        raise DaemonGoneError(err.strerror or str(err)) from None
    except BlockingIOError as err:
        raise DaemonAbsentError(err.strerror or str(err)) from None
    except TimeoutError:
        raise
    except OSError as err:
        msg = f"multus daemon not reachable at {path}: {err.strerror or err}"
        raise CniError(ERR_TRY_AGAIN_LATER, msg) from None
    except (ValueError, UnicodeError) as err:
        raise CniError(ERR_INVALID_CONFIG, f"invalid daemon socket path {go_quote(path)}: {err}") from None


def send_all(sock: _socket.socket, data: bytes, deadline: float) -> None:
    """``sendall`` under the call's deadline."""
    sock.settimeout(remaining(deadline))
    sock.sendall(data)


def read_response(sock: _socket.socket, path: str, deadline: float) -> tuple[int, bytes]:
    """Read until EOF, or until ``Content-Length`` bytes of body arrived; decode chunked bodies."""
    data = bytearray()
    head_end = -1
    length = None
    while head_end < 0 or length is None or len(data) < head_end + 4 + length:
        sock.settimeout(remaining(deadline))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # a unix socket's peer closed before reading all we sent:
            chunk = b""  # reported once all it sent has been read, so it ends the answer as EOF does
        if not chunk:
            break
        data += chunk
        if head_end < 0:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                length = content_length(bytes(data[:head_end]))
    if not data:
        raise CniError(
            ERR_TRY_AGAIN_LATER, f"multus daemon at {path} closed the connection without answering"
        )
    if head_end < 0 or (length is not None and len(data) < head_end + 4 + length):
        raise cut_off(path)
    return parse_response(bytes(data), head_end, path)


def cut_off(path: str) -> CniError:
    """An answer that ended before its end: the daemon stopped or was killed while sending it."""
    return CniError(
        ERR_TRY_AGAIN_LATER, f"multus daemon at {path} closed the connection in the middle of its answer"
    )


def header_fields(head: bytes) -> dict[bytes, bytes]:
    """Header names (lower-cased) to values; the status line is skipped."""
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    return fields


def content_length(head: bytes) -> int | None:
    """The body length the headers announce, or None (chunked, absent or unreadable: read to EOF)."""
    fields = header_fields(head)
    raw = fields.get(b"content-length")
    if raw is None or b"chunked" in fields.get(b"transfer-encoding", b"").lower() or not raw.isdigit():
        return None
    return int(raw)


def parse_response(data: bytes, head_end: int, path: str) -> tuple[int, bytes]:
    """Status code and body of a complete HTTP/1.x response."""
    head = data[:head_end]
    status_line = head.split(b"\r\n", 1)[0]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        shown = go_quote(decode_bytes(status_line[:80]))
        raise CniError(ERR_INTERNAL, f"malformed HTTP response from multus daemon at {path}: {shown}")
    body = data[head_end + 4 :]
    fields = header_fields(head)
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        body = dechunk(body, path)
    else:
        length = content_length(head)
        if length is not None:
            body = body[:length]
    return int(parts[1]), body


def dechunk(data: bytes, path: str) -> bytes:
    """Decode a ``Transfer-Encoding: chunked`` body (trailers ignored). A body that ends before its
    last chunk is an answer cut off (code 11, as when the headers were: a DEL is then spooled); a
    chunk size that is no hexadecimal number is malformed (code 999)."""
    out = bytearray()
    pos = 0
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            raise cut_off(path)
        size_text = data[pos:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            size = -1
        if size < 0:
            raise CniError(ERR_INTERNAL, f"malformed chunked body from multus daemon at {path}")
        if line_end + 2 + size > len(data):
            raise cut_off(path)
        if size == 0:
            return bytes(out)
        out += data[line_end + 2 : line_end + 2 + size]
        pos = line_end + 2 + size + 2


# --- The answer --------------------------------------------------------------------------------------


def answer(command: str, status: int, body: bytes, target_version: str, path: str) -> str:
    """What to print for the daemon's answer; raises the CNI error to print instead."""
    if status != 200:
        raise daemon_error(status, body, path)
    if command != "ADD":
        return ""
    return go_indent_json(convert_result(decode_add_response(body), target_version))


def daemon_error(status: int, body: bytes, path: str) -> CniError:
    """A CNI error object in the body keeps its code; any other body is reported as code 999 (11 for a
    daemon still answering 503 when the wait ran out)."""
    passed_on = cni_error_in(body)
    if passed_on is not None:
        return passed_on
    msg = f"CNI request failed with status {status}: '{decode_bytes(body)}'"
    if status == 503:
        return CniError(ERR_TRY_AGAIN_LATER, f"multus daemon not ready at {path}: {msg}")
    return CniError(ERR_INTERNAL, msg)


def cni_error_in(body: bytes) -> CniError | None:
    """The body as a CNI error (a positive integer ``code``, string ``msg``/``details``), or None."""
    try:
        obj = parse_json(decode_bytes(body))
    except JsonSyntaxError:
        return None
    if not isinstance(obj, dict):
        return None
    code, msg, details = obj.get("code"), obj.get("msg", ""), obj.get("details", "")
    if isinstance(code, bool) or not isinstance(code, int) or not 0 < code <= 0xFFFFFFFF:
        return None
    if not isinstance(msg, str) or not isinstance(details, str | None):
        return None
    return CniError(code, msg, details or "")


# --- The ADD result: Go's types100 model, decoded with Go's rules -----------------------------------------


def field_error(where: str, value: object, type_name: str) -> CniError:
    """Go's decoding error for a value of the wrong JSON kind."""
    reason = f"json: cannot unmarshal {go_kind(value)} into Go struct field {where} of type {type_name}"
    return CniError(ERR_INTERNAL, f"failed to unmarshal response: {reason}")


def expect_object(value: object, where: str) -> dict[str, object]:
    """A JSON object; null decodes as an empty one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise field_error(where, value, "object")
    return value


def read_str(obj: dict[str, object], key: str, where: str) -> str:
    """A string field; absent or null is ""."""
    value = obj.get(key.lower())
    if value is None:
        return ""
    if not isinstance(value, str):
        raise field_error(f"{where}.{key}", value, "string")
    return value


def read_optional_int(obj: dict[str, object], key: str, where: str) -> int | None:
    """A Go ``*int`` field: None when absent or null."""
    value = obj.get(key.lower())
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:
        raise field_error(f"{where}.{key}", value, "int")
    return value


def read_int(obj: dict[str, object], key: str, where: str) -> int:
    """A Go ``int`` field: 0 when absent or null."""
    value = read_optional_int(obj, key, where)
    return 0 if value is None else value


def read_list(obj: dict[str, object], key: str, where: str) -> list[object]:
    """An array field; absent or null is empty."""
    value = obj.get(key.lower())
    if value is None:
        return []
    if not isinstance(value, list):
        raise field_error(f"{where}.{key}", value, "array")
    return value


def read_strings(obj: dict[str, object], key: str, where: str) -> list[str]:
    """A ``[]string`` field (a null item decodes as "")."""
    items = read_list(obj, key, where)
    for item in items:
        if item is not None and not isinstance(item, str):
            raise field_error(f"{where}.{key}", item, "string")
    return [item if isinstance(item, str) else "" for item in items]


def read_objects(obj: dict[str, object], key: str, where: str) -> list[dict[str, object]]:
    """A list of pointers to structs; a null item has no meaning in a result and is refused."""
    items = read_list(obj, key, where)
    for item in items:
        if not isinstance(item, dict):
            raise field_error(f"{where}.{key}", item, "object")
    return [item for item in items if isinstance(item, dict)]


def read_cidr(obj: dict[str, object], key: str, where: str) -> str:
    """An address in CIDR form, passed through as written (the daemon already writes Go's forms)."""
    value = read_str(obj, key, where)
    if "/" not in value:
        reason = f"{where}.{key}: invalid CIDR address: {value}"
        raise CniError(ERR_INTERNAL, f"failed to unmarshal response: {reason}")
    return value


def is_ipv6(address: str) -> bool:
    """The family of an address as written, as Go's ``To4() == nil`` decides: IPv6 forms contain a
    colon, but an IPv4-mapped one (``::ffff:10.1.0.5``) is IPv4, as ``app.cni.results`` counts it."""
    return ":" in address and not is_ipv4_mapped(address.partition("/")[0])


def is_ipv4_mapped(host: str) -> bool:
    """``::ffff:a.b.c.d`` in any of its spellings: five zero groups, then ``ffff``."""
    head, double_colon, tail = host.partition("::")
    left = head.split(":") if head else []
    right = tail.split(":") if tail else []
    groups = left + ["0"] * (8 - len(left) - len(right) - ("." in host)) + right if double_colon else left
    try:
        return not any(int(group, 16) for group in groups[:5]) and int(groups[5], 16) == 0xFFFF
    except (ValueError, IndexError):
        return False


class Interface:
    """``types100.Interface``."""

    __slots__ = ("mac", "mtu", "name", "pci_id", "sandbox", "socket_path")

    def __init__(self, obj: dict[str, object], where: str) -> None:
        self.name = read_str(obj, "name", where)
        self.mac = read_str(obj, "mac", where)
        self.mtu = read_int(obj, "mtu", where)
        self.sandbox = read_str(obj, "sandbox", where)
        self.socket_path = read_str(obj, "socketPath", where)
        self.pci_id = read_str(obj, "pciID", where)


class IPConfig:
    """``types100.IPConfig``."""

    __slots__ = ("address", "gateway", "interface")

    def __init__(self, obj: dict[str, object], where: str) -> None:
        self.interface = read_optional_int(obj, "interface", where)
        self.address = read_cidr(obj, "address", where)
        self.gateway = read_str(obj, "gateway", where)


class Route:
    """``types.Route``."""

    __slots__ = ("advmss", "dst", "gw", "mtu", "priority", "scope", "table")

    def __init__(self, obj: dict[str, object], where: str) -> None:
        self.dst = read_cidr(obj, "dst", where)
        self.gw = read_str(obj, "gw", where)
        self.mtu = read_int(obj, "mtu", where)
        self.advmss = read_int(obj, "advmss", where)
        self.priority = read_int(obj, "priority", where)
        self.table = read_optional_int(obj, "table", where)
        self.scope = read_optional_int(obj, "scope", where)


class DNS:
    """``types.DNS``."""

    __slots__ = ("domain", "nameservers", "options", "search")

    def __init__(self, obj: dict[str, object], where: str) -> None:
        self.nameservers = read_strings(obj, "nameservers", where)
        self.domain = read_str(obj, "domain", where)
        self.search = read_strings(obj, "search", where)
        self.options = read_strings(obj, "options", where)

    def is_empty(self) -> bool:
        """Go ``DNS.IsEmpty``."""
        return not (self.nameservers or self.domain or self.search or self.options)


class Result:
    """``types100.Result`` as the daemon sends it (CNI 1.1.0)."""

    __slots__ = ("cni_version", "dns", "interfaces", "ips", "routes")

    def __init__(self, obj: dict[str, object], where: str) -> None:
        self.cni_version = read_str(obj, "cniVersion", where) or "1.1.0"
        items = read_objects(obj, "interfaces", where)
        self.interfaces = [Interface(item, f"{where}.interfaces") for item in items]
        self.ips = [IPConfig(item, f"{where}.ips") for item in read_objects(obj, "ips", where)]
        self.routes = [Route(item, f"{where}.routes") for item in read_objects(obj, "routes", where)]
        self.dns = DNS(expect_object(obj.get("dns"), f"{where}.dns"), f"{where}.dns")


def decode_add_response(body: bytes) -> Result:
    """``{"Result": {...}}`` (key matched case-insensitively) decoded into a ``Result``."""
    text = decode_bytes(body)
    if not text.strip(JSON_SPACE):
        raise CniError(ERR_INTERNAL, "multus daemon answered ADD with an empty body")
    try:
        response = parse_json(text)
    except JsonSyntaxError as err:
        raise CniError(ERR_INTERNAL, f"failed to unmarshal response '{text}': {err}") from None
    if not isinstance(response, dict):
        raise CniError(ERR_INTERNAL, f"failed to unmarshal response '{text}': not a JSON object")
    raw = response.get("result")
    if raw is None:
        raise CniError(ERR_INTERNAL, "multus daemon answered ADD without a result")
    return Result(expect_object(raw, "Result"), "Result")


# --- Result conversion to the conf's version (Go types100 converters + Print) --------------------------


def put(out: dict[str, object], key: str, value: object) -> None:
    """Go's ``omitempty`` for strings, ints and slices: "", 0 and [] are left out."""
    if value:
        out[key] = value


def put_pointer(out: dict[str, object], key: str, value: int | None) -> None:
    """Go's ``omitempty`` for ``*int``: only nil is left out, 0 is written."""
    if value is not None:
        out[key] = value


def convert_result(result: Result, target_version: str) -> dict[str, object]:
    """The result as Go's ``PrintResult(result, cniVersion)`` writes it: 1.x through a map (sorted
    keys), 0.3.x/0.4.0 and 0.1.0/0.2.0 in their struct order."""
    target = target_version or "0.1.0"
    if result.cni_version not in RESULT_VERSIONS:
        raise CniError(ERR_INTERNAL, f"no converter for CNI result version {result.cni_version} to {target}")
    if target in V1_TARGETS:
        return result_v1(result, target)
    if target in V04_TARGETS:
        return result_v04(result, target)
    return result_v02(result, target)


def result_v1(result: Result, version: str) -> dict[str, object]:
    """1.0.0/1.1.0: every level's keys sorted; an empty ``dns`` left out."""
    out: dict[str, object] = {"cniVersion": version}
    if not result.dns.is_empty():
        out["dns"] = dns_v1(result.dns)
    put(out, "interfaces", [interface_v1(interface) for interface in result.interfaces])
    put(out, "ips", [ip_v1(ip) for ip in result.ips])
    put(out, "routes", [route_v1(route) for route in result.routes])
    return out


def interface_v1(interface: Interface) -> dict[str, object]:
    """Sorted: mac, mtu, name, pciID, sandbox, socketPath (``name`` always written)."""
    out: dict[str, object] = {}
    put(out, "mac", interface.mac)
    put(out, "mtu", interface.mtu)
    out["name"] = interface.name
    put(out, "pciID", interface.pci_id)
    put(out, "sandbox", interface.sandbox)
    put(out, "socketPath", interface.socket_path)
    return out


def ip_v1(ip: IPConfig) -> dict[str, object]:
    """Sorted: address, gateway, interface."""
    out: dict[str, object] = {"address": ip.address}
    put(out, "gateway", ip.gateway)
    put_pointer(out, "interface", ip.interface)
    return out


def route_v1(route: Route) -> dict[str, object]:
    """Sorted: advmss, dst, gw, mtu, priority, scope, table."""
    out: dict[str, object] = {}
    put(out, "advmss", route.advmss)
    out["dst"] = route.dst
    put(out, "gw", route.gw)
    put(out, "mtu", route.mtu)
    put(out, "priority", route.priority)
    put_pointer(out, "scope", route.scope)
    put_pointer(out, "table", route.table)
    return out


def dns_v1(dns: DNS) -> dict[str, object]:
    """Sorted: domain, nameservers, options, search."""
    out: dict[str, object] = {}
    put(out, "domain", dns.domain)
    put(out, "nameservers", dns.nameservers)
    put(out, "options", dns.options)
    put(out, "search", dns.search)
    return out


def dns_v0(dns: DNS) -> dict[str, object]:
    """Struct order: nameservers, domain, search, options; printed even when empty."""
    out: dict[str, object] = {}
    put(out, "nameservers", dns.nameservers)
    put(out, "domain", dns.domain)
    put(out, "search", dns.search)
    put(out, "options", dns.options)
    return out


def result_v04(result: Result, version: str) -> dict[str, object]:
    """0.3.0/0.3.1/0.4.0: ips gain ``version``; interface mtu/socketPath/pciID and the 1.1.0 route
    fields are dropped; ``dns`` always written."""
    out: dict[str, object] = {"cniVersion": version}
    put(out, "interfaces", [interface_v04(interface) for interface in result.interfaces])
    put(out, "ips", [ip_v04(ip) for ip in result.ips])
    put(out, "routes", [route_v04(route) for route in result.routes])
    out["dns"] = dns_v0(result.dns)
    return out


def interface_v04(interface: Interface) -> dict[str, object]:
    """Struct order: name, mac, sandbox."""
    out: dict[str, object] = {"name": interface.name}
    put(out, "mac", interface.mac)
    put(out, "sandbox", interface.sandbox)
    return out


def ip_v04(ip: IPConfig) -> dict[str, object]:
    """Struct order: version, interface, address, gateway."""
    out: dict[str, object] = {"version": "6" if is_ipv6(ip.address) else "4"}
    put_pointer(out, "interface", ip.interface)
    out["address"] = ip.address
    put(out, "gateway", ip.gateway)
    return out


def route_v04(route: Route) -> dict[str, object]:
    """Struct order of Go's ``types.Route``, which 0.3.x/0.4.0 results share with 1.1.0:
    dst, gw, mtu, advmss, priority, table, scope (Go copies routes whole when converting down)."""
    out = route_v0(route)
    put(out, "mtu", route.mtu)
    put(out, "advmss", route.advmss)
    put(out, "priority", route.priority)
    put_pointer(out, "table", route.table)
    put_pointer(out, "scope", route.scope)
    return out


def route_v0(route: Route) -> dict[str, object]:
    """Struct order, pre-1.1.0 fields only: dst, gw."""
    out: dict[str, object] = {"dst": route.dst}
    put(out, "gw", route.gw)
    return out


def result_v02(result: Result, version: str) -> dict[str, object]:
    """0.1.0/0.2.0: the first address of each family as ``ip4``/``ip6``, each route under the family
    of its ``dst`` (if that family has an address), interfaces dropped, ``dns`` always written."""
    families: dict[bool, dict[str, object]] = {}
    for ip in result.ips:
        if is_ipv6(ip.address) not in families:
            families[is_ipv6(ip.address)] = ip_config_v02(ip)
    if not families:
        raise CniError(ERR_INCOMPATIBLE_VERSION, "cannot convert: no valid IP addresses")
    for route in result.routes:
        family = families.get(is_ipv6(route.dst))
        if family is not None:
            routes = family.setdefault("routes", [])
            if isinstance(routes, list):
                routes.append(route_v0(route))
    out: dict[str, object] = {"cniVersion": version}
    for key, is_v6 in (("ip4", False), ("ip6", True)):
        if is_v6 in families:
            out[key] = families[is_v6]
    out["dns"] = dns_v0(result.dns)
    return out


def ip_config_v02(ip: IPConfig) -> dict[str, object]:
    """``types020.IPConfig`` in struct order: ip, gateway (routes are appended after)."""
    out: dict[str, object] = {"ip": ip.address}
    put(out, "gateway", ip.gateway)
    return out


# --- Entry point -------------------------------------------------------------------------------------


def write_all(fd: int, text: str) -> None:
    """Write all of ``text`` as UTF-8. A lone surrogate (from a ``\\ud800`` escape in some input)
    is written back as that escape, which is valid where it can occur: inside a JSON string."""
    view = memoryview(text.encode("utf-8", "backslashreplace"))
    while view:
        view = view[posix.write(fd, view) :]


class Call:
    """What ``dispatch`` learnt about the call, for the failure log line."""

    __slots__ = ("command", "conf")

    def __init__(self) -> None:
        self.command = ""
        self.conf: dict[str, object] = {}


def dispatch(call: Call) -> int:
    """Validate, forward, print. Returns the exit status; raises ``CniError`` for the error object."""
    command = decode_bytes(posix.environ.get(b"CNI_COMMAND", b""))
    call.command = command
    if not command:
        supported = ", ".join(SUPPORTED_VERSIONS)
        write_all(2, f"{ABOUT}\nCNI protocol versions supported: {supported}\n")
        return 0
    check_environment(command)
    if command == "VERSION":
        write_all(1, VERSION_REPLY)
        return 0
    stdin = read_stdin()
    conf = parse_network_config(stdin)
    call.conf = conf
    check_command_version(command, conf)
    request = request_body(stdin, command)
    try:
        path = daemon_socket_path(conf)
    except CniError as unusable:
        if command != "DEL":
            raise
        # Past the checks of upstream's skel, a DEL must not fail for ever on a conf the shim cannot
        # use (upstream's answers success): it is spooled, for the daemon to DEL from its checkpoint.
        where = spool_del(conf, request, unusable, address=None)
        log_failure(call, unusable, f"; spooled in {where} for the daemon to replay")
        return 0
    try:
        status, body = call_daemon(path, http_request(request), call_timeout(command))
    except CniError as unreachable:
        if command != "DEL" or unreachable.code != ERR_TRY_AGAIN_LATER:
            raise
        where = spool_del(conf, request, unreachable, address=socket_directory(conf))
        log_failure(call, unreachable, f"; spooled in {where} for the daemon to replay")
        return 0
    if command == "DEL" and status == 503:
        not_ready = daemon_error(status, body, path)
        where = spool_del(conf, request, not_ready, address=socket_directory(conf))
        log_failure(call, not_ready, f"; spooled in {where} for the daemon to replay")
        return 0
    target_version = conf.get("cniversion")
    target_version = target_version if isinstance(target_version, str) else ""
    write_all(1, answer(command, status, body, target_version, path))
    return 0


# --- The DEL spool --------------------------------------------------------------------------------------


def spool_del(
    conf: dict[str, object], request: bytes, unreachable: CniError, *, address: str | None = None
) -> str:
    """Record a DEL the daemon could not take, durably, for it to replay before it reports ready.

    The entry is the request body itself, written to a temporary file, fsynced, renamed into place
    and the directory fsynced: a crash leaves either no entry or a whole one. A DEL is idempotent, so
    spooling one the daemon may already have run is safe. If even this fails, the runtime gets the
    original code 11 error and retries the DEL itself. Returns the spool directory.

    ``address`` is the socket directory the shim was looking for (None: its conf's is unusable): the
    body then carries it as ``daemonSocketDir`` beside ``env`` and ``config``, so that the daemon
    knows whose entry it is in the shared default directory even when the conf is not there to
    tell (a DEL too large to send its conf, ``request_body``) or does not decode for the daemon.

    The name ``del-<ns>-<pid>-<start of the container ID>.json`` is unique (no two shims share a pid
    at one time) and sorts by age; the daemon reads everything else from the content.

    A directory another user may write in is refused (``check_spool_owner``): there the entry could be
    renamed or removed by them, and a DEL answered success would be lost."""
    directory = spool_directory(conf)
    container_id = decode_bytes(posix.environ.get(b"CNI_CONTAINERID", b"")[:SPOOL_NAME_ID_CHARS])
    name = f"del-{time.time_ns()}-{posix.getpid()}-{container_id}.json"
    try:
        make_directories(directory)
        check_spool_owner(directory)
        write_durably(directory, name, request if address is None else addressed(request, address))
    except (OSError, ValueError) as err:  # ValueError: a path posix refuses, which spool_directory avoids
        reason = (err.strerror if isinstance(err, OSError) else None) or str(err)
        raise CniError(
            unreachable.code, f"{unreachable.msg}; cannot spool the DEL in {directory}: {reason}"
        ) from None
    return directory


def socket_directory(conf: dict[str, object]) -> str:
    """The conf's ``daemonSocketDir`` as ``daemon_socket_path`` took it (checked there)."""
    directory = conf.get("daemonsocketdir") or DEFAULT_SOCKET_DIR
    return directory if isinstance(directory, str) else DEFAULT_SOCKET_DIR


def addressed(request: bytes, address: str) -> bytes:
    """The request body (``encode_request``'s, one JSON object) with ``"daemonSocketDir": address``
    added as its last member; the body as it is when that would make it larger than the daemon
    reads an entry (``MAX_BODY_BYTES``): it then holds its conf, which names the address."""
    quoted = _json.encode_basestring_ascii(address).encode("ascii")
    with_address = request[:-1] + b',"daemonSocketDir":' + quoted + b"}"
    return request if len(with_address) > MAX_BODY_BYTES else with_address


def spool_directory(conf: dict[str, object]) -> str:
    """The conf's ``spoolDir`` when it is an absolute path, else ``DEFAULT_SPOOL_DIR``. The daemon
    replays its own ``spoolDir`` and the default directory, nothing else: a relative ``spoolDir``
    would put the entry under whatever directory the runtime runs the shim in, where no daemon
    looks, and a DEL answered success there would be lost; one the kernel cannot be handed (a NUL,
    a lone surrogate) could not be written at all."""
    directory = conf.get("spooldir")
    if isinstance(directory, str) and directory.startswith("/") and is_path(directory):
        return directory
    return DEFAULT_SPOOL_DIR


def check_spool_owner(directory: str) -> None:
    """Raise ``PermissionError`` unless ``directory`` belongs to this user and no other may write in
    it: the rule the daemon holds the shim's default directory to before it replays it
    (``app.daemon.spool``), and what ``make_directories`` creates (0700)."""
    status = posix.stat(directory)
    if status.st_uid != posix.geteuid() or status.st_mode & 0o022:
        reason = (
            f"it must belong to uid {posix.geteuid()} and be writable by it alone (it is uid"
            f" {status.st_uid}, mode {status.st_mode & 0o7777:o}): others could remove the entry"
        )
        raise PermissionError(EPERM, reason)


def make_directories(directory: str) -> None:
    """``mkdir -p`` with mode 0700, using only ``posix``. Each directory made is synced into its
    parent: the entry's own sync covers only its directory's content, and a power loss could
    otherwise take a new directory away, the entry inside it with it."""
    absolute = directory.startswith("/")
    parent = "/" if absolute else "."
    made = ""
    for part in directory.split("/"):
        if not part:
            continue
        made = f"{made}/{part}" if made or absolute else part
        try:
            posix.mkdir(made, 0o700)
        except FileExistsError:
            pass
        else:
            sync_directory(parent)
        parent = made


def sync_directory(directory: str) -> None:
    """fsync a directory, so that the names made in it survive a power loss."""
    fd = posix.open(directory, posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        posix.fsync(fd)
    finally:
        posix.close(fd)


def write_durably(directory: str, name: str, data: bytes) -> None:
    """Temporary file, fsync, rename, fsync of the directory. A temporary file that could not be
    written whole or renamed is removed (it is ours: created with ``O_EXCL``)."""
    temporary = f"{directory}/.{name}.tmp"
    fd = posix.open(temporary, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[posix.write(fd, view) :]
            posix.fsync(fd)
        finally:
            posix.close(fd)
        posix.rename(temporary, f"{directory}/{name}")
    except BaseException:
        try:  # noqa: SIM105 (contextlib costs an import)
            posix.unlink(temporary)
        except OSError:
            pass  # the original failure is the one to report
        raise
    sync_directory(directory)


# --- The failure log ------------------------------------------------------------------------------------

GO_COMMAND_NAMES = {
    "ADD": "CmdAdd",
    "DEL": "CmdDel",
    "CHECK": "CmdCheck",
    "GC": "CmdGC",
    "STATUS": "CmdStatus",
}


def log_failure(call: Call, failure: CniError, suffix: str = "") -> None:
    """Append one line about a failed call to the conf's ``logFile``, upstream's layout:
    ``<RFC 3339 UTC> [error] CmdAdd (shim): ...``, whatever ``logLevel`` says. Only once the conf was
    read (before that no log file is known); a log that cannot be written is skipped: the runtime
    still gets the error itself. ``logToStderr`` is not honoured: the shim's stderr stays empty.
    Opened non-blocking: a ``logFile`` that is a FIFO nobody reads would otherwise hold the shim in
    ``open`` for ever, past its deadline (and a spooled DEL would never be answered success)."""
    log_file = call.conf.get("logfile")
    if not (isinstance(log_file, str) and log_file):
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    name = GO_COMMAND_NAMES.get(call.command, f"Cmd{call.command}")
    container = decode_bytes(posix.environ.get(b"CNI_CONTAINERID", b""))
    text = f"{failure.msg}; {failure.details}" if failure.details else failure.msg
    line = f"{stamp} [error] {name} (shim): container {container!r}: code {failure.code}: {text}{suffix}"
    data = (line.replace("\r", "\\r").replace("\n", "\\n") + "\n").encode("utf-8", "backslashreplace")
    try:
        flags = posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC | posix.O_NONBLOCK
        fd = posix.open(log_file, flags, 0o644)
        try:
            posix.write(fd, data)  # one write with O_APPEND: lines of concurrent shims never interleave
        finally:
            posix.close(fd)
    except (OSError, ValueError):
        pass


# --- Entry point ---------------------------------------------------------------------------------------


def run() -> int:
    """``dispatch`` with every failure turned into a CNI error object on stdout (and a log line)."""
    call = Call()
    try:
        return dispatch(call)
    except CniError as err:
        failure = err
    except Exception as err:  # the last line of defence: a traceback is no CNI answer
        failure = CniError(ERR_INTERNAL, f"multus-shim internal error: {type(err).__name__}: {err}")
    try:  # noqa: SIM105 (contextlib costs an import)
        write_all(1, format_error(failure))
    except OSError:
        pass  # stdout is gone: the exit status is all the runtime can still get
    log_failure(call, failure)
    return 1


GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True}
GO_BOOLS |= {"0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


def command_line(program: str, args: list[str]) -> int:
    """Upstream's flags, parsed like Go's ``flag`` package: ``-version``/``-v`` (``--`` and ``=bool``
    forms too) print the version and exit 0; ``-h``/``-help`` print the usage and exit 0; any other
    flag is an error (exit 2). Returns -1 to go on as a CNI plugin (no flags: what runtimes do)."""
    show_version = False
    for arg in args:
        if arg in ("-", "--") or not arg.startswith("-"):
            break
        name, has_value, value = arg.lstrip("-").partition("=")
        if arg.startswith("---") or not name:
            return flag_error(program, f"bad flag syntax: {arg}")
        if name in ("h", "help"):
            write_all(2, usage(program))
            return 0
        if name not in VERSION_FLAGS:
            return flag_error(program, f"flag provided but not defined: -{name}")
        parsed = GO_BOOLS.get(value) if has_value else True
        if parsed is None:
            return flag_error(program, f"invalid boolean value {go_quote(value)} for -{name}: parse error")
        show_version = parsed
    if show_version:
        write_all(1, f"multus-shim: version:{SHIM_VERSION}\n")
        return 0
    return -1


def flag_error(program: str, message: str) -> int:
    """Go ``flag.ExitOnError``: the message and the usage on stderr, exit 2."""
    write_all(2, f"{message}\n{usage(program)}")
    return 2


def usage(program: str) -> str:
    """Go ``flag.Usage`` for the two flags."""
    return (
        f"Usage of {program}:\n  -v\tShow application version\n  -version\n    \tShow application version\n"
    )


def main() -> None:
    """Entry point of the launcher and of the ``multus-shim`` console script: exits with the status.

    ``posix._exit`` skips interpreter finalization (about 1 ms, an eighth of the whole run); nothing
    is lost, since all output went out through ``posix.write`` and no exit handlers are registered."""
    status = command_line(sys.argv[0], sys.argv[1:]) if len(sys.argv) > 1 else -1
    posix._exit(run() if status < 0 else status)


if __name__ == "__main__":
    main()
