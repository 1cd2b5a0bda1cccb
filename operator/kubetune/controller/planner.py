"""The pure reconcile of one TuningJob: (job, trials, pods, observations, now) -> plan.

Nothing here talks to Kubernetes or Prometheus. The plan is a list of
idempotent actions (deterministic names, create-if-absent) plus the job's new
status, so applying a plan twice, or a plan computed from a stale cache, never
makes a duplicate trial or loses a result.

Trial lifecycle, as decided here from the trial's pods:

    (no pod) -> Pending -> Running -> Succeeded            objective from the termination message
                                   -> Failed -> retry as attempt n+1 while retries last, else Failed
                                   -> EarlyStopped           the early-stopping rule stopped it
                                   -> Cancelled              the job finished while it was active
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from kubetune.api import (
    PARETO_FRONT_CAP,
    BestTrial,
    ConditionStatus,
    EarlyStopDecision,
    EarlyStoppingRule,
    Objective,
    ParameterAssignment,
    ParetoMember,
    Trial,
    TrialCounts,
    TrialPhase,
    TrialStatus,
    TuningJob,
    TuningJobPhase,
    TuningJobSpec,
    TuningJobStatus,
    resolve_path,
)
from kubetune.controller import naming
from kubetune.controller.conditions import find_condition, remove_condition, set_condition
from kubetune.controller.ledger import (
    FINAL_PHASES,
    OBJECTIVES_INCOMPLETE,
    Ledger,
    ObjectiveKeys,
    SettledTrial,
    beats,
    history_entry,
    objective_vector,
    settle,
)
from kubetune.controller.observe import (
    PODS_NOT_CREATED,
    PODS_NOT_CREATED_GRACE_SECONDS,
    STUCK_REASONS,
    UNSCHEDULABLE,
    PodView,
    TerminationReport,
    condition_problem,
    pod_costs,
)
from kubetune.controller.templates import (
    POD_RESOURCE,
    Resource,
    build_trial,
    build_trial_attempt,
    template_placeholders,
    trial_resource,
)
from kubetune.search import History, StopDecision, non_dominated

Curve = list[tuple[float, float]]


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Observations:
    """What Prometheus said about the job's trials, or why it could not."""

    curves: dict[str, Curve] = field(default_factory=dict)  # trial -> [(step, objective)], ascending steps
    finals: dict[str, dict[str, float]] = field(default_factory=dict)  # trial -> final metrics
    problem: tuple[str, str] | None = None  # (reason, message) when degraded
    # Whether Prometheus was asked for this plan at all: MetricsAvailable follows answers only, so a reconcile
    # that needed nothing from Prometheus (a finished job) never claims it is reachable.
    asked: bool = False

    @property
    def available(self) -> bool:
        return self.problem is None


class Engine(Protocol):
    def suggest(self, spec: TuningJobSpec, history: Sequence[Mapping[str, Any]], n: int) -> list[ParameterAssignment]:
        ...

    def stop(self, spec: TuningJobSpec, history: Sequence[Mapping[str, Any]]) -> list[StopDecision]: ...


# --------------------------------------------------------------------------- actions


# A trial's attempt is a pod, or a workload object (trialTemplate.workload): the "pod" actions below carry the
# resource they are of.


@dataclass(frozen=True)
class CreateTrial:
    """Create the Trial, then its first pod or workload (owner reference filled in from the created Trial)."""

    trial: dict[str, Any]
    pod: dict[str, Any]
    resource: Resource = POD_RESOURCE


@dataclass(frozen=True)
class CreatePod:
    trial: str
    trial_uid: str
    pod: dict[str, Any]
    attempt: int
    resource: Resource = POD_RESOURCE


@dataclass(frozen=True)
class DeletePod:
    """Delete a trial's pod, or its whole workload (the garbage collector deletes its pods)."""

    name: str
    reason: str
    resource: Resource = POD_RESOURCE


@dataclass(frozen=True)
class PatchTrialStatus:
    trial: str
    status: dict[str, Any]


@dataclass(frozen=True)
class Event:
    kind: str  # TuningJob or Trial
    name: str
    type: str  # Normal or Warning
    reason: str
    message: str
    # The transition this Event reports, e.g. "<trial uid>/TrialSucceeded". The Event's name is derived from
    # it, so a transition planned twice (a reconcile from a stale cache, a restart) is posted once: the API
    # server refuses the second. "" for Events without such an identity.
    key: str = ""


def transition_key(*parts: object) -> str:
    return "/".join(str(p) for p in parts)


Action = CreateTrial | CreatePod | DeletePod | PatchTrialStatus | Event


@dataclass(frozen=True)
class LedgerChanges:
    """What the caller folds into the job's ledger after a plan (a plan never changes its inputs)."""

    add: tuple[Trial, ...] = ()  # final trials that came in the trial list, not through the ledger
    settle_before: int | None = None  # final trials below this index (None: all) join the settled history


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    status: TuningJobStatus | None = None  # None: no change
    requeue_after: float | None = None  # seconds; None: wait for events
    suggested: int = 0  # trials asked of the engine (for metrics)
    not_starting: Counter[str] = field(default_factory=Counter)  # active trials whose pod cannot start, by reason
    ledger_changes: LedgerChanges = LedgerChanges()

    def of_type(self, kind: type[Any]) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]


