"""Finding the cluster: daemon-config kubeconfig, then KUBECONFIG, then in-cluster, else static mode."""

from __future__ import annotations

import shutil
from pathlib import Path

import certifi
import pytest

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
