"""Every algorithm of kubetune.search honours the same contract (one seeded table runs them all)."""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetune.api import AlgorithmName
from kubetune.search import SearchError, suggest

ALGORITHMS = [name.value for name in AlgorithmName]  # a new algorithm joins every contract test
MODEL_BASED = [name for name in ALGORITHMS if name not in ("random", "grid")]

TEMPLATE = {"template": {"spec": {"containers": [{"name": "trainer", "image": "trainer"}]}}}

# Every parameter type, log and step grids, a condition two levels deep.
PARAMETERS: list[dict[str, Any]] = [
    {"name": "lr", "type": "float", "min": 1e-5, "max": 1e-1, "log": True},
    {"name": "momentum", "type": "float", "min": 0.0, "max": 0.95, "step": 0.1},
    {"name": "layers", "type": "int", "min": 1, "max": 8},
    {"name": "width", "type": "int", "min": 16, "max": 1024, "log": True},
    {"name": "units", "type": "int", "min": 32, "max": 256, "step": 32},
    {"name": "optimizer", "type": "categorical", "values": ["sgd", "adam", "rmsprop"]},
    {
        "name": "nesterov",
        "type": "categorical",
        "values": ["yes", "no"],
        "when": {"parameter": "optimizer", "values": ["sgd"]},
    },
    {"name": "dampening", "type": "float", "min": 0.0, "max": 0.5, "when": {"parameter": "nesterov", "values": ["no"]}},
    {
        "name": "beta1",
        "type": "float",
        "min": 0.8,
        "max": 0.999,
        "when": {"parameter": "optimizer", "values": ["adam", "rmsprop"]},
    },
    {"name": "batch_size", "type": "discrete", "values": [16, 32, 64, 128]},
    {"name": "scale", "type": "discrete", "values": [0.5, 1, 2.5]},
]


def make_spec(
    algorithm: str,
    parameters: list[dict[str, Any]] | None = None,
    *,
    seed: int = 7,
    goal: str = "minimize",
    max_trials: int = 1000,
    **settings_: Any,
) -> dict[str, Any]:
    algo: dict[str, Any] = {"name": algorithm, "seed": seed, **settings_}
    return {
        "objective": {"metric": "loss", "goal": goal},
        "parameters": copy.deepcopy(parameters if parameters is not None else PARAMETERS),
        "algorithm": algo,
        "budget": {"maxTrials": max_trials, "parallelism": 4},
        "trialTemplate": TEMPLATE,
    }


def active_names(parameters: list[dict[str, Any]], assignment: dict[str, Any]) -> set[str]:
    active: set[str] = set()
    changed = True
    while changed:
        changed = False
        for p in parameters:
            when = p.get("when")
            ok = when is None or (when["parameter"] in active and assignment.get(when["parameter"]) in when["values"])
            if ok and p["name"] not in active:
                active.add(p["name"])
                changed = True
    return active


def assert_valid(parameters: list[dict[str, Any]], assignment: dict[str, Any]) -> None:
    """Types, bounds, log/step grids and conditions, as a user would check them."""
    assert set(assignment) == active_names(parameters, assignment), assignment
    for p in parameters:
        if p["name"] not in assignment:
            continue
        value = assignment[p["name"]]
        if p["type"] in ("categorical", "discrete"):
            assert value in p["values"], (p["name"], value)
            expected = type(next(v for v in p["values"] if v == value))
            assert type(value) is expected, (p["name"], value)
            continue
        assert type(value) is (int if p["type"] == "int" else float), (p["name"], value)
        assert p["min"] <= value <= p["max"], (p["name"], value)
        if "step" in p:
            k = (value - p["min"]) / p["step"]
            assert abs(k - round(k)) < 1e-9, (p["name"], value)