@dataclass(frozen=True)
class PlannerSettings:
    metrics_poll_seconds: float = 2.0  # how often running trials are compared (early stopping)
    # How long a finished trial whose objective must come from Prometheus (objective.promql, or Prometheus not
    # answering) waits for it before it fails with MetricsUnavailable.
    final_metrics_grace_seconds: float = 30.0
    # Finished pods kept per job once their trial's result is recorded; older ones are deleted so
    # etcd and every watch cache stay bounded at any trial count (None: keep all).
    keep_finished_pods: int | None = 1000


# --------------------------------------------------------------------------- helpers


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _short(text: str | None, limit: int = 512) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_job(job: TuningJob) -> str | None:
    """What the operator alone can judge about a job the schema accepted; None when fine."""
    if len(job.metadata.name) > naming.MAX_JOB_NAME_LENGTH:
        return (
            f"metadata.name must be at most {naming.MAX_JOB_NAME_LENGTH} characters "
            "(trial names <job>-<index> are used as label values)"
        )
    names = {p.name for p in job.spec.parameters}
    unknown = sorted(template_placeholders(job) - names)
    if unknown:
        return f"trialTemplate refers to unknown parameter(s): {', '.join('${params.' + n + '}' for n in unknown)}"
    workload = job.spec.trial_template.workload
    if workload is not None:
        for condition in workload.conditions():
            problem = condition_problem(condition)
            if problem is not None:
                return f"trialTemplate.workload: {problem}"
        for path in workload.pod_template_paths():
            if not resolve_path(workload.spec, path.removeprefix("spec.")):
                return f"trialTemplate.workload.podTemplates: {path} matches no object in the workload"
    return None


# --------------------------------------------------------------------------- trial lifecycle


@dataclass
class _TrialStep:
    status: TrialStatus
    actions: list[Action] = field(default_factory=list)
    recheck_after: float | None = None  # seconds; the trial waits for something only time can bring


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def final_objective(spec: TuningJobSpec, report: TerminationReport | None, prometheus: Mapping[str, float]
                    ) -> float | None:
    """A finished trial's objective. With `objective.promql` the user's query defines it, so its answer comes
    first; otherwise the trial's own termination message (its best value, else its last), then Prometheus'
    `kubetune_trial_final`."""
    return final_value(spec.primary_objective, report, prometheus)


def final_value(objective: Objective, report: TerminationReport | None, prometheus: Mapping[str, float]
                ) -> float | None:
    """One objective's final value, as `final_objective` finds the primary one's."""
    metric = objective.metric
    reported = [report.best.get(metric), report.metrics.get(metric)] if report else []
    from_prometheus = [prometheus.get(metric)]
    candidates = from_prometheus + reported if objective.promql else reported + from_prometheus
    return next((v for v in map(_finite, candidates) if v is not None), None)


def other_objectives(spec: TuningJobSpec, report: TerminationReport | None, prometheus: Mapping[str, float],
                     pods: Sequence[PodView]) -> tuple[dict[str, float], list[str]]:
    """A finished trial's values of the non-primary objectives (built-in costs from its pods, the rest as the
    primary's), and the metrics of those that never came."""
    costs = pod_costs(pods)
    values: dict[str, float] = {}
    missing: list[str] = []
    for objective in spec.objective_list:
        if objective is spec.primary_objective:
            continue
        value = costs.get(objective.metric) if objective.builtin else final_value(objective, report, prometheus)
        if value is None:
            missing.append(objective.metric)
        else:
            values[objective.metric] = value
    return values, missing


