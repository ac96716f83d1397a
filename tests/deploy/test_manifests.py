"""The manifests and the image, checked offline: schema, RBAC, and agreement with what the daemon reads.

Schema: every object is validated by kubernetes-validate against the OpenAPI schema it bundles for
the newest Kubernetes it knows, in strict mode (unknown fields are errors). The Dockerfile cannot be
built here (no container engine): it is parsed, and what it names is checked against the repository.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest

from app import settings as settings_module
from tests.deploy.conftest import (
    CLEANUP_MANIFEST,
    CONSOLE_SCRIPT_MODULES,
    HOST_ROOT_IN_CONTAINER,
    MAIN_MANIFEST,
    REPO,
    container,
    daemon_config_text,
    daemon_settings,
    dockerfile,
    find,
    image_env,
    load_documents,
    pod_spec,
)

MANIFESTS = [MAIN_MANIFEST, CLEANUP_MANIFEST]
KUBERNETES_VERSION = kubernetes_validate.latest_version()
NAMESPACE = "kube-system"
UPSTREAM_MEMORY_LIMIT_MIB = 50

DAEMON_API_CALLS = {
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/status"): {"patch", "update"},
    ("k8s.cni.cncf.io", "network-attachment-definitions"): {"get", "list", "watch"},
    ("", "events"): {"create"},
    ("resource.k8s.io", "resourceclaims"): {"get"},
    ("resource.k8s.io", "resourceslices"): {"list"},
}
"""(API group, resource) -> verbs: the daemon's pod and NAD mirrors (list/watch, a live pod GET), its
network-status merge patch (GET + update where patch is refused, as upstream's daemon writes it), its
pod events (each one POSTed), and DRA device ids (a pod's ResourceClaims, the node's ResourceSlices).
``test_cluster_role_against_the_api_log`` checks the role against what a running daemon asks."""

PATH_KEYS = {
    "socketDir": "socket_dir",
    "stateDir": "state_dir",
    "binDir": "bin_dir",
    "cniDir": "cni_dir",
    "confDir": "conf_dir",
    "cniConfigDir": "cni_config_dir",
    "multusAutoconfigDir": "multus_autoconfig_dir",
    "daemonSocketDir": "daemon_socket_dir",
}
"""daemon-config keys naming node directories -> the Settings field holding them."""
WRITTEN_BY_THE_DAEMON = {"socketDir", "stateDir", "cniConfigDir", "cniDir", "spoolDir"}
"""Of those, the directories the daemon (or a delegate it runs) writes into."""


def _documents_with_names() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in MANIFESTS
        for doc in load_documents(path)
    ]


def _mebibytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match is not None, f"unexpected memory quantity {quantity!r}"
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


def _daemon_pod(documents: list[dict[str, Any]]) -> dict[str, Any]:
    return pod_spec(find(documents, "DaemonSet", "multus-py"))


def _host_mounts(spec: dict[str, Any], item: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """mountPath -> (hostPath path, the volumeMount) for a container's hostPath mounts."""
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    return {
        mount["mountPath"]: (volumes[mount["name"]]["hostPath"]["path"], mount)
        for mount in item.get("volumeMounts", [])
        if "hostPath" in volumes[mount["name"]]
    }


def _covering_mount(
    mounts: dict[str, tuple[str, dict[str, Any]]], path: str
) -> tuple[str, str, dict[str, Any]] | None:
    """The innermost mount containing ``path``: (mountPath, hostPath, volumeMount)."""
    candidates = [m for m in mounts if PurePosixPath(path).is_relative_to(PurePosixPath(m))]
    if not candidates:
        return None
    mount_path = max(candidates, key=len)
    return mount_path, *mounts[mount_path]


# --- schema -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "document"), _documents_with_names(), ids=[n for n, _ in _documents_with_names()]
)
def test_every_object_validates_against_the_kubernetes_schema(name: str, document: dict[str, Any]) -> None:
    validated = kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    assert KUBERNETES_VERSION.startswith(validated + ".")


def test_the_schema_check_rejects_an_unknown_field_and_a_wrong_type(documents: list[dict[str, Any]]) -> None:
    daemonset = copy.deepcopy(find(documents, "DaemonSet", "multus-py"))
    pod_spec(daemonset)["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="hostNetwrok"):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSION, strict=True)
    daemonset = copy.deepcopy(find(documents, "DaemonSet", "multus-py"))
    pod_spec(daemonset)["terminationGracePeriodSeconds"] = "30"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSION, strict=True)


