"""TPE through Optuna: the history is replayed into an in-memory study on every call.

Usable trials become COMPLETE trials with their loss (the study minimises);
Pending/Running trials and the wave's earlier picks are RUNNING trials, which
TPE's constant liar treats as bad so a wave spreads out. Failed trials are
left out. Discrete parameters are modelled as the (ordered) index of their
value; conditional parameters are suggested define-by-run, parents first,
and `multivariate` models them jointly with Optuna's `group` decomposition.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubetune.api.models import ParameterType, TPESettings
from kubetune.search._context import Context
from kubetune.search._space import Assignment, Dimension, Kind, Space

_QUIET_LOCK = threading.Lock()
_QUIET_DEPTH = 0
_SAVED_LEVEL = logging.NOTSET


@contextmanager
def _quiet() -> Iterator[None]:
    """Optuna's logs (a line per study) and experimental-feature warnings, silenced while we run.

    The level is restored when the last concurrent caller leaves.
    """
    global _QUIET_DEPTH, _SAVED_LEVEL
    logger = logging.getLogger("optuna")
    with _QUIET_LOCK:
        if _QUIET_DEPTH == 0:
            _SAVED_LEVEL = logger.level
            logger.setLevel(logging.WARNING)
        _QUIET_DEPTH += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _QUIET_LOCK:
            _QUIET_DEPTH -= 1
            if _QUIET_DEPTH == 0:
                logger.setLevel(_SAVED_LEVEL)


def _distribution(dim: Dimension) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dim.kind == Kind.CATEGORICAL:
        return CategoricalDistribution(list(dim.values))
    if dim.type == ParameterType.DISCRETE:
        return IntDistribution(0, len(dim.values) - 1)
    if dim.type == ParameterType.INT:
        step = None if dim.log else int(dim.step or 1)
        return IntDistribution(int(dim.low), int(dim.high), log=dim.log, step=step or 1)
    return FloatDistribution(dim.low, dim.high, log=dim.log, step=dim.step)


def _to_optuna(space: Space, assignment: Assignment) -> dict[str, Any]:
    return {
        name: space.by_name[name].index_of(value) if space.by_name[name].type == ParameterType.DISCRETE else value
        for name, value in assignment.items()
    }


def _from_optuna(space: Space, params: dict[str, Any]) -> Assignment:
    result: Assignment = {}
    for name, value in params.items():
        dim = space.by_name[name]
        if dim.type == ParameterType.DISCRETE:
            result[name] = dim.values[int(value)]
        elif dim.type == ParameterType.INT:
            result[name] = int(value)
        elif dim.type == ParameterType.FLOAT:
            result[name] = float(value)
        else:
            result[name] = str(value)
    return result


def propose_tpe(ctx: Context, settings: TPESettings) -> Iterator[Assignment]:
    """TPE on the primary objective's loss."""
    values = {o.index: [o.loss] for o in ctx.usable if o.loss is not None}
    return _propose_optuna_tpe(ctx, settings, "tpe", values)


def propose_motpe(ctx: Context, settings: TPESettings) -> Iterator[Assignment]:
    """Optuna's multi-objective TPE on every objective's loss (`Context.scored`); trials missing one are left
    out, as failed ones."""
    scored, losses = ctx.scored
    values = {o.index: [float(v) for v in row] for o, row in zip(scored, losses, strict=True)}
    return _propose_optuna_tpe(ctx, settings, "motpe", values, objectives=max(1, losses.shape[1]))


def _propose_optuna_tpe(ctx: Context, settings: TPESettings, salt: str, values: dict[int, list[float]],
                        objectives: int = 1) -> Iterator[Assignment]:
    import optuna
    from optuna.trial import TrialState, create_trial

    space = ctx.space
    distributions = {d.name: _distribution(d) for d in space.dimensions}
    with _quiet():
        sampler = optuna.samplers.TPESampler(
            seed=ctx.seed_for(salt),
            n_startup_trials=settings.n_startup_trials,
            n_ei_candidates=settings.n_ei_candidates,
            multivariate=settings.multivariate,
            group=settings.multivariate and space.is_conditional,
            constant_liar=True,
        )
        study = optuna.create_study(directions=["minimize"] * objectives, sampler=sampler)
        trials = []
        for observation in ctx.observations:
            if observation.parameters is None:
                continue
            params = _to_optuna(space, observation.parameters)
            used = {name: distributions[name] for name in params}
            if observation.index in values:
                trials.append(create_trial(params=params, distributions=used, values=values[observation.index]))
            elif observation.pending:
                trials.append(create_trial(state=TrialState.RUNNING, params=params, distributions=used))
        study.add_trials(trials)

    while True:
        with _quiet():
            trial = study.ask()
            for dim in space.dimensions:
                if space.is_active(dim, trial.params):  # parents are categorical: same value
                    _suggest(trial, dim, distributions[dim.name])
            params = dict(trial.params)
        yield _from_optuna(space, params)  # the trial stays RUNNING: the next ask lies about it


def _suggest(trial: Any, dim: Dimension, distribution: Any) -> None:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        trial.suggest_categorical(dim.name, distribution.choices)
    elif isinstance(distribution, IntDistribution):
        trial.suggest_int(dim.name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    else:
        trial.suggest_float(dim.name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
