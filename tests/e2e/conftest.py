"""Fixtures for tests against the dev cluster (see devcluster/kubetune_dev/README.md).

- `dev_cluster` (session): a `ClusterInfo` (kubeconfig, prometheus_url, pod_log(), ...). The cluster
  is started once per session in a private home and torn down at the end; with
  KUBETUNE_REUSE_CLUSTER=1 the cluster of `kubetune dev up` ($KUBETUNE_DEV_HOME) is reused (started
  if needed) and left running.
- `dev_cluster_ctl` (session): the `DevCluster` behind it, to kill or restart components.
- `kube` (session): typed API clients for the admin kubeconfig.
- `namespace`: a fresh namespace per test enforcing Pod Security `restricted`, deleted (and waited for) afterwards.
- `prometheus_url`: the dev Prometheus.
- `real_cluster_ctl`, `real_cluster`, `real_kube`, `real_namespace` (marker `realnode`): the same for a
  second cluster whose node is real (kubelet, containerd, runc, CNI, kube-proxy, CoreDNS, device
  plugin: `kubetune dev up --node real`), started on first use. KUBETUNE_REUSE_REAL_CLUSTER=1 reuses
  (or starts) the real-node cluster of `kubetune dev up --node real` ($KUBETUNE_DEV_HOME) instead.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from kubetune_harness import fresh_namespace

from kubetune_dev.cluster import ClusterInfo, DevCluster, DevClusterError
from kubetune_dev.testing import Kube

NAMESPACE_DELETE_TIMEOUT = 180.0


def _session_cluster(
    tmp_path_factory: pytest.TempPathFactory, reuse_env: str, name: str, **kwargs: Any
) -> Iterator[DevCluster]:
    reuse = os.environ.get(reuse_env) == "1"
    # A private home unless reusing, so a test run never touches the developer's own cluster.
    # Owned by this process: if pytest is killed, the cluster tears itself down.
    if reuse:
        cluster = DevCluster(**kwargs)
    else:
        cluster = DevCluster(tmp_path_factory.mktemp(name), owner_pid=os.getpid(), **kwargs)
    try:
        cluster.up()
    except DevClusterError as exc:
        if not reuse:
            cluster.down()
        pytest.fail(f"the dev cluster did not start:\n{exc}", pytrace=False)
    yield cluster
    if not reuse:
        cluster.down()


@pytest.fixture(scope="session")
def dev_cluster_ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    yield from _session_cluster(tmp_path_factory, "KUBETUNE_REUSE_CLUSTER", "kubetune-dev")


@pytest.fixture(scope="session")
def real_cluster_ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    yield from _session_cluster(tmp_path_factory, "KUBETUNE_REUSE_REAL_CLUSTER", "kt-real", node_kind="real")


@pytest.fixture(scope="session")
def real_cluster(real_cluster_ctl: DevCluster) -> ClusterInfo:
    return real_cluster_ctl.info()


@pytest.fixture(scope="session")
def real_kube(real_cluster: ClusterInfo) -> Iterator[Kube]:
    clients = Kube.from_kubeconfig(real_cluster.kubeconfig)
    yield clients
    clients.close()


@pytest.fixture
def real_namespace(real_kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh `restricted` namespace on the real-node cluster, deleted (and waited for) afterwards."""
    yield from _test_namespace(real_kube, request)


@pytest.fixture(scope="session")
def dev_cluster(dev_cluster_ctl: DevCluster) -> ClusterInfo:
    return dev_cluster_ctl.info()


@pytest.fixture(scope="session")
def kube(dev_cluster: ClusterInfo) -> Iterator[Kube]:
    clients = Kube.from_kubeconfig(dev_cluster.kubeconfig)
    yield clients
    clients.close()


@pytest.fixture(scope="session")
def prometheus_url(dev_cluster: ClusterInfo) -> str:
    return dev_cluster.prometheus_url


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, enforcing Pod Security `restricted` like the examples';
    deleted afterwards, waiting until it is gone so pods (and the GPUs they hold) never leak into the next test."""
    yield from _test_namespace(kube, request)


def _test_namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = fresh_namespace(kube.core, slug)
    # Pods are rejected until the ServiceAccount controller created `default`.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            kube.core.read_namespaced_service_account("default", name)
            break
        except ApiException as exc:
            if exc.status != 404:
                raise
            time.sleep(0.2)
    yield name
    kube.core.delete_namespace(name)
    deadline = time.monotonic() + NAMESPACE_DELETE_TIMEOUT
    while time.monotonic() < deadline:
        try:
            kube.core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.5)
    pytest.fail(f"namespace {name} still exists {NAMESPACE_DELETE_TIMEOUT:.0f}s after deletion", pytrace=False)
