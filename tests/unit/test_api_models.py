"""The API models reject bad specs with messages that name the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from kubetune.api import TuningJobSpec

BASE: dict[str, Any] = {
    "objective": {"metric": "val_accuracy", "goal": "maximize"},
    "parameters": [
        {"name": "lr", "type": "float", "min": 1e-4, "max": 1e-1, "log": True},
        {"name": "model", "type": "categorical", "values": ["mlp", "cnn"]},
        {"name": "hidden_units", "type": "int", "min": 16, "max": 256, "step": 16,
         "when": {"parameter": "model", "values": ["mlp"]}},
        {"name": "batch_size", "type": "discrete", "values": [32, 64, 128]},
    ],
    "budget": {"maxTrials": 12, "parallelism": 3},
    "trialTemplate": {"template": {"spec": {"containers": [{"name": "trainer", "image": "kubetune/trainer"}]}}},
}


def spec_with(path: str, value: Any) -> dict[str, Any]:
    """BASE with the value at a dotted path (list indices as numbers) replaced."""
    spec = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = spec
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return spec


DELETE = object()


def test_valid_spec_parses_with_defaults() -> None:
    spec = TuningJobSpec.model_validate(BASE)
    assert spec.algorithm.name == "auto"
    assert spec.early_stopping.rule == "none"
    assert spec.budget.max_failed_trials == 3
    assert spec.trial_template.primary_container_name == "trainer"
    assert spec.parameter("batch_size").values == [32, 64, 128]
    wire = spec.to_wire()
    assert wire["budget"]["maxTrials"] == 12
    assert TuningJobSpec.model_validate(wire) == spec


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("parameters.0.min", 1.0, "min (1.0) must be less than max"),
        ("parameters.0.min", 0.0, "log scale needs min > 0"),
        ("parameters.0.step", 0.01, "log scale and step cannot be combined"),
        ("parameters.1.values", [], "parameters.1.values"),
        ("parameters.1.values", ["a", "a"], "values must be unique"),
        ("parameters.1.values", [1, 2], "categorical values must be strings"),
        ("parameters.3.values", [64, 32], "strictly increasing"),
        ("parameters.3.values", ["x"], "discrete values must be finite numbers"),
        ("parameters.2.min", 0.5, "whole-number min"),
        ("parameters.2.when.parameter", "lr", "must be categorical"),
        ("parameters.2.when.parameter", "nope", "must name another parameter"),
        ("parameters.2.when.values", ["rnn"], "has no value(s) ['rnn']"),
        ("parameters.0.name", "Learning-Rate", "parameters.0.name"),
        ("parameters.0.type", "complex", "parameters.0.type"),
        ("parameters", [], "parameters"),
        ("budget.parallelism", 20, "parallelism (20) must not exceed maxTrials (12)"),
        ("budget.maxTrials", 0, "budget.maxTrials"),
        ("budget.maxFailedTrials", -1, "budget.maxFailedTrials"),
        ("objective.goal", "biggest", "objective.goal"),
        ("objective.metric", "val accuracy", "objective.metric"),
        ("algorithm", {"name": "simulated-annealing"}, "algorithm.name"),
        ("earlyStopping", {"rule": "asha"}, "asha needs maxResource"),
        ("earlyStopping", {"rule": "percentile"}, "percentile needs percentile"),
        ("earlyStopping", {"rule": "percentile", "percentile": 101}, "earlyStopping.percentile"),
        ("algorithm", {"name": "auto", "tpe": {}}, "tpe settings need algorithm name tpe"),
        ("trialTemplate.primaryContainer", "sidecar", "primaryContainer 'sidecar' is not one of ['trainer']"),
        ("trialTemplate.template.spec.containers", [], "containers"),
        ("trialTemplate.metricsPort", 70000, "trialTemplate.metricsPort"),
        ("objective.unknownField", 1, "objective.unknownField"),
        ("objective", DELETE, "set exactly one of objective and objectives"),
        ("objectives", [{"metric": "loss", "goal": "minimize"}], "set exactly one of objective and objectives"),
        ("objective.metric", "kubetune:gpu_seconds", "must be a metric the trial reports"),
        ("objective.metric", "kubetune:energy", "objective.metric"),
    ],
)
def test_invalid_spec_names_the_problem(path: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as error:
        TuningJobSpec.model_validate(spec_with(path, value))
    assert message in str(error.value)


TWO = [{"metric": "val_accuracy", "goal": "maximize"}, {"metric": "kubetune:gpu_seconds", "goal": "minimize"}]


def multi(objectives: list[dict[str, Any]]) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    del spec["objective"]
    spec["objectives"] = objectives
    return spec


def test_objectives_normalise_to_one_list_with_a_primary() -> None:
    single = TuningJobSpec.model_validate(BASE)
    assert [o.metric for o in single.objective_list] == ["val_accuracy"] and not single.multi_objective
    assert single.primary_objective is single.objective
    two = TuningJobSpec.model_validate(multi(TWO))
    assert [o.metric for o in two.objective_list] == ["val_accuracy", "kubetune:gpu_seconds"]
    assert two.multi_objective and two.primary_objective.metric == "val_accuracy"
    assert two.objective_list[1].builtin and two.objective_list[1].sign == 1.0 and two.objective_list[0].sign == -1.0
    marked = TuningJobSpec.model_validate(multi([{"metric": "latency", "goal": "minimize"},
                                                 {"metric": "val_accuracy", "goal": "maximize", "primary": True}]))
    assert marked.primary_objective.metric == "val_accuracy"
    assert TuningJobSpec.model_validate(two.to_wire()) == two


@pytest.mark.parametrize(
    ("objectives", "message"),
    [
        ([TWO[0], {"metric": "val_accuracy", "goal": "minimize"}], "metric names must be distinct"),
        ([{"metric": f"m{i}", "goal": "minimize"} for i in range(5)], "objectives"),
        ([], "objectives"),
        ([TWO[1], TWO[0]], "primary objective (kubetune:gpu_seconds) must be a metric the trial reports"),
        ([{**TWO[0], "primary": True}, {"metric": "loss", "goal": "minimize", "primary": True}], "at most one"),
        ([TWO[0], {**TWO[1], "promql": "up"}], "take no promql"),
    ],
)
def test_bad_objectives_are_rejected(objectives: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        TuningJobSpec.model_validate(multi(objectives))
    assert message in str(error.value)


def test_duplicate_parameter_names_are_rejected() -> None:
    spec = copy.deepcopy(BASE)
    spec["parameters"].append({"name": "lr", "type": "float", "min": 0.1, "max": 1})
    with pytest.raises(ValidationError, match="duplicate name 'lr'"):
        TuningJobSpec.model_validate(spec)


def test_condition_cycles_are_rejected() -> None:
    spec = copy.deepcopy(BASE)
    spec["parameters"] = [
        {"name": "a", "type": "categorical", "values": ["x"], "when": {"parameter": "b", "values": ["y"]}},
        {"name": "b", "type": "categorical", "values": ["y"], "when": {"parameter": "a", "values": ["x"]}},
    ]
    with pytest.raises(ValidationError, match="conditions form a cycle"):
        TuningJobSpec.model_validate(spec)


def test_objective_direction() -> None:
    spec = TuningJobSpec.model_validate(spec_with("objective.target", 0.9))
    assert spec.objective.is_better(0.8, 0.7)
    assert spec.objective.reached_target(0.95) and not spec.objective.reached_target(0.85)
    minimize = TuningJobSpec.model_validate(spec_with("objective", {"metric": "loss", "goal": "minimize"}))
    assert minimize.objective.is_better(0.1, 0.2)
    assert not minimize.objective.reached_target(0.0)


def test_every_example_is_a_valid_tuningjob() -> None:
    from example_manifests import example_files, tuningjob

    from kubetune.api import TuningJob

    examples = example_files()
    assert examples, "examples/ is empty"
    for path in examples:
        job = TuningJob.model_validate(tuningjob(path))
        assert job.metadata.name == path.stem


def test_every_algorithm_with_settings_has_its_settings_field() -> None:
    from kubetune.api import Algorithm, AlgorithmName

    for name in AlgorithmName:
        if name.settings_model is None:
            assert name.value not in Algorithm.model_fields
            continue
        field = Algorithm.model_fields[name.value]
        assert field.annotation == name.settings_model | None, f"algorithm.{name} must hold {name.settings_model}"
        chosen = Algorithm.model_validate({"name": name.value})
        assert chosen.settings() == name.settings_model()
