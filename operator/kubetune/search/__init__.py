"""The search engine: suggestions and early-stopping decisions as pure functions.

No Kubernetes here: the operator passes a TuningJob `spec` and the trial
history, and gets back parameter assignments or trials to stop. Nothing is
kept between calls (every call rebuilds its model from the history) and the
same inputs and seed give the same answer.

- `suggest(spec, history, n)`: up to n new assignments; fewer means the space is exhausted.
- `stop(spec, history)` / `stop_decisions(...)`: Running trials the early-stopping rule stops now.
- `SearchError`: bad input (a `ValueError`).
- `FrozenEntry(entry)`: a read-only history entry (a finished trial's): parsed once, however often passed.
- `History(settled, open)`: a long study's history as a `SettledHistory` (finished entries, grown at
  its end, parsed once) and the open entries; a call then costs the new entries, not the whole study.

Algorithms: random, grid, bayesian (own Gaussian process), tpe (Optuna),
cmaes (the `cmaes` library), evolution (own genetic algorithm), the
multi-objective nsga2 (own), motpe (Optuna) and parego (own GP on random
Chebyshev scalarisations), and auto (exhaustive for small finite spaces, then
GP, then TPE; parego then motpe with several objectives), one entry each in
`_engine.SAMPLERS`. Early-stopping rules: none, median, percentile, asha,
hyperband, one entry each in `_stopping.STOPPING_RULES`. Names, settings and
descriptions are declared in `kubetune.api.models` (`AlgorithmName`,
`EarlyStoppingRule`); CONTRIBUTING.md says how to add one.
"""

from kubetune.search._engine import suggest
from kubetune.search._errors import SearchError
from kubetune.search._history import FrozenEntry, History, SettledHistory
from kubetune.search._multi import non_dominated
from kubetune.search._stopping import StopDecision, stop, stop_decisions

__all__ = [
    "FrozenEntry", "History", "SearchError", "SettledHistory", "StopDecision", "non_dominated", "stop",
    "stop_decisions", "suggest",
]
