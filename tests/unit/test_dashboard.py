"""The Grafana dashboard and the chart's alerts: valid model, valid PromQL, only series that exist."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from helm_chart import CACHE, CHART, render_text
from prometheus_client import CollectorRegistry

from kubetune.dashboard import (
    DASHBOARD_PATH,
    Query,
    alert_queries,
    alert_rules,
    build_dashboard,
    dashboard_queries,
    dashboard_query_list,
    main,
    render_dashboard_json,
    substitute,
)
from kubetune.metrics.operator import OperatorMetrics
from kubetune.report import TrialReporter

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = CACHE / "current" / "prometheus"
MONITORING_VALUES = CHART / "ci" / "monitoring-values.yaml"

# A minimal JSON schema of the Grafana dashboard model (the fields Grafana needs to load and
# draw it; Grafana's own schema is CUE and not published as JSON schema).
TARGET = {
    "type": "object",
    "required": ["refId", "expr", "datasource"],
    "properties": {
        "refId": {"type": "string", "pattern": "^[A-Z]$"},
        "expr": {"type": "string", "minLength": 1},
        "legendFormat": {"type": "string"},
        "instant": {"type": "boolean"},
        "range": {"type": "boolean"},
        "format": {"enum": ["time_series", "table", "heatmap"]},
        "datasource": {"$ref": "#/$defs/datasource"},
    },
}
GRID_POS = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "additionalProperties": False,
    "properties": {
        "h": {"type": "integer", "minimum": 1},
        "w": {"type": "integer", "minimum": 1, "maximum": 24},
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": {"type": "integer", "minimum": 0},
    },
}
PANEL = {
    "type": "object",
    "required": ["type", "id", "title", "gridPos"],
    "properties": {
        "type": {"enum": ["row", "timeseries", "stat", "table", "bargauge", "xychart"]},
        "id": {"type": "integer", "minimum": 1},
        "title": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "gridPos": GRID_POS,
        "datasource": {"$ref": "#/$defs/datasource"},
        "targets": {"type": "array", "items": TARGET},
        "fieldConfig": {
            "type": "object",
            "required": ["defaults", "overrides"],
            "properties": {"defaults": {"type": "object"}, "overrides": {"type": "array"}},
        },
        "options": {"type": "object"},
        "transformations": {
            "type": "array",
            "items": {"type": "object", "required": ["id", "options"], "properties": {"id": {"type": "string"}}},
        },
    },
    "if": {"properties": {"type": {"const": "row"}}},
    "then": {"required": ["collapsed", "panels"]},
    "else": {"required": ["datasource", "targets", "fieldConfig", "options"],
             "properties": {"targets": {"minItems": 1}}},
}
DASHBOARD_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {
        "datasource": {
            "type": "object",
            "required": ["type", "uid"],
            "properties": {"type": {"type": "string"}, "uid": {"type": "string"}},
        }
    },
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time", "annotations", "refresh"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "editable": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "time": {"type": "object", "required": ["from", "to"]},
        "panels": {"type": "array", "minItems": 1, "items": PANEL},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "type", "query"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^[a-z_]+$"},
                            "type": {"enum": ["query", "datasource", "custom", "interval", "constant"]},
                        },
                    },
                }
            },
        },
        "annotations": {
            "type": "object",
            "required": ["list"],
            "properties": {"list": {"type": "array", "items": {"type": "object", "required": ["name", "datasource"]}}},
        },
    },
}

GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "datasource"}


def known_series() -> set[str]:
    """Every series name the operator and the trial reporter expose, plus Prometheus' `up`."""
    names = {"up"}
    registries: list[CollectorRegistry] = [OperatorMetrics().registry, TrialReporter().registry]
    for registry in registries:
        for family in registry.collect():
            if family.type == "counter":
                names |= {family.name + "_total"}
            elif family.type == "histogram":
                names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
            else:
                names.add(family.name)
    return names


PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset",
                   "bool"}


def series_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers left once strings, label matchers, ranges,
    grouping clauses, function names and keywords are taken out."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text))
    return {n for n in names if n not in PROMQL_KEYWORDS and not re.fullmatch(r"[0-9.e]+|[0-9]+[smhdwy]", n)}


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list(dashboard["panels"])


# --------------------------------------------------------------------------- the model


def test_committed_dashboard_is_generated() -> None:
    assert (REPO / DASHBOARD_PATH).read_text() == render_dashboard_json(), "run `python -m kubetune.dashboard`"
    assert main(["--check", "--output", str(REPO / DASHBOARD_PATH)]) == 0


def test_check_reports_drift(tmp_path: Path) -> None:
    stale = tmp_path / "kubetune.json"
    stale.write_text("{}\n")
    assert main(["--check", "--output", str(stale)]) == 1
    assert main(["--output", str(stale)]) == 0
    assert main(["--check", "--output", str(stale)]) == 0


def test_dashboard_matches_the_model_schema() -> None:
    dashboard = json.loads((REPO / DASHBOARD_PATH).read_text())
    jsonschema.validate(dashboard, DASHBOARD_SCHEMA)


def test_the_schema_is_not_a_rubber_stamp() -> None:
    broken = build_dashboard()
    broken["panels"][1]["gridPos"]["w"] = 30
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, DASHBOARD_SCHEMA)
    broken = build_dashboard()
    broken["panels"][1]["targets"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, DASHBOARD_SCHEMA)


