"""Several objectives end to end: admission, built-in GPU-seconds from the pods, and the Pareto front.

A job tunes the reference trainer for val_accuracy (maximize) against kubetune:gpu_seconds (minimize) with
trials that each hold 2 of the node agent's fake GPUs; the test judges the result from the Trial and Pod
objects themselves, not from what the operator says about them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubetune_harness import (
    REPO,
    SERVE_METRICS,
    Cluster,
    OperatorProcess,
    condition,
    fresh_namespace,
    install_crds,
    operator_samples,
    script_trial_template,
)

from kubetune_dev.cluster import ClusterInfo
from kubetune_dev.preflight import free_ports

GPU_SECONDS = "kubetune:gpu_seconds"
EXAMPLE = yaml.safe_load((REPO / "examples" / "gpu-multiobjective.yaml").read_text())


@pytest.fixture(scope="module")
def tuning(dev_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Cluster, OperatorProcess, int]]:
    api = config.new_client_from_config(config_file=str(dev_cluster.kubeconfig))
    install_crds(api)
    namespace = fresh_namespace(client.CoreV1Api(api), "multi")
    port = free_ports(1)[0]
    operator = OperatorProcess(
        dev_cluster.kubeconfig, dev_cluster.prometheus_url, tmp_path_factory.mktemp("operator") / "operator.log",
        KUBETUNE_NAMESPACES=namespace, KUBETUNE_OPERATOR_METRICS_PORT=str(port),
    )
    operator.start()
    yield Cluster(api, namespace), operator, port
    operator.stop()
    client.CoreV1Api(api).delete_namespace(namespace)
    api.close()


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def _losses(trial: dict[str, Any]) -> tuple[float, float]:
    metrics = trial["status"]["metrics"]
    return -metrics["val_accuracy"], metrics[GPU_SECONDS]


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda s: s.update(objective={"metric": "val_accuracy", "goal": "maximize"}), "spec",
         "set exactly one of objective and objectives"),
        (lambda s: s["objectives"].append({"metric": "val_accuracy", "goal": "minimize"}), "spec.objectives",
         "objectives[].metric must be distinct"),
        (lambda s: s["objectives"].extend({"metric": f"m{i}", "goal": "minimize"} for i in range(3)),
         "spec.objectives", "must have at most 4 items"),
        (lambda s: s["objectives"].reverse(), "spec", "primary objective"),
    ],
    ids=["objective-and-objectives", "duplicate-metric", "five-objectives", "cost-as-primary"],
)
def test_bad_objectives_are_rejected_at_apply_naming_the_field(
    tuning: tuple[Cluster, OperatorProcess, int], change: Any, field: str, message: str
) -> None:
    cluster, _, _ = tuning
    manifest = copy.deepcopy(EXAMPLE)
    manifest["metadata"]["name"] = "rejected"
    change(manifest["spec"])
    with pytest.raises(ApiException) as error:
        cluster.create_job(manifest)
    assert error.value.status == 422
    assert f"{field}: " in str(error.value.body) and message in str(error.value.body), error.value.body


def test_two_objective_gpu_job_ends_with_a_true_pareto_front_and_exact_gpu_seconds(
    tuning: tuple[Cluster, OperatorProcess, int], tmp_path: Path
) -> None:
    cluster, operator, port = tuning
    cluster.apply_example("gpu-multiobjective.yaml")
    job = cluster.wait_finished("gpu-multiobjective", timeout=900)
    assert job["status"]["phase"] == "Succeeded", (job["status"], operator.log_tail())
    trials = cluster.trials("gpu-multiobjective")
    assert len(trials) == 8 and all(t["status"]["phase"] == "Succeeded" for t in trials), \
        [t["status"] for t in trials]

    # kubetune:gpu_seconds of every trial: its pod's requested GPUs x the container's running seconds.
    pods = {p.metadata.labels["kubetune.io/trial"]: p for p in cluster.pods("gpu-multiobjective")}
    for trial in trials:
        pod = pods[trial["metadata"]["name"]]
        gpus = int(pod.spec.containers[0].resources.limits["nvidia.com/gpu"])
        terminated = pod.status.container_statuses[0].state.terminated
        expected = gpus * _seconds(terminated.started_at, terminated.finished_at)
        assert gpus == 2 and trial["status"]["metrics"][GPU_SECONDS] == expected, (trial["status"], terminated)
        assert trial["status"]["metrics"]["kubetune:gpu_seconds"] > 0

    # The front: exactly the trials no other trial dominates, each with its own values and parameters.
    by_name = {t["metadata"]["name"]: t for t in trials}
    front = job["status"]["paretoFront"]
    expected_front = {name for name, t in by_name.items()
                      if not any(_dominates(_losses(o), _losses(t)) for o in trials)}
    assert {m["name"] for m in front} == expected_front and job["status"]["paretoFrontSize"] == len(expected_front)
    for member in front:
        trial = by_name[member["name"]]
        assert member["objectives"] == {"val_accuracy": trial["status"]["metrics"]["val_accuracy"],
                                        GPU_SECONDS: trial["status"]["metrics"][GPU_SECONDS]}
        assert member["parameters"] == trial["spec"]["parameters"] and member["index"] == trial["spec"]["index"]
    # bestTrial follows the primary objective; the Front column and the operator's gauges show the front.
    best = max(trials, key=lambda t: (t["status"]["objective"], -t["spec"]["index"]))
    assert job["status"]["bestTrial"]["name"] == best["metadata"]["name"]
    assert condition(job, "ObjectivesComplete")["status"] == "True"  # type: ignore[index]
    [row] = [r for r in cluster.table("tuningjobs") if r["Name"] == "gpu-multiobjective"]
    assert row["Front"] == len(expected_front)
    samples = operator_samples(port)
    size = [s.value for s in samples if s.name == "kubetune_pareto_front_size"
            and s.labels["tuningjob"] == "gpu-multiobjective"]
    gauges = {(s.labels["trial"], s.labels["objective"]): s.value for s in samples
              if s.name == "kubetune_pareto_front_objective" and s.labels["tuningjob"] == "gpu-multiobjective"}
    assert size == [len(expected_front)]
    assert gauges == {(m["name"], metric): value for m in front for metric, value in m["objectives"].items()}


# The primary objective in the termination message, a second one only in the trial's own Prometheus gauge,
# read by that objective's promql: energy = x, so every trial trades score for energy (all on the front).
TWO_SOURCES_SCRIPT = SERVE_METRICS + """
import json, os
from prometheus_client import Gauge
x = json.loads(os.environ["KUBETUNE_PARAMS"])["x"]
serve_metrics()
Gauge("my_energy_joules", "energy so far").set(x)
stay_until_scraped()
open(os.environ["KUBETUNE_TERMINATION_MESSAGE_PATH"], "w").write(
    json.dumps({"status": "completed", "metrics": {"score": x}}))
