"""Multi-node trials on the real node: each trial a JobSet or an indexed batch Job of two pods of the trainer
image running torchrun (DistributedDataParallel over gloo), rendezvous at rank 0 through a headless Service (the
JobSet's own, or the one in the indexed-Job example) and CoreDNS, run by the real JobSet, Job and
garbage-collector controllers. The operator runs as a host process (as in test_realnode_operator.py) and
watches JobSets and Jobs. Markers realnode, images (the trainer image must be built)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from example_manifests import EXAMPLES_DIR, companions, tuningjob
from kubernetes import client, config
from kubetune_harness import Cluster, OperatorProcess, fresh_namespace, install_crds, kubectl, wait_for

from kubetune_dev.cluster import ClusterInfo

# Torch in four containers on a small machine: minutes per job, more than the default per-test timeout.
pytestmark = [pytest.mark.realnode, pytest.mark.images, pytest.mark.timeout(1800)]

EXAMPLE = tuningjob(EXAMPLES_DIR / "digits-jobset-ddp.yaml")
INDEXED_JOB_EXAMPLE = EXAMPLES_DIR / "digits-indexed-job-ddp.yaml"
RANK = "batch.kubernetes.io/job-completion-index"


@pytest.fixture(scope="module")
def jobsets(real_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Cluster, OperatorProcess, client.CustomObjectsApi]]:
    api = config.new_client_from_config(config_file=str(real_cluster.kubeconfig))
    install_crds(api)
    namespace = fresh_namespace(client.CoreV1Api(api), "real-jobsets")
    operator = OperatorProcess(
        real_cluster.kubeconfig, real_cluster.prometheus_url, tmp_path_factory.mktemp("operator") / "operator.log",
        KUBETUNE_NAMESPACES=namespace, KUBETUNE_WORKLOAD_KINDS="jobset.x-k8s.io/v1alpha2/jobsets,batch/v1/jobs",
    )
    operator.start()
    yield Cluster(api, namespace), operator, client.CustomObjectsApi(api)
    operator.stop()
    client.CoreV1Api(api).delete_namespace(namespace)
    api.close()


def jobsets_of(custom: client.CustomObjectsApi, cluster: Cluster, job: str) -> list[dict[str, Any]]:
    listed = custom.list_namespaced_custom_object("jobset.x-k8s.io", "v1alpha2", cluster.namespace, "jobsets",
                                                  label_selector=f"kubetune.io/job={job}")
    return list(listed["items"])


def example(name: str, **spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(EXAMPLE)
    manifest["metadata"]["name"] = name
    manifest["spec"].update(spec)
    return manifest


def trainer_args(manifest: dict[str, Any], *args: str) -> None:
    [job] = manifest["spec"]["trialTemplate"]["workload"]["spec"]["replicatedJobs"]
    job["template"]["spec"]["template"]["spec"]["containers"][0]["args"] = ["--dataset=digits", "--model=mlp", *args]


def assert_rank_zero_results(real_cluster: ClusterInfo, cluster: Cluster, job: dict[str, Any]) -> None:
    """Every trial succeeded with two pods on the real node, in one process group of two; its objective is rank
    0's termination message (rank 1 reports nothing); the best trial is the maximum."""
    name = job["metadata"]["name"]
    trials = cluster.trials(name)
    assert len(trials) == 4 and all(t["status"]["phase"] == "Succeeded" for t in trials), [t["status"] for t in trials]
    # No attempt failed: retries would hide a rank that fails after training (as a SIGABRT at exit once did).
    assert all(t["status"]["attempts"] == 1 for t in trials), [t["status"] for t in trials]
    pods = cluster.pods(name)
    for t in trials:
        # The pods of the attempt that succeeded (an attempt that failed was retried as a new workload).
        own = {p.metadata.annotations[RANK]: p for p in pods if p.metadata.labels["kubetune.io/trial"] ==
               t["metadata"]["name"] and p.metadata.labels["kubetune.io/attempt"] == str(t["status"]["attempts"])}
        assert sorted(own) == ["0", "1"], own
        assert all(p.status.phase == "Succeeded" and p.spec.node_name == real_cluster.node_name for p in own.values())
        rank0, rank1 = (own[r].status.container_statuses[0].state.terminated for r in ("0", "1"))
        assert json.loads(rank0.message)["metrics"]["val_accuracy"] == t["status"]["objective"], rank0.message
        assert not rank1.message
        for rank, pod in own.items():  # the trainer logs its world on start
            log = kubectl(real_cluster, "logs", "-n", cluster.namespace, pod.metadata.name)
            assert f"rank {rank} of 2" in log, log[-2000:]
    best = max(trials, key=lambda t: t["status"]["objective"])
    assert job["status"]["bestTrial"]["name"] == best["metadata"]["name"]


