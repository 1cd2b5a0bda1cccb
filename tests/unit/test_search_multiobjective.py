"""Multi-objective search: Pareto helpers, every algorithm on a two-objective job, and the MO samplers'
own behaviour (auto's choice, waves spread along the front, the front improves on random)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from kubetune.api import AlgorithmName
from kubetune.search import non_dominated, suggest
from kubetune.search._context import Context
from kubetune.search._engine import choose_algorithm
from kubetune.search._history import parse_history
from kubetune.search._multi import chebyshev, crowding, pareto_ranks
from kubetune.search._space import Space, load_spec
from tests.unit.test_search_contract import PARAMETERS, TEMPLATE, assert_valid, key

MULTI = ["nsga2", "motpe", "parego", "auto"]
XY = [{"name": f"x{i}", "type": "float", "min": 0.0, "max": 1.0} for i in range(3)]


def mo_spec(algorithm: str, parameters: list[dict[str, Any]] | None = None, *, seed: int = 3,
            max_trials: int = 100, **settings: Any) -> dict[str, Any]:
    return {
        "objectives": [{"metric": "error", "goal": "minimize"}, {"metric": "speed", "goal": "maximize"}],
        "parameters": parameters if parameters is not None else XY,
        "algorithm": {"name": algorithm, "seed": seed, **settings},
        "budget": {"maxTrials": max_trials, "parallelism": 4},
        "trialTemplate": TEMPLATE,
    }


def zdt1(a: dict[str, Any]) -> tuple[float, float]:
    """ZDT1 on the x_i: the front is f2 = 1 - sqrt(f1) at x1.. = 0 (speed = -f2, maximised)."""
    xs = [float(a[f"x{i}"]) for i in range(3)]
    g = 1 + 9 * sum(xs[1:]) / (len(xs) - 1)
    f1 = xs[0]
    return f1, g * (1 - math.sqrt(f1 / g))


def entry(a: dict[str, Any]) -> dict[str, Any]:
    f1, f2 = zdt1(a)
    return {"parameters": a, "state": "Succeeded", "objective": f1, "metrics": {"error": f1, "speed": -f2}}


def hypervolume_2d(points: np.ndarray, reference: tuple[float, float]) -> float:
    front = points[non_dominated(points)]
    front = front[(front[:, 0] < reference[0]) & (front[:, 1] < reference[1])]
    volume, last = 0.0, reference[1]
    for f1, f2 in sorted(map(tuple, front)):
        volume += (reference[0] - f1) * (last - f2)
        last = f2
    return volume


def run(spec: dict[str, Any], waves: int, size: int) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = []
    for _ in range(waves):
        batch = suggest(spec, history, size)
        assert len(batch) == size
        history += [entry(a) for a in batch]
    return history


# ---------------------------------------------------------------------------- Pareto helpers


def test_non_dominated_keeps_exactly_the_rows_no_other_row_beats() -> None:
    points = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2], [6, 6]], dtype=float)
    assert non_dominated(points).tolist() == [True, True, True, False, True, False]  # equal rows both stay
    assert pareto_ranks(points).tolist() == [0, 0, 0, 1, 0, 2]


def test_crowding_prefers_the_ends_and_the_lonely() -> None:
    points = np.array([[0, 4], [1, 3], [1.1, 2.9], [4, 0]], dtype=float)
    distance = crowding(points)
    assert math.isinf(distance[0]) and math.isinf(distance[3])
    assert distance[1] > 0 and distance[2] > 0


def test_chebyshev_weights_pick_different_compromises() -> None:
    losses = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    assert int(np.argmin(chebyshev(losses, np.array([0.9, 0.1])))) == 0
    assert int(np.argmin(chebyshev(losses, np.array([0.1, 0.9])))) == 2
    assert int(np.argmin(chebyshev(losses, np.array([0.5, 0.5])))) == 1


def test_scored_orients_each_objective_and_skips_trials_missing_one() -> None:
    spec = load_spec(mo_spec("nsga2"))
    space = Space.from_spec(spec)
    a, b = {"x0": 0.1, "x1": 0.2, "x2": 0.3}, {"x0": 0.4, "x1": 0.5, "x2": 0.6}
    history = [
        {"parameters": a, "state": "Succeeded", "objective": 0.3, "metrics": {"error": 0.3, "speed": 7.0}},
        {"parameters": b, "state": "Succeeded", "objective": 0.2, "metrics": {"error": 0.2}},  # no speed
    ]
    ctx = Context(spec, space, parse_history(space, spec.primary_objective.goal, history))
    scored, losses = ctx.scored
    assert [o.index for o in scored] == [0] and losses.tolist() == [[0.3, -7.0]]


# ---------------------------------------------------------------------------- contract on a two-objective job


@pytest.mark.parametrize("algorithm", [name.value for name in AlgorithmName])
def test_every_algorithm_gives_valid_distinct_untried_waves_on_a_two_objective_job(algorithm: str) -> None:
    spec = mo_spec(algorithm, PARAMETERS, max_trials=1000)
    history: list[dict[str, Any]] = []
    for wave in range(4):
        batch = suggest(spec, history, 4)
        assert len(batch) == 4 and len({key(a) for a in batch}) == 4
        assert not {key(a) for a in batch} & {key(h["parameters"]) for h in history}
        for a in batch:
            assert_valid(PARAMETERS, a)
        history += [{"parameters": a, "state": "Succeeded", "objective": float(i + wave),
                     "metrics": {"error": float(i + wave), "speed": float(i * wave)}} for i, a in enumerate(batch)]
    assert suggest(spec, history, 4) == suggest(spec, history, 4)


@pytest.mark.parametrize("algorithm", MULTI)
def test_a_multi_objective_wave_does_not_collapse(algorithm: str) -> None:
    spec = mo_spec(algorithm, nsga2={"populationSize": 8}) if algorithm == "nsga2" else mo_spec(algorithm)
    history = run(mo_spec("random"), 3, 8)
    wave = suggest(spec, history, 8)
    points = [tuple(a[f"x{i}"] for i in range(3)) for a in wave]
    gaps = [math.dist(p, q) for p, q in itertools.combinations(points, 2)]
    assert min(gaps) > 0.01, sorted(gaps)[:3]


def test_auto_picks_a_multi_objective_method_for_several_objectives_only() -> None:
    for objectives, expected in ((1, "bayesian"), (2, "parego")):
        spec = mo_spec("auto")
        spec["objectives"] = spec["objectives"][:objectives]
        job = load_spec(spec)
        ctx = Context(job, Space.from_spec(job), [])
        assert choose_algorithm(ctx) == expected
    wide = mo_spec("auto", [{"name": f"x{i}", "type": "float", "min": 0.0, "max": 1.0} for i in range(30)])
    job = load_spec(wide)
    assert choose_algorithm(Context(job, Space.from_spec(job), [])) == "motpe"


@pytest.mark.parametrize("algorithm", ["nsga2", "motpe", "parego"])
def test_multi_objective_search_beats_random_on_zdt1(algorithm: str) -> None:
    """Hypervolume after 48 trials (waves of 4), median of 3 seeds, reference point (1.1, 10) in (f1, f2)."""
    def volume(name: str, seed: int) -> float:
        settings = {"nsga2": {"populationSize": 12}} if name == "nsga2" else {}
        history = run(mo_spec(name, seed=seed, **settings), 12, 4)
        points = np.array([zdt1(h["parameters"]) for h in history])
        return hypervolume_2d(points, (1.1, 10.0))

    ours = float(np.median([volume(algorithm, seed) for seed in range(3)]))
    random = float(np.median([volume("random", seed) for seed in range(3)]))
    assert ours > random, (ours, random)
