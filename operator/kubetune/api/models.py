"""Typed models of the kubetune.io/v1alpha1 API: the single source of truth.

The CRDs in `crds/` are generated from these classes (`kubetune crds`), so a
field's type, bounds, description and cross-field rules live here once.
Two layers of validation share one meaning:

- `x-kubernetes-validations` (CEL) rules below are enforced by the API server
  at `kubectl apply`, so bad specs never reach the operator;
- the pydantic validators repeat what CEL cannot express (cycles in
  conditions, values of a referenced parent) and are what the operator and the
  search engine use, so a spec that slipped past (an older CRD) becomes a
  `Valid=False` condition instead of a crash.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator
from pydantic.alias_generators import to_camel

GROUP = "kubetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Parameter names become env var suffixes and PromQL-free labels, so keep them
# to a lowercase identifier: no two names can collide once upper-cased.
PARAMETER_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
METRIC_NAME_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
# Cost metrics the operator computes itself from the trial's pods (no user code): see `BUILTIN_METRICS`.
BUILTIN_METRIC_PREFIX = "kubetune:"
GPU_SECONDS = "kubetune:gpu_seconds"
WALL_SECONDS = "kubetune:wall_seconds"
BUILTIN_METRICS = {
    GPU_SECONDS: "requested nvidia.com/gpu x running seconds, summed over the trial's pods (from pod status times)",
    WALL_SECONDS: "running seconds summed over the trial's pods (from pod status times)",
}
OBJECTIVE_METRIC_PATTERN = r"^([a-zA-Z_][a-zA-Z0-9_]*|kubetune:(gpu_seconds|wall_seconds))$"
MAX_OBJECTIVES = 4
MAX_PARAMETERS = 64
MAX_VALUES = 256
# int bounds are stored as JSON numbers (doubles): beyond 2^53 they are not exact, and the search
# engine's integer arithmetic on them stops being cheap (found by tests/e2e/test_fuzz_specs.py).
MAX_INT_BOUND = 2**53

ParameterValue = float | int | str
ParameterAssignment = dict[str, ParameterValue]


def rounded(value: float | None) -> str | None:
    """A value as `kubectl get` shows it: 6 significant digits (the status keeps the full value)."""
    return None if value is None else f"{value:.6g}"


def rules(*cel: tuple[str, str]) -> dict[str, Any]:
    """CEL validation rules as `json_schema_extra`: (rule, message) pairs."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in cel]}


class KubeModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The manifest form: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------- objective


