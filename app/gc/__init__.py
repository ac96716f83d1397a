"""Garbage collection and crash recovery: reconcile the checkpoint with the live node.

Tears down only through ``app.attach``'s DEL path, so there is one teardown.
"""
