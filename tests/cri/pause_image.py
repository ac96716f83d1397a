"""The sandbox ("pause") image of the containerd test, built here because no registry is reachable.

``pause_program`` is a static ELF executable written byte by byte: one loadable segment whose code
waits for a signal for ever (``pause`` on x86-64, ``ppoll`` with nothing to poll on arm64). It needs
no compiler, no libc and no dynamic loader, so the image is one file. containerd stops a sandbox with
SIGKILL, which needs no handler. ``write_oci_archive`` packs it as an OCI image layout in a tar
(``oci-layout``, ``index.json``, blobs for the layer, the config and the manifest), which
``ctr images import`` takes; the image's name is in the index's ``io.containerd.image.name``
annotation.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import struct
import tarfile
from pathlib import Path
from typing import Any

LOAD_ADDRESS = 0x400000
ELF_HEADER_SIZE = 64
PROGRAM_HEADER_SIZE = 56

# machine code of "loop: wait for a signal; jump to loop", per architecture
CODE = {
    # b8 22000000: mov eax, 34 (pause); 0f05: syscall; ebf7: jmp back 9 bytes
    "x86_64": (62, "amd64", bytes.fromhex("b8220000000f05ebf7")),
    # mov x0..x3, #0; mov x8, #73 (ppoll); svc #0; b back 6 instructions
    "aarch64": (
        183,
        "arm64",
        struct.pack(
            "<7I", 0xD2800000, 0xD2800001, 0xD2800002, 0xD2800003, 0xD2800928, 0xD4000001, 0x17FFFFFA
        ),
    ),
}
"""uname machine -> (ELF e_machine, OCI architecture, code)."""

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def machine() -> str:
    """This machine's architecture, as ``uname -m`` names it, if the pause program exists for it."""
    name = platform.machine()
    if name not in CODE:
        raise RuntimeError(f"no pause program for {name}; known: {sorted(CODE)}")
    return name


def pause_program(arch: str) -> bytes:
    """A static ELF64 little-endian executable that pauses for ever."""
    e_machine, _, code = CODE[arch]
    size = ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE + len(code)
    entry = LOAD_ADDRESS + ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, version 1, SysV
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # ET_EXEC
        e_machine,
        1,  # EV_CURRENT
        entry,
        ELF_HEADER_SIZE,  # program headers right after this header
        0,  # no section headers
        0,
        ELF_HEADER_SIZE,
        PROGRAM_HEADER_SIZE,
        1,
        0,
        0,
        0,
    )
    segment = struct.pack(
        "<IIQQQQQQ",
        1,  # PT_LOAD
        5,  # PF_R | PF_X
        0,
        LOAD_ADDRESS,
        LOAD_ADDRESS,
        size,
        size,
        0x1000,
    )
    return header + segment + code


def _layer(program: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("pause")
        info.size = len(program)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(program))
    return buffer.getvalue()


def _descriptor(media_type: str, blob: bytes) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }


def write_oci_archive(path: Path, *, name: str, arch: str) -> None:
    """An OCI image archive at ``path`` holding the pause program as ``/pause``, named ``name``."""
    _, oci_arch, _ = CODE[arch]
    layer = _layer(pause_program(arch))
    config = json.dumps(
        {
            "architecture": oci_arch,
            "os": "linux",
            "config": {"Entrypoint": ["/pause"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [_descriptor(OCI_LAYER, layer)],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    **_descriptor(OCI_MANIFEST, manifest),
                    "platform": {"architecture": oci_arch, "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                    },
                }
            ],
        }
    ).encode()
    files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), "index.json": index}
    for blob in (layer, config, manifest):
        files["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob
    with tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
