"""The attach engine: turns one CNI request for a sandbox into delegate calls, durably.

Belongs here: network resolution (which delegates, which interface names), the ADD/DEL/CHECK
orchestration with its checkpoint writes, rollback, per-sandbox serialisation, and the small netns
inspection module. Uses ``app.cni`` and ``app.store``; never ``app.watch`` (the daemon wires them).
"""
