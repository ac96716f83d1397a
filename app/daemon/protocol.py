"""The shim-daemon wire format: request bodies in, response bodies out (upstream compatible).

A request is ``{"env": {...}, "config": "<base64 of the shim's stdin>"}`` (upstream's
``api.Request``; keys matched case-insensitively as Go's decoder does). It becomes a
``SandboxRequest`` or ``NodeRequest`` for the engine; every problem is a CniError naming the
field (code 4 for the environment, 6 for decoding, 7 for the configuration). Responses: an ADD
answers ``{"Result": <CNI 1.1.0 result>}`` compact with sorted keys; other verbs answer an empty
200; errors answer 400 with the CNI error object, which both our shim (keeping the code) and
upstream's Go shim (printing ``msg; details``) understand. No HTTP or socket code lives here.

Everything the runtime controls is checked here, before the engine records anything: the CNI
variables (no NUL, no lone surrogate, i.e. bytes that were not UTF-8; container ID, interface name
and netns path by the spec's rules, and no ADD of ``lo``), CNI_ARGS pairs and the pod identity in
them, and the configuration (nesting bounded by ``MAX_JSON_DEPTH``, no lone surrogates or NULs in
its strings). A DEL is the exception throughout: it replays the checkpoint, so what only an ADD
needs is dropped rather than refused (invariant 5b: a refused DEL is retried for ever): an unusable
variable, and a configuration that does not decode or parse (the DEL then takes the daemon
configuration alone).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import ipaddress
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.attach import gojson, hotplug, netconf, network_status, selection
from app.attach.requests import Command, NodeRequest, SandboxRequest, Trigger
from app.cni import names, results
from app.cni.types import SHORTAGE_ERRNOS, Attachment, CniError, ContainerId, ErrorCode, IfName, JsonObject
from app.store.records import PodIdentity

log = logging.getLogger(__name__)

SANDBOX_COMMANDS = frozenset({Command.ADD, Command.DEL, Command.CHECK})
CNI_VARIABLES = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
"""The variables the daemon reads from a request's environment; the others are not looked at."""
LOOPBACK_IFNAME = "lo"
"""The one interface name an ADD refuses beyond the spec's rules (the annotation's ``interface``
is refused so too, ``app.attach.selection``)."""
MAX_JSON_DEPTH = 64
"""Deepest nesting accepted in a request's configuration (real CNI configurations stay under 10)."""
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_POD_NAMESPACE = re.compile(_DNS_LABEL)
_POD_NAME = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_MAX_POD_NAMESPACE = 63
_MAX_POD_NAME = 253
_MAX_POD_UID = 256
_compact_sorted_json = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
_MAC = re.compile(r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}")
_NS_GET_NSTYPE = 0xB703
"""ioctl(2) asking an nsfs file for its namespace type (Linux >= 4.11)."""
_CLONE_NEWNET = 0x40000000


@dataclass(frozen=True, slots=True)
class ShimRequest:
    """A decoded ``POST /cni`` body before interpretation."""

    env: Mapping[str, str]
    stdin: bytes
    stdin_conf: JsonObject


def decode_body(body: bytes) -> ShimRequest:
    """Decode the JSON envelope; errors name the field that is wrong. A DEL's ``config`` that does
    not decode is dropped (an empty conf: ``interpret`` then uses the daemon configuration's)."""
    fields, env = _decode_envelope(body)
    try:
        return _with_config(env, fields.get("config"))
    except CniError as error:
        if env.get("CNI_COMMAND") != Command.DEL:
            raise
        _log_unusable_del_conf(env, error)
        return ShimRequest(env=env, stdin=b"", stdin_conf={})


