"""Two runtime GC passes at once each keep their own record of the operations begun during them.

``SandboxLocks.operations_seen`` gives each pass a set that every operation beginning while it
lasts is added to (invariant 9: a sandbox with an operation in flight at any moment of the pass is
left alone). The sets were kept in a list and dropped with ``list.remove``, which compares sets by
value: two passes whose sets were equal (both empty, as on an idle node) dropped each other's. The
pass that ended first detached the other's set, so an ADD begun after that went unseen by the pass
still running (it could tear that sandbox down), and the second pass's end raised ``ValueError``
(the runtime's GC answered code 999, "internal error"). Found by ``bench.chaos``
(``GC 999: internal error: ValueError: list.remove(x): x not in list``).

``SandboxLocks`` now drops a pass's watcher by identity.
"""

from __future__ import annotations

from app.attach.locks import SandboxLocks


async def test_a_pass_ending_first_leaves_the_other_pass_watching() -> None:
    locks = SandboxLocks()
    with locks.operations_seen() as longer:
        with locks.operations_seen():
            pass  # an equal (empty) set: the other pass's, ended first
        async with locks.hold("begun-during-the-longer-pass"):
            pass
        assert "begun-during-the-longer-pass" in longer
