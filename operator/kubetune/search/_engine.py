"""`suggest`: pick the sampler, then fill the wave with distinct, valid, untried points.

Each algorithm is one entry of `SAMPLERS` (algorithm name -> sampler); the
names, the settings models and what each does are declared once in
`kubetune.api.models.AlgorithmName`. A sampler gets the context and the
algorithm's settings (the spec's, else its model's defaults) and yields
candidate points; `fill_wave` keeps the valid, untried, distinct ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubetune.api.models import AlgorithmName, TuningJobSpec
from kubetune.search._basic import enumerate_untried, propose_exhaustive, propose_grid, propose_random
from kubetune.search._cmaes import propose_cmaes
from kubetune.search._context import Context
from kubetune.search._errors import SearchError
from kubetune.search._evolution import propose_evolution
from kubetune.search._gp import propose_gp
from kubetune.search._history import parse_history_keys
from kubetune.search._multi import propose_nsga2, propose_parego
from kubetune.search._space import Assignment, Space, load_spec
from kubetune.search._tpe import propose_motpe, propose_tpe

log = logging.getLogger(__name__)

# `auto`: a Gaussian process while it is cheap and strong (small budgets, few
# parameters), TPE once the history is long or the space wide.
AUTO_GP_MAX_TRIALS = 200
AUTO_GP_MAX_DIMENSIONS = 24


@dataclass(frozen=True)
class Sampler:
    """How an algorithm proposes points: `propose(ctx, settings)` yields candidates (it may run dry)."""

    propose: Callable[[Context, Any], Iterator[Assignment]]
    # When the sampler runs dry, top the wave up from the rest of the space (a grid stops at its points).
    top_up: bool = True


def choose_algorithm(ctx: Context) -> str:
    """The sampler a call uses: the spec's algorithm, or what `auto` picks for this space and history.

    `auto`: "exhaustive" when the space is finite and the budget covers every
    point; "bayesian" up to AUTO_GP_MAX_TRIALS usable trials on spaces of at
    most AUTO_GP_MAX_DIMENSIONS parameters; "tpe" otherwise. With several
    objectives the same split between "parego" and "motpe".
    """
    name = AlgorithmName(ctx.spec.algorithm.name)
    if name != AlgorithmName.AUTO:
        return name.value
    size = ctx.space.size
    if size is not None and size <= ctx.spec.budget.max_trials:
        return "exhaustive"
    multi = ctx.spec.multi_objective
    if len(ctx.usable) < AUTO_GP_MAX_TRIALS and len(ctx.space) <= AUTO_GP_MAX_DIMENSIONS:
        return (AlgorithmName.PAREGO if multi else AlgorithmName.BAYESIAN).value
    return (AlgorithmName.MOTPE if multi else AlgorithmName.TPE).value


def propose_auto(ctx: Context, _settings: None = None) -> Iterator[Assignment]:
    """`auto`: the sampler `choose_algorithm` picks, with its default settings."""
    name = choose_algorithm(ctx)
    if name == "exhaustive":
        return propose_exhaustive(ctx)
    chosen = AlgorithmName(name)
    settings = chosen.settings_model() if chosen.settings_model is not None else None
    return SAMPLERS[chosen].propose(ctx, settings)


SAMPLERS: dict[AlgorithmName, Sampler] = {
    AlgorithmName.AUTO: Sampler(propose_auto),
    AlgorithmName.RANDOM: Sampler(propose_random),
    AlgorithmName.GRID: Sampler(propose_grid, top_up=False),
    AlgorithmName.BAYESIAN: Sampler(propose_gp),
    AlgorithmName.TPE: Sampler(propose_tpe),
    AlgorithmName.CMAES: Sampler(propose_cmaes),
    AlgorithmName.EVOLUTION: Sampler(propose_evolution),
    AlgorithmName.NSGA2: Sampler(propose_nsga2),
    AlgorithmName.MOTPE: Sampler(propose_motpe),
    AlgorithmName.PAREGO: Sampler(propose_parego),
}


def _offer(ctx: Context, candidate: Assignment) -> None:
    canonical = ctx.space.canonical(candidate)
    if canonical is None:  # a sampler bug: never hand out a point outside the space
        log.warning("search: dropped a suggestion outside the space: %r", candidate)
        return
    key = ctx.space.key(canonical)
    if key not in ctx.taken:
        ctx.taken.add(key)
        ctx.accepted.append(canonical)


def fill_wave(ctx: Context, proposer: Iterator[Assignment], n: int, *, fallback: bool) -> list[Assignment]:
    """Take up to n distinct untried points from `proposer`; top up from the rest of the space.

    A sampler gets 4n + 20 draws. With `fallback`, a finite space is then
    walked point by point (so the result is short only when every point was
    tried) and a continuous one sampled at random.
    """
    attempts = 4 * n + 20
    for _ in range(attempts):
        if len(ctx.accepted) >= n:
            break
        candidate = next(proposer, None)
        if candidate is None:
            break
        _offer(ctx, candidate)
    if fallback and len(ctx.accepted) < n:
        rest = enumerate_untried(ctx, ctx.space.natural_points) if ctx.space.size is not None else _random(ctx)
        for candidate in rest:
            if len(ctx.accepted) >= n:
                break
            _offer(ctx, candidate)
    return list(ctx.accepted)


def _random(ctx: Context) -> Iterator[Assignment]:
    rng = ctx.rng("fallback")
    for _ in range(1000 + 100 * len(ctx.observations)):
        yield ctx.space.sample(rng)


def suggest(spec: Mapping[str, Any] | TuningJobSpec, history: object, n: int) -> list[Assignment]:
    """Up to `n` new parameter assignments for a TuningJob, given its trial history.

    `spec`: the TuningJob's `spec` (camelCase mapping, as in the manifest) or a
    `TuningJobSpec`. `history`: one mapping per trial in trial-index order,
    `{"parameters": {...}, "state": "Pending"|"Running"|"Succeeded"|"Failed"|
    "EarlyStopped", "objective": float|None, "intermediate": [[resource, value], ...],
    "metrics": {name: float}}` (`objective`, `intermediate` and `metrics` optional;
    `objective` is the primary objective's value, `metrics` holds the other
    objectives' values of a Succeeded trial).

    Returns distinct assignments (name -> value; int parameters as int, float
    as float, categorical as str, discrete as one of its values), each inside
    the bounds, on the step/log grid, with a conditional parameter present iff
    its parent took one of `when.values`, and none equal to a point already in
    the history (Failed and still-running trials included). Pure and
    deterministic: the same (spec, history, n) and seed give the same answer.

    A list shorter than `n` (possibly empty) means the space is exhausted: the
    grid is done, or every point of a finite space has been tried. n <= 0
    gives []. Bad input raises `SearchError`.
    """
    if not isinstance(n, int) or isinstance(n, bool):
        raise SearchError(f"n must be an integer, got {n!r}")
    job = load_spec(spec)
    space = Space.from_spec(job)
    observations, tried = parse_history_keys(space, job.primary_objective.goal, history)
    if n <= 0:
        return []
    ctx = Context(job, space, observations, taken=tried)
    sampler = SAMPLERS.get(AlgorithmName(job.algorithm.name))
    if sampler is None:
        raise SearchError(f"algorithm {job.algorithm.name!r} has no sampler")
    return fill_wave(ctx, sampler.propose(ctx, job.algorithm.settings()), n, fallback=sampler.top_up)
