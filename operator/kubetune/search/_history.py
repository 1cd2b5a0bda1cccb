"""Trial history: validated once, then read by every sampler and stopping rule.

A history entry is `{"parameters": {...}, "state": ..., "objective": float | None,
"intermediate": [[resource, value], ...], "metrics": {name: float}}`, in trial-index order
(`metrics`: a Succeeded trial's final metrics, where multi-objective samplers find the other
objectives' values). Structural
problems (not a mapping, missing `parameters`/`state`, unknown state, wrong
types) raise `SearchError` naming the entry. Values are judged, not rejected:

- the observation a model learns from is `loss`, the objective turned so that
  smaller is better. Succeeded trials give their objective; EarlyStopped trials
  their last finite intermediate value (Optuna treats pruned trials alike);
  Failed trials, Succeeded trials without an objective and NaN/inf objectives
  give none (they are "failed": ignored by models).
- parameters that are not a point of the current space (unknown names,
  out of bounds, a conditional child without its parent) make the entry
  unusable for models, but it still counts as tried.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kubetune.api.models import Goal, TrialPhase
from kubetune.search._errors import SearchError
from kubetune.search._space import Assignment, Key, Space

STATES = tuple(phase.value for phase in TrialPhase)
_OPTIONAL_KEYS = {"objective", "intermediate", "metrics"}


@dataclass(frozen=True, slots=True)
class Observation:
    """One history entry, validated and oriented for minimisation."""

    index: int
    state: TrialPhase
    raw_parameters: Mapping[str, object]
    parameters: Assignment | None  # canonical, or None if not a point of the space
    key: Key | None
    loss: float | None  # smaller is better; None when the trial gives no usable value
    curve: tuple[tuple[float, float], ...]  # (step, loss) by increasing step, last report per step wins
    metrics: Mapping[str, float] = field(default_factory=dict)  # a Succeeded trial's finite final metrics, as reported

    @property
    def pending(self) -> bool:
        """Suggested but not finished: models treat these as points whose value is still coming."""
        return self.state in (TrialPhase.PENDING, TrialPhase.RUNNING)

    @property
    def usable(self) -> bool:
        """A finite observation at a point of the space: what models learn from."""
        return self.loss is not None and self.parameters is not None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class FrozenEntry(Mapping[str, Any]):
    """A read-only history entry, for a trial whose entry never changes again (it finished).

    Being read-only is what lets a `History` keep its parse (see `SettledHistory`). Equal only to itself.
    """

    __slots__ = ("_data",)

    def __init__(self, entry: Mapping[str, Any]) -> None:
        self._data = {key: _read_only(value) for key, value in entry.items()}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    __eq__ = object.__eq__
    __hash__ = object.__hash__


def _read_only(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _read_only(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_read_only(v) for v in value)
    return value


# What an entry's Observation depends on besides the entry and its position: the space (None: parameters
# not checked) and the goal's sign.
_ParseContext = tuple[tuple[Any, ...] | None, float]


@dataclass(slots=True)
class _Parse:
    """A history's entries parsed in one context: the settled ones, and the frozen ones of the open part."""

    settled: list[Observation] = field(default_factory=list)  # position i: settled entry i
    settled_keys: set[Key] = field(default_factory=set)  # of those at points of the space
    frozen_open: dict[int, tuple[FrozenEntry, Observation]] = field(default_factory=dict)  # by position


class SettledHistory:
    """The finished start of a long study's history, grown only at its end, and the one parse cache of
    the search engine: a `History` over it has each settled entry, and each FrozenEntry of its open part,
    parsed once per space and goal, so a call costs the entries added since the last one, not the whole
    study.

    `entries[i]` is the history's position i; a caller appends an entry once the trial is final and
    every earlier trial is too (later entries go in the `open` part of a `History`).
    """

    __slots__ = ("entries", "_parses")

    def __init__(self) -> None:
        self.entries: list[FrozenEntry] = []
        self._parses: dict[_ParseContext, _Parse] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def append(self, entry: Mapping[str, Any]) -> None:
        self.entries.append(entry if isinstance(entry, FrozenEntry) else FrozenEntry(entry))

    def _parse(self, space: Space | None, sign: float) -> _Parse:
        """This context's parse, brought up to the settled entries (shared: callers copy before changing)."""
        context = (space.dimensions if space is not None else None, sign)
        if len(self._parses) > 4 and context not in self._parses:  # a spec edit: older spaces are not asked again
            self._parses.clear()
        parse = self._parses.setdefault(context, _Parse())
        for index in range(len(parse.settled), len(self.entries)):
            entry = self.entries[index]
            seen = parse.frozen_open.pop(index, None)  # parsed while it waited in the open part
            observation = seen[1] if seen is not None and seen[0] is entry else _parse_entry(space, sign, index, entry)
            parse.settled.append(observation)
            if observation.key is not None:
                parse.settled_keys.add(observation.key)
        return parse


class History(Sequence[Mapping[str, Any]]):
    """A history as a SettledHistory followed by the entries still open (running trials, and finished
    ones after the first running one): what `suggest` and `stop` read without walking the settled part."""

    __slots__ = ("settled", "open")

    def __init__(self, settled: SettledHistory, open_entries: Sequence[Mapping[str, Any]]) -> None:
        self.settled = settled
        self.open = list(open_entries)

    def __len__(self) -> int:
        return len(self.settled) + len(self.open)

    def __getitem__(self, position: Any) -> Any:
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        if position < 0:
            position += len(self)
        settled = len(self.settled)
        return self.settled.entries[position] if 0 <= position < settled else self.open[position - settled]


