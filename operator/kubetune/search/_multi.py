"""Multi-objective search: Pareto ranks, NSGA-II and ParEGO, rebuilt from the history on every call.

Every objective is a loss here (`Context.scored`: one column per objective, smaller is better).

- `non_dominated(points)`: which rows no other row dominates (at least as good everywhere, better once).
- NSGA-II (Deb et al. 2002): parents are the best `populationSize` scored trials by non-dominated rank,
  then crowding distance; a child comes from two binary-tournament parents by simulated binary crossover
  (probability `crossoverRate`; eta 15, each coordinate with probability 1/2, as in pymoo and Deb's code)
  and polynomial mutation (eta 20, per-parameter probability
  `mutationRate`, default 1/d) in the unit encoding; categorical parameters cross uniformly and mutate to
  a random value. Until a population exists, quasi-random startup points (as the GP's).
- ParEGO (Knowles 2006): each suggestion draws its own weight vector and scalarises the normalised
  losses by the augmented Chebyshev function max_i(w_i f_i) + 0.05 sum_i w_i f_i; the `bayesian` GP then
  proposes one point for that scalar loss, with the wave's earlier picks as running points. Different
  weights per pick spread a wave along the front instead of onto one point.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from kubetune.api.models import BayesianSettings, NSGA2Settings, ParEGOSettings
from kubetune.search._context import Context
from kubetune.search._gp import propose_gp, startup_points
from kubetune.search._space import Assignment, FloatArray

_ETA = 20.0  # polynomial mutation
_ETA_CROSSOVER = 15.0
CHEBYSHEV_RHO = 0.05


def dominates(a: FloatArray, b: FloatArray) -> bool:
    """Row a is at least as good as b in every loss and better in one."""
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated(rows: npt.ArrayLike) -> np.ndarray:
    """Boolean mask of the rows of `rows` (losses) that no other row dominates."""
    points = np.asarray(rows, dtype=float)
    n = len(points)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        if not mask[i]:
            continue
        at_least = np.all(points <= points[i], axis=1)
        better = np.any(points < points[i], axis=1)
        if np.any(at_least & better):
            mask[i] = False
    return mask


def pareto_ranks(points: FloatArray) -> np.ndarray:
    """Non-dominated sorting: 0 for the front, 1 for the front once that is removed, ..."""
    ranks = np.full(len(points), -1)
    remaining = np.arange(len(points))
    rank = 0
    while len(remaining):
        front = non_dominated(points[remaining])
        ranks[remaining[front]] = rank
        remaining = remaining[~front]
        rank += 1
    return ranks


def crowding(points: FloatArray) -> FloatArray:
    """Crowding distance within one front: boundary points get infinity."""
    n, m = points.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(points[:, j], kind="stable")
        column = points[order, j]
        span = column[-1] - column[0]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (column[2:] - column[:-2]) / span
    return distance


def _survivors(points: FloatArray, size: int) -> tuple[np.ndarray, np.ndarray, FloatArray]:
    """NSGA-II's environmental selection: indices of the `size` best rows, their ranks and crowding."""
    ranks = pareto_ranks(points)
    crowd = np.zeros(len(points))
    for rank in np.unique(ranks):
        members = np.flatnonzero(ranks == rank)
        crowd[members] = crowding(points[members])
    order = np.lexsort((-crowd, ranks))[:size]
    return order, ranks[order], crowd[order]


