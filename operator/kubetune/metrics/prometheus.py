"""Reading trial metrics from the Prometheus HTTP API.

Queries are built here from escaped label values only; a job, trial or metric
name never reaches PromQL unescaped. `build_*` functions are pure; `query`
and `observe_trials` do the HTTP.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from kubetune.controller import naming
from kubetune.controller.planner import Curve, Observations

# Finished pods stop being scraped; their last samples stay queryable this long.
LOOKBACK = "15m"


class PrometheusError(Exception):
    """Prometheus could not answer: (reason, message) for a condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def escape_string(value: str) -> str:
    """A PromQL double-quoted string literal's content."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_regex(value: str) -> str:
    """A value matched literally inside a =~ regex, then escaped as a string literal."""
    return escape_string(re.escape(value))


def _selector(namespace: str, job: str, trials: Sequence[str], metric: str | None) -> str:
    matchers = [
        f'namespace="{escape_string(namespace)}"',
        f'{naming.PROM_LABEL_JOB}="{escape_string(job)}"',
        f'{naming.PROM_LABEL_TRIAL}=~"{"|".join(escape_regex(t) for t in trials)}"',
    ]
    if metric is not None:
        matchers.append(f'metric="{escape_string(metric)}"')
    return "{" + ",".join(matchers) + "}"


def build_curve_query(namespace: str, job: str, trials: Sequence[str], metric: str) -> str:
    """Every reported step of `metric` for the given trials (the trainer contract: a series per step)."""
    return f"last_over_time(kubetune_trial_metric{_selector(namespace, job, trials, metric)}[{LOOKBACK}])"


def build_final_query(namespace: str, job: str, trials: Sequence[str]) -> str:
    return f"last_over_time(kubetune_trial_final{_selector(namespace, job, trials, None)}[{LOOKBACK}])"


def render_template(template: str, namespace: str, job: str, trial: str, metric: str) -> str:
    """A user PromQL template with {{namespace}}, {{job}}, {{trial}} and {{metric}} filled in, escaped."""
    values = {"namespace": namespace, "job": job, "trial": trial, "metric": metric}
    return re.sub(
        r"\{\{\s*(namespace|job|trial|metric)\s*\}\}", lambda m: escape_string(values[m[1]]), template
    )


def _value(sample: Any) -> float | None:
    try:
        value = float(sample[1])
    except (TypeError, ValueError, IndexError):
        return None
    return value if math.isfinite(value) else None


def parse_curves(result: Iterable[dict[str, Any]]) -> dict[str, Curve]:
    """Vector result with `kubetune_io_trial` and `step` labels -> trial -> sorted curve."""
    curves: dict[str, dict[float, float]] = {}
    for series in result:
        labels = series.get("metric", {})
        trial = labels.get(naming.PROM_LABEL_TRIAL)
        value = _value(series.get("value"))
        try:
            step = float(labels.get("step", ""))
        except ValueError:
            continue
        if trial and value is not None:
            curves.setdefault(trial, {})[step] = value
    return {trial: sorted(points.items()) for trial, points in curves.items()}


def latest_value(result: Sequence[dict[str, Any]]) -> float | None:
    """The one step-less series' value (the objective's latest value), or None when there is none.

    Raises PrometheusError when several series come back: which one is the objective cannot be guessed."""
    if len(result) > 1:
        shown = ", ".join(str(series.get("metric", {})) for series in result[:3])
        raise PrometheusError("PromQLAmbiguous", f"objective.promql returned {len(result)} series without a `step` "
                                                 f"label ({shown}, ...); aggregate them to one, or label them by step")
    return _value(result[0].get("value")) if result else None


def parse_template_result(rows: Sequence[dict[str, Any]], trial: str) -> tuple[Curve | None, float | None]:
    """A user query's answer for one trial: its curve (series with a `step` label) and its latest value
    (the single series without one; else the value at the highest step)."""
    stepped = [{**row, "metric": {**row.get("metric", {}), naming.PROM_LABEL_TRIAL: trial}}
               for row in rows if "step" in row.get("metric", {})]
    curve = parse_curves(stepped).get(trial)
    latest = latest_value([row for row in rows if "step" not in row.get("metric", {})])
    if latest is None and curve:
        latest = curve[-1][1]
    return curve, latest


def parse_finals(result: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    finals: dict[str, dict[str, float]] = {}
    for series in result:
        labels = series.get("metric", {})
        trial, metric = labels.get(naming.PROM_LABEL_TRIAL), labels.get("metric")
        value = _value(series.get("value"))
        if trial and metric and value is not None:
            finals.setdefault(trial, {})[metric] = value
    return finals


@dataclass
class PrometheusClient:
    url: str
    timeout: float = 10.0
    session: aiohttp.ClientSession | None = None
    queries_total: int = 0

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; the result vector, or PrometheusError saying what went wrong."""
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self.queries_total += 1
        try:
            async with self.session.post(self.url.rstrip("/") + "/api/v1/query", data={"query": promql}) as response:
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            detail = str(error) or type(error).__name__
            raise PrometheusError("PrometheusUnavailable", f"Prometheus at {self.url}: {detail}") from error
        if payload.get("status") != "success":
            kind = payload.get("errorType", "error")
            reason = "PromQLError" if kind == "bad_data" else "PrometheusQueryFailed"
            raise PrometheusError(reason, f"{kind}: {payload.get('error', '')} (query: {promql[:300]})")
        data = payload.get("data", {})
        if data.get("resultType") == "scalar":
            return [{"metric": {}, "value": data.get("result")}]
        result: list[dict[str, Any]] = data.get("result", [])
        return result


async def observe_trials(
    prometheus: PrometheusClient | None,
    namespace: str,
    job: str,
    trials: Sequence[str],
    metric: str,
    template: str | None,
    other_templates: Sequence[tuple[str, str]] = (),
) -> Observations:
    """Curves and final metrics of the given (unfinished) trials, or the problem that prevented it.

    `other_templates`: (metric, promql) of further objectives (several objectives): each trial's answer
    (the step-less series, else the value at the highest step) is that metric's final value."""
    if not trials:
        return Observations()
    if prometheus is None:
        return Observations(problem=("PrometheusNotConfigured", "no Prometheus URL is configured"), asked=True)
    try:
        finals = parse_finals(await prometheus.query(build_final_query(namespace, job, trials)))
        if template is None:
            curves = parse_curves(await prometheus.query(build_curve_query(namespace, job, trials, metric)))
        else:
            curves = {}
            for trial in trials:
                rows = await prometheus.query(render_template(template, namespace, job, trial, metric))
                curve, latest = parse_template_result(rows, trial)
                if curve:
                    curves[trial] = curve
                if latest is not None:  # the user's query defines the objective
                    finals.setdefault(trial, {})[metric] = latest
        for other, other_template in other_templates:
            for trial in trials:
                rows = await prometheus.query(render_template(other_template, namespace, job, trial, other))
                latest = parse_template_result(rows, trial)[1]
                if latest is not None:
                    finals.setdefault(trial, {})[other] = latest
    except PrometheusError as error:
        return Observations(problem=(error.reason, error.message), asked=True)
    return Observations(curves=curves, finals=finals, asked=True)
