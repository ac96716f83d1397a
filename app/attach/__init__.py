"""The attach engine: turns one CNI request for a sandbox into delegate calls, durably.

Belongs here: network selection and resolution (which delegates, which interface names, what each
receives), the ADD/DEL/CHECK orchestration with its checkpoint writes, rollback, per-sandbox
serialisation, the history lines and the facts derived from delegate results, the DEL of sandboxes
upstream Multus attached, hot-plug of single delegates into running sandboxes (``/delegate`` and
the annotation reconciler), and the small netns inspection module. Uses ``app.cni`` and ``app.store``;
never ``app.watch`` (the daemon wires them).
"""
