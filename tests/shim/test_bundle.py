"""The shim's self-contained runtime: built from this interpreter, installed into a CNI bin dir, and run
where the host's Python, libpython, libc, libm and dynamic loader are hidden (``tests/hostless.py``)."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli import install as install_cli
from app.shim import bundle
from app.shim.install import Step, install_bundled_shim, runtime_of, uninstall_shim
from tests import hostless
from tests.shim.helpers import BASE_ENV, StubDaemon, conf_bytes, json_reply, variant

VERSION_REPLY = (
    b'{"cniVersion":"1.1.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'
)
RESULT = {"Result": {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/8"}]}}


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle built from the interpreter running the tests."""
    destination = tmp_path_factory.mktemp("bundle") / "shim-bundle"
    bundle.build_bundle(destination)
    return destination


@pytest.fixture
def bin_dir() -> Iterator[Path]:
    """A CNI bin dir with a plugin of someone else's (short path: sockets live under it in no test)."""
    path = Path(tempfile.mkdtemp(prefix="mshim-bin-", dir="/tmp"))
    (path / "bridge").write_bytes(b"\x7fELF not ours")
    (path / "bridge").chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def runtimes(bin_dir: Path) -> list[str]:
    return [path.name for path in bundle.installed_runtimes(bin_dir / ".multus-shim.d")]


