"""The reconcile loop: a deduplicating work queue of TuningJobs fed by watch events.

Every event on a TuningJob, one of its Trials or one of its pods puts the job's
key on the queue; a worker reads the job, its trials and pods from Kopf's
indices (the watch caches), computes a plan with pure code and applies it. A
key is never reconciled by two workers at once, and a burst of events
collapses into one reconcile, so the loop is event-driven and cheap. Timers
(metrics polling for early stopping, deadlines, a periodic resync) only add
keys to the same queue. What is kept of a job between reconciles, and every
policy that reads it, is `kubetune.controller.jobstate` (pure).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubetune.api import EarlyStoppingRule, Trial, TuningJob, TuningJobPhase, TuningJobStatus
from kubetune.controller import naming
from kubetune.controller.engine import SearchEngine
from kubetune.controller.jobstate import Ask, JobState, counters_hold_back, prometheus_needed, retry_delay
from kubetune.controller.ledger import FINAL_PHASES
from kubetune.controller.observe import PodView, pod_view, workload_views
from kubetune.controller.ownership import RENEW_AFTER_SECONDS, STANDBY_RECHECK_SECONDS, lease_name
from kubetune.controller.planner import (
    Engine,
    Event,
    Observations,
    PatchTrialStatus,
    Plan,
    PlannerSettings,
    plan,
    plan_invalid,
    transition_key,
)
from kubetune.controller.templates import POD_RESOURCE, Resource, parse_resource, reporting_selector, trial_resource
from kubetune.handlers.config import OperatorConfig
from kubetune.k8s.apply import JobRef, PlanApplier, attempt_path, namespace_going_away
from kubetune.k8s.client import ApiError, KubeClient, NotFound
from kubetune.k8s.leases import Claim, JobLeases
from kubetune.metrics.operator import OperatorMetrics
from kubetune.metrics.prometheus import PrometheusClient, observe_trials

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, job name)


def _first(store: Iterable[Any] | None) -> Any:
    return next(iter(store), None) if store is not None else None


class WorkQueue:
    """A deduplicating queue of job keys: a key is never handed to two workers at once, a burst of events
    collapses into one reconcile, and a key can be due again later (one timer per key, the earliest wins)."""

    def __init__(self, on_depth: Callable[[int], None] = lambda _: None) -> None:
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._on_depth = on_depth

    def add(self, key: Key) -> None:
        if key in self._active:
            self._dirty.add(key)  # again once the current pass ends
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)
        self._on_depth(len(self._queued))

    def add_after(self, key: Key, delay: float) -> None:
        timer = self._timers.get(key)
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = now + delay
        # A handle that fired keeps its (past) due time: only one still to come stands for an earlier wake-up.
        if timer is not None and not timer.cancelled() and now < timer.when() <= due:
            return  # an earlier wake-up is already set
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(due, self.add, key)

    async def get(self) -> Key:
        key = await self._queue.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: Key) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def forget(self, key: Key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()


class Controller:
    """Owns the queue, the workers, the clients, each job's state and the caches' references."""

    def __init__(
        self,
        config: OperatorConfig,
        client: KubeClient,
        metrics: OperatorMetrics | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.applier = PlanApplier(client)
        self.leases = JobLeases(client, config.operator_id)
        self.metrics = metrics or OperatorMetrics()
        self.engine: Engine = engine or SearchEngine()
        self.prometheus = PrometheusClient(config.prometheus_url) if config.prometheus_url else None
        self.planner_settings = PlannerSettings(
            metrics_poll_seconds=config.metrics_poll_seconds,
            final_metrics_grace_seconds=config.final_metrics_grace_seconds,
            keep_finished_pods=config.keep_finished_pods if config.keep_finished_pods >= 0 else None,
        )
        # Kopf's live indices, attached by the first handler call. The Trial index holds active Trials
        # only: final ones go to their job's ledger (see settled).
        self.jobs: Mapping[Key, Any] = {}
        self.trials: Mapping[Key, Any] = {}
        self.pods: Mapping[Key, Any] = {}
        # One index per workload kind of config.workload_kinds (trialTemplate.workload), keyed like pods.
        self.workloads: dict[Resource, Mapping[Key, Any]] = {}
        self.workload_kinds = frozenset(map(parse_resource, config.workload_kinds))
        self.refused_workload_kinds = {parse_resource(k): why for k, why in config.refused_workload_kinds.items()}
        self.queue = WorkQueue(self.metrics.queue_depth.set)
        self._states: dict[Key, JobState] = {}
        self._seen_terminal_pods: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.reconciles = 0
        self._requests_counted = 0

    def unwatched_kind_message(self, resource: Resource) -> str:
        kind = f"{resource.plural}.{resource.group} {resource.version}"
        refused = self.refused_workload_kinds.get(resource)
        if refused is not None:
            return (f"trialTemplate.workload: this operator could not watch {kind} when it started: {refused} "
                    "(fix that, then restart the operator)")
        return (f"trialTemplate.workload: this operator does not watch {kind} "
                "(KUBETUNE_WORKLOAD_KINDS, the chart's workloadKinds)")

    def state(self, key: Key) -> JobState:
        return self._states.setdefault(key, JobState())

    # ------------------------------------------------------------------ lifecycle

    def attach(self, jobs: Mapping[Key, Any], trials: Mapping[Key, Any], pods: Mapping[Key, Any],
               workloads: dict[Resource, Mapping[Key, Any]] | None = None) -> None:
        self.jobs, self.trials, self.pods = jobs, trials, pods
        self.workloads = workloads or {}

    async def start(self) -> None:
        for number in range(self.config.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"kubetune-worker-{number}"))
        self._tasks.append(asyncio.create_task(self._resync(), name="kubetune-resync"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.queue.close()
        try:  # the Events of the last reconciles, unless the API server does not answer
            await asyncio.wait_for(self.applier.events.flush(), timeout=5.0)
        except TimeoutError:
            pass
        await self.applier.events.close()
        await self.client.close()
        if self.prometheus is not None:
            await self.prometheus.close()

    # ------------------------------------------------------------------ events from the watches

    def enqueue(self, key: Key) -> None:
        self.queue.add(key)

    def enqueue_after(self, key: Key, delay: float) -> None:
        self.queue.add_after(key, delay)

    def pod_event(
        self, key: Key, name: str, phase: str | None, deleted: bool = False, body: dict[str, Any] | None = None
    ) -> None:
        """Remember when a pod was first seen finished (the start of trial turnover), and the last state of a
        finished pod that was deleted (see JobState.remember_deleted)."""
        finished = phase in ("Succeeded", "Failed")
        if deleted:
            self._seen_terminal_pods.discard(name)
            if finished and body is not None:
                self.state(key).remember_deleted(name, body, time.monotonic())
        elif finished and name not in self._seen_terminal_pods:
            self._seen_terminal_pods.add(name)
            state = self.state(key)
            if state.turnover_started is None:
                state.turnover_started = time.monotonic()
        self.enqueue(key)

    def settled(self, key: Key, trial: Trial) -> None:
        """A final Trial from the watch: folded into its job's ledger when the job is next reconciled
        (a reconcile may be planning with the ledger now, in another thread)."""
        self.state(key).arrived.append(trial)

    def is_settled(self, key: Key, name: str) -> bool:
        """Whether a final Trial of this name is in the job's ledger already (so a re-listing need not
        validate it again)."""
        state = self._states.get(key)
        return state is not None and name in state.ledger

    def trial_deleted(self, key: Key, name: str) -> None:
        self.state(key).departed.add(name)

    # ------------------------------------------------------------------ the loop

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self._reconcile_guarded(key)
            finally:
                self.queue.done(key)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            for key, store in list(self.jobs.items()):
                body = _first(store)
                if body is not None and (body.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    self.enqueue(key)

    async def _reconcile_guarded(self, key: Key) -> None:
        started = time.monotonic()
        try:
            await self.reconcile(key)
            if key in self._states:
                self._states[key].failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as error:  # one job's failure must not stop the others
            state = self.state(key)
            state.failures += 1
            delay = retry_delay(state.failures)
            self.metrics.reconcile_errors.labels(type(error).__name__).inc()
            logger.exception("reconcile of %s/%s failed (retry in %.1fs)", *key, delay)
            self.enqueue_after(key, delay)
        finally:
            self.metrics.reconcile_seconds.observe(time.monotonic() - started)
            self.reconciles += 1

    # ------------------------------------------------------------------ reconcile

    async def _behind_the_watch(self, key: Key, active: Iterable[Trial], present: set[str],
                                resource: Resource = POD_RESOURCE) -> frozenset[str]:
        """Current pods that the watch has not shown yet but the API server has.

        A trial's current pod missing from the watch is lost only if the API server agrees: another
        operator replica (during a rolling update) may have created it a moment ago. One GET per
        missing pod, so only in that rare case; a pod found is then expected like one created here.
        """
        state = self.state(key)
        missing = [naming.pod_name(t.metadata.name, t.status.attempts) for t in active if t.status.attempts]
        found: set[str] = set()
        for pod in missing:
            if pod in present or pod in state.expected_pods:
                continue
            try:
                await self.client.request("GET", attempt_path(resource, key[0], pod))
            except NotFound:
                continue
            found.add(pod)
        state.expect(found, time.monotonic())
        return frozenset(found)

    async def reconcile(self, key: Key) -> None:
        namespace, name = key
        body = _first(self.jobs.get(key))
        if body is None:
            self._forget(key)
            return
        metadata = body.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            # Going away: the garbage collector takes its Trials and their pods or workloads. Planning now would
            # see those Trials vanish and create new ones, as long as a foreground deletion lasts.
            return
        now = datetime.now(UTC)
        old_status: dict[str, Any] = dict(body.get("status") or {})
        ref = JobRef(namespace=namespace, name=name, uid=metadata.get("uid", ""),
                     resource_version=metadata.get("resourceVersion", ""))
        try:
            claim = await self.leases.claim(key, ref.uid, now)
        except ApiError as error:
            if namespace_going_away(error, namespace):
                return
            raise
        if not claim.held:
            self._stand_by(ref, claim)
            return
        try:
            job = TuningJob.model_validate(body)
        except ValidationError as error:
            try:
                current = TuningJobStatus.model_validate(old_status)
            except ValidationError:
                current = TuningJobStatus()
            invalid = plan_invalid(name, current, metadata.get("generation"), _validation_message(error), now,
                                   metadata.get("uid"))
            await self.applier.apply(ref, invalid, lambda _: {}, lambda _: None, old_status)
            return

        # The active Trials' models (the index validates each Trial once) and the final ones' ledger: a
        # long study's finished trials cost nothing more per reconcile.
        state = self.state(key)
        ledger = state.fold()
        trials: list[Trial] = [t for t in self.trials.get(key, ()) if t.metadata.name not in ledger]
        active = {t.metadata.name: t for t in trials}
        primary = job.spec.trial_template.primary_container_name
        raw_pods = list(self.pods.get(key, ()))
        clock = time.monotonic()
        resource = trial_resource(job)
        workload = job.spec.trial_template.workload
        if workload is not None:
            if resource not in self.workload_kinds:
                invalid = plan_invalid(name, job.status, job.metadata.generation,
                                       self.unwatched_kind_message(resource), now, ref.uid)
                await self.applier.apply(ref, invalid, lambda _: {}, lambda _: None, old_status)
                return
            success, failure = workload.conditions()
            bodies = list((self.workloads.get(resource) or {}).get(key, ()))
            pods = workload_views(bodies, raw_pods, success, failure, reporting_selector(workload), primary)
        else:
            if state.deleted_finished:
                present_pods = {str((p.get("metadata") or {}).get("name")) for p in raw_pods}
                raw_pods += state.kept_deleted_pods(present_pods, active.keys(), clock)
            pods = [v for v in (pod_view(p, primary) for p in raw_pods) if v is not None]
        present = {p.name for p in pods}
        expected = state.expected(present, clock) | await self._behind_the_watch(key, active.values(), present,
                                                                                 resource)

        observations = await self._observe(state, job, list(active), pods)  # names of the unfinished

        suggest_started = time.monotonic()
        rejected = dict(state.rejected)
        result = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: plan(job, trials, pods, observations, now, self.engine, expected, self.planner_settings, ledger,
                         claim.others, rejected),
        )
        if result.suggested:
            self.metrics.suggestion_seconds.observe(time.monotonic() - suggest_started)
        for trial in result.ledger_changes.add:
            ledger.add(trial)
        ledger.settle_before(result.ledger_changes.settle_before)

        hold = (counters_hold_back(old_status, result.status.to_wire(), state.status_written, time.monotonic())
                if result.status is not None else None)
        if hold is not None:
            result.status = None
            self.enqueue_after(key, hold)
        applied = await self.applier.apply(
            ref,
            result,
            # Only active trials get status patches and Events (a final status never changes).
            lambda trial: active[trial].status.to_wire() if trial in active else {},
            lambda trial: active[trial].metadata.uid if trial in active else None,
            old_status,
        )
        if result.status is not None:
            state.status_written = time.monotonic()
        state.expect(applied.created_pods, time.monotonic())
        state.rejected.update(applied.rejected)
        state.resolve_rejections({a.trial for a in result.of_type(PatchTrialStatus)
                                  if a.status.get("phase") in FINAL_PHASES})
        if applied.rejected:
            self.enqueue(key)  # the next plan fails those trials with the API server's reason
        self._record_metrics(key, state, job, result, active, applied.created_trials)
        if result.requeue_after is not None:
            self.enqueue_after(key, result.requeue_after)
        if (result.status or job.status).phase not in (TuningJobPhase.SUCCEEDED, TuningJobPhase.FAILED):
            self.enqueue_after(key, RENEW_AFTER_SECONDS)  # keeps the job's Lease fresh while it has work
        if applied.errors:
            raise RuntimeError(f"{len(applied.errors)} API call(s) failed; first: {applied.errors[0]}")

    def _stand_by(self, ref: JobRef, claim: Claim) -> None:
        """Another installation reconciles this job: leave it alone, say so once, and look again later (it
        takes over if the holder stops renewing the job's Lease)."""
        me = self.config.operator_id
        message = (f"operator {me} stands by: {claim.holder} reconciles this job (Lease {lease_name(ref.name)}); "
                   "two kubetune installations watch this namespace, give each its own (watchNamespaces)")
        event = Event("TuningJob", ref.name, "Warning", "OperatorStandingBy", message,
                      transition_key(ref.uid, "OperatorStandingBy", me, claim.holder))
        self.applier.events.record(ref.namespace, self.applier.event_body(ref, event, None))
        self.enqueue_after((ref.namespace, ref.name), STANDBY_RECHECK_SECONDS)

    async def _observe(self, state: JobState, job: TuningJob, unfinished: list[str], pods: list[PodView]
                       ) -> Observations:
        spec = job.spec
        wants_curves = spec.early_stopping.rule != EarlyStoppingRule.NONE or spec.primary_objective.promql is not None
        asked_at = state.observed[0] if state.observed is not None else None
        ask = prometheus_needed(wants_curves, self.prometheus is not None, unfinished, pods, asked_at,
                                time.monotonic(), self.config.metrics_poll_seconds)
        if ask == Ask.NOTHING:
            return Observations()
        if ask == Ask.CACHED and state.observed is not None:
            return state.observed[1]
        asked = time.monotonic()
        observations = await observe_trials(
            self.prometheus, job.metadata.namespace or "", job.metadata.name, unfinished, spec.primary_objective.metric,
            spec.primary_objective.promql,
            [(o.metric, o.promql) for o in spec.objective_list if o is not spec.primary_objective and o.promql],
        )
        state.observed = (asked, observations)
        if observations.problem is not None:  # counted once per query, not per reuse
            self.metrics.prometheus_errors.labels(observations.problem[0]).inc()
        return observations

    def _record_metrics(
        self, key: Key, state: JobState, job: TuningJob, result: Plan, active: dict[str, Trial], created: int
    ) -> None:
        namespace, name = key
        if created:
            self.metrics.trials_created.labels(namespace, name).inc(created)
            if state.turnover_started is not None:
                self.metrics.turnover_seconds.observe(time.monotonic() - state.turnover_started)
                state.turnover_started = None
        for action in result.actions:
            if isinstance(action, PatchTrialStatus):
                old = active[action.trial].status.phase if action.trial in active else None
                new = action.status.get("phase")
                if new in FINAL_PHASES and old not in FINAL_PHASES:
                    self.metrics.trials_finished.labels(namespace, name, new).inc()
        status = result.status or job.status
        for reason in set(result.not_starting) | state.not_starting_reasons:
            self.metrics.trials_not_starting.labels(namespace, name, reason).set(result.not_starting[reason])
        state.not_starting_reasons = set(result.not_starting)
        self.metrics.trials_running.labels(namespace, name).set(status.counts.running)
        self.metrics.trials_pending.labels(namespace, name).set(status.counts.pending)
        if status.best_trial is not None:
            self.metrics.best_objective.labels(namespace, name).set(status.best_trial.objective)
        self._record_front(namespace, name, status, state)
        for phase in ("Pending", "Running", "Suspended", "Succeeded", "Failed"):
            self.metrics.job_phase.labels(namespace, name, phase).set(1.0 if str(status.phase) == phase else 0.0)
        sent = self.client.requests_total
        self.metrics.api_requests.inc(sent - self._requests_counted)
        self._requests_counted = sent

    def _record_front(self, namespace: str, name: str, status: TuningJobStatus, state: JobState) -> None:
        """The front's gauges follow status.paretoFront; series of trials that left it are removed."""
        series: dict[tuple[str, str], float] = {
            (member.name, metric): value for member in status.pareto_front or () for metric, value in
            member.objectives.items()
        }
        for trial, metric in state.front_series - series.keys():
            self.metrics.pareto_front_objective.remove(namespace, name, trial, metric)
        for (trial, metric), value in series.items():
            self.metrics.pareto_front_objective.labels(namespace, name, trial, metric).set(value)
        state.front_series = set(series)
        if status.pareto_front_size is not None:
            self.metrics.pareto_front_size.labels(namespace, name).set(status.pareto_front_size)

    def _forget(self, key: Key) -> None:
        namespace, name = key
        self.queue.forget(key)
        state = self._states.pop(key, None)
        for reason in state.not_starting_reasons if state is not None else ():
            self.metrics.trials_not_starting.remove(namespace, name, reason)
        for trial, metric in state.front_series if state is not None else ():
            self.metrics.pareto_front_objective.remove(namespace, name, trial, metric)
        self.leases.forget(key)
        for gauge in (self.metrics.trials_running, self.metrics.trials_pending, self.metrics.best_objective,
                      self.metrics.pareto_front_size):
            try:
                gauge.remove(namespace, name)
            except KeyError:
                pass


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(p) for p in item["loc"])
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)
