"""Finding the cluster and opening the one API client the daemon uses.

Called once by ``app.daemon`` at start-up: ``find_access`` decides, without importing
kubernetes_asyncio, how to reach the API server, in this order: the daemon-config ``kubeconfig``
key, the ``KUBECONFIG`` environment variable, the pod's in-cluster service account; ``None`` means
static mode (no Kubernetes: no NADs, no network-status). ``connect`` then imports the few
modules of kubernetes_asyncio it uses (``app.watch.lean_import``: paid only when a cluster is
configured, the kubeconfig loader only for a kubeconfig) and returns a ``KubeApi``. There is
deliberately no client-side rate limit (client-go's QPS 50 / burst 50 throttled every Multus ADD);
the event poster paces itself separately. Never reads the environment on its own: the caller
passes it in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from app.watch import lean_import
from app.watch.api import KubeApi
from app.watch.errors import KubeConfigError
from app.watch.settings import WatchSettings

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient, Configuration

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
USER_AGENT = "multus-py"
READ_BUFFER_SIZE = 2**21
"""The session's read buffer, as kubernetes_asyncio sizes it (watch lines of large objects)."""
TOKEN_REFRESH_SECONDS = 60.0
"""How often the bearer token is read again (a kubeconfig's ``tokenFile`` or the file itself, which
an entrypoint may rewrite; the service account's token file, which the kubelet rotates): bound
service-account tokens expire, and the library reads a kubeconfig once. client-go re-reads them
each minute too, and keeps the token it has when a read fails."""


@dataclass(frozen=True, slots=True)
class ClusterAccess:
    """How to reach the API server: a kubeconfig (one path or a ``:``-separated list), or in-cluster."""

    kubeconfig: str | None
    """None: the in-cluster service account."""
    source: str
    """Where this came from, for logs: ``daemon-config kubeconfig``, ``KUBECONFIG``, ``in-cluster``."""
    service_host: str = ""
    """In-cluster only: ``KUBERNETES_SERVICE_HOST`` and ``_PORT`` as found."""
    service_port: str = ""
    token_path: str = f"{SERVICE_ACCOUNT_DIR}/token"
    ca_path: str = f"{SERVICE_ACCOUNT_DIR}/ca.crt"


def find_access(
    *, kubeconfig: str, environ: Mapping[str, str], service_account_dir: str = SERVICE_ACCOUNT_DIR
) -> ClusterAccess | None:
    """The first configured way to reach the cluster, or None for static mode.

    A kubeconfig that is named but does not exist is an error (``KubeConfigError``), not static
    mode: silently running without the cluster would attach pods without their networks. Except
    the daemon-config's, when the pod's service account is there: upstream's thick daemon ignores
    that key and always uses the service account, so a daemon-config carried over from a thin
    plugin's set-up names a kubeconfig of the host that the daemon's pod does not mount; it is
    then passed over for the service account, with a warning, as upstream would use it.
    """
    in_cluster = _in_cluster(environ, service_account_dir)
    if kubeconfig:
        if in_cluster is not None and not _any_exists(kubeconfig):
            log.warning(
                "daemon-config key 'kubeconfig' names %r, but no such file exists: using the pod's "
                "service account, as upstream's thick daemon (which ignores the key) does",
                kubeconfig,
            )
            return in_cluster
        return ClusterAccess(
            _existing(kubeconfig, "daemon-config key 'kubeconfig'"), "daemon-config kubeconfig"
        )
    from_env = environ.get("KUBECONFIG", "")
    if from_env:
        return ClusterAccess(_existing(from_env, "KUBECONFIG"), "KUBECONFIG")
    return in_cluster


def _in_cluster(environ: Mapping[str, str], service_account_dir: str) -> ClusterAccess | None:
    """The pod's in-cluster service account, if the environment and its token say there is one."""
    token = os.path.join(service_account_dir, "token")
    ca = os.path.join(service_account_dir, "ca.crt")
    host, port = environ.get("KUBERNETES_SERVICE_HOST", ""), environ.get("KUBERNETES_SERVICE_PORT", "")
    if host and port:
        if os.path.isfile(token):
            return ClusterAccess(
                None, "in-cluster", service_host=host, service_port=port, token_path=token, ca_path=ca
            )
        log.warning("KUBERNETES_SERVICE_HOST is set but %s does not exist: running without Kubernetes", token)
    return None


def _any_exists(paths: str) -> bool:
    return any(os.path.isfile(os.path.expanduser(path)) for path in paths.split(os.pathsep) if path)


def _existing(paths: str, named_by: str) -> str:
    if not _any_exists(paths):
        raise KubeConfigError(f"{named_by} names {paths!r}, but no such kubeconfig file exists")
    return paths


