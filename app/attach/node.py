"""Facts about this node that every checkpoint row carries: the kernel boot ID.

A netns, an interface or a VF cannot survive a reboot, while the store and IPAM lease files can;
the boot ID recorded with each sandbox tells recovery which records predate the current boot.
"""

from __future__ import annotations

from pathlib import Path

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def boot_id(path: Path = BOOT_ID_PATH) -> str:
    return path.read_text().strip()
