"""Pod phase and status from the agent's records: what the Job controller and kubectl see."""

from __future__ import annotations

from kubetune_dev.agentstate import ContainerRecord, PodRecord, build_status_patch
from kubetune_dev.procs import ProcessHandle


def record(policy: str = "Never", containers: int = 1) -> PodRecord:
    rec = PodRecord(uid="u", namespace="ns", name="p", restart_policy=policy, ip="127.10.0.1")
    rec.containers = [ContainerRecord(name=f"c{i}", image="img") for i in range(containers)]
    rec.start_time = "2024-01-01T00:00:00Z"
    return rec


def run(c: ContainerRecord) -> None:
    c.set_running(ProcessHandle(123, 456, "boot"), "kubetune-dev://u/c/0")


def test_pending_until_started_then_running() -> None:
    rec = record()
    rec.start_time = None
    assert rec.compute_phase() == "Pending"
    run(rec.containers[0])
    assert rec.compute_phase() == "Running"


def test_never_policy_ends_with_exit_codes() -> None:
    rec = record(containers=2)
    for c in rec.containers:
        run(c)
    rec.containers[0].set_terminated(0, "Completed")
    assert rec.compute_phase() == "Running"
    rec.containers[1].set_terminated(1, "Error")
    assert rec.compute_phase() == "Failed"
    rec2 = record()
    rec2.containers[0].set_terminated(0, "Completed")
    assert rec2.compute_phase() == "Succeeded"


def test_restart_pending_keeps_the_pod_running() -> None:
    rec = record("OnFailure")
    assert rec.wants_restart(1) and not rec.wants_restart(0)
    c = rec.containers[0]
    c.state, c.wait_reason, c.next_start = "waiting", "CrashLoopBackOff", 1e12
    c.last_terminated = {"exitCode": 1, "reason": "Error"}  # it ran before: waiting to restart counts as stopped
    assert rec.compute_phase() == "Running"
    rec.terminating = True  # deletion cancels the restart
    assert not rec.wants_restart(1)
    assert rec.compute_phase() == "Failed"


def test_a_container_that_never_ran_keeps_the_pod_pending() -> None:
    """As the kubelet: CreateContainerConfigError (a missing Secret) before the first start is Pending, not
    Running, even once the pod has a start time."""
    rec = record()
    rec.start_time = "2026-12-04T00:00:00Z"
    c = rec.containers[0]
    c.state, c.wait_reason, c.next_start = "waiting", "CreateContainerConfigError", 1e12
    assert rec.compute_phase() == "Pending"


def test_deadline_exceeded_fails_even_on_exit_zero() -> None:
    rec = record()
    rec.terminating, rec.terminate_reason = True, "DeadlineExceeded"
    rec.containers[0].set_terminated(0, "Completed")
    assert rec.compute_phase() == "Failed"


def test_terminal_phase_is_final() -> None:
    rec = record()
    rec.phase = "Succeeded"
    run(rec.containers[0])
    assert rec.compute_phase() == "Succeeded"


def test_status_patch_carries_what_controllers_read() -> None:
    rec = record()
    run(rec.containers[0])
    rec.phase = rec.compute_phase()
    rec.refresh_conditions("2024-01-01T00:00:01Z")
    status = build_status_patch(rec, host_ip="127.0.0.1")["status"]
    assert status["phase"] == "Running"
    assert status["podIP"] == "127.10.0.1" and status["podIPs"] == [{"ip": "127.10.0.1"}]
    assert status["startTime"] == "2024-01-01T00:00:00Z"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    cs = status["containerStatuses"][0]
    assert cs["ready"] and cs["state"]["running"]["startedAt"] and cs["containerID"] == "kubetune-dev://u/c/0"
    assert "qosClass" not in status  # immutable; a patch never touches it

    rec.containers[0].set_terminated(0, "Completed", "accuracy=0.9")
    rec.phase = rec.compute_phase()
    rec.refresh_conditions("2024-01-01T00:00:02Z")
    status = build_status_patch(rec, host_ip="127.0.0.1")["status"]
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert (status["phase"], terminated["exitCode"], terminated["reason"], terminated["message"]) == (
        "Succeeded",
        0,
        "Completed",
        "accuracy=0.9",
    )
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PodCompleted"


def test_condition_transition_time_only_moves_on_change() -> None:
    rec = record()
    rec.refresh_conditions("t1")
    rec.refresh_conditions("t2")
    assert rec.conditions["Initialized"] == ["True", "t1"]


def test_record_round_trips_through_json() -> None:
    rec = record(containers=2)
    run(rec.containers[0])
    rec.containers[1].gpus = [2, 3]
    assert PodRecord.from_dict(rec.to_dict()) == rec
