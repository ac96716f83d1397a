"""The name the operating system shows a thread by (``/proc/<pid>/task/<tid>/comm``, which
``top -H``, ``ps -L``, ``perf`` and the kernel's own messages read): a thread Python starts keeps
its process's name (``python``) unless it gives itself one, so the daemon's threads could not be
told apart there. Standard library only, no state.
"""

from __future__ import annotations

COMM_BYTES = 15
"""The most of a name the kernel keeps (``TASK_COMM_LEN`` less its terminating NUL)."""


def name_this_thread(name: str) -> None:
    """Show the calling thread as ``name``, cut to ``COMM_BYTES``. Where ``/proc`` cannot take it
    (not mounted, read-only, a kernel before 3.17) the thread keeps the name it has: nothing
    depends on it."""
    try:
        with open("/proc/thread-self/comm", "wb", buffering=0) as comm:
            comm.write(name.encode("utf-8", "replace")[:COMM_BYTES])
    except OSError:
        pass