class Goal(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


class Objective(KubeModel):
    """What a trial is judged by."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            ("!self.metric.startsWith('kubetune:') || !has(self.promql)",
             "built-in kubetune: metrics are computed by the operator and take no promql"),
        )
    )

    metric: str = Field(
        max_length=63,
        pattern=OBJECTIVE_METRIC_PATTERN,
        description=(
            "Name of the metric to optimise, as the trial reports it (e.g. val_accuracy), or a cost the operator "
            "computes from the trial's pods: "
            + " ".join(f"{name}: {text}." for name, text in BUILTIN_METRICS.items())
        ),
    )
    goal: Goal = Field(description="Whether a larger (maximize) or smaller (minimize) value is better.")
    target: float | None = Field(
        default=None,
        description="Stop the job as soon as a trial reaches this value (>= for maximize, <= for minimize); "
        "default: none, the job runs its budget.",
    )
    additional_metrics: list[Annotated[str, Field(max_length=63, pattern=METRIC_NAME_PATTERN)]] = Field(
        default_factory=list,
        max_length=16,
        description="Further metrics recorded in each Trial's status (not optimised).",
    )
    promql: str | None = Field(
        default=None,
        max_length=2048,
        description=(
            "PromQL template for the objective when trials do not follow the trainer contract. "
            "Placeholders {{namespace}}, {{job}}, {{trial}} and {{metric}} are replaced by escaped "
            "label values; the query must return one series per reported step with a `step` label "
            "(the learning curve early stopping compares), or a single series (the latest value). "
            "When a trial's pod finishes, the query's answer is its objective (the single series, else "
            "the value at the highest step), ahead of its termination message; a trial with no answer "
            "yet waits for one (the operator's KUBETUNE_FINAL_METRICS_GRACE_SECONDS, default 30) "
            "before it fails with MetricsUnavailable. Use last_over_time(...[15m]) so a finished pod's "
            "last samples still count."
        ),
    )

    primary: bool = Field(
        default=False,
        description=(
            "In objectives (several): the objective that early stopping, target and status.bestTrial follow "
            "(default: the first). At most one; it must be a metric the trial reports, not a kubetune: cost."
        ),
    )

    @model_validator(mode="after")
    def _check_builtin(self) -> Objective:
        if self.metric.startswith(BUILTIN_METRIC_PREFIX) and self.promql is not None:
            raise ValueError(f"objective {self.metric}: built-in kubetune: metrics take no promql")
        return self

    @property
    def builtin(self) -> bool:
        """A cost the operator computes from the trial's pods (kubetune:...)."""
        return self.metric.startswith(BUILTIN_METRIC_PREFIX)

    @property
    def sign(self) -> float:
        """+1 for minimize, -1 for maximize: `sign * value` is smaller-is-better."""
        return -1.0 if self.goal == Goal.MAXIMIZE else 1.0

    def is_better(self, candidate: float, incumbent: float) -> bool:
        """True when `candidate` beats `incumbent` under this goal."""
        if self.goal == Goal.MAXIMIZE:
            return candidate > incumbent
        return candidate < incumbent

    def reached_target(self, value: float) -> bool:
        if self.target is None:
            return False
        return value >= self.target if self.goal == Goal.MAXIMIZE else value <= self.target


# --------------------------------------------------------------------------- parameters


class ParameterType(StrEnum):
    FLOAT = "float"
    INT = "int"
    CATEGORICAL = "categorical"
    DISCRETE = "discrete"


class ParameterCondition(KubeModel):
    """The parameter exists only when a categorical parent took one of `values`."""

    parameter: str = Field(max_length=63, pattern=PARAMETER_NAME_PATTERN, description="Parent parameter name.")
    values: list[Annotated[str, Field(max_length=253)]] = Field(
        min_length=1, max_length=MAX_VALUES, description="Parent values for which this parameter exists."
    )


_PARAMETER_RULES = rules(
    (
        "self.type in ['float', 'int'] ? (has(self.min) && has(self.max)) : true",
        "float and int parameters need min and max",
    ),
    (
        "!(has(self.min) && has(self.max)) || self.min < self.max",
        "min must be less than max",
    ),
    ("!self.log || (has(self.min) && self.min > 0.0)", "log scale needs min > 0"),
    ("!(self.log && has(self.step))", "log scale and step cannot be combined"),
    (
        "self.type in ['categorical', 'discrete'] ? !has(self.min) && !has(self.max) && !has(self.step) && !self.log"
        " : true",
        "categorical and discrete parameters take no min, max, step or log",
    ),
    (
        # A range wider than the largest double overflows every sampler.
        "!(has(self.min) && has(self.max)) || self.max - self.min <= 1.7976931348623157e308",
        "max - min must be a finite number",
    ),
    (
        f"self.type != 'int' || ((!has(self.min) || (self.min >= -{MAX_INT_BOUND}.0 && self.min <= {MAX_INT_BOUND}.0))"
        f" && (!has(self.max) || (self.max >= -{MAX_INT_BOUND}.0 && self.max <= {MAX_INT_BOUND}.0)))",
        f"int parameters need min and max within +-{MAX_INT_BOUND} (2^53)",
    ),
    (
        # Out-of-range values fail the rule above; `||` keeps int() from erroring on them here.
        "self.type != 'int' || ((!has(self.min) || !(self.min >= -9.2e18 && self.min <= 9.2e18)"
        " || double(int(self.min)) == self.min)"
        " && (!has(self.max) || !(self.max >= -9.2e18 && self.max <= 9.2e18) || double(int(self.max)) == self.max)"
        " && (!has(self.step) || !(self.step <= 9.2e18) || double(int(self.step)) == self.step))",
        "int parameters need whole-number min, max and step",
    ),
)


class Parameter(KubeModel):
    """One dimension of the search space."""

    model_config = ConfigDict(json_schema_extra=_PARAMETER_RULES)

    name: str = Field(
        max_length=63,
        pattern=PARAMETER_NAME_PATTERN,
        description=(
            "Lowercase identifier; the trial container receives it as KUBETUNE_PARAM_<NAME> "
            "and as ${params.<name>} in args and env."
        ),
    )
    type: ParameterType = Field(description="float, int, categorical (strings) or discrete (ordered numbers).")
    min: float | None = Field(default=None, description="Lower bound (float, int).")
    max: float | None = Field(default=None, description="Upper bound, inclusive (float, int).")
    step: float | None = Field(default=None, gt=0, description="Grid step from min (float, int).")
    log: bool = Field(default=False, description="Sample on a log scale (float, int; needs min > 0).")
    # Mixed-type items (strings or numbers) cannot be typed for CEL, so whether
    # values are present for the parameter's type is checked by the operator.
    values: list[ParameterValue] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_VALUES,
        description="Choices: strings for categorical, numbers in increasing order for discrete.",
    )
    when: ParameterCondition | None = Field(
        default=None, description="Make this parameter conditional on a categorical parent's value."
    )

    @model_validator(mode="after")
    def _check_shape(self) -> Parameter:
        numeric = self.type in (ParameterType.FLOAT, ParameterType.INT)
        where = f"parameter {self.name!r}"
        if numeric:
            if self.min is None or self.max is None:
                raise ValueError(f"{where}: {self.type} parameters need min and max")
            if not (math.isfinite(self.min) and math.isfinite(self.max)):
                raise ValueError(f"{where}: min and max must be finite")
            if self.min >= self.max:
                raise ValueError(f"{where}: min ({self.min}) must be less than max ({self.max})")
            if not math.isfinite(self.max - self.min):
                raise ValueError(f"{where}: max - min must be a finite number")
            if self.type == ParameterType.INT and max(abs(self.min), abs(self.max)) > MAX_INT_BOUND:
                raise ValueError(f"{where}: int parameters need min and max within +-{MAX_INT_BOUND} (2^53)")
            if self.log and self.min <= 0:
                raise ValueError(f"{where}: log scale needs min > 0, got {self.min}")
            if self.log and self.step is not None:
                raise ValueError(f"{where}: log scale and step cannot be combined")
            if self.values is not None:
                raise ValueError(f"{where}: {self.type} parameters take min/max, not values")
            if self.type == ParameterType.INT:
                for label, bound in (("min", self.min), ("max", self.max), ("step", self.step)):
                    if bound is not None and bound != math.floor(bound):
                        raise ValueError(f"{where}: int parameters need a whole-number {label}, got {bound}")
            return self
        if not self.values:
            raise ValueError(f"{where}: {self.type} parameters need a non-empty values list")
        if self.min is not None or self.max is not None or self.step is not None or self.log:
            raise ValueError(f"{where}: {self.type} parameters take values, not min/max/step/log")
        if len(set(map(str, self.values))) != len(self.values):
            raise ValueError(f"{where}: values must be unique")
        if self.type == ParameterType.CATEGORICAL:
            if not all(isinstance(v, str) for v in self.values):
                raise ValueError(f"{where}: categorical values must be strings (quote numbers in YAML)")
        else:
            numbers = [v for v in self.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if len(numbers) != len(self.values) or not all(math.isfinite(float(v)) for v in numbers):
                raise ValueError(f"{where}: discrete values must be finite numbers")
            if any(float(a) >= float(b) for a, b in zip(numbers, numbers[1:], strict=False)):
                raise ValueError(f"{where}: discrete values must be in strictly increasing order")
        return self


# --------------------------------------------------------------------------- algorithm


class GridSettings(KubeModel):
    """Settings of grid search."""

    points_per_dimension: int = Field(
        default=5, ge=2, le=1000, description="Points for a float/int parameter that has no step."
    )


class TPESettings(KubeModel):
    """Settings of the Tree-structured Parzen Estimator."""

    n_startup_trials: int = Field(default=10, ge=0, le=10000, description="Random trials before TPE models.")
    n_ei_candidates: int = Field(default=24, ge=1, le=10000, description="Candidates scored per suggestion.")
    multivariate: bool = Field(default=True, description="Model parameters jointly rather than one by one.")


class BayesianSettings(KubeModel):
    """Settings of Gaussian-process Bayesian optimisation."""

    n_startup_trials: int = Field(default=10, ge=1, le=10000, description="Quasi-random trials before the GP.")
    acquisition: str = Field(
        default="ei", pattern=r"^(ei|ucb|pi)$", description="Acquisition function: ei, ucb or pi."
    )


class CMAESSettings(KubeModel):
    """Settings of CMA-ES."""

    sigma0: float | None = Field(
        default=None, gt=0, description="Initial step size as a fraction of the range (default 1/6)."
    )
    population_size: int | None = Field(
        default=None,
        ge=2,
        le=10000,
        description="Offspring per generation (default 4 + floor(3 ln d), d the number of numeric parameters).",
    )
    n_startup_trials: int = Field(default=0, ge=0, le=10000, description="Random trials before CMA-ES.")


class EvolutionSettings(KubeModel):
    """Settings of the genetic algorithm."""

    population_size: int = Field(default=20, ge=2, le=10000, description="Individuals per generation.")
    mutation_rate: float = Field(default=0.2, ge=0, le=1, description="Per-gene mutation probability.")
    crossover_rate: float = Field(default=0.9, ge=0, le=1, description="Probability of uniform crossover.")
    tournament_size: int = Field(default=3, ge=1, le=100, description="Contestants per parent selection.")


class NSGA2Settings(KubeModel):
    """Settings of NSGA-II."""

    population_size: int = Field(
        default=20, ge=2, le=10000, description="Parents kept by non-dominated rank and crowding distance."
    )
    crossover_rate: float = Field(default=0.9, ge=0, le=1, description="Probability of simulated binary crossover.")
    mutation_rate: float | None = Field(
        default=None, ge=0, le=1, description="Per-parameter mutation probability (default 1/number of parameters)."
    )


class ParEGOSettings(KubeModel):
    """Settings of ParEGO (a Gaussian process on random Chebyshev scalarisations)."""

    n_startup_trials: int = Field(default=10, ge=1, le=10000, description="Quasi-random trials before the GP.")


class AlgorithmName(StrEnum):
    """The search algorithms, one entry each: name, settings model (the `algorithm.<name>` field, or
    None) and what it does. The CRD's enum, `algorithm.name`'s description, the rule that settings go
    with their algorithm and `kubetune.search`'s dispatch table all follow this list."""

    settings_model: type[KubeModel] | None
    summary: str

    def __new__(cls, value: str, settings_model: type[KubeModel] | None = None, summary: str = "") -> AlgorithmName:
        member = str.__new__(cls, value)
        member._value_ = value
        member.settings_model = settings_model
        member.summary = summary
        return member

    AUTO = (
        "auto",
        None,
        "picks per search space and history: every point when the budget covers a finite space, "
        "else bayesian, then tpe once the history is long or the space wide (each with default settings); "
        "with several objectives parego, then motpe once the history is long or the space wide. Single-objective "
        "algorithms given several objectives optimise the primary one",
    )
    RANDOM = "random", None, "independent uniform samples"
    GRID = "grid", GridSettings, "every point of a grid, in a seeded order (settings: grid)"
    BAYESIAN = "bayesian", BayesianSettings, "Gaussian-process Bayesian optimisation (settings: bayesian)"
    TPE = "tpe", TPESettings, "Tree-structured Parzen Estimator, Optuna's (settings: tpe)"
    CMAES = "cmaes", CMAESSettings, "CMA-ES with restarts (settings: cmaes)"
    EVOLUTION = "evolution", EvolutionSettings, "a steady-state genetic algorithm (settings: evolution)"
    NSGA2 = (
        "nsga2",
        NSGA2Settings,
        "multi-objective: NSGA-II, parents by non-dominated rank and crowding (settings: nsga2)",
    )
    MOTPE = "motpe", TPESettings, "multi-objective TPE, Optuna's (settings: motpe)"
    PAREGO = (
        "parego",
        ParEGOSettings,
        "multi-objective: the bayesian GP on a random Chebyshev scalarisation per suggestion, for small budgets "
        "(settings: parego)",
    )


def _listing(entries: list[tuple[str, str]]) -> str:
    """`name: what it does` entries as one description text."""
    return " ".join(f"{name}: {text}." for name, text in entries)


_WITH_SETTINGS = [name for name in AlgorithmName if name.settings_model is not None]


class Algorithm(KubeModel):
    """How the next trials are suggested."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            *(
                (f"!has(self.{name}) || self.name == '{name}'", f"{name} settings need algorithm name {name}")
                for name in _WITH_SETTINGS
            )
        )
    )

    name: AlgorithmName = Field(
        default=AlgorithmName.AUTO,
        description="The algorithm. " + _listing([(a.value, a.summary) for a in AlgorithmName]),
    )
    seed: int | None = Field(
        default=None, ge=0, le=2**31 - 1, description="Seed for reproducible suggestions (default 0)."
    )
    # One field per algorithm that has settings, named after it (AlgorithmName lists them; a unit test
    # checks the two agree).
    grid: GridSettings | None = None
    tpe: TPESettings | None = None
    bayesian: BayesianSettings | None = None
    cmaes: CMAESSettings | None = None
    evolution: EvolutionSettings | None = None
    nsga2: NSGA2Settings | None = None
    motpe: TPESettings | None = None
    parego: ParEGOSettings | None = None

    @model_validator(mode="after")
    def _check_settings(self) -> Algorithm:
        for name in _WITH_SETTINGS:
            if getattr(self, name.value) is not None and self.name != name:
                raise ValueError(f"algorithm: {name} settings need algorithm name {name}")
        return self

    def settings(self) -> KubeModel | None:
        """The settings of the chosen algorithm: the spec's, or its model's defaults (None: it has none)."""
        model = AlgorithmName(self.name).settings_model
        if model is None:
            return None
        given: KubeModel | None = getattr(self, self.name)
        return given if given is not None else model()


# --------------------------------------------------------------------------- early stopping


class EarlyStoppingRule(StrEnum):
    """The early-stopping rules, one entry each: name, how it decides, and the fields it cannot run
    without. The CRD's enum, `earlyStopping.rule`'s description, the required-field checks (CEL and
    the model's own) and `kubetune.search`'s dispatch table all follow this list."""

    decides: str
    needs: tuple[str, ...]  # EarlyStopping fields (Python names) the rule requires

    def __new__(cls, value: str, decides: str = "", needs: tuple[str, ...] = ()) -> EarlyStoppingRule:
        member = str.__new__(cls, value)
        member._value_ = value
        member.decides = decides
        member.needs = needs
        return member

    NONE = "none", "no trial is stopped early"
    MEDIAN = (
        "median",
        "a running trial at step s >= minResource is stopped when its best value so far is worse than the "
        "median of the running averages up to s of the other trials that reached s (running, finished and "
        "stopped ones; at least minTrials of them)",
    )
    PERCENTILE = (
        "percentile",
        "as median, with the given percentile of those running averages as the bar: percentile 25 keeps "
        "trials within the best quarter, 50 is median",
        ("percentile",),
    )
    ASHA = (
        "asha",
        "asynchronous successive halving: rungs at minResource * reductionFactor^k below maxResource; a "
        "trial is judged at the highest rung it reached, by its value there against every trial's value at "
        "that rung, and continues only within the best 1/reductionFactor of them (the best one while fewer "
        "than reductionFactor trials reached the rung)",
        ("max_resource",),
    )
    HYPERBAND = (
        "hyperband",
        "trials are spread over Hyperband's brackets by their index (deterministic, interleaved); bracket b "
        "runs asha with its first rung at minResource * reductionFactor^b, so some brackets stop early and "
        "hard, others late; trials compete only within their bracket",
        ("max_resource",),
    )


def _needs_rules() -> list[tuple[str, str]]:
    """One CEL rule per required field: the rules that need it cannot go without it."""
    fields = sorted({field for rule in EarlyStoppingRule for field in rule.needs})
    cel = []
    for field in fields:
        names = [rule.value for rule in EarlyStoppingRule if field in rule.needs]
        listed = ", ".join(f"'{name}'" for name in names)
        subject = f"rule {names[0]} needs" if len(names) == 1 else f"rules {' and '.join(names)} need"
        cel.append((f"!(self.rule in [{listed}]) || has(self.{to_camel(field)})", f"{subject} {to_camel(field)}"))
    return cel


class EarlyStopping(KubeModel):
    """When running trials are stopped because they look worse than their peers (with several objectives: by
    the primary objective, whose learning curve is the one reported). No rule stops a trial at
    or past maxResource (when maxResource is unset: the highest step a succeeded trial reported), where
    stopping would save nothing."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            *_needs_rules(),
            (
                "!has(self.maxResource) || self.maxResource >= self.minResource",
                "maxResource must be at least minResource",
            ),
        )
    )

    rule: EarlyStoppingRule = Field(
        default=EarlyStoppingRule.NONE,
        description="The rule. " + _listing([(r.value, r.decides) for r in EarlyStoppingRule]),
    )
    resource: str = Field(
        default="epoch", max_length=63, description="What a step counts (informational: epoch, step, ...)."
    )
    min_resource: int = Field(
        default=1,
        ge=1,
        description="Steps every trial runs before it can be stopped (asha, hyperband: the first rung).",
    )
    max_resource: int | None = Field(
        default=None,
        ge=1,
        description="Steps a full trial runs; asha and hyperband need it. A trial that reached it is never "
        "stopped; when unset, the highest step a succeeded trial reported takes its place.",
    )
    reduction_factor: int = Field(
        default=3,
        ge=2,
        le=100,
        description="asha, hyperband: rungs are this factor apart and 1/factor of the trials at a rung go on.",
    )
    min_trials: int = Field(
        default=5,
        ge=1,
        le=10000,
        description="median, percentile: other trials that must have reached a step before a trial is "
        "compared there.",
    )
    percentile: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="percentile (required there): the percentile of the peers' running averages a trial's best "
        "value must match or beat, 0 to 100; smaller stops more.",
    )

    @model_validator(mode="after")
    def _check_resources(self) -> EarlyStopping:
        for field in EarlyStoppingRule(self.rule).needs:
            if getattr(self, field) is None:
                raise ValueError(f"earlyStopping: rule {self.rule} needs {to_camel(field)}")
        if self.max_resource is not None and self.max_resource < self.min_resource:
            raise ValueError("earlyStopping: maxResource must be at least minResource")
        return self


