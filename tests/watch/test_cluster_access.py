"""Finding the cluster: daemon-config kubeconfig, then KUBECONFIG, then in-cluster, else static mode."""

from __future__ import annotations

import asyncio
import datetime
import json
import shutil
import ssl
import subprocess
from pathlib import Path

import certifi
import pytest
from aiohttp import web

from app.sandbox.kubeconfig import write_kubeconfig
from app.watch import client
from app.watch.errors import KubeConfigError
from app.watch.settings import WatchSettings


@pytest.fixture
def service_account(tmp_path: Path) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text("token")
    (directory / "ca.crt").write_text("ca")
    return directory


IN_CLUSTER = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def test_the_daemon_config_kubeconfig_comes_first(tmp_path: Path, service_account: Path) -> None:
    configured = tmp_path / "configured"
    configured.write_text("{}")
    from_env = tmp_path / "env"
    from_env.write_text("{}")

    access = client.find_access(
        kubeconfig=str(configured),
        environ={"KUBECONFIG": str(from_env), **IN_CLUSTER},
        service_account_dir=str(service_account),
    )

    assert access == client.ClusterAccess(str(configured), "daemon-config kubeconfig")


def test_kubeconfig_from_the_environment_comes_before_in_cluster(
    tmp_path: Path, service_account: Path
) -> None:
    from_env = tmp_path / "env"
    from_env.write_text("{}")

    access = client.find_access(
        kubeconfig="",
        environ={"KUBECONFIG": f"{tmp_path / 'missing'}:{from_env}", **IN_CLUSTER},
        service_account_dir=str(service_account),
    )

    assert access is not None
    assert access.source == "KUBECONFIG"


def test_the_in_cluster_service_account_is_the_last_resort(service_account: Path) -> None:
    access = client.find_access(kubeconfig="", environ=IN_CLUSTER, service_account_dir=str(service_account))

    assert access is not None
    assert access.kubeconfig is None
    assert (access.service_host, access.service_port) == ("10.0.0.1", "443")
    assert access.token_path == str(service_account / "token")


def test_nothing_configured_means_static_mode(tmp_path: Path) -> None:
    assert client.find_access(kubeconfig="", environ={}, service_account_dir=str(tmp_path)) is None
    assert client.find_access(kubeconfig="", environ=IN_CLUSTER, service_account_dir=str(tmp_path)) is None


def test_a_named_kubeconfig_that_does_not_exist_is_an_error_not_static_mode(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="kubeconfig"):
        client.find_access(kubeconfig=str(tmp_path / "missing"), environ={})
    with pytest.raises(KubeConfigError, match="KUBECONFIG"):
        client.find_access(kubeconfig="", environ={"KUBECONFIG": str(tmp_path / "missing")})


