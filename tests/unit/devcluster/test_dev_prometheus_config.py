"""The scrape contract the operator, trainer and Helm chart rely on (README "Scrape contract")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubetune_dev.prometheus import build_file_sd_targets, build_prometheus_config, meta_label


def config() -> dict[str, Any]:
    return build_prometheus_config(kubeconfig=Path("/h/kubeconfig"), targets_dir=Path("/h/targets"))


def job(name: str) -> dict[str, Any]:
    return next(j for j in config()["scrape_configs"] if j["job_name"] == name)


def test_meta_label_sanitises_like_prometheus() -> None:
    assert (
        meta_label("__meta_kubernetes_pod_label_", "kubetune.io/scrape")
        == "__meta_kubernetes_pod_label_kubetune_io_scrape"
    )


def test_one_second_intervals_for_tests() -> None:
    assert config()["global"] == {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}


def test_trial_pods_contract() -> None:
    trials = job("kubetune-trials")
    assert trials["honor_labels"] is False
    assert trials["kubernetes_sd_configs"] == [{"role": "pod", "kubeconfig_file": "/h/kubeconfig"}]
    rules = trials["relabel_configs"]
    keeps = {tuple(r["source_labels"]): r["regex"] for r in rules if r.get("action") == "keep"}
    assert keeps == {
        ("__meta_kubernetes_pod_label_kubetune_io_scrape",): "true",
        ("__meta_kubernetes_pod_container_port_name",): "metrics",
    }
    targets = {r["target_label"]: r["source_labels"][0] for r in rules if "target_label" in r}
    assert targets == {
        "__metrics_path__": "__meta_kubernetes_pod_annotation_kubetune_io_metrics_path",
        "namespace": "__meta_kubernetes_namespace",
        "pod": "__meta_kubernetes_pod_name",
        "container": "__meta_kubernetes_pod_container_name",
        "kubetune_io_job": "__meta_kubernetes_pod_label_kubetune_io_job",
        "kubetune_io_trial": "__meta_kubernetes_pod_label_kubetune_io_trial",
    }
    path_rule = next(r for r in rules if r.get("target_label") == "__metrics_path__")
    assert path_rule["regex"] == "(.+)"  # absent annotation keeps the default /metrics


def test_operator_pods_and_static_targets() -> None:
    pods = job("kubetune-operator")
    keep = pods["relabel_configs"][0]
    assert keep == {
        "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
        "regex": "kubetune",
        "action": "keep",
    }
    static = job("kubetune-operator-static")
    assert static["file_sd_configs"][0]["files"] == ["/h/targets/*.json"]
    # Trial targets never trust the pod's labels; the operator's per-job labels (namespace) are kept.
    honor = {j["job_name"]: j["honor_labels"] for j in config()["scrape_configs"]}
    assert honor == {"kubetune-trials": False, "kubetune-operator": True, "kubetune-operator-static": True}


def test_file_sd_targets_format() -> None:
    assert json.loads(build_file_sd_targets(["127.0.0.1:8080"], {"instance": "op"})) == [
        {"targets": ["127.0.0.1:8080"], "labels": {"instance": "op"}}
    ]