# --------------------------------------------------------------------------- budget and template


class Budget(KubeModel):
    """How many trials, how many at once, how much failure to tolerate."""

    model_config = ConfigDict(
        json_schema_extra=rules(("self.parallelism <= self.maxTrials", "parallelism must not exceed maxTrials"))
    )

    max_trials: int = Field(
        ge=1,
        le=1_000_000,
        description=(
            "Trials to run in total. Raising it on a finished job (Succeeded with MaxTrialsReached or "
            "SearchSpaceExhausted) reopens it: the job goes back to Running and continues with the new "
            "trials, keeping every trial it ran."
        ),
    )
    parallelism: int = Field(default=1, ge=1, le=10_000, description="Trials running at the same time.")
    max_failed_trials: int = Field(
        default=3, ge=0, le=1_000_000, description="The job fails once more trials than this have failed."
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Stop starting trials and finish the job this long after it started (default: no deadline).",
    )

    @model_validator(mode="after")
    def _check_parallelism(self) -> Budget:
        if self.parallelism > self.max_trials:
            raise ValueError(
                f"budget: parallelism ({self.parallelism}) must not exceed maxTrials ({self.max_trials})"
            )
        return self


# The pod template is core/v1 and checked by the API server when a pod is made. The fields the
# operator itself reads or rewrites are typed here (camelCase, as on the wire), so a wrong type is
# refused at admission, naming the field, instead of crashing a reconcile.


