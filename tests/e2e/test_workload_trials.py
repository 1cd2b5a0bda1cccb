"""Workload trials (trialTemplate.workload) with the node agent: each trial an indexed batch Job of two pods,
run by the controller manager's real Job controller; rank 0 (completion index 0) reports the result."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubetune_harness import Cluster, OperatorProcess, fresh_namespace, indexed_job, install_crds, wait_for

from kubetune_dev.cluster import ClusterInfo

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tuning(dev_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Cluster, OperatorProcess, client.ApiClient]]:
    api = config.new_client_from_config(config_file=str(dev_cluster.kubeconfig))
    install_crds(api)
    namespace = fresh_namespace(client.CoreV1Api(api), "workloads")
    operator = OperatorProcess(
        dev_cluster.kubeconfig, dev_cluster.prometheus_url, tmp_path_factory.mktemp("operator") / "operator.log",
        KUBETUNE_NAMESPACES=namespace, KUBETUNE_WORKLOAD_KINDS="batch/v1/jobs",
    )
    operator.start()
    yield Cluster(api, namespace), operator, api
    operator.stop()
    client.CoreV1Api(api).delete_namespace(namespace)
    api.close()


def jobs_of(api: client.ApiClient, cluster: Cluster, name: str) -> list[Any]:
    batch = client.BatchV1Api(api)
    return list(batch.list_namespaced_job(cluster.namespace, label_selector=f"kubetune.io/job={name}").items)


def test_indexed_job_trials_complete_with_rank_zero_objective_and_go_with_the_job(
    tuning: tuple[Cluster, OperatorProcess, client.ApiClient]
) -> None:
    cluster, operator, api = tuning
    cluster.create_job(indexed_job("indexed", "ok"))
    job = cluster.wait_finished("indexed", timeout=300)
    assert job["status"]["phase"] == "Succeeded", (job["status"], operator.log_tail())
    trials = cluster.trials("indexed")
    assert len(trials) == 3 and all(t["status"]["phase"] == "Succeeded" for t in trials)
    for t in trials:  # the objective is rank 0's: the trial's own parameter
        assert t["status"]["objective"] == pytest.approx(float(t["spec"]["parameters"]["x"]))
    best = max(trials, key=lambda t: t["status"]["objective"])
    assert job["status"]["bestTrial"]["name"] == best["metadata"]["name"]
    jobs = jobs_of(api, cluster, "indexed")
    assert sorted(j.metadata.name for j in jobs) == sorted(f"{t['metadata']['name']}-1" for t in trials)
    assert all(j.metadata.owner_references[0].kind == "Trial" for j in jobs)
    assert len(cluster.pods("indexed")) == 6  # two pods per trial, each with the trial's labels

    cluster.custom.delete_namespaced_custom_object("kubetune.io", "v1alpha1", cluster.namespace, "tuningjobs",
                                                   "indexed", propagation_policy="Foreground")
    wait_for("the Jobs of the deleted job to go", lambda: not jobs_of(api, cluster, "indexed") or None, timeout=300)
    wait_for("the pods of the deleted job to go", lambda: not cluster.pods("indexed") or None, timeout=300)


def test_a_failed_rank_retries_the_whole_workload_then_fails_the_trial(
    tuning: tuple[Cluster, OperatorProcess, client.ApiClient]
) -> None:
    cluster, operator, api = tuning
    cluster.create_job(indexed_job("broken", "fail", maxTrials=1, parallelism=1, maxFailedTrials=0))
    job = cluster.wait_finished("broken", timeout=300)
    assert job["status"]["phase"] == "Failed", (job["status"], operator.log_tail())
    (t,) = cluster.trials("broken")
    assert t["status"]["phase"] == "Failed" and t["status"]["attempts"] == 2, t["status"]
    assert t["status"]["reason"] in ("BackoffLimitExceeded", "FailedIndexes"), t["status"]
    assert sorted(j.metadata.name for j in jobs_of(api, cluster, "broken")) == ["broken-0-1", "broken-0-2"]


def test_a_workload_whose_pods_are_refused_fails_per_the_not_starting_policy(
    tuning: tuple[Cluster, OperatorProcess, client.ApiClient]
) -> None:
    """A ResourceQuota of no pods: the Job controller can create none, the Job has no condition to say so,
    and the trial must not wait forever."""
    cluster, operator, api = tuning
    quota = client.V1ResourceQuota(metadata=client.V1ObjectMeta(name="no-pods"),
                                   spec=client.V1ResourceQuotaSpec(hard={"pods": "0"}))
    client.CoreV1Api(api).create_namespaced_resource_quota(cluster.namespace, quota)
    try:
        manifest = indexed_job("refused", "ok", maxTrials=1, parallelism=1, maxFailedTrials=0)
        manifest["spec"]["trialTemplate"]["notStartingTimeoutSeconds"] = 30
        cluster.create_job(manifest)
        job = cluster.wait_finished("refused", timeout=300)
    finally:
        client.CoreV1Api(api).delete_namespaced_resource_quota("no-pods", cluster.namespace)
    assert job["status"]["phase"] == "Failed", (job["status"], operator.log_tail())
    (t,) = cluster.trials("refused")
    assert t["status"]["phase"] == "Failed" and t["status"]["reason"] == "PodsNotCreated", t["status"]
    assert "Job refused-0-1 has created no pod" in t["status"]["message"] and t["status"]["attempts"] == 1
    assert not cluster.pods("refused")
    wait_for("the refused trial's Job to be deleted", lambda: not jobs_of(api, cluster, "refused") or None,
             timeout=300)


def test_a_listed_kind_the_api_server_does_not_serve_fails_only_its_jobs(
    dev_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """KUBETUNE_WORKLOAD_KINDS names a kind no CRD serves: Kopf would hold every handler until it could list
    it. The operator leaves that kind unwatched, says so in its log, runs the other jobs, and fails the job whose
    trials are of that kind with the API server's answer."""
    api = config.new_client_from_config(config_file=str(dev_cluster.kubeconfig))
    cluster = Cluster(api, fresh_namespace(client.CoreV1Api(api), "unserved"))
    operator = OperatorProcess(
        dev_cluster.kubeconfig, dev_cluster.prometheus_url, tmp_path_factory.mktemp("operator") / "operator.log",
        KUBETUNE_NAMESPACES=cluster.namespace, KUBETUNE_WORKLOAD_KINDS="batch/v1/jobs,example.com/v1/widgets",
    )
    operator.start()
    try:
        cluster.create_job(indexed_job("served", "ok", maxTrials=1, parallelism=1))
        widgets = indexed_job("widgets", "ok", maxTrials=1, parallelism=1)
        widgets["spec"]["trialTemplate"]["workload"].update(
            apiVersion="example.com/v1", kind="Widget", successCondition="Complete", failureCondition="Failed",
            podTemplates=["spec.template"])
        cluster.create_job(widgets)
        served = cluster.wait_finished("served", timeout=300)
        assert served["status"]["phase"] == "Succeeded", (served["status"], operator.log_tail())
        refused = cluster.wait_finished("widgets", timeout=60)
        assert refused["status"]["phase"] == "Failed", refused["status"]
        assert "does not serve widgets.example.com v1" in refused["status"]["message"], refused["status"]
        assert not cluster.trials("widgets")
        assert "not watching the workload kind example.com/v1/widgets" in operator.log_path.read_text()
    finally:
        operator.stop()
        client.CoreV1Api(api).delete_namespace(cluster.namespace)
        api.close()
