"""Early-stopping rules on hand-built learning curves."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from kubetune.api import EarlyStopDecision
from kubetune.search import StopDecision, stop, stop_decisions
from kubetune.search._stopping import bracket_of, hyperband_brackets

TEMPLATE = {"template": {"spec": {"containers": [{"name": "trainer", "image": "trainer"}]}}}


def make_spec(rule: str, goal: str = "minimize", **early: Any) -> dict[str, Any]:
    return {
        "objective": {"metric": "loss", "goal": goal},
        "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
        "earlyStopping": {"rule": rule, **early},
        "budget": {"maxTrials": 100},
        "trialTemplate": TEMPLATE,
    }


def trial(state: str, values: list[float], start: int = 1, objective: float | None = None) -> dict[str, Any]:
    return {
        "parameters": {"x": 0.5},
        "state": state,
        "objective": objective,
        "intermediate": [[start + i, v] for i, v in enumerate(values)],
    }


# ---------------------------------------------------------------------------- median


def peers(count: int = 5, level: float = 0.5) -> list[dict[str, Any]]:
    return [trial("Succeeded", [level + 0.01 * i] * 10, objective=level) for i in range(count)]


def test_median_stops_the_clear_loser_and_keeps_the_leader() -> None:
    history = peers() + [trial("Running", [0.9, 0.9, 0.9]), trial("Running", [0.4, 0.3, 0.2])]
    decisions = stop_decisions(make_spec("median", minTrials=5), history)
    assert [d.index for d in decisions] == [5]
    decision = decisions[0]
    # Others' running averages at step 3: 0.50..0.54 and the running leader's 0.3 -> median 0.515.
    assert decision == StopDecision(index=5, rule="median", step=3.0, value=0.9, threshold=pytest.approx(0.515))
    assert decision.to_status() == EarlyStopDecision(rule="median", step=3.0, value=0.9, threshold=decision.threshold)


def test_median_compares_the_best_value_so_far_with_running_averages() -> None:
    # Peers average 0.5 up to step 3; the trial was bad then good: its best (0.45) beats the median.
    history = peers() + [trial("Running", [0.9, 0.9, 0.45])]
    assert stop(make_spec("median", minTrials=5), history) == []
    # Peers that improve late: their running average at step 2 is (1.0 + 0.2) / 2 = 0.6.
    improving = [trial("Succeeded", [1.0, 0.2, 0.2]) for _ in range(5)]
    assert stop(make_spec("median", minTrials=5), [*improving, trial("Running", [0.7, 0.65])]) == [5]
    assert stop(make_spec("median", minTrials=5), [*improving, trial("Running", [0.7, 0.55])]) == []


def test_median_waits_for_min_trials_and_min_resource() -> None:
    loser = trial("Running", [0.9, 0.9, 0.9])
    assert stop(make_spec("median", minTrials=6), [*peers(5), loser]) == []
    assert stop(make_spec("median", minTrials=5, minResource=4), [*peers(5), loser]) == []
    assert stop(make_spec("median", minTrials=5, minResource=3), [*peers(5), loser]) == [5]
    # Peers that have not yet reached step 3 do not count.
    short = [trial("Running", [0.5, 0.5]) for _ in range(5)]
    assert stop(make_spec("median", minTrials=5), [*short, loser]) == []


def test_median_counts_running_and_early_stopped_peers_but_not_failed_ones() -> None:
    loser = trial("Running", [0.9, 0.9, 0.9])
    mixed = [trial("Running", [0.5] * 4), trial("EarlyStopped", [0.5] * 3), *peers(3)]
    assert stop(make_spec("median", minTrials=5), [*mixed, loser]) == [5]
    failed = [trial("Failed", [0.5] * 4) for _ in range(5)]
    assert stop(make_spec("median", minTrials=5), [*failed, loser]) == []


def test_median_follows_the_goal() -> None:
    # Maximising accuracy: the 0.1 trial is the loser, the 0.9 one the leader.
    history = peers() + [trial("Running", [0.1, 0.1, 0.1]), trial("Running", [0.9, 0.9, 0.9])]
    decisions = stop_decisions(make_spec("median", goal="maximize", minTrials=5), history)
    assert [(d.index, d.value) for d in decisions] == [(5, 0.1)]
    assert decisions[0].threshold == pytest.approx(0.525)  # 0.50..0.54 and the leader's 0.9


def test_only_running_trials_are_stopped_and_nan_counts_as_worst() -> None:
    history = peers() + [
        trial("Succeeded", [0.9] * 10),
        trial("EarlyStopped", [0.9] * 3),
        trial("Running", [float("nan")] * 3),
        trial("Pending", []),
    ]
    assert stop(make_spec("median", minTrials=5), history) == [7]
    assert stop(make_spec("none"), history) == []


# ---------------------------------------------------------------------------- asha


def asha(**extra: Any) -> dict[str, Any]:
    return make_spec("asha", minResource=1, maxResource=9, reductionFactor=3, **extra)


def test_asha_keeps_the_top_third_at_each_rung() -> None:
    # Nine trials at rung 1 (values 0.1..0.9): keep floor(9 / 3) = 3.
    history = [trial("Running", [0.1 * (i + 1), 0.05]) for i in range(9)]
    decisions = stop_decisions(asha(), history)
    assert [d.index for d in decisions] == [3, 4, 5, 6, 7, 8]
    assert all(d.step == 1.0 and d.threshold == pytest.approx(0.3) for d in decisions)
    assert decisions[0].value == pytest.approx(0.4)


def test_asha_judges_at_the_highest_rung_reached_with_the_value_at_that_rung() -> None:
    # Rung 3: four finished trials reached it with 0.2..0.5; a running one arrives with 0.45.
    finished = [trial("Succeeded", [0.9, 0.9, 0.2 + 0.1 * i, 0.1]) for i in range(4)]
    arriving = trial("Running", [0.1, 0.1, 0.45])
    decisions = stop_decisions(asha(), [*finished, arriving])
    assert [(d.index, d.step) for d in decisions] == [(4, 3.0)]  # 5 at rung 3: keep 1, it is 4th
    leader = trial("Running", [0.9, 0.9, 0.15, 0.14])  # between rungs 3 and 9: judged at 3, best
    assert stop(asha(), [*finished, leader]) == []


def test_asha_before_eta_trials_only_the_best_continues() -> None:
    first, second = trial("Running", [0.3]), trial("Running", [0.4])
    assert stop(asha(), [first]) == []
    assert stop(asha(), [first, second]) == [1]  # as Optuna's SuccessiveHalvingPruner
    assert stop(asha(), [second, trial("Running", [0.2])]) == [0]


def test_asha_never_stops_below_the_first_rung_or_at_max_resource() -> None:
    spec = make_spec("asha", minResource=2, maxResource=8, reductionFactor=2)  # rungs 2, 4
    history = [trial("Succeeded", [0.1] * 8), trial("Running", [0.9]), trial("Running", [0.9] * 8)]
    assert stop(spec, history) == []
    assert stop(spec, [*history, trial("Running", [0.9] * 2)]) == [3]


def test_asha_follows_the_goal() -> None:
    history = [trial("Running", [0.1 * (i + 1)]) for i in range(9)]
    assert stop(asha(goal="maximize"), history) == [0, 1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------- hyperband


def test_hyperband_brackets_are_deterministic_balanced_and_interleaved() -> None:
    spec = make_spec("hyperband", minResource=1, maxResource=27, reductionFactor=3)
    from kubetune.api import TuningJobSpec

    rule = TuningJobSpec.model_validate(spec).early_stopping
    cumulative = hyperband_brackets(rule)
    assert len(cumulative) == 4  # s_max = log3(27) = 3
    weights = [27, 12, 6, 4]  # ceil(4/(s+1) * 3^s) for s = 3, 2, 1, 0
    assert cumulative == pytest.approx([sum(weights[: k + 1]) / sum(weights) for k in range(4)])
    brackets = [bracket_of(i, cumulative) for i in range(490)]
    counts = Counter(brackets)
    for bracket, weight in enumerate(weights):
        assert abs(counts[bracket] - 490 * weight / sum(weights)) <= 3
    assert len(set(brackets[:6])) >= 3  # the first wave already spans brackets


def test_hyperband_runs_asha_within_each_bracket() -> None:
    spec = make_spec("hyperband", minResource=1, maxResource=27, reductionFactor=3)
    from kubetune.api import TuningJobSpec

    cumulative = hyperband_brackets(TuningJobSpec.model_validate(spec).early_stopping)
    # Everyone tied at step 3: brackets 0 and 1 judge at rung 3 (ties kept), 2 and 3 have no rung yet.
    history = [trial("Running", [float(i) / 100, 0.0, 0.0]) for i in range(40)]
    assert stop(spec, history) == []
    # Only bracket 0 has a rung at step 1: its members compete among themselves alone.
    history = [trial("Running", [float(i) / 100]) for i in range(40)]
    decisions = stop_decisions(spec, history)
    members = [j for j in range(40) if bracket_of(j, cumulative) == 0]
    keep = len(members) // 3
    assert [d.index for d in decisions] == members[keep:]
    assert all(d.rule == "hyperband" and d.step == 1.0 for d in decisions)


# ---------------------------------------------------------------------------- the last step


@pytest.mark.parametrize(
    "early",
    [
        {"rule": "median", "minTrials": 5},
        {"rule": "percentile", "percentile": 25.0, "minTrials": 5},
        {"rule": "asha", "reductionFactor": 3},
        {"rule": "hyperband", "reductionFactor": 3},
    ],
)
def test_no_rule_stops_a_trial_at_or_past_max_resource(early: dict[str, Any]) -> None:
    # A clear loser among leaders: stopped on its way, never once it reached maxResource (nothing left to save).
    # (Trial 9 is in hyperband's bracket 1, whose rung is step 3.)
    leaders = [trial("Running", [0.1 + 0.01 * i] * 9) for i in range(9)]
    spec = make_spec(early.pop("rule"), minResource=1, maxResource=9, **early)
    on_its_way = stop(spec, [*leaders, trial("Running", [0.9] * 3)])
    assert on_its_way == [9]
    assert stop(spec, [*leaders, trial("Running", [0.9] * 9)]) == []
    assert stop(spec, [*leaders, trial("Running", [0.9] * 10)]) == []


def test_median_without_max_resource_spares_a_trial_at_the_last_step_of_the_succeeded_ones() -> None:
    # The user's case: 9-epoch trials, no maxResource; the loser reports epoch 9 and is done anyway.
    finished = [trial("Succeeded", [0.5 + 0.01 * i] * 9, objective=0.5) for i in range(5)]
    assert stop(make_spec("median", minTrials=5), [*finished, trial("Running", [0.9] * 8)]) == [5]
    assert stop(make_spec("median", minTrials=5), [*finished, trial("Running", [0.9] * 9)]) == []
    # Before any trial succeeded, the length of a full trial is unknown: the rule judges as usual.
    running = [trial("Running", [0.5 + 0.01 * i] * 9) for i in range(5)]
    assert 5 in stop(make_spec("median", minTrials=5), [*running, trial("Running", [0.9] * 9)])


# ---------------------------------------------------------------------------- percentile


def test_percentile_keeps_the_best_fraction_and_50_is_median() -> None:
    # Peers' running averages at step 3: 0.1, 0.2, ..., 0.8; the running trials sit between them.
    peers_ = [trial("Succeeded", [0.1 * (i + 1)] * 10, objective=0.1 * (i + 1)) for i in range(8)]
    runners = [trial("Running", [value] * 3) for value in (0.15, 0.3, 0.55, 0.75)]
    history = [*peers_, *runners]
    quarter = stop_decisions(make_spec("percentile", percentile=25.0, minTrials=5), history)
    # Others of the 0.15 runner: 0.1..0.8 and the other runners; 25th percentile ~0.24: only it stays.
    assert [d.index for d in quarter] == [9, 10, 11]
    assert all(d.rule == "percentile" for d in quarter)
    half = stop_decisions(make_spec("percentile", percentile=50.0, minTrials=5), history)
    median = stop_decisions(make_spec("median", minTrials=5), history)
    assert [(d.index, d.step, d.value, d.threshold) for d in half] == [
        (d.index, d.step, d.value, d.threshold) for d in median
    ]
    assert stop(make_spec("percentile", percentile=100.0, minTrials=5), history) == []  # the bar is the worst


def test_percentile_follows_the_goal() -> None:
    # Maximising: the 0.2 runner is the loser; percentile 25 keeps the best quarter (the highest values).
    peers_ = [trial("Succeeded", [0.1 * (i + 1)] * 10, objective=0.1 * (i + 1)) for i in range(8)]
    history = [*peers_, trial("Running", [0.2] * 3), trial("Running", [0.85] * 3)]
    decisions = stop_decisions(make_spec("percentile", goal="maximize", percentile=25.0, minTrials=5), history)
    assert [(d.index, d.value) for d in decisions] == [(8, 0.2)]
    assert decisions[0].threshold is not None and decisions[0].threshold > 0.6  # reported as a value, not a loss


# ---------------------------------------------------------------------------- the registry


def test_every_rule_of_the_api_has_a_decision_function_and_no_other() -> None:
    from kubetune.api import EarlyStoppingRule
    from kubetune.search._stopping import STOPPING_RULES

    assert set(STOPPING_RULES) == set(EarlyStoppingRule)


def test_a_rule_without_a_decision_function_is_an_error_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubetune.api import EarlyStoppingRule
    from kubetune.search import SearchError, _stopping

    monkeypatch.delitem(_stopping.STOPPING_RULES, EarlyStoppingRule.MEDIAN)
    history = [*peers(), trial("Running", [0.9, 0.9, 0.9])]
    with pytest.raises(SearchError, match="'median' has no decision function"):
        stop(make_spec("median", minTrials=5), history)