class EnvVarTemplate(BaseModel):
    """A core/v1 EnvVar; `value` may hold ${params.<name>}."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Variable name.")
    value: str | None = Field(default=None, description="Value (${params.<name>} is substituted).")


class ContainerTemplate(BaseModel):
    """A core/v1 Container: what kubetune reads is checked here, the rest by the API server."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(max_length=63, description="Container name.")
    command: list[str] | None = Field(default=None, description="Entrypoint (${params.<name>} is substituted).")
    args: list[str] | None = Field(default=None, description="Arguments (${params.<name>} is substituted).")
    env: list[EnvVarTemplate] | None = Field(default=None, description="Environment variables.")
    ports: list[dict[str, Any]] | None = Field(default=None, description="Ports (kubetune adds `metrics`).")
    securityContext: dict[str, Any] | None = Field(  # the core/v1 spelling
        default=None, description="Merged over kubetune's restricted-profile defaults."
    )
    terminationMessagePath: str | None = Field(default=None, description="Where the trial's final JSON goes.")


class PodSpecTemplate(BaseModel):
    """A core/v1 PodSpec; what kubetune reads is checked here, the rest by the API server."""

    model_config = ConfigDict(extra="allow")

    containers: list[ContainerTemplate] = Field(min_length=1, max_length=32, description="Pod containers.")
    initContainers: list[dict[str, Any]] | None = Field(  # the core/v1 spelling
        default=None, max_length=32, description="Init containers (get the restricted-profile defaults too)."
    )
    securityContext: dict[str, Any] | None = Field(
        default=None, description="Merged over kubetune's restricted-profile defaults."
    )
    automountServiceAccountToken: bool | None = Field(
        default=None, description="Default false: trials get no API token unless asked for."
    )


