"""The ledger of final trials: running totals equal to what a full pass over every trial computes."""

from __future__ import annotations

import random
from typing import Any

import pytest
from test_planner import ENGINE, NOW, make_job, pod, trial

from kubetune.api import Goal, Trial, TuningJob
from kubetune.controller.ledger import Ledger
from kubetune.controller.observe import PodView
from kubetune.controller.planner import Observations, Plan, plan
from kubetune.search import History, SettledHistory, stop_decisions, suggest
from kubetune.search import _history as history_module

PHASES = ["Succeeded", "Failed", "EarlyStopped", "Running", "Pending"]


def random_trials(job: TuningJob, rng: random.Random, count: int) -> list[Trial]:
    trials = []
    for index in range(count):
        phase = rng.choice(PHASES)
        status: dict[str, Any] = {"phase": phase, "attempts": 1}
        if phase in ("Succeeded", "EarlyStopped"):
            status["objective"] = rng.choice([0.5, 0.7, 0.9, rng.random()])  # ties happen
            status["metrics"] = {"val_accuracy": status["objective"]}
            status["intermediate"] = [[1, status["objective"] / 2], [2, status["objective"]]]
        if phase == "Failed":
            status |= {"reason": "Error", "message": f"trial {index} crashed"}
        parameters = {"lr": 10 ** -rng.uniform(1, 4), "optimizer": rng.choice(["sgd", "adam"])}
        trials.append(trial(job, index, parameters, **status))
    return trials


def running_pods(trials: list[Trial]) -> list[PodView]:
    return [pod(t.metadata.name, 1, "Running") for t in trials if t.status.phase == "Running"]


def comparable(result: Plan) -> tuple[Any, list[str]]:
    status = result.status.to_wire() if result.status is not None else None
    return status, sorted(repr(a) for a in result.actions)


