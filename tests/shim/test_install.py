"""Installing the shim into a CNI bin dir: a launcher, a precompiled module, and a clean uninstall."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from app.shim import install
from app.shim.install import install_shim, uninstall_shim
from tests.shim.helpers import conf_bytes, run_shim

VERSION_ENV = {"CNI_COMMAND": "VERSION"}
VERSION_REPLY = (
    b'{"cniVersion":"1.1.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'
)


def listing(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its content, and every directory (content b"<dir>")."""
    return {
        str(path.relative_to(directory)): b"<dir>" if path.is_dir() else path.read_bytes()
        for path in sorted(directory.rglob("*"))
    }


def test_launcher_is_an_executable_script_with_a_single_shebang_argument(tmp_path: Path) -> None:
    launcher = install_shim(str(tmp_path), interpreter=sys.executable)

    assert launcher == tmp_path / "multus-shim"
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755
    first_line = launcher.read_text().splitlines()[0]
    # Linux passes everything after the interpreter as ONE argument: "-I -S" would arrive as "-I -S".
    assert first_line == f"#!{sys.executable} -IS"
    assert len(launcher.read_text().splitlines()) < 15


def test_the_interpreter_defaults_to_the_system_python_or_this_one(tmp_path: Path) -> None:
    launcher = install_shim(str(tmp_path))
    system = "/usr/bin/python3"
    expected = os.path.realpath(system if os.access(system, os.X_OK) else sys.executable)
    assert launcher.read_text().splitlines()[0] == f"#!{expected} -IS"
    assert run_shim(launcher, base=VERSION_ENV).success() == VERSION_REPLY


def test_module_is_a_copy_of_the_shim_with_a_fresh_pyc(tmp_path: Path) -> None:
    install_shim(str(tmp_path), interpreter=sys.executable)

    module = tmp_path / ".multus-shim.d" / "multus_shim_impl.py"
    assert module.read_bytes() == Path(install.__file__).with_name("shim.py").read_bytes()
    pyc = Path(importlib.util.cache_from_source(str(module)))
    assert pyc.is_file()
    flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
    assert flags == 0  # timestamp-based: an edited copy is recompiled, not silently ignored
    assert int.from_bytes(pyc.read_bytes()[8:12], "little") == int(module.stat().st_mtime)


def test_installed_launcher_runs_the_shim(tmp_path: Path) -> None:
    launcher = install_shim(str(tmp_path), interpreter=sys.executable, name="multus-shim-py")
    assert launcher.name == "multus-shim-py"
    assert run_shim(launcher, base=VERSION_ENV).success() == VERSION_REPLY
    run = run_shim(launcher, conf_bytes("/nonexistent"), env={"MULTUS_SHIM_WAIT_SECONDS": "0"})
    assert run.error()["code"] == 11


def test_launcher_finds_its_module_after_the_bin_dir_moves(tmp_path: Path) -> None:
    # The daemon's container may install into /host/opt/cni/bin, which the runtime sees as /opt/cni/bin.
    installed = tmp_path / "container-view"
    installed.mkdir()
    install_shim(str(installed), interpreter=sys.executable)
    moved = installed.rename(tmp_path / "host-view")
    assert run_shim(moved / "multus-shim", base=VERSION_ENV).success() == VERSION_REPLY


def test_launcher_without_its_module_prints_a_cni_error(tmp_path: Path) -> None:
    launcher = install_shim(str(tmp_path), interpreter=sys.executable)
    shutil.rmtree(tmp_path / ".multus-shim.d")
    assert run_shim(launcher, base=VERSION_ENV).error() == {
        "code": 999,
        "msg": "multus-shim: cannot import multus_shim_impl",
    }


def test_reinstall_replaces_files_by_rename(tmp_path: Path) -> None:
    launcher = install_shim(str(tmp_path), interpreter=sys.executable)
    module = tmp_path / ".multus-shim.d" / "multus_shim_impl.py"
    with launcher.open("rb") as old_launcher, module.open("rb") as old_module:
        old_inodes = (launcher.stat().st_ino, module.stat().st_ino)
        install_shim(str(tmp_path), interpreter=sys.executable)
        new_inodes = (launcher.stat().st_ino, module.stat().st_ino)
        # A runtime that had the old files open reads them whole: they were replaced, not rewritten.
        assert old_launcher.read() == launcher.read_bytes()
        assert old_module.read() == module.read_bytes()
    assert new_inodes[0] != old_inodes[0]
    assert new_inodes[1] != old_inodes[1]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        ".multus-shim.d",
        "multus-shim",
    ]  # no temp files


def test_an_interpreter_that_is_not_visible_here_gets_no_pyc(tmp_path: Path) -> None:
    install_shim(str(tmp_path), interpreter=sys.executable)
    launcher = install_shim(str(tmp_path), interpreter="/host/usr/bin/python3")
    assert launcher.read_text().startswith("#!/host/usr/bin/python3 -IS\n")
    assert list((tmp_path / ".multus-shim.d" / "__pycache__").iterdir()) == []


