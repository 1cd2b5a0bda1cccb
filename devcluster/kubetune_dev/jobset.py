"""The JobSet controller (sigs.k8s.io/jobset) on the dev cluster: its configuration, CRD and webhooks.

JobSet trials (trialTemplate.workload) need the real controller, and it needs its admission webhooks:
they default a JobSet's success policy, network and failure policy, without which the controller
refuses to run it. In a cluster the controller mints its own certificate for the in-cluster Service
name; here it runs as a host process like the rest of the control plane, so the dev cluster turns
that off, gives it a serving certificate for 127.0.0.1 from the cluster CA (pki.py), and registers
the same four webhooks as JobSet's release manifests (config/components/webhook) by URL.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import yaml

from kubetune.k8s.sync import KubeApi

JOBSET_BINARY = "jobset-controller"
# Installed next to the binary by hack/build-binaries.sh, from the same module version.
CRD_FILE = "jobset.x-k8s.io_jobsets.yaml"
WEBHOOK_NAMES = ("kubetune-dev-jobset-mutating", "kubetune-dev-jobset-validating")
# A pod webhook applies to JobSet's own pods only (the objectSelector of the release manifests).
JOBSET_PODS = {"matchExpressions": [{"key": "jobset.sigs.k8s.io/jobset-name", "operator": "Exists"}]}


def build_config(*, webhook_port: int, health_port: int, cert_dir: Path) -> dict[str, Any]:
    """The controller's Configuration (config.jobset.x-k8s.io/v1alpha1)."""
    return {
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},  # off: nothing here scrapes it, and it would take a port
    }


def build_command(*, bin_dir: Path, config_file: Path, kubeconfig: Path) -> list[str]:
    return [str(bin_dir / JOBSET_BINARY), f"--config={config_file}", f"--kubeconfig={kubeconfig}"]


def _webhook(name: str, path: str, *, url: str, ca_pem: bytes, resource: str, operations: list[str]) -> dict[str, Any]:
    group, version = ("", "v1") if resource == "pods" else ("jobset.x-k8s.io", "v1alpha2")
    hook: dict[str, Any] = {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"url": url + path, "caBundle": base64.b64encode(ca_pem).decode()},
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "rules": [{"apiGroups": [group], "apiVersions": [version], "operations": operations,
                   "resources": [resource]}],
    }
    if resource == "pods":
        hook["objectSelector"] = JOBSET_PODS
    return hook


def build_webhook_configurations(*, webhook_port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    url = f"https://127.0.0.1:{webhook_port}"
    mutating, validating = WEBHOOK_NAMES
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": mutating},
            "webhooks": [
                _webhook("mjobset.kb.io", "/mutate-jobset-x-k8s-io-v1alpha2-jobset", url=url, ca_pem=ca_pem,
                         resource="jobsets", operations=["CREATE"]),
                _webhook("mpod.kb.io", "/mutate--v1-pod", url=url, ca_pem=ca_pem, resource="pods",
                         operations=["CREATE"]),
            ],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": validating},
            "webhooks": [
                _webhook("vjobset.kb.io", "/validate-jobset-x-k8s-io-v1alpha2-jobset", url=url, ca_pem=ca_pem,
                         resource="jobsets", operations=["CREATE", "UPDATE"]),
                _webhook("vpod.kb.io", "/validate--v1-pod", url=url, ca_pem=ca_pem, resource="pods",
                         operations=["CREATE"]),
            ],
        },
    ]


def install(api: KubeApi, *, bin_dir: Path, webhook_port: int, ca_pem: bytes, deadline: float) -> None:
    """The CRD and the webhooks, applied server-side before the controller starts: it exits when its
    kind is not served yet."""
    crd = yaml.safe_load((bin_dir / CRD_FILE).read_text())
    for manifest in [crd, *build_webhook_configurations(webhook_port=webhook_port, ca_pem=ca_pem)]:
        api.apply(manifest, field_manager="kubetune-dev")
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
    while not _established(api.get(path)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the JobSet CRD was not established in time: {path}")
        time.sleep(0.2)


def _established(crd: dict[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
