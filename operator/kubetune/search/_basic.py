"""Random search and grid search (also the finite-space enumeration every sampler falls back on)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import count

import numpy as np

from kubetune.api.models import GridSettings, ParameterValue
from kubetune.search._context import Context
from kubetune.search._space import Assignment, Dimension, permuted


def propose_random(ctx: Context, _settings: None = None) -> Iterator[Assignment]:
    """Uniform samples; draw k of a call uses seed (job seed, history length + k).

    So trial i gets the same point whatever the wave sizes were.
    """
    for k in count():
        rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, len(ctx.observations) + k]))
        yield ctx.space.sample(rng)


def enumerate_untried(ctx: Context, points: Callable[[Dimension], Sequence[ParameterValue]]) -> Iterator[Assignment]:
    """Every assignment on `points`, in a seeded spread order, skipping ones already tried.

    Finite: stops when the enumeration is exhausted. The order depends on the
    job's seed only, so successive calls walk the same sequence.
    """
    total = ctx.space.tree_size(points)
    for index in permuted(total, ctx.seed):
        assignment = ctx.space.tree_point(index, points)
        if ctx.space.key(assignment) not in ctx.taken:
            yield assignment


def propose_grid(ctx: Context, settings: GridSettings) -> Iterator[Assignment]:
    """Grid search: categorical/discrete values, step points, or `pointsPerDimension` per numeric axis."""
    per_dimension = settings.points_per_dimension
    cache: dict[str, Sequence[ParameterValue]] = {}

    def points(dim: Dimension) -> Sequence[ParameterValue]:
        if dim.name not in cache:
            cache[dim.name] = dim.grid(per_dimension)
        return cache[dim.name]

    return enumerate_untried(ctx, points)


def propose_exhaustive(ctx: Context) -> Iterator[Assignment]:
    """Every point of a finite space (what `auto` does when the budget covers the space)."""
    return enumerate_untried(ctx, ctx.space.natural_points)
