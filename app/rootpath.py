"""Paths as a process chrooted into another root sees them: resolved inside that root, from outside it.

Used by ``app.settings`` (is ``binDir`` there inside ``chrootDir``?) and ``app.cni.invoke`` (where is
a plugin, for a delegate that will run in the root). Every symlink is followed as the kernel would
follow it after ``chroot(root)``: an absolute target starts again at ``root``, and ``..`` never
climbs above it. Stdlib only, no state; never opens, executes or changes anything.
"""

from __future__ import annotations

import os
import stat
from collections import deque

MAX_SYMLINKS = 40
"""Symlinks followed in one lookup before giving up (the kernel's limit)."""


def resolve(root: str, path: str) -> str | None:
    """The daemon's path of ``path`` as seen inside ``root`` ("" = the daemon's own root), or None.

    None when a component is missing, unreadable, or the symlinks loop, and when ``root`` or
    ``path`` holds a NUL (no file has such a name; ``os.lstat`` would raise ValueError). With an
    empty ``root`` the path is returned unchanged: the daemon's own view needs no translation.
    """
    if not root:
        return path
    if "\0" in root or "\0" in path:
        return None
    pending = deque(part for part in path.split("/") if part and part != ".")
    resolved: list[str] = []
    followed = 0
    while pending:
        part = pending.popleft()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:
            return None
        if not stat.S_ISLNK(mode):
            resolved.append(part)
            continue
        followed += 1
        if followed > MAX_SYMLINKS:
            return None
        try:
            target = os.readlink(candidate)
        except OSError:
            return None
        if target.startswith("/"):
            resolved.clear()
        pending.extendleft(reversed([item for item in target.split("/") if item and item != "."]))
    return os.path.join(root, *resolved)


def is_dir(root: str, path: str) -> bool:
    """Is ``path`` a directory (after symlinks) inside ``root``?"""
    found = resolve(root, path)
    return found is not None and os.path.isdir(found)
