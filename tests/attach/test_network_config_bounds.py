"""Bounds on what one network's configuration may be: a NAD's ``spec.config`` and conflist, a conf file.

Parse-level: ``nad_config`` on strings, and the resolver on real conf files in a temporary
directory (static mode); nothing is executed.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import pytest

from app.attach import nad_config
from app.attach.networks import MAX_CONF_FILE_BYTES, NetworkResolver
from app.cni import conf as cniconf
from app.cni.types import CniError, ErrorCode
from tests.attach.test_static_resolution import request


def padded_config(size: int) -> str:
    """A valid bridge config of exactly ``size`` characters."""
    bare = json.dumps({"cniVersion": "1.0.0", "type": "bridge", "pad": ""})
    return json.dumps({"cniVersion": "1.0.0", "type": "bridge", "pad": "x" * (size - len(bare))})


def test_a_spec_config_of_the_bound_is_taken() -> None:
    config = padded_config(nad_config.MAX_CONFIG_BYTES)

    assert nad_config.nad_network_config("big", config, namespace="ns") != b""


def test_a_spec_config_past_the_bound_is_refused_naming_the_nad_the_field_and_the_bound() -> None:
    config = padded_config(nad_config.MAX_CONFIG_BYTES + 1)

    with pytest.raises(CniError) as caught:
        nad_config.nad_network_config("big", config, namespace="ns")

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg == (
        f"network-attachment-definition ns/big: spec.config is {nad_config.MAX_CONFIG_BYTES + 1} bytes; "
        f"a network's configuration may be at most {nad_config.MAX_CONFIG_BYTES} bytes"
    )


def test_a_spec_config_whose_utf8_is_past_the_bound_is_refused() -> None:
    """Its characters are within the bound, its bytes (what is recorded) are not."""
    bare = json.dumps({"cniVersion": "1.0.0", "type": "bridge", "pad": ""}, ensure_ascii=False)
    config = json.dumps(
        {"cniVersion": "1.0.0", "type": "bridge", "pad": "é" * (nad_config.MAX_CONFIG_BYTES - len(bare))},
        ensure_ascii=False,
    )
    assert len(config) <= nad_config.MAX_CONFIG_BYTES

    with pytest.raises(CniError, match=r"spec\.config is 26"):
        nad_config.nad_network_config("big", config, namespace="ns")


def test_a_huge_spec_config_is_refused_without_being_parsed_or_copied() -> None:
    """1.4 MiB (etcd takes it) was encoded and parsed: several times its size in memory."""
    config = padded_config(1400 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(CniError, match=r"spec\.config is 1433600 bytes"):
            nad_config.nad_network_config("big", config, namespace="ns")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_a_conflist_of_more_plugins_than_the_bound_is_refused_naming_the_nad_and_the_bound() -> None:
    plugins = [{"type": "tuning"}] * (nad_config.MAX_PLUGINS + 1)
    config = json.dumps({"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}, *plugins[1:]]})

    with pytest.raises(CniError) as caught:
        nad_config.nad_network_config("chain", config, namespace="ns")

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg == (
        f'network-attachment-definition ns/chain: "plugins" holds {nad_config.MAX_PLUGINS + 1} plugins; '
        f"a network may chain at most {nad_config.MAX_PLUGINS}"
    )


def test_a_conflist_of_the_bound_is_taken() -> None:
    config = json.dumps({"cniVersion": "1.0.0", "plugins": [{"type": "tuning"}] * nad_config.MAX_PLUGINS})

    assert nad_config.nad_network_config("chain", config, namespace="ns")


async def test_a_conf_file_past_the_bound_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A huge conf file was read whole on the event loop (and parsed) on every ADD it failed."""
    huge = tmp_path / "10-huge.conf"
    with huge.open("wb") as handle:
        handle.truncate(MAX_CONF_FILE_BYTES + 1)  # sparse: no data to read
    huge.chmod(0o000)  # were it opened, the error would be "cannot read" (root: still refused below)

    with pytest.raises(CniError) as caught:
        await NetworkResolver().resolve(request(tmp_path, str(huge), ()))

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg == (
        f"network configuration {huge} is {MAX_CONF_FILE_BYTES + 1} bytes; "
        f"a conf file may be at most {MAX_CONF_FILE_BYTES} bytes"
    )


async def test_a_conflist_of_more_plugins_than_the_bound_in_a_conf_file_is_refused(tmp_path: Path) -> None:
    chain = {"cniVersion": "1.0.0", "name": "long", "plugins": [{"type": "tuning"}] * 65}
    (tmp_path / "10-long.conflist").write_text(json.dumps(chain))

    with pytest.raises(CniError) as caught:
        await NetworkResolver().resolve(request(tmp_path, "long", ()))

    assert caught.value.msg.startswith('network "long": "plugins" holds 65 plugins')


async def test_an_unchanged_broken_conf_file_is_not_read_again(tmp_path: Path) -> None:
    """It was read and parsed again on every ADD (only loaded lists were cached)."""
    broken = tmp_path / "10-primary.conf"
    broken.write_text('{"name": "primary", "type": ' + " " * 100)
    resolver = NetworkResolver()
    with pytest.raises(CniError, match="error parsing configuration"):
        await resolver.resolve(request(tmp_path, str(broken), ()))
    stamp = broken.stat()
    valid = json.dumps({"cniVersion": "1.0.0", "name": "p", "type": "x"})
    broken.write_text(valid + " " * (stamp.st_size - len(valid)))  # same size and mtime: unchanged
    os.utime(broken, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))

    with pytest.raises(CniError, match="error parsing configuration"):
        await resolver.resolve(request(tmp_path, str(broken), ()))


def test_the_load_cache_keeps_small_configurations_but_not_large_ones() -> None:
    """128 distinct NADs of 128 KiB (about 1 MiB each once parsed) were kept for the daemon's life."""
    small = json.dumps({"cniVersion": "1.0.0", "name": "small", "type": "bridge"}).encode()
    large = padded_config(64 * 1024).replace('"type"', '"name": "large", "type"', 1).encode()

    assert cniconf.load_network_list(small, source="s") is cniconf.load_network_list(small, source="s")
    assert cniconf.load_network_list(large, source="l") is not cniconf.load_network_list(large, source="l")
