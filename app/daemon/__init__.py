"""The node daemon process: configuration, start-up order, the shim-facing socket server.

Belongs here: wiring (store, engine, watchers, GC), the upstream-compatible HTTP protocol on
``<socketDir>/multus.sock``, the read-only query API for ``multusctl`` on
``multus-query.sock``, the generated ``00-multus.conf``, signal handling and shutdown.
"""
