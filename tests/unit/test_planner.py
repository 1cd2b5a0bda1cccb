"""The pure reconcile: from recorded cluster state to a plan, with the real search engine."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubetune.api import Trial, TuningJob
from kubetune.controller import naming
from kubetune.controller.engine import SearchEngine
from kubetune.controller.observe import PodView, pod_view
from kubetune.controller.planner import (
    CreatePod,
    CreateTrial,
    DeletePod,
    Event,
    Observations,
    PatchTrialStatus,
    Plan,
    PlannerSettings,
    plan,
)

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
ENGINE = SearchEngine()


def make_job(**spec_changes: Any) -> TuningJob:
    spec: dict[str, Any] = {
        "objective": {"metric": "val_accuracy", "goal": "maximize"},
        "parameters": [
            {"name": "lr", "type": "float", "min": 1e-4, "max": 1e-1, "log": True},
            {"name": "optimizer", "type": "categorical", "values": ["sgd", "adam"]},
        ],
        "algorithm": {"name": "random", "seed": 7},
        "budget": {"maxTrials": 5, "parallelism": 3, "maxFailedTrials": 1},
        "trialTemplate": {
            "retries": 1,
            "template": {
                "metadata": {"labels": {"team": "ml"}},
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "kubetune/trainer:dev",
                            "command": ["python", "-m", "kubetune_trainer"],
                            "args": ["--lr=${params.lr}", "--optimizer", "${params.optimizer}"],
                            "env": [{"name": "NOTE", "value": "opt=${params.optimizer}"}],
                        }
                    ]
                },
            },
        },
    }
    for key, value in spec_changes.items():
        spec[key] = value
    return TuningJob.model_validate(
        {
            "metadata": {"name": "digits", "namespace": "ml", "uid": "job-uid", "generation": 1},
            "spec": spec,
        }
    )


def trial(job: TuningJob, index: int, parameters: dict[str, Any], **status: Any) -> Trial:
    name = naming.trial_name(job.metadata.name, index)
    return Trial.model_validate(
        {
            "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}", "labels": {naming.LABEL_JOB: "digits"}},
            "spec": {"index": index, "parameters": parameters},
            "status": status,
        }
    )


def pod(trial_name: str, attempt: int, phase: str, *, exit_code: int | None = None, message: str | None = None,
        deleting: bool = False) -> PodView:
    body: dict[str, Any] = {
        "metadata": {
            "name": naming.pod_name(trial_name, attempt),
            "labels": {naming.LABEL_TRIAL: trial_name, naming.LABEL_JOB: "digits"},
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": {}}]},
    }
    if deleting:
        body["metadata"]["deletionTimestamp"] = "2026-11-29T12:00:00Z"
    state = body["status"]["containerStatuses"][0]["state"]
    if phase in ("Succeeded", "Failed"):
        state["terminated"] = {
            "exitCode": exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1),
            "reason": "Completed" if phase == "Succeeded" else "Error",
            "message": message,
            "startedAt": "2026-11-29T11:59:00Z",
            "finishedAt": "2026-11-29T11:59:30Z",
        }
    elif phase == "Running":
        state["running"] = {"startedAt": "2026-11-29T11:59:00Z"}
    view = pod_view(body, "trainer")
    assert view is not None
    return view


def report(accuracy: float, status: str = "completed") -> str:
    return json.dumps({"status": status, "step": 10, "metrics": {"val_accuracy": accuracy, "val_loss": 0.2},
                       "best": {"val_accuracy": accuracy}})


def run(job: TuningJob, trials: list[Trial] = (), pods: list[PodView] = (), **kwargs: Any) -> Plan:  # type: ignore[assignment]
    kwargs.setdefault("observations", Observations())
    kwargs.setdefault("now", NOW)
    return plan(job, list(trials), list(pods), engine=ENGINE, **kwargs)


def test_new_job_creates_a_wave_with_injected_parameters() -> None:
    job = make_job()
    result = run(job)
    creates = result.of_type(CreateTrial)
    assert [c.trial["metadata"]["name"] for c in creates] == ["digits-0", "digits-1", "digits-2"]
    first = creates[0]
    parameters = first.trial["spec"]["parameters"]
    assert 1e-4 <= parameters["lr"] <= 1e-1 and parameters["optimizer"] in ("sgd", "adam")
    assert first.trial["metadata"]["ownerReferences"][0]["uid"] == "job-uid"
    pod_manifest = first.pod
    assert pod_manifest["metadata"]["name"] == "digits-0-1"
    assert pod_manifest["metadata"]["labels"] | {"team": "ml"} == pod_manifest["metadata"]["labels"]
    assert pod_manifest["metadata"]["labels"][naming.LABEL_SCRAPE] == "true"
    container = pod_manifest["spec"]["containers"][0]
    assert container["args"] == [f"--lr={parameters['lr']!r}", "--optimizer", parameters["optimizer"]]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["KUBETUNE_PARAM_LR"] == repr(parameters["lr"])
    assert json.loads(env["KUBETUNE_PARAMS"]) == parameters
    assert env["NOTE"] == f"opt={parameters['optimizer']}"
    assert env["KUBETUNE_METRICS_ADDRESS"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert {"name": "metrics", "containerPort": 8000, "protocol": "TCP"} in container["ports"]
    assert pod_manifest["spec"]["restartPolicy"] == "Never"
    assert pod_manifest["spec"]["automountServiceAccountToken"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert result.status is not None
    assert result.status.phase == "Running" and result.status.counts.created == 3
    assert result.status.progress == "0/5"


def test_parameter_values_stay_inert_text() -> None:
    job = make_job(parameters=[{"name": "cmd", "type": "categorical", "values": ["; rm -rf / #", "$(reboot)"]}])
    for create in run(job).of_type(CreateTrial):
        value = create.trial["spec"]["parameters"]["cmd"]
        assert create.pod["spec"]["containers"][0]["args"] == ["--lr=", "--optimizer", ""]
        env = {e["name"]: e.get("value") for e in create.pod["spec"]["containers"][0]["env"]}
        assert env["KUBETUNE_PARAM_CMD"] == value
        assert create.pod["spec"]["containers"][0]["command"] == ["python", "-m", "kubetune_trainer"]


def test_unknown_placeholder_makes_the_job_invalid() -> None:
    job = make_job()
    job.spec.trial_template.template.spec.containers[0].__pydantic_extra__["args"] = ["${params.momentum}"]  # type: ignore[index]
    result = run(job)
    assert not result.of_type(CreateTrial)
    assert result.status is not None and result.status.phase == "Failed"
    valid = next(c for c in result.status.conditions if c.type == "Valid")
    assert valid.status == "False" and "${params.momentum}" in valid.message


def test_a_wave_in_flight_is_not_duplicated() -> None:
    job = make_job()
    trials = [trial(job, i, {"lr": 0.01, "optimizer": "sgd"}, phase="Pending", attempts=1) for i in range(3)]
    expected = frozenset(naming.pod_name(t.metadata.name, 1) for t in trials)
    result = run(job, trials, expected_pods=expected)
    assert not result.of_type(CreateTrial) and not result.of_type(CreatePod)


def test_success_records_objective_and_starts_the_next_trial() -> None:
    job = make_job()
    trials = [trial(job, i, {"lr": 0.01 * (i + 1), "optimizer": "sgd"}, phase="Running", attempts=1) for i in range(3)]
    pods = [pod("digits-0", 1, "Succeeded", message=report(0.91)), pod("digits-1", 1, "Running"),
            pod("digits-2", 1, "Running")]
    result = run(job, trials, pods)
    patch = next(a for a in result.of_type(PatchTrialStatus) if a.trial == "digits-0")
    assert patch.status["phase"] == "Succeeded" and patch.status["objective"] == 0.91
    assert patch.status["metrics"]["val_loss"] == 0.2
    assert [c.trial["metadata"]["name"] for c in result.of_type(CreateTrial)] == ["digits-3"]
    assert result.status is not None and result.status.best_trial is not None
    assert result.status.best_trial.name == "digits-0" and result.status.best_trial.objective == 0.91
    assert any(isinstance(a, Event) and a.reason == "TrialSucceeded" for a in result.actions)


def test_failed_attempt_is_retried_then_fails_the_job_past_the_budget() -> None:
    job = make_job()
    trials = [trial(job, i, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1) for i in range(3)]
    result = run(job, trials, [pod("digits-0", 1, "Failed", exit_code=1, message="boom"),
                                pod("digits-1", 1, "Running"), pod("digits-2", 1, "Running")])
    retry = result.of_type(CreatePod)
    assert [(r.trial, r.attempt, r.pod["metadata"]["name"]) for r in retry] == [("digits-0", 2, "digits-0-2")]
    assert retry[0].pod["metadata"]["ownerReferences"][0]["uid"] == "uid-digits-0"
    # Both attempts of two trials fail: 2 failed > maxFailedTrials 1.
    trials = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Pending", attempts=2),
              trial(job, 1, {"lr": 0.02, "optimizer": "sgd"}, phase="Pending", attempts=2),
              trial(job, 2, {"lr": 0.03, "optimizer": "sgd"}, phase="Running", attempts=1)]
    pods = [pod("digits-0", 1, "Failed"), pod("digits-0", 2, "Failed", exit_code=3, message="CUDA OOM"),
            pod("digits-1", 2, "Failed", exit_code=1), pod("digits-2", 1, "Running")]
    result = run(job, trials, pods)
    assert result.status is not None and result.status.phase == "Failed"
    failed = next(c for c in result.status.conditions if c.type == "Failed")
    assert failed.reason == "TooManyFailedTrials" and "exit code 1" in failed.message
    assert [d.name for d in result.of_type(DeletePod)] == ["digits-2-1"]
    stopped = next(a for a in result.of_type(PatchTrialStatus) if a.trial == "digits-2")
    assert stopped.status["phase"] == "Cancelled" and stopped.status["reason"] == "JobFinished"
    assert result.status.counts.cancelled == 1 and result.status.counts.early_stopped == 0
    assert any(isinstance(a, Event) and a.reason == "TrialCancelled" and a.name == "digits-2" for a in result.actions)
    assert not result.of_type(CreateTrial)


def test_a_lost_pod_counts_as_a_failed_attempt() -> None:
    job = make_job()
    trials = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1)]
    result = run(job, trials, [], expected_pods=frozenset())
    assert [p.attempt for p in result.of_type(CreatePod)] == [2]
    assert any(isinstance(a, Event) and "PodLost" in a.message for a in result.actions)
    # While the pod is expected (created a moment ago), nothing happens.
    quiet = run(job, trials, [], expected_pods=frozenset({"digits-0-1"}))
    assert not quiet.of_type(CreatePod)


def test_diverged_trial_is_not_retried() -> None:
    job = make_job()
    trials = [trial(job, 0, {"lr": 0.09, "optimizer": "sgd"}, phase="Running", attempts=1)]
    message = json.dumps({"status": "diverged", "reason": "loss is NaN at epoch 2", "metrics": {}})
    result = run(job, trials, [pod("digits-0", 1, "Failed", exit_code=3, message=message)])
    assert not result.of_type(CreatePod)
    patch = next(a for a in result.of_type(PatchTrialStatus) if a.trial == "digits-0")
    assert patch.status["phase"] == "Failed" and patch.status["reason"] == "Diverged"
    assert "NaN" in patch.status["message"]


def test_missing_metrics_fail_the_trial_unless_prometheus_has_them() -> None:
    job = make_job()
    trials = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1)]
    pods = [pod("digits-0", 1, "Succeeded", message="not json")]
    result = run(job, trials, pods)
    patch = next(a for a in result.of_type(PatchTrialStatus) if a.trial == "digits-0")
    assert patch.status["phase"] == "Failed" and patch.status["reason"] == "MetricsUnavailable"
    rescued = run(job, trials, pods, observations=Observations(finals={"digits-0": {"val_accuracy": 0.8}}))
    patch = next(a for a in rescued.of_type(PatchTrialStatus) if a.trial == "digits-0")
    assert patch.status["phase"] == "Succeeded" and patch.status["objective"] == 0.8


def test_target_reached_finishes_and_stops_the_rest() -> None:
    job = make_job(objective={"metric": "val_accuracy", "goal": "maximize", "target": 0.95})
    trials = [trial(job, i, {"lr": 0.01, "optimizer": "adam"}, phase="Running", attempts=1) for i in range(3)]
    pods = [pod("digits-0", 1, "Succeeded", message=report(0.97)), pod("digits-1", 1, "Running"),
            pod("digits-2", 1, "Pending")]
    result = run(job, trials, pods)
    assert result.status is not None and result.status.phase == "Succeeded"
    assert next(c for c in result.status.conditions if c.type == "Succeeded").reason == "TargetReached"
    assert sorted(d.name for d in result.of_type(DeletePod)) == ["digits-1-1", "digits-2-1"]
    assert not result.of_type(CreateTrial)
    assert result.status.completion_time is not None


def finished_job(job: TuningJob, count: int) -> tuple[list[Trial], list[PodView]]:
    trials = [trial(job, i, {"lr": 0.01, "optimizer": "sgd"}, phase="Succeeded", attempts=1, objective=0.5 + i / 100)
              for i in range(count)]
    pods = [pod(t.metadata.name, 1, "Succeeded", message=report(t.status.objective or 0)) for t in trials]
    return trials, pods


def test_all_trials_done_succeeds_and_raising_max_trials_continues() -> None:
    job = make_job()
    trials, pods = finished_job(job, 5)
    result = run(job, trials, pods)
    assert result.status is not None and result.status.phase == "Succeeded"
    assert result.status.progress == "5/5" and result.status.best_trial is not None
    assert result.status.best_trial.name == "digits-4"
    finished = copy.deepcopy(job)
    finished.status = result.status
    more = finished.model_copy(deep=True)
    more.spec.budget.max_trials = 7
    again = run(more, trials, pods)
    assert [c.trial["metadata"]["name"] for c in again.of_type(CreateTrial)] == ["digits-5", "digits-6"]
    assert again.status is not None and again.status.phase == "Running"
    assert not any(c.type == "Succeeded" for c in again.status.conditions)


def test_suspend_starts_nothing_new() -> None:
    job = make_job(suspend=True)
    result = run(job)
    assert not result.of_type(CreateTrial)
    assert result.status is not None and result.status.phase == "Suspended"


def test_deadline_stops_running_trials() -> None:
    job = make_job(budget={"maxTrials": 5, "parallelism": 1, "activeDeadlineSeconds": 60})
    job.status.start_time = (NOW - timedelta(seconds=61)).strftime("%Y-%m-%dT%H:%M:%SZ")
    trials, pods = finished_job(job, 1)
    trials.append(trial(job, 1, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1))
    pods.append(pod("digits-1", 1, "Running"))
    result = run(job, trials, pods)
    assert result.status is not None and result.status.phase == "Succeeded"
    assert next(c for c in result.status.conditions if c.type == "Succeeded").reason == "DeadlineExceeded"
    assert [d.name for d in result.of_type(DeletePod)] == ["digits-1-1"]


def test_median_rule_stops_the_laggard_from_prometheus_curves() -> None:
    job = make_job(
        earlyStopping={"rule": "median", "minResource": 2, "minTrials": 3},
        budget={"maxTrials": 6, "parallelism": 6},
    )
    good = [(float(s), 0.5 + 0.05 * s) for s in range(1, 6)]
    trials: list[Trial] = []
    for i in range(4):
        trials.append(trial(job, i, {"lr": 0.01, "optimizer": "adam"}, phase="Succeeded", attempts=1,
                            objective=good[-1][1], intermediate=[list(p) for p in good]))
    trials.append(trial(job, 4, {"lr": 0.09, "optimizer": "sgd"}, phase="Running", attempts=1))
    trials.append(trial(job, 5, {"lr": 0.02, "optimizer": "adam"}, phase="Running", attempts=1))
    pods = [pod(f"digits-{i}", 1, "Succeeded", message=report(0.75)) for i in range(4)]
    pods += [pod("digits-4", 1, "Running"), pod("digits-5", 1, "Running")]
    curves = {"digits-4": [(1.0, 0.1), (2.0, 0.11), (3.0, 0.12)], "digits-5": [(1.0, 0.56), (2.0, 0.61), (3.0, 0.66)]}
    result = run(job, trials, pods, observations=Observations(curves=curves))
    assert [d.name for d in result.of_type(DeletePod)] == ["digits-4-1"]
    stopped = next(a for a in result.of_type(PatchTrialStatus) if a.trial == "digits-4")
    assert stopped.status["phase"] == "EarlyStopped"
    assert stopped.status["earlyStopping"]["rule"] == "median"
    assert stopped.status["intermediate"] == [[1.0, 0.1], [2.0, 0.11], [3.0, 0.12]]
    assert result.requeue_after == 2.0


def test_prometheus_down_degrades_early_stopping_not_results() -> None:
    job = make_job(earlyStopping={"rule": "median"})
    trials = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1)]
    pods = [pod("digits-0", 1, "Succeeded", message=report(0.9))]
    down = Observations(problem=("PrometheusUnavailable", "connection refused"))
    result = run(job, trials, pods, observations=down)
    patch = next(a for a in result.of_type(PatchTrialStatus) if a.trial == "digits-0")
    assert patch.status["phase"] == "Succeeded" and patch.status["objective"] == 0.9
    assert result.status is not None
    metrics = next(c for c in result.status.conditions if c.type == "MetricsAvailable")
    assert metrics.status == "False" and metrics.reason == "PrometheusUnavailable"


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "EarlyStopped"])
def test_final_trials_never_change_and_their_running_pods_are_stopped(phase: str) -> None:
    job = make_job()
    trials = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase=phase, attempts=1, objective=0.3)]
    result = run(job, trials, [pod("digits-0", 1, "Running")])
    assert [d.name for d in result.of_type(DeletePod)] == ["digits-0-1"]
    assert not [a for a in result.of_type(PatchTrialStatus) if a.trial == "digits-0"]


def test_finished_pods_beyond_the_retention_are_deleted_once_their_result_is_stored() -> None:
    job = make_job(budget={"maxTrials": 10, "parallelism": 2})
    trials, pods = finished_job(job, 4)
    pods[0] = pod("digits-0", 2, "Succeeded", message=report(0.5))
    pods[2] = pod("digits-2", 1, "Succeeded", deleting=True)  # on its way out already: not counted
    pods.append(pod("digits-0", 1, "Failed"))  # an earlier attempt goes with its trial
    trials.append(trial(job, 4, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1))
    pods.append(pod("digits-4", 1, "Succeeded", message=report(0.8)))
    result = run(job, trials, pods, settings=PlannerSettings(keep_finished_pods=2))
    # Kept: the newest two of the stored finals; digits-4 just finished (result not stored yet) stays.
    assert sorted(d.name for d in result.of_type(DeletePod)) == ["digits-0-1", "digits-0-2"]
    assert next(a for a in result.of_type(PatchTrialStatus) if a.trial == "digits-4").status["objective"] == 0.8
    assert not run(job, trials, pods, settings=PlannerSettings(keep_finished_pods=None)).of_type(DeletePod)


def test_plans_are_deterministic() -> None:
    job = make_job()
    first = [c.trial["spec"] for c in run(job).of_type(CreateTrial)]
    second = [c.trial["spec"] for c in run(job).of_type(CreateTrial)]
    assert first == second


def test_a_pod_deleted_after_it_succeeded_still_gives_its_result() -> None:
    """An evicted pod whose process finished while its node was unreachable reports Succeeded, then goes:
    its result counts, and the trial is not run again."""
    job = make_job()
    trials = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1)]
    result = run(job, trials, [pod("digits-0", 1, "Succeeded", message=report(0.87), deleting=True)])
    patch = next(a for a in result.of_type(PatchTrialStatus) if a.trial == "digits-0")
    assert patch.status["phase"] == "Succeeded" and patch.status["objective"] == 0.87
    assert patch.status["attempts"] == 1
    assert not result.of_type(CreatePod)


def test_each_transition_has_one_event_identity_however_often_it_is_planned() -> None:
    """A reconcile from a cache that has not seen the last status write plans the same transitions again;
    their Events carry the same keys (hence the same names), so the API server keeps one of each."""
    job = make_job(budget={"maxTrials": 3, "parallelism": 3, "maxFailedTrials": 0})
    trials = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1),
              trial(job, 1, {"lr": 0.02, "optimizer": "sgd"}, phase="Running", attempts=2),
              trial(job, 2, {"lr": 0.03, "optimizer": "sgd"}, phase="Running", attempts=1)]
    pods = [pod("digits-0", 1, "Succeeded", message=report(0.9)), pod("digits-1", 2, "Failed"),
            pod("digits-2", 1, "Running")]
    first, again = run(job, trials, pods), run(job, trials, pods)
    events = first.of_type(Event)
    assert {e.reason for e in events} == {"TrialSucceeded", "TrialFailed", "TrialCancelled", "TooManyFailedTrials"}
    assert all(e.key for e in events)
    assert [e.key for e in events] == [e.key for e in again.of_type(Event)]
    assert len({e.key for e in events}) == len(events)
    # A retry is a transition of its own, per attempt.
    def trial_events(attempt: int, retries: int) -> list[str]:
        job = make_job(trialTemplate={**make_job().spec.trial_template.to_wire(), "retries": retries})
        running = trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=attempt)
        planned = run(job, [running], [pod("digits-0", attempt, "Failed")]).of_type(Event)
        return [e.key for e in planned if e.name == "digits-0"]

    assert trial_events(1, 2) == ["uid-digits-0/TrialRetried/1"]
    assert trial_events(2, 2) == ["uid-digits-0/TrialRetried/2"]
    assert trial_events(3, 2) == ["uid-digits-0/TrialFailed"]


def test_a_job_finishing_again_after_its_budget_was_raised_gets_a_new_event() -> None:
    job = make_job()
    trials, pods = finished_job(job, 5)
    done = [e for e in run(job, trials, pods).of_type(Event) if e.reason == "MaxTrialsReached"]
    more = make_job(budget={"maxTrials": 6, "parallelism": 3, "maxFailedTrials": 1})
    more.metadata.generation = 2
    trials6, pods6 = finished_job(more, 6)
    again = [e for e in run(more, trials6, pods6).of_type(Event) if e.reason == "MaxTrialsReached"]
    assert len(done) == len(again) == 1 and done[0].key != again[0].key


def test_another_operator_standing_by_is_a_condition_and_an_event_each_way() -> None:
    job = make_job()
    trials = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=1)]
    pods = [pod("digits-0", 1, "Running")]
    alone = run(job, trials, pods)
    assert alone.status is not None and not [c for c in alone.status.conditions if c.type == "DuplicateOperator"]
    job.status = alone.status
    crowded = run(job, trials, pods, other_operators=["team-a/kt-kubetune"])
    assert crowded.status is not None
    duplicate = next(c for c in crowded.status.conditions if c.type == "DuplicateOperator")
    assert duplicate.status == "True" and "team-a/kt-kubetune" in duplicate.message
    [warning] = [e for e in crowded.of_type(Event) if e.reason == "DuplicateOperator"]
    assert warning.type == "Warning"
    job.status = crowded.status
    gone = run(job, trials, pods)
    assert gone.status is not None
    assert next(c for c in gone.status.conditions if c.type == "DuplicateOperator").status == "False"
    assert [e.reason for e in gone.of_type(Event) if "Operator" in e.reason] == ["DuplicateOperatorGone"]