"""


def test_a_second_objective_from_promql_reaches_the_trials_and_the_front(
    tuning: tuple[Cluster, OperatorProcess, int]
) -> None:
    cluster, operator, _ = tuning
    name = "promql-energy"
    cluster.create_job({
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningJob", "metadata": {"name": name},
        "spec": {
            "objectives": [
                {"metric": "score", "goal": "maximize"},
                {"metric": "energy", "goal": "minimize",
                 "promql": 'last_over_time(my_energy_joules{namespace="{{namespace}}", '
                           'kubetune_io_trial="{{trial}}"}[15m])'},
            ],
            "parameters": [{"name": "x", "type": "discrete", "values": [0.2, 0.5, 0.9]}],
            "algorithm": {"name": "grid"},
            "budget": {"maxTrials": 3, "parallelism": 3},
            "trialTemplate": script_trial_template(TWO_SOURCES_SCRIPT),
        },
    })
    job = cluster.wait_finished(name, timeout=300)
    assert job["status"]["phase"] == "Succeeded", (job["status"], operator.log_tail())
    trials = cluster.trials(name)
    for trial in trials:
        x = trial["spec"]["parameters"]["x"]
        assert trial["status"]["reason"] == "Completed", trial["status"]
        assert trial["status"]["metrics"]["score"] == x and trial["status"]["metrics"]["energy"] == pytest.approx(x)
    assert sorted(m["name"] for m in job["status"]["paretoFront"]) == sorted(t["metadata"]["name"] for t in trials)
    assert condition(job, "ObjectivesComplete")["status"] == "True"  # type: ignore[index]
