"""A surprise in one sandbox's teardown at start-up (a bug, a failed write) is that sandbox's
failure: recovery settles the others, whose DELs it must not cancel, and returns, so the daemon
starts and GC retries the one left recorded; before, it ended recovery and so the daemon (exit 1,
a crash loop leaving the node without any network)."""

from __future__ import annotations

from app.cni.types import ErrorCode
from app.gc.recovery import recover
from app.metrics import REGISTRY
from tests.core.support import Node, SurpriseAtFirstDel, added_before_a_reboot, pending


def unexpected_recovery_errors() -> float:
    value = REGISTRY.get_sample_value("multus_py_engine_unexpected_errors_total", {"step": "recovery"})
    return value or 0.0


async def test_a_surprise_in_one_sandboxs_teardown_leaves_it_for_gc_and_settles_the_others(
    node: Node,
) -> None:
    containers = await added_before_a_reboot(node, 3)
    counted = unexpected_recovery_errors()

    report = await recover(engine=node.engine(crash=SurpriseAtFirstDel()), db=node.db)

    [(failed, error)] = report.failed
    assert error.code == ErrorCode.INTERNAL
    assert report.earlier_boot == 3
    assert unexpected_recovery_errors() == counted + 1
    assert pending(node.checkpoint(failed)) == ["eth0"], "still recorded: GC retries it"
    for settled in set(containers) - {failed}:
        assert node.checkpoint(settled) is None
