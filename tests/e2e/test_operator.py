"""The operator end to end: real API server, controllers, node agent, Prometheus and trainer."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubetune_harness import (
    REPO,
    SERVE_METRICS,
    Cluster,
    OperatorProcess,
    condition,
    fresh_namespace,
    install_crds,
    prometheus_query,
    score_job,
    script_trial_template,
    wait_for,
)

from kubetune_dev.cluster import ClusterInfo, DevCluster


@pytest.fixture(scope="module")
def api(dev_cluster: ClusterInfo) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(dev_cluster.kubeconfig))
    install_crds(api_client)
    yield api_client
    api_client.close()


def make_namespace(api_client: client.ApiClient, prefix: str) -> str:
    return fresh_namespace(client.CoreV1Api(api_client), prefix)


@pytest.fixture(scope="module")
def tuning(api: client.ApiClient, dev_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Cluster, OperatorProcess]]:
    """One namespace and one operator process watching only it."""
    namespace = make_namespace(api, "tune")
    operator = OperatorProcess(
        dev_cluster.kubeconfig, dev_cluster.prometheus_url, tmp_path_factory.mktemp("operator") / "operator.log",
        KUBETUNE_NAMESPACES=namespace,
    )
    operator.start()
    yield Cluster(api, namespace), operator
    operator.stop()
    client.CoreV1Api(api).delete_namespace(namespace)


def trial_epochs(trial: dict[str, Any]) -> int:
    intermediate = (trial.get("status") or {}).get("intermediate") or []
    return int(max((step for step, _ in intermediate), default=0))


def test_bayesian_job_completes_with_best_trial_and_prometheus_series(
    tuning: tuple[Cluster, OperatorProcess], dev_cluster: ClusterInfo
) -> None:
    cluster, operator = tuning
    cluster.apply_example("digits-bayesian.yaml")
    job = cluster.wait_finished("digits-bayesian", timeout=900)
    assert job["status"]["phase"] == "Succeeded", (job["status"], operator.log_tail())
    succeeded = condition(job, "Succeeded")
    assert succeeded is not None and succeeded["reason"] == "MaxTrialsReached"

    trials = cluster.trials("digits-bayesian")
    assert [t["metadata"]["name"] for t in trials] == [f"digits-bayesian-{i}" for i in range(12)]
    assert all(t["status"]["phase"] == "Succeeded" for t in trials), [t["status"] for t in trials]
    best = max(trials, key=lambda t: t["status"]["objective"])
    assert job["status"]["bestTrial"]["name"] == best["metadata"]["name"]
    assert job["status"]["bestTrial"]["objective"] == best["status"]["objective"]
    assert job["status"]["bestTrial"]["objective"] > 0.8  # a real model on digits
    assert job["status"]["counts"] == {"created": 12, "pending": 0, "running": 0, "succeeded": 12, "failed": 0,
                                       "earlyStopped": 0, "cancelled": 0}
    assert job["status"]["progress"] == "12/12"
    # Every trial's curve reached Prometheus through pod discovery.
    series = prometheus_query(
        dev_cluster.prometheus_url,
        f'count by (kubetune_io_trial) (last_over_time(kubetune_trial_metric{{namespace="{cluster.namespace}",'
        f'kubetune_io_job="digits-bayesian",metric="val_accuracy"}}[1h]))',
    )
    assert {s["metric"]["kubetune_io_trial"] for s in series} == {t["metadata"]["name"] for t in trials}
    # Hyperparameters reached the container as env vars.
    pods = {p.metadata.labels["kubetune.io/trial"]: p for p in cluster.pods("digits-bayesian")}
    for trial in trials:
        env = {e.name: e.value for e in pods[trial["metadata"]["name"]].spec.containers[0].env}
        assert env["KUBETUNE_PARAM_HIDDEN_UNITS"] == str(trial["spec"]["parameters"]["hidden_units"])
    # kubectl get: rounded values (the full ones stay in the status) and each trial's index.
    [row] = [r for r in cluster.table("tuningjobs") if r["Name"] == "digits-bayesian"]
    assert row["Best"] == f"{best['status']['objective']:.6g}" and row["Trials"] == "12/12"
    trial_rows = {r["Name"]: r for r in cluster.table("trials")}
    for trial in trials:
        shown = trial_rows[trial["metadata"]["name"]]
        assert shown["Index"] == trial["spec"]["index"] and shown["Objective"] == f"{trial['status']['objective']:.6g}"
    # One Event per transition: every trial succeeded once, the job finished once.
    succeeded_events = Counter(e.involved_object.name for e in cluster.all_events() if e.reason == "TrialSucceeded")
    assert succeeded_events == {t["metadata"]["name"]: 1 for t in trials}
    assert [e.reason for e in cluster.events("digits-bayesian")].count("MaxTrialsReached") == 1


def test_asha_stops_trials_early_and_saves_epochs(tuning: tuple[Cluster, OperatorProcess]) -> None:
    cluster, operator = tuning
    cluster.apply_example("digits-asha.yaml")
    cluster.apply_example("digits-asha.yaml", name="digits-full", earlyStopping={"rule": "none"})
    asha = cluster.wait_finished("digits-asha", timeout=900)
    full = cluster.wait_finished("digits-full", timeout=900)
    assert asha["status"]["phase"] == full["status"]["phase"] == "Succeeded", operator.log_tail()
    asha_trials, full_trials = cluster.trials("digits-asha"), cluster.trials("digits-full")
    stopped = [t for t in asha_trials if t["status"]["phase"] == "EarlyStopped"]
    assert stopped, [t["status"] for t in asha_trials]
    decision = stopped[0]["status"]["earlyStopping"]
    assert decision["rule"] == "asha" and decision["step"] >= 1
    assert asha["status"]["counts"]["earlyStopped"] == len(stopped)
    asha_epochs = sum(trial_epochs(t) for t in asha_trials)
    full_epochs = sum(trial_epochs(t) for t in full_trials)
    print(f"asha trial-epochs {asha_epochs} vs no early stopping {full_epochs}")
    assert full_epochs == 9 * 9
    assert asha_epochs < full_epochs


def test_gpu_trials_never_exceed_the_node_gpus(tuning: tuple[Cluster, OperatorProcess]) -> None:
    cluster, operator = tuning
    cluster.apply_example("gpu-random.yaml")
    most_running = 0
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        running = [p for p in cluster.pods("gpu-random") if p.status.phase == "Running"]
        most_running = max(most_running, len(running))
        if cluster.job("gpu-random").get("status", {}).get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.3)
    job = cluster.job("gpu-random")
    assert job["status"]["phase"] == "Succeeded", operator.log_tail()
    assert job["status"]["counts"]["succeeded"] == 8
    assert 1 <= most_running <= 4


def test_failing_trials_fail_the_job_with_the_cause(tuning: tuple[Cluster, OperatorProcess]) -> None:
    cluster, _ = tuning
    manifest = yaml.safe_load((REPO / "examples" / "digits-random.yaml").read_text())
    manifest["metadata"]["name"] = "always-fails"
    manifest["spec"]["budget"] = {"maxTrials": 6, "parallelism": 2, "maxFailedTrials": 1}
    manifest["spec"]["trialTemplate"]["retries"] = 1
    container = manifest["spec"]["trialTemplate"]["template"]["spec"]["containers"][0]
    container["command"] = ["python", "-c", "import sys; print('bad data'); sys.exit(1)"]
    container["args"] = []
    cluster.create_job(manifest)
    job = cluster.wait_finished("always-fails", timeout=300)
    assert job["status"]["phase"] == "Failed"
    failed = condition(job, "Failed")
    assert failed is not None and failed["reason"] == "TooManyFailedTrials"
    assert "exit code 1" in failed["message"]
    trials = cluster.trials("always-fails")
    assert sum(t["status"]["phase"] == "Failed" for t in trials) == 2
    assert all(t["status"]["attempts"] == 2 for t in trials if t["status"]["phase"] == "Failed")
    assert not [p for p in cluster.pods("always-fails") if p.status.phase in ("Pending", "Running")]


def test_bad_promql_is_a_condition_and_results_still_arrive(tuning: tuple[Cluster, OperatorProcess]) -> None:
    cluster, operator = tuning
    cluster.apply_example(
        "digits-random.yaml", name="bad-promql",
        objective={"metric": "val_accuracy", "goal": "maximize", "promql": "sum(rate(oops[5m]) by"},
        earlyStopping={"rule": "median", "minTrials": 2},
        budget={"maxTrials": 3, "parallelism": 3},
    )

    def degraded() -> dict[str, Any] | None:
        metrics = condition(cluster.job("bad-promql"), "MetricsAvailable")
        return metrics if metrics and metrics["status"] == "False" else None

    metrics = wait_for("MetricsAvailable=False", degraded, timeout=300)
    assert metrics["reason"] == "PromQLError"
    job = cluster.wait_finished("bad-promql", timeout=600)
    assert job["status"]["phase"] == "Succeeded", operator.log_tail()
    assert job["status"]["counts"]["succeeded"] == 3
    assert operator.alive()


def test_deleting_a_job_removes_trials_and_pods(tuning: tuple[Cluster, OperatorProcess]) -> None:
    cluster, _ = tuning
    cluster.apply_example("digits-random.yaml", name="short-lived")
    wait_for("a trial pod", lambda: cluster.pods("short-lived"), timeout=120)
    cluster.custom.delete_namespaced_custom_object(
        "kubetune.io", "v1alpha1", cluster.namespace, "tuningjobs", "short-lived",
        body=client.V1DeleteOptions(propagation_policy="Background"),
    )
    wait_for("trials and pods garbage-collected",
             lambda: not cluster.trials("short-lived") and not cluster.pods("short-lived"), timeout=180)


def test_a_job_in_foreground_deletion_creates_no_new_trials(tuning: tuple[Cluster, OperatorProcess]) -> None:
    """Foreground deletion lasts as long as the slowest child (on a real node, a JobSet's pods): the Trials the
    garbage collector has taken must not be planned again meanwhile. A finalizer on one Trial holds the deletion
    open here."""
    cluster, operator = tuning
    cluster.create_job(slow_job("held", 2, 2))
    assert cluster.wait_finished("held", timeout=180)["status"]["phase"] == "Succeeded", operator.log_tail()
    original = {t["metadata"]["name"] for t in cluster.trials("held")}
    held = sorted(original)[0]
    hold = {"metadata": {"finalizers": ["kubetune.io/test-hold"]}}
    cluster.custom.patch_namespaced_custom_object("kubetune.io", "v1alpha1", cluster.namespace, "trials", held, hold)
    cluster.custom.delete_namespaced_custom_object(
        "kubetune.io", "v1alpha1", cluster.namespace, "tuningjobs", "held",
        body=client.V1DeleteOptions(propagation_policy="Foreground"),
    )
    wait_for("the unheld trial to go", lambda: {t["metadata"]["name"] for t in cluster.trials("held")} == {held}
             or None, timeout=120)
    deadline = time.monotonic() + 20  # several reconciles of the job while it is being deleted
    while time.monotonic() < deadline:
        assert {t["metadata"]["name"] for t in cluster.trials("held")} <= original, operator.log_tail()
        time.sleep(1)
    cluster.custom.patch_namespaced_custom_object("kubetune.io", "v1alpha1", cluster.namespace, "trials", held,
                                                  {"metadata": {"finalizers": None}})
    wait_for("the job and its trials to go", lambda: not cluster.trials("held") or None, timeout=120)


def test_operator_survives_sigkill_without_losing_or_duplicating_trials(
    api: client.ApiClient, dev_cluster: ClusterInfo, tmp_path: Path
) -> None:
    namespace = make_namespace(api, "crash")
    operator = OperatorProcess(dev_cluster.kubeconfig, dev_cluster.prometheus_url, tmp_path / "operator.log",
                               KUBETUNE_NAMESPACES=namespace)
    cluster = Cluster(api, namespace)
    chaos = random.Random(20261129)
    kills = 0
    try:
        operator.start()
        cluster.apply_example("digits-random.yaml", name="crashy", budget={"maxTrials": 8, "parallelism": 2})
        while cluster.job("crashy").get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            time.sleep(chaos.uniform(1.0, 6.0))
            if kills < 5:
                operator.kill()
                kills += 1
                time.sleep(chaos.uniform(0.0, 2.0))
                operator.start()
            assert operator.starts < 50
        job = cluster.wait_finished("crashy", timeout=600)
    finally:
        operator.stop()
    assert kills >= 3, "the job finished before the operator could be killed a few times"
    assert job["status"]["phase"] == "Succeeded", operator.log_tail()
    trials = cluster.trials("crashy")
    assert [t["metadata"]["name"] for t in trials] == [f"crashy-{i}" for i in range(8)]
    assert all(t["status"]["phase"] == "Succeeded" and t["status"]["objective"] is not None for t in trials)
    pods = cluster.pods("crashy")
    assert sorted(p.metadata.name for p in pods) == sorted(f"crashy-{i}-1" for i in range(8)), "a trial ran twice"
    # Restarts repeat no Event: at most one per transition (one in flight at a kill may be lost).
    posted = Counter((e.involved_object.name, e.reason, e.message) for e in cluster.all_events())
    assert max(posted.values()) == 1, [k for k, n in posted.items() if n > 1]
    assert sum(n for (name, reason, _), n in posted.items() if reason == "MaxTrialsReached") == 1
    client.CoreV1Api(api).delete_namespace(namespace)


def test_examples_run_as_published(tuning: tuple[Cluster, OperatorProcess]) -> None:
    """The random, evolutionary and conditional (model-selection) examples, applied unmodified, all finish."""
    cluster, operator = tuning
    examples = {"digits-random": 6, "digits-evolution": 8, "model-selection": 8}
    for name in examples:
        cluster.apply_example(f"{name}.yaml")
    for name, max_trials in examples.items():
        job = cluster.wait_finished(name, timeout=900)
        assert job["status"]["phase"] == "Succeeded", (name, job["status"], operator.log_tail())
        trials = cluster.trials(name)
        assert len(trials) == max_trials and all(t["status"]["phase"] == "Succeeded" for t in trials), name
        best = job["status"]["bestTrial"]
        assert best["objective"] == max_or_min(job, trials)

    # Conditional parameters: each trial carries exactly the knobs of its model family.
    own_knobs = {"logistic": set(), "mlp": {"hidden_layers", "hidden_units"}, "cnn": {"channels", "augment"}}
    families = set()
    for trial in cluster.trials("model-selection"):
        params = trial["spec"]["parameters"]
        families.add(params["model"])
        assert set(params) - {"model", "lr"} == own_knobs[params["model"]], params
    assert len(families) >= 2, families


def max_or_min(job: dict[str, Any], trials: list[dict[str, Any]]) -> float:
    objectives = [t["status"]["objective"] for t in trials]
    return float(max(objectives) if job["spec"]["objective"]["goal"] == "maximize" else min(objectives))


def test_suspend_resume_and_raised_budget_continue_the_job(tuning: tuple[Cluster, OperatorProcess]) -> None:
    cluster, operator = tuning
    quick = {"maxTrials": 2, "parallelism": 2}
    cluster.apply_example("digits-random.yaml", name="resumable", budget=quick, suspend=True)
    suspended = wait_for("phase Suspended", lambda: cluster.job("resumable").get("status", {}).get("phase")
                         == "Suspended", timeout=120)
    assert suspended
    time.sleep(3)  # a suspended job must not start trials, even after a few reconciles
    assert not cluster.trials("resumable")

    cluster.patch_job("resumable", {"spec": {"suspend": False}})
    job = cluster.wait_finished("resumable", timeout=600)
    assert job["status"]["phase"] == "Succeeded" and job["status"]["counts"]["succeeded"] == 2, operator.log_tail()

    # Raising maxTrials on a finished job continues it from where it stopped.
    cluster.patch_job("resumable", {"spec": {"budget": {"maxTrials": 4}}})

    def finished_again() -> dict[str, Any] | None:
        job = cluster.job("resumable")
        status = job.get("status") or {}
        return job if status.get("phase") in ("Succeeded", "Failed") and status["counts"]["created"] == 4 else None

    job = wait_for("the job to continue to 4 trials", finished_again, timeout=600)
    trials = cluster.trials("resumable")
    assert job["status"]["phase"] == "Succeeded", (job["status"], operator.log_tail())
    assert [t["metadata"]["name"] for t in trials] == [f"resumable-{i}" for i in range(4)]
    assert job["status"]["counts"]["succeeded"] == 4 and job["status"]["progress"] == "4/4"
    assert (condition(job, "Succeeded") or {}).get("reason") == "MaxTrialsReached"


# What the kubelet's `$(VAR)` expansion would rewrite, were values not escaped (`$$` is its escape).
DOLLAR_VALUES = ["$(KUBETUNE_JOB)", "$$(HOME)", "$(", "trailing$", "$", "a$b"]
ECHO_SCRIPT = """
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "env": os.environ["KUBETUNE_PARAM_X"],
                  "params": json.loads(os.environ["KUBETUNE_PARAMS"])["x"], "own": os.environ["OWN"]}))
