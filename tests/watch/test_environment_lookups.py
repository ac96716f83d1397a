"""The API client's session looks up proxies and netrc per request only when the environment has
any for the API server: otherwise aiohttp would hop to a worker thread twice for every call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.watch import client
from app.watch.settings import WatchSettings

SERVER = "http://10.96.0.1:6443"


@pytest.fixture
def access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> client.ClusterAccess:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "clusters": [{"name": "c", "cluster": {"server": SERVER}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return client.ClusterAccess(str(kubeconfig), "test")


async def _trusts_environment(access: client.ClusterAccess) -> bool:
    api = await client.connect(access, settings=WatchSettings())
    try:
        session = api._client.rest_client.pool_manager
        assert not session.closed
        return bool(session.trust_env)
    finally:
        await api.close()


async def test_without_proxy_variables_or_netrc_no_request_consults_the_environment(
    access: client.ClusterAccess,
) -> None:
    assert not await _trusts_environment(access)


async def test_a_proxy_for_the_api_server_is_still_honoured(
    access: client.ClusterAccess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")

    assert await _trusts_environment(access)


async def test_a_proxy_that_no_proxy_bypasses_for_the_api_server_is_not_looked_up(
    access: client.ClusterAccess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "10.96.0.1")

    assert not await _trusts_environment(access)


async def test_a_netrc_file_is_still_honoured(
    access: client.ClusterAccess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".netrc").write_text("machine 10.96.0.1 login u password p\n")

    assert await _trusts_environment(access)
