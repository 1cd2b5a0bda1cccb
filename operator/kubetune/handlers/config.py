"""Operator settings: one documented class, read from the environment once at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


@dataclass(frozen=True)
class OperatorConfig:
    """Every knob of the operator, with its environment variable."""

    # KUBETUNE_PROMETHEUS_URL: where trial metrics are queried; empty disables early stopping.
    prometheus_url: str | None = None
    # KUBETUNE_NAMESPACES: comma-separated namespaces to watch; empty means cluster-wide.
    namespaces: tuple[str, ...] = ()
    # KUBETUNE_WORKERS: TuningJobs reconciled at the same time.
    workers: int = 4
    # KUBETUNE_METRICS_POLL_SECONDS: how often running trials' curves are read for early stopping.
    metrics_poll_seconds: float = 2.0
    # KUBETUNE_FINAL_METRICS_GRACE_SECONDS: how long a finished trial whose objective must come from Prometheus
    # (objective.promql, or Prometheus not answering) waits for it before failing with MetricsUnavailable.
    final_metrics_grace_seconds: float = 30.0
    # KUBETUNE_KEEP_FINISHED_PODS: finished trial pods kept per job once their result is recorded in the
    # Trial; older ones are deleted so etcd stays small at any trial count (-1 keeps all).
    keep_finished_pods: int = 1000
    # KUBETUNE_RESYNC_SECONDS: safety-net reconcile of every unfinished job, in case an event was missed.
    resync_seconds: float = 30.0
    # KUBETUNE_OPERATOR_METRICS_PORT: the operator's own /metrics (0 disables).
    metrics_port: int = 9102
    # KUBETUNE_HEALTH_PORT: liveness/readiness endpoint (0 disables).
    health_port: int = 8081
    # KUBETUNE_LISTEN_ADDRESS: address of both endpoints; the dev cluster's node agent runs pods as host
    # processes, so there the operator binds its pod IP (status.podIP) to keep its ports its own.
    listen_address: str = "0.0.0.0"
    # KUBETUNE_OPERATOR_ID: this installation's name in each job's Lease (the chart: <namespace>/<release>).
    # Stable across restarts, so a restarted operator takes up its jobs at once; distinct per installation, so
    # two whose namespaces overlap reconcile each job once and say so (the DuplicateOperator condition).
    operator_id: str = "kubetune"
    # KUBETUNE_WORKLOAD_KINDS: comma-separated group/version/resource of the workload kinds trials may be
    # (trialTemplate.workload), e.g. batch/v1/jobs,jobset.x-k8s.io/v1alpha2/jobsets; each is watched. Empty:
    # pod trials only. The chart sets it from workloadKinds, with RBAC for exactly those.
    workload_kinds: tuple[str, ...] = ()
    # The listed workload kinds this operator found it cannot watch at start (not served, or forbidden), each
    # with the API server's answer: not watched (Kopf would hold every handler until it could list them), and a
    # job whose trials are of such a kind fails saying why. Set by run_operator, not from the environment.
    refused_workload_kinds: Mapping[str, str] = field(default_factory=dict)
    # KUBETUNE_NUMERIC_THREADS: threads of numpy's and scipy's BLAS/OpenMP pools (default 1, never above the CPU
    # limit); read by kubetune.threads.limit_numeric_threads at start.
    # KUBECONFIG is honoured by the client; in a pod the service-account token is used.
    kubeconfig: str | None = field(default=None)

    @classmethod
    def from_env(cls) -> OperatorConfig:
        namespaces = tuple(n.strip() for n in os.environ.get("KUBETUNE_NAMESPACES", "").split(",") if n.strip())
        return cls(
            prometheus_url=os.environ.get("KUBETUNE_PROMETHEUS_URL") or None,
            namespaces=namespaces,
            workers=_env_int("KUBETUNE_WORKERS", cls.workers),
            metrics_poll_seconds=_env_float("KUBETUNE_METRICS_POLL_SECONDS", cls.metrics_poll_seconds),
            final_metrics_grace_seconds=_env_float("KUBETUNE_FINAL_METRICS_GRACE_SECONDS",
                                                   cls.final_metrics_grace_seconds),
            keep_finished_pods=_env_int("KUBETUNE_KEEP_FINISHED_PODS", cls.keep_finished_pods),
            resync_seconds=_env_float("KUBETUNE_RESYNC_SECONDS", cls.resync_seconds),
            metrics_port=_env_int("KUBETUNE_OPERATOR_METRICS_PORT", cls.metrics_port),
            health_port=_env_int("KUBETUNE_HEALTH_PORT", cls.health_port),
            listen_address=os.environ.get("KUBETUNE_LISTEN_ADDRESS") or cls.listen_address,
            operator_id=os.environ.get("KUBETUNE_OPERATOR_ID") or cls.operator_id,
            workload_kinds=tuple(k.strip() for k in os.environ.get("KUBETUNE_WORKLOAD_KINDS", "").split(",")
                                 if k.strip()),
            kubeconfig=os.environ.get("KUBECONFIG") or None,
        )
