"""The node daemon process: entry point, start-up order, supervision, the shim-facing socket server.

Belongs here: the entry point that binds ``<socketDir>/multus.sock`` before the heavy imports
(``main``, ``listener``), logging and ``logFile`` rotation (``logformat``), wiring of store,
engine, watchers and GC (``wiring``, ``cluster``), start-up order and staged shutdown
(``startup``), the guard every background task runs under (``supervise``), the
upstream-compatible HTTP protocol on ``multus.sock`` (``protocol``, ``server``), the read-only
query API for ``multusctl`` on ``multus-query.sock``, the generated ``00-multus.conf``
(``autoconf``), spool replay and the metrics endpoint.
"""