@pytest.mark.parametrize("seed", range(12))
def test_a_plan_from_the_ledger_equals_a_plan_from_every_trial(seed: int) -> None:
    rng = random.Random(seed)
    count = rng.randint(5, 40)
    # Budgets that keep the job running, and ones that end it (too many failures, all trials made).
    budget = {"maxTrials": rng.choice([count, 60]), "parallelism": 8, "maxFailedTrials": rng.choice([1, 40])}
    job = make_job(budget=budget)
    trials = random_trials(job, rng, count)
    pods = running_pods(trials)
    whole = plan(job, trials, pods, Observations(), NOW, ENGINE)

    # The operator's way: final trials reach the ledger over several reconciles, in any order.
    final = [t for t in trials if t.status.phase in ("Succeeded", "Failed", "EarlyStopped")]
    active = [t for t in trials if t not in final]
    rng.shuffle(final)
    ledger = Ledger()
    for batch in (final[: len(final) // 2], final[len(final) // 2:]):
        for t in batch:
            ledger.add(t)
        before = (len(ledger), len(ledger.history), [r.name for r in ledger.waiting()])
        changes = plan(job, active, pods, Observations(), NOW, ENGINE, ledger=ledger).ledger_changes
        assert (len(ledger), len(ledger.history), [r.name for r in ledger.waiting()]) == before  # read, not changed
        ledger.settle_before(changes.settle_before)  # as the operator does after each plan
    incremental = plan(job, active, pods, Observations(), NOW, ENGINE, ledger=ledger)

    assert comparable(incremental) == comparable(whole)


def test_the_best_is_the_earliest_among_equals_whatever_the_order_trials_settle_in() -> None:
    job = make_job()
    trials = [trial(job, i, {"lr": 0.01, "optimizer": "sgd"}, phase="Succeeded", objective=value)
              for i, value in enumerate([0.5, 0.9, 0.2, 0.9, 0.2])]
    ledger = Ledger()
    for t in reversed(trials):
        ledger.add(t)
    best_max, best_min = ledger.best(Goal.MAXIMIZE), ledger.best(Goal.MINIMIZE)
    assert best_max is not None and best_max.index == 1
    assert best_min is not None and best_min.index == 2


def test_a_trial_is_folded_in_once_and_only_when_final() -> None:
    job = make_job()
    ledger = Ledger()
    done = trial(job, 0, {"lr": 0.01, "optimizer": "sgd"}, phase="Failed", reason="Error", message="boom")
    assert ledger.add(done) and not ledger.add(done)
    assert not ledger.add(trial(job, 1, {"lr": 0.01, "optimizer": "sgd"}, phase="Running"))
    assert len(ledger) == 1 and ledger.counts["Failed"] == 1
    assert ledger.last_failed is not None and ledger.last_failed.failure == "Error: boom"


def test_removing_a_trial_rebuilds_the_totals() -> None:
    job = make_job()
    ledger = Ledger()
    for i, value in enumerate([0.5, 0.9, 0.7]):
        ledger.add(trial(job, i, {"lr": 0.01, "optimizer": "sgd"}, phase="Succeeded", objective=value))
    ledger.settle_before(None)
    assert ledger.remove(naming_of(job, 1)) and not ledger.remove(naming_of(job, 1))
    best = ledger.best(Goal.MAXIMIZE)
    assert best is not None and best.index == 2
    assert ledger.counts["Succeeded"] == 2
    ledger.settle_before(None)
    assert [e["objective"] for e in ledger.history.entries] == [0.5, 0.7]


def test_the_settled_history_stays_in_index_order() -> None:
    job = make_job()
    ledger = Ledger()
    for i in (0, 1, 4):
        ledger.add(trial(job, i, {"lr": 0.01, "optimizer": "sgd"}, phase="Succeeded", objective=float(i)))
    assert [r.index for r in ledger.settle_before(2)] == [4]  # 4 waits behind the active trial 2
    assert [e["objective"] for e in ledger.history.entries] == [0.0, 1.0]
    ledger.add(trial(job, 2, {"lr": 0.01, "optimizer": "sgd"}, phase="Succeeded", objective=2.0))
    assert ledger.settle_before(None) == []
    assert [e["objective"] for e in ledger.history.entries] == [0.0, 1.0, 2.0, 4.0]
    # One the watch showed late, behind the settled part: the history is rebuilt in index order.
    ledger.add(trial(job, 3, {"lr": 0.01, "optimizer": "sgd"}, phase="Succeeded", objective=3.0))
    ledger.settle_before(None)
    assert [e["objective"] for e in ledger.history.entries] == [0.0, 1.0, 2.0, 3.0, 4.0]


def naming_of(job: TuningJob, index: int) -> str:
    return f"{job.metadata.name}-{index}"


def entries(count: int, rng: random.Random) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for _ in range(count):
        value = rng.random()
        result.append({"parameters": {"lr": 10 ** -rng.uniform(1, 4), "optimizer": rng.choice(["sgd", "adam"])},
                       "state": "Succeeded", "objective": value, "intermediate": [[1, value / 2], [2, value]]})
    return result


@pytest.mark.parametrize("algorithm", ["random", "tpe", "evolution"])
def test_a_history_with_a_settled_part_gives_the_same_suggestions(algorithm: str) -> None:
    spec = make_job(algorithm={"name": algorithm, "seed": 3}).spec
    rng = random.Random(1)
    past = entries(30, rng)
    running = {"parameters": {"lr": 0.01, "optimizer": "adam"}, "state": "Running", "intermediate": [[1, 0.3]]}
    settled = SettledHistory()
    for entry in past[:25]:
        settled.append(entry)
    history = History(settled, [*past[25:], running])
    assert len(history) == 31 and history[-1] is running and history[3]["objective"] == past[3]["objective"]
    assert suggest(spec, history, 4) == suggest(spec, [*past, running], 4)
    assert suggest(spec, history, 4) == suggest(spec, list(history), 4)  # and again, from the cache


def test_stopping_reads_a_settled_history_like_a_list() -> None:
    spec = make_job(earlyStopping={"rule": "median", "minTrials": 3, "minResource": 1, "maxResource": 3}).spec
    past = entries(10, random.Random(2))
    running = {"parameters": {"lr": 0.01, "optimizer": "adam"}, "state": "Running",
               "intermediate": [[1, 0.0], [2, 0.0]]}
    settled = SettledHistory()
    for entry in past:
        settled.append(entry)
    decisions = stop_decisions(spec, History(settled, [running]))
    assert decisions == stop_decisions(spec, [*past, running])
    assert [d.index for d in decisions] == [10]


def test_settled_entries_are_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_job().spec
    parsed: list[int] = []
    original = history_module._parse_entry

    def counting(space: Any, sign: float, index: int, entry: object) -> Any:
        parsed.append(index)
        return original(space, sign, index, entry)

    monkeypatch.setattr(history_module, "_parse_entry", counting)
    settled = SettledHistory()
    past = entries(50, random.Random(3))
    for entry in past[:40]:
        settled.append(entry)
    suggest(spec, History(settled, []), 2)
    assert sorted(parsed) == list(range(40))
    parsed.clear()
    for entry in past[40:]:
        settled.append(entry)
    suggest(spec, History(settled, past[:1]), 2)
    assert sorted(parsed) == [*range(40, 50), 50]  # the new settled entries and the open one


def test_the_job_names_the_failure_of_the_highest_index() -> None:
    job = make_job(budget={"maxTrials": 10, "parallelism": 2, "maxFailedTrials": 1})
    failed = [trial(job, i, {"lr": 0.01, "optimizer": "sgd"}, phase="Failed", reason="Error",
                    message=f"trial {i} crashed") for i in (5, 2)]
    ledger = Ledger()
    for t in failed:
        ledger.add(t)
    result = plan(job, [], [], Observations(), NOW, ENGINE, ledger=ledger)
    assert result.status is not None and result.status.message is not None
    assert result.status.message.endswith("last: Error: trial 5 crashed")
    assert result.status.counts.failed == 2 and result.status.counts.created == 2

    # A trial failing in this very plan, with a higher index than the ledger's last failure.
    last_try = trial(job, 7, {"lr": 0.01, "optimizer": "sgd"}, phase="Running", attempts=2)
    result = plan(job, [last_try], [pod(last_try.metadata.name, 2, "Failed")], Observations(), NOW, ENGINE,
                  ledger=ledger)
    assert result.status is not None and result.status.message is not None
    assert "pod digits-7-2" in result.status.message.split("last: ")[1]
