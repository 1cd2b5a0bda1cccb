"""The search space: parameters as dimensions with a unit-cube encoding, conditions, finite grids.

Every sampler works in one encoding so the rules about types, bounds, steps
and conditions live here once:

- a numeric dimension maps to a unit coordinate u in [0, 1]. A continuous
  float is linear (or logarithmic with `log`) in u. Anything with finitely
  many points (int, float with `step`, discrete) splits [0, 1] into equal bins,
  one per point, so uniform u is uniform over the points; log-scaled ints are
  continuous in log(value +- 0.5) and then rounded, as Optuna does.
- a categorical dimension is the index of its value (samplers that need a
  distance use Hamming distance on it).
- a conditional dimension is active iff its parent is active and took one of
  `when.values`; inactive dimensions are absent from an assignment and encoded
  as `INACTIVE_UNIT` / `INACTIVE_INDEX`.

`tree_size` / `tree_point` enumerate a finite space (the grid, or every point
of an all-discrete space) without materialising it: conditions make the space
a forest, and a mixed-radix index walks it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from kubetune.api.models import Parameter, ParameterType, ParameterValue, TuningJobSpec
from kubetune.search._errors import SearchError

Assignment = dict[str, ParameterValue]
Key = tuple[tuple[str, ParameterValue], ...]
FloatArray = NDArray[np.float64]

INACTIVE_UNIT = 0.5
INACTIVE_INDEX = -1.0
# Optuna's tolerance for "value lies on the step grid".
_STEP_TOLERANCE = 1e-8


class Kind(Enum):
    CONTINUOUS = "continuous"  # float without step (linear or log)
    LOG_INT = "log_int"  # int with log: continuous in log space, rounded
    ORDINAL = "ordinal"  # finitely many ordered points: int, stepped float, discrete
    CATEGORICAL = "categorical"


def load_spec(spec: Mapping[str, Any] | TuningJobSpec) -> TuningJobSpec:
    """A validated spec from a manifest's `spec:` block (camelCase) or an existing model."""
    if isinstance(spec, TuningJobSpec):
        return spec
    if not isinstance(spec, Mapping):
        raise SearchError(f"spec must be a mapping or a TuningJobSpec, got {type(spec).__name__}")
    try:
        return TuningJobSpec.model_validate(dict(spec))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in error.errors())
        raise SearchError(f"invalid spec: {problems}") from None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Dimension:
    """One parameter of the space, with its encoding."""

    name: str
    type: ParameterType
    kind: Kind
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    step: float | None = None
    values: tuple[ParameterValue, ...] = ()
    explicit_step: bool = False
    parent: str | None = None
    parent_values: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_parameter(cls, parameter: Parameter) -> Dimension:
        ptype = ParameterType(parameter.type)
        parent = parameter.when.parameter if parameter.when else None
        parent_values = frozenset(parameter.when.values) if parameter.when else frozenset()
        common: dict[str, Any] = {"name": parameter.name, "type": ptype, "parent": parent}
        common["parent_values"] = parent_values
        if ptype in (ParameterType.CATEGORICAL, ParameterType.DISCRETE):
            kind = Kind.CATEGORICAL if ptype == ParameterType.CATEGORICAL else Kind.ORDINAL
            return cls(kind=kind, values=tuple(parameter.values or ()), **common)
        assert parameter.min is not None and parameter.max is not None  # the model guarantees it
        low, high = float(parameter.min), float(parameter.max)
        step = float(parameter.step) if parameter.step is not None else None
        if ptype == ParameterType.INT:
            kind = Kind.LOG_INT if parameter.log else Kind.ORDINAL
            step = step if step is not None else 1.0
        else:
            kind = Kind.ORDINAL if step is not None else Kind.CONTINUOUS
        if step is not None:  # the last point on the grid; `max` itself only if it lies on it
            high = _last_step_point(low, high, step)
        return cls(
            kind=kind,
            low=low,
            high=high,
            log=parameter.log,
            step=step,
            explicit_step=parameter.step is not None,
            **common,
        )

    # ------------------------------------------------------------------ points

    @cached_property
    def size(self) -> int | None:
        """Number of distinct values, or None for a continuous float."""
        if self.kind == Kind.CONTINUOUS:
            return None
        if self.values:
            return len(self.values)
        if self.kind == Kind.LOG_INT:
            return int(self.high - self.low) + 1
        assert self.step is not None
        return int(round((self.high - self.low) / self.step)) + 1

    @property
    def is_numeric(self) -> bool:
        return self.kind != Kind.CATEGORICAL

    def point(self, k: int) -> ParameterValue:
        """The k-th value of a finite dimension, in increasing order."""
        if self.values:
            return self.values[k]
        if self.type == ParameterType.INT:
            return int(self.low) + k * int(self.step or 1)
        assert self.step is not None
        # Decimal arithmetic so that 0.1 + 3 * 0.1 prints as 0.4.
        return float(Decimal(repr(self.low)) + k * Decimal(repr(self.step)))

    def index_of(self, value: ParameterValue) -> int:
        """Position of a contained value among the points (finite dimensions)."""
        if self.values:
            if self.type == ParameterType.CATEGORICAL:
                return self.values.index(str(value))
            return [float(v) for v in self.values].index(float(value))
        step = self.step if self.step is not None else 1.0
        return int(round((float(value) - self.low) / step))

    def grid(self, points_per_dimension: int) -> Sequence[ParameterValue]:
        """Grid values: the list or every step point if given, else evenly spaced (log scale if `log`)."""
        if self.values or self.explicit_step:
            return _LazyPoints(self)
        if self.type == ParameterType.INT and (self.size or 0) <= points_per_dimension:
            return _LazyPoints(self)
        lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        raw = [lo + (hi - lo) * i / (points_per_dimension - 1) for i in range(points_per_dimension)]
        # 12 significant digits: 0.1 rather than 0.30000000000000004 / 3, still strictly increasing.
        values = [float(f"{math.exp(v) if self.log else v:.12g}") for v in raw]
        values[0], values[-1] = self.low, self.high
        if self.type == ParameterType.INT:
            return list(dict.fromkeys(int(round(v)) for v in values))
        return [float(v) for v in values]

    # ------------------------------------------------------------------ encoding

    def _log_bounds(self) -> tuple[float, float]:
        if self.kind == Kind.LOG_INT:
            return math.log(self.low - 0.5), math.log(self.high + 0.5)
        return math.log(self.low), math.log(self.high)

    def from_unit(self, u: float) -> ParameterValue:
        """The value at unit coordinate u (categorical: u picks a bin too)."""
        u = min(max(float(u), 0.0), 1.0)
        if self.kind == Kind.CONTINUOUS:
            if self.log:
                lo, hi = self._log_bounds()
                value = math.exp(lo + u * (hi - lo))
            else:
                value = self.low + u * (self.high - self.low)
            return min(max(value, self.low), self.high)
        if self.kind == Kind.LOG_INT:
            lo, hi = self._log_bounds()
            return int(min(max(round(math.exp(lo + u * (hi - lo))), self.low), self.high))
        size = self.size or 1
        return self.point(min(int(u * size), size - 1))

    def to_unit(self, value: ParameterValue) -> float:
        """Unit coordinate of a contained value (bin centre for finite dimensions)."""
        if self.kind == Kind.CONTINUOUS:
            if self.log:
                lo, hi = self._log_bounds()
                return (math.log(float(value)) - lo) / (hi - lo)
            return (float(value) - self.low) / (self.high - self.low)
        if self.kind == Kind.LOG_INT:
            lo, hi = self._log_bounds()
            return (math.log(float(value)) - lo) / (hi - lo)
        size = self.size or 1
        return (self.index_of(value) + 0.5) / size

    def snap_units(self, u: FloatArray) -> FloatArray:
        """Vectorised `to_unit(from_unit(u))`: move coordinates onto representable values."""
        u = np.clip(u, 0.0, 1.0)
        if self.kind == Kind.CONTINUOUS:
            return u
        if self.kind == Kind.LOG_INT:
            lo, hi = self._log_bounds()
            values = np.clip(np.round(np.exp(lo + u * (hi - lo))), self.low, self.high)
            return (np.log(values) - lo) / (hi - lo)
        size = self.size or 1
        k = np.minimum(np.floor(u * size), size - 1)
        return (k + 0.5) / size

    # ------------------------------------------------------------------ validation

    def canonical(self, value: object) -> ParameterValue | None:
        """The value in its canonical type if this dimension contains it, else None."""
        if self.type == ParameterType.CATEGORICAL:
            return value if isinstance(value, str) and value in self.values else None
        if not _is_number(value):
            return None
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            return None
        if self.type == ParameterType.DISCRETE:
            for candidate in self.values:
                if float(candidate) == number:
                    return candidate
            return None
        tolerance = 1e-12 * max(1.0, abs(self.low), abs(self.high))
        if number < self.low - tolerance or number > self.high + tolerance:
            return None
        if self.step is not None:
            k = (number - self.low) / self.step
            if abs(k - round(k)) > _STEP_TOLERANCE:
                return None
        if self.type == ParameterType.INT:
            return int(round(number)) if number == round(number) else None
        return number


