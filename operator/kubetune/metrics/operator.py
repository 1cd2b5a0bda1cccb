"""The operator's own Prometheus metrics (names follow Prometheus conventions)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)


class OperatorMetrics:
    """One set per operator; a registry of its own so in-process tests can run several."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ("namespace", "tuningjob")
        self.trials_created = Counter(
            "kubetune_trials_created_total", "Trials created.", labels, registry=self.registry
        )
        self.trials_finished = Counter(
            "kubetune_trials_finished_total", "Trials finished, by outcome (phase).", (*labels, "outcome"),
            registry=self.registry,
        )
        self.trials_running = Gauge(
            "kubetune_trials_running", "Trials with a running pod.", labels, registry=self.registry
        )
        self.trials_pending = Gauge(
            "kubetune_trials_pending", "Trials waiting for their pod to run.", labels, registry=self.registry
        )
        self.trials_not_starting = Gauge(
            "kubetune_trials_not_starting", "Trials whose pod Kubernetes cannot start, by reason (ImagePullBackOff, "
            "CreateContainerConfigError, Unschedulable, ...).", (*labels, "reason"), registry=self.registry,
        )
        self.best_objective = Gauge(
            "kubetune_best_objective", "Objective of the best finished trial.", labels, registry=self.registry
        )
        self.pareto_front_size = Gauge(
            "kubetune_pareto_front_size", "Trials on the Pareto front (jobs with several objectives).", labels,
            registry=self.registry,
        )
        self.pareto_front_objective = Gauge(
            "kubetune_pareto_front_objective",
            "Each objective's value of each trial on the Pareto front as in status.paretoFront (several objectives).",
            (*labels, "trial", "objective"), registry=self.registry,
        )
        self.job_phase = Gauge(
            "kubetune_tuningjob_phase", "1 for the job's current phase.", (*labels, "phase"), registry=self.registry
        )
        self.reconcile_seconds = Histogram(
            "kubetune_reconcile_duration_seconds", "Time to reconcile one TuningJob.", buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.suggestion_seconds = Histogram(
            "kubetune_suggestion_duration_seconds", "Time the search engine took for one wave.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.turnover_seconds = Histogram(
            "kubetune_trial_turnover_seconds",
            "From seeing a trial pod finish to creating the next trial's pod.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "kubetune_reconcile_errors_total", "Reconciles that raised, by error type.", ("error",),
            registry=self.registry,
        )
        self.prometheus_errors = Counter(
            "kubetune_prometheus_errors_total", "Failed Prometheus queries, by reason.", ("reason",),
            registry=self.registry,
        )
        self.api_requests = Counter(
            "kubetune_api_requests_total", "Requests the operator sent to the API server.", registry=self.registry
        )
        self.queue_depth = Gauge(
            "kubetune_workqueue_depth", "TuningJobs waiting to be reconciled.", registry=self.registry
        )