def _decode_envelope(body: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """The body's fields (keys lower-cased, as Go's decoder matches them) and its ``env``."""
    envelope = _loads(body, "request body is not valid JSON")
    if not isinstance(envelope, dict):
        raise CniError(ErrorCode.DECODING_FAILURE, "request body must be a JSON object")
    fields = {key.lower(): value for key, value in envelope.items()}
    return fields, _decode_env(fields.get("env"))


def _with_config(env: dict[str, str], config: object) -> ShimRequest:
    """The request with its decoded ``config`` field, checked."""
    stdin = _decode_config(config)
    conf = _loads(stdin, "error unmarshalling network configuration (request field 'config')")
    if not isinstance(conf, dict):
        raise CniError(
            ErrorCode.DECODING_FAILURE, "network configuration (request field 'config') is not an object"
        )
    if not _plainly_within_limits(stdin):
        check_json_tree(conf, what="network configuration (request field 'config')")
    return ShimRequest(env=env, stdin=stdin, stdin_conf=conf)


def _plainly_within_limits(raw: bytes) -> bool:
    """True when JSON text ``raw`` cannot decode to anything ``check_json_tree`` refuses: ASCII
    without ``\\u`` escapes holds no NUL or surrogate in any string (a raw control character in a
    string is a syntax error already), and fewer brackets than ``MAX_JSON_DEPTH`` cannot nest
    deeper. What a shim sends nearly always is; anything else is walked."""
    return raw.isascii() and b"\\u" not in raw and raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH


def _loads(raw: bytes, message: str) -> Any:
    """``json.loads`` with every failure a code-6 error: bad syntax, bytes that are not UTF-8,
    nesting deeper than the interpreter can follow, ``NaN``/``Infinity`` and numbers beyond float64's
    range (not JSON Go decodes; accepted, they would fail every delegate only once recorded)."""
    try:
        return results.parse_json(raw)
    except ValueError as exc:
        raise CniError(ErrorCode.DECODING_FAILURE, message, str(exc)) from exc
    except RecursionError:
        raise CniError(
            ErrorCode.DECODING_FAILURE, message, f"nested deeper than {MAX_JSON_DEPTH} levels"
        ) from None


def check_json_tree(value: object, *, what: str) -> None:
    """Refuse a decoded JSON value nested deeper than ``MAX_JSON_DEPTH`` (code 6), or holding a
    string or key with a lone surrogate (code 6: not UTF-8) or a NUL (code 7), naming where."""
    stack: list[tuple[object, str, int]] = [(value, "", 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, dict | list) and depth > MAX_JSON_DEPTH:
            raise CniError(
                ErrorCode.DECODING_FAILURE, f"{what} is nested deeper than {MAX_JSON_DEPTH} levels"
            )
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, what=what, where=f"{where}.{key}" if where else key, is_key=True)
                stack.append((child, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{index}]", depth + 1) for index, child in enumerate(item))
        elif isinstance(item, str):
            _check_text(item, what=what, where=where, is_key=False)


def _check_text(text: str, *, what: str, where: str, is_key: bool) -> None:
    problem = names.unusable_character(text)
    if problem is None:
        return
    place = f"{'key' if is_key else 'the value of key'} {names.printable(where)!r}" if where else "a value"
    code = ErrorCode.DECODING_FAILURE if "surrogate" in problem else ErrorCode.INVALID_NETWORK_CONFIG
    raise CniError(code, f"{what}: {place} contains {problem}")


def _decode_env(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise CniError(ErrorCode.DECODING_FAILURE, "request field 'env' must be an object of strings")
    env: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise CniError(ErrorCode.DECODING_FAILURE, f"request field 'env.{key}' must be a string")
        env[key.strip()] = item
    return env


def _decode_config(value: object) -> bytes:
    if not isinstance(value, str):
        raise CniError(ErrorCode.DECODING_FAILURE, "request field 'config' must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CniError(
            ErrorCode.DECODING_FAILURE, "request field 'config' is not valid base64", str(exc)
        ) from exc


class NothingRecordedError(Exception):
    """A DEL naming what no ADD could have recorded (a container ID, or for a hot-unplug an
    interface name, that an ADD would have refused): there is nothing to delete, and the DEL
    succeeds so that it terminates."""

    def __init__(self, container_id: str, why: str, *, ifname: str | None = None) -> None:
        what = f"container {names.printable(container_id)!r}"
        if ifname is not None:
            what = f"interface {names.printable(ifname)!r} of {what}"
        super().__init__(f"DEL of {what}: {why}; nothing can be recorded under it")


def check_variables(env: Mapping[str, str], *, names_checked: tuple[str, ...] = CNI_VARIABLES) -> None:
    """Refuse (code 4) a CNI variable holding a NUL or a lone surrogate (bytes that were not UTF-8)."""
    for name in names_checked:
        problem = names.unusable_character(env.get(name, ""))
        if problem is not None:
            raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"invalid {name}: the value contains {problem}")


def command_of(request: ShimRequest) -> Command:
    check_variables(request.env, names_checked=("CNI_COMMAND",))
    raw = request.env.get("CNI_COMMAND", "")
    try:
        return Command(raw)
    except ValueError:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT, "unexpected or missing CNI_COMMAND", f"got {raw!r}" if raw else ""
        ) from None


def interpret(request: ShimRequest, *, daemon_config: Mapping[str, Any]) -> SandboxRequest | NodeRequest:
    """Turn a decoded request into the engine's request, validating the environment."""
    command = command_of(request)
    if command is Command.DEL:
        return _deletion(request.env, _conf_for_delete(request, daemon_config))
    conf = _request_conf(request, daemon_config)
    if command not in SANDBOX_COMMANDS:
        return NodeRequest(
            command=command, conf=conf, valid_attachments=_valid_attachments(request.stdin_conf)
        )
    env = request.env
    check_variables(env)
    missing = [key for key in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_ARGS") if key not in env]
    if not missing and not env["CNI_CONTAINERID"]:  # Go's skel: an empty variable is a missing one
        missing = ["CNI_CONTAINERID"]
    if missing:
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing")
    container_id = env["CNI_CONTAINERID"]
    names.check_container_id(container_id)
    if not env["CNI_NETNS"]:
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, "required env variables [CNI_NETNS] missing")
    names.check_netns_path(env["CNI_NETNS"])
    ifname = env.get("CNI_IFNAME") or "eth0"
    names.check_ifname(ifname)
    if command is Command.ADD and ifname == LOOPBACK_IFNAME:
        # every namespace has it: the plugin fails (999) and the rollback's DEL of lo fails for ever
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            "invalid CNI_IFNAME: lo",
            "every network namespace has its loopback interface already; no plugin can create it",
        )
    cni_args = parse_cni_args(env["CNI_ARGS"])
    pod = _pod_identity(cni_args)
    check_network_namespace(env["CNI_NETNS"])  # the one look at the system, after the pure checks
    return SandboxRequest(
        command=command,
        container_id=ContainerId(container_id),
        netns=env["CNI_NETNS"],
        ifname=IfName(ifname),
        cni_args=cni_args,
        pod=pod,
        conf=conf,
    )


