"""Credentials that change under a running client, against the real API server.

A service-account token bound to a Secret (TokenRequest with boundObjectRef) stops working the moment
that Secret is deleted: the API server answers 401. Both of kubetune's clients (the operator's asyncio
one and the synchronous one of the CLI and dev cluster) must then read their credentials again and go
on: from a kubeconfig `exec` plugin (how EKS and GKE hand out tokens) or a rotated token file (how
the kubelet projects service-account tokens into a pod).
"""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubetune_harness import Cluster, OperatorProcess, install_crds, wait_for

from kubetune.k8s.client import KubeClient
from kubetune.k8s.core import Credentials, Unauthorized, resource_path
from kubetune.k8s.sync import KubeApi
from kubetune_dev.cluster import ClusterInfo
from kubetune_dev.testing import Kube

pytestmark = pytest.mark.e2e

ACCOUNT = "rotating"


def bound_token(kube: Kube, namespace: str, secret: str) -> str:
    """A token of the `rotating` ServiceAccount that lives as long as Secret `secret`."""
    kube.core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=secret)))
    uid = kube.core.read_namespaced_secret(secret, namespace).metadata.uid
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
        audiences=[], expiration_seconds=3600,
        bound_object_ref=client.V1BoundObjectReference(api_version="v1", kind="Secret", name=secret, uid=uid),
    ))
    answer = kube.core.create_namespaced_service_account_token(ACCOUNT, namespace, request)
    return str(answer.status.token)


def rotate(kube: Kube, namespace: str, token_file: Path, server: str, ca: str | None) -> None:
    """Rotation: `token_file` gets a token bound to Secret "second", and the one bound to "first" is revoked:
    the Secret is deleted and we wait until the API server refuses its token (the authenticator caches briefly)."""
    old = token_file.read_text()
    token_file.write_text(bound_token(kube, namespace, "second"))
    kube.core.delete_namespaced_secret("first", namespace)
    probe = KubeApi(Credentials(server=server, ca_file=ca, token=old))
    for _ in range(200):
        try:
            probe.get("/api")
        except Unauthorized:
            return
        time.sleep(0.1)
    pytest.fail("the API server kept accepting a token whose Secret was deleted")


@pytest.fixture
def account(kube: Kube, namespace: str) -> str:
    rbac = client.RbacAuthorizationV1Api(kube.api_client)
    kube.core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name=ACCOUNT)))
    # Read access to ConfigMaps in its namespace: what the clients below ask for.
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="read-configmaps"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])],
    ))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="read-configmaps"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="read-configmaps"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=ACCOUNT, namespace=namespace)],
    ))
    return namespace


def exec_kubeconfig(tmp_path: Path, cluster: ClusterInfo, token_file: Path) -> Path:
    """A kubeconfig whose user is an exec plugin printing the token currently in `token_file`."""
    plugin = tmp_path / "token-plugin"
    calls = tmp_path / "plugin-calls"
    plugin.write_text(
        "#!/bin/sh\n"
        f"echo x >> {calls}\n"
        'printf \'{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",'
        f'"status":{{"token":"%s"}}}}\' "$(cat {token_file})"\n'
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    return user_kubeconfig(tmp_path, cluster, {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin), "interactiveMode": "Never",
    }})