def test_the_installed_shim_runs_without_the_hosts_python_or_libc(
    built: Path, bin_dir: Path, daemon: StubDaemon
) -> None:
    launcher = install_bundled_shim(str(bin_dir), source=built)
    version = hostless.run([str(launcher)], env={"CNI_COMMAND": "VERSION"})
    assert (version.returncode, version.stdout, version.stderr) == (0, VERSION_REPLY, b"")
    daemon.replies = [json_reply(200, RESULT)]
    added = hostless.run([str(launcher)], env=BASE_ENV, stdin=conf_bytes(daemon.socket_dir))
    assert (added.returncode, added.stderr) == (0, b"")
    assert json.loads(added.stdout) == {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/8"}]}
    assert daemon.requests[0].env()["CNI_COMMAND"] == "ADD"


def test_the_hostless_namespace_really_hides_the_hosts_python_and_libc(bin_dir: Path) -> None:
    """The control: what today's launcher and any host program need is gone in there."""
    from app.shim.install import install_shim

    launcher = install_shim(str(bin_dir), interpreter=sys.executable, name="host-python-shim")
    assert hostless.run([str(launcher)], env={"CNI_COMMAND": "VERSION"}).returncode != 0
    assert hostless.run(["/bin/true"], env={}).returncode != 0


def test_a_running_shim_maps_no_file_from_outside_its_runtime(
    built: Path, bin_dir: Path, daemon: StubDaemon
) -> None:
    launcher = install_bundled_shim(str(bin_dir), source=built)
    runtime = bin_dir / ".multus-shim.d" / str(runtime_of(launcher))
    daemon.release = threading.Event()
    daemon.replies = [json_reply(200, RESULT)]
    line, scratch = hostless.command([str(launcher)], env=BASE_ENV)
    shim = start(line, conf_bytes(daemon.socket_dir), env=None)
    try:
        deadline = time.monotonic() + 60
        while not daemon.requests:  # the shim is in the middle of its call: everything it needs is mapped
            assert shim.poll() is None, shim.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        maps = [line.split(maxsplit=5) for line in Path(f"/proc/{shim.pid}/maps").read_text().splitlines()]
        mapped = {fields[5] for fields in maps if len(fields) == 6 and fields[5].startswith("/")}
        executable = {fields[5] for fields in maps if len(fields) == 6 and "x" in fields[1]}
        daemon.release.set()
        stdout, _ = shim.communicate(timeout=60)
    finally:
        daemon.release.set()
        if shim.poll() is None:
            shim.kill()
            shim.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    assert shim.returncode == 0
    assert json.loads(stdout)["ips"] == [{"address": "10.0.0.2/8"}]
    assert {path for path in executable if not path.startswith(f"{runtime}/")} <= {"[vdso]", "[vsyscall]"}
    # glibc maps the locale's data files (LC_ALL=C.UTF-8 here): data the node's locale names, no code
    outside = {path for path in mapped if not path.startswith(f"{runtime}/")}
    assert {path for path in outside if "/locale/" not in path and "/gconv/" not in path} == set()
    assert f"{runtime}/lib/libc.so.6" in mapped
    assert f"{runtime}/lib/ld-linux-x86-64.so.2" in mapped or any("/lib/ld-" in path for path in mapped)


def start(argv: list[str], stdin: bytes, *, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    """A process running in the background with ``stdin`` as its whole input."""
    with tempfile.TemporaryFile() as input_file:
        input_file.write(stdin)
        input_file.seek(0)
        return subprocess.Popen(
            argv, stdin=input_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )


def readelf(*args: str) -> str:
    return subprocess.run(["readelf", *args], capture_output=True, text=True, check=True).stdout


def test_readelf_shows_the_loader_and_library_path_inside_the_runtime(built: Path, bin_dir: Path) -> None:
    launcher = install_bundled_shim(str(bin_dir), host_bin_dir="/opt/cni/bin", source=built)
    name = str(runtime_of(launcher))
    host_runtime = f"/opt/cni/bin/.multus-shim.d/{name}"
    interpreter = next((bin_dir / ".multus-shim.d" / name / "bin").iterdir())
    assert launcher.read_text().splitlines()[0] == f"#!{host_runtime}/bin/{interpreter.name} -ISXutf8"
    [loader] = re.findall(r"\[Requesting program interpreter: (.*)\]", readelf("-l", str(interpreter)))
    assert loader.startswith(f"{host_runtime}/lib/ld-")
    [rpath] = re.findall(r"\(RPATH\)\s+Library rpath: \[(.*)\]", readelf("-d", str(interpreter)))
    assert rpath == f"{host_runtime}/lib"
    for library in (bin_dir / ".multus-shim.d" / name / "lib").glob("libpython*"):
        assert "Library rpath: [$ORIGIN]" in readelf("-d", str(library))


def test_the_bundle_holds_only_what_the_shims_start_up_and_run_load(built: Path) -> None:
    manifest = json.loads((built / bundle.MANIFEST_NAME).read_text())
    short = ".".join(manifest["python"].split(".")[:2])
    stdlib = f"lib/python{short}/"
    modules = sorted(name.removeprefix(stdlib) for name in manifest["files"] if name.startswith(stdlib))
    python_modules = [name for name in modules if name.endswith(".pyc")]
    assert python_modules == [
        "encodings/__init__.pyc",  # app.shim.runtime_encodings: no alias table, no encodings.utf_8
        "multus_shim_impl.pyc",
        "os.pyc",  # the landmark the interpreter finds its stdlib by (frozen in, never loaded from here)
    ]
    extensions = {name.split("/")[-1].split(".")[0] for name in modules if name.endswith(".so")}
    assert extensions <= {"_json", "_socket", "binascii"}
    assert {name for name in manifest["files"] if not name.startswith(stdlib)} == {
        manifest["interpreter"],
        *(name for name in manifest["files"] if name.startswith("lib/") and "/" not in name[4:]),
    }
    assert not any(name.endswith(".py") for name in manifest["files"])


def test_reinstalling_while_a_shim_runs_keeps_its_runtime_until_the_next_upgrade(
    built: Path, bin_dir: Path, daemon: StubDaemon, tmp_path: Path
) -> None:
    first = install_bundled_shim(str(bin_dir), source=built)
    runtime_a = runtime_of(first)
    daemon.release = threading.Event()
    daemon.replies = [json_reply(200, RESULT)]
    shim = start([str(first)], conf_bytes(daemon.socket_dir), env=BASE_ENV)
    try:
        deadline = time.monotonic() + 60
        while not daemon.requests:
            assert shim.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.01)
        install_bundled_shim(str(bin_dir), source=variant(built, tmp_path / "b", "b"))
        runtime_b = runtime_of(first)
        assert runtime_b != runtime_a
        assert runtimes(bin_dir) == sorted([str(runtime_a), str(runtime_b)])  # the previous one is kept
        install_bundled_shim(str(bin_dir), source=variant(built, tmp_path / "c", "c"))
        assert str(runtime_a) not in runtimes(bin_dir)  # two upgrades later it goes, open or not
        assert len(runtimes(bin_dir)) == 2
        daemon.release.set()
        stdout, stderr = shim.communicate(timeout=60)
    finally:
        daemon.release.set()
        if shim.poll() is None:
            shim.kill()
            shim.wait()
    assert (shim.returncode, stderr) == (0, b"")  # the shim started from the removed runtime finished
    assert json.loads(stdout)["ips"] == [{"address": "10.0.0.2/8"}]
    assert hostless.run([str(first)], env={"CNI_COMMAND": "VERSION"}).stdout == VERSION_REPLY


@pytest.mark.parametrize("first_run", ["completed", "killed-after-the-switch"])
def test_an_install_run_again_keeps_the_runtime_its_launcher_switch_replaced(
    built: Path, bin_dir: Path, tmp_path: Path, first_run: str
) -> None:
    """An install run again on the runtime its launcher already names (an init container restarted,
    one killed by the kubelet after its switch) took that runtime for the previous one and removed
    the one the switch had replaced: a shim exec'd just before the switch, still starting from it,
    lost its files."""
    older = install_bundled_shim(str(bin_dir), source=built)
    runtime_a = str(runtime_of(older))
    (tmp_path / "old-launcher").write_bytes(older.read_bytes())  # what a shim exec'd just before read
    (tmp_path / "old-launcher").chmod(0o755)
    newer = variant(built, tmp_path / "b", "b")

    def killed_after_the_switch(step: Step) -> None:
        if step == Step.LAUNCHER_WRITTEN:
            raise Killed

    if first_run == "killed-after-the-switch":
        with pytest.raises(Killed):
            install_bundled_shim(str(bin_dir), source=newer, reached=killed_after_the_switch)
    else:
        install_bundled_shim(str(bin_dir), source=newer)
    install_bundled_shim(str(bin_dir), source=newer)  # run again
    runtime_b = str(runtime_of(older))
    assert runtimes(bin_dir) == sorted([runtime_a, runtime_b])
    done = subprocess.run(
        [str(tmp_path / "old-launcher")], env={"CNI_COMMAND": "VERSION"}, capture_output=True, timeout=30
    )
    assert (done.returncode, done.stdout) == (0, VERSION_REPLY), done.stderr
    install_bundled_shim(str(bin_dir), source=variant(built, tmp_path / "c", "c"))  # the next switch
    assert runtime_a not in runtimes(bin_dir)
    assert runtime_b in runtimes(bin_dir)


def test_shims_executed_during_reinstalls_run_the_old_or_the_new_runtime(
    built: Path, bin_dir: Path, tmp_path: Path
) -> None:
    variants = [variant(built, tmp_path / tag, tag) for tag in ("a", "b", "c")]
    launcher = install_bundled_shim(str(bin_dir), source=variants[0])
    failures: list[str] = []
    runs = 0
    stop = threading.Event()

    def execute_repeatedly() -> None:
        nonlocal runs
        while not stop.is_set():
            done = subprocess.run(
                [str(launcher)], env={"CNI_COMMAND": "VERSION"}, capture_output=True, timeout=30, check=False
            )
            runs += 1
            if (done.returncode, done.stdout) != (0, VERSION_REPLY):
                failures.append(f"exit {done.returncode}: {done.stdout!r} {done.stderr!r}")

    runner = threading.Thread(target=execute_repeatedly, name="shim-runner")
    runner.start()
    try:
        for round_number in range(9):
            install_bundled_shim(str(bin_dir), source=variants[round_number % 3])
    finally:
        stop.set()
        runner.join(timeout=60)
    assert failures == []
    assert runs > 0


def snapshot(bin_dir: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(bin_dir)): b"<dir>" if path.is_dir() else path.read_bytes()
        for path in sorted(bin_dir.rglob("*"))
    }