def test_a_daemon_config_kubeconfig_the_pod_lacks_gives_way_to_its_service_account(
    tmp_path: Path, service_account: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Upstream's thick daemon ignores the key: a config carried over from a thin plugin's set-up,
    naming the host's kubeconfig, must not keep the daemon from the cluster."""
    missing = tmp_path / "etc-cni-net.d-multus.d-multus.kubeconfig"

    access = client.find_access(
        kubeconfig=str(missing), environ=IN_CLUSTER, service_account_dir=str(service_account)
    )

    assert access is not None
    assert access.source == "in-cluster"
    assert access.token_path == str(service_account / "token")
    assert "as upstream's thick daemon" in caplog.text
    with pytest.raises(KubeConfigError, match="KUBECONFIG"):  # the environment's is still the operator's own
        client.find_access(
            kubeconfig="",
            environ={"KUBECONFIG": str(missing), **IN_CLUSTER},
            service_account_dir=str(service_account),
        )


async def test_an_unreadable_kubeconfig_fails_to_connect_with_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text('{"apiVersion": "v1", "clusters": []}')

    with pytest.raises(KubeConfigError, match="cannot use the cluster access"):
        await client.connect(client.ClusterAccess(str(broken), "test"), settings=WatchSettings())


async def test_in_cluster_access_with_a_bad_ca_file_fails_with_a_clear_error(service_account: Path) -> None:
    access = client.find_access(kubeconfig="", environ=IN_CLUSTER, service_account_dir=str(service_account))
    assert access is not None

    with pytest.raises(KubeConfigError, match="TLS material from in-cluster"):
        await client.connect(access, settings=WatchSettings())


async def test_in_cluster_access_connects_over_https_with_the_service_account(service_account: Path) -> None:
    shutil.copyfile(certifi.where(), service_account / "ca.crt")
    access = client.find_access(kubeconfig="", environ=IN_CLUSTER, service_account_dir=str(service_account))
    assert access is not None

    api = await client.connect(access, settings=WatchSettings())
    try:
        assert api.host == "https://10.0.0.1:443"
    finally:
        await api.close()


async def test_requests_carry_the_token_the_user_agent_and_the_body(tmp_path: Path) -> None:
    status_patch = {"metadata": {"annotations": {"k": "<v>"}}}
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append((request.method, request.path_qs, dict(request.headers), await request.read()))
        return web.json_response({"kind": "Pod"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        path = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}", token="secret")
        access = client.find_access(kubeconfig=str(path), environ={})
        assert access is not None
        api = await client.connect(access, settings=WatchSettings())
        try:
            got = await api.get("/api/v1/namespaces/ns/pods/p", query=[("a", "1"), ("a", "2")])
            await api.patch("/api/v1/namespaces/ns/pods/p/status", status_patch)
        finally:
            await api.close()
    finally:
        await runner.cleanup()

    assert got == {"kind": "Pod"}
    (get_method, get_path, get_headers, _), (patch_method, patch_path, patch_headers, body) = seen
    assert (get_method, get_path) == ("GET", "/api/v1/namespaces/ns/pods/p?a=1&a=2")
    assert (patch_method, patch_path) == ("PATCH", "/api/v1/namespaces/ns/pods/p/status")
    for headers in (get_headers, patch_headers):
        assert headers["Authorization"] == "Bearer secret"
        assert headers["User-Agent"] == client.USER_AGENT
        assert headers["Accept"] == "application/json"
    assert patch_headers["Content-Type"] == "application/merge-patch+json"
    assert json.loads(body) == status_patch


async def test_a_kubeconfig_token_file_rotated_on_disk_is_picked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bound service-account tokens expire: like client-go, the daemon re-reads ``tokenFile``."""
    monkeypatch.setattr(client, "TOKEN_REFRESH_SECONDS", 0.05)
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"kind": "Pod"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    token = tmp_path / "token"
    token.write_text("first")
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"tokenFile": str(token)}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(document))
    try:
        access = client.find_access(kubeconfig=str(path), environ={})
        assert access is not None
        api = await client.connect(access, settings=WatchSettings())
        try:
            await api.get("/api/v1/namespaces/ns/pods/p")
            token.write_text("second")
            await asyncio.sleep(0.1)
            await api.get("/api/v1/namespaces/ns/pods/p")
        finally:
            await api.close()
    finally:
        await runner.cleanup()

    assert seen == ["Bearer first", "Bearer second"]


@pytest.fixture
def tls_server_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (the in-cluster loader speaks HTTPS only)."""
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_an_in_cluster_token_rotated_on_disk_is_picked_up_and_one_unreadable_keeps_the_last(
    service_account: Path, tls_server_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubelet rotates the projected token: the daemon must send the new one. A read that fails
    for a while must not fail the requests: the library's own hook raised out of every request
    (a status write, an event, a watch) until the file could be read again."""
    import kubernetes_asyncio.config.incluster_config as incluster

    monkeypatch.setattr(client, "TOKEN_REFRESH_SECONDS", 0.0)
    monkeypatch.setattr(incluster, "TOKEN_REFRESH_PERIOD", datetime.timedelta(0))
    cert, key = tls_server_files
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"kind": "Pod"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    port = runner.addresses[0][1]
    token = service_account / "token"
    token.write_text("first")
    shutil.copyfile(cert, service_account / "ca.crt")
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port)}
    try:
        access = client.find_access(kubeconfig="", environ=environ, service_account_dir=str(service_account))
        assert access is not None
        api = await client.connect(access, settings=WatchSettings())
        try:
            await api.get("/api/v1/namespaces/ns/pods/p")
            rotated = service_account / "token.new"
            rotated.write_text("second")
            rotated.rename(token)  # the kubelet swaps the file whole
            await api.get("/api/v1/namespaces/ns/pods/p")
            token.unlink()
            await api.get("/api/v1/namespaces/ns/pods/p")
            token.write_text("")
            await api.get("/api/v1/namespaces/ns/pods/p")
        finally:
            await api.close()
    finally:
        await runner.cleanup()

    assert seen == ["Bearer first", "Bearer second", "Bearer second", "Bearer second"]
