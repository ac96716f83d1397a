"""A daemon asked to stop during its start-up recovery begins no further sandbox's teardown: the
ones under way finish (or are cut short at the end of the grace), the rest stay recorded for the
next daemon's recovery. Before, recovery went on starting rollbacks until the grace ended, so a
long one was always cut off in the middle of a teardown (its plugins killed)."""

from __future__ import annotations

from app.gc.recovery import RecoveryReport, recover
from tests.core.support import Node, added_before_a_reboot, pending


class StopAfter:
    """A stop that is requested once it has been asked ``answers`` times."""

    def __init__(self, answers: int) -> None:
        self.asked = 0
        self.answers = answers

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked > self.answers


async def test_a_stop_during_recovery_begins_no_further_teardown_and_the_next_recovery_settles_the_rest(
    node: Node,
) -> None:
    containers = await added_before_a_reboot(node, 3)

    stopped = await recover(engine=node.engine(), db=node.db, stop=StopAfter(1))

    left = [container for container in containers if node.checkpoint(container) is not None]
    assert report_counts(stopped) == (1, 0)
    assert sorted(stopped.left) == sorted(left)
    assert len(left) == 2
    for container in left:
        assert pending(node.checkpoint(container)) == ["eth0"], "left as it was, for the next recovery"

    node.restart()
    finished = await recover(engine=node.engine(), db=node.db)

    assert report_counts(finished) == (2, 0)
    assert all(node.checkpoint(container) is None for container in containers)


def report_counts(report: RecoveryReport) -> tuple[int, int]:
    """(sandboxes of an earlier boot torn down, failures) of a recovery report."""
    return report.earlier_boot, len(report.failed)