@pytest.mark.parametrize("damage", ["missing-file", "altered-file", "no-manifest", "other-version"])
def test_an_incomplete_or_foreign_bundle_is_refused_and_the_old_install_stays(
    built: Path, bin_dir: Path, tmp_path: Path, damage: str
) -> None:
    launcher = install_bundled_shim(str(bin_dir), source=built)
    before = snapshot(bin_dir)
    broken = variant(built, tmp_path / "broken", "broken")
    manifest_path = broken / bundle.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    if damage == "missing-file":
        (broken / "lib" / "libc.so.6").unlink()
        expected = f"the bundle {broken} is incomplete: {broken}/lib/libc.so.6 is missing"
    elif damage == "altered-file":
        (broken / manifest["interpreter"]).write_bytes(b"\x7fELF truncated")
        expected = (
            f"the bundle {broken} is damaged: {broken}/{manifest['interpreter']} differs from its manifest"
        )
    elif damage == "no-manifest":
        manifest_path.unlink()
        expected = f"{broken} is not a shim bundle: {manifest_path} is missing"
    else:
        manifest["multusPy"] = "0.0.1"
        manifest_path.write_text(json.dumps(manifest))
        expected = f"the bundle {broken} is from multus-py '0.0.1', this installer is"
    with pytest.raises(bundle.BundleError) as refused:
        install_bundled_shim(str(bin_dir), source=broken)
    assert str(refused.value).startswith(expected)
    assert snapshot(bin_dir) == before
    assert hostless.run([str(launcher)], env={"CNI_COMMAND": "VERSION"}).stdout == VERSION_REPLY