def parse_history(space: Space | None, goal: Goal | str, history: object) -> list[Observation]:
    """Validate `history` and orient its values (`space=None`: parameters are not checked)."""
    return parse_history_keys(space, goal, history)[0]


def parse_history_keys(space: Space | None, goal: Goal | str, history: object) -> tuple[list[Observation], set[Key]]:
    """`parse_history`, and the keys of its points of the space (a new set: the tried points).

    A `History` is parsed through its SettledHistory's cache; any other sequence entry by entry.
    """
    if not isinstance(history, Sequence) or isinstance(history, (str, bytes)):
        raise SearchError(f"history must be a list of trial entries, got {type(history).__name__}")
    sign = -1.0 if Goal(goal) == Goal.MAXIMIZE else 1.0
    if not isinstance(history, History):
        observations = [_parse_entry(space, sign, index, entry) for index, entry in enumerate(history)]
        return observations, {o.key for o in observations if o.key is not None}
    parse = history.settled._parse(space, sign)
    observations, keys = list(parse.settled), set(parse.settled_keys)
    frozen_open: dict[int, tuple[FrozenEntry, Observation]] = {}
    for index, entry in enumerate(history.open, len(observations)):
        seen = parse.frozen_open.get(index)
        if seen is not None and seen[0] is entry:
            observation = seen[1]
        else:
            observation = _parse_entry(space, sign, index, entry)
        if isinstance(entry, FrozenEntry):
            frozen_open[index] = (entry, observation)
        observations.append(observation)
        if observation.key is not None:
            keys.add(observation.key)
    parse.frozen_open = frozen_open  # only what this history still holds
    return observations, keys


def _parse_entry(space: Space | None, sign: float, index: int, entry: object) -> Observation:
    where = f"history[{index}]"
    if not isinstance(entry, Mapping):
        raise SearchError(f"{where}: expected a mapping, got {type(entry).__name__}")
    missing = [k for k in ("parameters", "state") if k not in entry]
    if missing:
        raise SearchError(f"{where}: missing {', '.join(missing)}")
    unknown = set(entry) - {"parameters", "state"} - _OPTIONAL_KEYS
    if unknown:
        raise SearchError(f"{where}: unknown key(s) {sorted(map(str, unknown))}")
    parameters = entry["parameters"]
    if not isinstance(parameters, Mapping):
        raise SearchError(f"{where}.parameters: expected a mapping, got {type(parameters).__name__}")
    for name, value in parameters.items():
        if not isinstance(name, str) or not (isinstance(value, str) or _number(value)):
            raise SearchError(f"{where}.parameters[{name!r}]: expected a number or string, got {value!r}")
    state_name = entry["state"]
    if state_name not in STATES:
        raise SearchError(f"{where}.state: unknown state {state_name!r} (expected one of {', '.join(STATES)})")
    state = TrialPhase(state_name)
    objective = entry.get("objective")
    if objective is not None and not _number(objective):
        raise SearchError(f"{where}.objective: expected a number or null, got {objective!r}")
    curve = _parse_curve(where, entry.get("intermediate"), sign)
    metrics = _parse_metrics(where, entry.get("metrics")) if state == TrialPhase.SUCCEEDED else {}

    loss: float | None = None
    if state == TrialPhase.SUCCEEDED and objective is not None:
        loss = sign * float(objective)
    elif state in (TrialPhase.EARLY_STOPPED, TrialPhase.CANCELLED):  # stopped part way: the curve so far
        finite = [value for _, value in curve if math.isfinite(value)]
        if finite:
            loss = finite[-1]
        elif objective is not None:
            loss = sign * float(objective)
    if loss is not None and not math.isfinite(loss):
        loss = None  # NaN or infinite: the trial counts as failed

    canonical = space.canonical(parameters) if space is not None else None
    return Observation(
        index=index,
        state=state,
        raw_parameters=parameters,
        parameters=canonical,
        key=space.key(canonical) if space is not None and canonical is not None else None,
        loss=loss,
        curve=curve,
        metrics=MappingProxyType(metrics),
    )


def _parse_metrics(where: str, metrics: Any) -> dict[str, float]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise SearchError(f"{where}.metrics: expected a mapping of metric name to number")
    parsed: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not _number(value):
            raise SearchError(f"{where}.metrics[{name!r}]: expected a number, got {value!r}")
        if math.isfinite(float(value)):
            parsed[name] = float(value)
    return parsed


def _parse_curve(where: str, intermediate: Any, sign: float) -> tuple[tuple[float, float], ...]:
    if intermediate is None:
        return ()
    if not isinstance(intermediate, Sequence) or isinstance(intermediate, (str, bytes)):
        raise SearchError(f"{where}.intermediate: expected a list of [resource, value] pairs")
    by_step: dict[float, float] = {}
    for position, pair in enumerate(intermediate):
        ok = (
            isinstance(pair, Sequence)
            and not isinstance(pair, (str, bytes))
            and len(pair) == 2
            and _number(pair[0])
            and _number(pair[1])
        )
        if not ok:
            raise SearchError(f"{where}.intermediate[{position}]: expected [resource, value], got {pair!r}")
        step = float(pair[0])
        if not math.isfinite(step):
            raise SearchError(f"{where}.intermediate[{position}]: resource must be finite, got {pair[0]!r}")
        by_step[step] = sign * float(pair[1])
    return tuple(sorted(by_step.items()))
