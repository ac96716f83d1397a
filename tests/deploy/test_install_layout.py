"""Where ``multus-install`` puts the shim and the conf when not told: the daemon-config's own dirs.

``--cni-conf-dir`` defaulted to the daemon-config's ``cniConfigDir`` but ``--cni-bin-dir`` to
``/opt/cni/bin`` whatever its ``binDir`` said, so an operator who moved ``binDir`` (k3s keeps its
plugins elsewhere) got a shim in a directory the runtime never looks in.
"""

from __future__ import annotations

import json
from pathlib import Path

from app import settings as settings_module
from app.cli import install


def _layout(tmp_path: Path, config: dict[str, object], *extra: str) -> install.Layout:
    path = tmp_path / "daemon-config.json"
    path.write_text(json.dumps(config))
    args = install.parse_args(
        ["install", "--host-root", str(tmp_path / "host"), "--daemon-config", str(path), *extra]
    )
    return install.layout_from(args, settings_module.load(path))


def test_the_shim_goes_into_the_daemon_configs_bin_dir_under_the_host_root(tmp_path: Path) -> None:
    layout = _layout(tmp_path, {"binDir": "/var/lib/rancher/k3s/data/cni", "cniConfigDir": "/etc/cni/k3s.d"})
    assert layout.bin_dir == tmp_path / "host/var/lib/rancher/k3s/data/cni"
    assert layout.conf_dir == tmp_path / "host/etc/cni/k3s.d"


def test_a_bin_dir_named_on_the_command_line_wins_over_the_daemon_config(tmp_path: Path) -> None:
    layout = _layout(tmp_path, {"binDir": "/var/lib/cni/bin"}, "--cni-bin-dir", str(tmp_path / "elsewhere"))
    assert layout.bin_dir == tmp_path / "elsewhere"


def test_without_a_daemon_config_the_bin_dir_is_opt_cni_bin(tmp_path: Path) -> None:
    args = install.parse_args(["install", "--host-root", str(tmp_path)])
    assert install.layout_from(args, None).bin_dir == tmp_path / "opt/cni/bin"
