"""What the operator keeps of a job between reconciles and the policies reading it (pure, the clock an
argument), and the work queue's timers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_planner import make_job, pod, trial

from kubetune.api import Trial, TuningJobStatus
from kubetune.controller.jobstate import (
    COUNTERS_WRITE_SECONDS,
    DELETED_POD_SECONDS,
    EXPECTATION_SECONDS,
    Ask,
    JobState,
    counters_hold_back,
    prometheus_needed,
    retry_delay,
)
from kubetune.handlers.runtime import WorkQueue

KEY = ("ml", "digits")


def slim_pod(name: str, phase: str, trial_name: str = "digits-0") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubetune.io/job": "digits", "kubetune.io/trial": trial_name}},
            "status": {"phase": phase, "containerStatuses": []}}


def test_finished_pods_deleted_before_a_reconcile_stand_in_until_seen_again() -> None:
    state = JobState()
    succeeded = slim_pod("digits-0-1", "Succeeded")
    waiting = {"digits-0"}  # the trial whose result the pod carries is still active
    state.remember_deleted("digits-0-1", succeeded, now=0.0)
    assert state.kept_deleted_pods(set(), waiting, now=1.0) == [succeeded]
    # The watch shows the pod again (same name): the live object wins, the copy is dropped.
    assert state.kept_deleted_pods({"digits-0-1"}, waiting, now=1.0) == []
    assert state.kept_deleted_pods(set(), waiting, now=1.0) == []
    # Once its trial's result is recorded (a pod the operator pruned itself), the copy is not kept.
    state.remember_deleted("digits-0-1", succeeded, now=0.0)
    assert state.kept_deleted_pods(set(), set(), now=1.0) == []
    # Nor past its time.
    state.remember_deleted("digits-0-1", succeeded, now=0.0)
    assert state.kept_deleted_pods(set(), waiting, now=DELETED_POD_SECONDS + 1) == []


def test_created_pods_are_expected_until_seen_or_expired() -> None:
    state = JobState()
    state.expect(["digits-0-1", "digits-1-1"], now=0.0)
    assert state.expected({"digits-1-1"}, now=1.0) == {"digits-0-1"}
    assert state.expected(set(), now=EXPECTATION_SECONDS + 1) == frozenset()


def test_a_status_change_of_counters_only_is_written_at_most_once_a_second() -> None:
    def status(running: int, finished: int, **extra: Any) -> dict[str, Any]:
        return TuningJobStatus.model_validate({
            "phase": "Running", "progress": f"{finished}/12", "counts": {"running": running, "succeeded": finished},
            "conditions": [{"type": "Running", "status": "True", "reason": "TrialsActive",
                            "message": f"{running} trial(s) active, {finished} finished",
                            "lastTransitionTime": "2026-11-29T00:00:00Z"}], **extra}).to_wire()

    best = {"bestTrial": {"name": "digits-1", "index": 1, "objective": 0.9, "parameters": {}}}
    assert counters_hold_back(status(3, 0), status(3, 1), written=None, now=5.0) is None  # nothing written yet
    assert counters_hold_back(status(3, 0), status(3, 1), written=4.8, now=5.0) == pytest.approx(
        COUNTERS_WRITE_SECONDS - 0.2)
    assert counters_hold_back(status(3, 0), status(3, 1), written=3.0, now=5.0) is None  # a second ago: write
    assert counters_hold_back(status(3, 1), status(3, 2, **best), written=4.9, now=5.0) is None  # a new best: now
    phase = {**status(3, 1), "phase": "Suspended"}
    assert counters_hold_back(status(3, 1), phase, written=4.9, now=5.0) is None


def test_prometheus_is_asked_only_when_a_decision_needs_it() -> None:
    running, finished = [pod("digits-0", 1, "Running")], [pod("digits-0", 1, "Succeeded")]
    ask = {"prometheus_configured": True, "unfinished": ["digits-0"], "now": 10.0, "poll_seconds": 2.0}
    assert prometheus_needed(False, pods=running, asked_at=None, **ask) == Ask.NOTHING  # nothing to compare
    assert prometheus_needed(True, pods=running, asked_at=None, **ask) == Ask.PROMETHEUS
    assert prometheus_needed(True, pods=running, asked_at=9.0, **ask) == Ask.CACHED  # within the poll
    assert prometheus_needed(True, pods=running, asked_at=7.0, **ask) == Ask.PROMETHEUS
    # A finished pod's final values and curve: always asked, also without early stopping.
    assert prometheus_needed(False, pods=finished, asked_at=9.9, **ask) == Ask.PROMETHEUS
    assert prometheus_needed(True, pods=finished, asked_at=9.9, **ask) == Ask.PROMETHEUS
    assert prometheus_needed(True, pods=finished, asked_at=None, **{**ask, "unfinished": []}) == Ask.NOTHING
    # No Prometheus and nothing to compare: nothing; early stopping without one is asked (and says so).
    assert prometheus_needed(False, pods=finished, asked_at=None, **{**ask, "prometheus_configured": False}) == (
        Ask.NOTHING)
    assert prometheus_needed(True, pods=running, asked_at=None, **{**ask, "prometheus_configured": False}) == (
        Ask.PROMETHEUS)


def test_retries_back_off_to_a_minute() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert retry_delay(50) == 60.0


def test_final_trials_reach_the_ledger_at_the_next_reconcile_and_deleted_ones_leave_it() -> None:
    state = JobState()

    def final(index: int, phase: str, **status: Any) -> Trial:
        return Trial.model_validate({"metadata": {"name": f"digits-{index}"},
                                     "spec": {"index": index, "parameters": {"lr": 0.1}},
                                     "status": {"phase": phase, "attempts": 1, **status}})

    succeeded, failed = final(1, "Succeeded", objective=0.9), final(0, "Failed", reason="Error", message="boom")
    state.arrived += [succeeded, failed]
    assert "digits-0" not in state.ledger  # folded in by the reconcile (a plan may be reading it until then)
    ledger = state.fold()
    assert len(ledger) == 2 and "digits-0" in ledger
    state.arrived.append(succeeded)  # the same Trial again (a re-listing): counted once
    state.departed.add("digits-0")
    ledger = state.fold()
    assert len(ledger) == 1 and ledger.counts["Failed"] == 0 and ledger.counts["Succeeded"] == 1
    assert ledger.last_failed is None


def test_a_rejection_stays_until_its_trial_is_failed() -> None:
    state = JobState(rejected={"digits-0": "forbidden", "digits-1": "invalid"})
    state.resolve_rejections({"digits-0"})
    assert state.rejected == {"digits-1": "invalid"}


def test_a_rejected_pod_fails_its_trial_in_the_next_plan_not_a_retry() -> None:
    from test_planner import run

    from kubetune.controller.planner import CreatePod, PatchTrialStatus

    job = make_job()
    fresh = trial(job, 0, {"lr": 0.01, "optimizer": "sgd"})  # created; its first pod was refused
    result = run(job, [fresh], [], rejected={"digits-0": "the API server rejected pod digits-0-1: forbidden"})
    patch = next(a for a in result.of_type(PatchTrialStatus) if a.trial == "digits-0")
    assert patch.status["phase"] == "Failed" and patch.status["reason"] == "PodRejected"
    assert "forbidden" in patch.status["message"]
    assert not [a for a in result.of_type(CreatePod) if a.trial == "digits-0"]


def test_a_wake_up_is_set_again_after_the_previous_one_fired() -> None:
    """A fired timer must not stand for a future wake-up: metrics polls, deferred counter writes and
    deadlines all rely on it, again and again for the same job."""

    async def scenario() -> None:
        queue = WorkQueue()

        async def next_key() -> tuple[str, str]:
            key = await asyncio.wait_for(queue.get(), timeout=1.0)
            queue.done(key)
            return key

        queue.add_after(KEY, 0.01)
        assert await next_key() == KEY
        queue.add_after(KEY, 0.01)  # the first handle has fired; this one must be set
        assert await next_key() == KEY
        queue.add_after(KEY, 0.01)
        queue.add_after(KEY, 10.0)  # a later wake-up does not replace an earlier one
        assert await next_key() == KEY
        queue.close()

    asyncio.run(scenario())


def test_a_key_is_never_handed_out_twice_at_once() -> None:
    async def scenario() -> list[tuple[str, str]]:
        queue = WorkQueue()
        queue.add(KEY)
        queue.add(KEY)  # deduplicated
        key = await queue.get()
        queue.add(KEY)  # while being reconciled: again afterwards, not now
        assert queue._queue.empty()
        queue.done(key)
        return [await asyncio.wait_for(queue.get(), timeout=1.0)]

    assert asyncio.run(scenario()) == [KEY]