class PodMetadataTemplate(BaseModel):
    """Labels and annotations for trial pods (kubetune adds its own)."""

    model_config = ConfigDict(extra="allow")

    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class PodTemplate(BaseModel):
    """A core/v1 PodTemplateSpec for every trial."""

    model_config = ConfigDict(extra="forbid")

    metadata: PodMetadataTemplate | None = Field(default=None, description="Labels and annotations for trial pods.")
    spec: PodSpecTemplate


# A workload's condition to wait for: a condition type (CamelCase, read from status.conditions), else a CEL
# expression over the object.
CONDITION_TYPE_PATTERN = r"^[A-Z][A-Za-z0-9]*$"
# A path into a workload: dot-separated keys, `[*]` for every item of a list, `[N]` for one.
WORKLOAD_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*(\[(\*|[0-9]+)\])?(\.[A-Za-z_][A-Za-z0-9_-]*(\[(\*|[0-9]+)\])?)*$"


class WorkloadKind(StrEnum):
    """Workload kinds kubetune knows the shape of (anything else names its paths and conditions)."""

    JOB = "Job"
    JOBSET = "JobSet"


# Per known kind: (API groups, success condition, failure condition, pod template paths).
KNOWN_WORKLOADS: dict[str, tuple[tuple[str, ...], str, str, tuple[str, ...]]] = {
    WorkloadKind.JOB: (("batch",), "Complete", "Failed", ("spec.template",)),
    WorkloadKind.JOBSET: (("jobset.x-k8s.io",), "Completed", "Failed",
                          ("spec.replicatedJobs[*].template.spec.template",)),
}

_KNOWN_KINDS_CEL = " || ".join(
    f"(self.kind == '{kind}' && self.apiVersion.startsWith('{groups[0]}/'))" for kind, (groups, *_) in
    KNOWN_WORKLOADS.items())


def _known_kind(api_version: str, kind: str) -> bool:
    known = KNOWN_WORKLOADS.get(kind)
    return known is not None and api_version.split("/")[0] in known[0]