def _last_step_point(low: float, high: float, step: float) -> float:
    """The largest low + k * step that does not exceed high, in exact decimal arithmetic."""
    k = math.floor((high - low) / step + _STEP_TOLERANCE)
    while k > 0 and Decimal(repr(low)) + k * Decimal(repr(step)) > Decimal(repr(high)):
        k -= 1
    return float(Decimal(repr(low)) + k * Decimal(repr(step)))


def _topological(parameters: Sequence[Parameter]) -> list[Parameter]:
    """Parents before children, spec order otherwise (the model rejects cycles)."""
    placed: list[Parameter] = []
    names: set[str] = set()
    pending = list(parameters)
    while pending:
        rest = []
        for parameter in pending:
            if parameter.when is None or parameter.when.parameter in names:
                placed.append(parameter)
                names.add(parameter.name)
            else:
                rest.append(parameter)
        if len(rest) == len(pending):  # unreachable for a validated spec
            raise SearchError("parameters: conditions do not form a forest")
        pending = rest
    return placed


class Space:
    """The parameters of a spec in dependency order, with helpers every sampler shares."""

    def __init__(self, dimensions: Sequence[Dimension]) -> None:
        self.dimensions: tuple[Dimension, ...] = tuple(dimensions)
        self.by_name = {d.name: d for d in self.dimensions}
        self.children: dict[str, list[Dimension]] = {}
        for dim in self.dimensions:
            if dim.parent is not None:
                self.children.setdefault(dim.parent, []).append(dim)
        self.roots = [d for d in self.dimensions if d.parent is None]
        self.position = {d.name: i for i, d in enumerate(self.dimensions)}
        self.categorical_mask = np.array([not d.is_numeric for d in self.dimensions], dtype=bool)

    @classmethod
    def from_spec(cls, spec: TuningJobSpec) -> Space:
        return cls([Dimension.from_parameter(p) for p in _topological(spec.parameters)])

    def __len__(self) -> int:
        return len(self.dimensions)

    @property
    def is_conditional(self) -> bool:
        return any(d.parent is not None for d in self.dimensions)

    def is_active(self, dim: Dimension, assignment: Mapping[str, ParameterValue]) -> bool:
        if dim.parent is None:
            return True
        parent_value = assignment.get(dim.parent)
        return parent_value is not None and str(parent_value) in dim.parent_values

    # ------------------------------------------------------------------ assignments

    def key(self, assignment: Mapping[str, ParameterValue]) -> Key:
        """Identity of an assignment for duplicate detection (dimension order, canonical values)."""
        return tuple((d.name, assignment[d.name]) for d in self.dimensions if d.name in assignment)

    def canonical(self, parameters: Mapping[str, object]) -> Assignment | None:
        """The canonical assignment if `parameters` is a point of this space, else None.

        Every active parameter must be present and valid; inactive or unknown
        names make it a point of some other space.
        """
        result: Assignment = {}
        for dim in self.dimensions:
            if not self.is_active(dim, result):
                if dim.name in parameters:
                    return None
                continue
            if dim.name not in parameters:
                return None
            value = dim.canonical(parameters[dim.name])
            if value is None:
                return None
            result[dim.name] = value
        if len(result) != len(parameters):
            return None
        return result

    def sample(self, rng: np.random.Generator) -> Assignment:
        """A uniformly random assignment (per dimension, in its own scale), conditions respected."""
        result: Assignment = {}
        for dim in self.dimensions:
            if self.is_active(dim, result):
                result[dim.name] = dim.from_unit(float(rng.random()))
        return result

    def complete(
        self,
        choose: Callable[[Dimension, Assignment], ParameterValue | None],
        rng: np.random.Generator,
    ) -> Assignment:
        """Build an assignment dimension by dimension; `choose` may return None for a random value."""
        result: Assignment = {}
        for dim in self.dimensions:
            if not self.is_active(dim, result):
                continue
            value = choose(dim, result)
            result[dim.name] = dim.from_unit(float(rng.random())) if value is None else value
        return result

    # ------------------------------------------------------------------ vector encoding

    def encode(self, assignment: Mapping[str, ParameterValue]) -> FloatArray:
        """One row: unit coordinates for numeric dimensions, value index for categorical ones."""
        row = np.empty(len(self.dimensions))
        for i, dim in enumerate(self.dimensions):
            if dim.name not in assignment:
                row[i] = INACTIVE_INDEX if not dim.is_numeric else INACTIVE_UNIT
            elif dim.is_numeric:
                row[i] = dim.to_unit(assignment[dim.name])
            else:
                row[i] = float(dim.index_of(assignment[dim.name]))
        return row

    def decode(self, row: FloatArray) -> Assignment:
        result: Assignment = {}
        for i, dim in enumerate(self.dimensions):
            if not self.is_active(dim, result):
                continue
            if dim.is_numeric:
                result[dim.name] = dim.from_unit(float(row[i]))
            else:
                result[dim.name] = dim.values[int(row[i])]
        return result

    def random_rows(self, rng: np.random.Generator, count: int) -> FloatArray:
        """`count` random encoded rows (repaired: snapped, conditions applied)."""
        rows = rng.random((count, len(self.dimensions)))
        for i, dim in enumerate(self.dimensions):
            if not dim.is_numeric:
                rows[:, i] = np.floor(rows[:, i] * len(dim.values))
        return self.repair(rows, rng)

    def repair(self, rows: FloatArray, rng: np.random.Generator) -> FloatArray:
        """Snap numeric coordinates to representable values and apply conditions, in place."""
        for i, dim in enumerate(self.dimensions):
            if dim.is_numeric:
                rows[:, i] = dim.snap_units(rows[:, i])
            else:
                column = rows[:, i]
                invalid = (column < 0) | (column >= len(dim.values))
                if invalid.any():  # a child that just became active gets a random value
                    column[invalid] = rng.integers(0, len(dim.values), int(invalid.sum()))
            if dim.parent is not None:
                parent = self.by_name[dim.parent]
                j = self.position[dim.parent]
                allowed = np.array([str(v) in dim.parent_values for v in parent.values])
                parent_column = rows[:, j]
                active = parent_column >= 0
                active[active] = allowed[parent_column[active].astype(int)]
                rows[~active, i] = INACTIVE_UNIT if dim.is_numeric else INACTIVE_INDEX
        return rows

    # ------------------------------------------------------------------ finite enumeration

    def tree_size(self, points: Callable[[Dimension], Sequence[ParameterValue]]) -> int:
        """Number of assignments when each dimension takes `points(dim)` (conditions respected)."""
        return _product(self._subtree_size(d, points) for d in self.roots)

    def _subtree_size(self, dim: Dimension, points: Callable[[Dimension], Sequence[ParameterValue]]) -> int:
        values = points(dim)
        children = self.children.get(dim.name)
        if not children:
            return len(values)
        return sum(self._block_size(dim, value, points) for value in values)

    def _block_size(
        self, dim: Dimension, value: ParameterValue, points: Callable[[Dimension], Sequence[ParameterValue]]
    ) -> int:
        active = [c for c in self.children.get(dim.name, []) if str(value) in c.parent_values]
        return _product(self._subtree_size(c, points) for c in active)

    def tree_point(self, index: int, points: Callable[[Dimension], Sequence[ParameterValue]]) -> Assignment:
        """The `index`-th assignment of the enumeration (first dimension varies slowest)."""
        result: Assignment = {}
        self._decode_list(self.roots, index, points, result)
        return result

    def _decode_list(
        self,
        dims: Sequence[Dimension],
        index: int,
        points: Callable[[Dimension], Sequence[ParameterValue]],
        result: Assignment,
    ) -> None:
        sizes = [self._subtree_size(d, points) for d in dims]
        digits = []
        for size in reversed(sizes):
            digits.append(index % size)
            index //= size
        for dim, digit in zip(dims, reversed(digits), strict=True):
            self._decode_subtree(dim, digit, points, result)

    def _decode_subtree(
        self,
        dim: Dimension,
        index: int,
        points: Callable[[Dimension], Sequence[ParameterValue]],
        result: Assignment,
    ) -> None:
        values = points(dim)
        if dim.name not in self.children:
            result[dim.name] = values[index]
            return
        for value in values:
            block = self._block_size(dim, value, points)
            if index < block:
                result[dim.name] = value
                active = [c for c in self.children[dim.name] if str(value) in c.parent_values]
                self._decode_list(active, index, points, result)
                return
            index -= block
        raise IndexError(index)  # pragma: no cover - callers stay below tree_size

    def natural_points(self, dim: Dimension) -> Sequence[ParameterValue]:
        """Every value of a finite dimension (for exhaustion checks)."""
        return _LazyPoints(dim)

    @cached_property
    def size(self) -> int | None:
        """Number of distinct assignments, or None when some float is continuous."""
        if any(d.size is None for d in self.dimensions):
            return None
        return self.tree_size(self.natural_points)


class _LazyPoints(Sequence[ParameterValue]):
    """The points of a finite dimension without building a list (ints can span billions)."""

    def __init__(self, dim: Dimension) -> None:
        self._dim = dim

    def __len__(self) -> int:
        return self._dim.size or 0

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):  # pragma: no cover - not used
            return [self._dim.point(i) for i in range(len(self))[k]]
        return self._dim.point(int(k))

    def __iter__(self) -> Iterator[ParameterValue]:
        return (self._dim.point(k) for k in range(len(self)))


def _product(numbers: Iterator[int] | Sequence[int]) -> int:
    result = 1
    for number in numbers:
        result *= number
    return result


def permuted(total: int, seed: int) -> Iterator[int]:
    """0..total-1 in a seeded, well-spread order without materialising it.

    An affine bijection j -> (a*j + b) mod total with a near total/golden-ratio
    and coprime to total: consecutive picks land far apart in the enumeration.
    """
    if total <= 0:
        return iter(())
    a = max(1, int(round(total * 0.6180339887498949)))
    while math.gcd(a, total) != 1:
        a += 1
    b = seed % total
    return ((a * j + b) % total for j in range(total))
