"""CMA-ES (the `cmaes` library), replayed statelessly from the history.

The evolution path is rebuilt on every call: usable trials, in trial order,
form consecutive generations of `populationSize`; each full generation is told
to a fresh optimiser started at the centre of the unit cube with step
`sigma0` (default 1/6 of the range, as Optuna). An incomplete last generation
waits. When the optimiser converges it restarts with a doubled population
(IPOP) around a seeded random point. Numeric parameters (log ones in log
space, ints and discrete values snapped) are modelled; categorical parameters
are sampled uniformly, as Optuna's CmaEsSampler does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import numpy as np

from kubetune.api.models import CMAESSettings
from kubetune.search._basic import propose_random
from kubetune.search._context import Context
from kubetune.search._space import Assignment


def propose_cmaes(ctx: Context, settings: CMAESSettings) -> Iterator[Assignment]:
    import cmaes

    space = ctx.space
    numeric = [i for i, d in enumerate(space.dimensions) if d.is_numeric]
    usable = ctx.usable
    if not numeric or len(usable) < settings.n_startup_trials:
        yield from propose_random(ctx)
        return
    dims = max(len(numeric), 2)  # the library needs 2+ dimensions: pad with an ignored one
    sigma = settings.sigma0 if settings.sigma0 is not None else 1.0 / 6.0
    popsize = settings.population_size or 4 + math.floor(3 * math.log(dims))
    bounds = np.tile([0.0, 1.0], (dims, 1))

    def fresh(restart: int, size: int) -> cmaes.CMA:
        mean = np.full(dims, 0.5)
        if restart:
            mean = np.random.default_rng([ctx.seed, restart]).uniform(0.2, 0.8, dims)
        return cmaes.CMA(mean=mean, sigma=sigma, bounds=bounds, seed=ctx.seed, population_size=size)

    restart = 0
    optimiser = fresh(0, popsize)
    rows = np.full((len(usable), dims), 0.5)
    for row, observation in zip(rows, usable, strict=True):
        row[: len(numeric)] = space.encode(observation.parameters or {})[numeric]
    losses = [float(o.loss or 0.0) for o in usable]
    start = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while start + optimiser.population_size <= len(usable):
            end = start + optimiser.population_size
            optimiser.tell(list(zip(rows[start:end], losses[start:end], strict=True)))
            start = end
            if optimiser.should_stop():
                restart += 1
                optimiser = fresh(restart, optimiser.population_size * 2)
        optimiser.reseed_rng(ctx.seed_for("cmaes"))
        rng = ctx.rng("cmaes-categorical")
        while True:
            x = optimiser.ask()
            row = np.full(len(space), 0.5)
            row[numeric] = x[: len(numeric)]
            for i, dim in enumerate(space.dimensions):
                if not dim.is_numeric:
                    row[i] = float(rng.integers(0, len(dim.values)))
            yield space.decode(space.repair(row[None, :], rng)[0])
