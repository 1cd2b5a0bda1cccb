"""What the operator remembers of one job between reconciles, and the policies that read it.

The cluster holds the truth; this is what a level-based controller keeps besides it to act well on it:
the ledger of final trials, pods created but not yet seen in the watch (expectations, as the Job
controller keeps), finished pods deleted before a reconcile read them, the last Prometheus answer, when
the status was last written, and failures in a row. Pure data and pure functions: the clock is an
argument (monotonic seconds), so every policy is unit-tested without a loop.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kubetune.api import Trial
from kubetune.controller import naming
from kubetune.controller.ledger import Ledger
from kubetune.controller.observe import PodView
from kubetune.controller.planner import Observations

# How long a created pod is expected before its absence from the watch means it is lost.
EXPECTATION_SECONDS = 60.0
# How long a finished pod that was deleted stands in for itself (see JobState.remember_deleted).
DELETED_POD_SECONDS = 300.0
# A job status that changed only in its counters is written at most this often (see counters_hold_back).
COUNTERS_WRITE_SECONDS = 1.0
# Reconcile retries after failures: 1 s, 2 s, 4 s ... at most this.
MAX_RETRY_SECONDS = 60.0


@dataclass
class JobState:
    ledger: Ledger = field(default_factory=Ledger)
    arrived: list[Trial] = field(default_factory=list)  # final Trials from the watch, folded in at the next reconcile
    departed: set[str] = field(default_factory=set)  # and deleted ones
    failures: int = 0  # reconciles failed in a row
    expected_pods: dict[str, float] = field(default_factory=dict)  # created, not yet in the watch -> until
    turnover_started: float | None = None  # a pod finished; the next trial's creation ends the turnover
    observed: tuple[float, Observations] | None = None  # the last Prometheus answer and when it was asked
    status_written: float | None = None
    deleted_finished: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)  # name -> (until, body)
    rejected: dict[str, str] = field(default_factory=dict)  # trial -> why the API server refused its pod
    not_starting_reasons: set[str] = field(default_factory=set)  # of the last plan, for the operator's gauge
    front_series: set[tuple[str, str]] = field(default_factory=set)  # (trial, objective) of the front's gauge

    def fold(self) -> Ledger:
        """The ledger with the Trials the watch showed final or deleted since the last reconcile."""
        for name in self.departed:
            self.ledger.remove(name)
        self.departed.clear()
        # In index order, so each lands at the end of the ledger's waiting list (20,000 at once after a restart).
        for trial in sorted(self.arrived, key=lambda t: t.spec.index):
            self.ledger.add(trial)
        self.arrived.clear()
        return self.ledger

    def expect(self, pods: Iterable[str], now: float) -> None:
        self.expected_pods.update({pod: now + EXPECTATION_SECONDS for pod in pods})

    def expected(self, present: Container[str], now: float) -> frozenset[str]:
        """Pods created here and not in the watch yet; seen or expired ones are forgotten."""
        for name in [n for n, until in self.expected_pods.items() if n in present or until < now]:
            del self.expected_pods[name]
        return frozenset(self.expected_pods)

    def remember_deleted(self, name: str, body: dict[str, Any], now: float) -> None:
        """A finished pod deleted right after it reported how it ended (a kubelet removes a pod evicted from an
        unreachable node once it is back): its last state stands in for it, so the result is read from it
        instead of the attempt being taken for lost and run again."""
        self.deleted_finished[name] = (now + DELETED_POD_SECONDS, body)

    def kept_deleted_pods(self, present: Container[str], active: Container[str], now: float) -> list[dict[str, Any]]:
        """The kept finished pods still needed: not back in the watch, not expired, and of a trial whose
        result is not recorded yet (an `active` trial; so pods the operator prunes itself are not kept)."""
        for name in [n for n, (until, body) in self.deleted_finished.items()
                     if n in present or until < now or _trial_of(body) not in active]:
            del self.deleted_finished[name]
        return [body for _, body in self.deleted_finished.values()]

    def resolve_rejections(self, final: Container[str]) -> None:
        """Rejections whose trial's failure is recorded are done with."""
        for trial in [t for t in self.rejected if t in final]:
            del self.rejected[trial]


def _trial_of(pod: Mapping[str, Any]) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(naming.LABEL_TRIAL, ""))


def retry_delay(failures: int) -> float:
    """Exponential backoff after `failures` failed reconciles in a row."""
    return min(MAX_RETRY_SECONDS, 0.5 * float(2 ** min(failures, 7)))


def status_gist(status: Mapping[str, Any]) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """A job status without its counters: what a client acts on."""
    conditions = [(c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []]
    rest = {k: v for k, v in status.items() if k not in ("counts", "progress", "conditions") and v is not None}
    return conditions, rest


def counters_hold_back(old: Mapping[str, Any], new: Mapping[str, Any], written: float | None, now: float
                       ) -> float | None:
    """Seconds to hold back a new job status that changed only in its counters (trial counts, progress, the
    Running condition's message) after one was written less than COUNTERS_WRITE_SECONDS ago, like the Job
    controller batches its syncs: a busy job would otherwise write its status on every reconcile. None: write
    it now. Phase, conditions, best trial and messages are never held back. The status is derived from the
    Trials, so a reconcile at the end of the wait writes the counts of that moment."""
    if written is None or status_gist(new) != status_gist(old):
        return None
    wait = written + COUNTERS_WRITE_SECONDS - now
    return wait if wait > 0 else None


class Ask(StrEnum):
    NOTHING = "nothing"  # no decision needs Prometheus now
    CACHED = "cached"  # the last answer is recent enough
    PROMETHEUS = "prometheus"


def prometheus_needed(
    wants_curves: bool,
    prometheus_configured: bool,
    unfinished: Collection[str],
    pods: Iterable[PodView],
    asked_at: float | None,
    now: float,
    poll_seconds: float,
) -> Ask:
    """Whether a reconcile asks Prometheus: curves for early stopping (or a PromQL objective) at most once per
    poll, pod events in between reuse the last answer; and always when a trial's pod just finished (its final
    value and curve are recorded in the Trial, also without early stopping)."""
    if not unfinished or not prometheus_configured and not wants_curves:
        return Ask.NOTHING
    needs_finals = any(p.terminal and p.trial in unfinished for p in pods)
    if not wants_curves and not needs_finals:
        return Ask.NOTHING
    if not needs_finals and asked_at is not None and now - asked_at < poll_seconds:
        return Ask.CACHED
    return Ask.PROMETHEUS