def test_the_crd_is_upstreams_network_attachment_definition(documents: list[dict[str, Any]]) -> None:
    crd = find(documents, "CustomResourceDefinition")["spec"]
    assert (crd["group"], crd["scope"], crd["names"]["kind"], crd["names"]["plural"]) == (
        "k8s.cni.cncf.io",
        "Namespaced",
        "NetworkAttachmentDefinition",
        "network-attachment-definitions",
    )
    (version,) = crd["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"] == {
        "config": {"description": "A JSON-formatted CNI configuration.", "type": "string"}
    }


# --- RBAC ---------------------------------------------------------------------------------------------


def test_the_cluster_role_grants_exactly_the_calls_the_daemon_makes(documents: list[dict[str, Any]]) -> None:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in find(documents, "ClusterRole", "multus-py")["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}  # no resourceNames tricks, no nonResourceURLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == DAEMON_API_CALLS
    everything = [key for key, verbs in granted.items() if "*" in key or "*" in verbs]
    assert everything == []


def test_the_daemon_runs_as_the_bound_service_account(documents: list[dict[str, Any]]) -> None:
    account = find(documents, "ServiceAccount")
    binding = find(documents, "ClusterRoleBinding", "multus-py")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "multus-py",
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    daemonset = find(documents, "DaemonSet", "multus-py")
    assert daemonset["metadata"]["namespace"] == account["metadata"]["namespace"] == NAMESPACE
    assert pod_spec(daemonset)["serviceAccountName"] == account["metadata"]["name"]
    assert [kind for kind in (doc["kind"] for doc in documents) if kind in ("Role", "RoleBinding")] == []


def test_the_cleanup_pods_get_no_api_access() -> None:
    cleanup = load_documents(CLEANUP_MANIFEST)
    spec = pod_spec(find(cleanup, "DaemonSet", "multus-py-cleanup"))
    assert spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in spec


# --- the daemon's configuration and its paths ---------------------------------------------------------


def test_every_key_of_the_configmap_is_read_by_the_daemon(
    documents: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    read: set[str] = set()
    look_up = settings_module._Reader.value

    def recording(reader: Any, key: str) -> Any:
        read.add(key)
        return look_up(reader, key)

    monkeypatch.setattr(settings_module._Reader, "value", recording)
    config = json.loads(daemon_config_text(documents))
    settings_module.from_mapping(config)
    assert set(config) - read == set()


def test_the_daemon_reads_the_configmap_it_is_given(documents: list[dict[str, Any]]) -> None:
    spec = _daemon_pod(documents)
    daemon = container(spec, "multus-daemon")
    program, *arguments = daemon["command"]
    assert program == "multus-daemon"
    assert arguments[0] == "--config"
    config_path = PurePosixPath(arguments[1])
    (mount,) = [m for m in daemon["volumeMounts"] if config_path.parent == PurePosixPath(m["mountPath"])]
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == find(documents, "ConfigMap")["metadata"]["name"]
    assert volume["configMap"]["items"] == [{"key": "daemon-config.json", "path": config_path.name}]
    assert mount.get("readOnly") is True


def test_every_directory_the_daemon_config_names_is_the_same_host_directory(
    documents: list[dict[str, Any]],
) -> None:
    settings = daemon_settings(documents)
    spec = _daemon_pod(documents)
    mounts = _host_mounts(spec, container(spec, "multus-daemon"))
    raw = json.loads(daemon_config_text(documents))
    directories = {key: str(getattr(settings, field)) for key, field in PATH_KEYS.items()}
    directories["spoolDir"] = str(settings.spool_path)  # the shim writes DELs there, on the node
    for key in ("logFile", "readinessindicatorfile"):
        if raw.get(key):
            directories[key] = str(PurePosixPath(raw[key]).parent)
    for key, directory in directories.items():
        covering = _covering_mount(mounts, directory)
        assert covering is not None, f"{key} {directory} is not mounted from the host"
        mount_path, host_path, mount = covering
        # same path inside and outside: 00-multus.conf and delegate confs carry these paths to the runtime
        assert mount_path == host_path, f"{key}: host {host_path} is mounted at {mount_path}"
        if key in WRITTEN_BY_THE_DAEMON:
            assert not mount.get("readOnly"), f"{key} {directory} is mounted read-only"


def test_the_generated_conf_sends_the_shim_to_the_daemons_socket(documents: list[dict[str, Any]]) -> None:
    settings = daemon_settings(documents)
    assert settings.multus_config_file == "auto"
    assert PurePosixPath(settings.daemon_socket_dir) == PurePosixPath(settings.socket_dir)
    assert settings.multus_autoconfig_dir == settings.cni_config_dir


def test_namespaces_created_after_the_daemon_started_are_visible_to_it(
    documents: list[dict[str, Any]],
) -> None:
    spec = _daemon_pod(documents)
    mounts = _host_mounts(spec, container(spec, "multus-daemon"))
    for netns_dir in ("/run/netns", "/var/run/netns"):
        resolved = netns_dir.replace("/var/run/", "/run/")  # /var/run is a link to /run in the image
        covering = _covering_mount(mounts, resolved)
        assert covering is not None, f"{netns_dir} is not mounted"
        assert covering[2].get("mountPropagation") == "HostToContainer"


def test_the_daemon_pod_runs_on_the_host_network_as_node_critical(documents: list[dict[str, Any]]) -> None:
    daemonset = find(documents, "DaemonSet", "multus-py")
    spec = pod_spec(daemonset)
    daemon = container(spec, "multus-daemon")
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert daemon["securityContext"] == {"privileged": True}
    assert daemon["env"] == [
        {"name": "MULTUS_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    ]
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    # the daemon drains in-flight operations for shutdown_grace before exiting: the kubelet must wait longer
    assert spec["terminationGracePeriodSeconds"] > daemon_settings(documents).timeouts.shutdown_grace


@pytest.mark.parametrize(
    ("manifest", "daemonset"), [(MAIN_MANIFEST, "multus-py"), (CLEANUP_MANIFEST, "multus-py-cleanup")]
)
def test_each_pod_starts_while_no_daemon_answers_the_shim(manifest: Path, daemonset: str) -> None:
    """Neither pod may need the pod network: the daemon's pod is what serves it, and the clean-up's runs
    after the daemons were deleted, while the node's 00-multus.conf (which it removes) still sends
    every sandbox's ADD to a shim that finds no daemon. Only a host-network sandbox runs no CNI."""
    spec = pod_spec(find(load_documents(manifest), "DaemonSet", daemonset))
    assert spec.get("hostNetwork") is True, f"{daemonset}: its sandbox's ADD would go to the shim"


def test_the_memory_limit_bounds_the_daemon_above_upstreams_50mi(documents: list[dict[str, Any]]) -> None:
    """Upstream's 50Mi cannot hold a Python daemon (~59 MiB idle static, ~63 MiB with the Kubernetes
    client and its mirror), let alone the delegates charged to it: the request covers idle plus a
    burst, the limit is deliberately larger, and the manifest says why."""
    resources = container(_daemon_pod(documents), "multus-daemon")["resources"]
    assert set(resources["limits"]) == {"memory"}  # no CPU limit: throttling would slow every pod start
    limit, request = _mebibytes(resources["limits"]["memory"]), _mebibytes(resources["requests"]["memory"])
    assert 64 < request <= limit <= 256
    assert limit > UPSTREAM_MEMORY_LIMIT_MIB
    assert "Upstream's reference limit is 50Mi" in MAIN_MANIFEST.read_text()


def test_the_probes_ask_the_daemons_socket(documents: list[dict[str, Any]]) -> None:
    settings = daemon_settings(documents)
    daemon = container(_daemon_pod(documents), "multus-daemon")
    endpoints = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = daemon[probe]["exec"]["command"]
        assert command[:4] == ["/usr/local/bin/python3", "-I", "-S", "-c"]
        assert "import _socket" in command[4]
        assert "import socket" not in command[4]
        assert command[5] == str(settings.socket_path)
        endpoints[probe] = command[6]
        assert daemon[probe]["timeoutSeconds"] >= 2
    assert endpoints == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}


# --- the init containers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "daemonset", "name", "verb"),
    [
        (MAIN_MANIFEST, "multus-py", "install-shim", "install"),
        (CLEANUP_MANIFEST, "multus-py-cleanup", "uninstall", "uninstall"),
    ],
)
def test_the_installer_sees_each_host_directory_under_its_host_root(
    manifest: Path, daemonset: str, name: str, verb: str
) -> None:
    documents = load_documents(manifest)
    spec = pod_spec(find(documents, "DaemonSet", daemonset))
    assert [item["name"] for item in spec["initContainers"]] == [name]
    item = container(spec, name)
    assert item["command"][:2] == ["multus-install", verb]
    arguments = item["command"]
    assert arguments[arguments.index("--host-root") + 1] == HOST_ROOT_IN_CONTAINER
    mounts = _host_mounts(spec, item)
    assert mounts
    for mount_path, (host_path, _mount) in mounts.items():
        assert mount_path == HOST_ROOT_IN_CONTAINER + host_path
    for default in ("/opt/cni/bin", "/etc/cni/net.d"):  # where the installer writes, by default
        assert _covering_mount(mounts, HOST_ROOT_IN_CONTAINER + default) is not None


def test_the_installer_installs_the_images_shim_runtime_or_can_check_the_interpreter(
    documents: list[dict[str, Any]],
) -> None:
    spec = _daemon_pod(documents)
    item = container(spec, "install-shim")
    arguments = item["command"]
    if "--interpreter" not in arguments:  # the bundled runtime the image was built with
        assert "--bundle" not in arguments
        bundle_dir = image_env()["MULTUS_SHIM_BUNDLE"]
        runs = " ".join(entry["value"] for entry in dockerfile().structure if entry["instruction"] == "RUN")
        assert f"multus-install bundle --output {bundle_dir} " in runs
        return
    interpreter = arguments[arguments.index("--interpreter") + 1]
    covering = _covering_mount(_host_mounts(spec, item), HOST_ROOT_IN_CONTAINER + interpreter)
    assert covering is not None
    assert covering[2].get("readOnly") is True


def test_the_cleanup_removes_what_the_install_and_the_daemon_put_on_the_node() -> None:
    documents = load_documents(CLEANUP_MANIFEST)
    spec = pod_spec(find(documents, "DaemonSet", "multus-py-cleanup"))
    item = container(spec, "uninstall")
    settings = daemon_settings(load_documents(MAIN_MANIFEST))
    mounts = _host_mounts(spec, item)
    # parents mounted, so the state and socket directories themselves can be removed
    for directory in (settings.state_dir, settings.socket_dir):
        covering = _covering_mount(mounts, HOST_ROOT_IN_CONTAINER + str(directory))
        assert covering is not None
        assert covering[0] != HOST_ROOT_IN_CONTAINER + str(directory)
    assert "--purge-state" in item["command"]
    assert "--daemon-config" in item["command"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    config_volumes = [volume["configMap"]["name"] for volume in volumes.values() if "configMap" in volume]
    assert config_volumes == [find(load_documents(MAIN_MANIFEST), "ConfigMap")["metadata"]["name"]]


# --- image and commands -------------------------------------------------------------------------------


def test_every_container_runs_the_same_image_and_a_console_script_of_the_package() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    images = set()
    for path in MANIFESTS:
        for document in load_documents(path):
            if document["kind"] != "DaemonSet":
                continue
            spec = pod_spec(document)
            for item in [*spec.get("initContainers", []), *spec["containers"]]:
                images.add(item["image"])
                program = item["command"][0]
                if program != "sleep":
                    assert program in scripts, f"pyproject.toml has no console script {program!r}"
                    assert scripts[program] == f"{CONSOLE_SCRIPT_MODULES[program]}:main"
    assert len(images) == 1


def test_the_dockerfile_builds_from_what_the_repository_has() -> None:
    parsed = dockerfile()
    stages = [item["value"] for item in parsed.structure if item["instruction"] == "FROM"]
    assert all(stage.startswith("python:3.11-slim") for stage in stages)  # python at /usr/local/bin (probes)
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for item in parsed.structure:
        if item["instruction"] != "COPY" or "--from" in item["value"]:
            continue
        *sources, _target = shlex.split(item["value"])
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), (
                f"{source} is .dockerignored"
            )
    runs = " ".join(item["value"] for item in parsed.structure if item["instruction"] == "RUN")
    assert "containernetworking-plugins" in runs
    assert "multus-install --help" in runs  # the image fails to build without the installer's script


def test_the_image_falls_back_to_the_reference_plugins_it_ships() -> None:
    # Debian's containernetworking-plugins (installed in the image) puts them here; this test machine
    # has the same package, which the restart test's daemon uses through the same CNI_PATH. (With
    # the shipped chrootDir the daemon searches CNI_PATH inside the node's root: the node's package.)
    cni_path = image_env()["CNI_PATH"]
    for plugin in ("bridge", "host-local", "macvlan", "ipvlan", "static", "tuning"):
        assert (Path(cni_path) / plugin).is_file()
    assert daemon_settings(load_documents(MAIN_MANIFEST)).bin_dir not in cni_path.split(":")