def objective(assignment: dict[str, Any]) -> float:
    """A smooth test function of every parameter (optimum near lr=1e-3, adam)."""
    value = (math.log10(assignment["lr"]) + 3) ** 2 + (assignment["layers"] - 3) ** 2 / 10
    value += abs(math.log2(assignment["width"]) - 7) / 5 + assignment["momentum"] / 3
    value += {"sgd": 0.5, "adam": 0.0, "rmsprop": 0.3}[assignment["optimizer"]]
    return value + assignment.get("dampening", 0.0) + abs(assignment.get("beta1", 0.9) - 0.9)


def run_waves(algorithm: str, waves: int, size: int, **kwargs: Any) -> list[dict[str, Any]]:
    spec = make_spec(algorithm, **kwargs)
    history: list[dict[str, Any]] = []
    for _ in range(waves):
        batch = suggest(spec, history, size)
        assert len(batch) == size
        history += [{"parameters": a, "state": "Succeeded", "objective": objective(a)} for a in batch]
    return history


def key(assignment: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(assignment.items()))


# ---------------------------------------------------------------------------- contract


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_first_wave_is_valid_and_distinct(algorithm: str) -> None:
    wave = suggest(make_spec(algorithm), [], 8)
    assert len(wave) == 8
    for assignment in wave:
        assert_valid(PARAMETERS, assignment)
    assert len({key(a) for a in wave}) == 8


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_waves_with_mixed_history_stay_valid_distinct_and_untried(algorithm: str) -> None:
    history = run_waves(algorithm, waves=4, size=4)  # 16 finished: past every startup phase but GA's
    assert history[0]["parameters"] != history[4]["parameters"]
    # Trials in every state, a NaN objective, an early-stopped curve.
    history[1]["state"], history[1]["objective"] = "Failed", None
    history[2]["objective"] = float("nan")
    history[3].update(state="EarlyStopped", objective=None, intermediate=[[1, 2.0], [2, 1.5]])
    pending = suggest(make_spec(algorithm), history, 3)
    history += [
        {"parameters": pending[0], "state": "Pending"},
        {"parameters": pending[1], "state": "Running", "intermediate": [[1, 0.7]]},
    ]
    wave = suggest(make_spec(algorithm), history, 6)
    assert len(wave) == 6
    seen = {key(h["parameters"]) for h in history}
    for assignment in wave:
        assert_valid(PARAMETERS, assignment)
        assert key(assignment) not in seen  # not even the Failed, NaN or in-flight points
    assert len({key(a) for a in wave}) == 6


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_same_inputs_and_seed_give_the_same_suggestions(algorithm: str) -> None:
    history = run_waves(algorithm, waves=3, size=4)
    first = suggest(make_spec(algorithm), history, 5)
    assert suggest(make_spec(algorithm), copy.deepcopy(history), 5) == first
    assert suggest(make_spec(algorithm, seed=8), history, 5) != first


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_successive_calls_do_not_repeat_themselves(algorithm: str) -> None:
    history = run_waves(algorithm, waves=12, size=1)
    assert len({key(h["parameters"]) for h in history}) == 12


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_n_zero_or_negative_gives_nothing(algorithm: str) -> None:
    assert suggest(make_spec(algorithm), [], 0) == []
    assert suggest(make_spec(algorithm), [], -3) == []


SMALL = [
    {"name": "kind", "type": "categorical", "values": ["a", "b"]},
    {"name": "depth", "type": "int", "min": 1, "max": 3, "when": {"parameter": "kind", "values": ["a"]}},
    {"name": "size", "type": "discrete", "values": [1, 2]},
]  # (3 + 1) * 2 = 8 points


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_finite_space_is_exhausted_then_suggestions_run_out(algorithm: str) -> None:
    spec = make_spec(algorithm, SMALL, max_trials=5)
    history: list[dict[str, Any]] = []
    for _ in range(4):
        wave = suggest(spec, history, 3)
        for assignment in wave:
            assert_valid(SMALL, assignment)
        history += [{"parameters": a, "state": "Failed"} for a in wave]
    assert sorted(len(wave) for wave in [history]) == [8]
    assert len({key(h["parameters"]) for h in history}) == 8
    assert suggest(spec, history, 3) == []