def _request_conf(request: ShimRequest, daemon_config: Mapping[str, Any]) -> netconf.MultusNetConf:
    """The Multus configuration of a request: its conf merged with the daemon configuration."""
    stdin_version = request.stdin_conf.get("cniVersion", "")
    if not isinstance(stdin_version, str):
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG, "network configuration key 'cniVersion' must be a string"
        )
    return _multus_conf(request, daemon_config, stdin_version)


def _conf_for_delete(request: ShimRequest, daemon_config: Mapping[str, Any]) -> netconf.MultusNetConf:
    """A DEL's Multus configuration: the request's, or, when that is unusable (a key of the wrong
    type, say: the runtime sends a DEL the same conf its ADD got, which refused it), the daemon
    configuration's alone; when even that is unusable (a per-request key of daemon-config of the
    wrong type: every ADD is refused for it), the defaults. A DEL replays the checkpoint and reads
    of the conf only where upstream Multus's cache lies (a sandbox it attached): refusing the DEL
    for its conf would fail it for ever."""
    try:
        return _request_conf(request, daemon_config)
    except CniError as error:
        if request.stdin_conf:
            _log_unusable_del_conf(request.env, error)
    try:
        return _request_conf(ShimRequest(env=request.env, stdin=b"", stdin_conf={}), daemon_config)
    except CniError as error:
        log.error(
            "DEL of container %r: the daemon configuration is unusable for a request (%s); it runs from"
            " the checkpoint with the defaults",
            request.env.get("CNI_CONTAINERID", ""),
            error,
        )
        return netconf.parse({}, stdin_cni_version="")


