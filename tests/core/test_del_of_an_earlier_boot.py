"""A sandbox of an earlier boot is DELed without its namespace, whatever its path holds now.

A namespace's identity is its file's device and inode, and the kernel numbers namespaces afresh at
each boot from the same small range: after a reboot, a path that holds a namespace again (a
``/proc/<pid>/ns/net`` of a reused pid, say) may show the very identity recorded at ADD, though it
is another pod's. The DEL entered it and removed that pod's interface.
"""

from __future__ import annotations

from app.gc.recovery import recover
from tests.core.support import Command, Node, new_container_id, pending


def del_netns(node: Node) -> list[str]:
    return [entry["env"].get("CNI_NETNS", "") for entry in node.recorder_entries("DEL")]


async def test_recovery_of_an_earlier_boot_does_not_enter_the_namespace_at_its_path(node: Node) -> None:
    conf = node.conf(node.recorder_network("cluster"))
    container = new_container_id()
    namespace = node.new_netns()  # stands for the namespace a path holds after the reboot: same identity
    await node.engine(boot_id="boot-0").add(node.request(Command.ADD, container, namespace, conf))
    node.restart()

    report = await recover(engine=node.engine(boot_id="boot-1"), db=node.db)

    assert report.earlier_boot == 1
    assert pending(node.checkpoint(container)) == []
    assert del_netns(node) == [""]


async def test_a_del_of_todays_boot_still_enters_its_own_namespace(node: Node) -> None:
    conf = node.conf(node.recorder_network("cluster"))
    container = new_container_id()
    namespace = node.new_netns()
    engine = node.engine()
    await engine.add(node.request(Command.ADD, container, namespace, conf))

    await engine.delete(node.request(Command.DEL, container, namespace, conf))

    assert del_netns(node) == [namespace.path]
