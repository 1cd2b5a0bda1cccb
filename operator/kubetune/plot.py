"""`kubetune plot <job>`: one PNG of a study, drawn from its Trials' statuses.

Three views, as in Optuna's visualisation module:
- optimisation history: each trial's objective by trial index, and the best so far;
- learning curves: every trial's intermediate values (`status.intermediate`, the [step, value]
  pairs the early-stopping rule saw), early-stopped trials marked where they stopped;
- one scatter per parameter: value against objective (log axis for log-scale parameters,
  category positions for categorical ones);
- with several objectives (`spec.objectives`), the Pareto front: every succeeded trial by its first two
  objectives, the non-dominated ones joined as a staircase. The primary objective is the one the
  other views show.

`render_plot` is pure apart from writing the file: it takes the TuningJob and Trial objects
as the API returns them. Reading them (`read_study`) is the only part that needs a cluster.
matplotlib is imported lazily (the `plot` extra), so other commands never pay for it.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune.api.models import GROUP, VERSION
from kubetune.controller.naming import LABEL_JOB
from kubetune.k8s.core import resource_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Json = Mapping[str, Any]

# Colours and markers per trial phase (matplotlib's default cycle, colour-blind friendly order).
PHASE_STYLE: dict[str, tuple[str, str]] = {
    "Succeeded": ("#1f77b4", "o"),
    "EarlyStopped": ("#ff7f0e", "X"),
    "Failed": ("#d62728", "v"),
    "Cancelled": ("#8c564b", "D"),
    "Running": ("#2ca02c", "s"),
    "Pending": ("#7f7f7f", "s"),
}
BEST_COLOUR = "#9467bd"
LIST_PAGE = 500


@dataclass(frozen=True)
class TrialView:
    """What the plots need of one Trial."""

    name: str
    index: int
    phase: str
    objective: float | None
    parameters: Mapping[str, Any]
    curve: list[tuple[float, float]] = field(default_factory=list)
    stopped_at: float | None = None  # step at which the early-stopping rule stopped it
    metrics: Mapping[str, float] = field(default_factory=dict)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def trial_view(trial: Json) -> TrialView:
    spec = trial.get("spec") or {}
    status = trial.get("status") or {}
    curve = []
    for point in status.get("intermediate") or []:
        if isinstance(point, Sequence) and len(point) == 2:
            step, value = _finite(point[0]), _finite(point[1])
            if step is not None and value is not None:
                curve.append((step, value))
    decision = status.get("earlyStopping") or {}
    phase = str(status.get("phase") or "Pending")
    stopped_at = _finite(decision.get("step")) if phase == "EarlyStopped" else None
    if phase == "EarlyStopped" and stopped_at is None and curve:
        stopped_at = curve[-1][0]
    return TrialView(
        name=str((trial.get("metadata") or {}).get("name", "")),
        index=int(spec.get("index", 0)),
        phase=phase,
        objective=_finite(status.get("objective")),
        parameters=dict(spec.get("parameters") or {}),
        curve=sorted(curve),
        stopped_at=stopped_at,
        metrics={str(k): v for k, v in (status.get("metrics") or {}).items() if _finite(v) is not None},
    )


def objectives_of(spec: Json) -> list[Json]:
    """The spec's objectives in order: `objectives`, or the one `objective`."""
    listed = spec.get("objectives") or ([spec["objective"]] if spec.get("objective") else [])
    return [o for o in listed if isinstance(o, Mapping)]


def primary_of(spec: Json) -> Json:
    listed = objectives_of(spec)
    return next((o for o in listed if o.get("primary")), listed[0] if listed else {})


