"""Search-quality and latency benchmark of kubetune.search against the usual tuners.

    python benchmarks/search_benchmark.py            # full run (see SEARCH.md), < 30 min on 2 cores
    python benchmarks/search_benchmark.py --quick    # a CI-sized subset, < 3 min

Every algorithm gets the same problems, budgets and seeds. Problems are
synthetic functions and small scikit-learn tuning problems on bundled datasets
(no download). Score per run, bayesmark-style: 100 * (1 - loss) with
loss = (best - f*) / (median random - f*) clipped to [-1, 1], where f* is the
known optimum or the best value any run found, and "median random" is the
median final best of the random-search runs. Per problem the median over
seeds is reported; "overall" is the mean of the per-problem medians.

Writes benchmarks/out/search_benchmark.json (raw results, git-ignored), the plot
benchmarks/search_benchmark.png, and prints Markdown tables. scikit-learn
evaluations are cached in benchmarks/out/ (git-ignored) so reruns are fast.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE_DIR = HERE / "out"  # git-ignored

Params = dict[str, Any]


# ============================================================================ problems


@dataclass
class Problem:
    name: str
    parameters: list[dict[str, Any]]  # kubetune spec format
    function: Callable[[Params], float]
    optimum: float | None = None
    cached: bool = False  # expensive: memoise evaluations on disk


def _branin(p: Params) -> float:
    x, y = p["x"], p["y"]
    return (
        (y - 5.1 / (4 * math.pi**2) * x * x + 5 / math.pi * x - 6) ** 2
        + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x)
        + 10
    )


_H_ALPHA = [1.0, 1.2, 3.0, 3.2]
_H_A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
_H_P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]


def _hartmann6(p: Params) -> float:
    x = [p[f"x{i}"] for i in range(6)]
    return -sum(
        a * math.exp(-sum(_H_A[i][j] * (x[j] - _H_P[i][j]) ** 2 for j in range(6))) for i, a in enumerate(_H_ALPHA)
    )


def _styblinski_tang(p: Params) -> float:
    xs = [2.5 * math.log10(p["a"]), p["x1"], p["x2"], p["x3"]]
    return sum(x**4 - 16 * x**2 + 5 * x for x in xs) / 2


def _rosenbrock(p: Params) -> float:
    xs = [p["x0"], p["x1"], p["x2"], math.log10(p["b"])]
    return sum(100 * (xs[i + 1] - xs[i] ** 2) ** 2 + (1 - xs[i]) ** 2 for i in range(3))


def _mixed(p: Params) -> float:
    x, y = p["x"], math.log10(p["y"])
    base = (x - 0.7) ** 2 + 0.5 * (y - 0.5) ** 2 + 0.1 * (1 - math.cos(8 * math.pi * (x - 0.7)))
    kernel = p["kernel"]
    if kernel == "rbf":
        base += 0.3 * math.log10(p["gamma"]) ** 2
    elif kernel == "poly":
        base += 0.1 * (p["degree"] - 3) ** 2 + 0.05
    else:
        base += 0.2
    return base + {"a": 0.3, "b": 0.0, "c": 0.15, "d": 0.5}[p["color"]]


def _cv(estimator: Any, dataset: str, scoring: str) -> float:
    from sklearn import datasets
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

    loader = {
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "diabetes": datasets.load_diabetes,
    }[dataset]
    x, y = loader(return_X_y=True)
    classify = dataset != "diabetes"
    cv = StratifiedKFold(3, shuffle=True, random_state=0) if classify else KFold(3, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cross_val_score(estimator, x, y, cv=cv, scoring=scoring).mean())


def _svm(p: Params) -> float:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    model = make_pipeline(StandardScaler(), SVC(C=p["c"], gamma=p["gamma"]))
    return 1.0 - _cv(model, "breast_cancer", "roc_auc")


def _random_forest(p: Params) -> float:
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(
        n_estimators=p["n_estimators"],
        max_depth=p["max_depth"],
        max_features=p["max_features"],
        min_samples_leaf=p["min_samples_leaf"],
        criterion=p["criterion"],
        random_state=0,
        n_jobs=1,
    )
    return -_cv(model, "wine", "neg_log_loss")


def _mlp(p: Params) -> float:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(),
        MLPClassifier(
            (p["hidden"],),
            activation=p["activation"],
            alpha=p["alpha"],
            learning_rate_init=p["lr"],
            batch_size=p["batch_size"],
            max_iter=20,
            random_state=0,
        ),
    )
    return -_cv(model, "wine", "neg_log_loss")


def _elastic_net(p: Params) -> float:
    from sklearn.linear_model import ElasticNet

    return (
        -_cv(ElasticNet(alpha=p["alpha"], l1_ratio=p["l1_ratio"], max_iter=5000), "diabetes", "neg_mean_squared_error")
        / 1000.0
    )


def _float(name: str, low: float, high: float, log: bool = False, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "float", "min": low, "max": high, "log": log, **extra}


def _int(name: str, low: int, high: int, log: bool = False, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "int", "min": low, "max": high, "log": log, **extra}


def _cat(name: str, values: list[Any], kind: str = "categorical", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "values": values, **extra}


PROBLEMS = [
    Problem("branin", [_float("x", -5, 10), _float("y", 0, 15)], _branin, 0.397887),
    Problem("hartmann6", [_float(f"x{i}", 0, 1) for i in range(6)], _hartmann6, -3.32237),
    Problem(
        "styblinski_tang4_log",
        [_float("a", 0.01, 100, log=True), *(_float(f"x{i}", -5, 5) for i in (1, 2, 3))],
        _styblinski_tang,
        -39.16617 * 4,
    ),
    Problem(
        "rosenbrock4_log",
        [*(_float(f"x{i}", -2, 2) for i in range(3)), _float("b", 0.01, 100, log=True)],
        _rosenbrock,
        0.0,
    ),
    Problem(
        "mixed_conditional",
        [
            _cat("kernel", ["linear", "poly", "rbf"]),
            _float("x", 0, 1),
            _float("y", 1e-3, 10, log=True),
            _int("degree", 1, 6, when={"parameter": "kernel", "values": ["poly"]}),
            _float("gamma", 0.01, 10, log=True, when={"parameter": "kernel", "values": ["rbf"]}),
            _cat("color", ["a", "b", "c", "d"]),
        ],
        _mixed,
        0.0,
    ),
    Problem(
        "svm_breast_cancer", [_float("c", 1e-3, 1e3, log=True), _float("gamma", 1e-5, 10, log=True)], _svm, cached=True
    ),
    Problem(
        "rf_wine",
        [
            _int("n_estimators", 5, 30, log=True),
            _int("max_depth", 1, 12),
            _float("max_features", 0.1, 1.0),
            _int("min_samples_leaf", 1, 20),
            _cat("criterion", ["gini", "entropy"]),
        ],
        _random_forest,
        cached=True,
    ),
    Problem(
        "mlp_wine",
        [
            _int("hidden", 4, 64, log=True),
            _float("alpha", 1e-6, 1e-1, log=True),
            _float("lr", 1e-4, 1e-1, log=True),
            _cat("activation", ["relu", "tanh"]),
            _cat("batch_size", [32, 64, 128, 256], kind="discrete"),
        ],
        _mlp,
        cached=True,
    ),
    Problem(
        "enet_diabetes",
        [_float("alpha", 1e-4, 10, log=True), _float("l1_ratio", 0.0, 1.0)],
        _elastic_net,
        cached=True,
    ),
]
PROBLEM_BY_NAME = {p.name: p for p in PROBLEMS}


def active_only(parameters: list[dict[str, Any]], values: Params) -> Params:
    """Drop conditional parameters whose parent does not enable them (for samplers without conditions)."""
    result: Params = {}
    for parameter in parameters:  # parents precede children in every problem above
        when = parameter.get("when")
        if when is None or (when["parameter"] in result and str(result[when["parameter"]]) in when["values"]):
            result[parameter["name"]] = values[parameter["name"]]
    return result


class Evaluator:
    """Counts, times and (for sklearn problems) memoises evaluations."""

    def __init__(self, problem: Problem, cache: dict[str, float]) -> None:
        self.problem = problem
        self.cache = cache
        self.values: list[float] = []
        self.seconds = 0.0  # time spent evaluating: the rest of a run is the sampler's

    def __call__(self, params: Params) -> float:
        started = time.perf_counter()
        try:
            return self._evaluate(params)
        finally:
            self.seconds += time.perf_counter() - started

    def _evaluate(self, params: Params) -> float:
        params = active_only(self.problem.parameters, params)
        key = self.problem.name + json.dumps(params, sort_keys=True)
        if self.problem.cached and key in self.cache:
            value = self.cache[key]
        else:
            value = float(self.problem.function(params))
            if self.problem.cached:
                self.cache[key] = value
        self.values.append(value)
        return value


# ============================================================================ algorithms


Runner = Callable[[Problem, int, int, Evaluator], None]


def _spec(problem: Problem, algorithm: str, seed: int, budget: int) -> dict[str, Any]:
    return {
        "objective": {"metric": "loss", "goal": "minimize"},
        "parameters": problem.parameters,
        "algorithm": {"name": algorithm, "seed": seed},
        "budget": {"maxTrials": budget, "parallelism": 1},
        "trialTemplate": {"template": {"spec": {"containers": [{"name": "trial", "image": "none"}]}}},
    }


def run_ours(algorithm: str, wave: int) -> Runner:
    def run(problem: Problem, seed: int, budget: int, evaluate: Evaluator) -> None:
        from kubetune.search import suggest

        spec = _spec(problem, algorithm, seed, budget)
        history: list[dict[str, Any]] = []
        while len(history) < budget:
            batch = suggest(spec, history, min(wave, budget - len(history)))
            if not batch:
                break
            for params in batch:
                history.append({"parameters": params, "state": "Succeeded", "objective": evaluate(params)})

    return run


def _optuna_objective(problem: Problem, evaluate: Evaluator) -> Callable[[Any], float]:
    def objective(trial: Any) -> float:
        values: Params = {}
        for p in problem.parameters:
            when = p.get("when")
            if when is not None and str(values.get(when["parameter"])) not in when["values"]:
                continue
            if p["type"] == "float":
                values[p["name"]] = trial.suggest_float(p["name"], p["min"], p["max"], log=p.get("log", False))
            elif p["type"] == "int":
                values[p["name"]] = trial.suggest_int(p["name"], p["min"], p["max"], log=p.get("log", False))
            else:
                values[p["name"]] = trial.suggest_categorical(p["name"], p["values"])
        return evaluate(values)

    return objective


def run_optuna(kind: str) -> Runner:
    def run(problem: Problem, seed: int, budget: int, evaluate: Evaluator) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        sampler = {
            "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
            "gp": lambda: optuna.samplers.GPSampler(seed=seed, deterministic_objective=True),
            "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
            "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        }[kind]()
        study = optuna.create_study(sampler=sampler)
        study.optimize(_optuna_objective(problem, evaluate), n_trials=budget)

    return run


def run_hyperopt(problem: Problem, seed: int, budget: int, evaluate: Evaluator) -> None:
    from hyperopt import Trials, fmin, hp, tpe

    space: dict[str, Any] = {}
    for p in problem.parameters:
        name = p["name"]
        if p["type"] == "float":
            space[name] = (
                hp.loguniform(name, math.log(p["min"]), math.log(p["max"]))
                if p.get("log")
                else hp.uniform(name, p["min"], p["max"])
            )
        elif p["type"] == "int":
            space[name] = (
                hp.qloguniform(name, math.log(p["min"] - 0.5), math.log(p["max"] + 0.5), 1)
                if p.get("log")
                else hp.quniform(name, p["min"] - 0.5, p["max"] + 0.5, 1)
            )
        else:
            space[name] = hp.choice(name, p["values"])
    ints = {p["name"]: (p["min"], p["max"]) for p in problem.parameters if p["type"] == "int"}

    def objective(values: Params) -> float:
        values = dict(values)
        for name, (low, high) in ints.items():
            values[name] = int(min(max(round(values[name]), low), high))
        return evaluate(values)

    logging.getLogger("hyperopt").setLevel(logging.ERROR)
    fmin(
        objective,
        space,
        algo=tpe.suggest,
        max_evals=budget,
        trials=Trials(),
        rstate=np.random.default_rng(seed),
        show_progressbar=False,
    )


def run_skopt(problem: Problem, seed: int, budget: int, evaluate: Evaluator) -> None:
    from skopt import Optimizer
    from skopt.space import Categorical, Integer, Real

    dims = []
    for p in problem.parameters:
        if p["type"] == "float":
            dims.append(Real(p["min"], p["max"], prior="log-uniform" if p.get("log") else "uniform", name=p["name"]))
        elif p["type"] == "int":
            dims.append(Integer(p["min"], p["max"], prior="log-uniform" if p.get("log") else "uniform", name=p["name"]))
        else:
            dims.append(Categorical(p["values"], name=p["name"]))
    # Katib's "bayesianoptimization" defaults: GP, 10 initial points, gp_hedge, acq_optimizer auto.
    optimizer = Optimizer(
        dims, base_estimator="GP", n_initial_points=10, acq_func="gp_hedge", acq_optimizer="auto", random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(budget):
            x = optimizer.ask()
            values = {d.name: (v.item() if hasattr(v, "item") else v) for d, v in zip(dims, x, strict=True)}
            optimizer.tell(x, evaluate(values))


ALGORITHMS: dict[str, Runner] = {
    "kubetune-auto": run_ours("auto", 1),
    "kubetune-bayesian": run_ours("bayesian", 1),
    "kubetune-tpe": run_ours("tpe", 1),
    "kubetune-cmaes": run_ours("cmaes", 1),
    "kubetune-evolution": run_ours("evolution", 1),
    "kubetune-random": run_ours("random", 1),
    "kubetune-auto x4": run_ours("auto", 4),
    "kubetune-tpe x4": run_ours("tpe", 4),
    "optuna-tpe": run_optuna("tpe"),
    "optuna-gp": run_optuna("gp"),
    "optuna-cmaes": run_optuna("cmaes"),
    "hyperopt-tpe": run_hyperopt,
    "skopt-gp": run_skopt,
    "optuna-random": run_optuna("random"),
}
OURS = [name for name in ALGORITHMS if name.startswith("kubetune")]
RANDOM = ["kubetune-random", "optuna-random"]


# ============================================================================ running


def _load_cache() -> dict[str, float]:
    path = CACHE_DIR / "search-evaluations.json"
    return json.loads(path.read_text()) if path.exists() else {}


_CACHE: dict[str, float] = {}


def _init_worker(cache: dict[str, float]) -> None:
    global _CACHE
    _CACHE = cache
    warnings.simplefilter("ignore")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def _run_task(task: tuple[str, str, int, int]) -> dict[str, Any]:
    problem_name, algorithm, seed, budget = task
    problem = PROBLEM_BY_NAME[problem_name]
    before = set(_CACHE)
    evaluate = Evaluator(problem, _CACHE)
    started = time.perf_counter()
    ALGORITHMS[algorithm](problem, seed, budget, evaluate)
    wall = time.perf_counter() - started
    spent = wall - evaluate.seconds
    values = evaluate.values[:budget]
    return {
        "problem": problem_name,
        "algorithm": algorithm,
        "seed": seed,
        "values": values,
        "suggest_seconds": spent,
        "wall_seconds": wall,
        "new_cache": {k: _CACHE[k] for k in set(_CACHE) - before},
    }


def best_so_far(values: list[float], budget: int) -> list[float]:
    out, best = [], math.inf
    for value in values[:budget]:
        best = min(best, value) if math.isfinite(value) else best
        out.append(best)
    out += [best] * (budget - len(out))  # an exhausted search keeps its best
    return out


def score(results: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """Normalised scores and curves: {problem: {algorithm: [score per seed]}}, curves likewise."""
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_problem.setdefault(result["problem"], []).append(result)
    scores: dict[str, dict[str, list[float]]] = {}
    curves: dict[str, dict[str, list[list[float]]]] = {}
    reference: dict[str, dict[str, float]] = {}
    for name, runs in by_problem.items():
        best_seen = min(min(best_so_far(r["values"], budget)) for r in runs)
        known = PROBLEM_BY_NAME[name].optimum
        f_star = min(best_seen, known) if known is not None else best_seen
        random_final = statistics.median(best_so_far(r["values"], budget)[-1] for r in runs if r["algorithm"] in RANDOM)
        scale = random_final - f_star
        reference[name] = {"f_star": f_star, "median_random": random_final}

        def normalise(value: float, f_star: float = f_star, scale: float = scale) -> float:
            loss = (value - f_star) / scale if scale > 0 else 0.0
            return 100.0 * (1.0 - min(max(loss, -1.0), 1.0))

        for run in runs:
            curve = [normalise(v) for v in best_so_far(run["values"], budget)]
            scores.setdefault(name, {}).setdefault(run["algorithm"], []).append(curve[-1])
            curves.setdefault(name, {}).setdefault(run["algorithm"], []).append(curve)
    return {"scores": scores, "curves": curves, "reference": reference}


def summary_tables(results: list[dict[str, Any]], scored: dict[str, Any], algorithms: list[str]) -> str:
    scores = scored["scores"]
    problems = list(scores)
    lines = [
        "| algorithm | " + " | ".join(problems) + " | overall (mean of medians) | median of all runs |",
        "|---" * (len(problems) + 3) + "|",
    ]
    overall: dict[str, float] = {}
    for algorithm in algorithms:
        medians = [statistics.median(scores[p][algorithm]) for p in problems if algorithm in scores[p]]
        every = [s for p in problems for s in scores[p].get(algorithm, [])]
        overall[algorithm] = statistics.fmean(medians)
        cells = [f"{statistics.median(scores[p][algorithm]):.1f}" for p in problems]
        lines.append(
            f"| {algorithm} | " + " | ".join(cells) + f" | **{overall[algorithm]:.1f}** | "
            f"{statistics.median(every):.1f} |"
        )
    timing = ["", "| algorithm | mean suggestion time per trial (s) |", "|---|---|"]
    for algorithm in algorithms:
        runs = [r for r in results if r["algorithm"] == algorithm]
        per_trial = statistics.fmean(r["suggest_seconds"] / max(len(r["values"]), 1) for r in runs)
        timing.append(f"| {algorithm} | {per_trial:.4f} |")
    ranking = sorted(overall.items(), key=lambda kv: -kv[1])
    lines += ["", "Ranking (overall): " + ", ".join(f"{a} {s:.1f}" for a, s in ranking)]
    return "\n".join(lines + timing)


def plot(scored: dict[str, Any], algorithms: list[str], path: Path, budget: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = scored["curves"]
    problems = list(curves)
    columns = 4
    rows = math.ceil((len(problems) + 1) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False)
    palette = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("Dark2").colors)

    def colours(k: int) -> Any:
        return palette[k % len(palette)]

    def style(algorithm: str) -> dict[str, Any]:
        if algorithm == "kubetune-auto":  # drawn wide so that an identical curve on top leaves it visible
            return {"linestyle": "-", "linewidth": 3.2, "alpha": 0.55}
        return {"linestyle": "-" if algorithm.startswith("kubetune") else "--", "linewidth": 1.3}

    x = np.arange(1, budget + 1)
    overall = {a: np.zeros(budget) for a in algorithms}
    for index, problem in enumerate(problems):
        axis = axes[index // columns][index % columns]
        for k, algorithm in enumerate(algorithms):
            median = np.median(np.array(curves[problem][algorithm]), axis=0)
            overall[algorithm] += median / len(problems)
            axis.plot(x, median, color=colours(k), label=algorithm, **style(algorithm))
        axis.set_title(problem, fontsize=9)
        axis.set_ylim(-5, 105)
        axis.grid(alpha=0.3)
    axis = axes[len(problems) // columns][len(problems) % columns]
    for k, algorithm in enumerate(algorithms):
        axis.plot(x, overall[algorithm], color=colours(k), label=algorithm, **style(algorithm))
    axis.set_title("mean over problems", fontsize=9)
    axis.set_ylim(-5, 105)
    axis.grid(alpha=0.3)
    for extra in range(len(problems) + 1, rows * columns):
        axes[extra // columns][extra % columns].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    figure.suptitle("median normalised best-so-far score vs trials (100 = best found, 0 = median random)")
    figure.tight_layout(rect=(0, 0.07, 1, 0.97))
    figure.savefig(path, dpi=110)


# ============================================================================ latency


def latency(sizes: list[int], algorithms: list[str], repeats: int) -> dict[str, dict[int, dict[str, float]]]:
    """Median wall and CPU seconds for one wave of 10 suggestions with `size` finished trials.

    The space has 6 parameters (log float, float, int, log int, categorical,
    discrete). CPU time is this process's, so it is what the engine costs even
    when the machine is shared; wall time is what a caller waits.
    """
    from kubetune.search import suggest

    problem = Problem(
        "latency",
        [
            _float("lr", 1e-5, 1, log=True),
            _float("momentum", 0, 1),
            _int("layers", 1, 8),
            _int("width", 16, 1024, log=True),
            _cat("optimizer", ["sgd", "adam", "rmsprop"]),
            _cat("batch_size", [16, 32, 64, 128, 256], kind="discrete"),
        ],
        lambda p: 0.0,
    )
    out: dict[str, dict[int, dict[str, float]]] = {}
    for algorithm in algorithms:
        out[algorithm] = {}
        for size in sizes:
            rng = np.random.default_rng(size)
            spec = _spec(problem, algorithm, 0, size * 2)
            history = []
            for k in range(size):
                params = {
                    "lr": float(10 ** rng.uniform(-5, 0)),
                    "momentum": float(rng.uniform()),
                    "layers": int(rng.integers(1, 9)),
                    "width": int(rng.integers(16, 1025)),
                    "optimizer": ["sgd", "adam", "rmsprop"][k % 3],
                    "batch_size": [16, 32, 64, 128, 256][k % 5],
                }
                value = (math.log10(params["lr"]) + 2.5) ** 2 + params["momentum"] + rng.normal(0, 0.1)
                history.append({"parameters": params, "state": "Succeeded", "objective": value})
            suggest(spec, history[:20], 1)  # imports and warm caches are not part of a call's cost
            walls, cpus = [], []
            for _ in range(repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                wave = suggest(spec, history, 10)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
                assert len(wave) == 10
            out[algorithm][size] = {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}
            row = out[algorithm][size]
            print(
                f"latency {algorithm:10s} {size:5d} finished: {row['wall']:.3f} s wall, {row['cpu']:.3f} s CPU",
                flush=True,
            )
    return out


def _print_latency(latencies: dict[str, Any]) -> None:
    if not latencies:
        return
    sizes = list(next(iter(latencies.values())))
    print("\nWave of 10, seconds wall / CPU (median of repeats):\n")
    print("| algorithm | " + " | ".join(f"{s} finished" for s in sizes) + " |")
    print("|---" * (len(sizes) + 1) + "|")
    for algorithm, row in latencies.items():
        print(f"| {algorithm} | " + " | ".join(f"{row[s]['wall']:.2f} / {row[s]['cpu']:.2f}" for s in sizes) + " |")


# ============================================================================ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized subset (< 3 min)")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--budget", type=int, default=None)
    parser.add_argument("--problems", default=None, help="comma-separated subset")
    parser.add_argument("--algorithms", default=None, help="comma-separated subset")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--replot", action="store_true", help="tables and plot from --output, without running")
    parser.add_argument("--output", type=Path, default=None, help="raw results (default benchmarks/out/)")
    parser.add_argument("--plot", type=Path, default=None, help="plot (default benchmarks/search_benchmark.png)")
    args = parser.parse_args(argv)
    suffix = "_quick" if args.quick else ""  # a quick run never overwrites the full run's files
    args.output = args.output or CACHE_DIR / f"search_benchmark{suffix}.json"
    args.plot = args.plot or (CACHE_DIR / "search_benchmark_quick.png" if args.quick else HERE / "search_benchmark.png")

    if args.quick:
        seeds, budget = args.seeds or 2, args.budget or 30
        problems = ["branin", "mixed_conditional", "svm_breast_cancer"]
        algorithms = ["kubetune-auto", "kubetune-tpe", "kubetune-random", "optuna-tpe", "optuna-random"]
        sizes, repeats = [100, 1000], 1
    else:
        seeds, budget = args.seeds or 8, args.budget or 50
        problems = [p.name for p in PROBLEMS]
        algorithms = list(ALGORITHMS)
        sizes, repeats = [100, 1000, 5000], 3
    if args.replot:
        saved = json.loads(args.output.read_text())
        runs, budget = saved["runs"], saved["budget"]
        present = {r["algorithm"] for r in runs}
        names = [a for a in ALGORITHMS if a in present] + sorted(present - set(ALGORITHMS))
        scored = score(runs, budget)
        plot(scored, names, args.plot, budget)
        print(summary_tables(runs, scored, names))
        _print_latency(saved["latency_seconds"])
        return 0
    if args.problems:
        problems = args.problems.split(",")
    if args.algorithms:
        algorithms = args.algorithms.split(",")
        algorithms += [a for a in RANDOM if a not in algorithms]  # the score needs random search
    started = time.time()
    cache = _load_cache()
    tasks = [(p, a, s, budget) for p in problems for a in algorithms for s in range(seeds)]
    # Longest first (GP-based samplers) so the pool's tail is short.
    tasks.sort(key=lambda t: ("gp" not in t[1] and "auto" not in t[1] and "bayes" not in t[1], t))
    results = []
    with multiprocessing.get_context("fork").Pool(args.workers, _init_worker, (cache,)) as pool:
        for done, result in enumerate(pool.imap_unordered(_run_task, tasks), 1):
            cache.update(result.pop("new_cache"))
            results.append(result)
            if done % 25 == 0 or done == len(tasks):
                print(f"{done}/{len(tasks)} runs, {time.time() - started:.0f} s", flush=True)
    results.sort(key=lambda r: (r["problem"], r["algorithm"], r["seed"]))
    CACHE_DIR.mkdir(exist_ok=True)
    (CACHE_DIR / "search-evaluations.json").write_text(json.dumps(cache))

    scored = score(results, budget)
    tables = summary_tables(results, scored, algorithms)
    latencies = (
        {}
        if args.no_latency
        else latency(sizes, ["auto", "random", "grid", "bayesian", "tpe", "cmaes", "evolution"], repeats)
    )
    elapsed = time.time() - started
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    payload = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
        "command": "python benchmarks/search_benchmark.py" + (" --quick" if args.quick else ""),
        "seeds": seeds,
        "budget": budget,
        "elapsed_seconds": elapsed,
        "reference": scored["reference"],
        "scores": scored["scores"],
        "latency_seconds": latencies,
        "runs": results,
    }
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(json.dumps(payload))
    plot(scored, algorithms, args.plot, budget)
    print()
    print(f"{len(problems)} problems x {seeds} seeds x {budget} trials, {elapsed:.0f} s, {machine}")
    print(tables)
    _print_latency(latencies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
