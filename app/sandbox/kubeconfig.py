"""Kubeconfig files pointing at a running emulator (plain HTTP; any bearer token is accepted).

Written as JSON, which is valid YAML, so ``kubernetes_asyncio.config.load_kube_config`` and client-go
read it without this package needing a YAML library. Part of the emulator, a test/demo tool.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_TOKEN = "multus-py-emulator-token"
DEFAULT_CONTEXT = "multus-py-emulator"


def kubeconfig(
    url: str, *, token: str = DEFAULT_TOKEN, namespace: str = "default", name: str = DEFAULT_CONTEXT
) -> dict[str, object]:
    """A kubeconfig document with one cluster, user and context, all named ``name``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }


def write_kubeconfig(
    path: str | os.PathLike[str],
    url: str,
    *,
    token: str = DEFAULT_TOKEN,
    namespace: str = "default",
    name: str = DEFAULT_CONTEXT,
) -> Path:
    """Write a kubeconfig for ``url`` to ``path`` (mode 0600, atomically) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    document = kubeconfig(url, token=token, namespace=namespace, name=name)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    os.replace(temporary, target)
    return target