def user_kubeconfig(tmp_path: Path, cluster: ClusterInfo, user: dict[str, object]) -> Path:
    """A kubeconfig for the dev cluster's server and CA whose one user is `user` (exec plugin, tokenFile, ...)."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "rotating", "clusters": admin["clusters"],
        "users": [{"name": "rotating", "user": user}],
        "contexts": [{"name": "rotating", "context": {"cluster": admin["clusters"][0]["name"], "user": "rotating"}}],
    }))
    return path


def test_both_clients_follow_a_rotated_exec_plugin_token(
    kube: Kube, account: str, dev_cluster: ClusterInfo, tmp_path: Path
) -> None:
    namespace = account
    token_file = tmp_path / "token"
    token_file.write_text(bound_token(kube, namespace, "first"))
    kubeconfig = exec_kubeconfig(tmp_path, dev_cluster, token_file)
    path = resource_path("", "v1", "configmaps", namespace)

    sync_api = KubeApi(Credentials.load(kubeconfig))
    async_api = KubeClient(Credentials.load(kubeconfig))

    async def list_async() -> int:
        return len((await async_api.request("GET", path))["items"])

    loop = asyncio.new_event_loop()
    try:
        assert len(sync_api.get(path)["items"]) >= 1  # kube-root-ca.crt
        assert loop.run_until_complete(list_async()) >= 1
        plugin_runs = len((tmp_path / "plugin-calls").read_text().split())

        # Rotation: the plugin now hands out a new token, and the old one is revoked.
        rotate(kube, namespace, token_file, sync_api.credentials.server, sync_api.credentials.ca_file)

        assert len(sync_api.get(path)["items"]) >= 1
        assert loop.run_until_complete(list_async()) >= 1
        assert len((tmp_path / "plugin-calls").read_text().split()) >= plugin_runs + 2  # each client re-ran it
        assert sync_api.credentials.bearer() == async_api.credentials.bearer() == token_file.read_text()
    finally:
        loop.run_until_complete(async_api.close())
        loop.close()


def test_a_rotated_token_file_is_read_again_after_a_refusal(
    kube: Kube, account: str, dev_cluster: ClusterInfo, tmp_path: Path
) -> None:
    """As in a pod: the kubelet rewrites the projected token file; a 401 makes the client read it at once."""
    namespace = account
    token_file = tmp_path / "token"
    token_file.write_text(bound_token(kube, namespace, "first"))
    admin = Credentials.load(dev_cluster.kubeconfig)

    def from_file() -> Credentials:
        return Credentials(server=admin.server, ca_file=admin.ca_file, token_file=str(token_file), reloader=from_file)

    api = KubeApi(from_file())
    path = resource_path("", "v1", "configmaps", namespace)
    assert len(api.get(path)["items"]) >= 1
    rotate(kube, namespace, token_file, admin.server, admin.ca_file)
    assert len(api.get(path)["items"]) >= 1
    assert api.credentials.bearer() == token_file.read_text()


def test_an_operator_outside_the_cluster_keeps_working_when_its_token_file_rotates(
    kube: Kube, account: str, dev_cluster: ClusterInfo, tmp_path: Path
) -> None:
    """The operator runs from a kubeconfig whose user is a `tokenFile`; mid-job the file gets a new token
    and the old one is revoked. Its own client and Kopf's watches (re-login on 401) both carry on."""
    namespace = account
    binding = f"kubetune-rotating-{namespace}"
    rbac = client.RbacAuthorizationV1Api(kube.api_client)
    rbac.create_cluster_role_binding(client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=binding),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=ACCOUNT, namespace=namespace)],
    ))
    install_crds(kube.api_client)
    token_file = tmp_path / "token"
    token_file.write_text(bound_token(kube, namespace, "first"))
    kubeconfig = user_kubeconfig(tmp_path, dev_cluster, {"tokenFile": str(token_file)})
    operator = OperatorProcess(kubeconfig, dev_cluster.prometheus_url, tmp_path / "operator.log",
                               KUBETUNE_NAMESPACES=namespace)
    cluster = Cluster(kube.api_client, namespace)
    try:
        operator.start()
        cluster.apply_example("digits-random.yaml", name="rotated", budget={"maxTrials": 6, "parallelism": 2})
        wait_for("a first finished trial", lambda: any(
            (t.get("status") or {}).get("phase") == "Succeeded" for t in cluster.trials("rotated")) or None)
        admin_credentials = Credentials.load(dev_cluster.kubeconfig)
        rotate(kube, namespace, token_file, admin_credentials.server, admin_credentials.ca_file)
        job = cluster.wait_finished("rotated", timeout=600)
        assert job["status"]["phase"] == "Succeeded", operator.log_tail()
        assert operator.alive(), operator.log_tail()
        trials = cluster.trials("rotated")
        assert len(trials) == 6 and all(t["status"]["phase"] == "Succeeded" for t in trials), operator.log_tail()
    finally:
        operator.stop()
        rbac.delete_cluster_role_binding(binding)