def test_a_read_only_bin_dir_is_refused_by_multus_install_naming_it(built: Path, bin_dir: Path) -> None:
    launcher = install_bundled_shim(str(bin_dir), source=built)
    before = snapshot(bin_dir)
    repository = Path(bundle.__file__).parents[2]
    script = (
        f"mount --bind {bin_dir} {bin_dir} && mount -o remount,bind,ro {bin_dir} && "
        f"cd {repository} && exec {sys.executable} -m app.cli.install install "
        f"--cni-bin-dir {bin_dir} --cni-conf-dir {bin_dir}/conf --bundle {built}"
    )
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(
        f"multus-install: the CNI bin dir {bin_dir} is not writable (read-only file system?); "
        "the previous install is left as it was"
    )
    assert snapshot(bin_dir) == before
    assert hostless.run([str(launcher)], env={"CNI_COMMAND": "VERSION"}).stdout == VERSION_REPLY


FULL_DISK_SCRIPT = """
mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99
bin_dir="$2"; shift 2
for bundle in "$@"; do
    "$PYTHON" -m app.cli.install install --cni-bin-dir "$bin_dir" --cni-conf-dir "$bin_dir/conf" \\
        --bundle "$bundle" >/dev/null
    echo "exit $?" >&2
done
echo "listing:" $(ls -A "$bin_dir") >&2
CNI_COMMAND=VERSION "$bin_dir/multus-shim" 2>&1 || true
"""
"""Run as ``sh -c FULL_DISK_SCRIPT sh SIZE BIN_DIR BUNDLE...`` in a mount namespace of its own: installs
each bundle in turn into a tmpfs of SIZE, then lists the bin dir and asks the shim its version."""


