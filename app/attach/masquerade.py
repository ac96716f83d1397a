"""The masquerade rules a ``bridge`` or ``ptp`` delegate leaves on the host when its DEL cannot see the pod.

With ``"ipMasq": true`` those reference plugins add, at ADD, a nat chain named after the network and
the container (``CNI-`` and the first 24 hex digits of SHA-512 of name + container ID) and, per pod
address, a ``POSTROUTING`` rule ``-s <address> -j <chain>``, each commented
``name: "<network>" id: "<container ID>"``. Their DEL removes them only for the addresses it finds on
the pod's interface: a DEL run while the namespace is gone (a DEL the shim spooled, replayed after
the runtime removed the namespace; a GC of an orphan whose namespace went), without one, or with
the namespace there but the pod's interface gone from it (deleted by hand, or taken with its host
end) returns success and leaves the chain and its rules on the host for good, where they
masquerade whichever pod is given that address next.

The teardown (``app.attach.teardown``) calls ``remove`` after such a DEL succeeded, having looked
before it whether the plugin would see the interface (a look into the namespace, for masquerading
delegates only; a DEL that entered the namespace and found the interface has the plugin remove
them itself). It deletes what the
plugin would have deleted (``iptables --wait -t nat -D POSTROUTING -s <address> -j <chain> -m
comment --comment <comment>``, then ``-F`` and ``-X`` of the chain; ``ip6tables`` for IPv6, an
IPv4-mapped address taken as the IPv4 one, as Go takes it; ``--wait`` for the xtables lock, as the
plugins' library waits), with the ``iptables`` of the root the plugin ran in (``chrootDir``: the
node's, whose backend, nft or legacy, holds the rules), found on the plugins' ``PATH``. Rules and
chains already gone are no error; a removal that fails otherwise is logged, and the DEL stays
done: the rules are the plugin's, and a DEL must terminate (invariant 5b).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from app import rootpath
from app.cni import invoke
from app.cni.types import JsonObject, NetworkConfigList

log = logging.getLogger(__name__)

MASQUERADING_PLUGINS = frozenset({"bridge", "ptp"})
SEARCH_PATH = tuple(invoke.DEFAULT_BASE_ENV["PATH"].split(":"))
"""Where ``iptables`` is looked for unless the caller says: the ``PATH`` plugins are given by
default (``invoke.DEFAULT_BASE_ENV``; the engine passes the one its plugins get)."""
RULE_MISSING = (1, 2)
"""``iptables`` exit statuses for a rule or chain that does not exist (2 for ``-D`` of a rule
whose chain is gone, 1 otherwise): the removal is already done."""
COMMAND_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class MasqueradeChain:
    """What one masquerading plugin of a delegate added on the host at ADD."""

    chain: str
    comment: str
    addresses: tuple[str, ...]


def chain_name(network: str, container_id: str) -> str:
    """The chain the reference plugins name after a network and a container (``FormatChainName``)."""
    return "CNI-" + hashlib.sha512(f"{network}{container_id}".encode()).hexdigest()[:24]


def comment(network: str, container_id: str) -> str:
    """The comment of their rules (``FormatComment``; network names and container IDs need no escape)."""
    return f'name: "{network}" id: "{container_id}"'


def masquerading(net: NetworkConfigList) -> bool:
    """True when a plugin of ``net`` masquerades its pods' traffic (``bridge`` or ``ptp``, ``ipMasq``)."""
    return any(
        plugin.get("type") in MASQUERADING_PLUGINS and plugin.get("ipMasq") is True for plugin in net.plugins
    )


def chains(net: NetworkConfigList, *, container_id: str, result: JsonObject | None) -> list[MasqueradeChain]:
    """The chains ``net``'s masquerading plugins added for ``container_id``, with the addresses of
    the ADD's ``result`` (the plugins' rules are per pod address); none without a result, since an
    ADD that printed none gave the plugin no address to masquerade for that we could know."""
    if not masquerading(net) or not isinstance(result, dict):
        return []
    addresses: list[str] = []
    for entry in result.get("ips") or ():
        address = entry.get("address") if isinstance(entry, dict) else None
        if not isinstance(address, str):
            continue
        try:
            ip = ipaddress.ip_interface(address).ip
        except ValueError:
            continue
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        addresses.append(str(mapped or ip))  # Go takes ::ffff:a.b.c.d for a.b.c.d (iptables, not ip6tables)
    if not addresses:
        return []
    return [
        MasqueradeChain(chain_name(net.name, container_id), comment(net.name, container_id), tuple(addresses))
    ]