class WorkloadTemplate(KubeModel):
    """A trial as any workload object (batch Job, JobSet, Kubeflow TrainJob, ...) instead of a bare pod."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            (f"{_KNOWN_KINDS_CEL} || (has(self.successCondition) && has(self.failureCondition)"
             " && has(self.podTemplates))",
             "a workload of a kind other than batch/v1 Job or JobSet needs successCondition, failureCondition "
             "and podTemplates"),
        )
    )

    api_version: str = Field(max_length=253, pattern=r"^([a-z0-9.-]+/)?v[0-9]+[a-z0-9]*$",
                             description="The workload's apiVersion, e.g. batch/v1 or jobset.x-k8s.io/v1alpha2.")
    kind: str = Field(max_length=63, pattern=r"^[A-Z][A-Za-z0-9]*$", description="The workload's kind.")
    resource: str | None = Field(
        default=None, max_length=63, pattern=r"^[a-z][a-z0-9]*$",
        description="The kind's resource (plural) name. Default: the kind in lower case plus 's' (jobs, jobsets, "
                    "trainjobs). The operator must be allowed to watch it (the chart's workloadKinds).")
    metadata: PodMetadataTemplate | None = Field(default=None, description="Labels and annotations of the workload.")
    spec: dict[str, Any] = Field(
        description="The workload's spec. ${params.<name>} is substituted literally in every string (with `$` "
                    "doubled, as in a container's command); kubetune names the object <trial>-<attempt>.")
    success_condition: str | None = Field(
        default=None, max_length=1024,
        description="When the trial succeeded: a condition type that is True in status.conditions (CamelCase, "
                    "e.g. Complete), or a CEL expression over `object` (e.g. `object.status.succeeded >= 2`). "
                    "Default: Complete for a Job, Completed for a JobSet.")
    failure_condition: str | None = Field(
        default=None, max_length=1024,
        description="When the trial's attempt failed (retried per retries, as a new workload), as "
                    "successCondition. Default: Failed for a Job and a JobSet.")
    pod_templates: list[Annotated[str, Field(max_length=253, pattern=WORKLOAD_PATH_PATTERN)]] | None = Field(
        default=None, max_length=16,
        description="Paths of the PodTemplateSpecs in the object (e.g. spec.replicatedJobs[*].template.spec."
                    "template): each gets the trial's labels (how the operator finds its pods), the restricted "
                    "security defaults, and the parameter env vars in every container. Default: spec.template "
                    "for a Job, spec.replicatedJobs[*].template.spec.template for a JobSet.")
    containers: list[Annotated[str, Field(max_length=253, pattern=WORKLOAD_PATH_PATTERN)]] | None = Field(
        default=None, max_length=16,
        description="Paths of further container-like objects that get the parameter env vars (e.g. spec.trainer "
                    "of a Kubeflow TrainJob, which builds its pods itself).")
    reporting_pod: dict[str, str] | None = Field(
        default=None,
        description="Labels of the pod whose termination message and metrics are the trial's (rank 0). Default: "
                    "completion index 0 of a Job (batch.kubernetes.io/job-completion-index: \"0\"); the first "
                    "replicated job's job index 0, completion index 0 of a JobSet.")

    @property
    def known(self) -> bool:
        return _known_kind(self.api_version, self.kind)

    @property
    def plural(self) -> str:
        return self.resource or f"{self.kind.lower()}s"

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def conditions(self) -> tuple[str, str]:
        """(success, failure) conditions, the kind's defaults filled in."""
        known = KNOWN_WORKLOADS.get(self.kind) if self.known else None
        success = self.success_condition or (known[1] if known else "")
        failure = self.failure_condition or (known[2] if known else "")
        return success, failure

    def pod_template_paths(self) -> list[str]:
        if self.pod_templates is not None:
            return list(self.pod_templates)
        known = KNOWN_WORKLOADS.get(self.kind) if self.known else None
        return list(known[3]) if known else []

    @model_validator(mode="after")
    def _check_kind(self) -> WorkloadTemplate:
        if not self.known and (self.success_condition is None or self.failure_condition is None
                               or self.pod_templates is None):
            raise ValueError(f"trialTemplate.workload: a {self.api_version} {self.kind} needs successCondition, "
                             "failureCondition and podTemplates (kubetune knows only batch/v1 Job and JobSet)")
        return self


class TrialTemplate(KubeModel):
    """How each trial runs: a pod template (or a workload object) plus what kubetune adds to it."""

    model_config = ConfigDict(
        json_schema_extra=rules((
            "has(self.template) != has(self.workload)",
            "trialTemplate needs exactly one of template (a pod) and workload (any workload object)")))

    primary_container: str | None = Field(
        default=None,
        max_length=63,
        description="Container that trains and reports metrics (default: the first; with a workload, the first of "
                    "its first pod template).",
    )
    retries: int = Field(default=0, ge=0, le=10,
                         description="Times a failed trial pod (or workload, re-created whole) is retried.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Deadline of each trial's pod (default: none; not applied to workloads)."
    )
    not_starting_timeout_seconds: int | None = Field(
        default=300,
        ge=1,
        description=(
            "A trial whose pod Kubernetes cannot start (ImagePullBackOff, ErrImagePull, InvalidImageName, "
            "CreateContainerConfigError, CreateContainerError, RunContainerError) fails with that reason once "
            "its pod is this old, instead of waiting forever; null waits (the reason stays in the Trial's status "
            "and the job's TrialsNotStarting condition either way). Not retried: a wrong image or a missing "
            "Secret stays wrong. With a workload: any of its pods, or none created (PodsNotCreated, after 15 s: a "
            "ResourceQuota or an admission webhook refuses them, or no controller runs the kind)."
        ),
    )
    unschedulable_timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Like notStartingTimeoutSeconds for a pod the scheduler cannot place (Unschedulable: not enough GPUs, "
            "a taint, a quota). Unset by default: trials queued behind each other for GPUs are normal, and they "
            "show as Unschedulable meanwhile."
        ),
    )
    metrics_port: int = Field(default=8000, ge=1, le=65535, description="Port the trial serves metrics on.")
    metrics_path: str = Field(default="/metrics", max_length=253, pattern=r"^/", description="Metrics HTTP path.")
    template: PodTemplate | None = Field(
        default=None, description="The trial pod template (core/v1 PodTemplateSpec); or set workload.")
    workload: WorkloadTemplate | None = Field(
        default=None, description="Each trial as a workload object (batch Job, JobSet, ...) instead of a pod.")

    @model_validator(mode="after")
    def _check_primary(self) -> TrialTemplate:
        if (self.template is None) == (self.workload is None):
            raise ValueError("trialTemplate needs exactly one of template (a pod) and workload")
        names = self.container_names()
        if self.primary_container is not None and self.primary_container not in names:
            raise ValueError(f"trialTemplate: primaryContainer {self.primary_container!r} is not one of {names}")
        return self

    def container_names(self) -> list[str]:
        """Names of the trial pod's containers (with a workload, of its pod templates' containers)."""
        if self.template is not None:
            return [c.name for c in self.template.spec.containers]
        assert self.workload is not None
        names: list[str] = []
        for path in self.workload.pod_template_paths():
            for template in resolve_path(self.workload.spec, path.removeprefix("spec.")):
                for container in (template.get("spec") or {}).get("containers") or []:
                    if isinstance(container, dict) and isinstance(container.get("name"), str):
                        names.append(container["name"])
        return names

    @property
    def primary_container_name(self) -> str:
        names = self.container_names()
        return self.primary_container or (names[0] if names else "")


