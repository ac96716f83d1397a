"""multus-py: a Multus CNI thick plugin, written in Python.

Packages, highest layer first (an import-linter contract in pyproject.toml keeps them pointing one way):

- ``app.daemon`` / ``app.cli``: processes: the node daemon (socket server, start-up, wiring), ``multusctl``.
- ``app.gc`` / ``app.watch``: garbage collection through attach's DEL; Kubernetes watchers and the mirror.
- ``app.attach``: the engine: resolves networks, runs delegates (``app.cni``), checkpoints (``app.store``).
- ``app.cni`` / ``app.store``: the CNI protocol (no Kubernetes, no SQL); the SQLite store (no CNI rules).
- ``app.settings``: the frozen settings tree read from daemon-config.json.

``app.shim`` stands apart: the CNI plugin the container runtime executes, standard library only.
``app.sandbox`` stands apart too: a Kubernetes API emulator for the demo and the tests, never
imported by the daemon.
Package ``__init__`` modules import nothing, so the shim's import path stays cheap.
"""