def find_iptables(root: str, *, ipv6: bool, search_path: Sequence[str] = SEARCH_PATH) -> str | None:
    """The path (inside ``root``) of ``iptables`` or ``ip6tables`` on the plugins' ``PATH``
    (``search_path``), if any: an executable file once its symlinks are followed inside ``root``,
    as ``exec`` in the root follows them (a host's ``/usr/sbin/iptables`` is an absolute link to
    ``/etc/alternatives``): the one the masquerading plugin ran."""
    name = "ip6tables" if ipv6 else "iptables"
    for directory in search_path:
        path = f"{directory}/{name}"
        found = rootpath.resolve(root, path)
        if found is not None and os.path.isfile(found) and os.access(found, os.X_OK):
            return path
    return None


def _commands(found: MasqueradeChain, *, ipv6: bool) -> list[list[str]]:
    family = [address for address in found.addresses if (":" in address) is ipv6]
    if not family:
        return []
    rules = [
        [
            "--wait",
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-s",
            address,
            "-j",
            found.chain,
            "-m",
            "comment",
            "--comment",
            found.comment,
        ]
        for address in family
    ]
    return [*rules, ["--wait", "-t", "nat", "-F", found.chain], ["--wait", "-t", "nat", "-X", found.chain]]


def _run_blocking(argv: Sequence[str], *, root: str, env: Mapping[str, str]) -> tuple[int, str]:
    completed = subprocess.run(
        argv,
        env=dict(env),
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
        preexec_fn=partial(invoke.enter_root, os.fsencode(root)) if root else None,
        check=False,
    )
    return completed.returncode, completed.stderr.decode(errors="replace").strip()


async def remove(
    found: Sequence[MasqueradeChain],
    *,
    root: str,
    context: Mapping[str, str],
    search_path: Sequence[str] = SEARCH_PATH,
) -> list[str]:
    """Delete the rules and chains of ``found`` in ``root`` ("" the daemon's own), with the
    ``iptables`` found on ``search_path`` (the plugins' ``PATH``); the failures, as text (each also
    logged). A rule or chain already gone is no failure."""
    failures: list[str] = []
    env = {"PATH": ":".join(search_path)}
    for ipv6 in (False, True):
        commands = [command for chain in found for command in _commands(chain, ipv6=ipv6)]
        if not commands:
            continue
        program = find_iptables(root, ipv6=ipv6, search_path=search_path)
        if program is None:
            failures.append(f"{'ip6tables' if ipv6 else 'iptables'} not found in {root or '/'}")
            continue
        for command in commands:
            try:
                status, stderr = await asyncio.to_thread(
                    _run_blocking, [program, *command], root=root, env=env
                )
            except (OSError, subprocess.SubprocessError) as err:
                status, stderr = -1, str(err)
            if status != 0 and not (status in RULE_MISSING and _says_missing(stderr)):
                failures.append(f"{program} {' '.join(command)}: exit status {status}: {stderr}")
    for failure in failures:
        log.warning(
            "masquerade rules of a DEL that could not see the pod not removed: %s",
            failure,
            extra=dict(context),
        )
    return failures


def _says_missing(stderr: str) -> bool:
    """``iptables``' words for a rule, chain or target that does not exist (both backends: the
    legacy one says ``Couldn't load target `<chain>':No such file or directory`` for a ``-j`` to a
    chain that is gone, nft's ``Chain '<chain>' does not exist``)."""
    lowered = stderr.lower()
    return any(
        words in lowered
        for words in ("does not exist", "no chain/target/match by that name", "bad rule", "doesn't exist")
    ) or ("couldn't load target" in lowered and "no such file or directory" in lowered)
