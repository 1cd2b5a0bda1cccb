"""The planner with several objectives: built-in costs from pod status, the Pareto front in the status (also
across the ledger), incomplete objectives, and single-objective jobs left as they were."""

from __future__ import annotations

import json
from typing import Any

from kubetune.api import GPU_SECONDS, WALL_SECONDS, Trial, TrialPhase, TuningJob
from kubetune.controller import naming
from kubetune.controller.engine import SearchEngine
from kubetune.controller.ledger import Ledger, dominates
from kubetune.controller.observe import PodView, pod_costs, pod_view, requested_gpus
from kubetune.controller.planner import CreateTrial, Observations, PatchTrialStatus, pareto_front, plan
from tests.unit.test_planner import NOW, make_job, run, trial

OBJECTIVES = [{"metric": "val_accuracy", "goal": "maximize"}, {"metric": GPU_SECONDS, "goal": "minimize"}]


def mo_job(objectives: list[dict[str, Any]] = OBJECTIVES) -> TuningJob:
    return make_job(objective=None, objectives=objectives)


def gpu_pod(trial_name: str, attempt: int, phase: str, gpus: int, started: str, finished: str | None,
            accuracy: float | None = None) -> PodView:
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    state: dict[str, Any] = {"running": {"startedAt": started}}
    if finished is not None:
        message = json.dumps({"status": "completed", "metrics": {"val_accuracy": accuracy}}) if accuracy else None
        state = {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1, "startedAt": started,
                                "finishedAt": finished, "message": message}}
    body = {
        "metadata": {"name": naming.pod_name(trial_name, attempt),
                     "labels": {naming.LABEL_TRIAL: trial_name, naming.LABEL_JOB: "digits"}},
        "spec": {"containers": [{"name": "trainer", "resources": {"limits": limits}}, {"name": "sidecar"}]},
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]},
    }
    view = pod_view(body, "trainer")
    assert view is not None
    return view


def succeeded(job: TuningJob, index: int, accuracy: float, gpu_seconds: float) -> Trial:
    return trial(job, index, {"lr": 0.01 * (index + 1), "optimizer": "adam"}, phase="Succeeded",
                 objective=accuracy, metrics={"val_accuracy": accuracy, GPU_SECONDS: gpu_seconds})


def test_requested_gpus_count_limits_else_requests_and_the_largest_init_container() -> None:
    assert requested_gpus({"containers": [{"resources": {"limits": {"nvidia.com/gpu": "2"}}},
                                          {"resources": {"requests": {"nvidia.com/gpu": 1}}}]}) == 3
    init = [{"resources": {"limits": {"nvidia.com/gpu": 4}}}]
    assert requested_gpus({"containers": [{}], "initContainers": init}) == 4
    assert requested_gpus({"containers": [{"resources": {"limits": {"cpu": "1"}}}]}) == 0


def test_costs_sum_gpus_times_running_seconds_over_every_finished_attempt() -> None:
    pods = [
        gpu_pod("digits-0", 1, "Failed", 2, "2026-11-29T11:00:00Z", "2026-11-29T11:00:10Z"),
        gpu_pod("digits-0", 2, "Succeeded", 2, "2026-11-29T11:01:00Z", "2026-11-29T11:01:30Z", 0.9),
        gpu_pod("digits-0", 3, "Running", 2, "2026-11-29T11:02:00Z", None),  # not finished: no cost yet
    ]
    assert pod_costs(pods) == {WALL_SECONDS: 40.0, GPU_SECONDS: 80.0}


def test_a_succeeded_trial_records_every_objective_and_the_front_follows() -> None:
    job = mo_job()
    running = trial(job, 2, {"lr": 0.05, "optimizer": "sgd"}, phase="Running", attempts=1)
    pods = [gpu_pod("digits-2", 1, "Succeeded", 3, "2026-11-29T11:00:00Z", "2026-11-29T11:00:20Z", 0.85)]
    trials = [succeeded(job, 0, 0.9, 100.0), succeeded(job, 1, 0.8, 200.0), running]
    result = run(job, trials, pods)
    patch = next(a for a in result.of_type(PatchTrialStatus) if a.trial == "digits-2")
    assert patch.status["phase"] == "Succeeded" and patch.status["objective"] == 0.85
    assert patch.status["metrics"][GPU_SECONDS] == 60.0  # 3 GPUs x 20 s
    assert result.status is not None
    front = result.status.pareto_front
    assert front is not None and result.status.pareto_front_size == 2
    assert [m.name for m in front] == ["digits-0", "digits-2"]  # digits-1 is dominated by digits-0
    assert front[1].objectives == {"val_accuracy": 0.85, GPU_SECONDS: 60.0}
    assert front[1].parameters == {"lr": 0.05, "optimizer": "sgd"}
    assert result.status.best_trial is not None and result.status.best_trial.name == "digits-0"
    wire = result.status.to_wire()
    assert wire["paretoFrontSize"] == 2 and wire["paretoFront"][0]["objectives"]["val_accuracy"] == 0.9
    complete = next(c for c in result.status.conditions if c.type == "ObjectivesComplete")
    assert complete.status == "True"


