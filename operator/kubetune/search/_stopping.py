"""Early-stopping rules as pure functions of the history.

Each call judges every Running trial from its intermediate values
`[[resource, value], ...]` and the curves of the other trials. Failed trials'
curves are ignored; Running, Succeeded and EarlyStopped ones all count. A NaN
value counts as the worst possible. Values are compared in the goal's
direction; `StopDecision.value`/`threshold` are reported as the trial
reported them.

Each rule is one entry of `STOPPING_RULES` (rule name -> decision function);
the names, how each decides and the fields each needs are declared once in
`kubetune.api.models.EarlyStoppingRule`. A rule with no entry here is an
error, never a silent fallback to another rule.

No rule stops a trial at or past the last step of a full trial, where stopping
saves nothing: `maxResource` when set, else the highest step a Succeeded trial
reported (trials that all run the same number of steps end there).

median (Vizier's median stopping rule, as Katib's medianstop): a trial whose
    latest step s >= minResource is stopped when its best value so far is
    strictly worse than the median, over other trials that have reported a
    step >= s, of their running averages (mean of their values at steps <= s),
    provided at least `minTrials` such trials exist. Unlike Optuna's
    MedianPruner (completed trials only, value at exactly s), still-running
    trials that already passed s count too, so parallel trials can be compared
    before any finishes; `minTrials` keeps early calls conservative.
percentile (as Optuna's PercentilePruner generalises its MedianPruner): median
    with the `percentile`-th percentile of those running averages (linear
    interpolation, smaller is better) as the bar; 50 is median.
asha (asynchronous successive halving, stopping variant as Optuna's
    SuccessiveHalvingPruner): rungs at minResource * eta^k below maxResource.
    A trial is judged at the highest rung it has reached, by its value at the
    first report at or past the rung, against every trial's value at that
    rung: it continues iff it is within the best floor(n / eta) (the best one
    when fewer than eta trials have reached the rung). Being a pure function of
    the history, the judgement is repeated on each call: a trial that was in the
    top fraction when it got to a rung is stopped if enough better trials reach
    that rung before it reaches the next one.
hyperband: brackets b = 0..s_max (s_max = floor(log_eta(max / min))); bracket b
    runs ASHA with its first rung at minResource * eta^b (the last bracket has
    at most one rung, none when maxResource = minResource * eta^s_max). Trial i
    joins a bracket by the golden-ratio sequence frac(i * 0.618...) over
    bracket weights proportional to Hyperband's trial
    counts ceil((s_max + 1) / (s + 1) * eta^s), s = s_max - b: deterministic,
    balanced and interleaved. Trials compete only within their bracket.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kubetune.api.models import EarlyStopDecision, EarlyStopping, EarlyStoppingRule, Goal, TrialPhase, TuningJobSpec
from kubetune.search._errors import SearchError
from kubetune.search._history import Observation, parse_history
from kubetune.search._space import load_spec

_GOLDEN = 0.6180339887498949


@dataclass(frozen=True)
class StopDecision:
    """A Running trial to stop, and the values that decided it."""

    index: int  # position in the history
    rule: str
    step: float  # resource at which the trial was compared
    value: float  # the trial's value there (best so far for median), as reported
    threshold: float | None  # the value it had to match or beat, as reported

    def to_status(self) -> EarlyStopDecision:
        """The Trial status field (`status.earlyStopping`)."""
        return EarlyStopDecision(rule=self.rule, step=self.step, value=self.value, threshold=self.threshold)


def _loss(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _best_so_far(curve: Sequence[tuple[float, float]], step: float) -> float:
    return min(_loss(v) for s, v in curve if s <= step)


def _running_average(curve: Sequence[tuple[float, float]], step: float) -> float | None:
    values = [v for s, v in curve if s <= step and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _value_at(curve: Sequence[tuple[float, float]], rung: float) -> float | None:
    """The value reported when the trial first reached `rung` (None if it has not)."""
    return next((_loss(v) for s, v in curve if s >= rung), None)


def _below_bar(
    rule: EarlyStopping, trials: list[Observation], sign: float, bar: Callable[[list[float]], float]
) -> list[StopDecision]:
    """Running trials whose best value so far is worse than `bar` of their peers' running averages."""
    decisions = []
    for trial in trials:
        if trial.state != TrialPhase.RUNNING or not trial.curve:
            continue
        step = trial.curve[-1][0]
        if step < rule.min_resource:
            continue
        averages = [
            average
            for other in trials
            if other.index != trial.index and other.curve and other.curve[-1][0] >= step
            for average in [_running_average(other.curve, step)]
            if average is not None
        ]
        if len(averages) < rule.min_trials:
            continue
        threshold = bar(averages)
        best = _best_so_far(trial.curve, step)
        if best > threshold:
            decisions.append(StopDecision(trial.index, rule.rule, step, sign * best, sign * threshold))
    return decisions


def _median(rule: EarlyStopping, trials: list[Observation], sign: float) -> list[StopDecision]:
    return _below_bar(rule, trials, sign, statistics.median)


def _percentile(rule: EarlyStopping, trials: list[Observation], sign: float) -> list[StopDecision]:
    percentile = rule.percentile
    assert percentile is not None  # the model requires it for this rule
    return _below_bar(rule, trials, sign, lambda averages: float(np.percentile(averages, percentile)))


