"""The masquerade rules a DEL that could not see the pod left are removed with the host root's iptables.

``app.attach.masquerade`` runs ``iptables`` (``ip6tables``) inside the root the plugin ran in
(``chrootDir``), since that root's backend holds the plugin's rules. Here the host root
(``tests/hostroot.py``) has a ``/usr/local/sbin`` of its own whose ``iptables`` and ``ip6tables``
are the legacy backend's, reached by absolute symlinks that lead through a directory only the root
has, while the machine's own ``iptables`` is nft's: the rules are made as a masquerading ``bridge``
makes them, in the legacy tables, and must go from there.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.attach import masquerade
from tests.hostroot import HostRoot, host_root

ADDRESSES = {
    "iptables": ("192.0.2.7", "192.0.2.0/24", "224.0.0.0/4"),
    "ip6tables": ("2001:db8::7", "2001:db8::/64", "ff00::/8"),
}
"""Per command: the pod's address, its network, and the multicast the plugin does not masquerade."""


def _legacy(command: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [f"{command}-legacy", "-w", "-t", "nat", *args], check=check, capture_output=True, text=True
    )


def _legacy_nat_rules(command: str) -> str:
    return _legacy(command, "-S").stdout


@pytest.fixture
def legacy_root(tmp_path: Path) -> Iterator[HostRoot]:
    """A host root whose ``iptables`` and ``ip6tables`` are the legacy backend's, found by the
    plugins' ``PATH`` in its own ``/usr/local/sbin`` through a directory only the root has."""
    with host_root(tmp_path, private=("/usr/local/sbin", "/run")) as root:
        own = f"/opt/multus-py-{secrets.token_hex(4)}/sbin"
        for command in ADDRESSES:
            root.symlink(f"/usr/local/sbin/{command}", f"{own}/{command}")
            root.symlink(f"{own}/{command}", f"/usr/sbin/{command}-legacy")
        yield root


@pytest.fixture
def legacy_chain() -> Iterator[masquerade.MasqueradeChain]:
    """A chain and ``POSTROUTING`` rules per family in the legacy nat tables, as a masquerading
    ``bridge`` adds them for a pod; whatever a failing test left is removed."""
    network, container_id = "masq0", secrets.token_hex(32)
    found = masquerade.MasqueradeChain(
        masquerade.chain_name(network, container_id),
        masquerade.comment(network, container_id),
        tuple(address for address, _, _ in ADDRESSES.values()),
    )
    yield found
    for command in ADDRESSES:
        for rule in _legacy_nat_rules(command).splitlines():
            if rule.startswith("-A POSTROUTING") and found.chain in rule:
                _legacy(command, *shlex.split(rule.replace("-A", "-D", 1)), check=False)
        _legacy(command, "-F", found.chain, check=False)
        _legacy(command, "-X", found.chain, check=False)


def _add_as_the_plugin_does(found: masquerade.MasqueradeChain) -> None:
    for command, (address, network, multicast) in ADDRESSES.items():
        tag = ("-m", "comment", "--comment", found.comment)
        _legacy(command, "-N", found.chain)
        _legacy(command, "-A", found.chain, "-d", network, "-j", "ACCEPT", *tag)
        _legacy(command, "-A", found.chain, "!", "-d", multicast, "-j", "MASQUERADE", *tag)
        _legacy(command, "-A", "POSTROUTING", "-s", address, "-j", found.chain, *tag)
        assert f"-j {found.chain}" in _legacy_nat_rules(command)


def test_the_rules_go_from_the_backend_of_the_roots_own_iptables(
    legacy_root: HostRoot, legacy_chain: masquerade.MasqueradeChain
) -> None:
    """Its ``iptables`` is an absolute symlink to be followed inside the root: followed in the
    daemon's root instead, it leads nowhere, and the machine's nft ``iptables`` would be run."""
    _add_as_the_plugin_does(legacy_chain)

    failures = asyncio.run(masquerade.remove([legacy_chain], root=legacy_root.chroot_dir, context={}))

    for command in ADDRESSES:
        assert legacy_chain.chain not in _legacy_nat_rules(command), (
            f"{command}: the chain and its rule are gone"
        )
    assert failures == []


def test_removing_them_again_is_no_failure_with_the_legacy_backend(
    legacy_root: HostRoot, legacy_chain: masquerade.MasqueradeChain
) -> None:
    """A teardown left pending by another delegate removes them again on its retry: the legacy
    backend says its chain is gone in words of its own (``Couldn't load target``)."""
    _add_as_the_plugin_does(legacy_chain)
    assert asyncio.run(masquerade.remove([legacy_chain], root=legacy_root.chroot_dir, context={})) == []

    assert asyncio.run(masquerade.remove([legacy_chain], root=legacy_root.chroot_dir, context={})) == []