def advance_trial(
    job: TuningJob,
    trial: Trial,
    pods: Sequence[PodView],
    expected_pods: frozenset[str],
    observations: Observations,
    now: datetime,
    settings: PlannerSettings = PlannerSettings(),
    rejected: str | None = None,
) -> _TrialStep:
    """An active trial's next status from its pods, and the pod actions that go with it."""
    spec = job.spec
    name = trial.metadata.name
    trial_id = trial.metadata.uid or name
    status = trial.status.model_copy(deep=True)
    step = _TrialStep(status=status)

    latest = max(pods, key=lambda p: p.attempt) if pods else None
    attempts = max(status.attempts, latest.attempt if latest else 0)
    status.attempts = attempts
    max_attempts = spec.trial_template.retries + 1

    def new_attempt(number: int) -> None:
        if trial.metadata.uid is None:
            return
        pod = build_trial_attempt(job, name, number, trial.spec.parameters, trial.metadata.uid)
        step.actions.append(CreatePod(trial=name, trial_uid=trial.metadata.uid, pod=pod, attempt=number,
                                      resource=trial_resource(job)))
        status.attempts = number
        status.phase = TrialPhase.PENDING

    def keep_curve() -> None:
        """What the trial reported to Prometheus stays in its status, also when it ends badly."""
        curve = observations.curves.get(name)
        if curve:
            status.intermediate = [list(p) for p in curve]

    def fail(reason: str, message: str) -> None:
        keep_curve()
        status.phase = TrialPhase.FAILED
        status.reason = reason
        status.message = _short(message, 2048)
        status.completion_time = status.completion_time or _iso(now)
        step.actions.append(Event("Trial", name, "Warning", "TrialFailed", f"{reason}: {_short(message)}",
                                  transition_key(trial_id, "TrialFailed")))

    def attempt_failed(reason: str, message: str) -> None:
        if attempts < max_attempts:
            keep_curve()
            step.actions.append(
                Event("Trial", name, "Warning", "TrialRetried",
                      f"attempt {attempts} failed ({reason}: {_short(message, 200)}); starting attempt {attempts + 1}",
                      transition_key(trial_id, "TrialRetried", attempts))
            )
            new_attempt(attempts + 1)
        else:
            fail(reason, message)

    if rejected is not None:
        # The API server refused the trial's pod for good (invalid, or forbidden by Pod Security): no retry helps.
        fail("PodRejected", rejected)
        return step
    if latest is None or latest.attempt < attempts:
        expected = naming.pod_name(name, attempts) if attempts else None
        if attempts == 0:
            new_attempt(1)
        elif expected in expected_pods:
            pass  # created a moment ago; the watch has not shown it yet
        else:
            attempt_failed("PodLost", f"pod {expected} disappeared (deleted or evicted) before it finished")
        return step

    pod = latest
    if pod.phase == "Succeeded":
        report = pod.report()
        final = observations.finals.get(name, {})
        objective = final_objective(spec, report, final)
        # Other objectives defined by a query of the user's own whose answer has not come yet.
        awaited = [o for o in spec.objective_list if o is not spec.primary_objective and o.promql is not None
                   and final_value(o, report, final) is None]
        if objective is None or awaited:
            # The objective may still come from Prometheus: a query of the user's own (scrapes land late in
            # remote setups), or a Prometheus that does not answer now. Wait for it, a while.
            from_prometheus = spec.primary_objective.promql is not None or bool(awaited) or not observations.available
            finished = _parse_time(pod.finished_at) or now
            waited = (now - finished).total_seconds()
            if from_prometheus and waited < settings.final_metrics_grace_seconds:
                remaining = settings.final_metrics_grace_seconds - waited
                step.recheck_after = max(0.1, min(settings.metrics_poll_seconds, remaining))
                return step
        status.start_time = status.start_time or pod.started_at
        status.completion_time = pod.finished_at or _iso(now)
        status.metrics = dict(final) | (report.metrics if report else {})
        if objective is None:
            where = ("nor did its objective.promql query answer with a value" if spec.primary_objective.promql
                     else "nor to Prometheus")
            problem = f" (Prometheus: {observations.problem[1]})" if observations.problem else ""
            fail(
                "MetricsUnavailable",
                f"pod {pod.name} succeeded but reported no {spec.primary_objective.metric!r} "
                f"in its termination message {where}{problem}",
            )
        else:
            keep_curve()
            status.metrics[spec.primary_objective.metric] = objective
            status.phase = TrialPhase.SUCCEEDED
            status.objective = objective
            status.reason = "Completed"
            status.message = None
            if spec.multi_objective:
                values, missing = other_objectives(spec, report, final, pods)
                status.metrics.update(values)
                if missing:
                    # Still a result for the primary objective (bestTrial, early stopping's peers), but not a
                    # point of the Pareto front nor of the multi-objective model.
                    status.reason = OBJECTIVES_INCOMPLETE
                    status.message = (f"pod {pod.name} reported no {', '.join(map(repr, missing))} in its "
                                      "termination message nor to Prometheus (nor did the objective's promql "
                                      "answer, where it has one): the trial is left off the Pareto front")
                    step.actions.append(Event("Trial", name, "Warning", OBJECTIVES_INCOMPLETE, status.message,
                                              transition_key(trial_id, OBJECTIVES_INCOMPLETE)))
            step.actions.append(
                Event("Trial", name, "Normal", "TrialSucceeded", f"{spec.primary_objective.metric}={objective:.6g}",
                      transition_key(trial_id, "TrialSucceeded"))
            )
        return step
    if pod.phase == "Failed":
        report = pod.report()
        if report and report.status == "diverged":
            fail("Diverged", report.reason or "training diverged (NaN or infinite loss)")
            return step
        detail = pod.reason or "Error"
        message = f"pod {pod.name}: {detail}"
        if pod.exit_code is not None:
            message += f", exit code {pod.exit_code}"
        if report and report.reason:
            message += f": {report.reason}"
        elif pod.message and not report:
            message += f": {_short(pod.message, 1024)}"
        attempt_failed(detail if detail != "Error" else "Error", message)
        return step
    if pod.phase == "Pending" and pod.not_starting is not None and not pod.deleting:
        _not_starting(job, trial, pod, pod.not_starting, status, step, now)
        return step
    if status.reason in STUCK_REASONS:
        status.reason = status.message = None  # it started after all
    if pod.phase == "Running" and not pod.deleting:
        if status.phase != TrialPhase.RUNNING:
            status.phase = TrialPhase.RUNNING
            status.start_time = status.start_time or pod.started_at or _iso(now)
    return step


