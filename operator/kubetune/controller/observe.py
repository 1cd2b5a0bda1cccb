"""Pure readers of what the cluster reports: trial pods and their termination messages."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubetune.api import GPU_SECONDS, WALL_SECONDS
from kubetune.api.models import CONDITION_TYPE_PATTERN
from kubetune.controller import naming

GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class TerminationReport:
    """What the trial left in its termination message (the trainer contract)."""

    status: str | None = None
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True)
class PodView:
    """The part of a trial pod the planner needs."""

    name: str
    trial: str
    attempt: int
    phase: str
    deleting: bool = False
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    created_at: str | None = None
    # Why Kubernetes cannot start the pod (a container waiting in ImagePullBackOff..., or Unschedulable), if so.
    not_starting: tuple[str, str] | None = None
    gpus: int = 0  # nvidia.com/gpu the pod's containers ask for (the scheduler's count: limits, else requests)

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    def report(self) -> TerminationReport | None:
        return parse_termination_message(self.message)


def _int(text: Any) -> int | None:
    return int(text) if isinstance(text, str) and text.isdigit() else None


def _floats(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        return {}
    out: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[str(key)] = float(value)
    return out


def parse_termination_message(message: str | None) -> TerminationReport | None:
    """The trainer's final JSON, or None when the message is absent or not ours."""
    if not message:
        return None
    try:
        raw = json.loads(message)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    step = raw.get("step")
    return TerminationReport(
        status=str(raw["status"]) if "status" in raw else None,
        step=int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None,
        metrics=_floats(raw.get("metrics")),
        best=_floats(raw.get("best")),
        reason=str(raw["reason"]) if raw.get("reason") else None,
    )


# Container waiting reasons that mean the kubelet cannot start it (as opposed to ContainerCreating,
# PodInitializing: on its way). CrashLoopBackOff cannot happen: trial pods never restart.
NOT_STARTING_REASONS = frozenset({
    "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError",
    "CreateContainerError", "RunContainerError", "PreCreateHookError", "PostStartHookError",
})
UNSCHEDULABLE = "Unschedulable"
# A workload with no pod at all: a ResourceQuota or an admission webhook refuses them, or no controller runs
# its kind. Reported only once the workload is PODS_NOT_CREATED_GRACE_SECONDS old (its controller takes a moment).
PODS_NOT_CREATED = "PodsNotCreated"
PODS_NOT_CREATED_GRACE_SECONDS = 15.0
# Every reason a trial waits for Kubernetes to start it (the Trial's status.reason meanwhile).
STUCK_REASONS = NOT_STARTING_REASONS | {UNSCHEDULABLE, PODS_NOT_CREATED}
# What the kubelet says when runAsNonRoot meets an image whose user is root, and the fix to name.
_ROOT_IMAGE = "runAsNonRoot and image will run as root"
ROOT_IMAGE_FIX = (
    "the image runs as root while kubetune sets runAsNonRoot (the restricted profile): set "
    "trialTemplate.template.spec.securityContext.runAsUser to a non-zero UID the image can run as (for example "
    "1000), or runAsNonRoot: false where the namespace's Pod Security admits root"
)