def test_panels_tile_without_overlap() -> None:
    panels = all_panels(build_dashboard())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    boxes = []
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        boxes.append((panel["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    for (a, ax0, ay0, ax1, ay1), (b, bx0, by0, bx1, by1) in combinations(boxes, 2):
        assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"{a!r} overlaps {b!r}"
    for panel in panels:
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_has_what_the_issue_asks_for() -> None:
    dashboard = build_dashboard()
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"TuningJob", "Trials", "Operator"} <= titles  # rows
    for wanted in ("Trials by phase", "Best objective so far", "$metric by step, every trial", "Trial durations",
                   "GPU memory per trial", "Reconcile latency", "Suggestion latency", "Trial turnover latency",
                   "Errors", "Work queue depth", "Pareto front", "Pareto front size", "Pareto front trials"):
        assert wanted in titles
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", "namespace", "tuningjob", "metric"]
    assert any(a["name"] == "Early stops" for a in dashboard["annotations"]["list"])
    table = next(p for p in dashboard["panels"] if p["title"] == "Trial summary")
    assert "stopped early at step" in json.dumps(table["transformations"])
    queries = " ".join(dashboard_queries(raw=True))
    assert 'metric="gpu_memory_bytes"' in queries and "kubetune_trial_metric{" in queries


def test_variables_used_are_defined() -> None:
    dashboard = build_dashboard()
    defined = {v["name"] for v in dashboard["templating"]["list"]} | GRAFANA_BUILTINS
    text = json.dumps(dashboard)
    used = set(re.findall(r"\$\{?([a-z_]+)", text))
    assert used <= defined, used - defined


def test_grafana_variables_are_all_substituted() -> None:
    for expr in dashboard_queries():
        assert "$" not in expr, expr
    assert substitute("rate(x[$__rate_interval]) / $__range") == "rate(x[1m]) / 1h"
    assert substitute('x{a=~"$tuningjob"}[$__range]', {"$tuningjob": "job-1", "$__range": "5m"}) == (
        'x{a=~"job-1"}[5m]'
    )


def test_query_list_says_how_grafana_runs_each_query() -> None:
    """The e2e test (tests/e2e/test_chart_install.py) runs each one as Grafana would: range, instant, series."""
    queries = dashboard_query_list(values={"$namespace": "ns-1"})
    assert [q.expr for q in queries] == [substitute(e, {"$namespace": "ns-1"}) for e in dashboard_queries(raw=True)]
    by_source = {q.source: q for q in queries}
    assert by_source["panel Phase"].kind == "instant"
    assert by_source["panel Best objective so far"].kind == "range"
    assert by_source["annotation Early stops"].kind == "range"
    assert by_source["variable tuningjob"] == Query(
        "variable tuningjob", 'kubetune_tuningjob_phase{namespace=~"ns-1"}', "series"
    )
    assert {q.kind for q in queries} == {"range", "instant", "series"}


def test_alert_rules_by_name() -> None:
    rules = alert_rules(render_text("-f", str(MONITORING_VALUES)))
    assert list(rules) == ["KubetuneOperatorDown", "KubetuneTrialsFailing", "KubetuneTuningJobStalled",
                           "KubetunePrometheusErrors"]
    assert list(rules.values()) == monitoring_alerts()


# --------------------------------------------------------------------------- PromQL


def monitoring_alerts() -> list[str]:
    return alert_queries(render_text("-f", str(MONITORING_VALUES)))


def test_alert_queries_come_from_the_rendered_rule() -> None:
    alerts = monitoring_alerts()
    assert len(alerts) == 4
    assert alert_queries("kind: ConfigMap\ndata: {}\n") == []


def test_queries_use_only_series_that_exist() -> None:
    known = known_series()
    assert series_in('max by (a) (rate(kubetune_x_total{b="c"}[5m])) > on (a) group_left () up offset 1h') == {
        "kubetune_x_total", "up"}
    for expr in dashboard_queries() + monitoring_alerts():
        used = series_in(expr)
        assert used, f"no series recognised in {expr!r}"
        assert used <= known, f"unknown series {used - known} in {expr!r}"


def test_queries_filter_by_the_right_labels() -> None:
    """Trial series are selected by kubetune_io_job, the operator's by tuningjob, never mixed up."""
    for expr in dashboard_queries(raw=True):
        for selector in re.findall(r"(kubetune_trial_[a-z]+)\{([^}]*)\}", expr):
            assert "tuningjob=" not in selector[1], expr
        for selector in re.findall(r"(kubetune_(?:trials|best|tuningjob)[a-z_]*)\{([^}]*)\}", expr):
            assert "kubetune_io_job" not in selector[1], expr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not PROMETHEUS.exists():
        pytest.skip(f"prometheus is not built at {PROMETHEUS}: run `make binaries` (hack/build-binaries.sh)")
    home = tmp_path_factory.mktemp("prometheus")
    (home / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
    port = _free_port()
    process = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(home / "log", "wb"),  # noqa: SIM115 - closed with the process
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start:\n{(home / 'log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def promql_error(url: str, expr: str) -> str | None:
    """None if Prometheus accepts `expr`, else its error message."""
    request = urllib.request.Request(
        url + "/api/v1/query", data=urllib.parse.urlencode({"query": expr}).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
    return None if body.get("status") == "success" else str(body.get("error", body))


def test_prometheus_rejects_a_bad_query(prometheus_url: str) -> None:
    assert promql_error(prometheus_url, "sum by (le (rate(x[1m]))") is not None
    assert promql_error(prometheus_url, "sum by (le) (rate(x[1m]))") is None


@pytest.mark.parametrize("expr", dashboard_queries(), ids=lambda e: e[:60])
def test_dashboard_queries_parse_in_prometheus(prometheus_url: str, expr: str) -> None:
    assert promql_error(prometheus_url, expr) is None, expr


def test_alert_queries_parse_in_prometheus(prometheus_url: str) -> None:
    errors = {expr: promql_error(prometheus_url, expr) for expr in monitoring_alerts()}
    assert {e: m for e, m in errors.items() if m} == {}