def _not_starting(job: TuningJob, trial: Trial, pod: PodView, why: tuple[str, str], status: TrialStatus,
                  step: _TrialStep, now: datetime) -> None:
    """A trial whose pod Kubernetes cannot start says why, and fails with that reason once the pod is older
    than the template's timeout for it (not retried: a wrong image or a missing Secret stays wrong)."""
    template = job.spec.trial_template
    reason, message = why
    timeout = (template.unschedulable_timeout_seconds if reason == UNSCHEDULABLE
               else template.not_starting_timeout_seconds)
    created = _parse_time(pod.created_at) or now
    age = (now - created).total_seconds()
    name, trial_id = trial.metadata.name, trial.metadata.uid or trial.metadata.name
    if reason == PODS_NOT_CREATED and age < PODS_NOT_CREATED_GRACE_SECONDS:
        step.recheck_after = PODS_NOT_CREATED_GRACE_SECONDS - age  # its controller may simply not have got to it
        return
    if timeout is not None and age >= timeout:
        status.phase = TrialPhase.FAILED
        status.reason = reason
        status.message = _short(f"pod {pod.name} could not start in {timeout}s: {message}", 2048)
        status.completion_time = _iso(now)
        step.actions.append(DeletePod(pod.name, f"trial {name}: {reason}", trial_resource(job)))
        step.actions.append(Event("Trial", name, "Warning", "TrialFailed", f"{reason}: {_short(status.message)}",
                                  transition_key(trial_id, "TrialFailed")))
        return
    if status.reason != reason:
        step.actions.append(Event("Trial", name, "Warning", "TrialNotStarting", _short(f"{reason}: {message}"),
                                  transition_key(trial_id, "TrialNotStarting", reason, status.attempts)))
    status.reason, status.message = reason, _short(message, 2048)
    if timeout is not None:
        step.recheck_after = max(1.0, timeout - age)


# --------------------------------------------------------------------------- the job


def _by_index(trial: Trial) -> int:
    return trial.spec.index


def _counts(ledger: Ledger, statuses: Sequence[TrialStatus]) -> TrialCounts:
    """The settled trials' counts plus the active ones' (by their statuses in this plan)."""
    by_phase = ledger.counts + Counter(s.phase for s in statuses)
    return TrialCounts(
        created=len(ledger) + len(statuses),
        pending=by_phase[TrialPhase.PENDING],
        running=by_phase[TrialPhase.RUNNING],
        succeeded=by_phase[TrialPhase.SUCCEEDED],
        failed=by_phase[TrialPhase.FAILED],
        early_stopped=by_phase[TrialPhase.EARLY_STOPPED],
        cancelled=by_phase[TrialPhase.CANCELLED],
    )


def _best(
    job: TuningJob, ledger: Ledger, active: Sequence[Trial], statuses: Sequence[TrialStatus]
) -> BestTrial | None:
    """The succeeded trial with the best objective; the earliest among equals."""
    goal = job.spec.primary_objective.goal
    settled = ledger.best(goal)
    best = settled.rank if settled is not None else None
    chosen: int | None = None  # position in `active` when an active trial beats the settled best
    for i, status in enumerate(statuses):
        if status.phase != TrialPhase.SUCCEEDED or status.objective is None:
            continue
        rank = (status.objective, active[i].spec.index)
        if beats(goal, rank, best):
            best, chosen = rank, i
    if chosen is None:
        return settled.best_trial() if settled is not None else None
    trial, status = active[chosen], statuses[chosen]
    assert status.objective is not None
    return BestTrial(
        name=trial.metadata.name,
        index=trial.spec.index,
        objective=status.objective,
        parameters=dict(trial.spec.parameters),
        metrics=dict(status.metrics),
    )


def objective_keys(spec: TuningJobSpec) -> ObjectiveKeys:
    """The (metric, sign) pairs a Pareto front is judged by, in spec order."""
    return tuple((o.metric, o.sign) for o in spec.objective_list)


def pareto_front(
    job: TuningJob, ledger: Ledger, active: Sequence[Trial], statuses: Sequence[TrialStatus]
) -> tuple[list[ParetoMember], int] | None:
    """With several objectives: the succeeded trials no other succeeded trial dominates (the settled ones'
    front is the ledger's, kept between reconciles), best primary objective first and capped at
    PARETO_FRONT_CAP evenly spread along it; and the whole front's size. None with one objective."""
    spec = job.spec
    if not spec.multi_objective:
        return None
    keys = objective_keys(spec)
    candidates = [(vector, record.name, record.index, dict(record.parameters))
                  for vector, record in ledger.front(keys)]
    for trial, status in zip(active, statuses, strict=True):
        vector = objective_vector(status.metrics, keys) if status.phase == TrialPhase.SUCCEEDED else None
        if vector is not None and status.reason != OBJECTIVES_INCOMPLETE:
            candidates.append((vector, trial.metadata.name, trial.spec.index, dict(trial.spec.parameters)))
    if not candidates:
        return [], 0
    mask = non_dominated([c[0] for c in candidates])
    primary = [metric for metric, _ in keys].index(spec.primary_objective.metric)
    front = sorted((c for c, keep in zip(candidates, mask, strict=True) if keep),
                   key=lambda c: (c[0][primary], c[0], c[2]))
    shown = front
    if len(front) > PARETO_FRONT_CAP:  # both ends and evenly between them
        step = (len(front) - 1) / (PARETO_FRONT_CAP - 1)
        shown = [front[round(i * step)] for i in range(PARETO_FRONT_CAP)]
    members = [
        ParetoMember(name=name, index=index, parameters=parameters,
                     objectives={metric: sign * loss for (metric, sign), loss in zip(keys, vector, strict=True)})
        for vector, name, index, parameters in shown
    ]
    return members, len(front)