def install_on_a_full_disk(bin_dir: Path, size: str, *bundles: Path) -> tuple[str, bytes]:
    """(stderr: the installers' errors, each one's exit, then the bin dir's listing; the shim's VERSION
    answer)."""
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", FULL_DISK_SCRIPT, "sh", size, str(bin_dir), *map(str, bundles)],
        capture_output=True,
        timeout=120,
        cwd=Path(bundle.__file__).parents[2],
        env={"PYTHON": sys.executable, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.decode(), done.stdout


def test_a_first_install_on_a_full_disk_is_refused_in_one_line_and_leaves_the_bin_dir_empty(
    built: Path, bin_dir: Path
) -> None:
    """The copy of the runtime went on through every file after the disk was full and raised all
    their errors as one list (a screen of text per file); and the refused first install left an empty
    ``.multus-shim.d`` and the install lock behind."""
    errors, _ = install_on_a_full_disk(bin_dir, "4m", built)
    files = json.loads((built / bundle.MANIFEST_NAME).read_text())["files"]
    size = sum(entry["size"] for entry in files.values())
    refusal, exit_status, listing = errors.splitlines()
    assert refusal.startswith(
        f"multus-install: cannot install the shim runtime into {bin_dir}/.multus-shim.d: "
    )
    assert "[Errno 28] No space left on device: " in refusal
    assert refusal.endswith(
        f"(the runtime takes {size / 2**20:.1f} MiB there); the previous install is left as it was"
    )
    assert (exit_status, listing) == ("exit 1", "listing:")  # the tmpfs was empty


def test_an_upgrade_on_a_full_disk_is_refused_and_the_previous_shim_runs_on(
    built: Path, bin_dir: Path, tmp_path: Path
) -> None:
    newer = variant(built, tmp_path / "newer", "newer")
    errors, version = install_on_a_full_disk(bin_dir, "14m", built, newer)
    installed, refusal, refused, listing = errors.splitlines()
    assert (installed, refused) == ("exit 0", "exit 1")
    assert refusal.startswith(
        f"multus-install: cannot install the shim runtime into {bin_dir}/.multus-shim.d: "
    )
    assert listing == "listing: .multus-install.lock .multus-shim.d multus-shim passthru"
    assert version == VERSION_REPLY


def longest_bin_dir(built: Path) -> int:
    """The longest bin dir path whose launcher line ``#!<runtime's interpreter> -ISXutf8`` still fits
    in the 256 bytes Linux reads of a script (newline included)."""
    manifest = bundle.read_manifest(built)
    runtime = bundle.runtime_name(manifest, "/")
    tail = f"/.multus-shim.d/{runtime}/{manifest['interpreter']}"
    return 256 - len(f"#!{tail} {bundle.SHEBANG_FLAGS}\n")


def test_a_bin_dir_at_the_longest_path_gets_a_launcher_that_runs(built: Path, tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="mshim-long-", dir="/tmp"))
    try:
        bin_dir = base / ("b" * (longest_bin_dir(built) - len(str(base)) - 1))
        bin_dir.mkdir()
        launcher = install_bundled_shim(str(bin_dir), source=built)
        assert len(launcher.read_bytes().split(b"\n")[0]) + 1 == 256
        assert hostless.run([str(launcher)], env={"CNI_COMMAND": "VERSION"}).stdout == VERSION_REPLY
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_bin_dir_path_too_long_for_the_launchers_first_line_is_refused_at_install(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A longer ``#!`` line has its flags cut off by the kernel (``-ISXutf8`` becomes ``-ISXutf``:
    no UTF-8 mode), or, longer still, fails to exec: on every CNI call. So the install refuses it,
    and leaves the bin dir as it was."""
    base = Path(tempfile.mkdtemp(prefix="mshim-long-", dir="/tmp"))
    try:
        bin_dir = base / ("b" * (longest_bin_dir(built) + 1 - len(str(base)) - 1))  # one too many
        bin_dir.mkdir()
        (bin_dir / "bridge").write_bytes(b"\x7fELF not ours")
        before = snapshot(bin_dir)
        argv = ["install", "--cni-bin-dir", str(bin_dir), "--cni-conf-dir", str(base / "conf")]
        assert install_cli.main([*argv, "--bundle", str(built)]) == 1
        error = capsys.readouterr().err
        assert error.startswith("multus-install: the shim's launcher could not run: its first line ")
        assert "would be 257 bytes, over the 256 bytes Linux reads" in error
        assert "a CNI bin dir whose path on the node is at least 1 bytes shorter" in error
        assert snapshot(bin_dir) == before
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize(
    ("release", "size"),
    [
        ("3.10.0-1160.el7.x86_64", 128),
        ("4.18.0-553.el8_10.x86_64", 128),
        ("5.0.21", 128),
        ("5.1.0", 256),
        ("5.15.0-1071-azure", 256),
        ("6.18.44-fc-v1272", 256),
        ("10.0", 256),
        ("not-a-version", 128),
    ],
)
def test_a_kernel_before_5_1_reads_128_bytes_of_a_script_to_find_its_interpreter(
    release: str, size: int
) -> None:
    assert bundle.shebang_limit(release) == size


OLD_KERNEL = "4.18.0-553.el8_10.x86_64"
OLD_KERNEL_REFUSAL = re.escape(f"over the 128 bytes this node's Linux {OLD_KERNEL} reads of a script")


def test_a_bin_dir_too_long_for_an_older_kernels_launcher_line_is_refused_at_install(
    built: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel before 5.1 reads 128 bytes of a script, not 256: a launcher line of 129 to 256 bytes
    passed the install there and then never started (its flags or interpreter cut off), at every
    pod's start. The installer asks the kernel it runs on, which is the node's."""
    monkeypatch.setattr(bundle, "kernel_release", lambda: OLD_KERNEL)
    base = Path(tempfile.mkdtemp(prefix="mshim-long-", dir="/tmp"))
    try:
        longest = longest_bin_dir(built) - (bundle.BINPRM_BUF_SIZE - bundle.BINPRM_BUF_SIZE_BEFORE_5_1)
        fits = base / ("f" * (longest - len(str(base)) - 1))
        too_long = base / ("b" * (longest + 1 - len(str(base)) - 1))
        for bin_dir in (fits, too_long):
            bin_dir.mkdir()
            (bin_dir / "bridge").write_bytes(b"\x7fELF not ours")
        before = snapshot(too_long)
        argv = ["install", "--cni-bin-dir", str(too_long), "--cni-conf-dir", str(base / "conf")]
        assert install_cli.main([*argv, "--bundle", str(built)]) == 1
        error = capsys.readouterr().err
        assert f"would be 129 bytes, over the 128 bytes this node's Linux {OLD_KERNEL} reads" in error
        assert "a CNI bin dir whose path on the node is at least 1 bytes shorter" in error
        assert snapshot(too_long) == before
        launcher = install_bundled_shim(str(fits), source=built)
        assert len(launcher.read_bytes().split(b"\n")[0]) + 1 == 128
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_interpreter_too_long_for_an_older_kernels_launcher_line_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.cli import launcher
    from app.shim.install import install_shim

    monkeypatch.setattr(bundle, "kernel_release", lambda: OLD_KERNEL)
    interpreter = "/opt/" + "p" * 120 + "/bin/python3"  # a 131-byte "#!... -IS" line
    with pytest.raises(ValueError, match=OLD_KERNEL_REFUSAL):
        install_shim(str(tmp_path), interpreter=interpreter)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(launcher.LauncherError, match=OLD_KERNEL_REFUSAL):
        launcher.launcher_text(interpreter, [])


