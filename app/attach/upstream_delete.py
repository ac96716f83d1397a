"""DEL of a sandbox upstream Multus attached before the swap, replayed from upstream's libcni caches.

Called by the attach engine's DEL when the checkpoint holds nothing for the container. It reads the
caches through ``app.attach.upstream_cache``, runs each cached delegate's DEL newest first with the
configuration, arguments and result libcni recorded, removes the device-info file upstream made
for a delegate once its DEL succeeded (upstream's DEL removes it after each delegate's), and removes
the caches only when every DEL succeeded (as upstream does). It returns the errors and the history
lines to commit: it never writes the store itself, never re-resolves networks, and never touches
caches of a failed DEL. A cached delegate whose configuration or result does not parse, or whose
interface name, CNI_ARGS or capability args no plugin can be given (a corrupt cache), can never be
DELed: that is recorded in the history and it is forgotten with the caches (invariant 5b).

A delegate's DEL runs in the namespace its cache names, unless that is a process's
(``/proc/<pid>/ns/net``, as cri-dockerd passes): nothing in the cache says which process it was,
and after a reboot, or once that process exited, the PID may be another pod's, whose interface of
the same name the DEL would remove. Such a path is trusted only when the runtime's live DEL names
it too; otherwise the DEL runs in the runtime's namespace (none when it sends none: plugins then
release what is outside the namespace only). A spooled DEL's own process path is not trusted
either: the runtime heard success when it was spooled, and went on to remove the sandbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from app.attach import device_info, netconf, recording, replay, upstream_cache
from app.attach.errors import UndeletableError, as_cni_error, never_runnable
from app.attach.recording import UnitOfWork
from app.attach.requests import Command, SandboxRequest, Trigger
from app.cni import api, names
from app.cni import conf as cniconf
from app.cni.types import CniError, ErrorCode, IfName, NetworkConfigList, RuntimeConf
from app.store.records import HistoryEntry

log = logging.getLogger(__name__)


async def delete_from_upstream_cache(
    *,
    request: SandboxRequest,
    cni: api.CniConfig,
    recorded: Callable[[HistoryEntry], UnitOfWork],
) -> tuple[list[CniError], list[UnitOfWork]]:
    """DEL every delegate upstream cached for ``request``'s container; return its errors and the
    units of work (history lines made by ``recorded``) the caller must commit."""
    cached = await asyncio.to_thread(upstream_cache.load, request.conf.cni_dir, request.container_id)
    if not cached:
        return [], []
    log.info("container %s: no checkpoint; deleting from upstream Multus's cache", request.container_id)
    errors: list[CniError] = []
    units: list[UnitOfWork] = []
    for attachment in cached:
        started = time.monotonic()
        error: CniError | None = None
        retried = False
        result = dict(attachment.result) if isinstance(attachment.result, Mapping) else None
        try:
            try:  # a cached config or result that cannot be read back never will be (invariant 5b)
                _check_environment(attachment)
                net = cniconf.load_network_list(attachment.config, source=str(attachment.path))
                _check_capability_args(net, attachment.capability_args)
                if attachment.result is not None and not isinstance(attachment.result, Mapping):
                    raise CniError(ErrorCode.DECODING_FAILURE, "cached result is not a JSON object")
                prev_result = api.prev_result_for_del(net, result or None)
            except CniError as exc:
                raise UndeletableError(exc) from exc
            await api.del_network_list(
                cni=cni,
                net=net,
                rt=RuntimeConf(
                    container_id=request.container_id,
                    netns=replay.netns_for_cached_del(
                        _netns_of(attachment.netns, request.netns, live=request.trigger is Trigger.RUNTIME)
                    ),
                    ifname=IfName(attachment.ifname),
                    args=attachment.cni_args,
                    capability_args=attachment.capability_args,
                ),
                prev_result=prev_result,
                prev_result_prepared=True,
            )
        except Exception as exc:
            cause = exc.error if isinstance(exc, UndeletableError) else exc
            error = as_cni_error(cause).with_context(
                f'error removing container from network "{attachment.network_name}" ({attachment.ifname})'
            )
            if never_runnable(exc):  # invariant 5b: recorded in the history, not retried
                error = error.with_context("DEL can never run, cache entry forgotten")
                log.warning("%s", error, extra={"container_id": request.container_id, "command": "DEL"})
            else:
                errors.append(error)
                retried = True
        if not retried:  # upstream removes it after each delegate's DEL; ours waits for the last try
            device_info.remove_for_upstream_cache(
                attachment.capability_args,
                network_name=attachment.network_name,
                container_id=request.container_id,
                ifname=attachment.ifname,
            )
        entry = recording.entry(
            command=Command.DEL,
            step="delegate",
            trigger=request.trigger,
            started=started,
            error=error,
            result=result or None,
            container_id=request.container_id,
            netns=attachment.netns,
            ifname=attachment.ifname,
            network_name=f"{attachment.network_name} (upstream cache)",
            pod=request.pod,
        )
        units.append(recorded(entry))
    if not errors:
        await asyncio.to_thread(upstream_cache.remove, request.conf.cni_dir, request.container_id, cached)
    return errors, units


def _check_environment(attachment: upstream_cache.CachedAttachment) -> None:
    """Refuse (code 6) a cached interface name or CNI_ARGS pair that no plugin's environment can
    hold: a NUL, or a lone surrogate (a ``\\ud800`` escape in the cache's JSON; Go's encoder writes
    none), which ``exec`` refuses at every try (ValueError, UnicodeEncodeError), so the DEL failed
    with code 999 for ever. The cached netns is no such value: a path no system call takes names no
    namespace, and the DEL runs without one (``replay.netns_for_cached_del``)."""
    values = [("ifName", attachment.ifname)]
    values += [("cniArgs", f"{key}={value}") for key, value in attachment.cni_args]
    for field_name, value in values:
        problem = names.unusable_character(value)
        if problem is not None:
            raise CniError(
                ErrorCode.DECODING_FAILURE,
                f"cached {field_name} holds {problem}: no plugin can be given it",
                names.printable(value),
            )


def _check_capability_args(net: NetworkConfigList, capability_args: Mapping[str, Any]) -> None:
    """Refuse (code 7) a cached capability arg handed to a plugin of ``net`` declaring it that the
    plugin cannot decode, or that cannot be encoded (a ``NaN``): libcni caches only what a
    successful ADD ran, so only a corrupt cache holds one, and the plugin (or the encoding) refused
    its DEL so at every try, with code 999, the cache kept for ever."""
    for plugin in net.plugins:
        granted = cniconf.runtime_config(plugin, capability_args)
        for capability, value in granted.items():
            problem = netconf.undecodable_capability(capability, value)
            if problem is not None:
                raise CniError(
                    ErrorCode.INVALID_NETWORK_CONFIG,
                    f"cached capabilityArgs.{capability} must be {problem[0]}",
                    f"got {json.dumps(problem[1])[:200]}",
                )
        cniconf.encode(granted, what="cached capabilityArgs")


def _netns_of(cached: str, requested: str, *, live: bool) -> str:
    """The namespace path a cached delegate's DEL is given: the cache's, unless it names a process
    the runtime's live DEL does not name (see the module docstring) or is relative (no runtime's
    is: the daemon and the plugin would each take it from their own working directory); the
    request's otherwise, unless that names a process and the DEL is not live (a spooled one: the
    runtime heard success and went on to remove the sandbox, so its process is gone and its PID may
    be another's)."""
    request = "" if requested and _names_a_process(requested) and not live else requested
    untrusted = "a relative path" if cached and not cached.startswith("/") else ""
    if cached and _names_a_process(cached) and (cached != requested or not live):
        untrusted = "a process's namespace; the PID may be another's now"
    if untrusted:
        log.warning(
            "the upstream-cached DEL does not enter %s (%s): it runs with %s",
            cached,
            untrusted,
            f"the runtime's netns {request}" if request else "no netns",
        )
        return request
    return cached or request


def _names_a_process(path: str) -> bool:
    """Whether ``path`` reaches a namespace through a process (``/proc/...``, however spelt: the
    kernel takes ``//proc``, ``/proc/./`` and a trailing ``/`` for the same file)."""
    normalized = os.path.normpath(path)
    return normalized.startswith("/") and normalized.lstrip("/").split("/")[0] == "proc"