open(os.environ["KUBETUNE_TERMINATION_MESSAGE_PATH"], "w").write('{"status": "completed", "metrics": {"ok": 1}}')
"""


def test_parameter_values_reach_the_container_literally(tuning: tuple[Cluster, OperatorProcess]) -> None:
    """Values with `$(...)`, `$$` or a lone `$` arrive byte for byte in argv, KUBETUNE_PARAM_*, KUBETUNE_PARAMS
    and substituted env values: nothing on the way expands them."""
    cluster, operator = tuning
    cluster.create_job({
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningJob", "metadata": {"name": "dollars"},
        "spec": {
            "objective": {"metric": "ok", "goal": "maximize"},
            "parameters": [{"name": "x", "type": "categorical", "values": DOLLAR_VALUES}],
            "algorithm": {"name": "grid"},
            "budget": {"maxTrials": len(DOLLAR_VALUES), "parallelism": 3},
            "trialTemplate": script_trial_template(ECHO_SCRIPT, args=["${params.x}", "--x=${params.x}"],
                                                   env=[{"name": "OWN", "value": "own:${params.x}"}]),
        },
    })
    job = cluster.wait_finished("dollars", timeout=300)
    assert job["status"]["phase"] == "Succeeded", (job["status"], operator.log_tail())
    seen = []
    for pod in cluster.pods("dollars"):
        trial = next(t for t in cluster.trials("dollars") if t["metadata"]["name"] == pod.metadata.labels[
            "kubetune.io/trial"])
        value = trial["spec"]["parameters"]["x"]
        printed = json.loads(cluster.core.read_namespaced_pod_log(pod.metadata.name, cluster.namespace).strip())
        assert printed == {"argv": [value, f"--x={value}"], "env": value, "params": value, "own": f"own:{value}"}
        seen.append(value)
    assert sorted(seen) == sorted(DOLLAR_VALUES)


# A bring-your-own trial that reports only to Prometheus, in its own metric names, and never writes a
# termination message: the objective can only come from the job's objective.promql.
PROMETHEUS_ONLY_SCRIPT = SERVE_METRICS + """
import json, os, time
from prometheus_client import Gauge
x = json.loads(os.environ["KUBETUNE_PARAMS"])["x"]
serve_metrics()
by_step, final = Gauge("my_score", "score by step", ["step"]), Gauge("my_final", "final score")
for step in (1, 2, 3):
    by_step.labels(str(step)).set(x * step / 3)
    time.sleep(1.5)