def _last_incomplete(ledger: Ledger, active: Sequence[Trial], statuses: Sequence[TrialStatus]
                     ) -> tuple[str, str] | None:
    """(trial, message) of the highest-index Succeeded trial that missed an objective."""
    found = [(t.spec.index, t.metadata.name, s.message or "") for t, s in zip(active, statuses, strict=True)
             if s.phase == TrialPhase.SUCCEEDED and s.reason == OBJECTIVES_INCOMPLETE]
    if ledger.last_incomplete is not None:
        record = ledger.last_incomplete
        found.append((record.index, record.name, record.incomplete or ""))
    if not found:
        return None
    _, name, message = max(found)
    return name, message


def _last_failure(ledger: Ledger, active: Sequence[Trial], statuses: Sequence[TrialStatus]) -> str | None:
    """The failure of the failed trial with the highest index."""
    failed = [(t.spec.index, f"{s.reason}: {s.message}") for t, s in zip(active, statuses, strict=True)
              if s.phase == TrialPhase.FAILED]
    if ledger.last_failed is not None:
        failed.append((ledger.last_failed.index, ledger.last_failed.failure or ""))
    return max(failed)[1] if failed else None


def _finish_reason(
    job: TuningJob,
    counts: TrialCounts,
    best: BestTrial | None,
    last_failure: str | None,
    start: datetime,
    now: datetime,
    exhausted: bool,
) -> tuple[TuningJobPhase, str, str] | None:
    """(phase, reason, message) when the job is over under the current spec, else None."""
    budget = job.spec.budget
    active = counts.pending + counts.running
    if counts.failed > budget.max_failed_trials:
        return (
            TuningJobPhase.FAILED,
            "TooManyFailedTrials",
            f"{counts.failed} trials failed (maxFailedTrials {budget.max_failed_trials}); last: {last_failure}",
        )
    if best is not None and job.spec.primary_objective.reached_target(best.objective):
        return (
            TuningJobPhase.SUCCEEDED,
            "TargetReached",
            f"trial {best.name} reached {job.spec.primary_objective.metric}={best.objective:.6g} "
            f"(target {job.spec.primary_objective.target})",
        )
    if budget.active_deadline_seconds is not None and now >= start + timedelta(seconds=budget.active_deadline_seconds):
        phase = TuningJobPhase.SUCCEEDED if best is not None else TuningJobPhase.FAILED
        return phase, "DeadlineExceeded", f"activeDeadlineSeconds {budget.active_deadline_seconds} passed"
    done = counts.created >= budget.max_trials or exhausted
    if done and active == 0:
        reason = "MaxTrialsReached" if counts.created >= budget.max_trials else "SearchSpaceExhausted"
        if best is None:
            last = f"; last: {last_failure}" if last_failure else ""
            return TuningJobPhase.FAILED, "NoTrialSucceeded", f"{counts.created} trials ran and none succeeded{last}"
        return (
            TuningJobPhase.SUCCEEDED,
            reason,
            f"{counts.created} trials; best {best.name} with {job.spec.primary_objective.metric}={best.objective:.6g}",
        )
    return None


def plan_invalid(
    name: str, job_status: TuningJobStatus, generation: int | None, message: str, now: datetime, uid: str | None = None
) -> Plan:
    """A spec the operator cannot run: say why in the status, do nothing else."""
    status = job_status.model_copy(deep=True)
    stamp = _iso(now)
    status.conditions = set_condition(
        status.conditions, "Valid", ConditionStatus.FALSE, "InvalidSpec", message, stamp, generation
    )
    status.phase = TuningJobPhase.FAILED
    status.message = _short(message, 4096)
    status.observed_generation = generation
    changed = status.to_wire() != job_status.to_wire()
    actions: list[Action] = []
    if changed:
        actions.append(Event("TuningJob", name, "Warning", "InvalidSpec", _short(message),
                             transition_key(uid or name, "InvalidSpec", generation)))
    return Plan(actions=actions, status=status if changed else None)