def test_uninstall_removes_every_runtime_and_leaves_the_bin_dir_as_it_was(
    built: Path, bin_dir: Path, tmp_path: Path
) -> None:
    before = snapshot(bin_dir)
    install_bundled_shim(str(bin_dir), source=built)
    install_bundled_shim(str(bin_dir), source=variant(built, tmp_path / "b", "b"))
    assert len(runtimes(bin_dir)) == 2
    uninstall_shim(str(bin_dir))
    assert snapshot(bin_dir) == before


def test_multus_install_builds_and_installs_a_bundle_from_the_command_line(
    bin_dir: Path, tmp_path: Path
) -> None:
    repository = Path(bundle.__file__).parents[2]
    output = tmp_path / "built"

    def multus_install(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "app.cli.install", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=repository)

    built = multus_install("bundle", "--output", str(output))
    assert built.returncode == 0, built.stderr
    bundle.check_bundle(output)
    installed = multus_install(
        "install", "--cni-bin-dir", str(bin_dir), "--cni-conf-dir", str(tmp_path), "--bundle", str(output)
    )
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout == f"installed {bin_dir}/multus-shim\ninstalled {bin_dir}/passthru\n"
    launcher = bin_dir / "multus-shim"
    assert launcher.read_text().startswith(f"#!{bin_dir}/.multus-shim.d/runtime-")
    assert hostless.run([str(launcher)], env={"CNI_COMMAND": "VERSION"}).stdout == VERSION_REPLY


def test_reinstalling_the_same_bundle_leaves_the_installed_runtime_untouched(
    built: Path, bin_dir: Path
) -> None:
    launcher = install_bundled_shim(str(bin_dir), source=built)
    runtime = bin_dir / ".multus-shim.d" / str(runtime_of(launcher))
    inodes = {path: path.stat().st_ino for path in runtime.rglob("*")}
    again = install_bundled_shim(str(bin_dir), source=built)
    assert runtime_of(again) == runtime.name
    assert {path: path.stat().st_ino for path in runtime.rglob("*")} == inodes  # nothing rewritten
    assert runtimes(bin_dir) == [runtime.name]


BUNDLE_REPORT = """
import sys
import multus_shim_impl
dynload = [entry for entry in sys.path if entry.endswith("/lib-dynload")]
print(repr({
    "searched": any(entry in sys.path_importer_cache for entry in dynload),
    "files": sorted(module.__file__ for module in (multus_shim_impl._json, multus_shim_impl._socket,
                    multus_shim_impl.binascii) if hasattr(module, "__file__")),
}))
"""