def test_auto_walks_a_finite_space_the_budget_covers_and_models_a_larger_one() -> None:
    grid_order = suggest(make_spec("grid", SMALL), [], 8)
    assert suggest(make_spec("auto", SMALL, max_trials=8), [], 8) == grid_order
    history = [{"parameters": a, "state": "Succeeded", "objective": float(i)} for i, a in enumerate(grid_order[:4])]
    assert suggest(make_spec("auto", SMALL, max_trials=8), history, 4) == grid_order[4:]
    assert suggest(make_spec("auto", SMALL, max_trials=7), [], 8) != grid_order  # budget < 8 points: GP startup


@pytest.mark.parametrize("algorithm", MODEL_BASED)
def test_a_parallel_wave_does_not_collapse(algorithm: str) -> None:
    grid = [{"name": "x", "type": "int", "min": 0, "max": 6}, {"name": "y", "type": "int", "min": 0, "max": 6}]
    spec = make_spec(algorithm, grid, max_trials=10)  # 49 points > budget: auto models, not enumerates
    history = [
        {"parameters": {"x": x, "y": y}, "state": "Succeeded", "objective": float((x - 3) ** 2 + (y - 3) ** 2)}
        for x, y in itertools.product(range(0, 7, 3), range(0, 7, 2))
    ]
    wave = suggest(spec, history, 10)
    assert len({key(a) for a in wave}) == 10
    assert not {key(a) for a in wave} & {key(h["parameters"]) for h in history}


