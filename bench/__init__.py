"""Benchmarks of multus-py. ``python -m bench --help`` (or ``./dev.sh bench``) lists them.

They print figures; they assert nothing. Tests never time anything.

The daemons, shims and ``multusctl`` they start run the package as a node has it installed:
byte-compiled. ``byte_compile`` writes the bytecode of a checkout's ``app`` (an editable install
has none of its own, and with ``PYTHONDONTWRITEBYTECODE`` set no process writes it, so each would
compile every module again at its start); importing this package does it for this checkout.
"""

from __future__ import annotations

import compileall
import functools
from pathlib import Path


def byte_compile(tree: Path) -> None:
    """Write the bytecode of ``tree/app`` where it is missing or stale, once per tree and process (a
    benchmark does not edit the code it runs)."""
    _compile_app((tree / "app").resolve())


@functools.cache
def _compile_app(app_dir: Path) -> None:
    compileall.compile_dir(str(app_dir), quiet=1)


byte_compile(Path(__file__).resolve().parents[1])
