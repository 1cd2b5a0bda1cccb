"""The operator with its trials on the real node: shell trials in containers of the node's busybox
image (the project's own images come from the image pipeline), and trials whose containers the
kubelet cannot start - a wrong image tag, a root image under the operator's runAsNonRoot default.
The operator runs as a process on the host, as in tests/e2e/test_operator.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubetune_harness import (
    Cluster,
    OperatorProcess,
    condition,
    fresh_namespace,
    install_crds,
    score_job,
    wait_for,
)

from kubetune_dev.cluster import ClusterInfo
from kubetune_dev.realcluster import node_images

pytestmark = pytest.mark.realnode

# Positional arguments keep ${params.x} out of the script text (it is substituted literally).
TRIAL_SCRIPT = 'sleep 1; printf \'{"status":"completed","metrics":{"score":%s}}\' "$1" > /dev/termination-log'


@pytest.fixture(scope="module")
def real_tuning(
    real_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, OperatorProcess]]:
    api = config.new_client_from_config(config_file=str(real_cluster.kubeconfig))
    install_crds(api)
    namespace = fresh_namespace(client.CoreV1Api(api), "real-tune")
    operator = OperatorProcess(
        real_cluster.kubeconfig,
        real_cluster.prometheus_url,
        tmp_path_factory.mktemp("operator") / "operator.log",
        KUBETUNE_NAMESPACES=namespace,
    )
    operator.start()
    yield Cluster(api, namespace), operator
    operator.stop()
    client.CoreV1Api(api).delete_namespace(namespace)
    api.close()


def shell_job(name: str, image: str, **budget: int) -> dict[str, Any]:
    container = {"name": "trial", "image": image, "command": ["sh", "-c", TRIAL_SCRIPT, "trial", "${params.x}"]}
    return score_job(name, {"template": {"spec": {"containers": [container]}}},
                     {"maxTrials": 4, "parallelism": 2, **budget})


def test_a_job_of_container_trials_succeeds_on_the_real_node(
    real_cluster: ClusterInfo, real_tuning: tuple[Cluster, OperatorProcess]
) -> None:
    cluster, operator = real_tuning
    image = node_images(real_cluster.bin_dir)["busybox-nonroot"].name
    cluster.create_job(shell_job("shells", image))
    job = cluster.wait_finished("shells", timeout=300)
    assert job["status"]["phase"] == "Succeeded", (job["status"], operator.log_tail())
    trials = cluster.trials("shells")
    assert len(trials) == 4 and all(t["status"]["phase"] == "Succeeded" for t in trials)
    best = max(trials, key=lambda t: t["status"]["metrics"]["score"])
    assert job["status"]["bestTrial"]["name"] == best["metadata"]["name"]
    for pod in cluster.pods("shells"):
        assert pod.spec.node_name == real_cluster.node_name
        status = pod.status.container_statuses[0]
        assert status.container_id.startswith("containerd://")
        assert status.image_id.startswith("sha256:") or "@sha256:" in status.image_id
        # The operator's restricted defaults reached the runtime: the container ran as the image's user.
        assert pod.spec.security_context.run_as_non_root is True


@pytest.mark.parametrize("case", ["wrong-tag", "root-image"])
def test_trials_the_kubelet_cannot_start_say_why_and_fail_after_the_timeout(
    real_cluster: ClusterInfo, real_tuning: tuple[Cluster, OperatorProcess], case: str
) -> None:
    cluster, operator = real_tuning
    images = node_images(real_cluster.bin_dir)
    if case == "wrong-tag":
        image, reasons = "kubetune.local/busybox:no-such-tag", {"ErrImagePull", "ImagePullBackOff"}
    else:
        image, reasons = images["busybox"].name, {"CreateContainerConfigError"}
    manifest = shell_job(case, image, maxTrials=2, maxFailedTrials=1)
    manifest["spec"]["trialTemplate"]["notStartingTimeoutSeconds"] = 20
    cluster.create_job(manifest)

    def shown() -> dict[str, Any] | None:
        found = condition(cluster.job(case), "TrialsNotStarting")
        return found if found and found["status"] == "True" else None

    shown_condition = wait_for("the job's TrialsNotStarting condition", shown, timeout=120)
    assert shown_condition["reason"] in reasons, shown_condition
    if case == "wrong-tag":
        assert image in shown_condition["message"], shown_condition
    else:
        assert "runAsNonRoot and image will run as root" in shown_condition["message"], shown_condition
        assert "runAsUser" in shown_condition["message"], shown_condition  # the fix is named
    job = cluster.wait_finished(case, timeout=300)
    assert job["status"]["phase"] == "Failed", (job["status"], operator.log_tail())
    assert condition(job, "Failed")["reason"] == "TooManyFailedTrials"
    assert all(t["status"]["phase"] == "Failed" and t["status"]["reason"] in reasons for t in cluster.trials(case))


def test_a_trial_over_its_memory_limit_is_retried_then_fails_as_oom_killed(
    real_cluster: ClusterInfo, real_tuning: tuple[Cluster, OperatorProcess]
) -> None:
    """The kernel kills the trial's main process at its cgroup's limit; the kubelet reports exit 137
    OOMKilled; the operator retries per trialTemplate.retries, then fails the trial with that reason."""
    cluster, operator = real_tuning
    image = node_images(real_cluster.bin_dir)["busybox-nonroot"].name
    manifest = shell_job("hungry", image, maxTrials=1, parallelism=1, maxFailedTrials=1)
    template = manifest["spec"]["trialTemplate"]
    template["retries"] = 1
    container = template["template"]["spec"]["containers"][0]
    container["command"] = ["sh", "-c", "exec dd if=/dev/zero of=/dev/null bs=256M count=4"]
    container["resources"] = {"limits": {"memory": "64Mi"}}
    cluster.create_job(manifest)
    job = cluster.wait_finished("hungry", timeout=300)
    assert job["status"]["phase"] == "Failed", (job["status"], operator.log_tail())
    (trial,) = cluster.trials("hungry")
    assert trial["status"]["phase"] == "Failed" and trial["status"]["reason"] == "OOMKilled", trial["status"]
    assert trial["status"]["attempts"] == 2
    pods = cluster.pods("hungry")
    assert len(pods) == 2
    for pod in pods:
        terminated = pod.status.container_statuses[0].state.terminated
        assert (terminated.exit_code, terminated.reason) == (137, "OOMKilled")
    reasons = [e.reason for e in cluster.events(trial["metadata"]["name"])]
    assert "TrialRetried" in reasons and "TrialFailed" in reasons, reasons