def plan(
    job: TuningJob,
    trials: Sequence[Trial],
    pods: Sequence[PodView],
    observations: Observations,
    now: datetime,
    engine: Engine,
    expected_pods: frozenset[str] = frozenset(),
    settings: PlannerSettings = PlannerSettings(),
    ledger: Ledger | None = None,
    other_operators: Sequence[str] = (),
    rejected: Mapping[str, str] | None = None,
) -> Plan:
    """Everything the operator should do for `job` now.

    `ledger`: the job's final trials as kept between reconciles (the operator passes only active
    trials besides it); it is read, never changed: `Plan.ledger_changes` says what to fold into it. Without
    one, `trials` are all. `rejected`: trials whose pod the API server refused for good, and why.
    `other_operators`: installations standing by for this job while this one reconciles it."""
    problem = validate_job(job)
    generation = job.metadata.generation
    if problem is not None:
        return plan_invalid(job.metadata.name, job.status, generation, problem, now, job.metadata.uid)

    spec = job.spec
    job_id = job.metadata.uid or job.metadata.name
    resource = trial_resource(job)
    base = ledger if ledger is not None else Ledger()
    finals = tuple(t for t in trials if t.status.phase in FINAL_PHASES and t.metadata.name not in base)
    # Final trials that came in the list: folded into a copy (never into the caller's ledger; rare, as the
    # operator routes final Trials to the ledger as the watch delivers them).
    ledger = Ledger([*base.trials.values(), *map(settle, finals)]) if finals else base
    active = sorted((t for t in trials if t.status.phase not in FINAL_PHASES and t.metadata.name not in ledger),
                    key=_by_index)  # a final trial stays final (a stale copy may still be active)
    pods_by_trial: dict[str, list[PodView]] = {}
    for pod in pods:
        pods_by_trial.setdefault(pod.trial, []).append(pod)

    result = Plan()
    # Only active trials are advanced: a long study's final ones are the ledger's totals.
    statuses: list[TrialStatus] = []
    rechecks: list[float] = []
    for t in active:
        step = advance_trial(job, t, pods_by_trial.get(t.metadata.name, []), expected_pods, observations, now,
                             settings, (rejected or {}).get(t.metadata.name))
        statuses.append(step.status)
        result.actions.extend(step.actions)
        if step.recheck_after is not None:
            rechecks.append(step.recheck_after)
    settled_with_pods = sorted((r for r in map(ledger.get, pods_by_trial) if r is not None), key=_record_index)
    for record in settled_with_pods:  # a pod still running (stopped trial, finished job) is stopped
        for pod in pods_by_trial[record.name]:
            if not pod.terminal and not pod.deleting:
                result.actions.append(DeletePod(pod.name, f"trial {record.name} is {record.phase}", resource))

    first_active = active[0].spec.index if active else None
    result.ledger_changes = LedgerChanges(finals if ledger is not base else (), first_active)
    waiting = ledger.waiting()  # those below first_active join the settled history after this plan

    def build_history() -> tuple[History, dict[int, int]]:
        """The history in index order (settled part, then the rest) and each active trial's position."""
        curves = observations.curves
        items: list[tuple[int, Mapping[str, Any], int | None]] = [(r.index, r.entry, None) for r in waiting]
        for i, (t, s) in enumerate(zip(active, statuses, strict=True)):
            curve = curves.get(t.metadata.name) if s.phase == TrialPhase.RUNNING else None
            items.append((t.spec.index, history_entry(t.spec.parameters, s, curve), i))
        items.sort(key=lambda item: item[0])
        start = len(ledger.history)
        positions = {start + p: i for p, (_, _, i) in enumerate(items) if i is not None}
        return History(ledger.history, [entry for _, entry, _ in items]), positions

    # Early stopping: running trials against everyone's curves.
    rule_on = spec.early_stopping.rule != EarlyStoppingRule.NONE
    if rule_on and observations.available and any(s.phase == TrialPhase.RUNNING for s in statuses):
        history, positions = build_history()
        for verdict in engine.stop(spec, history):
            i = positions.get(verdict.index)
            if i is None or statuses[i].phase != TrialPhase.RUNNING:
                continue
            if not math.isfinite(verdict.value):  # a curve of NaNs: nothing JSON can record
                continue
            _stop_trial(result, active[i], statuses[i], pods_by_trial, observations, now, "EarlyStopped",
                        _stop_message(spec, verdict), verdict.to_status(), resource=resource)

    # The job as a whole.
    start = _parse_time(job.status.start_time) or now
    counts = _counts(ledger, statuses)
    best = _best(job, ledger, active, statuses)
    last_failure = _last_failure(ledger, active, statuses)
    finished = _finish_reason(job, counts, best, last_failure, start, now, exhausted=False)

    if finished is None and not spec.suspend:
        in_flight = counts.pending + counts.running
        slots = min(spec.budget.parallelism - in_flight, spec.budget.max_trials - counts.created)
        if slots > 0:
            suggestions = engine.suggest(spec, build_history()[0], slots)
            result.suggested = slots
            next_index = max(ledger.max_index, active[-1].spec.index if active else -1) + 1
            for offset, parameters in enumerate(suggestions):
                index = next_index + offset
                manifest = build_trial(job, index, parameters)
                name = manifest["metadata"]["name"]
                first_pod = build_trial_attempt(job, name, 1, parameters, trial_uid=None)
                result.actions.append(CreateTrial(trial=manifest, pod=first_pod, resource=resource))
                result.actions.append(Event("TuningJob", job.metadata.name, "Normal", "TrialCreated",
                                            f"{name}: {parameters}", transition_key(job_id, "TrialCreated", name)))
            counts.created += len(suggestions)
            counts.pending += len(suggestions)
            if len(suggestions) < slots and counts.pending + counts.running == 0:
                finished = _finish_reason(job, counts, best, last_failure, start, now, exhausted=True)

    if finished is not None:
        # The job is over: nothing keeps running on its behalf.
        for t, status in zip(active, statuses, strict=True):
            if status.phase in (TrialPhase.PENDING, TrialPhase.RUNNING):
                _stop_trial(result, t, status, pods_by_trial, observations, now, "JobFinished",
                            f"the job finished ({finished[1]}) while this trial was active", None,
                            phase=TrialPhase.CANCELLED, resource=resource)
        counts = _counts(ledger, statuses)

    result.actions.extend(_prune_finished_pods(settled_with_pods, pods_by_trial, settings.keep_finished_pods,
                                               resource))

    # Trial status patches, only where something changed.
    for trial, status in zip(active, statuses, strict=True):
        if status.to_wire() != trial.status.to_wire():
            result.actions.append(PatchTrialStatus(trial.metadata.name, status.to_wire()))

    result.not_starting = Counter(s.reason for s in statuses if s.phase == TrialPhase.PENDING and s.reason
                                  and s.reason in STUCK_REASONS)
    result.status = _job_status(job, counts, best, finished, observations, start, now, active, statuses,
                                other_operators, pareto_front(job, ledger, active, statuses),
                                _last_incomplete(ledger, active, statuses))
    result.actions.extend(_condition_events(job, result.status, job_id))
    if result.status.to_wire() == job.status.to_wire():
        result.status = None
    elif finished is not None and job.status.phase != finished[0]:
        kind = "Normal" if finished[0] == TuningJobPhase.SUCCEEDED else "Warning"
        # Once per finish: a job reopened (a raised budget) and finished again has more trials or a newer spec.
        result.actions.append(Event("TuningJob", job.metadata.name, kind, finished[1], finished[2],
                                    transition_key(job_id, finished[1], generation, counts.created)))

    result.requeue_after = _requeue_after(job, counts, finished, start, now, settings)
    if rechecks and finished is None:
        result.requeue_after = min([*rechecks, *([result.requeue_after] if result.requeue_after else [])])
    return result


