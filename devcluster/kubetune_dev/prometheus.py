"""The Prometheus configuration of the dev cluster: the scrape contract in code.

Contract (README.md, "Scrape contract"; the operator, trainer and Helm chart rely on it):
- trial pods are scraped when labelled `kubetune.io/scrape: "true"`, on every container port
  named `metrics`, at the path in annotation `kubetune.io/metrics-path` (default `/metrics`);
- series get target labels `namespace`, `pod`, `container`, `kubetune_io_job` and
  `kubetune_io_trial` (from the pod labels `kubetune.io/job` / `kubetune.io/trial`): the names a
  Prometheus Operator PodMonitor with `podTargetLabels` produces, so queries work on both;
- the operator is scraped on port `metrics` of pods labelled `app.kubernetes.io/name: kubetune`,
  and at any target listed in `<home>/prometheus/targets/*.json` (file_sd, for an in-process
  operator in tests). A pod's annotation `kubetune.io/metrics-job` (the Helm chart sets it to its
  metrics Service's name) becomes the `job` label, as a ServiceMonitor would name it, so the chart's
  alerts (`up{job="<release>-kubetune-metrics"}`) see the dev cluster's operator.
Terminal pods (Succeeded/Failed) are dropped, as a PodMonitor does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCRAPE_LABEL = "kubetune.io/scrape"
METRICS_PATH_ANNOTATION = "kubetune.io/metrics-path"
METRICS_PORT_NAME = "metrics"
JOB_LABEL = "kubetune.io/job"
TRIAL_LABEL = "kubetune.io/trial"
OPERATOR_NAME_LABEL = "app.kubernetes.io/name"
OPERATOR_NAME = "kubetune"
OPERATOR_JOB_ANNOTATION = "kubetune.io/metrics-job"

TRIALS_JOB = "kubetune-trials"
OPERATOR_PODS_JOB = "kubetune-operator"
OPERATOR_STATIC_JOB = "kubetune-operator-static"


def meta_label(prefix: str, key: str) -> str:
    """Prometheus' sanitised name for a pod label/annotation key (`kubetune.io/job` -> `kubetune_io_job`)."""
    return prefix + "".join(c if c.isalnum() else "_" for c in key)


def _pod_label(key: str) -> str:
    return meta_label("__meta_kubernetes_pod_label_", key)


def _common_pod_relabels() -> list[dict[str, Any]]:
    return [
        {
            "source_labels": ["__meta_kubernetes_pod_container_port_name"],
            "regex": METRICS_PORT_NAME,
            "action": "keep",
        },
        {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Succeeded|Failed", "action": "drop"},
        {
            "source_labels": [meta_label("__meta_kubernetes_pod_annotation_", METRICS_PATH_ANNOTATION)],
            "regex": "(.+)",
            "target_label": "__metrics_path__",
            "action": "replace",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
    ]


def build_prometheus_config(*, kubeconfig: Path, targets_dir: Path, interval: str = "1s") -> dict[str, Any]:
    sd = [{"role": "pod", "kubeconfig_file": str(kubeconfig)}]
    trial_labels = [
        {"source_labels": [_pod_label(JOB_LABEL)], "target_label": meta_label("", JOB_LABEL)},
        {"source_labels": [_pod_label(TRIAL_LABEL)], "target_label": meta_label("", TRIAL_LABEL)},
    ]
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": TRIALS_JOB,
                "honor_labels": False,
                "kubernetes_sd_configs": sd,
                "relabel_configs": [
                    {"source_labels": [_pod_label(SCRAPE_LABEL)], "regex": "true", "action": "keep"},
                    *_common_pod_relabels(),
                    *trial_labels,
                ],
            },
            {
                "job_name": OPERATOR_PODS_JOB,
                "honor_labels": True,  # the operator labels its series by the jobs' namespaces
                "kubernetes_sd_configs": sd,
                "relabel_configs": [
                    {"source_labels": [_pod_label(OPERATOR_NAME_LABEL)], "regex": OPERATOR_NAME, "action": "keep"},
                    *_common_pod_relabels(),
                    {
                        "source_labels": [meta_label("__meta_kubernetes_pod_annotation_", OPERATOR_JOB_ANNOTATION)],
                        "regex": "(.+)",
                        "target_label": "job",
                        "action": "replace",
                    },
                ],
            },
            {
                "job_name": OPERATOR_STATIC_JOB,
                "honor_labels": True,
                "file_sd_configs": [{"files": [str(targets_dir / "*.json")], "refresh_interval": "5s"}],
            },
        ],
    }


def build_file_sd_targets(targets: Iterable[str], labels: dict[str, str] | None = None) -> str:
    """Content of a `targets/<name>.json` file: `["127.0.0.1:8080"]` -> Prometheus file_sd JSON."""
    return json.dumps([{"targets": list(targets), "labels": dict(labels or {})}], indent=2)
