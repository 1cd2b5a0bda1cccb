"""Trial history: validated once, then read by every sampler and stopping rule.

A history entry is `{"parameters": {...}, "state": ..., "objective": float | None,
"intermediate": [[resource, value], ...]}`, in trial-index order. Structural
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

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from kubetune.api.models import Goal, TrialPhase
from kubetune.search._errors import SearchError
from kubetune.search._space import Assignment, Key, Space

STATES = tuple(phase.value for phase in TrialPhase)
_OPTIONAL_KEYS = {"objective", "intermediate"}


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

    Passed again and again (a long study's finished trials, on every wave), it is validated and
    parsed once per space, not on every call. Equal only to itself.
    """

    __slots__ = ("_data", "_parsed")

    def __init__(self, entry: Mapping[str, Any]) -> None:
        self._data = {key: _read_only(value) for key, value in entry.items()}
        # Its Observation per (space and goal, position in the history), made on first use: they go
        # with the entry (a SettledHistory keeps its own, so most entries never need this).
        self._parsed: dict[tuple[int, int], Observation] | None = None

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


class SettledHistory:
    """The finished start of a long study's history, grown only at its end: each entry is parsed once
    per space and goal, so a call costs the entries added since the last one, not the whole study.

    `entries[i]` is the history's position i; a caller appends an entry once the trial is final and
    every earlier trial is too (later entries go in the `open` part of a `History`).
    """

    __slots__ = ("entries", "_parsed")

    def __init__(self) -> None:
        self.entries: list[FrozenEntry] = []
        # Per context token: the entries' Observations so far and the keys of those at points of the space.
        self._parsed: dict[int, tuple[list[Observation], set[Key]]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def append(self, entry: Mapping[str, Any]) -> None:
        self.entries.append(entry if isinstance(entry, FrozenEntry) else FrozenEntry(entry))

    def parsed(self, space: Space | None, sign: float) -> tuple[list[Observation], set[Key]]:
        """The entries' Observations and tried keys (shared: callers copy before changing them)."""
        token = _context_token(space, sign)
        if len(self._parsed) > 4 and token not in self._parsed:  # a spec edit: older spaces are not asked again
            self._parsed.clear()
        observations, keys = self._parsed.setdefault(token, ([], set()))
        for index in range(len(observations), len(self.entries)):
            observation = _parse_entry(space, sign, index, self.entries[index])
            observations.append(observation)
            if observation.key is not None:
                keys.add(observation.key)
        return observations, keys


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


_contexts: dict[tuple[Any, float], int] = {}
_new_tokens = itertools.count()


def _context_token(space: Space | None, sign: float) -> int:
    """A small number per distinct (space, goal): cheaper to hash than the space on every entry."""
    context = (space.dimensions if space is not None else None, sign)
    token = _contexts.get(context)
    if token is None:
        if len(_contexts) >= 1024:  # tokens are never reused, so stale memo entries only miss
            _contexts.clear()
        token = _contexts[context] = next(_new_tokens)
    return token


def parse_history(space: Space | None, goal: Goal | str, history: object) -> list[Observation]:
    """Validate `history` and orient its values (`space=None`: parameters are not checked)."""
    return parse_history_keys(space, goal, history)[0]


def parse_history_keys(space: Space | None, goal: Goal | str, history: object) -> tuple[list[Observation], set[Key]]:
    """`parse_history`, and the keys of its points of the space (a new set: the tried points)."""
    if not isinstance(history, Sequence) or isinstance(history, (str, bytes)):
        raise SearchError(f"history must be a list of trial entries, got {type(history).__name__}")
    sign = -1.0 if Goal(goal) == Goal.MAXIMIZE else 1.0
    token = _context_token(space, sign)
    observations: list[Observation] = []
    keys: set[Key] = set()
    entries: Sequence[Any] = history
    if isinstance(history, History):  # the settled part is parsed already, but for its new entries
        settled, settled_keys = history.settled.parsed(space, sign)
        observations, keys, entries = list(settled), set(settled_keys), history.open
    for index, entry in enumerate(entries, len(observations)):
        if isinstance(entry, FrozenEntry):
            memo = entry._parsed if entry._parsed is not None else {}
            entry._parsed = memo
            if (token, index) not in memo:
                memo[(token, index)] = _parse_entry(space, sign, index, entry)
            observation = memo[(token, index)]
        else:
            observation = _parse_entry(space, sign, index, entry)
        observations.append(observation)
        if observation.key is not None:
            keys.add(observation.key)
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
    )


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
