"""The Helm chart in the dev cluster: `helm install`, the operator as the chart's pod under the chart's
ServiceAccount (RBAC enforced by the real API server), a TuningJob to Succeeded, every PromQL expression
of the dashboard and the alerts on the real Prometheus, `helm uninstall` leftovers, and each RBAC rule
shown necessary by installing the chart without it (with `workloadKinds` granting batch Jobs, whose rule an
indexed-Job TuningJob needs).

The dev cluster's node agent runs the chart's unchanged `kubetune operator` command as a host process
(helm/kubetune/ci/dev-values.yaml says how); the job's trials are small Python scripts that report through
the real trial contract (`kubetune.report`), so the module stays fast.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubetune_harness import (
    REPO,
    Cluster,
    create_namespace,
    fresh_namespace,
    indexed_job,
    install_crds,
    script_trial_template,
    wait_for,
)

from kubetune.dashboard import alert_rules, dashboard_query_list
from kubetune.k8s.sync import KubeApi
from kubetune_dev.cluster import ClusterInfo
from kubetune_dev.layout import default_bin_dir

pytestmark = pytest.mark.e2e

CHART = REPO / "helm" / "kubetune"
DEV_VALUES = CHART / "ci" / "dev-values.yaml"
CHART_README = CHART / "README.md"
RELEASE, RELEASE_NAMESPACE = "kt", "kubetune-system"
RBAC_NAMESPACE = "kubetune-rbac"
INSTANCE_LABEL = "app.kubernetes.io/instance"
JOB = "chart-smoke"
TRIALS = 3
# Every release may run trials as indexed batch Jobs (trialTemplate.workload): `helm test` checks the chart's
# rule for them live, and the RBAC releases run such a job.
WORKLOAD_KINDS = json.dumps([{"group": "batch", "version": "v1", "resource": "jobs"}])
WORKLOAD_JOB, WORKLOAD_TRIALS = "chart-workload", 2
# Ports other than the defaults: the chart's port values must reach the operator, its probes, its metrics
# Service and the trials' scrape annotations.
TRIAL_METRICS_PORT = 18437
OPERATOR_METRICS_PORT, OPERATOR_HEALTH_PORT = 19102, 18081

# Ten steps of a curve whose height is the trial's `quality`, reported like any trainer. Weak trials are
# slow (0.4 s / quality a step): the strong ones pass each rung first, so ASHA stops the weakest at its
# first rung, whatever the order of the trials and the pods' start-up times.
TRIAL_SCRIPT = """
import os, time, kubetune
quality = float(os.environ["KUBETUNE_PARAM_QUALITY"])
for step in range(1, 11):
    time.sleep(0.4 / quality)
    kubetune.report(step=step, val_accuracy=quality * step / 10)
kubetune.finish(status="completed")
"""

# Post-renderer for `helm install --post-renderer`: the chart's manifests with rule N removed from
# every Role and ClusterRole.
DROP_RULE = """
import sys, yaml
index = int(sys.argv[1])
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
for doc in docs:
    if doc["kind"] in ("Role", "ClusterRole"):
        del doc["rules"][index]
yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
"""


def helm_binary() -> Path:
    return default_bin_dir() / "helm"


def rendered_rules() -> list[dict[str, Any]]:
    """The rules of the ClusterRole `helm template` renders with the RBAC releases' workloadKinds (the list the
    tests drop from): the defaults' rules, then the batch Jobs' rule."""
    if not helm_binary().exists():
        pytest.skip(f"helm is not built at {helm_binary()}: run `make binaries`", allow_module_level=True)
    out = subprocess.run(
        [str(helm_binary()), "template", RELEASE, str(CHART), "--show-only", "templates/rbac.yaml",
         "--set-json", f"workloadKinds={WORKLOAD_KINDS}"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    roles = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "ClusterRole"]
    assert len(roles) == 1, out
    rules: list[dict[str, Any]] = roles[0]["rules"]
    return rules


RULES = rendered_rules()


def rule_id(rule: dict[str, Any]) -> str:
    return "+".join(rule["resources"]).replace("/", "-")


class Helm:
    """The pinned helm binary against the dev cluster, with its own cache and config."""

    def __init__(self, cluster: ClusterInfo, home: Path) -> None:
        self.binary = cluster.bin_dir / "helm"
        self.env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self.prometheus_url = cluster.prometheus_url

    def __call__(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run([str(self.binary), *args], capture_output=True, text=True, env=self.env,
                                timeout=timeout, check=False)
        assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr}{result.stdout}"
        return result.stdout

    def install(self, release: str, namespace: str, *args: str) -> str:
        """The chart with the dev cluster's values; the operator reads the dev Prometheus."""
        return self(
            "install", release, str(CHART), "--namespace", namespace, "--create-namespace",
            "-f", str(DEV_VALUES), "--set", f"operator.prometheusUrl={self.prometheus_url}",
            "--set", f"metrics.port={OPERATOR_METRICS_PORT}", "--set", f"operator.healthPort={OPERATOR_HEALTH_PORT}",
            *args,
        )


