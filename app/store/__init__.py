"""The SQLite state store: checkpoint of attachments, history, and the Kubernetes mirror.

Belongs here: the engine and its pragmas, the tables (SQLAlchemy Core; the ORM is never
imported), the single writer thread (and the reader threads beside it), and domain-named functions
(``checkpoints.record_intent``, ``history.append``, ...). Results are kept as the JSON the delegate
printed; this package knows no CNI rules. Only this package and ``migrations/`` import SQLAlchemy
or alembic.
"""