def test_the_runtime_loads_the_c_modules_it_carries_without_the_import_search(
    built: Path, bin_dir: Path
) -> None:
    launcher = install_bundled_shim(str(bin_dir), source=built)
    runtime = bin_dir / ".multus-shim.d" / str(runtime_of(launcher))
    manifest = json.loads((runtime / bundle.MANIFEST_NAME).read_text())
    carried = sorted(
        str(runtime / name) for name in manifest["files"] if name.endswith(".so") and "/lib-dynload/" in name
    )
    interpreter = str(runtime / manifest["interpreter"])
    done = subprocess.run(
        [interpreter, bundle.SHEBANG_FLAGS, "-X", "importtime", "-c", BUNDLE_REPORT],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert ast.literal_eval(done.stdout) == {"searched": False, "files": carried}
    through_importlib = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", done.stderr, re.MULTILINE)
    assert "multus_shim_impl" in through_importlib
    assert not {"_json", "_socket", "binascii"} & set(through_importlib)


CODEC_REPORT = """
import codecs, sys
answers = {}
for name in sys.argv[1:]:
    try:
        answers[name] = codecs.lookup(name).name
    except LookupError:
        answers[name] = None
print(repr(answers))
"""


def codec_answers(interpreter: str, names: list[str]) -> dict[str, str | None]:
    done = subprocess.run(
        [interpreter, bundle.SHEBANG_FLAGS, "-c", CODEC_REPORT, *names],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answers: dict[str, str | None] = ast.literal_eval(done.stdout)
    return answers


def test_the_runtimes_codec_lookups_answer_utf_8_where_the_whole_standard_library_does(built: Path) -> None:
    """Every name that finds UTF-8 with the interpreter's own ``encodings`` (its every alias, spelt in
    the ways the lookup normalizes) finds it in the runtime; every other name finds nothing there."""
    manifest = json.loads((built / bundle.MANIFEST_NAME).read_text())
    full = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import encodings.aliases as a; print(repr(a.aliases))"],
        capture_output=True,
        text=True,
        check=True,
    )
    table = ast.literal_eval(full.stdout)
    spellings = [f(alias) for alias in table for f in (str, str.upper, lambda a: a.replace("_", "-"))]
    names = [*spellings, "utf-8", "UTF8", "utf_8", " utf 8 ", "utf.8", "u.8", "utf-8-sig", "latin_1"]
    names += ["ascii", "cp1252", "no-such-codec", "utf--8", "ütf-8"]
    expected = {
        name: "utf-8" if answer == "utf-8" else None
        for name, answer in codec_answers(sys.executable, names).items()
    }
    assert {name for name, answer in expected.items() if answer} >= {"u8", "UTF8", "cp65001", "utf-8"}
    assert codec_answers(str(built / manifest["interpreter"]), names) == expected


STDIO_REPORT = """
import sys
text = sys.stdin.read()
sys.stdout.write(text[::-1])
sys.stdout.flush()
sys.stderr.write("\\udcff")
print(repr(sorted(name for name in sys.modules if "codec" in name or "encodings" in name)), file=sys.stderr)
"""


@pytest.mark.parametrize("seekable", [False, True], ids=["a pipe", "a file"])
def test_the_runtimes_stdio_read_and_write_utf_8_as_the_standard_codec_does(
    built: Path, seekable: bool
) -> None:
    """Text read from stdin in pieces (a sequence cut between two reads waits for its rest; a file
    is read with the decoder's state taken for ``tell``), written to stdout, and an unencodable
    character escaped on stderr: the incremental codec the runtime's ``encodings`` gives ``io``."""
    manifest = json.loads((built / bundle.MANIFEST_NAME).read_text())
    text = "é€😀 plain ASCII 🐧" * 5000  # more than one read of the text layer
    data = text.encode()
    with tempfile.TemporaryFile() as input_file:
        input_file.write(data)
        input_file.seek(0)
        done = subprocess.run(
            [str(built / manifest["interpreter"]), bundle.SHEBANG_FLAGS, "-c", STDIO_REPORT],
            stdin=input_file if seekable else None,
            input=None if seekable else data,
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == text[::-1]
    escaped, _, modules = done.stderr.partition(b"[")
    assert escaped == b"\\udcff"
    assert ast.literal_eval("[" + modules.decode()) == ["_codecs", "encodings"]  # no codecs, no aliases


def test_reinstalling_for_another_node_path_leaves_the_runtime_the_launcher_names_untouched(
    built: Path, bin_dir: Path
) -> None:
    """The same bundle patched for another node path (the bin dir reached through a symlink, say) is a
    different runtime: the one the current launcher names (and a shim started a moment ago runs from)
    was set aside and deleted under it, then replaced by a copy of the same name."""
    alias = Path(tempfile.mkdtemp(prefix="mshim-alias-", dir="/tmp"))
    try:
        (alias / "bin").symlink_to(bin_dir)
        first = install_bundled_shim(str(bin_dir), host_bin_dir=f"{alias}/bin", source=built)
        old_text = first.read_bytes()
        runtime_a = bin_dir / ".multus-shim.d" / str(runtime_of(first))
        inodes = {path: path.stat().st_ino for path in runtime_a.rglob("*")}
        install_bundled_shim(str(bin_dir), host_bin_dir=str(bin_dir), source=built)
        assert {path: path.stat().st_ino for path in runtime_a.rglob("*")} == inodes  # kept, untouched
        assert runtime_of(first) != runtime_a.name
        assert runtimes(bin_dir) == sorted([runtime_a.name, str(runtime_of(first))])
        (alias / "old-launcher").write_bytes(old_text)  # what a shim exec'd just before read
        (alias / "old-launcher").chmod(0o755)
        for launcher in (alias / "old-launcher", first):
            done = subprocess.run(
                [str(launcher)], env={"CNI_COMMAND": "VERSION"}, capture_output=True, timeout=30
            )
            assert (done.returncode, done.stdout) == (0, VERSION_REPLY), done.stderr
    finally:
        shutil.rmtree(alias, ignore_errors=True)


class Killed(BaseException):
    """The installer stopping dead where it stands (kill -9)."""


def test_a_runtime_removal_cut_short_by_a_kill_is_not_reused_by_a_later_install(
    built: Path, bin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removing an old runtime deleted its files in place: a kill -9 in the middle left a directory
    with its ``installed.json`` but without some libraries, and installing that version again (a
    rollback) reused it as complete and switched the launcher to a runtime that cannot start."""
    variants = [variant(built, tmp_path / tag, tag) for tag in ("a", "b", "c")]
    launcher = install_bundled_shim(str(bin_dir), source=variants[0])
    runtime_a = str(runtime_of(launcher))
    install_bundled_shim(str(bin_dir), source=variants[1])
    real_rmtree = shutil.rmtree

    def killed_midway(path: str | Path, *args: object, **kwargs: object) -> None:
        if runtime_a in str(path):
            (Path(path) / "lib" / "libc.so.6").unlink()
            raise Killed
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "rmtree", killed_midway)  # the module bundle deletes with
    with pytest.raises(Killed):
        install_bundled_shim(str(bin_dir), source=variants[2])  # removes runtime a: killed there
    monkeypatch.undo()
    install_bundled_shim(str(bin_dir), source=variants[0])  # the rollback
    assert runtime_of(launcher) == runtime_a
    done = hostless.run([str(launcher)], env={"CNI_COMMAND": "VERSION"})
    assert (done.returncode, done.stdout) == (0, VERSION_REPLY), done.stderr


def test_a_library_path_in_the_runtimes_environment_does_not_replace_the_runtimes_libraries(
    built: Path, bin_dir: Path, daemon: StubDaemon, tmp_path: Path
) -> None:
    """The runtime passes its own environment on to CNI plugins; one started with ``LD_LIBRARY_PATH``
    (a snap-packaged containerd, say) made the loader take that directory's ``libc.so.6`` before the
    runtime's own (RUNPATH comes after LD_LIBRARY_PATH): the shim died before Python started."""
    launcher = install_bundled_shim(str(bin_dir), source=built)
    foreign = tmp_path / "foreign-libs"
    foreign.mkdir()
    libraries = sorted((built / "lib").glob("lib*.so*"))
    for soname in {
        "libc.so.6",
        "libm.so.6",
        *(path.name for path in libraries),
    }:  # another one under each name
        other = next(path for path in libraries if path.name != soname)
        shutil.copyfile(other, foreign / soname)
    env = {**BASE_ENV, "LD_LIBRARY_PATH": str(foreign)}
    version = hostless.run([str(launcher)], env={"CNI_COMMAND": "VERSION", "LD_LIBRARY_PATH": str(foreign)})
    assert (version.returncode, version.stdout, version.stderr) == (0, VERSION_REPLY, b"")
    daemon.replies = [json_reply(200, RESULT)]
    added = hostless.run([str(launcher)], env=env, stdin=conf_bytes(daemon.socket_dir))
    assert (added.returncode, added.stderr) == (0, b"")
    assert json.loads(added.stdout)["ips"] == [{"address": "10.0.0.2/8"}]