_PATH_STEP = re.compile(r"^(?P<key>[^\[]+)(\[(?P<index>\*|[0-9]+)\])?$")


def resolve_path(root: Any, path: str) -> list[dict[str, Any]]:
    """The objects (dicts) at `path` (a WORKLOAD_PATH_PATTERN) under `root`; the same dicts, not copies."""
    found: list[Any] = [root]
    for step in path.split(".") if path else []:
        match = _PATH_STEP.match(step)
        if match is None:
            return []
        found = [node[match["key"]] for node in found if isinstance(node, dict) and match["key"] in node]
        index = match["index"]
        if index == "*":
            found = [item for node in found if isinstance(node, list) for item in node]
        elif index is not None:
            found = [node[int(index)] for node in found if isinstance(node, list) and int(index) < len(node)]
    return [node for node in found if isinstance(node, dict)]


# --------------------------------------------------------------------------- the job


_SPEC_RULES = rules(
    ("has(self.objective) != has(self.objectives)", "set exactly one of objective and objectives"),
    (
        "!has(self.objectives) || (self.objectives.exists(o, o.primary)"
        " ? self.objectives.exists(o, o.primary && !o.metric.startsWith('kubetune:'))"
        " : !self.objectives[0].metric.startsWith('kubetune:'))",
        "objectives: the primary objective (marked primary, else the first) must be a metric the trial reports, "
        "not a kubetune: cost",
    ),

    (
        "self.parameters.all(p, !has(p.when) || self.parameters.exists(q, q.name == p.when.parameter"
        " && q.name != p.name && q.type == 'categorical'))",
        "parameters[].when.parameter must name another, categorical parameter",
    ),
)


class TuningJobSpec(KubeModel):
    """A hyperparameter search: what to tune, how, for how long, and how each trial runs."""

    model_config = ConfigDict(json_schema_extra=_SPEC_RULES)

    objective: Objective | None = Field(
        default=None, description="The one objective (or use objectives for several; exactly one of the two)."
    )
    objectives: list[Objective] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_OBJECTIVES,
        description=(
            f"Several objectives (1 to {MAX_OBJECTIVES}, distinct metrics) searched for their Pareto front "
            "(status.paretoFront): a trial is on it when no other trial is at least as good in every objective "
            "and better in one. The primary objective drives early stopping, target and bestTrial; the "
            "algorithm auto picks a multi-objective method for two or more. Exactly one of objective and "
            "objectives."
        ),
        json_schema_extra=rules(
            ("self.all(o, self.exists_one(p, p.metric == o.metric))", "objectives[].metric must be distinct"),
            ("self.exists_one(o, o.primary) || !self.exists(o, o.primary)", "at most one objective is primary"),
        ),
    )
    parameters: list[Parameter] = Field(min_length=1, max_length=MAX_PARAMETERS, description="The search space.")
    algorithm: Algorithm = Field(default_factory=Algorithm)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    budget: Budget
    trial_template: TrialTemplate
    suspend: bool = Field(
        default=False, description="Start no new trials; running trials finish. Set back to false to resume."
    )

    @model_validator(mode="after")
    def _check_objectives(self) -> TuningJobSpec:
        if (self.objective is None) == (self.objectives is None):
            raise ValueError("set exactly one of objective and objectives")
        metrics = [o.metric for o in self.objective_list]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives: metric names must be distinct, got {metrics}")
        if sum(o.primary for o in self.objective_list) > 1:
            raise ValueError("objectives: at most one objective is primary")
        if self.primary_objective.builtin:
            raise ValueError(
                f"objectives: the primary objective ({self.primary_objective.metric}) must be a metric the trial "
                "reports, not a kubetune: cost"
            )
        return self

    @property
    def objective_list(self) -> list[Objective]:
        """The objectives in spec order: `objectives`, or the one `objective` (the normalised form)."""
        if self.objectives is not None:
            return self.objectives
        assert self.objective is not None  # the validator guarantees exactly one
        return [self.objective]

    @property
    def primary_objective(self) -> Objective:
        """What early stopping, target, bestTrial and the single-objective algorithms follow."""
        listed = self.objective_list
        return next((o for o in listed if o.primary), listed[0])

    @property
    def multi_objective(self) -> bool:
        return len(self.objective_list) > 1

    @model_validator(mode="after")
    def _check_parameters(self) -> TuningJobSpec:
        by_name: dict[str, Parameter] = {}
        for parameter in self.parameters:
            if parameter.name in by_name:
                raise ValueError(f"parameters: duplicate name {parameter.name!r}")
            by_name[parameter.name] = parameter
        for parameter in self.parameters:
            if parameter.when is None:
                continue
            parent = by_name.get(parameter.when.parameter)
            where = f"parameter {parameter.name!r}: when.parameter {parameter.when.parameter!r}"
            if parent is None or parent.name == parameter.name:
                raise ValueError(f"{where} must name another parameter")
            if parent.type != ParameterType.CATEGORICAL:
                raise ValueError(f"{where} must be categorical")
            unknown = set(parameter.when.values) - {str(v) for v in parent.values or []}
            if unknown:
                raise ValueError(f"{where} has no value(s) {sorted(unknown)}")
        for parameter in self.parameters:  # conditions must form a forest, not a cycle
            seen = {parameter.name}
            current = parameter
            while current.when is not None:
                current = by_name[current.when.parameter]
                if current.name in seen:
                    raise ValueError(f"parameter {parameter.name!r}: conditions form a cycle")
                seen.add(current.name)
        return self

    def parameter(self, name: str) -> Parameter:
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(name)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(KubeModel):
    """A metav1.Condition."""

    type: str = Field(max_length=316)
    status: ConditionStatus
    reason: str = Field(max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str | None = None
    observed_generation: int | None = None


class TuningJobPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class TrialCounts(KubeModel):
    """Trials by phase. `created` counts every Trial ever made for the job."""

    created: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    early_stopped: int = 0
    cancelled: int = Field(default=0, description="Trials still active when the job finished, stopped with it.")

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.early_stopped + self.cancelled


class BestTrial(KubeModel):
    """The best finished trial so far."""

    name: str
    index: int
    objective: float
    parameters: ParameterAssignment = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)


