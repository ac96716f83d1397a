"""A Kubernetes API server emulator: a test and demo tool, not production code.

multus-py runs nowhere near a real cluster on a developer's machine or in CI, so the demo, the
integration tests and the benchmarks talk to this emulator instead: a real HTTP server (aiohttp)
speaking enough of the Kubernetes API for the daemon — discovery, namespaces, pods (with the
``status`` subresource), core and ``events.k8s.io`` events and the NetworkAttachmentDefinition CRD —
with resourceVersion semantics, filtered watches, bookmarks, WatchList, 410 Gone, and fault injection
controlled from Python or over HTTP (``/_emulator/...``).

Nothing in ``app`` may import this package, and it imports nothing from ``app`` nor
``kubernetes_asyncio`` (only the tests use the real client against it). Package ``__init__`` modules
import nothing; the entry point is ``app.sandbox.kubeapi`` (``KubeApiEmulator``, and
``python -m app.sandbox.kubeapi`` for a separate process).

Modules, highest first: ``kubeapi`` (the facade and CLI) → ``server`` (HTTP handlers), ``control``
(the ``/_emulator`` endpoints) → ``streaming`` (watch responses) → ``store`` (objects and write
rules) → ``watching`` (history, watchers, fan-out) → ``objects`` (immutable encoded versions);
beside them ``faults``, ``requestlog``, ``routing``, ``discovery``, ``selectors``, ``patching``,
``status``, ``resources`` and ``kubeconfig``, which import none of the above. Apart from the
emulator, ``processes`` starts and stops emulator and daemon processes for the demo, the benchmarks
and the tests (the daemon runs as ``python -m app.daemon.main``, never imported here).
"""