final.set(x)
stay_until_scraped()
"""
PROMQL_OBJECTIVES = {
    # One series per step (the highest step is the final value) ...
    "promql-steps": 'max by (step) (last_over_time(my_score{kubetune_io_trial="{{trial}}"}[15m]))',
    # ... or one series without a step label, taken as the latest value.
    "promql-latest": 'last_over_time(my_final{kubetune_io_trial="{{trial}}"}[15m])',
}


@pytest.mark.parametrize("name", sorted(PROMQL_OBJECTIVES))
def test_an_objective_from_promql_alone_finishes_the_job(tuning: tuple[Cluster, OperatorProcess], name: str) -> None:
    cluster, operator = tuning
    values = [0.2, 0.5, 0.9]
    cluster.create_job({
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningJob", "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "score", "goal": "maximize", "promql": PROMQL_OBJECTIVES[name]},
            "parameters": [{"name": "x", "type": "discrete", "values": values}],
            "algorithm": {"name": "grid"},
            "budget": {"maxTrials": 3, "parallelism": 3},
            "trialTemplate": script_trial_template(PROMETHEUS_ONLY_SCRIPT),
        },
    })
    job = cluster.wait_finished(name, timeout=300)
    assert job["status"]["phase"] == "Succeeded", (job["status"], operator.log_tail())
    for trial in cluster.trials(name):
        status = trial["status"]
        assert status["phase"] == "Succeeded" and status["objective"] == pytest.approx(trial["spec"]["parameters"]["x"])
        if name == "promql-steps":
            assert [step for step, _ in status["intermediate"]] == [1.0, 2.0, 3.0]
    assert job["status"]["bestTrial"]["parameters"] == {"x": 0.9}
    assert job["status"]["bestTrial"]["objective"] == pytest.approx(0.9)


SLOW_TRIAL_SCRIPT = """
import json, os, time
time.sleep(6)
open(os.environ["KUBETUNE_TERMINATION_MESSAGE_PATH"], "w").write(json.dumps(
    {"status": "completed", "metrics": {"score": json.loads(os.environ["KUBETUNE_PARAMS"])["x"]}}))