def _log_unusable_del_conf(env: Mapping[str, str], error: CniError) -> None:
    log.warning(
        "DEL of container %r: its network configuration is unusable (%s); it runs from the checkpoint"
        " with the daemon configuration",
        env.get("CNI_CONTAINERID", "")[:64],
        error.msg,
    )


_CONF_CACHE_SIZE = 16
_confs: dict[tuple[bytes, int], tuple[Mapping[str, Any], netconf.MultusNetConf]] = {}
"""Multus configurations parsed lately, by the request's config bytes and the daemon configuration
they were merged with: a node's runtime sends the same shim conf with nearly every request."""


def _multus_conf(
    request: ShimRequest, daemon_config: Mapping[str, Any], stdin_version: str
) -> netconf.MultusNetConf:
    key = (request.stdin, id(daemon_config))
    cached = _confs.get(key)
    if cached is not None and cached[0] is daemon_config:
        return cached[1]
    conf = netconf.parse(netconf.merge(request.stdin_conf, daemon_config), stdin_cni_version=stdin_version)
    if len(_confs) >= _CONF_CACHE_SIZE:
        _confs.clear()
    _confs[key] = (daemon_config, conf)  # the reference keeps the id from being reused meanwhile
    return conf


def _deletion(env: Mapping[str, str], conf: netconf.MultusNetConf) -> SandboxRequest:
    """The request for a DEL, which must be able to terminate: every value an ADD would have
    refused is dropped instead of refused (no netns, the default interface name, the CNI_ARGS
    pairs an ADD would refuse: ``_cni_args_for_delete``), since DEL works from the checkpoint; a
    container ID no ADD could have used raises ``NothingRecordedError``."""
    container_id = _container_id_for_delete(env)
    netns = _netns_for_delete(env)
    ifname = env.get("CNI_IFNAME") or "eth0"
    if not _usable_for_delete(env, "CNI_IFNAME", lambda: names.check_ifname(ifname)):
        ifname = "eth0"
    cni_args = _cni_args_for_delete(env)
    return SandboxRequest(
        command=Command.DEL,
        container_id=ContainerId(container_id),
        netns=netns,
        ifname=IfName(ifname),
        cni_args=cni_args,
        pod=_pod_identity(cni_args),
        conf=conf,
    )


def _container_id_for_delete(env: Mapping[str, str]) -> str:
    """A DEL's container ID; one no ADD could have used (missing, empty, malformed) raises
    ``NothingRecordedError``."""
    container_id = env.get("CNI_CONTAINERID", "")
    try:
        check_variables(env, names_checked=("CNI_CONTAINERID",))
        names.check_container_id(container_id)
    except CniError as error:
        raise NothingRecordedError(container_id, error.msg) from None
    return container_id


def _netns_for_delete(env: Mapping[str, str]) -> str:
    """A DEL's netns path, or "" when it is missing or unusable: DEL replays the checkpoint."""
    netns = env.get("CNI_NETNS", "")
    if not _usable_for_delete(env, "CNI_NETNS", lambda: names.check_netns_path(netns) if netns else None):
        return ""
    return netns