def _record_index(record: SettledTrial) -> int:
    return record.index


def _prune_finished_pods(
    settled: Iterable[SettledTrial], pods_by_trial: dict[str, list[PodView]], keep: int | None,
    resource: Resource = POD_RESOURCE,
) -> list[Action]:
    """Delete finished pods beyond the newest `keep`, only of trials whose final status is already stored
    (settled, not just final in this plan): a result is never lost with its pod. `settled`: the settled
    trials that have pods, oldest first."""
    if keep is None:
        return []
    done = [
        pod
        for record in settled
        for pod in sorted(pods_by_trial[record.name], key=lambda p: p.attempt)
        if pod.terminal and not pod.deleting
    ]
    surplus = done[: max(0, len(done) - keep)]
    return [DeletePod(pod.name, f"result recorded; keeping the newest {keep} finished pods", resource)
            for pod in surplus]


def _stop_message(spec: TuningJobSpec, verdict: StopDecision) -> str:
    message = (
        f"{verdict.rule}: {spec.primary_objective.metric}={verdict.value:.6g} "
        f"at {spec.early_stopping.resource} {verdict.step:g}"
    )
    return message if verdict.threshold is None else f"{message}, needed {verdict.threshold:.6g}"


def _stop_trial(
    result: Plan,
    trial: Trial,
    status: TrialStatus,
    pods_by_trial: dict[str, list[PodView]],
    observations: Observations,
    now: datetime,
    reason: str,
    message: str,
    decision: EarlyStopDecision | None,
    phase: TrialPhase = TrialPhase.EARLY_STOPPED,
    resource: Resource = POD_RESOURCE,
) -> None:
    name = trial.metadata.name
    curve = observations.curves.get(name)
    if curve:
        status.intermediate = [list(p) for p in curve]
    status.phase = phase
    status.early_stopping = decision
    status.objective = status.intermediate[-1][1] if status.intermediate else None
    status.reason = reason
    status.message = message
    status.completion_time = _iso(now)
    for pod in pods_by_trial.get(name, []):
        if not pod.terminal and not pod.deleting:
            result.actions.append(DeletePod(pod.name, f"trial {name}: {reason}", resource))
    event_reason = "TrialEarlyStopped" if phase == TrialPhase.EARLY_STOPPED else "TrialCancelled"
    result.actions.append(Event("Trial", name, "Normal", event_reason, message,
                                transition_key(trial.metadata.uid or name, event_reason)))