def pareto_points(objectives: Sequence[Json], views: Sequence[TrialView]
                  ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Succeeded trials' (first, second objective) values, and those on the front of all their objectives
    (judged from the trials themselves), sorted along the first objective."""
    from kubetune.search import non_dominated

    metrics = [str(o.get("metric")) for o in objectives]
    signs = [-1.0 if o.get("goal") == "maximize" else 1.0 for o in objectives]
    scored = [v for v in views if v.phase == "Succeeded" and all(m in v.metrics for m in metrics)]
    points = [(v.metrics[metrics[0]], v.metrics[metrics[1]]) for v in scored]
    if not scored:
        return points, []
    mask = non_dominated([[sign * v.metrics[m] for m, sign in zip(metrics, signs, strict=True)] for v in scored])
    front = sorted(p for p, keep in zip(points, mask, strict=True) if keep)
    return points, front


def _pareto(ax: Axes, objectives: Sequence[Json], views: Sequence[TrialView]) -> None:
    points, front = pareto_points(objectives, views)
    first, second = (str(o.get("metric")) for o in objectives[:2])
    if points:
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=18, color="#7f7f7f", alpha=0.6,
                   label="succeeded")
    if front:
        xs, ys = [p[0] for p in front], [p[1] for p in front]
        ax.step(xs, ys, where="post", color=BEST_COLOUR, lw=1.2)
        ax.scatter(xs, ys, s=40, color=BEST_COLOUR, label=f"Pareto front ({len(front)})", zorder=3)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no trial with every objective yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"{first} ({objectives[0].get('goal', '?')})")
    ax.set_ylabel(f"{second} ({objectives[1].get('goal', '?')})")
    ax.set_title("Pareto front" + (" (first two of the objectives)" if len(objectives) > 2 else ""), fontsize=11)
    ax.grid(alpha=0.3)


def best_so_far(trials: Sequence[TrialView], maximize: bool) -> list[tuple[int, float]]:
    """(trial index, best objective among Succeeded trials up to it), as the operator ranks them."""
    best: float | None = None
    points = []
    for trial in sorted(trials, key=lambda t: t.index):
        if trial.phase != "Succeeded" or trial.objective is None:
            continue
        if best is None or (trial.objective > best if maximize else trial.objective < best):
            best = trial.objective
        points.append((trial.index, best))
    return points


# --------------------------------------------------------------------------- drawing


def _history(ax: Axes, trials: Sequence[TrialView], metric: str, maximize: bool) -> None:
    for phase, (colour, marker) in PHASE_STYLE.items():
        shown = [(t.index, t.objective) for t in trials if t.phase == phase and t.objective is not None]
        if shown:
            ax.scatter([i for i, _ in shown], [v for _, v in shown], c=colour, marker=marker,
                       s=28, alpha=0.85, label=f"{phase} ({len(shown)})", zorder=3)
    failed = [t for t in trials if t.phase == "Failed" and t.objective is None]
    if failed:  # no objective: a tick on the x axis
        ax.scatter([t.index for t in failed], [0.02] * len(failed), c=PHASE_STYLE["Failed"][0], marker="v", s=28,
                   transform=ax.get_xaxis_transform(), label=f"Failed ({len(failed)})", zorder=3, clip_on=False)
    best = best_so_far(trials, maximize)
    if best:
        last_index = max(t.index for t in trials)
        xs = [i for i, _ in best] + [last_index]
        ys = [v for _, v in best] + [best[-1][1]]
        ax.step(xs, ys, where="post", color=BEST_COLOUR, linewidth=1.8, label="best so far", zorder=2)
    ax.set_title("Optimisation history")
    ax.set_xlabel("trial index")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _curves(ax: Axes, trials: Sequence[TrialView], metric: str, resource: str) -> None:
    with_curves = [t for t in trials if t.curve]
    if not with_curves:
        ax.text(0.5, 0.5, "no intermediate values recorded\n(early stopping off, or no Prometheus)",
                ha="center", va="center", transform=ax.transAxes, color="#555555")
    stopped_label = False
    for trial in with_curves:
        steps = [s for s, _ in trial.curve]
        values = [v for _, v in trial.curve]
        colour = PHASE_STYLE.get(trial.phase, PHASE_STYLE["Pending"])[0]
        alpha = 0.9 if trial.phase != "EarlyStopped" else 0.6
        ax.plot(steps, values, color=colour, linewidth=1.0, alpha=alpha, marker=".", markersize=3)
        if trial.stopped_at is not None:
            at = min(trial.curve, key=lambda p: abs(p[0] - (trial.stopped_at or 0.0)))
            ax.scatter([at[0]], [at[1]], marker="X", s=60, c=PHASE_STYLE["EarlyStopped"][0], edgecolors="black",
                       linewidths=0.5, zorder=3, label=None if stopped_label else "stopped early")
            stopped_label = True
    ax.set_title("Learning curves")
    ax.set_xlabel(resource)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if with_curves:
        from matplotlib.lines import Line2D

        phases = [p for p in PHASE_STYLE if any(t.phase == p for t in with_curves)]
        handles: list[Any] = [Line2D([], [], color=PHASE_STYLE[p][0], label=p) for p in phases]
        if stopped_label:
            handles.append(Line2D([], [], color=PHASE_STYLE["EarlyStopped"][0], marker="X", markeredgecolor="black",
                                  markeredgewidth=0.5, markersize=8, linestyle="", label="stopped early"))
        ax.legend(handles=handles, fontsize=8, loc="best")


def _parameter(ax: Axes, parameter: Json, trials: Sequence[TrialView], metric: str) -> None:
    name = str(parameter.get("name"))
    kind = str(parameter.get("type", "float"))
    shown = [t for t in trials if t.objective is not None and name in t.parameters]
    if kind == "categorical":
        categories = [str(v) for v in parameter.get("values") or []]
        for value in (str(t.parameters[name]) for t in shown):
            if value not in categories:
                categories.append(value)
        position = {c: i for i, c in enumerate(categories)}
        # A small deterministic jitter keeps trials with the same category apart.
        xs = [position[str(t.parameters[name])] + ((t.index * 0.618) % 1 - 0.5) * 0.3 for t in shown]
        ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 4 else 0)
        ax.set_xlim(-0.6, len(categories) - 0.4)
    else:
        xs = [float(t.parameters[name]) for t in shown]
        if parameter.get("log"):
            ax.set_xscale("log")
    for phase, (colour, marker) in PHASE_STYLE.items():
        points = [(x, t.objective) for x, t in zip(xs, shown, strict=True)
                  if t.phase == phase and t.objective is not None]
        if points:
            ax.scatter([x for x, _ in points], [y for _, y in points], c=colour, marker=marker, s=22, alpha=0.85)
    title = name + (" (log)" if parameter.get("log") else "")
    if parameter.get("when"):
        title += " *"  # conditional: only trials where it exists
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(metric, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


def render_plot(job: Json, trials: Sequence[Json], path: str | Path) -> Path:
    """Draw the study to `path` (PNG): history, learning curves, one scatter per parameter."""
    from matplotlib.figure import Figure, SubFigure  # lazily: the `plot` extra; no pyplot, no global state

    spec = job.get("spec") or {}
    objective = primary_of(spec)
    objectives = objectives_of(spec)
    metric = str(objective.get("metric", "objective"))
    maximize = objective.get("goal") == "maximize"
    resource = str((spec.get("earlyStopping") or {}).get("resource", "step"))
    parameters = [p for p in spec.get("parameters") or [] if isinstance(p, Mapping)]
    views = sorted((trial_view(t) for t in trials), key=lambda t: t.index)

    columns = min(4, max(1, len(parameters)))
    rows = math.ceil(len(parameters) / columns) if parameters else 0
    figure = Figure(figsize=(15, 5.0 + 3.2 * rows), layout="constrained")
    top: Figure | SubFigure = figure
    bottom: SubFigure | None = None
    if rows:
        halves: Any = figure.subfigures(2, 1, height_ratios=[5.0, 3.2 * rows])  # an array of two
        top, bottom = halves[0], halves[1]
    multi = len(objectives) > 1
    top_axes = top.subplots(1, 3 if multi else 2)
    history_ax, curves_ax = top_axes[0], top_axes[1]
    if multi:
        _pareto(top_axes[2], objectives, views)
    if views:
        _history(history_ax, views, metric, maximize)
        _curves(curves_ax, views, metric, resource)
    else:
        for ax in (history_ax, curves_ax):
            ax.text(0.5, 0.5, "no trials yet", ha="center", va="center", transform=ax.transAxes)
    if bottom is not None:
        axes = bottom.subplots(rows, columns, squeeze=False)
        for i, ax in enumerate(axes.flat):
            if i < len(parameters):
                _parameter(ax, parameters[i], views, metric)
            else:
                ax.set_visible(False)
        bottom.suptitle("Parameters against the objective (markers as in the history; * conditional)", fontsize=11)

    metadata = job.get("metadata") or {}
    status = job.get("status") or {}
    best = status.get("bestTrial") or {}
    title = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}: {metric} ({objective.get('goal', '?')})"
    title += f", {status.get('phase', 'Pending')}, {len(views)} trials"
    if _finite(best.get("objective")) is not None:
        title += f", best {best['objective']:.6g} ({best.get('name', '?')})"
    figure.suptitle(title, fontsize=13)
    output = Path(path)
    figure.savefig(output, format="png", dpi=100)
    return output


# --------------------------------------------------------------------------- reading from the cluster


def current_namespace(kubeconfig: str | None, context: str | None) -> str:
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def read_study(name: str, namespace: str, kubeconfig: str | None, context: str | None) -> tuple[Json, list[Json]]:
    """The TuningJob and all its Trials (paged: a study can hold tens of thousands)."""
    from kubetune.k8s.sync import Credentials, KubeApi

    api = KubeApi(Credentials.load(kubeconfig, context))
    job = api.get(resource_path(GROUP, VERSION, "tuningjobs", namespace, name))
    trials: list[Json] = []
    token: str | None = None
    while True:
        page = api.get(
            resource_path(GROUP, VERSION, "trials", namespace), labelSelector=f"{LABEL_JOB}={name}",
            limit=LIST_PAGE, **({"continue": token} if token else {}),
        )
        trials += page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return job, trials


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plot", help="draw a TuningJob's history, learning curves and parameters to a PNG"
    )
    parser.add_argument("job", help="TuningJob name")
    parser.add_argument("--namespace", "-n", help="namespace (default: the kubeconfig context's, else default)")
    parser.add_argument("--output", "-o", type=Path, help="PNG to write (default: <job>.png)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kubernetes.config import ConfigException

    from kubetune.k8s.core import ApiError, NotFound

    namespace = args.namespace or current_namespace(args.kubeconfig, args.context)
    where = f"TuningJob {namespace}/{args.job}"
    try:
        job, trials = read_study(args.job, namespace, args.kubeconfig, args.context)
    except NotFound:
        print(f"kubetune plot: {where}: not found", file=sys.stderr)
        return 1
    except ApiError as exc:
        reason = "cannot reach the API server" if exc.status == 0 else f"{exc.status} {exc.reason}"
        print(f"kubetune plot: {where}: {reason}: {exc.message}", file=sys.stderr)
        return 1
    except (ConfigException, OSError) as exc:
        print(f"kubetune plot: no usable kubeconfig: {exc}", file=sys.stderr)
        return 1
    output = render_plot(job, trials, args.output or Path(f"{args.job}.png"))
    print(f"wrote {output} ({len(trials)} trials)")
    return 0