def _cni_args_for_delete(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The pairs of a DEL's CNI_ARGS an ADD would accept, each judged on its own, for the ``/cni``
    and the ``/delegate`` DEL alike: a malformed item (not ``KEY=VALUE``, a control character, a
    NUL, bytes that were not UTF-8, an ``IP``/``MAC`` no plugin parses), or a ``K8S_POD_*`` value
    Kubernetes would not accept, is dropped (it names no sandbox); the others are kept, so the pod
    identity they hold still reaches the DEL. Never raises: a DEL must terminate (invariant 5b)."""
    usable: list[tuple[str, str]] = []
    for item in env.get("CNI_ARGS", "").split(";"):
        try:
            pairs = parse_cni_args(item)
        except CniError:
            continue
        usable.extend(pair for pair in pairs if _usable_pod_field(*pair))
    return tuple(usable)


def _usable_for_delete(env: Mapping[str, str], name: str, check: Callable[[], object]) -> bool:
    try:
        check_variables(env, names_checked=(name,))
        check()
    except CniError:
        return False
    return True


def parse_cni_args(value: str) -> tuple[tuple[str, str], ...]:
    """``K=V;K=V`` into pairs. Empty items are skipped (upstream rejects a trailing ``;``; delegates
    get the pairs rebuilt); a value holding ``=`` is refused like the Go library does; a control
    character, a NUL or a lone surrogate anywhere is refused (code 4)."""
    problem = names.unusable_character(value) or (
        "a control character" if names.has_control_character(value) else None
    )
    if problem is not None:
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"invalid CNI_ARGS: the value contains {problem}")
    pairs = []
    for item in value.split(";"):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip() or "=" in val:
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT,
                f"invalid CNI_ARGS item {item!r}",
                "expected KEY=VALUE with exactly one '=' (delegates refuse any other pair)",
            )
        pairs.append((key.strip(), val.strip()))
    for key, val in pairs:
        _check_typed_arg(key, val)
    return tuple(pairs)


def _check_typed_arg(key: str, value: str) -> None:
    """The CNI_ARGS keys the reference plugins parse (conventions: ``IP``, ``MAC``): a value they
    cannot parse would fail every delegate with code 999, so it is refused here with code 4."""
    if key == "MAC" and not _MAC.fullmatch(value):
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT, "invalid CNI_ARGS: MAC is not a MAC address", value[:64]
        )
    if key == "IP":
        for part in value.split(","):
            try:
                ipaddress.ip_interface(part)
            except ValueError:
                raise CniError(
                    ErrorCode.INVALID_ENVIRONMENT, "invalid CNI_ARGS: IP is not an IP address", value[:128]
                ) from None


def check_network_namespace(path: str) -> None:
    """Refuse (code 4) a ``CNI_NETNS`` that is not a network namespace file here, as every plugin
    would (with code 999), and (code 8) the daemon's own, the node's. Only ``stat`` and an nsfs
    ``ioctl``: nothing but a namespace file is ever opened. A namespace file the daemon cannot open
    for want of descriptors or memory (``SHORTAGE_ERRNOS``) is code 11: a retry may succeed, and
    the runtime must not be told its namespace is none."""
    try:
        found = os.stat(path)
        own = os.stat("/proc/self/ns/net")  # on the kernel's one nsfs, like every namespace file
    except OSError as exc:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT, f"invalid CNI_NETNS: cannot use {path}: {exc.strerror}"
        ) from None
    kind = None
    if stat.S_ISREG(found.st_mode) and found.st_dev == own.st_dev:
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                kind = fcntl.ioctl(descriptor, _NS_GET_NSTYPE)
            finally:
                os.close(descriptor)
        except OSError as exc:
            if exc.errno in SHORTAGE_ERRNOS:
                raise CniError(
                    ErrorCode.TRY_AGAIN_LATER,
                    f"cannot look at CNI_NETNS {path}: {exc.strerror}",
                    "the daemon is short of descriptors or memory for now",
                ) from None
            kind = None
    if kind != _CLONE_NEWNET:
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"invalid CNI_NETNS: {path} is not a network namespace")
    if (found.st_dev, found.st_ino) == (own.st_dev, own.st_ino):  # the Go library's check and code
        raise CniError(
            ErrorCode.INVALID_NETNS, "plugin's netns and netns from CNI_NETNS should not be the same", path
        )


def _pod_identity(cni_args: tuple[tuple[str, str], ...]) -> PodIdentity:
    """The pod the kubelet names in CNI_ARGS; names that Kubernetes would not accept are refused
    (code 4), since they end up in API paths and the checkpoint."""
    args = dict(cni_args)
    for key, value in args.items():
        if not _usable_pod_field(key, value):
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT,
                f"invalid CNI_ARGS: {key} is not a valid Kubernetes name",
                value[:_MAX_POD_NAME],
            )
    return PodIdentity(
        namespace=args.get("K8S_POD_NAMESPACE", ""),
        name=args.get("K8S_POD_NAME", ""),
        uid=args.get("K8S_POD_UID", ""),
    )


_POD_FIELDS: dict[str, tuple[re.Pattern[str] | None, int]] = {
    "K8S_POD_NAMESPACE": (_POD_NAMESPACE, _MAX_POD_NAMESPACE),
    "K8S_POD_NAME": (_POD_NAME, _MAX_POD_NAME),
    "K8S_POD_UID": (None, _MAX_POD_UID),
}
"""The CNI_ARGS keys naming the pod, each with the pattern and length Kubernetes allows."""


def _usable_pod_field(key: str, value: str) -> bool:
    """False for a pod field (``K8S_POD_*``) holding what Kubernetes would not accept; True for
    any other key, and for an empty value (not given)."""
    if key not in _POD_FIELDS or not value:
        return True
    pattern, longest = _POD_FIELDS[key]
    return len(value) <= longest and (pattern is None or pattern.fullmatch(value) is not None)


_VALID_ATTACHMENTS = "cni.dev/valid-attachments"
_LEGACY_ATTACHMENTS = "cni.dev/attachments"
_ATTACHMENT_FIELDS = ("containerID", "ifname")


def _valid_attachments(stdin_conf: Mapping[str, Any]) -> tuple[Attachment, ...]:
    """A GC's ``cni.dev/valid-attachments`` (else the spec's first name for it, ``cni.dev/attachments``).
    ``null`` is an empty list, as Go reads it: libcni writes the runtime's nil slice so when no
    attachment of the network is valid. Absent is empty too, as libcni's own GC pass takes it.
    Keys, the list's and each item's, match whatever their case, as Go's decoder matches the fields
    of ``types.GCAttachment`` (a plugin reads ``"CNI.dev/Valid-Attachments"`` as the list: taken
    for absent, it made every sandbox invalid)."""
    keys = gojson.struct_fields(gojson.Pairs(stdin_conf.items()), (_VALID_ATTACHMENTS, _LEGACY_ATTACHMENTS))
    listed = keys.get(_VALID_ATTACHMENTS)
    if listed is None:
        listed = keys.get(_LEGACY_ATTACHMENTS)
    if listed is None:
        listed = []
    if not isinstance(listed, list):
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, "'cni.dev/valid-attachments' must be a list")
    attachments = []
    for index, item in enumerate(listed):
        fields = (
            gojson.struct_fields(gojson.Pairs(item.items()), _ATTACHMENT_FIELDS)
            if isinstance(item, dict)
            else {}
        )
        container_id, ifname = fields.get("containerID"), fields.get("ifname")
        if not isinstance(container_id, str) or not isinstance(ifname, str):
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"'cni.dev/valid-attachments[{index}]' must be an object with string containerID and ifname",
            )
        attachments.append(Attachment(ContainerId(container_id), IfName(ifname)))
    return tuple(attachments)


def add_response_body(result: JsonObject) -> bytes:
    """``{"Result": ...}`` as upstream's daemon sends it: the result read into the CNI library's
    1.1.0 ``Result`` type and written through a map (``types100.Result.MarshalJSON``), so only
    that type's fields remain, each level's keys sorted, zero-valued ``omitempty`` fields and an
    empty ``dns`` left out, addresses as Go prints them, text as Go's encoder escapes it. The
    engine's ADD already answers in CNI 1.1.0, the version upstream's daemon answers in."""
    text = json.dumps(
        {"Result": go_result(result)}, separators=(",", ":"), sort_keys=True, ensure_ascii=False
    )
    return network_status.go_escaped(text).encode()


def go_result(result: JsonObject) -> JsonObject:
    """A validated CNI 1.1.0 result as Go's ``types100.Result`` holds it: unknown keys dropped, a
    null or zero ``omitempty`` field absent, ``dns`` absent when empty (``DNS.IsEmpty``)."""
    out: JsonObject = {"cniVersion": result["cniVersion"]}
    _put(out, "interfaces", [_go_interface(item) for item in _objects(result.get("interfaces"))])
    _put(out, "ips", [_go_ip_config(item) for item in _objects(result.get("ips"))])
    _put(out, "routes", [_go_route(item) for item in _objects(result.get("routes"))])
    dns = result.get("dns")
    _put(out, "dns", _go_dns(dns) if isinstance(dns, dict) else {})
    return out


def _go_interface(item: JsonObject) -> JsonObject:
    out: JsonObject = {"name": item.get("name") or ""}
    for key in ("mac", "mtu", "sandbox", "socketPath", "pciID"):
        _put(out, key, item.get(key))
    return out


def _go_ip_config(item: JsonObject) -> JsonObject:
    out: JsonObject = {"address": network_status.go_ipnet_string(item["address"])}
    if item.get("gateway"):
        out["gateway"] = network_status.go_ip_string(item["gateway"])
    if item.get("interface") is not None:  # a pointer: 0 is written, only nil is left out
        out["interface"] = item["interface"]
    return out


def _go_route(item: JsonObject) -> JsonObject:
    out: JsonObject = {"dst": network_status.go_ipnet_string(item["dst"])}
    if item.get("gw"):
        out["gw"] = network_status.go_ip_string(item["gw"])
    for key in ("mtu", "advmss", "priority"):
        _put(out, key, item.get(key))
    for key in ("table", "scope"):  # pointers, as ``interface`` above
        if item.get(key) is not None:
            out[key] = item[key]
    return out


def _go_dns(dns: JsonObject) -> JsonObject:
    out: JsonObject = {}
    _put(out, "domain", dns.get("domain"))
    for key in ("nameservers", "search", "options"):
        items = dns.get(key)
        if isinstance(items, list):
            _put(out, key, ["" if item is None else item for item in items])
    return out


def _put(out: JsonObject, key: str, value: object) -> None:
    """Go's ``omitempty``: "", 0, an empty list or object, and null are left out."""
    if value:
        out[key] = value


