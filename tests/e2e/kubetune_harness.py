"""Helpers for operator e2e tests: the operator as a real process, and polling reads of the cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from example_manifests import EXAMPLES_DIR, NAMESPACE_FILE, tuningjob
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from kubetune_dev.cluster import ClusterInfo
from kubetune_dev.testing import Kube, poll

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION = "kubetune.io", "v1alpha1"

# Every test namespace enforces Pod Security Admission `restricted`, with the labels of the examples' namespace.
POD_SECURITY_LABELS: dict[str, str] = {
    key: value
    for key, value in yaml.safe_load(NAMESPACE_FILE.read_text())["metadata"]["labels"].items()
    if key.startswith("pod-security.kubernetes.io/")
}

T = TypeVar("T")
POD_TIMEOUT = 120.0  # seconds a single pod gets to reach a phase


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 300.0, interval: float = 0.5) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    return poll(what, probe, timeout=timeout, interval=interval)


def create_namespace(core: client.CoreV1Api, name: str) -> str:
    """A namespace enforcing the `restricted` Pod Security Standard."""
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=POD_SECURITY_LABELS)))
    return name


def fresh_namespace(core: client.CoreV1Api, prefix: str) -> str:
    """A new namespace named `prefix-<random>` (restricted, like every test namespace)."""
    return create_namespace(core, f"{prefix}-{uuid.uuid4().hex[:6]}")


def restricted_pod_context() -> client.V1PodSecurityContext:
    """Pod-level settings the `restricted` profile requires (for pods tests build by hand)."""
    return client.V1PodSecurityContext(
        run_as_non_root=True, seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault")
    )


def restricted_container_context() -> client.V1SecurityContext:
    return client.V1SecurityContext(allow_privilege_escalation=False, capabilities=client.V1Capabilities(drop=["ALL"]))


def install_crds(api_client: client.ApiClient) -> None:
    """Create or replace the generated CRDs in crds/ and wait until they are served."""
    extensions = client.ApiextensionsV1Api(api_client)
    for path in sorted((REPO / "crds").glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        try:
            extensions.create_custom_resource_definition(manifest)
        except ApiException as error:
            if error.status != 409:
                raise
            current = extensions.read_custom_resource_definition(manifest["metadata"]["name"])
            manifest["metadata"]["resourceVersion"] = current.metadata.resource_version
            extensions.replace_custom_resource_definition(manifest["metadata"]["name"], manifest)

        def established(name: str = manifest["metadata"]["name"]) -> bool:
            crd = extensions.read_custom_resource_definition(name)
            return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

        wait_for(f"CRD {path.name} established", established, timeout=60)


class OperatorProcess:
    """`python -m kubetune.handlers.main` against the dev cluster; killable like a crashed pod."""

    def __init__(self, kubeconfig: Path, prometheus_url: str | None, log_path: Path, **env: str) -> None:
        self.kubeconfig = kubeconfig
        self.prometheus_url = prometheus_url
        self.log_path = log_path
        self.extra_env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "KUBETUNE_PROMETHEUS_URL": self.prometheus_url or "",
                "KUBETUNE_OPERATOR_METRICS_PORT": "0",
                "KUBETUNE_HEALTH_PORT": "0",
                "KUBETUNE_METRICS_POLL_SECONDS": "0.5",
                "PYTHONUNBUFFERED": "1",
                **self.extra_env,
            }
        )
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        log.write(f"\n===== operator start {self.starts} =====\n".encode())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kubetune.handlers.main"], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no cleanup, exactly what a node loss or OOM kill does."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Cluster:
    """Typed reads and writes of kubetune objects through the official client."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace

    def apply_example(self, file: str, name: str | None = None, **spec_overrides: Any) -> dict[str, Any]:
        manifest = tuningjob(EXAMPLES_DIR / file)
        if name is not None:
            manifest["metadata"]["name"] = name
        for key, value in spec_overrides.items():
            manifest["spec"][key] = value
        return self.create_job(manifest)

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "tuningjobs", manifest
        )
        return created

    def job(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "tuningjobs",
                                                                         name)
        return found

    def patch_job(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, "tuningjobs", name, patch)

    def trials(self, job: str) -> list[dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "trials", label_selector=f"kubetune.io/job={job}"
        )
        return sorted(listed["items"], key=lambda t: t["spec"]["index"])

    def pods(self, job: str) -> list[Any]:
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=f"kubetune.io/job={job}").items)

    def events(self, name: str) -> list[Any]:
        selector = f"involvedObject.name={name}"
        return list(self.core.list_namespaced_event(self.namespace, field_selector=selector).items)

    def table(self, plural: str) -> list[dict[str, Any]]:
        """What `kubectl get <plural>` prints, as the API server renders it (the CRD's printer columns):
        one {column: cell} per row, in the server's order."""
        api = self.custom.api_client
        raw = api.call_api("GET", f"{api.configuration.host}/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/"
                           f"{plural}", header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
        raw.read()
        response = json.loads(raw.data)
        columns = [c["name"] for c in response["columnDefinitions"]]
        return [dict(zip(columns, row["cells"], strict=True)) for row in response["rows"]]

    def all_events(self) -> list[Any]:
        return list(self.core.list_namespaced_event(self.namespace).items)

    def wait_finished(self, name: str, timeout: float = 600.0) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            job = self.job(name)
            return job if (job.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

        return wait_for(f"TuningJob {name} to finish", finished, timeout=timeout, interval=1.0)


# Prepended to a trial script that serves its own metrics: `serve_metrics()` serves prometheus_client's
# default registry on the contract's address, and `stay_until_scraped()` keeps the pod alive until the
# metrics were scraped twice after the call (bounded), so a late target discovery on a loaded machine cannot
# lose the final values the way a fixed sleep can.
SERVE_METRICS = """
import os, threading
from http.server import ThreadingHTTPServer
from prometheus_client import MetricsHandler
_scrapes = threading.Semaphore(0)
class _CountingHandler(MetricsHandler):
    def do_GET(self):
        super().do_GET()
        _scrapes.release()
def serve_metrics():
    address = (os.environ["KUBETUNE_METRICS_ADDRESS"], int(os.environ["KUBETUNE_METRICS_PORT"]))
    threading.Thread(target=ThreadingHTTPServer(address, _CountingHandler).serve_forever, daemon=True).start()
def stay_until_scraped(times=2, timeout=120.0):
    while _scrapes.acquire(blocking=False):
        pass  # scrapes before this call saw earlier values
    for _ in range(times):
        _scrapes.acquire(timeout=timeout)
"""


def script_trial_template(script: str, pod: dict[str, Any] | None = None, **container: Any) -> dict[str, Any]:
    """A trialTemplate whose one container runs `python -c script` (the dev agent ignores the image);
    `container` adds fields to that container, `pod` to the pod spec."""
    main = {"name": "trial", "image": "python:3.11-slim", "command": ["python", "-c", script], **container}
    return {"template": {"spec": {**(pod or {}), "containers": [main]}}}


# A trial as an indexed batch Job of two pods: rank 0 reports its score, rank 1 only works; `fail` makes rank 1
# exit 1.
INDEXED_JOB_SCRIPT = """
import json, os, sys, time
rank = int(os.environ["JOB_COMPLETION_INDEX"])
x, fail = float(sys.argv[1]), sys.argv[2] == "fail"
time.sleep(1)
if rank == 1 and fail:
    sys.exit(1)
if rank == 0:
    with open(os.environ["KUBETUNE_TERMINATION_MESSAGE_PATH"], "w") as out:
        json.dump({"status": "completed", "metrics": {"score": x}}, out)
"""


def score_job(name: str, trial_template: dict[str, Any], budget: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A TuningJob maximising the `score` its trials report for one parameter `x` in [0, 1]."""
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningJob",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "score", "goal": "maximize"},
            "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1}],
            "budget": budget,
            "trialTemplate": trial_template,
            **spec,
        },
    }


def indexed_job(name: str, mode: str, **budget: int) -> dict[str, Any]:
    """A TuningJob whose trials are indexed batch Jobs (trialTemplate.workload; the operator needs
    KUBETUNE_WORKLOAD_KINDS=batch/v1/jobs): three trials of `x` in [0, 1], two at a time, unless `budget` says
    otherwise; `mode` "fail" fails every attempt."""
    container = {"name": "trainer", "image": "python:3.11-slim",
                 "command": ["python", "-c", INDEXED_JOB_SCRIPT, "${params.x}", mode]}
    workload = {
        "apiVersion": "batch/v1", "kind": "Job",
        "spec": {"completionMode": "Indexed", "completions": 2, "parallelism": 2, "backoffLimit": 0,
                 "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}},
    }
    return score_job(name, {"retries": 1, "workload": workload}, {"maxTrials": 3, "parallelism": 2, **budget})


def condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (job.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def operator_samples(port: int) -> list[Sample]:
    """Every sample on an operator's /metrics, read with prometheus_client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def prometheus_query(url: str, promql: str) -> list[dict[str, Any]]:
    data = urllib.parse.urlencode({"query": promql}).encode()
    with urllib.request.urlopen(url.rstrip("/") + "/api/v1/query", data=data, timeout=10) as response:
        payload = json.load(response)
    assert payload["status"] == "success", payload
    result: list[dict[str, Any]] = payload["data"]["result"]
    return result


def phase(kube: Kube, namespace: str, name: str) -> str:
    return str(kube.core.read_namespaced_pod(name, namespace).status.phase)


def wait_phase(kube: Kube, namespace: str, name: str, *phases: str, timeout: float = POD_TIMEOUT) -> client.V1Pod:
    def reached() -> client.V1Pod | None:
        pod = kube.core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase in phases else None

    return poll(f"pod {namespace}/{name} in {phases}", reached, timeout)


def wait_gone(kube: Kube, namespace: str, name: str, timeout: float = POD_TIMEOUT) -> None:
    def gone() -> bool:
        try:
            kube.core.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    poll(f"pod {namespace}/{name} deleted", gone, timeout)


def kubectl(info: ClusterInfo, *args: str) -> str:
    env = dict(os.environ, KUBECONFIG=str(info.kubeconfig))
    return subprocess.run(["kubectl", *args], env=env, check=True, capture_output=True, text=True, timeout=60).stdout
