"""Structured log fields of the engine, recovery and GC: who a log line is about.

Every line the engine, recovery or GC writes about a sandbox passes these as ``extra=``; the JSON
log format (``app.daemon.logformat``) prints each under its own key: ``container_id``, ``command``,
``trigger``, ``pod`` (``namespace/name``), ``ifname``, ``network``. Only known fields are given,
never empty ones. No I/O.
"""

from __future__ import annotations

from app.store.records import PodIdentity


def fields(
    container_id: str,
    *,
    command: str = "",
    trigger: str = "",
    pod: PodIdentity | None = None,
    ifname: str = "",
    network: str = "",
) -> dict[str, str]:
    """The log fields of one sandbox (and one of its delegates), under stable names."""
    found = {
        "container_id": container_id,
        "command": command,
        "trigger": trigger,
        "ifname": ifname,
        "network": network,
    }
    if pod is not None and pod.name:
        found["pod"] = f"{pod.namespace}/{pod.name}"
    return {key: value for key, value in found.items() if value}