def _objects(value: object) -> list[JsonObject]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def error_body(error: CniError) -> bytes:
    """The CNI error object as upstream's daemon writes a typed one (``json.Marshal``): compact,
    ``code``, ``msg``, ``details`` (left out when empty), text escaped as Go's encoder does."""
    text = json.dumps(error.to_json(), separators=(",", ":"), ensure_ascii=False)
    return network_status.go_escaped(text).encode()


# ---- POST /delegate (hot-plug, upstream's single-delegate API) --------------------------------


def decode_delegate_body(body: bytes) -> tuple[ShimRequest, hotplug.InterfaceAttributes]:
    """A ``/delegate`` body: the ``/cni`` envelope plus ``interfaceAttributes`` (may be null).

    A DEL's ``config`` and ``interfaceAttributes`` are not decoded: it replays the checkpoint and
    reads neither, and refused for them it could never succeed (invariant 5b), e.g. once the NAD
    it was hot-plugged from holds a config that no longer loads."""
    fields, env = _decode_envelope(body)
    if env.get("CNI_COMMAND") == Command.DEL:
        return ShimRequest(env=env, stdin=b"", stdin_conf={}), hotplug.InterfaceAttributes()
    request = _with_config(env, fields.get("config"))
    return request, _interface_attributes(fields.get("interfaceattributes"))


