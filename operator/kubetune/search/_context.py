"""What a sampler sees: the space, the validated history, seeds, and the wave being built."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from kubetune.api.models import TuningJobSpec
from kubetune.search._history import Observation
from kubetune.search._space import Assignment, Key, Space


def _salt(part: int | str) -> int:
    return zlib.crc32(part.encode()) if isinstance(part, str) else int(part) & 0xFFFFFFFF


@dataclass
class Context:
    """Inputs of one `suggest` call. Samplers read it; the wave filler updates `taken`/`accepted`."""

    spec: TuningJobSpec
    space: Space
    observations: list[Observation]
    taken: set[Key] = field(default_factory=set)  # tried points (the caller may pass them); grows with the wave
    accepted: list[Assignment] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.taken:  # empty also when passed in: then no observation has a key either
            self.taken.update(o.key for o in self.observations if o.key is not None)

    @property
    def seed(self) -> int:
        return self.spec.algorithm.seed or 0

    def seed_for(self, *parts: int | str) -> int:
        """A 32-bit seed from the job's seed, the history length and `parts`.

        Including the history length makes every call draw fresh numbers while
        staying a pure function of (spec, history).
        """
        words = [self.seed, len(self.observations), *(_salt(p) for p in parts)]
        return int(np.random.SeedSequence(words).generate_state(1)[0])

    def rng(self, *parts: int | str) -> np.random.Generator:
        return np.random.default_rng(self.seed_for(*parts))

    @cached_property
    def usable(self) -> list[Observation]:
        """Finished trials with a finite value at a point of the space, in trial order."""
        return [o for o in self.observations if o.usable]

    @cached_property
    def pending(self) -> list[Observation]:
        """Pending or Running trials at points of the space (their values are still coming)."""
        return [o for o in self.observations if o.pending and o.parameters is not None]

    @cached_property
    def scored(self) -> tuple[list[Observation], np.ndarray]:
        """Usable trials with a finite value of every objective, and those values as losses (one row each,
        one column per objective in spec order, `sign * value`: smaller is better). A single objective's
        column is `loss`; the others come from the trial's final metrics."""
        objectives = self.spec.objective_list
        primary = self.spec.primary_objective
        chosen: list[Observation] = []
        rows: list[list[float]] = []
        for o in self.usable:
            row: list[float] = []
            for objective in objectives:
                if objective is primary:
                    row.append(float(o.loss))  # type: ignore[arg-type]  # usable: loss is set
                elif objective.metric in o.metrics:
                    row.append(objective.sign * o.metrics[objective.metric])
                else:
                    break
            else:
                chosen.append(o)
                rows.append(row)
        return chosen, np.array(rows, dtype=float).reshape(len(rows), len(objectives))

    def in_flight(self) -> list[Assignment]:
        """Points whose values are unknown: pending history plus this wave so far."""
        return [o.parameters for o in self.pending if o.parameters is not None] + list(self.accepted)