def not_starting(status: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when Kubernetes reports it cannot start the pod: a container (init ones first) waiting
    for a reason that will not pass by itself, or the scheduler finding no node."""
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in NOT_STARTING_REASONS:
                message = str(waiting.get("message") or "")
                if _ROOT_IMAGE in message:
                    message = f"{message}: {ROOT_IMAGE_FIX}"
                return str(reason), f"container {container.get('name')}: {message}".rstrip(": ")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" \
                and condition.get("reason") == UNSCHEDULABLE:
            return UNSCHEDULABLE, str(condition.get("message") or "no node fits the pod")
    return None


def requested_gpus(spec: dict[str, Any]) -> int:
    """nvidia.com/gpu a pod holds: the containers' sum, or the largest init container's (they run one by one)."""

    def count(container: dict[str, Any]) -> int:
        resources = container.get("resources") or {}
        for key in ("limits", "requests"):  # extended resources: limits and requests must be equal when both set
            value = (resources.get(key) or {}).get(GPU_RESOURCE)
            if value is not None:
                try:
                    return int(str(value))
                except ValueError:
                    return 0
        return 0

    main = sum(count(c) for c in spec.get("containers") or [])
    init = max((count(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def _seconds(start: str | None, end: str | None) -> float | None:
    try:
        if not start or not end:
            return None
        began = datetime.fromisoformat(start.replace("Z", "+00:00"))
        ended = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (ended - began).total_seconds())


def pod_costs(pods: Sequence[PodView]) -> dict[str, float]:
    """The built-in cost metrics of a trial from its finished pods (every attempt): kubetune:wall_seconds, the
    primary container's running seconds (startedAt to finishedAt of its terminated state) summed, and
    kubetune:gpu_seconds, each pod's requested nvidia.com/gpu times those seconds, summed."""
    wall = gpu = 0.0
    for pod in pods:
        seconds = _seconds(pod.started_at, pod.finished_at) if pod.terminal else None
        if seconds is None:
            continue
        wall += seconds
        gpu += pod.gpus * seconds
    return {WALL_SECONDS: wall, GPU_SECONDS: gpu}


def pod_view(pod: dict[str, Any], primary_container: str | None = None, named: bool = True) -> PodView | None:
    """Summarise a trial pod; None for pods that do not follow the naming scheme (`named`: `<trial>-<attempt>`;
    else the attempt label, as on a workload's pods)."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    trial = labels.get(naming.LABEL_TRIAL)
    attempt = naming.attempt_of(metadata.get("name", "")) if named else _int(labels.get(naming.LABEL_ATTEMPT))
    if not trial or attempt is None:
        return None
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    chosen = next((s for s in statuses if s.get("name") == primary_container), statuses[0] if statuses else {})
    state = chosen.get("state") or {}
    terminated = state.get("terminated") or {}
    running = state.get("running") or {}
    return PodView(
        name=metadata["name"],
        trial=trial,
        attempt=attempt,
        phase=status.get("phase") or "Pending",
        deleting=bool(metadata.get("deletionTimestamp")),
        exit_code=terminated.get("exitCode"),
        reason=terminated.get("reason") or status.get("reason"),
        message=terminated.get("message") or status.get("message"),
        started_at=terminated.get("startedAt") or running.get("startedAt") or status.get("startTime"),
        finished_at=terminated.get("finishedAt"),
        created_at=metadata.get("creationTimestamp"),
        not_starting=not_starting(status) if status.get("phase", "Pending") == "Pending" else None,
        gpus=requested_gpus(pod.get("spec") or {}),
    )


# --------------------------------------------------------------------------- workloads

_CONDITION_TYPE = re.compile(CONDITION_TYPE_PATTERN)


@functools.lru_cache(maxsize=256)
def _cel_program(expression: str) -> Any:
    # celpy is pure Python; imported here so that pod-only operators never pay for it.
    import celpy

    environment = celpy.Environment()
    return environment.program(environment.compile(expression))


def condition_problem(condition: str) -> str | None:
    """Why a success/failure condition cannot be used (a CEL expression that does not compile); None if fine."""
    if not condition or _CONDITION_TYPE.match(condition):
        return None
    try:
        _cel_program(condition)
    except Exception as error:  # celpy raises its own parse errors, of no common base class
        return f"{condition!r} is not a condition type nor a CEL expression: {error}"
    return None


def condition_met(obj: dict[str, Any], condition: str) -> tuple[bool, str | None, str | None]:
    """(met, reason, message): a condition type True in the object's status.conditions, or a CEL expression over
    `object` that is true. An expression that cannot be evaluated yet (a status field still absent) is not met."""
    if not condition:
        return False, None, None
    if _CONDITION_TYPE.match(condition):
        for entry in (obj.get("status") or {}).get("conditions") or []:
            if isinstance(entry, dict) and entry.get("type") == condition and entry.get("status") == "True":
                return True, entry.get("reason") or condition, entry.get("message")
        return False, None, None
    from celpy.adapter import json_to_cel
    from celpy.celtypes import BoolType

    try:
        result = _cel_program(condition).evaluate({"object": json_to_cel(obj)})
    except Exception:  # a missing field or a type mismatch while the object is young: not yet
        return False, None, None
    # celpy answers its own BoolType, or an error value rather than raising.
    return isinstance(result, BoolType) and bool(result), condition, None


def _matches(pod: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in selector.items())


def workload_view(workload: dict[str, Any], pods: list[dict[str, Any]], success: str, failure: str,
                  reporting: dict[str, str], primary_container: str | None = None) -> PodView | None:
    """One attempt of a workload trial, summarised like a trial pod: its phase from the success and failure
    conditions (else Running once one of its pods runs), its result from the reporting pod (rank 0), and why
    it cannot start from the first of its pods that cannot."""
    metadata = workload.get("metadata") or {}
    labels = metadata.get("labels") or {}
    trial = labels.get(naming.LABEL_TRIAL)
    attempt = naming.attempt_of(metadata.get("name", ""))
    if not trial or attempt is None:
        return None
    pairs = [(p, v) for p, v in ((p, pod_view(p, primary_container, named=False)) for p in pods) if v is not None]
    views = [v for _, v in pairs]
    reporters = [v for p, v in pairs if _matches(p, reporting)]
    reporter = min(reporters, key=lambda v: v.created_at or "", default=None)
    failed, fail_reason, fail_message = condition_met(workload, failure)
    succeeded, _, _ = (False, None, None) if failed else condition_met(workload, success)
    report = reporter.message if reporter is not None and reporter.report() is not None else None
    phase = "Failed" if failed else "Succeeded" if succeeded else \
        "Running" if any(v.phase in ("Running", "Succeeded") for v in views) else "Pending"
    stuck = next((v for v in views if v.not_starting is not None), None) if phase == "Pending" else None
    kind, name = str(workload.get("kind", "workload")), metadata["name"]
    no_pods = (PODS_NOT_CREATED, f"{kind} {name} has created no pod (a ResourceQuota or an admission webhook may "
               f"refuse them, or no controller runs {kind}): see `kubectl describe {kind.lower()} {name}` and its "
               "Events") if phase == "Pending" and not views else None
    return PodView(
        name=metadata["name"],
        trial=trial,
        attempt=attempt,
        phase=phase,
        deleting=bool(metadata.get("deletionTimestamp")),
        exit_code=reporter.exit_code if failed and reporter is not None else None,
        reason=fail_reason if failed else None,
        message=report or (fail_message if failed else None),
        started_at=min((v.started_at for v in views if v.started_at), default=None),
        finished_at=(reporter.finished_at if reporter is not None else None) if phase != "Running" else None,
        created_at=stuck.created_at if stuck is not None else metadata.get("creationTimestamp"),
        not_starting=stuck.not_starting if stuck is not None else no_pods,
    )


def workload_views(workloads: list[dict[str, Any]], pods: list[dict[str, Any]], success: str, failure: str,
                   reporting: dict[str, str], primary_container: str | None = None) -> list[PodView]:
    """Every workload of a job as an attempt view, each with its own pods (found by the trial and attempt
    labels every pod template of a trial's workload carries)."""
    by_attempt: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        by_attempt.setdefault((str(labels.get(naming.LABEL_TRIAL)), str(labels.get(naming.LABEL_ATTEMPT))),
                              []).append(pod)
    views = []
    for workload in workloads:
        metadata = workload.get("metadata") or {}
        labels = metadata.get("labels") or {}
        own = by_attempt.get((str(labels.get(naming.LABEL_TRIAL)), str(labels.get(naming.LABEL_ATTEMPT))), [])
        view = workload_view(workload, own, success, failure, reporting, primary_container)
        if view is not None:
            views.append(view)
    return views