def test_the_ledger_front_matches_a_brute_force_front_and_is_capped_in_the_status() -> None:
    job = mo_job()
    # 50 on a trade-off line (better accuracy costs more), 30 behind it; folded in a scrambled order, and the
    # front asked for half way, so the kept front is brought up to date rather than rebuilt.
    trials = [succeeded(job, i, 0.5 + 0.005 * i, 10.0 + i) for i in range(50)]
    trials += [succeeded(job, i, 0.4 + 0.005 * (i % 7), 70.0 + (i * 13) % 11) for i in range(50, 80)]
    ledger = Ledger()
    for k, t in enumerate(trials[i * 37 % 80] for i in range(80)):
        ledger.add(t)
        if k == 40:
            pareto_front(job, ledger, [], [])
    result = pareto_front(job, ledger, [], [])
    assert result is not None
    members, size = result
    losses = {t.metadata.name: (-t.status.metrics["val_accuracy"], t.status.metrics[GPU_SECONDS]) for t in trials}
    expected = {n for n, v in losses.items() if not any(dominates(w, v) for w in losses.values())}
    assert size == len(expected) > 32 and len(members) == 32
    assert {m.name for m in members} <= expected
    assert members[0].objectives["val_accuracy"] == max(losses[n][0] * -1 for n in expected)  # best primary first


def test_an_objective_that_never_comes_leaves_the_trial_off_the_front_with_a_condition() -> None:
    job = mo_job([OBJECTIVES[0], {"metric": "latency_ms", "goal": "minimize"}])
    running = trial(job, 0, {"lr": 0.05, "optimizer": "sgd"}, phase="Running", attempts=1)
    pods = [gpu_pod("digits-0", 1, "Succeeded", 0, "2026-11-29T11:00:00Z", "2026-11-29T11:00:20Z", 0.85)]
    result = run(job, [running], pods)
    patch = next(a for a in result.of_type(PatchTrialStatus) if a.trial == "digits-0")
    assert patch.status["phase"] == TrialPhase.SUCCEEDED and patch.status["reason"] == "ObjectivesIncomplete"
    assert "'latency_ms'" in patch.status["message"]
    assert result.status is not None and result.status.pareto_front == [] and result.status.pareto_front_size == 0
    condition = next(c for c in result.status.conditions if c.type == "ObjectivesComplete")
    assert condition.status == "False" and condition.reason == "ObjectiveMissing" and "digits-0" in condition.message
    # Settled in the ledger, it still says so.
    done = Trial.model_validate({**running.model_dump(by_alias=True, mode="json"), "status": patch.status})
    ledger = Ledger([])
    ledger.add(done)
    later = run(job, [], [], ledger=ledger)
    assert later.status is not None
    assert next(c for c in later.status.conditions if c.type == "ObjectivesComplete").status == "False"


def test_a_single_objective_job_has_no_front_no_costs_and_no_new_condition() -> None:
    job = make_job()
    running = trial(job, 0, {"lr": 0.05, "optimizer": "sgd"}, phase="Running", attempts=1)
    pods = [gpu_pod("digits-0", 1, "Succeeded", 2, "2026-11-29T11:00:00Z", "2026-11-29T11:00:20Z", 0.85)]
    result = run(job, [running], pods)
    patch = next(a for a in result.of_type(PatchTrialStatus) if a.trial == "digits-0")
    assert GPU_SECONDS not in patch.status["metrics"]
    assert result.status is not None and result.status.pareto_front is None
    wire = result.status.to_wire()
    assert "paretoFront" not in wire and "paretoFrontSize" not in wire
    assert all(c.type != "ObjectivesComplete" for c in result.status.conditions)


def test_the_search_engine_sees_every_objective_of_the_history() -> None:
    job = mo_job()
    trials = [succeeded(job, i, 0.5 + 0.01 * i, 100.0 - i) for i in range(3)]
    seen: list[list[dict[str, Any]]] = []

    class Recording(SearchEngine):  # the real engine, remembering the history it was given
        def suggest(self, spec: Any, history: Any, n: int) -> Any:
            seen.append([dict(entry) for entry in history])
            return super().suggest(spec, history, n)

    result = plan(job, trials, [], Observations(), NOW, Recording())
    assert len(result.of_type(CreateTrial)) == 2
    assert [entry["metrics"][GPU_SECONDS] for entry in seen[0]] == [100.0, 99.0, 98.0]
