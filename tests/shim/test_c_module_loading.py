"""The shim loads its C modules (``_json``, ``_socket``, ``binascii``) without the import system's search,
from the interpreter's own ``lib-dynload`` or its built-in table, and falls back to a plain ``import``
whenever that is not possible: a missing or unloadable file never costs a working shim.

Each case runs the installed module under ``python -I -S -X importtime`` as the launcher does, then
reports how each C module got there: ``-X importtime`` lists what went through importlib, and the path
finder leaves a ``FileFinder`` for ``lib-dynload`` in ``sys.path_importer_cache``. A module loaded
directly still carries the spec, loader and file importlib would have given it.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shim.helpers import BASE_ENV

C_MODULES = ("_json", "_socket", "binascii")
SYSTEM_PYTHON = "/usr/bin/python3"
VERSION_REPLY = (
    '{"cniVersion":"1.1.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'
)

REPORT = """
import sys
{prepare}
sys.path.insert(0, {impl_dir!r})
import multus_shim_impl
dynload = [entry for entry in sys.path if entry.endswith("/lib-dynload")]
print(repr({{
    "builtin": sorted(name for name in {modules!r} if name in sys.builtin_module_names),
    "searched": any(entry in sys.path_importer_cache for entry in dynload),
    "same": all(getattr(multus_shim_impl, name) is sys.modules[name] for name in {modules!r}),
    "files": {{name: getattr(sys.modules[name], "__file__", None) for name in {modules!r}}},
    "origins": {{name: sys.modules[name].__spec__.origin for name in {modules!r}}},
    "loaders": {{name: repr(sys.modules[name].__loader__) for name in {modules!r}}},
    "scan": multus_shim_impl.parse_json('{{"Name": [1, 2.5, "\\\\u00e9"]}}'),
}}))
"""
IMPORT_TIME = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", re.MULTILINE)


def report(python: str, launcher: Path, prepare: str = "") -> dict[str, object]:
    """How ``python`` running the installed shim module got each C module, and that the shim works:
    ``direct`` names the C modules that did not go through importlib (``-X importtime`` lists those
    that did)."""
    code = REPORT.format(prepare=prepare, impl_dir=str(launcher.parent / ".multus-shim.d"), modules=C_MODULES)
    done = subprocess.run(
        [python, "-I", "-S", "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=BASE_ENV,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    facts = ast.literal_eval(done.stdout)
    assert isinstance(facts, dict)
    assert facts["same"] is True  # the shim uses the very modules in sys.modules
    assert facts["scan"] == {"name": [1, 2.5, "\u00e9"]}
    for name in C_MODULES:  # what importlib records, whichever way the module came
        if name in facts["builtin"]:
            assert (facts["origins"][name], facts["loaders"][name]) == (
                "built-in",
                "<class '_frozen_importlib.BuiltinImporter'>",
            )
        else:
            assert facts["origins"][name] == facts["files"][name]
            assert facts["loaders"][name].startswith("<_frozen_importlib_external.ExtensionFileLoader object")
    facts["direct"] = sorted(set(C_MODULES) - set(IMPORT_TIME.findall(done.stderr)))
    facts["json_file"] = facts["files"]["_json"]
    return facts


def extension_file(python: str, name: str) -> str | None:
    """Where ``python``'s plain import finds ``name`` (None for a built-in module)."""
    code = f"import {name}; print(getattr({name}, '__file__', ''))"
    done = subprocess.run([python, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip() or None


def interpreters() -> list[str]:
    found = [sys.executable]
    if os.access(SYSTEM_PYTHON, os.X_OK) and os.path.realpath(SYSTEM_PYTHON) != os.path.realpath(
        sys.executable
    ):
        found.append(SYSTEM_PYTHON)
    return found


@pytest.mark.parametrize("python", interpreters())
def test_every_c_module_is_loaded_without_the_import_search(launcher: Path, python: str) -> None:
    facts = report(python, launcher)
    assert facts["direct"] == list(C_MODULES)
    assert facts["searched"] is False  # lib-dynload was never listed
    # the file loaded is the one the plain import finds
    assert facts["json_file"] == extension_file(python, "_json")


@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="needs the distribution's Python")
def test_built_in_modules_are_created_from_the_interpreters_table(launcher: Path) -> None:
    builtin = [name for name in C_MODULES if extension_file(SYSTEM_PYTHON, name) is None]
    if not builtin:
        pytest.skip(f"{SYSTEM_PYTHON} has none of {C_MODULES} built in")
    facts = report(SYSTEM_PYTHON, launcher)
    assert facts["builtin"] == builtin
    assert isinstance(facts["direct"], list)
    assert set(builtin) <= set(facts["direct"])


def test_a_module_missing_from_lib_dynload_falls_back_to_the_plain_import(
    launcher: Path, tmp_path: Path
) -> None:
    # the first lib-dynload on sys.path is an empty directory: the direct load finds nothing there
    empty = tmp_path / "lib-dynload"
    empty.mkdir()
    facts = report(sys.executable, launcher, prepare=f"sys.path.insert(0, {str(empty)!r})")
    assert facts["direct"] == sorted(
        name for name in C_MODULES if extension_file(sys.executable, name) is None
    )
    assert facts["json_file"] == extension_file(sys.executable, "_json")


def test_an_unloadable_file_in_lib_dynload_falls_back_to_the_plain_import(
    launcher: Path, tmp_path: Path
) -> None:
    # The only directory named lib-dynload holds files that are no shared objects; the real modules are
    # reachable through another name, where only the plain import's search goes.
    suffix = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import _imp; print(_imp.extension_suffixes()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    broken = tmp_path / "lib-dynload"
    broken.mkdir()
    for name in C_MODULES:
        (broken / f"{name}{suffix}").write_bytes(b"not an ELF file")
    real = str(Path(str(extension_file(sys.executable, "_json"))).parent)
    alias = tmp_path / "real-modules"
    alias.symlink_to(real)
    keep = f"[entry for entry in sys.path if entry != {real!r}]"
    prepare = f"sys.path[:] = {keep} + [{str(alias)!r}, {str(broken)!r}]"
    facts = report(sys.executable, launcher, prepare=prepare)
    assert facts["direct"] == sorted(
        name for name in C_MODULES if extension_file(sys.executable, name) is None
    )
    assert facts["json_file"] == f"{alias}/_json{suffix}"


def test_modules_imported_before_the_shim_are_kept(launcher: Path) -> None:
    facts = report(sys.executable, launcher, prepare="import _json, _socket, binascii")
    assert facts["direct"] == []


def test_the_launcher_answers_version_through_the_direct_load(launcher: Path) -> None:
    done = subprocess.run(
        [str(launcher)],
        env={**BASE_ENV, "CNI_COMMAND": "VERSION"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, VERSION_REPLY, "")
