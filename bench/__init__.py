"""Benchmarks of multus-py. ``python -m bench --help`` (or ``./dev.sh bench``) lists them.

They print figures; they assert nothing. Tests never time anything.

The daemons, shims and ``multusctl`` they start run the package as a node has it installed:
byte-compiled. ``byte_compile`` writes the bytecode of a checkout's ``app`` (an editable install
has none of its own, and with ``PYTHONDONTWRITEBYTECODE`` set no process writes it, so each would
compile every module again at its start); importing this package does it for this checkout.
"""

from __future__ import annotations

import compileall
from pathlib import Path


def byte_compile(tree: Path) -> None:
    """Write the bytecode of ``tree/app`` where it is missing or stale (quick when it is not)."""
    compileall.compile_dir(str(tree / "app"), quiet=1)


byte_compile(Path(__file__).resolve().parents[1])