@pytest.mark.parametrize("algorithm", MODEL_BASED)
def test_a_parallel_wave_spreads_out_in_a_continuous_space(algorithm: str) -> None:
    parameters = [
        {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
        {"name": "y", "type": "float", "min": 0.0, "max": 1.0},
    ]
    spec = (
        make_spec(algorithm, parameters, max_trials=100, bayesian={"nStartupTrials": 5})
        if algorithm == "bayesian"
        else make_spec(algorithm, parameters, max_trials=100)
    )
    history = [
        {"parameters": {"x": x, "y": y}, "state": "Succeeded", "objective": (x - 0.3) ** 2 + (y - 0.6) ** 2}
        for x, y in itertools.product([0.1, 0.5, 0.9], [0.1, 0.4, 0.7, 0.95])
    ]
    wave = suggest(spec, history, 8)
    gaps = [math.dist((a["x"], a["y"]), (b["x"], b["y"])) for a, b in itertools.combinations(wave, 2)]
    assert min(gaps) > 0.01, sorted(gaps)[:3]


# ---------------------------------------------------------------------------- grid


def test_grid_uses_steps_values_and_points_per_dimension_and_then_reports_exhaustion() -> None:
    parameters = [
        {"name": "lr", "type": "float", "min": 1e-3, "max": 1e-1, "log": True},
        {"name": "drop", "type": "float", "min": 0.0, "max": 0.3, "step": 0.1},
        {"name": "model", "type": "categorical", "values": ["mlp", "cnn"]},
        {"name": "units", "type": "int", "min": 10, "max": 30, "when": {"parameter": "model", "values": ["mlp"]}},
    ]
    spec = make_spec("grid", parameters, grid={"pointsPerDimension": 3})
    everything = suggest(spec, [], 1000)
    # lr: 3 log points, drop: 4 step points, model: mlp x 3 units (pointsPerDimension) + cnn.
    assert len(everything) == 3 * 4 * (3 + 1)
    assert sorted({a["lr"] for a in everything}) == pytest.approx([1e-3, 1e-2, 1e-1])
    assert sorted({a["drop"] for a in everything}) == [0.0, 0.1, 0.2, 0.3]
    assert sorted({a["units"] for a in everything if "units" in a}) == [10, 20, 30]
    assert all("units" not in a for a in everything if a["model"] == "cnn")
    half = [{"parameters": a, "state": "Succeeded", "objective": 1.0} for a in everything[:20]]
    rest = suggest(spec, half, 1000)
    assert len(rest) == 28 and not {key(a) for a in rest} & {key(a) for a in everything[:20]}
    assert suggest(spec, half + [{"parameters": a, "state": "Running"} for a in rest], 5) == []


def test_a_step_that_does_not_divide_the_range_never_passes_max() -> None:
    # Found by hypothesis: (max - min) / step = 1.99999998 once rounded up to a point above max.
    parameters = [{"name": "x", "type": "float", "min": 1.0, "max": 51.90234375, "step": 25.451172}]
    for algorithm in ALGORITHMS:
        assert sorted(a["x"] for a in suggest(make_spec(algorithm, parameters), [], 5)) == [1.0, 26.451172]


def test_grid_order_does_not_depend_on_wave_sizes() -> None:
    spec = make_spec("grid", SMALL)
    one_by_one: list[dict[str, Any]] = []
    for _ in range(8):
        one_by_one += suggest(spec, [{"parameters": a, "state": "Succeeded", "objective": 0.0} for a in one_by_one], 1)
    assert one_by_one == suggest(spec, [], 8)


# ---------------------------------------------------------------------------- direction and quality


@pytest.mark.parametrize("algorithm", ["bayesian", "tpe", "auto", "evolution", "cmaes"])
@pytest.mark.parametrize("goal", ["minimize", "maximize"])
def test_models_follow_the_goal(algorithm: str, goal: str) -> None:
    parameters = [
        {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
        {"name": "y", "type": "float", "min": 0.0, "max": 1.0},
    ]
    spec = make_spec(
        algorithm,
        parameters,
        goal=goal,
        max_trials=60,
        **({"evolution": {"populationSize": 10}} if algorithm == "evolution" else {}),
    )
    history: list[dict[str, Any]] = []
    for _ in range(8):
        for a in suggest(spec, history, 4):
            history.append({"parameters": a, "state": "Succeeded", "objective": a["x"] + a["y"]})
    last = [h["parameters"]["x"] + h["parameters"]["y"] for h in history[-8:]]
    mean_last = sum(last) / len(last)
    assert (mean_last < 0.6) if goal == "minimize" else (mean_last > 1.4), last


@pytest.mark.parametrize("algorithm", ["bayesian", "auto"])
def test_gaussian_process_finds_a_quadratic_minimum(algorithm: str) -> None:
    parameters = [
        {"name": "x", "type": "float", "min": -5.0, "max": 5.0},
        {"name": "lr", "type": "float", "min": 1e-4, "max": 1.0, "log": True},
    ]
    spec = make_spec(algorithm, parameters, max_trials=25)
    history: list[dict[str, Any]] = []
    for _ in range(25):
        for a in suggest(spec, history, 1):
            value = (a["x"] - 1.3) ** 2 + (math.log10(a["lr"]) + 2) ** 2
            history.append({"parameters": a, "state": "Succeeded", "objective": value})
    assert min(h["objective"] for h in history) < 0.01


def test_early_stopped_trials_count_by_their_last_value_and_failed_ones_not_at_all() -> None:
    parameters = [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}]
    spec = make_spec("bayesian", parameters, bayesian={"nStartupTrials": 2})
    # Finished trials say "smaller x is better"; the early-stopped one at x=0.9 ended best (1.0, after
    # a bad start of 7.0); the Failed trials around it carry (terrible) objectives that must be ignored.
    history = [
        {"parameters": {"x": 0.1}, "state": "Succeeded", "objective": 5.0},
        {"parameters": {"x": 0.5}, "state": "Succeeded", "objective": 9.0},
        {"parameters": {"x": 0.9}, "state": "EarlyStopped", "objective": None, "intermediate": [[1, 7.0], [2, 1.0]]},
    ] + [{"parameters": {"x": x}, "state": "Failed", "objective": 100.0} for x in (0.85, 0.87, 0.93, 0.95)]
    assert suggest(spec, history, 1)[0]["x"] > 0.7


# ---------------------------------------------------------------------------- property-based


@st.composite
def spaces(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 5))
    parameters: list[dict[str, Any]] = []
    for i in range(count):
        kind = draw(st.sampled_from(["float", "int", "categorical", "discrete"]))
        name = f"p{i}"
        if kind in ("float", "int"):
            low = draw(st.integers(1, 50)) if kind == "int" else draw(st.floats(0.001, 10.0))
            span = draw(st.integers(1, 200)) if kind == "int" else draw(st.floats(0.01, 100.0))
            p: dict[str, Any] = {"name": name, "type": kind, "min": low, "max": low + span}
            mode = draw(st.sampled_from(["plain", "log", "step"]))
            if mode == "log":
                p["log"] = True
            elif mode == "step":
                p["step"] = draw(st.integers(1, 5)) if kind == "int" else round(span / draw(st.integers(2, 9)), 6)
        elif kind == "categorical":
            p = {"name": name, "type": kind, "values": [f"v{j}" for j in range(draw(st.integers(1, 4)))]}
        else:
            p = {
                "name": name,
                "type": kind,
                "values": sorted(draw(st.sets(st.integers(-5, 99), min_size=1, max_size=4))),
            }
        parents = [q for q in parameters if q["type"] == "categorical"]
        if parents and draw(st.booleans()):
            parent = draw(st.sampled_from(parents))
            p["when"] = {"parameter": parent["name"], "values": [parent["values"][0]]}
        parameters.append(p)
    return parameters


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parameters=spaces(), algorithm=st.sampled_from(ALGORITHMS), seed=st.integers(0, 2**31 - 1))
def test_any_space_gets_valid_distinct_suggestions(parameters: list[dict[str, Any]], algorithm: str, seed: int) -> None:
    spec = make_spec(algorithm, parameters, seed=seed, max_trials=10)
    history: list[dict[str, Any]] = []
    for round_ in range(3):
        wave = suggest(spec, history, 5)
        for assignment in wave:
            assert_valid(parameters, assignment)
        assert len({key(a) for a in wave}) == len(wave)
        history += [{"parameters": a, "state": "Succeeded", "objective": float(round_ + i)} for i, a in enumerate(wave)]
    assert len({key(h["parameters"]) for h in history}) == len(history)


