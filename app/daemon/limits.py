"""The daemon's descriptor limit: its soft ``RLIMIT_NOFILE`` raised towards the hard one at start-up.

Called once by ``app.daemon.main`` before the socket is bound. Standard library only, like the rest
of what runs before the first accept.

Why: systemd starts services with a soft limit of 1024 (the hard one is 524288), and a DaemonSet
inherits its runtime's. Every CNI call in flight holds descriptors in the daemon (its connection,
the plugin's three stdio files and a pidfd while one runs, the netns it looks at), so a burst of a
few hundred sandboxes reaches 1024. At that limit uvloop's accept closes every connection waiting
in the listen backlog (libuv's answer to ``EMFILE``: each shim then gets code 11, a DEL is
spooled), and a plugin that cannot be started fails its call with code 11. The soft limit exists
for programs that still use ``select()`` (which takes no descriptor above 1023); the daemon waits
with epoll, and SQLite, aiohttp and kubernetes_asyncio take any descriptor.

The raised limit is capped (``SOFT_LIMIT_CAP``): plugins inherit it through ``posix_spawn`` (which
cannot give a child another limit), and a program that walks every descriptor up to its limit
before an exec stays quick with 65536. A soft limit set higher by whoever started the daemon is
left as it is; a limit that cannot be raised is logged and left too (the daemon works within it).
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

log = logging.getLogger(__name__)

SOFT_LIMIT_CAP = 65536
"""The most the soft descriptor limit is raised to: some eighty times the 825 descriptors a daemon
held at the peak of 1,000 concurrent CNI requests, and small enough for a child that closes every
descriptor up to it."""


@dataclass(frozen=True, slots=True)
class DescriptorLimit:
    """The soft ``RLIMIT_NOFILE`` before and after ``raise_descriptor_limit``, and the hard one."""

    before: int
    after: int
    hard: int


def raise_descriptor_limit(*, cap: int = SOFT_LIMIT_CAP) -> DescriptorLimit:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit, at most to ``cap``, never lower it; log
    what was done (info), or why it could not be (warning); return the limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:  # a sandbox refusing it: serve within the old limit
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
            return DescriptorLimit(before=soft, after=soft, hard=hard)
        log.info("open-files limit raised from %d to %d (hard limit %d)", soft, target, hard)
        return DescriptorLimit(before=soft, after=target, hard=hard)
    return DescriptorLimit(before=soft, after=soft, hard=hard)
