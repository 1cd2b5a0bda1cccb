"""The planner's view of `kubetune.search`: the same pure functions behind the Engine protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubetune import search
from kubetune.api import ParameterAssignment, TuningJobSpec


class SearchEngine:
    """Suggestions and early-stopping decisions from kubetune.search (its heavy backends load on first use)."""

    def suggest(self, spec: TuningJobSpec, history: Sequence[Mapping[str, Any]], n: int) -> list[ParameterAssignment]:
        return search.suggest(spec, history, n)

    def stop(self, spec: TuningJobSpec, history: Sequence[Mapping[str, Any]]) -> list[search.StopDecision]:
        return search.stop_decisions(spec, history)
