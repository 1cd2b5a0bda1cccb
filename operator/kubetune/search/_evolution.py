"""A steady-state genetic algorithm, rebuilt from the history on every call.

Population: the best `populationSize` usable trials (until that many exist,
suggestions are uniformly random). A child takes two parents by tournament
(`tournamentSize` random members, the best wins), crosses them uniformly with
probability `crossoverRate` (each parameter from either parent) and mutates
each parameter with probability `mutationRate`: numeric ones by a Gaussian
step of 0.1 in the unit encoding (so log-scaled ones move by a factor, ints
and discrete values by whole points), categorical ones by a new random value.

Conditions: the child is built parent-first. A parameter that is active for
the child but missing from the chosen parent comes from the other parent, or
is drawn at random when neither has it; parameters the child's parents
deactivate are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from kubetune.api.models import EvolutionSettings, ParameterValue
from kubetune.search._basic import propose_random
from kubetune.search._context import Context
from kubetune.search._history import Observation
from kubetune.search._space import Assignment, Dimension

MUTATION_SIGMA = 0.1


def propose_evolution(ctx: Context, settings: EvolutionSettings) -> Iterator[Assignment]:
    usable = ctx.usable
    if len(usable) < settings.population_size:
        yield from propose_random(ctx)
        return
    population = sorted(usable, key=lambda o: (o.loss, o.index))[: settings.population_size]
    rng = ctx.rng("evolution")
    space = ctx.space

    def tournament() -> Assignment:
        picks = rng.choice(len(population), size=min(settings.tournament_size, len(population)), replace=False)
        winner: Observation = population[int(min(picks))]  # sorted by loss: the smallest index wins
        return winner.parameters or {}

    while True:
        first, second = tournament(), tournament()
        crossover = rng.random() < settings.crossover_rate
        yield space.complete(_breeder(first, second, crossover, settings.mutation_rate, rng), rng)


def _breeder(
    first: Assignment, second: Assignment, crossover: bool, mutation_rate: float, rng: np.random.Generator
) -> Callable[[Dimension, Assignment], ParameterValue | None]:
    """Per-parameter choice for a child of `first` and `second` (None: draw at random)."""

    def choose(dim: Dimension, child: Assignment) -> ParameterValue | None:
        sources = (first, second) if (not crossover or rng.random() < 0.5) else (second, first)
        value = next((s[dim.name] for s in sources if dim.name in s), None)
        if value is None or rng.random() >= mutation_rate:
            return value
        if not dim.is_numeric:
            others = [v for v in dim.values if v != value] or list(dim.values)
            return others[int(rng.integers(0, len(others)))]
        u = dim.to_unit(value) + float(rng.normal(0.0, MUTATION_SIGMA))
        return dim.from_unit(float(np.clip(u, 0.0, 1.0)))

    return choose
