"""A job's final trials, folded into running totals that last between reconciles.

A final trial's status never changes, so a long study's reconcile should not
look at its 20,000 finished trials again. The ledger keeps what the planner
needs of them, each trial added once: counts per phase, the best one (under
either goal), the last failure, the highest index, and the search history.
The history's settled part (every final trial before the first active one)
only grows at its end, so the search engine parses each entry once
(`kubetune.search.SettledHistory`). A final trial is kept as a compact
`SettledTrial`, not as its model.

Pure data: the Controller owns one per job and adds the Trials its watch sees
final; nothing here talks to Kubernetes.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetune.api import BestTrial, Goal, Trial, TrialPhase, TrialStatus
from kubetune.search import FrozenEntry, SettledHistory

FINAL_PHASES = frozenset(phase for phase in TrialPhase if phase.finished)


@dataclass(frozen=True, slots=True)
class SettledTrial:
    """What is kept of a final trial."""

    name: str
    index: int
    phase: TrialPhase
    objective: float | None  # of a Succeeded trial only (what the best trial is chosen by)
    metrics: Mapping[str, float]
    failure: str | None  # "reason: message" of a Failed trial
    entry: FrozenEntry  # its search-history entry; the parameters are read from it
    incomplete: str | None = None  # a Succeeded trial's message when some objective never came (several objectives)

    @property
    def rank(self) -> Rank:
        assert self.objective is not None, "only a succeeded trial is ranked"
        return self.objective, self.index

    @property
    def parameters(self) -> Mapping[str, Any]:
        parameters: Mapping[str, Any] = self.entry["parameters"]
        return parameters

    def best_trial(self) -> BestTrial:
        assert self.objective is not None
        return BestTrial(name=self.name, index=self.index, objective=self.objective,
                         parameters=dict(self.parameters), metrics=dict(self.metrics))


def history_entry(
    parameters: Mapping[str, object], status: TrialStatus, curve: Iterable[Iterable[float]] | None = None
) -> dict[str, Any]:
    """A trial as the search engine sees it (`curve`: a fresher one than the status's)."""
    partial = (TrialPhase.SUCCEEDED, TrialPhase.EARLY_STOPPED, TrialPhase.CANCELLED)
    objective = status.objective if status.phase in partial else None
    entry = {
        "parameters": dict(parameters),
        "state": str(status.phase),
        "objective": objective,
        "intermediate": [list(p) for p in (curve if curve is not None else status.intermediate)],
    }
    if status.phase == TrialPhase.SUCCEEDED and status.metrics:  # where the other objectives' values are
        entry["metrics"] = dict(status.metrics)
    return entry


def settle(trial: Trial) -> SettledTrial:
    """The compact record of a final trial."""
    status = trial.status
    succeeded = status.phase == TrialPhase.SUCCEEDED
    return SettledTrial(
        name=trial.metadata.name,
        index=trial.spec.index,
        phase=status.phase,
        objective=status.objective if succeeded else None,
        metrics=dict(status.metrics) if succeeded else {},
        failure=f"{status.reason}: {status.message}" if status.phase == TrialPhase.FAILED else None,
        entry=FrozenEntry(history_entry(trial.spec.parameters, status)),
        incomplete=status.message if succeeded and status.reason == OBJECTIVES_INCOMPLETE else None,
    )


OBJECTIVES_INCOMPLETE = "ObjectivesIncomplete"  # a Succeeded trial's reason when an objective never came
# The objectives a front is judged by: (metric, sign) pairs, sign * value smaller is better.
ObjectiveKeys = tuple[tuple[str, float], ...]


def objective_vector(metrics: Mapping[str, float], keys: ObjectiveKeys) -> tuple[float, ...] | None:
    """A trial's losses for `keys` from its metrics, or None when one is missing."""
    if any(metric not in metrics for metric, _ in keys):
        return None
    return tuple(sign * metrics[metric] for metric, sign in keys)


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


@dataclass
class _Front:
    """The non-dominated succeeded trials among the first `seen` of a ledger's scored records."""

    seen: int = 0
    members: list[tuple[tuple[float, ...], SettledTrial]] = field(default_factory=list)

    def offer(self, vector: tuple[float, ...], record: SettledTrial) -> None:
        if any(dominates(v, vector) for v, _ in self.members):
            return
        self.members = [(v, r) for v, r in self.members if not dominates(vector, v)]
        self.members.append((vector, record))


Rank = tuple[float, int]  # (objective, trial index) of a succeeded trial


def beats(goal: Goal, candidate: Rank, incumbent: Rank | None) -> bool:
    """A better objective under `goal`, or an equal one of an earlier trial: so the best trial does not
    depend on the order trials are looked at in."""
    if incumbent is None:
        return True
    if candidate[0] == incumbent[0]:
        return candidate[1] < incumbent[1]
    return (candidate[0] > incumbent[0]) == (goal == Goal.MAXIMIZE)


class Ledger:
    """Running totals of a job's final trials; each trial is added once, by name."""

    def __init__(self, records: Iterable[SettledTrial] = ()) -> None:
        self._reset(records)

    def _reset(self, records: Iterable[SettledTrial]) -> None:
        self.trials: dict[str, SettledTrial] = {}
        self.counts: Counter[TrialPhase] = Counter()
        self.max_index = -1
        self.last_failed: SettledTrial | None = None
        self.history = SettledHistory()
        self._best: dict[Goal, SettledTrial | None] = {Goal.MINIMIZE: None, Goal.MAXIMIZE: None}
        self._waiting: list[tuple[int, str]] = []  # final but after an active trial: not in `history` yet
        self._settled_up_to = -1  # the highest index in `history`
        self.last_incomplete: SettledTrial | None = None
        self._succeeded: list[SettledTrial] = []  # in the order folded: what Pareto fronts are built from
        self._fronts: dict[ObjectiveKeys, _Front] = {}
        for record in sorted(records, key=lambda r: r.index):
            self._fold(record)

    def __len__(self) -> int:
        return len(self.trials)

    def __contains__(self, name: object) -> bool:
        return name in self.trials

    def get(self, name: str) -> SettledTrial | None:
        return self.trials.get(name)

    def add(self, trial: Trial) -> bool:
        """Fold in a final trial; False if it is already here (the watch delivers a trial many times)."""
        if trial.metadata.name in self.trials or trial.status.phase not in FINAL_PHASES:
            return False
        record = settle(trial)
        if record.index <= self._settled_up_to:
            # Behind the settled history (a trial the watch showed late): rebuilt, so positions stay in index order.
            self._reset([*self.trials.values(), record])
        else:
            self._fold(record)
        return True

    def remove(self, name: str) -> bool:
        """Forget a trial (deleted from the API); the totals are rebuilt from the rest."""
        if name not in self.trials:
            return False
        self._reset([r for n, r in self.trials.items() if n != name])
        return True

    def _fold(self, record: SettledTrial) -> None:
        self.trials[record.name] = record
        self.counts[record.phase] += 1
        self.max_index = max(self.max_index, record.index)
        if record.phase == TrialPhase.FAILED and (self.last_failed is None or record.index > self.last_failed.index):
            self.last_failed = record
        if record.incomplete is not None and (self.last_incomplete is None
                                              or record.index > self.last_incomplete.index):
            self.last_incomplete = record
        if record.objective is not None:
            self._succeeded.append(record)
            for goal, best in self._best.items():
                if beats(goal, record.rank, best.rank if best is not None else None):
                    self._best[goal] = record
        bisect.insort(self._waiting, (record.index, record.name))

    def best(self, goal: Goal) -> SettledTrial | None:
        return self._best[goal]

    def front(self, keys: ObjectiveKeys) -> list[tuple[tuple[float, ...], SettledTrial]]:
        """The non-dominated succeeded trials under `keys`, with their losses; kept between calls and brought
        up to date with the trials folded in since (each trial is offered once)."""
        front = self._fronts.setdefault(keys, _Front())
        for record in self._succeeded[front.seen:]:
            vector = objective_vector(record.metrics, keys)
            if vector is not None:
                front.offer(vector, record)
        front.seen = len(self._succeeded)
        return list(front.members)

    def waiting(self) -> list[SettledTrial]:
        """The final trials not in the settled history yet, in index order."""
        return [self.trials[name] for _, name in self._waiting]

    def settle_before(self, first_active: int | None) -> list[SettledTrial]:
        """Move the final trials with an index below `first_active` (None: all) into the settled
        history, in index order; return those still waiting behind an active trial, in index order."""
        split = len(self._waiting) if first_active is None else bisect.bisect_left(self._waiting, (first_active, ""))
        for index, name in self._waiting[:split]:
            self.history.append(self.trials[name].entry)
            self._settled_up_to = index
        del self._waiting[:split]
        return [self.trials[name] for _, name in self._waiting]
