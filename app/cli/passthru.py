"""The ``passthru`` CNI plugin that heads an ``auxiliaryCNIChainName`` chain, and its installation.

Upstream Multus ships a Go ``passthru`` and puts it first in the auxiliary chain it appends
(``app.attach.disk_chains``); Debian's containernetworking-plugins have none. Ours is a POSIX shell
script, so it runs wherever the delegates run (in the daemon's container, or on the node under
``chrootDir``) without an interpreter of ours. Its behaviour is upstream's: ADD prints an empty
result in the request's ``cniVersion`` (the chained plugins that follow get it as ``prevResult``);
DEL, CHECK, GC and STATUS do nothing and succeed; VERSION lists 0.3.0 to 1.1.0.

``multus-install install`` writes it to ``<binDir>/passthru`` (temporary file + rename) unless a
plugin of that name that is not ours is there (upstream's, say: left alone); ``uninstall`` removes
only ours. Imports the standard library and ``app.shim.install`` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from app.shim import install as shim_install

NAME: Final = "passthru"
MARKER: Final = "# multus-py passthru plugin"
SCRIPT: Final = f"""#!/bin/sh
{MARKER}: heads the auxiliaryCNIChainName chain (installed by multus-install).
case "$CNI_COMMAND" in
ADD)
    version=$(sed -n 's/.*"cniVersion"[[:space:]]*:[[:space:]]*"\\([0-9.]*\\)".*/\\1/p' | head -n 1)
    printf '{{"cniVersion":"%s","interfaces":[],"ips":[],"routes":[],"dns":{{}}}}\\n' "${{version:-1.0.0}}"
    ;;
DEL|CHECK|GC|STATUS)
    cat >/dev/null
    ;;
VERSION)
    cat >/dev/null
    printf '{{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}}\\n'
    ;;
*)
    printf '{{"cniVersion":"1.1.0","code":4,"msg":"unknown CNI_COMMAND %s"}}\\n' "$CNI_COMMAND"
    exit 1
    ;;
esac
"""


def is_ours(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(256)
    except OSError:
        return False
    return MARKER.encode() in head


def install(bin_dir: Path) -> Path | None:
    """Write ``<bin_dir>/passthru``; None (nothing written) when a foreign plugin of that name is there."""
    target = bin_dir / NAME
    if target.exists() and not is_ours(target):
        return None
    shim_install.write_atomically(target, SCRIPT.encode(), mode=0o755)
    return target


def uninstall(bin_dir: Path) -> list[Path]:
    target = bin_dir / NAME
    if is_ours(target):
        target.unlink()
        return [target]
    return []