def _interface_attributes(value: object) -> hotplug.InterfaceAttributes:
    if value is None:
        return hotplug.InterfaceAttributes()
    if not isinstance(value, dict):
        raise CniError(ErrorCode.DECODING_FAILURE, "request field 'interfaceAttributes' must be an object")
    fields = {key.lower(): item for key, item in value.items()}
    ips = fields.get("ips") or []
    if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
        raise CniError(
            ErrorCode.DECODING_FAILURE, "request field 'interfaceAttributes.ips' must be a list of strings"
        )
    mac = fields.get("mac") or ""
    if not isinstance(mac, str):
        raise CniError(ErrorCode.DECODING_FAILURE, "request field 'interfaceAttributes.mac' must be a string")
    problem = selection.check_address_requests(ips=ips, mac=mac)
    if problem is not None:  # they become the delegate's IP=/MAC= CNI_ARGS: a plugin would fail (999)
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"request field 'interfaceAttributes.{problem[0]}' is invalid",
            problem[1],
        )
    cni_args = fields.get("cni-args")
    if cni_args is not None and not isinstance(cni_args, dict):
        raise CniError(
            ErrorCode.DECODING_FAILURE, "request field 'interfaceAttributes.cni-args' must be an object"
        )
    cni_args_problem = None if cni_args is None else selection.check_cni_args(cni_args)
    if cni_args_problem is not None:
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"request field 'interfaceAttributes.cni-args.{cni_args_problem[0]}' is invalid",
            cni_args_problem[1],
        )
    return hotplug.InterfaceAttributes(ips=tuple(ips), mac=mac, cni_args=cni_args)


