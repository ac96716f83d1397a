#!/usr/bin/env bash
# multus-py developer entry point. Run as root on Debian (12 or newer).
#   ./dev.sh demo    install what is missing, then run the demo (daemon + shim + a pod netns)
#   ./dev.sh test    install what is missing, then run the linters and the whole test suite
#   ./dev.sh bench   install what is missing, then run the benchmarks
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

VENV=.venv
PY="$VENV/bin/python"

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "dev.sh: run as root (network namespaces, bridges and CNI plugins need it)" >&2
        exit 1
    fi
}

install_system_packages() {
    local missing=()
    [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v readelf >/dev/null 2>&1 || missing+=(binutils)  # the shim runtime tests read ELF headers
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
    command -v containerd >/dev/null 2>&1 || missing+=(containerd)  # tests/cri: a real runtime
    command -v runc >/dev/null 2>&1 || missing+=(runc)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "dev.sh: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q "${missing[@]}"
    fi
}

install_python_package() {
    local extras="$1"
    if [ ! -x "$PY" ]; then
        python3 -m venv "$VENV"
    fi
    local stamp="$VENV/.installed-$extras"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$PY" -m pip install -q --disable-pip-version-check -e ".[$extras]"
        touch "$stamp"
    fi
    # Byte-compiled, as an installed package is (the editable install is not; with
    # PYTHONDONTWRITEBYTECODE set, every daemon or multusctl process would compile its modules
    # again at each start: about 0.16 s of CPU per daemon start). Quick when nothing changed.
    "$PY" -m compileall -q app >/dev/null
}

run_tests() {
    "$PY" -m ruff check app tests bench migrations
    "$PY" -m ruff format --check app tests bench migrations
    "$PY" -m mypy
    "$VENV/bin/lint-imports"
    local rc=0
    "$PY" -m pytest -q "$@" || rc=$?
    if [ "$rc" = 5 ]; then
        echo "dev.sh: pytest collected no tests" >&2
        rc=0
    fi
    return "$rc"
}

case "${1:-}" in
    demo)
        need_root; install_system_packages; install_python_package test
        shift; exec "$PY" -m app.demo "$@" ;;
    test)
        need_root; install_system_packages; install_python_package test
        shift; run_tests "$@" ;;
    bench)
        need_root; install_system_packages; install_python_package test
        shift; exec "$PY" -m bench "$@" ;;
    *)
        echo "usage: ./dev.sh demo | test [pytest args] | bench [args]" >&2
        exit 2 ;;
esac
