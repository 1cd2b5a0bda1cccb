"""Trainer knobs: precedence of the four sources, parsing and validation errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune_trainer.cli import build_parser
from kubetune_trainer.config import KNOBS, ConfigError, TrainerConfig, knob_values_from_args, resolve_config
from kubetune_trainer.docs import replace_knob_table

README = Path(__file__).resolve().parents[2] / "trainer-image" / "README.md"


def cli(*argv: str) -> dict[str, str]:
    return knob_values_from_args(build_parser().parse_args(list(argv)))


def test_precedence_cli_over_env_over_json_over_default() -> None:
    env = {
        "KUBETUNE_PARAMS": json.dumps({"lr": 0.5, "batch_size": 8, "epochs": 3}),
        "KUBETUNE_PARAM_LR": "0.25",
        "KUBETUNE_PARAM_BATCH_SIZE": "16",
    }
    resolved = resolve_config(cli("--lr", "0.125"), env)
    config = resolved.config
    assert (config.lr, config.batch_size, config.epochs, config.optimizer) == (0.125, 16, 3, "adam")
    assert resolved.sources["lr"] == "--lr"
    assert resolved.sources["batch_size"] == "KUBETUNE_PARAM_BATCH_SIZE"
    assert resolved.sources["epochs"] == "KUBETUNE_PARAMS"
    assert resolved.sources["optimizer"] == "default"
    assert ("lr", "--lr", "KUBETUNE_PARAM_LR") in resolved.shadowed


def test_flags_accept_dashes_underscores_and_bare_booleans() -> None:
    assert cli("--batch-size", "32") == cli("--batch_size", "32") == {"batch_size": "32"}
    config = resolve_config(cli("--optimizer", "SGD", "--nesterov"), {}).config
    assert config.optimizer == "sgd" and config.nesterov is True
    assert resolve_config(cli("--standardize", "false"), {}).config.standardize is False


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("batch_size", 64.0, 64),  # tuners often sample integers as floats
        ("batch_size", "64.0", 64),
        ("amp", "yes", True),
        ("amp", 0, False),
        ("lr", "1e-2", 0.01),
        ("lr", 1, 1.0),
    ],
)
def test_values_parse_to_the_knob_type(name: str, raw: object, expected: object) -> None:
    config = resolve_config({}, {"KUBETUNE_PARAMS": json.dumps({name: raw})}).config
    assert getattr(config, name) == expected
    assert type(getattr(config, name)) is type(expected)


@pytest.mark.parametrize(
    ("env", "knob", "fragment"),
    [
        ({"KUBETUNE_PARAM_MODEL": "transformer"}, "model", "unknown value 'transformer'"),
        ({"KUBETUNE_PARAM_OPTIMIZER": "lbfgs"}, "optimizer", "choose one of sgd, adam, adamw, rmsprop"),
        ({"KUBETUNE_PARAM_LR": "-0.1"}, "lr", "must be a finite number > 0"),
        ({"KUBETUNE_PARAM_LR": "nan"}, "lr", "finite"),
        ({"KUBETUNE_PARAM_BATCH_SIZE": "0"}, "batch_size", "must be >= 1"),
        ({"KUBETUNE_PARAM_BATCH_SIZE": "6.5"}, "batch_size", "expected an integer"),
        ({"KUBETUNE_PARAM_DROPOUT": "1"}, "dropout", "[0, 1)"),
        ({"KUBETUNE_PARAM_AMP": "maybe"}, "amp", "expected a boolean"),
        ({"KUBETUNE_PARAM_DATASET": "mnist"}, "dataset", "csv:<path>"),
        ({"KUBETUNE_PARAM_AUGMENT": "shift,zoom"}, "augment", "zoom"),
        ({"KUBETUNE_PARAM_DEVICE": "tpu"}, "device", "tpu"),
        (
            {"KUBETUNE_PARAM_MOMENTUM": "0", "KUBETUNE_PARAM_NESTEROV": "1", "KUBETUNE_PARAM_OPTIMIZER": "sgd"},
            "nesterov",
            "momentum > 0",
        ),
        ({"KUBETUNE_PARAM_LEARNING_RATE": "0.1"}, "learning_rate", "unknown knob"),
        ({"KUBETUNE_PARAMS": '{"lrr": 0.1}'}, "lrr", "unknown knob"),
        ({"KUBETUNE_PARAMS": "[1, 2]"}, "KUBETUNE_PARAMS", "JSON object"),
        ({"KUBETUNE_PARAMS": "{lr: 1}"}, "KUBETUNE_PARAMS", "not valid JSON"),
    ],
)
def test_invalid_values_name_the_knob(env: dict[str, str], knob: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        resolve_config({}, env)
    assert error.value.knob == knob
    assert fragment in str(error.value)
    assert str(error.value).startswith(f"{knob}:")


def test_error_says_where_the_value_came_from() -> None:
    with pytest.raises(ConfigError, match=r"lr: .* \(from --lr\)"):
        resolve_config(cli("--lr", "-1"), {})
    with pytest.raises(ConfigError, match=r"\(from KUBETUNE_PARAM_EPOCHS\)"):
        resolve_config({}, {"KUBETUNE_PARAM_EPOCHS": "0"})
    with pytest.raises(ConfigError, match=r"\(from KUBETUNE_PARAMS\)"):
        resolve_config({}, {"KUBETUNE_PARAMS": '{"epochs": -2}'})


def test_defaults_are_valid_and_the_readme_table_is_current() -> None:
    TrainerConfig()
    readme = README.read_text()
    assert replace_knob_table(readme) == readme, "run: python -m kubetune_trainer.docs trainer-image/README.md"
    assert all(f"| `{name}` |" in readme for name in KNOBS)


def test_augment_list_parsing() -> None:
    assert TrainerConfig(augment=" Shift, noise ,").augmentations == {"shift", "noise"}
    assert TrainerConfig(augment="none").augmentations == frozenset()
