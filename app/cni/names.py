"""The CNI specification's rules for identifiers: container IDs, network names, interface names, netns paths.

Called by ``app.cni.conf`` (network names while loading), ``app.cni.api`` (before ADD and CHECK
execute anything) and by callers that want to refuse bad input before recording it. Pure checks
raising ``CniError`` with the Go library's codes and wording; never touches the system.
"""

from __future__ import annotations

import re

from app.cni.types import CniError, ErrorCode

_IDENTIFIER = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
MAX_IFNAME_BYTES = 15
_KERNEL_REFUSED_IFNAME_BYTES = frozenset(b"%\xa0")
"""Beyond the spec's rules, bytes Linux refuses in a new link's name: ``%`` makes it a template
(``eth%d``), and the kernel's ``isspace`` counts 0xA0, which UTF-8 uses inside characters like é."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_PLAIN_IFNAME = re.compile(r"[A-Za-z0-9_.\-]{1,15}")
"""Names no rule of ``check_ifname`` can refuse but ``.`` and ``..`` (nearly every name: eth0, net1)."""
MAX_PATH_BYTES = 4095
"""Linux's PATH_MAX (4096) less the terminating NUL."""


def unusable_character(text: str) -> str | None:
    """What makes ``text`` unusable as an OS string, or None: a NUL (``embedded null byte`` in
    every system call) or a lone surrogate (bytes that were not UTF-8, or a ``\\ud800`` escape)."""
    if "\x00" in text:
        return "a NUL character"
    surrogate = _SURROGATE.search(text)
    if surrogate is not None:
        return f"a lone surrogate (U+{ord(surrogate.group()):04X}: not valid UTF-8)"
    return None


def printable(text: str) -> str:
    """``text`` itself when it can be encoded and logged, else its escaped form (for messages)."""
    return text if unusable_character(text) is None else repr(text)[1:-1]


def has_control_character(text: str) -> bool:
    """True when ``text`` holds a C0 or C1 control character (NUL, newline, DEL, ...)."""
    return _CONTROL.search(text) is not None


def check_container_id(container_id: str) -> None:
    """Refuse an empty container ID (code 3) or one with characters outside the spec's regex (code 4)."""
    if not container_id:
        raise CniError(ErrorCode.UNKNOWN_CONTAINER, "missing containerID")
    if not _IDENTIFIER.fullmatch(container_id):
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT, "invalid characters in containerID", printable(container_id)
        )


def check_network_name(name: str) -> None:
    """Refuse an empty network name or one with characters outside the spec's regex (code 7)."""
    if not name:
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, "missing network name")
    if not _IDENTIFIER.fullmatch(name):
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, "invalid characters found in network name", name)


def check_ifname(ifname: str) -> None:
    """Refuse an interface name Linux would not take: empty, > 15 bytes, ``.``/``..``, ``/``, ``:``,
    whitespace; and (code 4 too) one holding a NUL, another control character or a lone surrogate."""
    if _PLAIN_IFNAME.fullmatch(ifname) and ifname not in (".", ".."):
        return
    check_ifname_fully(ifname)


def check_ifname_fully(ifname: str) -> None:
    """``check_ifname`` without its shortcut for plain names: every rule, one after another."""
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
    if has_control_character(ifname) or unusable_character(ifname) is not None:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            "interface name contains a control character or bytes that are not UTF-8",
            repr(ifname),
        )
    if any(byte in _KERNEL_REFUSED_IFNAME_BYTES for byte in ifname.encode("utf-8")):
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            "interface name contains a character Linux refuses in a name (%, or a byte it reads as space)",
            ifname,
        )


def check_netns_path(netns: str) -> None:
    """Refuse a network namespace path (``CNI_NETNS``) no system call can take, code 4: relative,
    longer than PATH_MAX, or holding a control character or a lone surrogate. Empty is the
    caller's business (legal for DEL)."""
    problem = unusable_character(netns) or ("a control character" if has_control_character(netns) else None)
    if problem is not None:
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"invalid CNI_NETNS: the path contains {problem}")
    if not netns.startswith("/"):
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, "invalid CNI_NETNS: not an absolute path", netns)
    if len(netns.encode("utf-8")) > MAX_PATH_BYTES:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            f"invalid CNI_NETNS: the path is longer than {MAX_PATH_BYTES} bytes",
        )