def _job_status(
    job: TuningJob,
    counts: TrialCounts,
    best: BestTrial | None,
    finished: tuple[TuningJobPhase, str, str] | None,
    observations: Observations,
    start: datetime,
    now: datetime,
    active_trials: Sequence[Trial] = (),
    statuses: Sequence[TrialStatus] = (),
    other_operators: Sequence[str] = (),
    front: tuple[list[ParetoMember], int] | None = None,
    incomplete: tuple[str, str] | None = None,
) -> TuningJobStatus:
    spec = job.spec
    generation = job.metadata.generation
    stamp = _iso(now)
    status = job.status.model_copy(deep=True)
    conditions = set_condition(status.conditions, "Valid", ConditionStatus.TRUE, "Valid", "", stamp, generation)
    active = counts.pending + counts.running
    finished_count = counts.finished
    if finished is not None:
        phase, reason, message = finished
        status.completion_time = status.completion_time or stamp
        conditions = set_condition(conditions, "Running", ConditionStatus.FALSE, reason, message, stamp, generation)
        won = phase == TuningJobPhase.SUCCEEDED
        conditions = set_condition(conditions, "Succeeded" if won else "Failed", ConditionStatus.TRUE, reason,
                                   message, stamp, generation)
        conditions = remove_condition(conditions, "Failed" if won else "Succeeded")
        status.message = message
    else:
        phase = TuningJobPhase.SUSPENDED if spec.suspend else TuningJobPhase.RUNNING
        status.completion_time = None
        conditions = remove_condition(remove_condition(conditions, "Succeeded"), "Failed")
        if spec.suspend:
            message = f"suspended; {active} trial(s) still finishing" if active else "suspended"
            conditions = set_condition(conditions, "Running", ConditionStatus.FALSE, "Suspended", message, stamp,
                                       generation)
        else:
            message = f"{active} trial(s) active, {finished_count} finished"
            conditions = set_condition(conditions, "Running", ConditionStatus.TRUE, "TrialsActive", message, stamp,
                                       generation)
        status.message = None
    consulted = observations.asked or observations.problem is not None
    if (spec.early_stopping.rule != EarlyStoppingRule.NONE or spec.primary_objective.promql) and consulted:
        if observations.problem is None:
            conditions = set_condition(conditions, "MetricsAvailable", ConditionStatus.TRUE, "PrometheusReachable",
                                       "", stamp, generation)
        else:
            reason, message = observations.problem
            conditions = set_condition(conditions, "MetricsAvailable", ConditionStatus.FALSE, reason,
                                       message + "; early stopping is paused, final results still come from pods",
                                       stamp, generation)
    stuck = [(t, s) for t, s in zip(active_trials, statuses, strict=True) if s.phase == TrialPhase.PENDING
             and s.reason in STUCK_REASONS]
    if stuck:
        first, first_status = stuck[0]
        conditions = set_condition(
            conditions, "TrialsNotStarting", ConditionStatus.TRUE, first_status.reason or UNSCHEDULABLE,
            _short(f"{len(stuck)} trial(s) cannot start; {first.metadata.name}: {first_status.reason}: "
                   f"{first_status.message}", 4096), stamp, generation)
    elif find_condition(conditions, "TrialsNotStarting") is not None:
        conditions = set_condition(conditions, "TrialsNotStarting", ConditionStatus.FALSE, "TrialsStarting",
                                   "every trial pod could start", stamp, generation)
    if other_operators:
        others = ", ".join(other_operators)
        conditions = set_condition(
            conditions, "DuplicateOperator", ConditionStatus.TRUE, "AnotherOperatorWatches",
            f"another kubetune installation ({others}) watches this namespace too and stands by while this one "
            "reconciles the job; give each installation namespaces of its own (the chart's watchNamespaces)",
            stamp, generation)
    elif find_condition(conditions, "DuplicateOperator") is not None:
        conditions = set_condition(conditions, "DuplicateOperator", ConditionStatus.FALSE, "NoOtherOperator",
                                   "no other kubetune installation stood by recently", stamp, generation)
    if incomplete is not None:
        trial_name, trial_message = incomplete
        conditions = set_condition(conditions, "ObjectivesComplete", ConditionStatus.FALSE, "ObjectiveMissing",
                                   _short(f"trial {trial_name}: {trial_message}", 4096), stamp, generation)
    elif spec.multi_objective:
        conditions = set_condition(conditions, "ObjectivesComplete", ConditionStatus.TRUE, "AllObjectivesReported",
                                   "every succeeded trial reported every objective", stamp, generation)
    else:
        conditions = remove_condition(conditions, "ObjectivesComplete")
    status.conditions = conditions
    status.phase = phase
    status.counts = counts
    status.best_trial = best
    status.pareto_front, status.pareto_front_size = front if front is not None else (None, None)
    status.progress = f"{finished_count}/{spec.budget.max_trials}"
    status.observed_generation = generation
    status.start_time = status.start_time or _iso(start)
    return status


@dataclass(frozen=True)
class _Announced:
    """A condition whose every change is an Event (none when it first appears in its healthy state)."""

    type: str
    healthy: ConditionStatus
    healthy_reason: str  # the Event's reason when it turns healthy
    unhealthy_reason: str


_ANNOUNCED_CONDITIONS = (
    _Announced("MetricsAvailable", ConditionStatus.TRUE, "MetricsAvailable", "MetricsUnavailable"),
    _Announced("DuplicateOperator", ConditionStatus.FALSE, "DuplicateOperatorGone", "DuplicateOperator"),
    _Announced("TrialsNotStarting", ConditionStatus.FALSE, "TrialsStarting", "TrialsNotStarting"),
)


def _condition_events(job: TuningJob, status: TuningJobStatus, job_id: str) -> list[Action]:
    events: list[Action] = []
    for announced in _ANNOUNCED_CONDITIONS:
        type_ = announced.type
        before, after = find_condition(job.status.conditions, type_), find_condition(status.conditions, type_)
        if after is None or (before is not None and before.status == after.status):
            continue
        healthy = after.status == announced.healthy
        if before is None and healthy:
            continue
        message = after.message or after.reason
        events.append(Event("TuningJob", job.metadata.name, "Normal" if healthy else "Warning",
                            announced.healthy_reason if healthy else announced.unhealthy_reason, message,
                            transition_key(job_id, type_, after.status, after.last_transition_time)))
    return events


def _requeue_after(
    job: TuningJob,
    counts: TrialCounts,
    finished: tuple[TuningJobPhase, str, str] | None,
    start: datetime,
    now: datetime,
    settings: PlannerSettings,
) -> float | None:
    if finished is not None:
        return None
    waits: list[float] = []
    if counts.running and (job.spec.early_stopping.rule != EarlyStoppingRule.NONE or job.spec.primary_objective.promql):
        waits.append(settings.metrics_poll_seconds)
    deadline = job.spec.budget.active_deadline_seconds
    if deadline is not None:
        waits.append(max(0.1, (start + timedelta(seconds=deadline) - now).total_seconds()))
    return min(waits) if waits else None

