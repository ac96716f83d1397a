"""Rules frozen for the data migrations: each module is the logic the last release to run a revision ran.

A migration is history: run by any later release on a store of an older one, it must compute what
the last release that ran it computed (for 0004 and 0011, main at 0e91690, with its own
``app.attach``/``app.cni`` rules: earlier rules were never shipped for good, and hold bugs that
release fixed). So a revision never imports the daemon's rules (``app.attach``, ``app.cni``...: an
import-linter contract keeps it so); it imports its own copy from here, which never follows later
changes of the code it was copied from.
"""
