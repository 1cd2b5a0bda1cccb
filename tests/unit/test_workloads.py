"""Trials of any workload kind: the API, the pure builder, the view of a workload's state and the planner."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from kubetune.api import TuningJob
from kubetune.controller import naming
from kubetune.controller.observe import condition_met, workload_view
from kubetune.controller.planner import CreatePod, CreateTrial, DeletePod, PatchTrialStatus
from kubetune.controller.templates import (
    JOB_COMPLETION_INDEX,
    JOBSET_JOB_INDEX,
    JOBSET_REPLICATED_JOB,
    Resource,
    build_trial_workload,
    reporting_selector,
)
from tests.unit.test_planner import NOW, make_job, report, run, trial

TRAINER = {
    "name": "trainer",
    "image": "kubetune/trainer:dev",
    "command": ["torchrun", "--nnodes=2", "-m", "kubetune_trainer"],
    "args": ["--lr=${params.lr}", "--optimizer", "${params.optimizer}"],
}
JOBSET_SPEC: dict[str, Any] = {
    "failurePolicy": {"maxRestarts": 0},
    "replicatedJobs": [{
        "name": "workers",
        "replicas": 1,
        "template": {"spec": {
            "completionMode": "Indexed", "completions": 2, "parallelism": 2, "backoffLimit": 0,
            "template": {"metadata": {"labels": {"team": "ml"}},
                         "spec": {"restartPolicy": "Never", "containers": [TRAINER]}},
        }},
    }],
}
JOB_SPEC: dict[str, Any] = {
    "completionMode": "Indexed", "completions": 2, "parallelism": 2, "backoffLimit": 0,
    "template": {"spec": {"restartPolicy": "Never", "containers": [TRAINER]}},
}
JOBSET = Resource("jobset.x-k8s.io", "v1alpha2", "jobsets")


def jobset_job(**workload_changes: Any) -> TuningJob:
    workload = {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "spec": copy.deepcopy(JOBSET_SPEC)}
    workload.update(workload_changes)
    return make_job(trialTemplate={"retries": 1, "workload": workload})


def indexed_job() -> TuningJob:
    return make_job(trialTemplate={"workload": {"apiVersion": "batch/v1", "kind": "Job",
                                                "spec": copy.deepcopy(JOB_SPEC)}})


PARAMS = {"lr": 0.01, "optimizer": "adam$(HOME)"}


# --------------------------------------------------------------------------- API


def test_a_trial_template_has_exactly_one_of_pod_and_workload() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        make_job(trialTemplate={"workload": {"apiVersion": "batch/v1", "kind": "Job", "spec": JOB_SPEC},
                                "template": {"spec": {"containers": [TRAINER]}}})
    with pytest.raises(ValidationError, match="exactly one"):
        make_job(trialTemplate={"retries": 1})


def test_an_unknown_kind_must_say_how_it_ends_and_where_its_pods_are() -> None:
    train_job = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "spec": {"trainer": {}}}
    with pytest.raises(ValidationError, match="successCondition, failureCondition and podTemplates"):
        make_job(trialTemplate={"workload": train_job})
    job = make_job(trialTemplate={"workload": {
        **train_job, "successCondition": "Complete", "failureCondition": "Failed",
        "podTemplates": ["spec.podTemplateOverrides[*]"], "containers": ["spec.trainer"]}})
    assert job.spec.trial_template.workload is not None
    assert job.spec.trial_template.workload.plural == "trainjobs"


def test_the_crd_says_exactly_one_of_template_and_workload() -> None:
    from kubetune.api.crd import build_crds

    crd = build_crds()["kubetune.io_tuningjobs.yaml"]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    rules = [r["rule"] for r in schema["trialTemplate"]["x-kubernetes-validations"]]
    assert "has(self.template) != has(self.workload)" in rules
    assert schema["trialTemplate"]["properties"]["workload"]["properties"]["spec"][
        "x-kubernetes-preserve-unknown-fields"] is True


# --------------------------------------------------------------------------- builder


def test_a_jobset_trial_is_rendered_with_parameters_literal_and_labels_on_every_pod() -> None:
    job = jobset_job()
    manifest = build_trial_workload(job, "digits-3", 2, PARAMS, "uid-trial")
    assert manifest["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and manifest["kind"] == "JobSet"
    assert manifest["metadata"]["name"] == "digits-3-2"
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-trial"
    assert manifest["metadata"]["labels"][naming.LABEL_TRIAL] == "digits-3"
    pod = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert labels[naming.LABEL_TRIAL] == "digits-3" and labels[naming.LABEL_ATTEMPT] == "2"
    assert labels[naming.LABEL_JOB] == "digits" and labels["team"] == "ml"
    container = pod["spec"]["containers"][0]
    # `$` doubled: the kubelet's $(VAR) expansion cannot alter a parameter's value.
    assert container["args"] == ["--lr=0.01", "--optimizer", "adam$$(HOME)"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBETUNE_PARAM_LR"] == "0.01" and env["KUBETUNE_TRIAL"] == "digits-3"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    # The template itself is untouched.
    assert JOBSET_SPEC["replicatedJobs"][0]["template"]["spec"]["template"]["metadata"]["labels"] == {"team": "ml"}


def test_containers_paths_get_the_parameters_too() -> None:
    job = make_job(trialTemplate={"workload": {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "successCondition": "Complete",
        "failureCondition": "Failed", "podTemplates": ["spec.podTemplateOverrides[*]"],
        "containers": ["spec.trainer"],
        "spec": {"runtimeRef": {"name": "torch-distributed"},
                 "trainer": {"numNodes": 2, "args": ["--lr=${params.lr}"]},
                 "podTemplateOverrides": [{"targetJobs": [{"name": "node"}], "metadata": {}}]}}})
    manifest = build_trial_workload(job, "digits-0", 1, PARAMS, None)
    trainer = manifest["spec"]["trainer"]
    assert trainer["args"] == ["--lr=0.01"]
    assert {e["name"] for e in trainer["env"]} >= {"KUBETUNE_PARAM_LR", "KUBETUNE_PARAMS"}
    assert manifest["spec"]["podTemplateOverrides"][0]["metadata"]["labels"][naming.LABEL_TRIAL] == "digits-0"
    assert "ownerReferences" not in manifest["metadata"]


def test_reporting_pod_defaults_to_rank_zero() -> None:
    jobset = jobset_job().spec.trial_template.workload
    assert jobset is not None
    assert reporting_selector(jobset) == {JOBSET_REPLICATED_JOB: "workers", JOBSET_JOB_INDEX: "0",
                                          JOB_COMPLETION_INDEX: "0"}
    batch = indexed_job().spec.trial_template.workload
    assert batch is not None
    assert reporting_selector(batch) == {JOB_COMPLETION_INDEX: "0"}
    own = jobset_job(reportingPod={"role": "leader"}).spec.trial_template.workload
    assert own is not None and reporting_selector(own) == {"role": "leader"}


# --------------------------------------------------------------------------- conditions and views


def workload_body(name: str, conditions: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    trial_name = name.rsplit("-", 1)[0]
    return {"metadata": {"name": name, "labels": {naming.LABEL_TRIAL: trial_name, naming.LABEL_JOB: "digits"},
                         "creationTimestamp": "2026-11-29T11:58:00Z"},
            "status": {"conditions": conditions or [], **status}}


def worker(trial_name: str, attempt: int, index: int, phase: str, message: str | None = None,
           waiting: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if phase in ("Succeeded", "Failed"):
        state["terminated"] = {"exitCode": 0 if phase == "Succeeded" else 137, "message": message,
                               "startedAt": "2026-11-29T11:59:00Z", "finishedAt": "2026-11-29T11:59:30Z"}
    elif phase == "Running":
        state["running"] = {"startedAt": "2026-11-29T11:59:00Z"}
    elif waiting:
        state["waiting"] = {"reason": waiting, "message": "back-off pulling image"}
    return {"metadata": {"name": f"{trial_name}-{attempt}-workers-0-{index}-abcde",
                         "creationTimestamp": "2026-11-29T11:58:10Z",
                         "labels": {naming.LABEL_TRIAL: trial_name, naming.LABEL_ATTEMPT: str(attempt),
                                    JOBSET_REPLICATED_JOB: "workers", JOBSET_JOB_INDEX: "0",
                                    JOB_COMPLETION_INDEX: str(index)}},
            "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]}}


RANK0 = {JOBSET_REPLICATED_JOB: "workers", JOBSET_JOB_INDEX: "0", JOB_COMPLETION_INDEX: "0"}


def test_conditions_are_a_condition_type_or_cel_over_the_object() -> None:
    body = workload_body("digits-0-1", [{"type": "Completed", "status": "True", "reason": "AllJobsCompleted"}],
                         succeeded=2)
    assert condition_met(body, "Completed") == (True, "AllJobsCompleted", None)
    assert condition_met(body, "Failed")[0] is False
    assert condition_met(body, "object.status.succeeded >= 2")[0] is True
    assert condition_met(body, "object.status.failed > 0")[0] is False  # absent field: not yet


def test_a_succeeded_jobset_reports_from_rank_zero() -> None:
    body = workload_body("digits-0-1", [{"type": "Completed", "status": "True"}])
    pods = [worker("digits-0", 1, 1, "Succeeded", "rank 1 has nothing to say"),
            worker("digits-0", 1, 0, "Succeeded", report(0.93))]
    view = workload_view(body, pods, "Completed", "Failed", RANK0, "trainer")
    assert view is not None and view.phase == "Succeeded" and view.attempt == 1
    assert view.report() is not None and view.report().metrics["val_accuracy"] == 0.93  # type: ignore[union-attr]


def test_a_jobset_runs_once_a_pod_runs_and_says_why_a_pod_cannot_start() -> None:
    body = workload_body("digits-0-1")
    running = workload_view(body, [worker("digits-0", 1, 0, "Running"), worker("digits-0", 1, 1, "Pending")],
                            "Completed", "Failed", RANK0)
    assert running is not None and running.phase == "Running"
    stuck = workload_view(body, [worker("digits-0", 1, 0, "Pending"),
                                 worker("digits-0", 1, 1, "Pending", waiting="ImagePullBackOff")],
                          "Completed", "Failed", RANK0)
    assert stuck is not None and stuck.phase == "Pending"
    assert stuck.not_starting is not None and stuck.not_starting[0] == "ImagePullBackOff"


def test_a_failed_jobset_fails_with_its_condition() -> None:
    body = workload_body("digits-0-1", [{"type": "Failed", "status": "True", "reason": "FailedJobs",
                                         "message": "jobset failed due to reaching max restarts"}])
    view = workload_view(body, [worker("digits-0", 1, 1, "Failed")], "Completed", "Failed", RANK0)
    assert view is not None and view.phase == "Failed" and view.reason == "FailedJobs"
    assert view.message is not None and "max restarts" in view.message


# --------------------------------------------------------------------------- planner


def test_a_new_job_creates_trials_as_workloads() -> None:
    job = jobset_job()
    result = run(job)
    created = result.of_type(CreateTrial)
    assert len(created) == 3
    assert all(c.resource == JOBSET and c.pod["kind"] == "JobSet" for c in created)
    assert created[0].pod["metadata"]["name"] == "digits-0-1"


def test_a_failed_workload_is_retried_as_a_new_workload_then_fails_the_trial() -> None:
    job = jobset_job()
    t = trial(job, 0, {"lr": 0.01, "optimizer": "adam"}, phase="Running", attempts=1)
    body = workload_body("digits-0-1", [{"type": "Failed", "status": "True", "reason": "FailedJobs",
                                         "message": "a worker was killed"}])
    view = workload_view(body, [worker("digits-0", 1, 1, "Failed")], "Completed", "Failed", RANK0)
    assert view is not None
    result = run(job, [t], [view])
    retry = result.of_type(CreatePod)
    assert len(retry) == 1 and retry[0].resource == JOBSET and retry[0].pod["metadata"]["name"] == "digits-0-2"
    t2 = trial(job, 0, {"lr": 0.01, "optimizer": "adam"}, phase="Pending", attempts=2)
    body2 = workload_body("digits-0-2", [{"type": "Failed", "status": "True", "reason": "FailedJobs"}])
    view2 = workload_view(body2, [], "Completed", "Failed", RANK0)
    assert view2 is not None
    final = run(job, [t2], [view, view2])
    status = next(a.status for a in final.of_type(PatchTrialStatus) if a.trial == "digits-0")
    assert status["phase"] == "Failed" and status["reason"] == "FailedJobs"


def test_a_succeeded_workload_gives_the_objective_of_rank_zero() -> None:
    job = jobset_job()
    t = trial(job, 0, {"lr": 0.01, "optimizer": "adam"}, phase="Running", attempts=1)
    body = workload_body("digits-0-1", [{"type": "Completed", "status": "True"}])
    view = workload_view(body, [worker("digits-0", 1, 0, "Succeeded", report(0.97)),
                                worker("digits-0", 1, 1, "Succeeded", report(0.1))], "Completed", "Failed", RANK0)
    assert view is not None
    result = run(job, [t], [view])
    status = next(a.status for a in result.of_type(PatchTrialStatus) if a.trial == "digits-0")
    assert status["phase"] == "Succeeded" and status["objective"] == 0.97


def test_a_finished_job_deletes_the_running_workloads_whole() -> None:
    job = jobset_job(spec=copy.deepcopy(JOBSET_SPEC))
    job.spec.objective.target = 0.9
    t0 = trial(job, 0, {"lr": 0.01, "optimizer": "adam"}, phase="Running", attempts=1)
    t1 = trial(job, 1, {"lr": 0.02, "optimizer": "sgd"}, phase="Running", attempts=1)
    done = workload_view(workload_body("digits-0-1", [{"type": "Completed", "status": "True"}]),
                         [worker("digits-0", 1, 0, "Succeeded", report(0.95))], "Completed", "Failed", RANK0)
    running = workload_view(workload_body("digits-1-1"), [worker("digits-1", 1, 0, "Running")],
                            "Completed", "Failed", RANK0)
    assert done is not None and running is not None
    result = run(job, [t0, t1], [done, running])
    deletions = result.of_type(DeletePod)
    assert [(d.name, d.resource) for d in deletions] == [("digits-1-1", JOBSET)]


@pytest.mark.parametrize(("age", "phase", "reason", "deleted"), [
    (5, "Running", None, False),  # its controller has not got to it yet: nothing to say
    (60, "Running", "PodsNotCreated", False),  # says why it waits (a quota, a webhook, no controller)
    (301, "Failed", "PodsNotCreated", True),  # notStartingTimeoutSeconds (300): fails, the workload goes
])
def test_a_workload_that_creates_no_pod_says_so_then_fails_per_the_not_starting_policy(
    age: int, phase: str, reason: str | None, deleted: bool
) -> None:
    job = jobset_job()
    t = trial(job, 0, {"lr": 0.01, "optimizer": "adam"}, phase="Running", attempts=1)
    body = workload_body("digits-0-1")
    body["metadata"]["creationTimestamp"] = (NOW - timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body["kind"] = "JobSet"
    view = workload_view(body, [], "Completed", "Failed", RANK0)
    assert view is not None and view.phase == "Pending"
    result = run(job, [t], [view])
    status = next((a.status for a in result.of_type(PatchTrialStatus) if a.trial == "digits-0"), {})
    assert status.get("phase", "Running") == phase and status.get("reason") == reason, status
    if reason is not None:
        assert "JobSet digits-0-1 has created no pod" in status["message"]
    assert [d.name for d in result.of_type(DeletePod)] == (["digits-0-1"] if deleted else [])


def test_a_bad_cel_condition_or_a_pod_template_path_that_matches_nothing_makes_the_job_invalid() -> None:
    result = run(jobset_job(successCondition="object.status.(("))
    assert result.status is not None and "CEL" in (result.status.message or "")
    missing = run(jobset_job(podTemplates=["spec.replicatedJobs[*].template.spec.nothing"]))
    assert missing.status is not None and "matches no object" in (missing.status.message or "")


def test_an_indexed_job_trial_is_a_batch_job() -> None:
    created = run(indexed_job()).of_type(CreateTrial)
    assert created[0].resource == Resource("batch", "v1", "jobs")
    spec = created[0].pod["spec"]
    assert spec["completions"] == 2 and spec["template"]["metadata"]["labels"][naming.LABEL_TRIAL] == "digits-0"
    assert json.dumps(spec).count("KUBETUNE_PARAM_LR") == 1