def _rungs(min_resource: float, max_resource: float, eta: int, first: int) -> list[float]:
    rungs = []
    k = first
    while min_resource * eta**k < max_resource:
        rungs.append(float(min_resource * eta**k))
        k += 1
    return rungs


def _successive_halving(
    trials: list[Observation], rungs: list[float], rule: EarlyStopping, sign: float
) -> list[StopDecision]:
    eta = rule.reduction_factor
    decisions = []
    for trial in trials:
        if trial.state != TrialPhase.RUNNING or not trial.curve:
            continue
        reached = [r for r in rungs if trial.curve[-1][0] >= r]
        if not reached:
            continue
        rung = reached[-1]
        value = _value_at(trial.curve, rung)
        assert value is not None
        competitors = sorted(v for other in trials for v in [_value_at(other.curve, rung)] if v is not None)
        keep = max(len(competitors) // eta, 1)
        threshold = competitors[keep - 1]
        if value > threshold:
            decisions.append(StopDecision(trial.index, rule.rule, rung, sign * value, sign * threshold))
    return decisions


def hyperband_brackets(rule: EarlyStopping) -> list[float]:
    """Cumulative bracket weights (the last is 1.0) for a hyperband rule."""
    assert rule.max_resource is not None
    eta = rule.reduction_factor
    s_max = int(math.floor(math.log(rule.max_resource / rule.min_resource, eta) + 1e-9))
    weights = [math.ceil((s_max + 1) / (s + 1) * eta**s) for s in range(s_max, -1, -1)]
    total = sum(weights)
    cumulative, running = [], 0
    for weight in weights:
        running += weight
        cumulative.append(running / total)
    return cumulative


def bracket_of(index: int, cumulative: Sequence[float]) -> int:
    """The bracket of trial `index`: golden-ratio sequence over cumulative weights."""
    position = (index * _GOLDEN) % 1.0
    return next(b for b, edge in enumerate(cumulative) if position < edge or b == len(cumulative) - 1)


def _asha(rule: EarlyStopping, trials: list[Observation], sign: float) -> list[StopDecision]:
    assert rule.max_resource is not None  # the model requires it for this rule
    rungs = _rungs(rule.min_resource, rule.max_resource, rule.reduction_factor, 0)
    return _successive_halving(trials, rungs, rule, sign)


def _hyperband(rule: EarlyStopping, trials: list[Observation], sign: float) -> list[StopDecision]:
    assert rule.max_resource is not None  # the model requires it for this rule
    cumulative = hyperband_brackets(rule)
    decisions: list[StopDecision] = []
    for bracket in range(len(cumulative)):
        members = [t for t in trials if bracket_of(t.index, cumulative) == bracket]
        rungs = _rungs(rule.min_resource, rule.max_resource, rule.reduction_factor, bracket)
        decisions += _successive_halving(members, rungs, rule, sign)
    return decisions


def _never(rule: EarlyStopping, trials: list[Observation], sign: float) -> list[StopDecision]:
    return []


# A rule's decision: (its settings, the trials that count: all but Failed ones, with values turned into
# losses, and the sign that turns a loss back into the value as reported) -> the Running trials it stops.
Decide = Callable[[EarlyStopping, list[Observation], float], list[StopDecision]]

STOPPING_RULES: dict[EarlyStoppingRule, Decide] = {
    EarlyStoppingRule.NONE: _never,
    EarlyStoppingRule.MEDIAN: _median,
    EarlyStoppingRule.PERCENTILE: _percentile,
    EarlyStoppingRule.ASHA: _asha,
    EarlyStoppingRule.HYPERBAND: _hyperband,
}


def last_step(rule: EarlyStopping, trials: Sequence[Observation]) -> float:
    """The step a full trial ends at: maxResource, else the highest step a Succeeded trial reported (inf: none)."""
    if rule.max_resource is not None:
        return float(rule.max_resource)
    return max((t.curve[-1][0] for t in trials if t.state == TrialPhase.SUCCEEDED and t.curve), default=math.inf)


def stop_decisions(spec: Mapping[str, Any] | TuningJobSpec, history: object) -> list[StopDecision]:
    """The Running trials the job's early-stopping rule stops now, with what decided each.

    `history` as for `suggest` (parameters are not checked here). Sorted by index.
    """
    job = load_spec(spec)
    observations = parse_history(None, job.primary_objective.goal, history)
    rule = job.early_stopping
    decide = STOPPING_RULES.get(EarlyStoppingRule(rule.rule))
    if decide is None:
        raise SearchError(f"early-stopping rule {rule.rule!r} has no decision function")
    sign = -1.0 if Goal(job.primary_objective.goal) == Goal.MAXIMIZE else 1.0
    trials = [o for o in observations if o.state != TrialPhase.FAILED]
    end = last_step(rule, trials)
    # A trial that ran its full length has nothing left to save: never stopped, whatever the rule.
    finished = {t.index for t in trials if t.curve and t.curve[-1][0] >= end}
    return sorted((d for d in decide(rule, trials, sign) if d.index not in finished), key=lambda d: d.index)


def stop(spec: Mapping[str, Any] | TuningJobSpec, history: object) -> list[int]:
    """Indices into `history` of Running trials to stop now (see `stop_decisions`)."""
    return [decision.index for decision in stop_decisions(spec, history)]