def attempts(cluster: Cluster, name: str) -> set[str]:
    """The workload names `<trial>-<attempt>` of every attempt of the job's trials."""
    return {f"{t['metadata']['name']}-{a}" for t in cluster.trials(name) for a in range(1, t["status"]["attempts"] + 1)}


def delete_and_wait_gone(cluster: Cluster, name: str, workloads: Callable[[], list[Any]]) -> None:
    """Foreground deletion of the TuningJob takes its Trials, their workloads and every pod with it."""
    cluster.custom.delete_namespaced_custom_object("kubetune.io", "v1alpha1", cluster.namespace, "tuningjobs", name,
                                                   propagation_policy="Foreground")
    wait_for(f"the workloads of the deleted job {name} to go", lambda: not workloads() or None, timeout=300)
    wait_for(f"the pods of the deleted job {name} to go", lambda: not cluster.pods(name) or None, timeout=300)
    wait_for(f"the TuningJob {name} to go", lambda: not cluster.custom.list_namespaced_custom_object(
        "kubetune.io", "v1alpha1", cluster.namespace, "tuningjobs", field_selector=f"metadata.name={name}")["items"]
        or None, timeout=120)


def test_jobset_trials_of_two_torchrun_pods_complete_with_rank_zero_results_and_go_with_the_job(
    real_cluster: ClusterInfo, jobsets: tuple[Cluster, OperatorProcess, client.CustomObjectsApi]
) -> None:
    cluster, operator, custom = jobsets
    cluster.create_job(example("ddp"))
    job = cluster.wait_finished("ddp", timeout=1200)
    assert job["status"]["phase"] == "Succeeded", (job["status"], operator.log_tail())
    assert_rank_zero_results(real_cluster, cluster, job)
    assert {j["metadata"]["name"] for j in jobsets_of(custom, cluster, "ddp")} == attempts(cluster, "ddp")
    delete_and_wait_gone(cluster, "ddp", lambda: jobsets_of(custom, cluster, "ddp"))


def test_indexed_job_trials_of_two_torchrun_pods_rendezvous_through_a_headless_service(
    real_cluster: ClusterInfo, jobsets: tuple[Cluster, OperatorProcess, client.CustomObjectsApi]
) -> None:
    """examples/digits-indexed-job-ddp.yaml as `kubectl apply -f` creates it: the same training as an indexed
    batch Job per trial (completions 2, parallelism 2), whose pods (hostnames <job>-<index>) get DNS names from
    the headless Service in the same file."""
    cluster, operator, _ = jobsets
    [service] = companions(INDEXED_JOB_EXAMPLE)
    cluster.core.create_namespaced_service(cluster.namespace, service)
    manifest = tuningjob(INDEXED_JOB_EXAMPLE)
    name = manifest["metadata"]["name"]
    cluster.create_job(manifest)
    job = cluster.wait_finished(name, timeout=1200)
    assert job["status"]["phase"] == "Succeeded", (job["status"], operator.log_tail())
    assert_rank_zero_results(real_cluster, cluster, job)
    batch = client.BatchV1Api(cluster.core.api_client)

    def jobs() -> list[Any]:
        return list(batch.list_namespaced_job(cluster.namespace, label_selector=f"kubetune.io/job={name}").items)

    assert {j.metadata.name for j in jobs()} == attempts(cluster, name)
    delete_and_wait_gone(cluster, name, jobs)


