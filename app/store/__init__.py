"""The SQLite state store: checkpoint of attachments, history, and the Kubernetes mirror.

Belongs here: the connections and their pragmas, the single writer thread (and the reader threads
beside it), and domain-named functions (``checkpoints.record_intent``, ``history.append``, ...) in
plain SQL on ``sqlite3``; the tables as SQLAlchemy Core (``models``), for alembic's ``migrations/``
and the tests, never imported by what the daemon runs. Results are kept as the JSON the delegate
printed; this package knows no CNI rules. Only this package and ``migrations/`` import SQLAlchemy
or alembic.
"""
