"""Trials whose pod Kubernetes cannot start: read from recorded pod statuses, shown in the Trial and the job,
failed with the reason after the template's timeout."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from test_planner import NOW, make_job, run, trial

from kubetune.controller.observe import ROOT_IMAGE_FIX, PodView, not_starting, pod_view
from kubetune.controller.planner import DeletePod, Event, PatchTrialStatus

PULL_BACKOFF = {"waiting": {"reason": "ImagePullBackOff",
                            "message": 'Back-off pulling image "kubetune/trainer:0.1.O"'}}
ROOT = {"waiting": {"reason": "CreateContainerConfigError",
                    "message": "container has runAsNonRoot and image will run as root (pod: \"x\", container: t)"}}
UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}


def stuck_pod(trial_name: str, state: dict[str, Any] | None = None, condition: dict[str, Any] | None = None,
              age: float = 10.0) -> PodView:
    created = (NOW - timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "metadata": {"name": f"{trial_name}-1", "creationTimestamp": created,
                     "labels": {"kubetune.io/trial": trial_name, "kubetune.io/job": "digits"}},
        "status": {"phase": "Pending", "conditions": [condition] if condition else [],
                   "containerStatuses": [{"name": "trainer", "state": state}] if state else []},
    }
    view = pod_view(body, "trainer")
    assert view is not None
    return view


def test_reasons_read_from_the_pod_status() -> None:
    assert not_starting({"containerStatuses": [{"name": "t", "state": PULL_BACKOFF}]}) == (
        "ImagePullBackOff", 'container t: Back-off pulling image "kubetune/trainer:0.1.O"')
    reason, message = not_starting({"containerStatuses": [{"name": "t", "state": ROOT}]}) or ("", "")
    assert reason == "CreateContainerConfigError" and message.endswith(ROOT_IMAGE_FIX) and "runAsUser" in message
    assert not_starting({"conditions": [UNSCHEDULABLE]}) == ("Unschedulable", UNSCHEDULABLE["message"])
    # On its way, not stuck.
    assert not_starting({"containerStatuses": [{"name": "t", "state": {"waiting": {"reason": "ContainerCreating"}}}]},
                        ) is None
    # An init container that cannot start holds the pod as much.
    assert not_starting({"initContainerStatuses": [{"name": "i", "state": PULL_BACKOFF}]}) is not None


def patched(result: Any, name: str = "digits-0") -> dict[str, Any] | None:
    return next((a.status for a in result.of_type(PatchTrialStatus) if a.trial == name), None)


def test_a_trial_that_cannot_start_says_why_then_fails_with_the_reason() -> None:
    job = make_job()
    pending = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Pending", attempts=1)]
    result = run(job, pending, [stuck_pod("digits-0", PULL_BACKOFF)])
    status = patched(result)
    assert status is not None and status["phase"] == "Pending" and status["reason"] == "ImagePullBackOff"
    assert "kubetune/trainer:0.1.O" in status["message"]
    assert [e.reason for e in result.of_type(Event) if e.name == "digits-0"] == ["TrialNotStarting"]
    assert result.status is not None
    condition = next(c for c in result.status.conditions if c.type == "TrialsNotStarting")
    assert condition.status == "True" and condition.reason == "ImagePullBackOff" and "0.1.O" in condition.message
    assert result.not_starting == {"ImagePullBackOff": 1}
    assert result.requeue_after is not None and result.requeue_after <= 300 - 10

    late = run(job, pending, [stuck_pod("digits-0", PULL_BACKOFF, age=301)])
    status = patched(late)
    assert status is not None and status["phase"] == "Failed" and status["reason"] == "ImagePullBackOff"
    assert [d.name for d in late.of_type(DeletePod)] == ["digits-0-1"]
    assert late.status is not None and late.status.counts.failed == 1


def test_unschedulable_trials_wait_by_default_and_show_it() -> None:
    job = make_job()
    pending = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Pending", attempts=1)]
    result = run(job, pending, [stuck_pod("digits-0", condition=UNSCHEDULABLE, age=3600)])
    status = patched(result)
    assert status is not None and status["phase"] == "Pending" and status["reason"] == "Unschedulable"
    bounded = make_job(trialTemplate={**make_job().spec.trial_template.to_wire(), "unschedulableTimeoutSeconds": 60})
    status = patched(run(bounded, pending, [stuck_pod("digits-0", condition=UNSCHEDULABLE, age=61)]))
    assert status is not None and status["phase"] == "Failed" and status["reason"] == "Unschedulable"


def test_a_trial_that_starts_after_all_drops_the_reason_and_the_condition_clears() -> None:
    job = make_job()
    pending = [trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Pending", attempts=1)]
    first = run(job, pending, [stuck_pod("digits-0", PULL_BACKOFF)])
    job.status = first.status  # type: ignore[assignment]
    stuck = trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, **(patched(first) or {}))
    running = stuck_pod("digits-0", {"running": {"startedAt": "2026-11-29T11:59:59Z"}})
    running = PodView(**{**running.__dict__, "phase": "Running", "not_starting": None})
    result = run(job, [stuck], [running])
    status = patched(result)
    assert status is not None and status["phase"] == "Running" and "reason" not in status
    assert result.status is not None
    assert next(c for c in result.status.conditions if c.type == "TrialsNotStarting").status == "False"
    assert [e.reason for e in result.of_type(Event) if "Starting" in e.reason] == ["TrialsStarting"]
