"""The CNI specification's rules for identifiers: container IDs, network names, interface names.

Called by ``app.cni.conf`` (network names while loading), ``app.cni.api`` (before ADD and CHECK
execute anything) and by callers that want to refuse bad input before recording it. Pure checks
raising ``CniError`` with the Go library's codes and wording; never touches the system.
"""

from __future__ import annotations

import re

from app.cni.types import CniError, ErrorCode

_IDENTIFIER = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
MAX_IFNAME_BYTES = 15


def check_container_id(container_id: str) -> None:
    """Refuse an empty container ID (code 3) or one with characters outside the spec's regex (code 4)."""
    if not container_id:
        raise CniError(ErrorCode.UNKNOWN_CONTAINER, "missing containerID")
    if not _IDENTIFIER.fullmatch(container_id):
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, "invalid characters in containerID", container_id)


def check_network_name(name: str) -> None:
    """Refuse an empty network name or one with characters outside the spec's regex (code 7)."""
    if not name:
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, "missing network name")
    if not _IDENTIFIER.fullmatch(name):
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, "invalid characters found in network name", name)


def check_ifname(ifname: str) -> None:
    """Refuse an interface name Linux would not take: empty, > 15 bytes, ``.``/``..``, ``/``, ``:``, space."""
    if not ifname:
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, "interface name is empty")
    if len(ifname.encode("utf-8", "surrogatepass")) > MAX_IFNAME_BYTES:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            "interface name is too long",
            f"interface name should be less than {MAX_IFNAME_BYTES + 1} characters",
        )
    if ifname in (".", ".."):
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, "interface name is . or ..")
    if any(char in "/:" or char.isspace() for char in ifname):
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT, "interface name contains / or : or whitespace characters"
        )