"""


def slow_job(name: str, max_trials: int, parallelism: int, max_failed_trials: int | None = None,
             **spec: Any) -> dict[str, Any]:
    """A job of script trials that each take about 6 s and report `score` = x."""
    budget: dict[str, Any] = {"maxTrials": max_trials, "parallelism": parallelism}
    if max_failed_trials is not None:
        budget["maxFailedTrials"] = max_failed_trials
    return score_job(name, script_trial_template(SLOW_TRIAL_SCRIPT), budget, **spec)


def test_metrics_available_tells_the_truth_through_a_prometheus_outage(
    tuning: tuple[Cluster, OperatorProcess], dev_cluster_ctl: DevCluster
) -> None:
    """False (with one Warning Event) while Prometheus is down, and still False when the job finishes meanwhile:
    a reconcile that asked Prometheus nothing never claims it reachable."""
    cluster, operator = tuning
    cluster.create_job(slow_job("outage", 4, 2, earlyStopping={"rule": "median"}))

    def metrics_status(expected: str) -> bool:
        found = condition(cluster.job("outage"), "MetricsAvailable")
        return bool(found and found["status"] == expected)

    wait_for("MetricsAvailable=True", lambda: metrics_status("True"), timeout=120)
    dev_cluster_ctl.stop_component("prometheus")
    try:
        wait_for("MetricsAvailable=False", lambda: metrics_status("False"), timeout=120)
        job = cluster.wait_finished("outage", timeout=300)
        time.sleep(3)  # reconciles after the finish must not flip it back
        job = cluster.job("outage")
    finally:
        dev_cluster_ctl.start_component("prometheus")
    assert job["status"]["phase"] == "Succeeded", (job["status"], operator.log_tail())
    metrics = condition(job, "MetricsAvailable")
    assert metrics is not None and metrics["status"] == "False" and metrics["reason"] == "PrometheusUnavailable"
    reasons = [e.reason for e in cluster.events("outage")]
    assert reasons.count("MetricsUnavailable") == 1 and "MetricsAvailable" not in reasons, reasons


def test_two_operators_on_one_namespace_reconcile_each_job_once_and_say_so(
    api: client.ApiClient, dev_cluster: ClusterInfo, tmp_path: Path
) -> None:
    """A cluster-wide and a namespaced installation both watching one namespace: one holds the job's Lease and
    reconciles it, the other stands by (an Event) and the job says so (DuplicateOperator); when the holder dies,
    the other takes over once the Lease expires and the job completes with no trial lost or run twice."""
    namespace = make_namespace(api, "twoops")
    cluster = Cluster(api, namespace)
    operators = {
        identity: OperatorProcess(dev_cluster.kubeconfig, dev_cluster.prometheus_url, tmp_path / f"{n}.log",
                                  KUBETUNE_NAMESPACES=namespace, KUBETUNE_OPERATOR_ID=identity)
        for n, identity in enumerate(("kubetune/kt-kubetune", "team-a/kt-kubetune"))
    }
    try:
        for operator in operators.values():
            operator.start()
        cluster.create_job(slow_job("contested", 12, 2))
        leases = client.CoordinationV1Api(api)

        def holder() -> str | None:
            try:
                found = leases.read_namespaced_lease("contested.tuningjob.kubetune.io", namespace)
            except client.ApiException:
                return None
            return str(found.spec.holder_identity)

        first = wait_for("the job's Lease", holder, timeout=60)
        duplicate = wait_for("DuplicateOperator=True",
                             lambda: (c := condition(cluster.job("contested"), "DuplicateOperator")) and
                             c["status"] == "True" and c, timeout=120)
        (second,) = set(operators) - {first}
        assert second in duplicate["message"]
        standing = [e for e in cluster.events("contested") if e.reason == "OperatorStandingBy"]
        assert len(standing) == 1 and second in standing[0].message and first in standing[0].message
        assert cluster.job("contested")["status"]["phase"] == "Running", "the job ended before the failover"

        operators[first].kill()
        assert wait_for("the standby taking over", lambda: holder() == second, timeout=180)
        job = cluster.wait_finished("contested", timeout=600)
    finally:
        for operator in operators.values():
            operator.stop()
    assert job["status"]["phase"] == "Succeeded", (job["status"], operators[second].log_tail())
    trials = cluster.trials("contested")
    assert [t["metadata"]["name"] for t in trials] == [f"contested-{i}" for i in range(12)]
    pods = sorted(p.metadata.name for p in cluster.pods("contested"))
    assert pods == sorted(f"contested-{i}-1" for i in range(12)), "a trial ran twice"
    created = Counter(e.message.split(":")[0] for e in cluster.events("contested") if e.reason == "TrialCreated")
    assert max(created.values()) == 1
    client.CoreV1Api(api).delete_namespace(namespace)


def test_a_jobs_counts_follow_its_pods(tuning: tuple[Cluster, OperatorProcess]) -> None:
    """Counters written in a burst are held back at most a second, then written from the pods of that moment:
    running trials show as running, and a suspended job's finished trials as finished."""
    cluster, operator = tuning
    cluster.create_job(slow_job("counted", 6, 3))

    def running_pods() -> int:
        return sum(p.status.phase == "Running" for p in cluster.pods("counted"))

    def status_when(check: Callable[[dict[str, Any]], bool]) -> Callable[[], dict[str, Any] | None]:
        def probe() -> dict[str, Any] | None:
            status: dict[str, Any] = cluster.job("counted").get("status") or {}
            return status if status and check(status) else None
        return probe

    wait_for("3 trial pods running", lambda: running_pods() == 3, timeout=120, interval=0.2)
    status = wait_for("the job counting 3 running", status_when(lambda s: s["counts"]["running"] == 3), timeout=10,
                      interval=0.2)
    assert status["counts"]["created"] == 3
    cluster.patch_job("counted", {"spec": {"suspend": True}})
    wait_for("the running pods to finish", lambda: len([p for p in cluster.pods("counted")
                                                         if p.status.phase == "Succeeded"]) == 3, timeout=120)
    status = wait_for("the job counting them finished",
                      status_when(lambda s: s["counts"]["running"] == 0 and s["progress"] == "3/6"),
                      timeout=10, interval=0.2)
    assert status["phase"] == "Suspended", (status, operator.log_tail())