DELEGATE_COMMANDS = frozenset({Command.ADD, Command.DEL, Command.CHECK, Command.STATUS})


def interpret_delegate(
    request: ShimRequest, attributes: hotplug.InterfaceAttributes, *, daemon_config: Mapping[str, Any]
) -> hotplug.DelegateCall | None:
    """A ``/delegate`` request as the engine's hot-plug call; None for STATUS (nothing to run).

    The delegate conf is checked for ADD, CHECK and STATUS (a Multus conf is refused); CHECK then
    replays the checkpoint, never the conf sent. A DEL reads no conf: it must terminate
    (``_delegate_deletion``), and replays the checkpoint."""
    command = command_of(request)
    if command not in DELEGATE_COMMANDS:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            f"unknown cmd type: {command}",
            "CNI_COMMAND: /delegate serves ADD, DEL, CHECK and STATUS",
        )
    if command is Command.DEL:
        return hotplug.DelegateCall(request=_delegate_deletion(request.env, daemon_config), net=None)
    net = hotplug.delegate_conf(request.stdin, request.stdin_conf)
    if command is Command.STATUS:
        return None
    env = request.env
    missing = [key for key in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS") if not env.get(key)]
    if missing:
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing")
    names.check_container_id(env["CNI_CONTAINERID"])
    names.check_ifname(env["CNI_IFNAME"])
    names.check_netns_path(env["CNI_NETNS"])
    cni_args = parse_cni_args(env["CNI_ARGS"])
    pod = _pod_identity(cni_args)
    for key, value in (("K8S_POD_NAMESPACE", pod.namespace), ("K8S_POD_NAME", pod.name)):
        if not value:
            raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"CNI_ARGS: missing {key}")
    sandbox = SandboxRequest(
        command=command,
        container_id=ContainerId(env["CNI_CONTAINERID"]),
        netns=env["CNI_NETNS"],
        ifname=IfName(env["CNI_IFNAME"]),
        cni_args=cni_args,
        pod=pod,
        conf=hotplug.daemon_conf(daemon_config),
        trigger=Trigger.DELEGATE,
    )
    return hotplug.DelegateCall(
        request=sandbox, net=net if command is Command.ADD else None, attributes=attributes
    )


def _delegate_deletion(env: Mapping[str, str], daemon_config: Mapping[str, Any]) -> SandboxRequest:
    """The request for a hot-unplug DEL, which must terminate (invariant 5b): its caller retries
    a failed DEL for ever, and a refusal here could never turn into success. So, as for the
    ``/cni`` DEL: a container ID, or an interface name, no ADD could have used (``check_ifname``
    runs before any ADD records an attachment) raises ``NothingRecordedError``; a missing or
    empty ``CNI_IFNAME`` is ``eth0`` (upstream's default; the engine refuses the cluster network
    while the sandbox runs); an unusable netns is dropped; of CNI_ARGS only the pairs an ADD
    would accept are kept, so the engine still refuses a sandbox of another pod than the usable
    ``K8S_POD_*`` fields name, and with none of them it DELs by container ID and interface name
    (invariant 8): ``_cni_args_for_delete``, the ``/cni`` DEL's rule."""
    container_id = _container_id_for_delete(env)
    ifname = env.get("CNI_IFNAME") or "eth0"
    try:
        check_variables(env, names_checked=("CNI_IFNAME",))
        names.check_ifname(ifname)
    except CniError as error:
        raise NothingRecordedError(container_id, error.msg, ifname=ifname) from None
    cni_args = _cni_args_for_delete(env)
    return SandboxRequest(
        command=Command.DEL,
        container_id=ContainerId(container_id),
        netns=_netns_for_delete(env),
        ifname=IfName(ifname),
        cni_args=cni_args,
        pod=_pod_identity(cni_args),
        conf=hotplug.daemon_conf(daemon_config),
        trigger=Trigger.DELEGATE,
    )