def propose_nsga2(ctx: Context, settings: NSGA2Settings) -> Iterator[Assignment]:
    scored, losses = ctx.scored
    if len(scored) < settings.population_size:
        yield from startup_points(ctx)
        return
    space = ctx.space
    chosen, ranks, crowd = _survivors(losses, settings.population_size)
    parents = np.array([space.encode(scored[i].parameters or {}) for i in chosen])
    numeric = ~space.categorical_mask
    mutation = settings.mutation_rate if settings.mutation_rate is not None else 1.0 / max(len(space), 1)
    rng = ctx.rng("nsga2")
    sizes = [len(d.values) if not d.is_numeric else 0 for d in space.dimensions]

    def tournament() -> FloatArray:
        a, b = rng.integers(0, len(parents), 2)
        better = a if (ranks[a], -crowd[a]) <= (ranks[b], -crowd[b]) else b
        parent: FloatArray = parents[better]
        return parent

    while True:
        first, second = tournament(), tournament()
        child = first.copy()
        if rng.random() < settings.crossover_rate:
            child = _sbx(first, second, numeric, rng)
        child = _mutate(child, numeric, mutation, sizes, rng)
        yield space.decode(space.repair(child[None, :], rng)[0])


def _sbx(first: FloatArray, second: FloatArray, numeric: np.ndarray, rng: np.random.Generator) -> FloatArray:
    """Simulated binary crossover (eta 15) on each numeric coordinate with probability 1/2, taking either
    offspring at random; uniform crossover on categorical ones."""
    u = rng.random(len(first))
    exponent = 1 / (_ETA_CROSSOVER + 1)
    beta = np.where(u <= 0.5, (2 * u) ** exponent, (1 / (2 * (1 - u))) ** exponent)
    one = 0.5 * ((1 + beta) * first + (1 - beta) * second)
    other = 0.5 * ((1 - beta) * first + (1 + beta) * second)
    crossed = np.where(rng.random(len(first)) < 0.5, one, other)
    child = np.where(rng.random(len(first)) < 0.5, crossed, first)
    uniform = np.where(rng.random(len(first)) < 0.5, first, second)
    result: FloatArray = np.where(numeric, np.clip(child, 0.0, 1.0), uniform)
    return result


def _mutate(child: FloatArray, numeric: np.ndarray, rate: float, sizes: list[int],
            rng: np.random.Generator) -> FloatArray:
    """Polynomial mutation (numeric) or a random value (categorical), each coordinate with probability `rate`."""
    child = child.copy()
    for d in np.flatnonzero(rng.random(len(child)) < rate):
        if not numeric[d]:
            child[d] = float(rng.integers(0, sizes[d]))
            continue
        u = rng.random()
        x = child[d]
        if u < 0.5:
            delta = (2 * u + (1 - 2 * u) * (1 - x) ** (_ETA + 1)) ** (1 / (_ETA + 1)) - 1
        else:
            delta = 1 - (2 * (1 - u) + 2 * (u - 0.5) * x ** (_ETA + 1)) ** (1 / (_ETA + 1))
        child[d] = float(np.clip(x + delta, 0.0, 1.0))
    return child


def chebyshev(losses: FloatArray, weights: FloatArray) -> FloatArray:
    """ParEGO's augmented Chebyshev scalarisation of losses normalised to [0, 1] per objective."""
    low, high = losses.min(0), losses.max(0)
    normalised = (losses - low) / np.where(high > low, high - low, 1.0)
    weighted = normalised * weights
    result: FloatArray = weighted.max(1) + CHEBYSHEV_RHO * weighted.sum(1)
    return result


def propose_parego(ctx: Context, settings: ParEGOSettings) -> Iterator[Assignment]:
    scored, losses = ctx.scored
    if len(scored) < max(settings.n_startup_trials, 2):
        yield from startup_points(ctx)
        return
    gp_settings = BayesianSettings(n_startup_trials=max(settings.n_startup_trials, 2), acquisition="ei")
    for draw in range(10_000):
        weights = ctx.rng("parego", draw).dirichlet(np.ones(losses.shape[1]))
        scalar = chebyshev(losses, weights)
        observations = [dataclasses.replace(o, loss=float(v)) for o, v in zip(scored, scalar, strict=True)]
        # The scalarised view shares the wave's bookkeeping (taken, accepted) with the caller's context.
        view = Context(ctx.spec, ctx.space, observations + ctx.pending, taken=ctx.taken, accepted=ctx.accepted)
        pick = next(propose_gp(view, gp_settings), None)
        if pick is None:
            return
        yield pick