def test_asha_stops_a_jobset_trial_by_deleting_its_jobset_and_pods(
    jobsets: tuple[Cluster, OperatorProcess, client.CustomObjectsApi]
) -> None:
    """A learning rate that cannot learn in a few epochs next to one that can: successive halving stops the
    weak trials at its first rungs; a stopped trial's whole JobSet goes, and with it both workers."""
    cluster, operator, custom = jobsets
    manifest = example(
        "ddp-asha",
        # Categorical keeps the grid's order: the strong trial runs first and sets each rung's bar.
        parameters=[{"name": "lr", "type": "categorical", "values": ["0.03", "0.00001", "0.00002", "0.00003"]},
                    {"name": "optimizer", "type": "categorical", "values": ["adam"]}],
        algorithm={"name": "grid"},
        earlyStopping={"rule": "asha", "resource": "epoch", "minResource": 1, "maxResource": 9,
                       "reductionFactor": 3},
    )
    trainer_args(manifest, "--epochs=9")
    cluster.create_job(manifest)
    job = cluster.wait_finished("ddp-asha", timeout=1200)
    assert job["status"]["phase"] == "Succeeded", (job["status"], operator.log_tail())
    trials = cluster.trials("ddp-asha")
    stopped = [t for t in trials if t["status"]["phase"] == "EarlyStopped"]
    assert stopped, [t["status"] for t in trials]
    for t in stopped:
        assert t["status"]["earlyStopping"]["rule"] == "asha" and t["status"]["earlyStopping"]["step"] < 9
    names = {f"{t['metadata']['name']}-1" for t in stopped}
    wait_for("the stopped trials' JobSets to go",
             lambda: not names & {j["metadata"]["name"] for j in jobsets_of(custom, cluster, "ddp-asha")} or None,
             timeout=300)
    stopped_trials = {t["metadata"]["name"] for t in stopped}
    wait_for("the stopped trials' pods to go",
             lambda: not [p for p in cluster.pods("ddp-asha") if p.metadata.labels["kubetune.io/trial"]
                          in stopped_trials] or None, timeout=300)


def test_killing_one_worker_fails_the_attempt_and_the_trial_runs_again_as_a_new_jobset(
    jobsets: tuple[Cluster, OperatorProcess, client.CustomObjectsApi]
) -> None:
    """Rank 1 killed mid-training: its Job fails (backoffLimit 0), the JobSet fails (maxRestarts 0), rank 0's
    collective errors instead of hanging, and the operator re-runs the trial once as a new JobSet."""
    cluster, operator, custom = jobsets
    manifest = example("ddp-kill", budget={"maxTrials": 1, "parallelism": 1, "maxFailedTrials": 1})
    trainer_args(manifest, "--epochs=40")
    cluster.create_job(manifest)

    def rank1_training() -> Any:
        trial = cluster.trials("ddp-kill")
        if not trial or (trial[0].get("status") or {}).get("phase") != "Running":
            return None
        return next((p for p in cluster.pods("ddp-kill") if p.metadata.annotations.get(RANK) == "1"
                     and p.status.phase == "Running"), None)

    victim = wait_for("rank 1 running", rank1_training, timeout=600)
    cluster.core.delete_namespaced_pod(victim.metadata.name, cluster.namespace, grace_period_seconds=0)
    job = cluster.wait_finished("ddp-kill", timeout=1200)
    (t,) = cluster.trials("ddp-kill")
    assert t["status"]["attempts"] == 2, (t["status"], operator.log_tail())
    assert t["status"]["phase"] == "Succeeded" and job["status"]["phase"] == "Succeeded", t["status"]
    names = {j["metadata"]["name"] for j in jobsets_of(custom, cluster, "ddp-kill")}
    assert "ddp-kill-0-2" in names, names
    assert not [p for p in cluster.pods("ddp-kill") if p.status.phase in ("Pending", "Running")]