def job_manifest(name: str) -> dict[str, Any]:
    """Three trials of qualities 0.1, 0.5 and 0.9, two at a time, ASHA with rungs at steps 2, 4 and 8: a trial
    is stopped at a rung where a better one was before it. Objectives: val_accuracy and its wall-clock cost."""
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningJob",
        "metadata": {"name": name},
        "spec": {
            # Two objectives, so the dashboard's Pareto panels have a front to show; ASHA acts on the primary.
            "objectives": [{"metric": "val_accuracy", "goal": "maximize"},
                           {"metric": "kubetune:wall_seconds", "goal": "minimize"}],
            "parameters": [{"name": "quality", "type": "discrete", "values": [0.1, 0.5, 0.9]}],
            "algorithm": {"name": "grid"},
            "earlyStopping": {"rule": "asha", "minResource": 2, "maxResource": 10, "reductionFactor": 2},
            "budget": {"maxTrials": TRIALS, "parallelism": 2, "maxFailedTrials": 0},
            "trialTemplate": {
                "metricsPort": TRIAL_METRICS_PORT,
                **script_trial_template(TRIAL_SCRIPT, resources={"requests": {"cpu": "10m", "memory": "64Mi"}}),
            },
        },
    }


def completion_problems(cluster: Cluster, name: str, trials: int = TRIALS) -> list[str]:
    """What keeps the job of `trials` trials from having completed correctly: phase, counts, best trial, Events.
    Empty: correct."""
    try:
        job = cluster.job(name)
    except ApiException as exc:
        return [f"cannot read the job: {exc.status}"]
    status = job.get("status") or {}
    problems = []
    if status.get("phase") != "Succeeded":
        problems.append(f"phase {status.get('phase')!r}")
    counts = status.get("counts") or {}
    if counts.get("created") != trials or counts.get("failed") or (
        counts.get("succeeded", 0) + counts.get("earlyStopped", 0) != trials
    ):
        problems.append(f"counts {counts}")
    if not (status.get("bestTrial") or {}).get("name"):
        problems.append("no bestTrial")
    for trial in cluster.trials(name):
        trial_status = trial.get("status") or {}
        if trial_status.get("phase") == "Failed":
            problems.append(f"trial {trial['metadata']['name']} failed: {trial_status.get('reason')}: "
                            f"{str(trial_status.get('message'))[:300]}")
    for pod in cluster.pods(name):
        if pod.status.phase == "Failed":
            tail = cluster.core.read_namespaced_pod_log(pod.metadata.name, cluster.namespace)[-1500:]
            problems.append(f"pod {pod.metadata.name} failed; its log:\n{tail}")
    reasons = {e.reason for e in cluster.core.list_namespaced_event(cluster.namespace).items}
    for wanted in ("TrialCreated", "TrialSucceeded"):
        if wanted not in reasons:
            problems.append(f"no {wanted} Event (Events: {sorted(r for r in reasons if r)})")
    return problems


def operator_pod(core: client.CoreV1Api, namespace: str, release: str) -> client.V1Pod | None:
    pods = core.list_namespaced_pod(
        namespace, label_selector=f"{INSTANCE_LABEL}={release},app.kubernetes.io/component=operator"
    ).items
    return pods[0] if pods else None


def running_operator(core: client.CoreV1Api, namespace: str, release: str) -> client.V1Pod:
    def running() -> client.V1Pod | None:
        pod = operator_pod(core, namespace, release)
        return pod if pod is not None and pod.status.phase == "Running" else None

    return wait_for(f"operator pod of {release} running", running, timeout=180)