@pytest.mark.parametrize("case", ["missing-secret", "too-many-gpus"])
def test_trials_that_cannot_start_say_why_and_fail_after_the_timeout(
    tuning: tuple[Cluster, OperatorProcess], case: str
) -> None:
    """A pod the kubelet cannot configure (a Secret that does not exist) or the scheduler cannot place (more GPUs
    than the node has): the Trial and the job say why within a reconcile, then the trials fail with that reason
    and the job ends; nothing waits silently. (Image pulls are proven on the real node.)"""
    cluster, operator = tuning
    container: dict[str, Any] = {}
    if case == "missing-secret":
        container["env"] = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "no-such-secret", "key": "t"}}}]
        expected, timeouts = "CreateContainerConfigError", {"notStartingTimeoutSeconds": 15}
    else:
        container["resources"] = {"limits": {"nvidia.com/gpu": 8}}
        expected, timeouts = "Unschedulable", {"unschedulableTimeoutSeconds": 15}
    manifest = slow_job(case, 2, 2, max_failed_trials=1)
    manifest["spec"]["trialTemplate"]["template"]["spec"]["containers"][0].update(container)
    manifest["spec"]["trialTemplate"].update(timeouts)
    cluster.create_job(manifest)

    def shown() -> dict[str, Any] | None:
        found = condition(cluster.job(case), "TrialsNotStarting")
        return found if found and found["status"] == "True" else None

    shown_condition = wait_for("the job's TrialsNotStarting condition", shown, timeout=60)
    assert shown_condition["reason"] == expected
    assert "no-such-secret" in shown_condition["message"] or "nvidia.com/gpu" in shown_condition["message"]
    stuck = [t for t in cluster.trials(case) if t["status"].get("reason") == expected]
    assert stuck and stuck[0]["status"]["phase"] == "Pending"
    job = cluster.wait_finished(case, timeout=120)
    assert job["status"]["phase"] == "Failed" and condition(job, "Failed")["reason"] == "TooManyFailedTrials"
    assert all(t["status"]["phase"] == "Failed" and t["status"]["reason"] == expected for t in cluster.trials(case))
    assert not [p for p in cluster.pods(case) if p.status.phase == "Pending" and not p.metadata.deletion_timestamp]
    reasons = [e.reason for t in cluster.trials(case) for e in cluster.events(t["metadata"]["name"])]
    assert "TrialNotStarting" in reasons, (reasons, operator.log_tail())
