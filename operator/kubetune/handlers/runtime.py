"""The reconcile loop: a deduplicating work queue of TuningJobs fed by watch events.

Every event on a TuningJob, one of its Trials or one of its pods puts the job's
key on the queue; a worker reads the job, its trials and pods from Kopf's
indices (the watch caches), computes a plan with pure code and applies it. A
key is never reconciled by two workers at once, and a burst of events
collapses into one reconcile, so the loop is event-driven and cheap. Timers
(metrics polling for early stopping, deadlines, a periodic resync) only add
keys to the same queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Container, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubetune.api import EarlyStoppingRule, Trial, TuningJob, TuningJobPhase, TuningJobStatus
from kubetune.controller import naming
from kubetune.controller.engine import SearchEngine
from kubetune.controller.ledger import FINAL_PHASES, Ledger
from kubetune.controller.observe import PodView, pod_view
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
from kubetune.handlers.config import OperatorConfig
from kubetune.k8s.apply import JobRef, PlanApplier, namespace_going_away, pods_path
from kubetune.k8s.client import ApiError, KubeClient, NotFound
from kubetune.k8s.leases import Claim, JobLeases
from kubetune.metrics.operator import OperatorMetrics
from kubetune.metrics.prometheus import PrometheusClient, observe_trials

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, job name)
EXPECTATION_SECONDS = 60.0
# How long a finished pod that was deleted stands in for itself (see pod_event).
DELETED_POD_SECONDS = 300.0
# A job status that changed only in its counters is written at most this often (see _defer_counters).
COUNTERS_WRITE_SECONDS = 1.0


def _first(store: Iterable[Any] | None) -> Any:
    return next(iter(store), None) if store is not None else None


class Controller:
    """Owns the queue, the workers, the clients and the caches' references."""

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
        self._ledgers: dict[Key, Ledger] = {}
        self._arrived: dict[Key, list[Trial]] = {}  # final Trials seen since the job's last reconcile
        self._departed: dict[Key, set[str]] = {}  # and deleted ones
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = {}
        self._expected: dict[Key, dict[str, float]] = {}
        self._terminal_seen: dict[Key, float] = {}
        self._observed: dict[Key, tuple[float, Observations]] = {}  # the last Prometheus answer per job
        self._status_written: dict[Key, float] = {}
        self._seen_terminal_pods: set[str] = set()
        self._deleted_finished: dict[Key, dict[str, tuple[float, dict[str, Any]]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.reconciles = 0
        self._requests_counted = 0

    # ------------------------------------------------------------------ lifecycle

    def attach(self, jobs: Mapping[Key, Any], trials: Mapping[Key, Any], pods: Mapping[Key, Any]) -> None:
        self.jobs, self.trials, self.pods = jobs, trials, pods

    async def start(self) -> None:
        for number in range(self.config.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"kubetune-worker-{number}"))
        self._tasks.append(asyncio.create_task(self._resync(), name="kubetune-resync"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for timer in self._timers.values():
            timer.cancel()
        try:  # the Events of the last reconciles, unless the API server does not answer
            await asyncio.wait_for(self.applier.events.flush(), timeout=5.0)
        except TimeoutError:
            pass
        await self.applier.events.close()
        await self.client.close()
        if self.prometheus is not None:
            await self.prometheus.close()

    # ------------------------------------------------------------------ queue

    def enqueue(self, key: Key) -> None:
        if key in self._active:
            self._dirty.add(key)  # reconcile again once the current pass ends
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)
        self.metrics.queue_depth.set(len(self._queued))

    def enqueue_after(self, key: Key, delay: float) -> None:
        timer = self._timers.get(key)
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = now + delay
        # A handle that fired keeps its (past) due time: only one still to come stands for an earlier wake-up.
        if timer is not None and not timer.cancelled() and now < timer.when() <= due:
            return  # an earlier wake-up is already set
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(due, self.enqueue, key)

    def pod_event(
        self, key: Key, name: str, phase: str | None, deleted: bool = False, body: dict[str, Any] | None = None
    ) -> None:
        """Remember when a pod was first seen finished: the start of trial turnover.

        A finished pod can be deleted right after it reported how it ended (a kubelet removes a pod
        evicted from an unreachable node once it is back); its last state is kept, so the result
        is read from it instead of the attempt being taken for lost and run again.
        """
        if deleted:
            self._seen_terminal_pods.discard(name)
            if phase in ("Succeeded", "Failed") and body is not None:
                expiry = time.monotonic() + DELETED_POD_SECONDS
                self._deleted_finished.setdefault(key, {})[name] = (expiry, body)
        elif phase in ("Succeeded", "Failed") and name not in self._seen_terminal_pods:
            self._seen_terminal_pods.add(name)
            self._terminal_seen.setdefault(key, time.monotonic())
        self.enqueue(key)

    def settled(self, key: Key, trial: Trial) -> None:
        """A final Trial from the watch: folded into its job's ledger when the job is next reconciled
        (a reconcile may be planning with the ledger now, in another thread)."""
        self._arrived.setdefault(key, []).append(trial)

    def is_settled(self, key: Key, name: str) -> bool:
        """Whether a final Trial of this name is in the job's ledger already (so a re-listing need not
        validate it again)."""
        ledger = self._ledgers.get(key)
        return ledger is not None and name in ledger

    def trial_deleted(self, key: Key, name: str) -> None:
        self._departed.setdefault(key, set()).add(name)

    def _ledger(self, key: Key) -> Ledger:
        """The job's ledger with the Trials the watch showed final or deleted since the last reconcile."""
        ledger = self._ledgers.setdefault(key, Ledger())
        for name in self._departed.pop(key, ()):
            ledger.remove(name)
        # In index order, so each lands at the end of the ledger's waiting list (20,000 at once after a restart).
        for trial in sorted(self._arrived.pop(key, ()), key=lambda t: t.spec.index):
            ledger.add(trial)
        return ledger

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                await self._reconcile_guarded(key)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key)

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
            self._failures.pop(key, None)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # one job's failure must not stop the others
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(60.0, 0.5 * 2 ** min(failures, 7))
            self.metrics.reconcile_errors.labels(type(error).__name__).inc()
            logger.exception("reconcile of %s/%s failed (retry in %.1fs)", *key, delay)
            self.enqueue_after(key, delay)
        finally:
            self.metrics.reconcile_seconds.observe(time.monotonic() - started)
            self.reconciles += 1

    # ------------------------------------------------------------------ reconcile

    def _expected_pods(self, key: Key, present: set[str]) -> frozenset[str]:
        now = time.monotonic()
        expected = self._expected.get(key, {})
        for name in [n for n, deadline in expected.items() if n in present or deadline < now]:
            del expected[name]
        return frozenset(expected)

    def _deleted_pods(self, key: Key, present: set[str], active: Container[str]) -> list[dict[str, Any]]:
        """The kept finished pods still needed: not back in the watch, not expired, and of a trial whose
        result is not recorded yet (an `active` trial; so pods the operator prunes itself are not kept)."""
        now = time.monotonic()
        deleted = self._deleted_finished.get(key, {})
        for name in [n for n, (expiry, body) in deleted.items()
                     if n in present or expiry < now or _trial_of(body) not in active]:
            del deleted[name]
        return [body for _, body in deleted.values()]

    async def _behind_the_watch(self, key: Key, active: Iterable[Trial], present: set[str]) -> frozenset[str]:
        """Current pods that the watch has not shown yet but the API server has.

        A trial's current pod missing from the watch is lost only if the API server agrees: another
        operator replica (during a rolling update) may have created it a moment ago. One GET per
        missing pod, so only in that rare case; a pod found is then expected like one created here.
        """
        namespace = key[0]
        expected = self._expected.get(key, {})
        missing = [naming.pod_name(t.metadata.name, t.status.attempts) for t in active if t.status.attempts]
        found: set[str] = set()
        for pod in missing:
            if pod in present or pod in expected:
                continue
            try:
                await self.client.request("GET", pods_path(namespace, pod))
            except NotFound:
                continue
            found.add(pod)
        deadline = time.monotonic() + EXPECTATION_SECONDS
        self._expected.setdefault(key, {}).update({pod: deadline for pod in found})
        return frozenset(found)

    async def reconcile(self, key: Key) -> None:
        namespace, name = key
        body = _first(self.jobs.get(key))
        if body is None:
            self._forget(key)
            return
        now = datetime.now(UTC)
        metadata = body.get("metadata") or {}
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
        ledger = self._ledger(key)
        trials: list[Trial] = [t for t in self.trials.get(key, ()) if t.metadata.name not in ledger]
        active = {t.metadata.name: t for t in trials}
        primary = job.spec.trial_template.primary_container_name
        raw_pods = list(self.pods.get(key, ()))
        if self._deleted_finished.get(key):
            present_pods = {str((p.get("metadata") or {}).get("name")) for p in raw_pods}
            raw_pods += self._deleted_pods(key, present_pods, active.keys())
        pods = [v for v in (pod_view(p, primary) for p in raw_pods) if v is not None]
        present = {p.name for p in pods}
        expected = self._expected_pods(key, present) | await self._behind_the_watch(key, active.values(), present)

        observations = await self._observe(key, job, list(active), pods)  # names of the unfinished

        suggest_started = time.monotonic()
        result = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: plan(job, trials, pods, observations, now, self.engine, expected, self.planner_settings, ledger,
                         claim.others),
        )
        if result.suggested:
            self.metrics.suggestion_seconds.observe(time.monotonic() - suggest_started)

        self._defer_counters(key, old_status, result)
        applied = await self.applier.apply(
            ref,
            result,
            # Only active trials get status patches and Events (a final status never changes).
            lambda trial: active[trial].status.to_wire() if trial in active else {},
            lambda trial: active[trial].metadata.uid if trial in active else None,
            old_status,
        )
        if result.status is not None:
            self._status_written[key] = time.monotonic()
        deadline = time.monotonic() + EXPECTATION_SECONDS
        self._expected.setdefault(key, {}).update({pod: deadline for pod in applied.created_pods})
        self._record_metrics(key, job, result, active, applied.created_trials)
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

    def _defer_counters(self, key: Key, old_status: dict[str, Any], result: Plan) -> None:
        """Hold back a job status that changed only in its counters (trial counts, progress, the
        Running condition's message) if one was written less than COUNTERS_WRITE_SECONDS ago, like the
        Job controller batches its syncs: a busy job would otherwise write its status on every
        reconcile. Phase, conditions, best trial and messages are written at once. The status is
        derived from the Trials, so the reconcile enqueued for the end of the interval writes the
        counts of that moment."""
        if result.status is None or _gist(result.status.to_wire()) != _gist(old_status):
            return
        wait = self._status_written.get(key, -COUNTERS_WRITE_SECONDS) + COUNTERS_WRITE_SECONDS - time.monotonic()
        if wait > 0:
            result.status = None
            self.enqueue_after(key, wait)

    async def _observe(self, key: Key, job: TuningJob, unfinished: list[str], pods: list[PodView]) -> Observations:
        """Prometheus is asked only when a decision needs it: curves for early stopping at most once per
        metrics poll (pod events in between reuse the last answer), and curves and finals of a trial whose
        pod just finished (its learning curve is recorded in the Trial even without early stopping)."""
        if not unfinished or self.prometheus is None and job.spec.early_stopping.rule == EarlyStoppingRule.NONE:
            return Observations()
        wants_curves = job.spec.early_stopping.rule != EarlyStoppingRule.NONE or job.spec.objective.promql
        unfinished_names = set(unfinished)
        needs_finals = any(p.terminal and p.trial in unfinished_names for p in pods)
        if not wants_curves and not needs_finals:
            return Observations()
        cached = self._observed.get(key)
        if not needs_finals and cached is not None and time.monotonic() - cached[0] < self.config.metrics_poll_seconds:
            return cached[1]
        asked = time.monotonic()
        observations = await observe_trials(
            self.prometheus,
            job.metadata.namespace or "",
            job.metadata.name,
            unfinished,
            job.spec.objective.metric,
            job.spec.objective.promql,
        )
        self._observed[key] = (asked, observations)
        if observations.problem is not None:  # counted once per query, not per reuse
            self.metrics.prometheus_errors.labels(observations.problem[0]).inc()
        return observations

    def _record_metrics(
        self, key: Key, job: TuningJob, result: Any, active: dict[str, Trial], created: int
    ) -> None:
        namespace, name = key
        if created:
            self.metrics.trials_created.labels(namespace, name).inc(created)
            seen = self._terminal_seen.pop(key, None)
            if seen is not None:
                self.metrics.turnover_seconds.observe(time.monotonic() - seen)
        for action in result.actions:
            if isinstance(action, PatchTrialStatus):
                old = active[action.trial].status.phase if action.trial in active else None
                new = action.status.get("phase")
                if new in FINAL_PHASES and old not in FINAL_PHASES:
                    self.metrics.trials_finished.labels(namespace, name, new).inc()
        status = result.status or job.status
        self.metrics.trials_running.labels(namespace, name).set(status.counts.running)
        self.metrics.trials_pending.labels(namespace, name).set(status.counts.pending)
        if status.best_trial is not None:
            self.metrics.best_objective.labels(namespace, name).set(status.best_trial.objective)
        for phase in ("Pending", "Running", "Suspended", "Succeeded", "Failed"):
            self.metrics.job_phase.labels(namespace, name, phase).set(1.0 if str(status.phase) == phase else 0.0)
        sent = self.client.requests_total
        self.metrics.api_requests.inc(sent - self._requests_counted)
        self._requests_counted = sent

    def _forget(self, key: Key) -> None:
        namespace, name = key
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._expected.pop(key, None)
        self._ledgers.pop(key, None)
        self._arrived.pop(key, None)
        self._departed.pop(key, None)
        self._terminal_seen.pop(key, None)
        self._deleted_finished.pop(key, None)
        self._observed.pop(key, None)
        self._status_written.pop(key, None)
        self.leases.forget(key)
        self._failures.pop(key, None)
        for gauge in (self.metrics.trials_running, self.metrics.trials_pending, self.metrics.best_objective):
            try:
                gauge.remove(namespace, name)
            except KeyError:
                pass


def _gist(status: dict[str, Any]) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """A job status without its counters: what a client acts on."""
    conditions = [(c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []]
    rest = {k: v for k, v in status.items() if k not in ("counts", "progress", "conditions") and v is not None}
    return conditions, rest


def _trial_of(pod: dict[str, Any]) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(naming.LABEL_TRIAL, ""))


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(p) for p in item["loc"])
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)