def operator_log(core: client.CoreV1Api, namespace: str, release: str) -> str:
    """The operator's log through the API server (the node agent serves the kubelet's log endpoint)."""
    pod = operator_pod(core, namespace, release)
    if pod is None:
        return "<no operator pod>"
    return str(core.read_namespaced_pod_log(pod.metadata.name, namespace, container="operator"))


def adopt_crds(api: client.ApiClient, release: str, namespace: str) -> None:
    """CRDs an earlier test module applied with the client are handed to the release, as the chart README
    tells users who applied `crds/` with kubectl before installing."""
    extensions = client.ApiextensionsV1Api(api)
    ownership = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "Helm"}, "annotations": {
        "meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace}}}
    for crd in extensions.list_custom_resource_definition().items:
        if crd.spec.group == "kubetune.io":
            extensions.patch_custom_resource_definition(crd.metadata.name, ownership)


# --------------------------------------------------------------------------- the install


@dataclass
class Install:
    helm: Helm
    api: client.ApiClient
    cluster: Cluster  # the job's namespace
    started: float  # when the job was created (epoch seconds)
    finished: float


@pytest.fixture(scope="module")
def api(dev_cluster: ClusterInfo) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(dev_cluster.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture(scope="module")
def helm(dev_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(dev_cluster, tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def install(helm: Helm, api: client.ApiClient) -> Iterator[Install]:
    """`helm install` (cluster-wide, CRDs from the chart), then one TuningJob run to its end."""
    core = client.CoreV1Api(api)
    create_namespace(core, RELEASE_NAMESPACE)  # the operator and the helm test pod pass `restricted` too
    adopt_crds(api, RELEASE, RELEASE_NAMESPACE)
    helm.install(RELEASE, RELEASE_NAMESPACE, "--set-json", f"workloadKinds={WORKLOAD_KINDS}", "--wait",
                 "--timeout", "5m")
    namespace = fresh_namespace(core, "chart")
    cluster = Cluster(api, namespace)
    started = time.time()
    cluster.create_job(job_manifest(JOB))
    try:
        cluster.wait_finished(JOB, timeout=300)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{operator_log(core, RELEASE_NAMESPACE, RELEASE)[-4000:]}") from exc
    yield Install(helm, api, cluster, started, time.time())
    helm("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--ignore-not-found", "--wait")
    core.delete_namespace(namespace)


def test_the_chart_operator_completes_a_job_with_its_service_account(install: Install) -> None:
    core = install.cluster.core
    pod = running_operator(core, RELEASE_NAMESPACE, RELEASE)
    assert pod.spec.service_account_name == f"{RELEASE}-kubetune"
    # The agent runs it with the pod's own token (the ServiceAccount admission plugin's projected volume)
    # and nothing pointing at the admin kubeconfig: Credentials.load() takes the in-cluster path. The
    # RBAC tests below show the API server answering that ServiceAccount.
    assert any(v.projected and any(s.service_account_token for s in v.projected.sources) for v in pod.spec.volumes)
    assert "KUBECONFIG" not in {e.name for e in pod.spec.containers[0].env}
    assert ipaddress.ip_address(pod.status.pod_ip).is_loopback and pod.status.pod_ip != "127.0.0.1", pod.status.pod_ip

    problems = completion_problems(install.cluster, JOB)
    assert problems == [], "\n".join([*problems, operator_log(core, RELEASE_NAMESPACE, RELEASE)[-4000:]])
    job = install.cluster.job(JOB)
    # ASHA stopped a weaker trial: its pod was deleted (the pods `delete` verb).
    assert job["status"]["counts"]["earlyStopped"] >= 1, [
        (t["spec"]["parameters"], t["status"]) for t in install.cluster.trials(JOB)
    ]
    stopped = [t for t in install.cluster.trials(JOB) if t["status"]["phase"] == "EarlyStopped"]
    assert stopped and stopped[0]["status"]["earlyStopping"]["rule"] == "asha"
    reasons = {e.reason for e in install.cluster.core.list_namespaced_event(install.cluster.namespace).items}
    assert "TrialEarlyStopped" in reasons

    # `helm test`: the chart's self-check pod (python -c files/selftest.py under the same ServiceAccount).
    out = install.helm("test", RELEASE, "--namespace", RELEASE_NAMESPACE, "--timeout", "3m")
    assert "Phase:          Succeeded" in out, out


# --------------------------------------------------------------------------- PromQL on the real Prometheus

# Valid queries that return nothing on this run, by design, with the reason.
EMPTY_BY_DESIGN: dict[str, str] = {
    "panel GPU memory per trial": "no GPU in the dev cluster: trials report gpu_memory_bytes only on CUDA",
    "panel GPU memory, all trials": "no GPU in the dev cluster: trials report gpu_memory_bytes only on CUDA",
    "panel Errors": "no reconcile raised and no Prometheus query failed: the error counters have no series",
    "alert KubetuneOperatorDown": "the operator is up: absent(up == 1) is empty",
    "alert KubetuneTrialsFailing": "no trial failed",
    "alert KubetuneTuningJobStalled": "the job finished; stalling needs an hour without a finished trial",
    "alert KubetunePrometheusErrors": "the operator's Prometheus queries all succeeded",
}
# Series an alert reads that do not exist on this run, by design.
ABSENT_INPUTS: dict[str, str] = {
    'kubetune_trials_finished_total{outcome="Failed"}': "no trial failed",
    "kubetune_prometheus_errors_total": "no Prometheus query failed",
}


def has_data(url: str, kind: str, expr: str, start: float, end: float) -> bool:
    """Whether `expr`, run as Grafana runs it over [start, end], returns a number that is not NaN
    (a histogram quantile without observations is NaN); a `series` query, whether any series matches."""
    if kind == "series":
        params = {"match[]": expr, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        endpoint = "series"
    elif kind == "range":
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "2"}
        endpoint = "query_range"
    else:
        params = {"query": expr, "time": f"{end:.3f}"}
        endpoint = "query"
    data = urllib.parse.urlencode(params).encode()
    with urllib.request.urlopen(f"{url}/api/v1/{endpoint}", data=data, timeout=30) as response:
        payload = json.load(response)
    assert payload["status"] == "success", (expr, payload)
    if kind == "series":
        return bool(payload["data"])
    results: list[dict[str, Any]] = payload["data"]["result"]
    samples = [v for r in results for v in (r.get("values") or [r["value"]])]
    return any(not math.isnan(float(value)) for _, value in samples)


def alert_inputs(expr: str) -> set[str]:
    """The vector selectors an alert expression reads (`metric` or `metric{matchers}`)."""
    return set(re.findall(r"\b(up\{[^}]*\}|kubetune_[a-z_]+(?:\{[^}]*\})?)", expr))


def test_every_dashboard_and_alert_query_returns_data(install: Install, dev_cluster: ClusterInfo) -> None:
    url = dev_cluster.prometheus_url
    start = install.started - 5
    # Grafana's variables as a user looking at this job over its run would have them.
    window = f"{math.ceil(time.time() - start) + 60}s"
    values = {"$namespace": install.cluster.namespace, "$tuningjob": JOB, "$metric": "val_accuracy",
              "$__range": window, "$__rate_interval": "1m", "$__interval": "2s"}
    queries = [(q.source, q.kind, q.expr) for q in dashboard_query_list(values=values)]
    rendered = install.helm(
        "template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true",
        "--show-only", "templates/prometheusrule.yaml",
    )
    alerts = alert_rules(rendered)
    assert len(alerts) == 4
    queries += [(f"alert {name}", "instant", expr) for name, expr in alerts.items()]
    # Each series an alert reads exists (right names and labels: the operator's `up` has the chart's job).
    inputs = set().union(*(alert_inputs(expr) for expr in alerts.values())) - set(ABSENT_INPUTS)
    queries += [(f"alert input {selector}", "instant", f"last_over_time({selector}[{window}])") for selector in inputs]
    assert any(s.startswith('up{job="kt-kubetune-metrics"') for s in inputs), inputs

    def outcomes() -> dict[tuple[str, str], bool] | None:
        end = time.time()
        got = {(source, expr): has_data(url, kind, expr, start, end) for source, kind, expr in queries}
        wrong = [k for k, data in got.items() if data == (k[0] in EMPTY_BY_DESIGN)]
        return None if wrong else got

    try:
        wait_for("every query to return data (or nothing, by design)", outcomes, timeout=60, interval=3)
    except AssertionError:
        end = time.time()
        report = {
            f"{source}: {expr}": "data" if has_data(url, kind, expr, start, end) else "EMPTY"
            for source, kind, expr in queries
        }
        wrong = {k: v for k, v in report.items() if (v == "data") == (k.split(":")[0] in EMPTY_BY_DESIGN)}
        log = operator_log(install.cluster.core, RELEASE_NAMESPACE, RELEASE)
        raise AssertionError(f"unexpected results (empty by design: {sorted(EMPTY_BY_DESIGN)}):\n"
                             + "\n".join(f"{v}  {k}" for k, v in wrong.items())
                             + f"\noperator log:\n{log[-6000:]}") from None
    # Absent alert inputs stay absent, as their reasons say.
    for selector in ABSENT_INPUTS:
        assert not has_data(url, "instant", f"last_over_time({selector}[{window}])", start, time.time()), selector


# --------------------------------------------------------------------------- helm uninstall


def leftovers(kubeconfig: Path, release: str) -> set[tuple[str, str]]:
    """(kind, namespace/name) of every object of every listable API resource labelled with the release."""
    api = KubeApi.from_kubeconfig(kubeconfig)
    found: set[tuple[str, str]] = set()
    bases = ["/api/v1"] + [f"/apis/{g['preferredVersion']['groupVersion']}" for g in api.get("/apis")["groups"]]
    for base in bases:
        for resource in api.get(base)["resources"]:
            if "/" in resource["name"] or "list" not in resource["verbs"]:
                continue
            listing = api.get(f"{base}/{resource['name']}", labelSelector=f"{INSTANCE_LABEL}={release}")
            for item in listing["items"]:
                meta = item["metadata"]
                if meta.get("deletionTimestamp") is None:
                    found.add((resource["kind"], f"{meta.get('namespace', '')}/{meta['name']}".lstrip("/")))
    return found


def documented_leftovers() -> set[tuple[str, str]]:
    """What helm/kubetune/README.md's "Uninstall" section says stays, by kind and name (CRDs with crds.keep)."""
    section = CHART_README.read_text().split("## Uninstall", 1)[1].split("\n## ", 1)[0]
    return {("CustomResourceDefinition", name) for name in re.findall(r"`([a-z]+\.kubetune\.io)`", section)}


def test_uninstall_leaves_only_what_is_documented(install: Install, dev_cluster: ClusterInfo) -> None:
    assert leftovers(dev_cluster.kubeconfig, RELEASE) >= {("Deployment", f"{RELEASE_NAMESPACE}/{RELEASE}-kubetune")}
    install.helm("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", "--timeout", "3m")
    documented = documented_leftovers()
    assert documented == {("CustomResourceDefinition", "tuningjobs.kubetune.io"),
                          ("CustomResourceDefinition", "trials.kubetune.io")}
    # The operator pod goes through the garbage collector after its ReplicaSet: give it time.
    wait_for("only the documented objects left", lambda: leftovers(dev_cluster.kubeconfig, RELEASE) == documented,
             timeout=120)
    secrets = install.cluster.core.list_namespaced_secret(RELEASE_NAMESPACE,
                                                          label_selector=f"owner=helm,name={RELEASE}")
    assert secrets.items == [], "helm's release record should be gone"
    # Kept CRDs keep the studies: the job and its results are still there.
    assert install.cluster.job(JOB)["status"]["phase"] == "Succeeded"


# --------------------------------------------------------------------------- every RBAC rule is needed


@dataclass
class RbacRun:
    release: str
    cluster: Cluster
    problems: list[str]
    log: str


def rbac_problems(cluster: Cluster) -> list[str]:
    """What keeps either job of an RBAC release from having completed correctly, each named by its job."""
    return [f"{name}: {problem}" for name, trials in ((JOB, TRIALS), (WORKLOAD_JOB, WORKLOAD_TRIALS))
            for problem in completion_problems(cluster, name, trials)]


@pytest.fixture(scope="module")
def rbac_runs(helm: Helm, api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        dict[str, RbacRun]]:
    """One release per rule of the chart's RBAC (workloadKinds: batch Jobs), installed with that rule removed,
    plus a control release with every rule, all at once: each watches only its own namespace (a Role there),
    runs the same two jobs (pod trials, and indexed-Job trials), and has as long as the control needs to
    complete them, and half as long again."""
    install_crds(api)  # the kept CRDs, or fresh ones when run alone
    core = client.CoreV1Api(api)
    create_namespace(core, RBAC_NAMESPACE)
    # A cluster-wide operator of the main release would reconcile these jobs too.
    helm("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--ignore-not-found", "--wait")
    wait_for("no operator of the main release", lambda: operator_pod(core, RELEASE_NAMESPACE, RELEASE) is None,
             timeout=120)
    drop_script = tmp_path_factory.mktemp("post-renderer") / "drop_rule.py"
    drop_script.write_text(DROP_RULE)
    runs: dict[str, RbacRun] = {}
    cases = [("control", None)] + [(f"drop-{i}", i) for i in range(len(RULES))]
    try:
        for case, index in cases:
            release = f"rbac-{case}"
            namespace = fresh_namespace(core, f"rbac-{case}")
            extra = [] if index is None else [
                "--post-renderer", sys.executable, "--post-renderer-args", str(drop_script),
                "--post-renderer-args", str(index),
            ]
            helm.install(release, RBAC_NAMESPACE, "--set-json", f'watchNamespaces=["{namespace}"]',
                         "--set-json", f"workloadKinds={WORKLOAD_KINDS}", "--set", "crds.enabled=false", *extra)
            runs[case] = RbacRun(release, Cluster(api, namespace), [], "")
        for run in runs.values():
            run.cluster.create_job(job_manifest(JOB))
            run.cluster.create_job(indexed_job(WORKLOAD_JOB, "ok", maxTrials=WORKLOAD_TRIALS))
        started = time.monotonic()
        control = runs["control"]
        try:
            wait_for("the control jobs to complete", lambda: not rbac_problems(control.cluster),
                     timeout=360, interval=2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {rbac_problems(control.cluster)}\n"
                                 f"{operator_log(core, RBAC_NAMESPACE, control.release)[-4000:]}") from exc
        time.sleep(max(15.0, 0.5 * (time.monotonic() - started)))
        for run in runs.values():
            run.problems = rbac_problems(run.cluster)
            run.log = operator_log(core, RBAC_NAMESPACE, run.release)
        yield runs
    finally:
        for run in runs.values():
            helm("uninstall", run.release, "--namespace", RBAC_NAMESPACE, "--timeout", "2m")
            core.delete_namespace(run.cluster.namespace)


def test_rbac_control_release_completes_the_jobs(rbac_runs: dict[str, RbacRun]) -> None:
    """With every rule, both the pod-trial job and the indexed-Job (workload) job complete."""
    assert rbac_runs["control"].problems == []
    assert "forbidden" not in rbac_runs["control"].log.lower()


@pytest.mark.parametrize("index", range(len(RULES)), ids=[rule_id(r) for r in RULES])
def test_removing_an_rbac_rule_breaks_the_job(rbac_runs: dict[str, RbacRun], index: int) -> None:
    rule = RULES[index]
    run = rbac_runs[f"drop-{index}"]
    assert run.problems, f"the jobs completed correctly without the rule {rule}: the rule is dead weight"
    if rule.get("apiGroups") == ["batch"] and rule["resources"] == ["jobs"]:
        # The workloadKinds rule: the operator finds at start that it cannot list Jobs and leaves them unwatched
        # (Kopf would otherwise hold every handler), so only the indexed-Job job fails, saying why.
        assert not [p for p in run.problems if p.startswith(f"{JOB}:")], run.problems
        workload_job = run.cluster.job(WORKLOAD_JOB)
        assert workload_job["status"]["phase"] == "Failed", workload_job["status"]
        assert "could not watch jobs.batch v1" in workload_job["status"]["message"], workload_job["status"]
    # The API server refused the chart's ServiceAccount exactly what the rule granted.
    user = f'User "system:serviceaccount:{RBAC_NAMESPACE}:{run.release}-kubetune"'
    refused = [
        line for line in run.log.splitlines()
        if user in line and any(f'cannot {verb} resource \\"{r}\\"' in line or f'cannot {verb} resource "{r}"' in line
                                for verb in rule["verbs"] for r in rule["resources"])
    ]
    assert refused, f"no 403 for {rule} by {user} in the operator log:\n{run.log[-4000:]}"
    print(f"without {rule}: {run.problems}; the API server: {refused[0][-300:]}")
