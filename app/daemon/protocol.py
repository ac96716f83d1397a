"""The shim-daemon wire format: request bodies in, response bodies out (upstream compatible).

A request is ``{"env": {...}, "config": "<base64 of the shim's stdin>"}`` (upstream's
``api.Request``; keys matched case-insensitively as Go's decoder does). It becomes a
``SandboxRequest`` or ``NodeRequest`` for the engine; every problem is a CniError naming the
field (code 4 for the environment, 6 for decoding, 7 for the configuration). Responses: an ADD
answers ``{"Result": <CNI 1.1.0 result>}`` compact with sorted keys; other verbs answer an empty
200; errors answer 400 with the CNI error object, which both our shim (keeping the code) and
upstream's Go shim (printing ``msg; details``) understand. No HTTP or socket code lives here.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.attach import hotplug, netconf
from app.attach.requests import Command, NodeRequest, SandboxRequest, Trigger
from app.cni import names
from app.cni.types import Attachment, CniError, ContainerId, ErrorCode, IfName, JsonObject
from app.store.records import PodIdentity

SANDBOX_COMMANDS = frozenset({Command.ADD, Command.DEL, Command.CHECK})


@dataclass(frozen=True, slots=True)
class ShimRequest:
    """A decoded ``POST /cni`` body before interpretation."""

    env: Mapping[str, str]
    stdin: bytes
    stdin_conf: JsonObject


def decode_body(body: bytes) -> ShimRequest:
    """Decode the JSON envelope; errors name the field that is wrong."""
    try:
        envelope = json.loads(body)
    except ValueError as exc:
        raise CniError(ErrorCode.DECODING_FAILURE, "request body is not valid JSON", str(exc)) from exc
    if not isinstance(envelope, dict):
        raise CniError(ErrorCode.DECODING_FAILURE, "request body must be a JSON object")
    fields = {key.lower(): value for key, value in envelope.items()}
    env = _decode_env(fields.get("env"))
    stdin = _decode_config(fields.get("config"))
    try:
        conf = json.loads(stdin)
    except ValueError as exc:
        raise CniError(
            ErrorCode.DECODING_FAILURE,
            "error unmarshalling network configuration (request field 'config')",
            str(exc),
        ) from exc
    if not isinstance(conf, dict):
        raise CniError(
            ErrorCode.DECODING_FAILURE, "network configuration (request field 'config') is not an object"
        )
    return ShimRequest(env=env, stdin=stdin, stdin_conf=conf)


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


def command_of(request: ShimRequest) -> Command:
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
    stdin_version = request.stdin_conf.get("cniVersion", "")
    if not isinstance(stdin_version, str):
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG, "network configuration key 'cniVersion' must be a string"
        )
    conf = netconf.parse(netconf.merge(request.stdin_conf, daemon_config), stdin_cni_version=stdin_version)
    if command not in SANDBOX_COMMANDS:
        return NodeRequest(
            command=command, conf=conf, valid_attachments=_valid_attachments(request.stdin_conf)
        )
    env = request.env
    missing = [key for key in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_ARGS") if key not in env]
    if not missing and not env["CNI_CONTAINERID"]:  # Go's skel: an empty variable is a missing one
        missing = ["CNI_CONTAINERID"]
    if missing:
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing")
    container_id = env["CNI_CONTAINERID"]
    names.check_container_id(container_id)
    if command is not Command.DEL and not env["CNI_NETNS"]:
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, "required env variables [CNI_NETNS] missing")
    ifname = env.get("CNI_IFNAME") or "eth0"
    names.check_ifname(ifname)
    cni_args = parse_cni_args(env["CNI_ARGS"])
    return SandboxRequest(
        command=command,
        container_id=ContainerId(container_id),
        netns=env["CNI_NETNS"],
        ifname=IfName(ifname),
        cni_args=cni_args,
        pod=_pod_identity(cni_args),
        conf=conf,
    )


def parse_cni_args(value: str) -> tuple[tuple[str, str], ...]:
    """``K=V;K=V`` into pairs. Empty items are skipped (upstream rejects a trailing ``;``)."""
    pairs = []
    for item in value.split(";"):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT, f"invalid CNI_ARGS item {item!r}", "expected KEY=VALUE"
            )
        pairs.append((key.strip(), val.strip()))
    return tuple(pairs)


def _pod_identity(cni_args: tuple[tuple[str, str], ...]) -> PodIdentity:
    args = dict(cni_args)
    return PodIdentity(
        namespace=args.get("K8S_POD_NAMESPACE", ""),
        name=args.get("K8S_POD_NAME", ""),
        uid=args.get("K8S_POD_UID", ""),
    )


def _valid_attachments(stdin_conf: Mapping[str, Any]) -> tuple[Attachment, ...]:
    listed = stdin_conf.get("cni.dev/valid-attachments", stdin_conf.get("cni.dev/attachments", []))
    if not isinstance(listed, list):
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, "'cni.dev/valid-attachments' must be a list")
    attachments = []
    for index, item in enumerate(listed):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("containerID"), str)
            or not isinstance(item.get("ifname"), str)
        ):
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"'cni.dev/valid-attachments[{index}]' must be an object with string containerID and ifname",
            )
        attachments.append(Attachment(ContainerId(item["containerID"]), IfName(item["ifname"])))
    return tuple(attachments)


def add_response_body(result: JsonObject) -> bytes:
    """``{"Result": ...}`` as upstream's daemon sends it: compact, keys sorted. The engine's ADD
    already answers in CNI 1.1.0, the version upstream's daemon answers in."""
    return json.dumps({"Result": result}, separators=(",", ":"), sort_keys=True).encode()


def error_body(error: CniError) -> bytes:
    return json.dumps(error.to_json(), separators=(",", ":")).encode()


# ---- POST /delegate (hot-plug, upstream's single-delegate API) --------------------------------


def decode_delegate_body(body: bytes) -> tuple[ShimRequest, hotplug.InterfaceAttributes]:
    """A ``/delegate`` body: the ``/cni`` envelope plus ``interfaceAttributes`` (may be null)."""
    request = decode_body(body)
    fields = {key.lower(): value for key, value in json.loads(body).items()}
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
    cni_args = fields.get("cni-args")
    if cni_args is not None and not isinstance(cni_args, dict):
        raise CniError(
            ErrorCode.DECODING_FAILURE, "request field 'interfaceAttributes.cni-args' must be an object"
        )
    return hotplug.InterfaceAttributes(ips=tuple(ips), mac=mac, cni_args=cni_args)


DELEGATE_COMMANDS = frozenset({Command.ADD, Command.DEL, Command.CHECK, Command.STATUS})


def interpret_delegate(
    request: ShimRequest, attributes: hotplug.InterfaceAttributes, *, daemon_config: Mapping[str, Any]
) -> hotplug.DelegateCall | None:
    """A ``/delegate`` request as the engine's hot-plug call; None for STATUS (nothing to run).

    The delegate conf is checked for every verb (a Multus conf is refused); DEL and CHECK then
    replay the checkpoint, never the conf sent."""
    command = command_of(request)
    if command not in DELEGATE_COMMANDS:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            f"unknown cmd type: {command}",
            "CNI_COMMAND: /delegate serves ADD, DEL, CHECK and STATUS",
        )
    net = hotplug.delegate_conf(request.stdin, request.stdin_conf)
    if command is Command.STATUS:
        return None
    env = request.env
    missing = [key for key in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS") if not env.get(key)]
    if missing:
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing")
    names.check_container_id(env["CNI_CONTAINERID"])
    names.check_ifname(env["CNI_IFNAME"])
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