@pytest.mark.parametrize(
    "interpreter",
    ["/opt/my python/bin/python3", "python3", "/opt/" + "p" * 240 + "/bin/python3"],
    ids=["space", "relative", "too-long-for-linux"],
)
def test_an_interpreter_path_unfit_for_a_shebang_is_refused(tmp_path: Path, interpreter: str) -> None:
    """Linux reads 256 bytes of a script to find its interpreter: a longer ``#!`` line loses its
    flags or fails to exec on every CNI call."""
    with pytest.raises(ValueError, match="shebang"):
        install_shim(str(tmp_path), interpreter=interpreter)
    assert list(tmp_path.iterdir()) == []


def leave_temporaries_of_a_killed_install(bin_dir: Path) -> list[Path]:
    """What a kill -9 in the middle of ``write_atomically`` leaves: ``.<name>.tmp-<pid>``."""
    leftovers = [
        bin_dir / ".multus-shim.tmp-4242",
        bin_dir / ".multus-shim.d" / ".multus_shim_impl.py.tmp-4243",
    ]
    for leftover in leftovers:
        leftover.parent.mkdir(exist_ok=True)
        leftover.write_bytes(b"#!/usr/bin/python3 -IS\n# torn")
    return leftovers


def test_the_next_install_removes_the_temporary_files_a_killed_install_left(tmp_path: Path) -> None:
    (tmp_path / "bridge").write_bytes(b"\x7fELF...")
    (tmp_path / ".bridge.tmp-4242").write_bytes(b"someone else's")
    (tmp_path / ".multus-shim.tmp-draft").write_bytes(b"not a pid: not one of ours")
    install_shim(str(tmp_path), interpreter=sys.executable)
    leftovers = leave_temporaries_of_a_killed_install(tmp_path)

    install_shim(str(tmp_path), interpreter=sys.executable)

    assert not any(leftover.exists() for leftover in leftovers)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        ".bridge.tmp-4242",
        ".multus-shim.d",
        ".multus-shim.tmp-draft",
        "bridge",
        "multus-shim",
    ]


def test_uninstall_removes_the_temporary_files_a_killed_install_left(tmp_path: Path) -> None:
    before = listing(tmp_path)
    install_shim(str(tmp_path), interpreter=sys.executable)
    leave_temporaries_of_a_killed_install(tmp_path)
    uninstall_shim(str(tmp_path))
    assert listing(tmp_path) == before


def test_uninstall_leaves_the_bin_dir_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "bridge").write_bytes(b"\x7fELF...")
    (tmp_path / "bridge").chmod(0o755)
    before = listing(tmp_path)

    install_shim(str(tmp_path), interpreter=sys.executable)
    removed = uninstall_shim(str(tmp_path))

    assert listing(tmp_path) == before
    assert tmp_path / "multus-shim" in removed
    assert tmp_path / ".multus-shim.d" in removed


def test_uninstall_leaves_a_foreign_file_of_the_same_name(tmp_path: Path) -> None:
    (tmp_path / "multus-shim").write_bytes(b"\x7fELF upstream go shim")
    assert uninstall_shim(str(tmp_path)) == []
    assert (tmp_path / "multus-shim").read_bytes() == b"\x7fELF upstream go shim"


def test_uninstall_keeps_the_module_while_another_launcher_uses_it(tmp_path: Path) -> None:
    install_shim(str(tmp_path), interpreter=sys.executable, name="multus-shim")
    other = install_shim(str(tmp_path), interpreter=sys.executable, name="multus-shim-canary")

    assert uninstall_shim(str(tmp_path), name="multus-shim") == [tmp_path / "multus-shim"]
    assert run_shim(other, base=VERSION_ENV).success() == VERSION_REPLY
    uninstall_shim(str(tmp_path), name="multus-shim-canary")
    assert list(tmp_path.iterdir()) == []


def test_uninstall_keeps_files_it_did_not_write(tmp_path: Path) -> None:
    install_shim(str(tmp_path), interpreter=sys.executable)
    (tmp_path / ".multus-shim.d" / "notes.txt").write_text("someone else's")
    uninstall_shim(str(tmp_path))
    assert listing(tmp_path) == {".multus-shim.d": b"<dir>", ".multus-shim.d/notes.txt": b"someone else's"}


def test_console_script_runs_the_same_shim() -> None:
    script = Path(sys.executable).parent / "multus-shim"
    if not script.exists():
        pytest.skip("the package is not installed in this environment")
    proc = subprocess.run([str(script)], env=VERSION_ENV, capture_output=True, timeout=20, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, VERSION_REPLY, b"")


def test_module_runs_as_a_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app.shim.shim"],
        env={**VERSION_ENV, "PYTHONPATH": str(Path(install.__file__).parents[2])},
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, VERSION_REPLY, b"")


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs a second Python at /usr/bin/python3")
def test_another_interpreter_compiles_its_own_pyc(tmp_path: Path) -> None:
    other = "/usr/bin/python3"
    launcher = install_shim(str(tmp_path), interpreter=other)
    tag = subprocess.run(
        [other, "-I", "-S", "-c", "import sys; print(sys.implementation.cache_tag)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert (tmp_path / ".multus-shim.d" / "__pycache__" / f"multus_shim_impl.{tag}.pyc").is_file()
    assert run_shim(launcher, base=VERSION_ENV).success() == VERSION_REPLY