async def connect(access: ClusterAccess, *, settings: WatchSettings) -> KubeApi:
    """Open the API client described by ``access``; close it with ``KubeApi.close``."""
    lean_import.prepare()
    from kubernetes_asyncio.client import ApiClient

    configuration = await _configuration(access)
    try:
        client = ApiClient(configuration)
    except (ssl.SSLError, OSError) as exc:
        raise KubeConfigError(f"cannot use the TLS material from {access.source}: {exc}") from exc
    client.user_agent = USER_AGENT
    if not await asyncio.to_thread(_environment_applies, str(configuration.host)):
        _stop_environment_lookups(client)
    log.info("Kubernetes API at %s (from %s)", configuration.host, access.source)
    return KubeApi(client, settings=settings)


def _environment_applies(host: str) -> bool:
    """Whether a proxy variable names a proxy for ``host`` or a netrc file exists: what aiohttp
    looks up before every request of a session that trusts the environment."""
    url = urllib.parse.urlsplit(host)
    proxies = urllib.request.getproxies()
    if url.scheme in proxies and not urllib.request.proxy_bypass(url.hostname or ""):
        return True
    netrc = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    return os.path.isfile(netrc)


def _stop_environment_lookups(client: ApiClient) -> None:
    """kubernetes_asyncio's session trusts the environment, so aiohttp looks up a proxy and a netrc
    entry for every request, each in a worker thread (two thread hops per API call). When neither
    applies at start-up (the process environment does not change; client-go also reads proxy
    variables once), the same connector gets a session that does not look."""
    rest = client.rest_client
    trusting = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=trusting.connector, trust_env=False, read_bufsize=READ_BUFFER_SIZE
    )
    trusting.detach()


async def _configuration(access: ClusterAccess) -> Configuration:
    from kubernetes_asyncio.client import Configuration
    from kubernetes_asyncio.config.config_exception import ConfigException

    configuration = Configuration()
    try:
        if access.kubeconfig is None:
            from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader

            InClusterConfigLoader(
                token_filename=access.token_path,
                cert_filename=access.ca_path,
                try_refresh_token=False,
                environ={
                    "KUBERNETES_SERVICE_HOST": access.service_host,
                    "KUBERNETES_SERVICE_PORT": access.service_port,
                },
            ).load_and_set(configuration)
            configuration.refresh_api_key_hook = _token_file_reloader(access.token_path)
        else:
            await lean_import.kube_config().load_kube_config(
                config_file=access.kubeconfig, client_configuration=configuration, persist_config=False
            )
            if "BearerToken" in configuration.api_key:
                configuration.refresh_api_key_hook = _token_reloader(access.kubeconfig)
    except (ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
        raise KubeConfigError(f"cannot use the cluster access from {access.source}: {exc}") from exc
    return configuration


def _token_reloader(kubeconfig: str) -> Any:
    """A ``refresh_api_key_hook`` loading ``kubeconfig`` again at most every ``TOKEN_REFRESH_SECONDS``
    and taking its bearer token; a kubeconfig that fails to load meanwhile keeps the token in use."""
    from kubernetes_asyncio.client import Configuration
    from kubernetes_asyncio.config.config_exception import ConfigException

    due = time.monotonic() + TOKEN_REFRESH_SECONDS

    async def reload(configuration: Configuration, *_: object) -> None:
        nonlocal due
        if time.monotonic() < due:
            return
        due = time.monotonic() + TOKEN_REFRESH_SECONDS
        fresh = Configuration()
        try:
            await lean_import.kube_config().load_kube_config(
                config_file=kubeconfig, client_configuration=fresh, persist_config=False
            )
        except (ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "cannot read the token of kubeconfig %s again, keeping the current one: %s", kubeconfig, exc
            )
            return
        token = fresh.api_key.get("BearerToken")
        if token:
            configuration.api_key["BearerToken"] = token

    return reload


def _token_file_reloader(token_path: str) -> Any:
    """A ``refresh_api_key_hook`` reading the service account's token file again at most every
    ``TOKEN_REFRESH_SECONDS``; a read that fails (the file missing or empty for a moment, no
    descriptor left) keeps the token in use, with a warning.

    The library's own in-cluster hook raises instead, out of every request until a read succeeds
    (it tries again on each): a status write, an event or a watch then failed with an error no
    caller expects from a request, where client-go sends the token it has."""
    due = time.monotonic() + TOKEN_REFRESH_SECONDS

    def reload(configuration: Configuration, *_: object) -> None:
        nonlocal due
        if time.monotonic() < due:
            return
        due = time.monotonic() + TOKEN_REFRESH_SECONDS
        try:
            with open(token_path, encoding="utf-8") as file:
                token = file.read()
        except (OSError, ValueError) as exc:
            log.warning(
                "cannot read the service account token %s again, keeping the current one: %s", token_path, exc
            )
            return
        if not token:
            log.warning("the service account token %s is empty, keeping the current one", token_path)
            return
        configuration.api_key["BearerToken"] = f"Bearer {token}"

    return reload
