"""The user's path on the real node: the chart installed with the operator image pulled by digest from
the local registry, the operator a real container (non-root, read-only root filesystem, Pod Security
`restricted`), and an example TuningJob whose every trial is a container of the trainer image
(`ghcr.io/kubetune/trainer:0.1.0`, found through containerd's mirror of ghcr.io). Markers realnode, images.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubetune_harness import REPO, Cluster, create_namespace

from kubetune_dev import images
from kubetune_dev.cluster import ClusterInfo
from kubetune_dev.testing import Kube

pytestmark = [pytest.mark.realnode, pytest.mark.images]

RELEASE, RELEASE_NAMESPACE = "kubetune", "kubetune-system"


def helm(cluster: ClusterInfo, home: Path, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    done = subprocess.run([str(cluster.bin_dir / "helm"), *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stderr}{done.stdout}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(real_cluster: ClusterInfo, real_kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`helm install` with the operator image by digest; yields the digest."""
    image = images.load_state().get("operator")
    assert image is not None, "no operator image: run `make images`"
    home = tmp_path_factory.mktemp("helm")
    create_namespace(real_kube.core, RELEASE_NAMESPACE)  # Pod Security `restricted`
    helm(real_cluster, home, "install", RELEASE, str(REPO / "helm" / "kubetune"), "--namespace", RELEASE_NAMESPACE,
         "--set", f"image.registry={real_cluster.registry}", "--set", f"image.digest={image['digest']}",
         "--set", f"operator.prometheusUrl={real_cluster.pod_prometheus_url}",
         "--set", "operator.metricsPollSeconds=1", "--wait", "--timeout", "10m")
    yield image["digest"]
    helm(real_cluster, home, "uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait")


def test_the_chart_runs_the_operator_image_and_an_example_job_of_trainer_containers(
    installed: str, real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str
) -> None:
    (operator,) = real_kube.core.list_namespaced_pod(
        RELEASE_NAMESPACE, label_selector="app.kubernetes.io/component=operator").items
    container = operator.spec.containers[0]
    assert container.image == f"{real_cluster.registry}/kubetune/operator@{installed}"
    assert operator.status.container_statuses[0].image_id.endswith(installed)
    assert container.security_context.read_only_root_filesystem is True
    assert operator.spec.security_context.run_as_non_root is True

    cluster = Cluster(real_kube.api_client, real_namespace)
    cluster.apply_example("digits-random.yaml", budget={"maxTrials": 3, "parallelism": 2, "maxFailedTrials": 0})
    job = cluster.wait_finished("digits-random", timeout=1200)
    trials = cluster.trials("digits-random")
    failures = [(t["metadata"]["name"], (t.get("status") or {}).get("message")) for t in trials
                if (t.get("status") or {}).get("phase") != "Succeeded"]
    assert job["status"]["phase"] == "Succeeded", (job["status"].get("conditions"), failures)
    assert len(trials) == 3 and not failures
    best = job["status"]["bestTrial"]
    assert best["objective"] == max(t["status"]["objective"] for t in trials)
    trainer = images.load_state().get("trainer")
    assert trainer is not None, "no trainer image: run `make images`"
    for pod in cluster.pods("digits-random"):
        assert pod.spec.containers[0].image == "ghcr.io/kubetune/trainer:0.1.0"
        # containerd pulled, through its ghcr.io mirror, exactly the trainer `make images` built.
        assert pod.status.container_statuses[0].image_id.endswith(trainer["digest"]), \
            (pod.status.container_statuses[0].image_id, trainer["digest"])
        assert pod.status.pod_ip and pod.status.host_ip != pod.status.pod_ip  # a pod IP on the node's bridge