# ---------------------------------------------------------------------------- the registry


def test_every_algorithm_of_the_api_has_a_sampler_and_no_other() -> None:
    from kubetune.search._engine import SAMPLERS

    assert set(SAMPLERS) == set(AlgorithmName)


def test_an_algorithm_without_a_sampler_is_an_error_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubetune.search import _engine

    monkeypatch.delitem(_engine.SAMPLERS, AlgorithmName.CMAES)
    with pytest.raises(SearchError, match="'cmaes' has no sampler"):
        suggest(make_spec("cmaes"), [], 1)


CHANGED_SETTINGS = {  # one setting off its default, per algorithm that has settings
    "grid": {"pointsPerDimension": 7},
    "bayesian": {"nStartupTrials": 3},
    "tpe": {"nStartupTrials": 3},
    "cmaes": {"nStartupTrials": 3},
    "evolution": {"populationSize": 4},
    "nsga2": {"populationSize": 4},
    "motpe": {"nStartupTrials": 3},
    "parego": {"nStartupTrials": 3},
}


@pytest.mark.parametrize("algorithm", [name for name in AlgorithmName if name.settings_model is not None])
def test_the_spec_settings_reach_the_sampler(algorithm: AlgorithmName, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubetune.search import _engine

    seen: list[object] = []
    original = _engine.SAMPLERS[algorithm]

    def spy(ctx: Any, settings: Any) -> Any:
        seen.append(settings)
        return original.propose(ctx, settings)

    monkeypatch.setitem(_engine.SAMPLERS, algorithm, _engine.Sampler(spy, original.top_up))
    model = algorithm.settings_model
    assert model is not None
    changed = CHANGED_SETTINGS[algorithm.value]
    suggest(make_spec(algorithm.value), [], 1)
    suggest(make_spec(algorithm.value, **{algorithm.value: changed}), [], 1)
    assert seen == [model(), model.model_validate(changed)] and seen[0] != seen[1]
