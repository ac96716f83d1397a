"""Rules frozen for the data migrations: each module is the logic one revision ran when it was written.

A migration is history: run by any later release on a store of an older one, it must compute what
it computed then. So a revision never imports the daemon's rules (``app.attach``, ``app.cni``...:
an import-linter contract keeps it so); it imports its own copy from here, which never follows later
changes of the code it was copied from.
"""
