"""The planner's view of `kubetune.search`: the same pure functions behind the Engine protocol."""

from __future__ import annotations

from typing import Any

from kubetune.api import ParameterAssignment, TuningJobSpec
from kubetune.controller.planner import StopVerdict


class SearchEngine:
    """Suggestions and early-stopping verdicts from kubetune.search (imported lazily: optuna is heavy)."""

    def suggest(self, spec: TuningJobSpec, history: list[dict[str, Any]], n: int) -> list[ParameterAssignment]:
        from kubetune import search

        return search.suggest(spec, history, n)

    def stop(self, spec: TuningJobSpec, history: list[dict[str, Any]]) -> list[StopVerdict]:
        from kubetune import search

        return [
            StopVerdict(index=d.index, rule=d.rule, step=d.step, value=d.value, threshold=d.threshold)
            for d in search.stop_decisions(spec, history)
        ]