PARETO_FRONT_CAP = 32


class ParetoMember(KubeModel):
    """A trial on the Pareto front: no other trial is at least as good in every objective and better in one."""

    name: str
    index: int
    objectives: dict[str, float] = Field(description="Its value of each objective, by metric name.")
    parameters: ParameterAssignment = Field(default_factory=dict)


class TuningJobStatus(KubeModel):
    """Bounded in size: counts, the best trial and a capped Pareto front, never a list of all trials."""

    phase: TuningJobPhase = TuningJobPhase.PENDING
    progress: str | None = Field(default=None, description="Finished/maximum trials, e.g. 7/12.")
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    counts: TrialCounts = Field(default_factory=TrialCounts)
    best_trial: BestTrial | None = None
    best_objective_rounded: str | None = Field(
        default=None, description="bestTrial.objective to 6 significant digits (the Best column); derived."
    )
    pareto_front: list[ParetoMember] | None = Field(
        default=None,
        max_length=PARETO_FRONT_CAP,
        description=(
            "With several objectives: the succeeded trials no other succeeded trial dominates, by the primary "
            f"objective (best first); at most {PARETO_FRONT_CAP}, spread evenly along the front when it is longer."
        ),
    )
    pareto_front_size: int | None = Field(
        default=None, description="With several objectives: how many trials the whole front has (the Front column)."
    )
    start_time: str | None = None
    completion_time: str | None = None
    message: str | None = Field(default=None, max_length=32768)

    @model_serializer(mode="wrap")
    def _with_rounded(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        _put_rounded(data, "bestObjectiveRounded", "best_objective_rounded",
                     self.best_trial.objective if self.best_trial else None)
        return data


class ObjectMeta(BaseModel):
    """The parts of metav1.ObjectMeta the operator reads."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class TuningJob(KubeModel):
    """A hyperparameter tuning study."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = "TuningJob"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: TuningJobSpec
    status: TuningJobStatus = Field(default_factory=TuningJobStatus)


# --------------------------------------------------------------------------- trials


class TrialPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    EARLY_STOPPED = "EarlyStopped"  # stopped by the early-stopping rule
    CANCELLED = "Cancelled"  # still active when the job finished (failed, reached its target or deadline)

    @property
    def finished(self) -> bool:
        return self in (TrialPhase.SUCCEEDED, TrialPhase.FAILED, TrialPhase.EARLY_STOPPED, TrialPhase.CANCELLED)


class TrialSpec(KubeModel):
    """One suggestion: its place in the study and its parameter values."""

    index: int = Field(ge=0, description="Position in the job's sequence of trials (names are <job>-<index>).")
    parameters: ParameterAssignment = Field(description="The hyperparameter values this trial runs with.")


class EarlyStopDecision(KubeModel):
    """Why a trial was stopped: what the rule compared."""

    rule: str
    step: float = Field(description="Step (resource) at which the trial was compared.")
    value: float = Field(description="The trial's objective at that step.")
    threshold: float | None = Field(default=None, description="The value it had to beat.")


class TrialStatus(KubeModel):
    phase: TrialPhase = TrialPhase.PENDING
    attempts: int = Field(default=0, description="Pods started for this trial, retries included.")
    job_name: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    objective: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    intermediate: list[list[float]] = Field(
        default_factory=list, description="[step, objective] pairs the early-stopping rule saw."
    )
    early_stopping: EarlyStopDecision | None = None
    reason: str | None = None
    message: str | None = Field(default=None, max_length=32768)
    observed_generation: int | None = None
    objective_rounded: str | None = Field(
        default=None, description="objective to 6 significant digits (the Objective column); derived."
    )

    @model_serializer(mode="wrap")
    def _with_rounded(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        _put_rounded(data, "objectiveRounded", "objective_rounded", self.objective)
        return data


def _put_rounded(data: dict[str, Any], alias: str, name: str, value: float | None) -> None:
    """Set a derived display field in serialized data, under whichever key spelling the dump used."""
    key = alias if alias in data or name not in data else name
    data.pop(name, None)
    data.pop(alias, None)
    if value is not None:
        data[key] = rounded(value)


class Trial(KubeModel):
    """One training run of a TuningJob."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = "Trial"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: TrialSpec
    status: TrialStatus = Field(default_factory=TrialStatus)
