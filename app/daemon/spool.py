"""Replaying DELs the shim spooled while the daemon could not take them (invariant 7).

The shim writes each such DEL, whole and fsynced, as ``<spoolDir>/del-*.json`` holding the exact
request body it would have posted. The daemon replays them at start-up before it reports ready,
and again on every GC pass, through the same decoding and the same engine DEL as a live request.
An entry is removed only once its DEL has run: either everything was removed, or the engine has
recorded the failures in the checkpoint, which then owns the retry (a failed DEL of a sandbox the
checkpoint does not hold, replayed from upstream Multus's cache, keeps its entry for the next pass).
An entry that cannot be decoded, is not a DEL, or names a container ID no ADD could have used, is
renamed ``*.rejected`` with a log line: kept for the operator, never silently dropped, and never
retried in a loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.attach.engine import AttachEngine
from app.attach.requests import Command, SandboxRequest, Trigger
from app.cni.types import CniError
from app.daemon import protocol

log = logging.getLogger(__name__)

ENTRY_GLOB = "del-*.json"
REJECTED_SUFFIX = ".rejected"


@dataclass
class SpoolReport:
    replayed: list[str] = field(default_factory=list)
    failed: list[tuple[str, CniError]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def pending(spool_dir: Path) -> list[Path]:
    """Spooled DELs, oldest first (names start with the time they were written)."""
    try:
        return sorted(spool_dir.glob(ENTRY_GLOB), key=lambda path: path.name)
    except FileNotFoundError:
        return []


async def replay(*, spool_dir: Path, engine: AttachEngine, daemon_config: dict[str, Any]) -> SpoolReport:
    """Run every spooled DEL once; remove each entry whose DEL ran."""
    report = SpoolReport()
    for entry in pending(spool_dir):
        try:
            request = _decode(entry, daemon_config)
        except (CniError, protocol.NothingRecordedError) as error:
            _reject(entry, str(error), report)
            continue
        try:
            await engine.delete(request)
        except CniError as error:
            report.failed.append((entry.name, error))
            if await engine.load_sandbox(request.container_id) is None:
                # Not in the checkpoint (a sandbox upstream Multus attached, DELed from its cache):
                # nothing else would retry it, so the entry stays for the next pass.
                log.error(
                    "spooled DEL %s of container %s failed, kept for the next replay: %s",
                    entry.name,
                    request.container_id,
                    error,
                )
                continue
            log.error(  # recorded as pending in the checkpoint: GC retries from there
                "spooled DEL %s of container %s left work pending: %s",
                entry.name,
                request.container_id,
                error,
            )
        report.replayed.append(entry.name)
        await asyncio.to_thread(_remove_durably, entry)
    if report.replayed or report.rejected:
        log.info(
            "spool: %d DELs replayed (%d left work pending), %d entries rejected",
            len(report.replayed),
            len(report.failed),
            len(report.rejected),
        )
    return report


def _decode(entry: Path, daemon_config: dict[str, Any]) -> SandboxRequest:
    try:
        body = entry.read_bytes()
    except OSError as exc:
        raise CniError(5, f"cannot read spool entry {entry.name}: {exc.strerror}") from exc
    request = protocol.interpret(protocol.decode_body(body), daemon_config=daemon_config)
    if not isinstance(request, SandboxRequest) or request.command is not Command.DEL:
        raise CniError(7, f"spool entry {entry.name} is not a DEL")
    return SandboxRequest(
        command=request.command,
        container_id=request.container_id,
        netns=request.netns,
        ifname=request.ifname,
        cni_args=request.cni_args,
        pod=request.pod,
        conf=request.conf,
        trigger=Trigger.SPOOL,
    )


def _reject(entry: Path, reason: str, report: SpoolReport) -> None:
    target = entry.with_name(entry.name + REJECTED_SUFFIX)
    log.error("spool entry %s rejected, kept as %s: %s", entry.name, target.name, reason)
    entry.rename(target)
    report.rejected.append((entry.name, reason))


def _remove_durably(entry: Path) -> None:
    entry.unlink(missing_ok=True)
    fd = os.open(entry.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
