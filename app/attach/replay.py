"""A recorded delegate call, rebuilt for DEL and CHECK to replay (invariant 6).

The engine's teardown (runtime DEL, rollback, recovery, GC, spool replay, hot-plug detach) and
CHECK never re-resolve networks: they rebuild the configuration and runtime arguments an
attachment's ADD used from its checkpoint row, and choose the namespace a DEL may enter. Raises
what ``app.cni.conf`` raises for a recorded configuration that does not parse; no other I/O than
reading a namespace's identity.
"""

from __future__ import annotations

import logging

from app.attach import logcontext, netns
from app.attach.netns import NetnsState
from app.cni import conf as cniconf
from app.cni.types import ContainerId, IfName, NetworkConfigList, RuntimeConf
from app.store.records import AttachmentRecord, SandboxRecord

log = logging.getLogger(__name__)


def recorded_call(
    record: SandboxRecord, attachment: AttachmentRecord, *, netns_path: str
) -> tuple[NetworkConfigList, RuntimeConf]:
    """The configuration and runtime arguments an attachment's ADD used, for replaying DEL or CHECK."""
    net = cniconf.load_network_list(
        attachment.config, source=f"checkpoint of {record.container_id}/{attachment.ifname}"
    )
    rt = RuntimeConf(
        container_id=ContainerId(record.container_id),
        netns=netns_path,
        ifname=IfName(attachment.ifname),
        args=attachment.cni_args,
        capability_args=attachment.capability_args,
    )
    return net, rt


def netns_for_del(record: SandboxRecord, *, boot_id: str) -> str:
    """The namespace a DEL runs in: the recorded path while it holds the recorded namespace (or
    nothing: a missing path is what plugins take for "already gone"); otherwise none.

    A sandbox of another boot than ``boot_id`` (today's) has no namespace left: every one died with
    its boot, so whatever its path holds now (a ``/proc/<pid>/ns/net`` of a reused pid, a bind
    mount made again) is another sandbox's, even when its identity matches the recorded one. An
    identity is the namespace file's device and inode, and the kernel numbers namespaces afresh at
    each boot from the same small range, so a match proves nothing across a reboot.

    None when the path holds another namespace: one reused by a newer sandbox must not have this
    one's interfaces removed from it. None when it holds no namespace (unmounted, its file left
    behind): plugins refuse to enter that, for ever. And none when it cannot be looked at
    (permission denied, an I/O error, a looping symlink), for both reasons at once: nothing shows
    that it still holds this sandbox's namespace, so a plugin that can see more than we do might
    enter a newer sandbox's; and a plugin that sees what we see fails on it, so the DEL would stay
    pending for as long as the path stays unreadable, which may be for ever, while a DEL must
    terminate (invariant 5b). A DEL without a namespace is allowed by the CNI spec and still
    releases IPAM (whose release must not depend on the netns); interfaces that may still be in an
    unreadable namespace of this sandbox go with it when it is removed (the runtime removes it
    once its DEL succeeded). A sandbox recorded without the namespace's identity keeps its path.
    """
    earlier_boot = bool(record.boot_id) and record.boot_id != boot_id
    if not record.netns_id and not earlier_boot:
        return record.netns
    found = netns.look(record.netns)
    if found.state is NetnsState.GONE and not found.leftover:
        return record.netns
    if found.identity == record.netns_id and not earlier_boot:
        return record.netns
    if found.state is NetnsState.PRESENT:
        why = f"{record.netns} holds another network namespace now" + (
            " (the sandbox is of an earlier boot, whose namespaces are all gone)" if earlier_boot else ""
        )
    else:
        why = found.describe(record.netns)
    log.warning(
        "DEL of container %s runs without its netns: %s",
        record.container_id,
        why,
        extra=logcontext.fields(record.container_id, command="DEL", pod=record.pod),
    )
    return ""


def netns_for_cached_del(path: str) -> str:
    """The namespace a DEL from upstream's cache runs in: ``path`` when it holds a namespace (nothing
    records which one it held) or nothing (plugins accept a missing path); none when it holds no
    namespace (unmounted, its file left behind: plugins refuse to enter it, for ever) or cannot be
    looked at (nothing then says which namespace it holds, and a DEL must terminate: as
    ``netns_for_del``). None either when it is relative, which no runtime's is (``invalid
    CNI_NETNS``): the daemon and the plugin (in ``chrootDir``: from ``/``) would each take it from
    their own working directory, e.g. ``proc/self/ns/net`` as the host's namespace."""
    if not path:
        return path
    if not path.startswith("/"):
        log.warning("the upstream-cached DEL runs without its netns: %r is not an absolute path", path)
        return ""
    found = netns.look(path)
    if found.state is NetnsState.PRESENT or (found.state is NetnsState.GONE and not found.leftover):
        return path
    log.warning("the upstream-cached DEL runs without its netns: %s", found.describe(path))
    return ""
