"""Trainer knobs: one typed table, four sources, clear errors.

Every knob is a field of `TrainerConfig`; its type, default, help text and
allowed values live in the field definition, and the command line, the
environment parsing and the README's table all derive from it.

Precedence, highest first:

1. command-line flag (`--batch-size 32` or `--batch_size 32`);
2. `KUBETUNE_PARAM_<UPPER_NAME>` environment variable (`KUBETUNE_PARAM_BATCH_SIZE=32`);
3. `KUBETUNE_PARAMS` environment variable holding a JSON object (`{"batch_size": 32}`);
4. the default.

Unknown knob names in any source are errors: a typo in a tuned parameter
would otherwise silently tune nothing.

This module imports neither torch nor scikit-learn, so a bad configuration
fails in milliseconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast, get_type_hints

ENV_PARAM_PREFIX: Final = "KUBETUNE_PARAM_"
ENV_PARAMS_JSON: Final = "KUBETUNE_PARAMS"

DATASETS: Final = ("digits", "breast_cancer", "wine", "synthetic")
CSV_PREFIX: Final = "csv:"
MODELS: Final = ("logistic", "mlp", "cnn")
ACTIVATIONS: Final = ("relu", "tanh", "gelu", "silu", "leaky_relu", "elu")
OPTIMIZERS: Final = ("sgd", "adam", "adamw", "rmsprop")
LR_SCHEDULES: Final = ("constant", "step", "cosine")
AUGMENTATIONS: Final = ("shift", "flip", "rotate", "noise")
EARLY_STOPPING_METRICS: Final = ("val_loss", "val_accuracy")
AMP_DTYPES: Final = ("float16", "bfloat16")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

KnobType = str | int | float | bool
Source = str  # "--flag", "KUBETUNE_PARAM_X", "KUBETUNE_PARAMS" or "default"


class ConfigError(ValueError):
    """An invalid knob value; the message names the knob and, when known, where it came from."""

    def __init__(self, knob: str, message: str, source: Source | None = None) -> None:
        self.knob = knob
        self.message = message
        self.source = source
        where = f" (from {source})" if source and source != "default" else ""
        super().__init__(f"{knob}: {message}{where}")

    def with_source(self, source: Source | None) -> ConfigError:
        return ConfigError(self.knob, self.message, source)


def knob(default: KnobType, help: str, group: str, choices: Sequence[str] | None = None) -> Any:
    """A `TrainerConfig` field with the metadata the CLI and README use."""
    return field(default=default, metadata={"help": help, "group": group, "choices": tuple(choices or ())})


@dataclass(frozen=True)
class TrainerConfig:
    """All trainer knobs with their defaults. Construction validates every value."""

    # data
    dataset: str = knob(
        "digits",
        "digits, breast_cancer, wine, synthetic, or csv:<path> (header row; see label_column)",
        "data",
    )
    label_column: str = knob("label", "csv datasets: name of the column holding the class label", "data")
    val_fraction: float = knob(0.2, "fraction of samples held out for validation, in (0, 1)", "data")
    data_seed: int = knob(
        0,
        "seeds the train/validation split and the synthetic data; independent of `seed`, "
        "so trials that tune `seed` still share one validation set",
        "data",
    )
    n_samples: int = knob(2000, "synthetic: number of samples", "data")
    n_features: int = knob(20, "synthetic: number of features (the first half are informative)", "data")
    n_classes: int = knob(3, "synthetic: number of classes", "data")
    # feature engineering (tabular features; image datasets become tabular when used)
    standardize: bool = knob(
        True,
        "standardise inputs with train-set statistics (per feature; one mean/std for images)",
        "features",
    )
    pca_components: int = knob(0, "project onto this many principal components (0 = off); fit on train", "features")
    rfe_features: int = knob(
        0,
        "recursive feature elimination down to k features with a logistic model (0 = off); fit on train",
        "features",
    )
    # model
    model: str = knob("mlp", "model family", "model", MODELS)
    hidden_layers: int = knob(1, "mlp: number of hidden layers", "model")
    hidden_units: int = knob(128, "mlp: width of each hidden layer; cnn: width of the dense head", "model")
    activation: str = knob("relu", "mlp and cnn: activation function", "model", ACTIVATIONS)
    channels: int = knob(16, "cnn: channels of the first conv layer (the second has twice as many)", "model")
    dropout: float = knob(0.0, "mlp and cnn: dropout probability in [0, 1)", "model")
    # optimisation
    optimizer: str = knob("adam", "optimiser", "optimization", OPTIMIZERS)
    lr: float = knob(1e-3, "peak learning rate, > 0", "optimization")
    momentum: float = knob(0.9, "sgd: momentum in [0, 1)", "optimization")
    nesterov: bool = knob(False, "sgd: Nesterov momentum (needs momentum > 0)", "optimization")
    batch_size: int = knob(64, "training batch size (of each rank under torchrun), >= 1", "optimization")
    epochs: int = knob(20, "maximum number of epochs, >= 1", "optimization")
    lr_schedule: str = knob("constant", "learning-rate schedule after warmup", "optimization", LR_SCHEDULES)
    step_size: int = knob(10, "step schedule: epochs between decays", "optimization")
    gamma: float = knob(0.1, "step schedule: decay factor in (0, 1]", "optimization")
    warmup_epochs: int = knob(0, "linear warmup from lr/warmup_epochs to lr over this many epochs", "optimization")
    # regularisation
    weight_decay: float = knob(
        0.0, "L2 penalty via the optimiser (decoupled for adamw), applied to all parameters", "regularization"
    )
    l1: float = knob(0.0, "L1 penalty coefficient on weights (not biases), added to the loss", "regularization")
    patience: int = knob(0, "early stopping: epochs without improvement before stopping (0 = off)", "regularization")
    min_delta: float = knob(0.0, "early stopping: smallest change that counts as improvement", "regularization")
    early_stopping_metric: str = knob(
        "val_loss", "early stopping: metric watched", "regularization", EARLY_STOPPING_METRICS
    )
    # augmentation (image datasets, training batches only)
    augment: str = knob(
        "",
        "comma-separated subset of shift, flip, rotate, noise (empty = off); flip is opt-in, don't flip digits",
        "augmentation",
    )
    augment_strength: float = knob(
        0.5,
        "scales magnitudes in [0, 1]: at 1, shift up to 25% of the image side, rotate up to 30 degrees, noise std 0.5",
        "augmentation",
    )
    augment_prob: float = knob(0.5, "probability each selected op is applied to each sample, in [0, 1]", "augmentation")
    # runtime
    seed: int = knob(0, "seeds weight init, batch order and augmentation", "runtime")
    device: str = knob("auto", "auto (CUDA when available), cpu, cuda or cuda:N", "runtime")
    amp: bool = knob(
        False, "mixed precision on CUDA (torch.autocast; GradScaler for float16); ignored on CPU", "runtime"
    )
    amp_dtype: str = knob("float16", "mixed-precision dtype", "runtime", AMP_DTYPES)

    def __post_init__(self) -> None:
        for spec in KNOBS.values():
            if spec.choices and getattr(self, spec.name) not in spec.choices:
                raise ConfigError(
                    spec.name,
                    f"unknown value {getattr(self, spec.name)!r}; choose one of {', '.join(spec.choices)}",
                )
        self._validate_data()
        self._validate_model_and_optimizer()
        self._validate_augmentation()
        if not _DEVICE.match(self.device):
            raise ConfigError("device", f"unknown value {self.device!r}; choose auto, cpu, cuda or cuda:N")

    def _validate_data(self) -> None:
        if self.dataset.startswith(CSV_PREFIX):
            if not self.dataset[len(CSV_PREFIX) :].strip():
                raise ConfigError("dataset", "csv: needs a path, e.g. csv:/data/train.csv")
        elif self.dataset not in DATASETS:
            raise ConfigError(
                "dataset",
                f"unknown value {self.dataset!r}; choose one of {', '.join(DATASETS)} or csv:<path>",
            )
        _require("val_fraction", self.val_fraction, 0 < self.val_fraction < 1, "must be in (0, 1)")
        _require("data_seed", self.data_seed, self.data_seed >= 0, "must be >= 0")
        _require("n_classes", self.n_classes, self.n_classes >= 2, "must be >= 2")
        _require("n_features", self.n_features, self.n_features >= 1, "must be >= 1")
        _require(
            "n_samples",
            self.n_samples,
            self.n_samples >= 4 * self.n_classes,
            f"must be at least 4 per class (>= {4 * self.n_classes})",
        )
        _require("pca_components", self.pca_components, self.pca_components >= 0, "must be >= 0 (0 = off)")
        _require("rfe_features", self.rfe_features, self.rfe_features >= 0, "must be >= 0 (0 = off)")
        if self.rfe_features and self.pca_components > self.rfe_features:
            raise ConfigError(
                "pca_components",
                f"{self.pca_components} exceeds rfe_features={self.rfe_features} (PCA runs after RFE)",
            )

    def _validate_model_and_optimizer(self) -> None:
        _require("hidden_layers", self.hidden_layers, self.hidden_layers >= 1, "must be >= 1")
        _require("hidden_units", self.hidden_units, self.hidden_units >= 1, "must be >= 1")
        _require("channels", self.channels, self.channels >= 1, "must be >= 1")
        _require("dropout", self.dropout, 0 <= self.dropout < 1, "must be in [0, 1)")
        _require("lr", self.lr, math.isfinite(self.lr) and self.lr > 0, "must be a finite number > 0")
        _require("momentum", self.momentum, 0 <= self.momentum < 1, "must be in [0, 1)")
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov", "needs momentum > 0")
        _require("batch_size", self.batch_size, self.batch_size >= 1, "must be >= 1")
        _require("epochs", self.epochs, self.epochs >= 1, "must be >= 1")
        _require("step_size", self.step_size, self.step_size >= 1, "must be >= 1")
        _require("gamma", self.gamma, 0 < self.gamma <= 1, "must be in (0, 1]")
        _require("warmup_epochs", self.warmup_epochs, self.warmup_epochs >= 0, "must be >= 0")
        _require(
            "weight_decay",
            self.weight_decay,
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "must be >= 0",
        )
        _require("l1", self.l1, math.isfinite(self.l1) and self.l1 >= 0, "must be >= 0")
        _require("patience", self.patience, self.patience >= 0, "must be >= 0 (0 = off)")
        _require("min_delta", self.min_delta, math.isfinite(self.min_delta) and self.min_delta >= 0, "must be >= 0")
        _require("seed", self.seed, self.seed >= 0, "must be >= 0")

    def _validate_augmentation(self) -> None:
        unknown = [op for op in self.augmentations if op not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(
                "augment",
                f"unknown operation(s) {', '.join(unknown)}; choose from {', '.join(AUGMENTATIONS)}",
            )
        _require("augment_strength", self.augment_strength, 0 <= self.augment_strength <= 1, "must be in [0, 1]")
        _require("augment_prob", self.augment_prob, 0 <= self.augment_prob <= 1, "must be in [0, 1]")

    @property
    def augmentations(self) -> frozenset[str]:
        """The selected augmentation operations ("none" and blanks mean none)."""
        ops = {part.strip().lower() for part in self.augment.split(",")}
        return frozenset(op for op in ops if op and op != "none")

    @property
    def csv_path(self) -> str | None:
        return self.dataset[len(CSV_PREFIX) :].strip() if self.dataset.startswith(CSV_PREFIX) else None

    def to_dict(self) -> dict[str, KnobType]:
        return {spec.name: getattr(self, spec.name) for spec in KNOBS.values()}


def _require(name: str, value: object, ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(name, f"{message}, got {value!r}")


@dataclass(frozen=True)
class KnobSpec:
    name: str
    type: type[str | int | float | bool]
    default: KnobType
    help: str
    group: str
    choices: tuple[str, ...]

    @property
    def env_var(self) -> str:
        return ENV_PARAM_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _knob_specs() -> dict[str, KnobSpec]:
    hints = get_type_hints(TrainerConfig)
    specs: dict[str, KnobSpec] = {}
    for f in dataclasses.fields(TrainerConfig):
        specs[f.name] = KnobSpec(
            name=f.name,
            type=hints[f.name],
            default=cast(KnobType, f.default),
            help=f.metadata["help"],
            group=f.metadata["group"],
            choices=f.metadata["choices"],
        )
    return specs


KNOBS: Final[dict[str, KnobSpec]] = _knob_specs()

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def parse_knob_value(spec: KnobSpec, raw: object) -> KnobType:
    """Convert a raw value (a string from the CLI or env, or a JSON value) to the knob's type.

    Integers also accept integral floats (`64.0`), since tuners often sample
    integer parameters as floats.
    """
    kind = spec.type
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int | float) and raw in (0, 1):
            return bool(raw)
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ConfigError(spec.name, f"expected a boolean (true/false), got {raw!r}")
    if kind is int:
        number: float
        if isinstance(raw, bool):
            raise ConfigError(spec.name, f"expected an integer, got {raw!r}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float):
            number = raw
        elif isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                try:
                    number = float(raw.strip())
                except ValueError:
                    raise ConfigError(spec.name, f"expected an integer, got {raw!r}") from None
        else:
            raise ConfigError(spec.name, f"expected an integer, got {raw!r}")
        if not number.is_integer():
            raise ConfigError(spec.name, f"expected an integer, got {raw!r}")
        return int(number)
    if kind is float:
        if isinstance(raw, bool):
            raise ConfigError(spec.name, f"expected a number, got {raw!r}")
        if isinstance(raw, int | float):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw.strip())
            except ValueError:
                raise ConfigError(spec.name, f"expected a number, got {raw!r}") from None
        else:
            raise ConfigError(spec.name, f"expected a number, got {raw!r}")
        if not math.isfinite(value):
            raise ConfigError(spec.name, f"expected a finite number, got {raw!r}")
        return value
    if not isinstance(raw, str):
        raise ConfigError(spec.name, f"expected a string, got {raw!r}")
    return raw.strip().lower() if spec.choices else raw.strip()


@dataclass(frozen=True)
class ResolvedConfig:
    config: TrainerConfig
    sources: dict[str, Source]
    # (knob, winning source, overridden source) where two sources set one knob
    shadowed: list[tuple[str, Source, Source]] = field(default_factory=list)


def resolve_config(cli_values: Mapping[str, str], env: Mapping[str, str]) -> ResolvedConfig:
    """Merge the four sources (see module docstring) into a validated `TrainerConfig`.

    `cli_values` maps knob names to the raw strings given on the command line.
    """
    raw: dict[str, tuple[object, Source]] = {}
    shadowed: list[tuple[str, Source, Source]] = []

    def put(name: str, value: object, source: Source) -> None:
        if name in raw:
            shadowed.append((name, source, raw[name][1]))
        raw[name] = (value, source)

    params_json = env.get(ENV_PARAMS_JSON, "").strip()
    if params_json:
        try:
            document = json.loads(params_json)
        except json.JSONDecodeError as error:
            raise ConfigError(ENV_PARAMS_JSON, f"not valid JSON: {error}") from None
        if not isinstance(document, dict):
            raise ConfigError(ENV_PARAMS_JSON, f"must be a JSON object, got {type(document).__name__}")
        for name, value in document.items():
            if name not in KNOBS:
                raise ConfigError(name, f"unknown knob; known knobs: {', '.join(KNOBS)}", ENV_PARAMS_JSON)
            put(name, value, ENV_PARAMS_JSON)
    for variable, value in env.items():
        if not variable.startswith(ENV_PARAM_PREFIX):
            continue
        name = variable[len(ENV_PARAM_PREFIX) :].lower()
        if name not in KNOBS:
            raise ConfigError(name, f"unknown knob; known knobs: {', '.join(KNOBS)}", variable)
        put(name, value, variable)
    for name, value in cli_values.items():
        if name not in KNOBS:
            raise ConfigError(name, "unknown knob", "command line")
        put(name, value, KNOBS[name].flag)

    values: dict[str, KnobType] = {}
    sources: dict[str, Source] = {name: "default" for name in KNOBS}
    for name, (value, source) in raw.items():
        try:
            values[name] = parse_knob_value(KNOBS[name], value)
        except ConfigError as error:
            raise error.with_source(source) from None
        sources[name] = source
    try:
        config = TrainerConfig(**values)  # type: ignore[arg-type]
    except ConfigError as error:
        raise error.with_source(sources.get(error.knob)) from None
    return ResolvedConfig(config=config, sources=sources, shadowed=shadowed)


def add_knob_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--name`/`--name-with-dashes` option per knob; values stay raw strings."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in KNOBS.values():
        group = groups.get(spec.group)
        if group is None:
            group = groups[spec.group] = parser.add_argument_group(f"{spec.group} knobs")
        options = [spec.flag] if spec.flag == "--" + spec.name else [spec.flag, "--" + spec.name]
        extra: dict[str, Any] = {"metavar": spec.type.__name__.upper()}
        if spec.type is bool:
            extra = {"nargs": "?", "const": "true", "metavar": "BOOL"}
        choices = f" One of: {', '.join(spec.choices)}." if spec.choices else ""
        group.add_argument(
            *options,
            dest=f"knob_{spec.name}",
            default=argparse.SUPPRESS,
            help=f"{spec.help}.{choices} Default: {spec.default!r}. Env: {spec.env_var}.".replace("%", "%%"),
            **extra,
        )


def knob_values_from_args(args: argparse.Namespace) -> dict[str, str]:
    """The knobs given on the command line, by knob name."""
    return {name[len("knob_") :]: value for name, value in vars(args).items() if name.startswith("knob_")}
