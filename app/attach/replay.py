"""A recorded delegate call, rebuilt for DEL and CHECK to replay (invariant 6).

The engine's teardown (runtime DEL, rollback, recovery, GC, spool replay, hot-plug detach) and
CHECK never re-resolve networks: they rebuild the configuration and runtime arguments an
attachment's ADD used from its checkpoint row, and choose the namespace a DEL may enter. Raises
what ``app.cni.conf`` raises for a recorded configuration that does not parse; no other I/O than
reading a namespace's identity.
"""

from __future__ import annotations

import logging
import os

from app.attach import logcontext, netns
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


def netns_for_del(record: SandboxRecord) -> str:
    """The namespace a DEL runs in: the recorded path, unless it now holds another namespace, or
    none (the namespace unmounted, its file left behind: plugins refuse to enter it, for ever).

    A path reused by a newer sandbox must not have this one's interfaces removed from it: the DEL
    then runs without a namespace (allowed by the CNI spec), which still releases IPAM.
    """
    if not record.netns_id:
        return record.netns
    current = netns.netns_identity(record.netns)
    if current != record.netns_id and (current or os.path.lexists(record.netns)):
        log.warning(
            "netns %s of container %s is now another namespace or none; DEL runs without it",
            record.netns,
            record.container_id,
            extra=logcontext.fields(record.container_id, command="DEL", pod=record.pod),
        )
        return ""
    return record.netns


def netns_for_cached_del(path: str) -> str:
    """The namespace a DEL from upstream's cache runs in: ``path``, unless it holds no namespace
    (the namespace unmounted, its file left behind: plugins refuse to enter it, for ever); a path
    that does not exist is kept (plugins accept it). Nothing records which namespace it held."""
    if not path or netns.netns_identity(path) or not os.path.lexists(path):
        return path
    log.warning("netns %s holds no namespace; the upstream-cached DEL runs without it", path)
    return ""
