"""Pod Security Admission on the dev API server: test namespaces enforce `restricted`, and trial pods pass it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from example_manifests import NAMESPACE_FILE, example_files, tuningjob
from kubernetes.client.rest import ApiException
from kubetune_harness import POD_SECURITY_LABELS

from kubetune.api import TuningJob
from kubetune.controller.templates import trial_pods
from kubetune_dev.testing import Kube

pytestmark = pytest.mark.e2e

JOB_EXAMPLES = example_files()


def plain_pod(name: str, **container: Any) -> dict[str, Any]:
    """A pod as people write it: no securityContext (fine under `baseline`, not under `restricted`)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["true"], **container}]},
    }


def test_test_namespaces_carry_the_example_namespace_labels(kube: Kube, namespace: str) -> None:
    example = yaml.safe_load(NAMESPACE_FILE.read_text())
    assert example["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    labels = kube.core.read_namespace(namespace).metadata.labels
    assert POD_SECURITY_LABELS and labels.items() >= POD_SECURITY_LABELS.items()


@pytest.mark.parametrize(
    "container",
    [{}, {"securityContext": {"privileged": True}}, {"securityContext": {"runAsUser": 0, "runAsNonRoot": False}}],
    ids=["no-security-context", "privileged", "root"],
)
def test_non_compliant_pods_are_rejected(kube: Kube, namespace: str, container: dict[str, Any]) -> None:
    with pytest.raises(ApiException) as caught:
        kube.core.create_namespaced_pod(namespace, plain_pod("plain", **container))
    assert caught.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in json.loads(caught.value.body)["message"]


@pytest.mark.parametrize("path", JOB_EXAMPLES, ids=lambda p: p.stem)
def test_trial_pods_of_every_example_are_admitted(kube: Kube, namespace: str, path: Path) -> None:
    """The operator's pod (or each pod template of its workload), exactly as built, through every admission
    plugin (server-side dry run)."""
    manifest = tuningjob(path)
    manifest["metadata"] = {"name": "psa", "namespace": namespace, "uid": "00000000-0000-0000-0000-000000000000"}
    job = TuningJob.model_validate(manifest)
    parameters = {p.name: (p.values[0] if p.values else p.min) for p in job.spec.parameters}
    pods = trial_pods(job, "psa-0", 1, parameters)
    assert pods
    for pod in pods:
        for container in pod["spec"]["containers"]:  # the typed client wants quantities as strings
            for kind in ("requests", "limits"):
                quantities = (container.get("resources") or {}).get(kind) or {}
                quantities.update({k: str(v) for k, v in quantities.items()})
        created = kube.core.create_namespaced_pod(namespace, pod, dry_run="All")
        assert created.spec.automount_service_account_token is False
        # Admission added no token volume: trials cannot reach the API server as the namespace's ServiceAccount.
        assert not [v for v in created.spec.volumes or [] if v.name.startswith("kube-api-access")]
