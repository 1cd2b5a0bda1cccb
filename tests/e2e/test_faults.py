"""Fault injection: the operator, node agent, control plane and Prometheus fail in the middle of a
job, and the job still ends with every trial's result recorded once and no trial run twice.

Every test ends with `assert_exactly_once` (what "no result lost, no trial ran twice" means is
spelled out there). Run them alone with `pytest -m faults`; `pytest tests` (CI) runs them too.

The trial workload is a few seconds of `kubetune.report()` calls whose objective is a known
function of the trial's parameter, so a lost or mixed-up result cannot go unnoticed; each start
and each completion of a trial process is appended to a ledger file on the host (the node agent
runs pods as host processes), which is the ground truth for "ran twice" that the API objects are
checked against.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubetune_harness import (
    GROUP,
    VERSION,
    Cluster,
    OperatorProcess,
    condition,
    install_crds,
    script_trial_template,
    wait_for,
)

from kubetune_dev.cluster import ClusterInfo, DevCluster
from kubetune_dev.testing import Kube

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

# The trial: reports `score` (a known function of x) for STEPS steps, then finishes.
WORKLOAD = textwrap.dedent(
    """
    import json, os, time
    import kubetune

    def note(event):
        with open(os.environ["LEDGER"], "a") as ledger:
            ledger.write(f"{event} {os.environ['HOSTNAME']} {os.getpid()}\\n")

    x = json.loads(os.environ["KUBETUNE_PARAMS"])["x"]
    note("start")
    for step in range(1, int(os.environ["STEPS"]) + 1):
        time.sleep(float(os.environ["STEP_SECONDS"]))
        kubetune.report(step=step, score=1.0 - (x - 0.3) ** 2)
    kubetune.finish(status="completed")
    note("done")
    """
)
FINAL_PHASES = ("Succeeded", "Failed")
# Not the default 8000: the trials and the operator must both follow trialTemplate.metricsPort.
METRICS_PORT = 18500
OPERATOR_STARTED = "Activity 'build_registry.<locals>.startup' succeeded"
JOB_TIMEOUT = 420.0
# The controller manager's defaults take ~50 s to call a silent node NotReady; the node test
# shortens that for its own run only (the agent renews its lease every 10 s).
FAST_NODE_MONITOR = ("--node-monitor-grace-period=20s", "--node-monitor-period=2s")


def expected_score(x: float) -> float:
    """What WORKLOAD reports for parameter x (the same expression)."""
    return 1.0 - (x - 0.3) ** 2


# --------------------------------------------------------------------------- fixtures and helpers


@dataclass
class Ledger:
    """Lines `start|done <pod> <pid>` written by trial processes themselves."""

    path: Path

    def lines(self) -> list[tuple[str, str, int]]:
        if not self.path.exists():
            return []
        return [(e, pod, int(pid)) for e, pod, pid in (line.split() for line in self.path.read_text().splitlines())]

    def started(self, pod: str) -> int | None:
        """The pid of `pod`'s process once it started."""
        return next((pid for event, name, pid in self.lines() if event == "start" and name == pod), None)


@dataclass
class Faulty:
    """One test's namespace, its operator, the ledger and the cluster controls."""

    cluster: Cluster
    operator: OperatorProcess
    ledger: Ledger
    ctl: DevCluster
    info: ClusterInfo
    kube: Kube

    def job(self, name: str, *, max_trials: int, parallelism: int, steps: int = 3, step_seconds: float = 1.0,
            retries: int = 0, tolerations: list[dict[str, Any]] | None = None, **spec: Any) -> str:
        """Create a TuningJob running WORKLOAD; returns its name."""
        env = [
            {"name": "LEDGER", "value": str(self.ledger.path)},
            {"name": "STEPS", "value": str(steps)},
            {"name": "STEP_SECONDS", "value": str(step_seconds)},
            # Prometheus scrapes every second; never wait long for it (it may be the fault).
            {"name": "KUBETUNE_FINAL_SCRAPE_TIMEOUT_SECONDS", "value": "2"},
        ]
        pod: dict[str, Any] = {"terminationGracePeriodSeconds": 2}
        if tolerations:
            pod["tolerations"] = tolerations
        manifest = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TuningJob",
            "metadata": {"name": name},
            "spec": {
                "objective": {"metric": "score", "goal": "maximize"},
                "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
                "algorithm": {"name": "random", "seed": 7},
                "budget": {"maxTrials": max_trials, "parallelism": parallelism, "maxFailedTrials": 0},
                "trialTemplate": {"retries": retries, "metricsPort": METRICS_PORT,
                                  **script_trial_template(WORKLOAD, pod, env=env)},
                **spec,
            },
        }
        self.cluster.create_job(manifest)
        return name

    def running_pods(self, job: str, at_least: int = 1) -> list[str]:
        """Wait until `at_least` trial processes run (started per the ledger); their pod names."""

        def running() -> list[str] | None:
            names = [p.metadata.name for p in self.cluster.pods(job) if p.status.phase == "Running"]
            started = [n for n in names if self.ledger.started(n) is not None]
            return started if len(started) >= at_least else None

        return wait_for(f"{at_least} running trial(s) of {job}", running, timeout=240)

    def pod_log_tail(self, pod: Any, lines: int = 8) -> str:
        path = self.info.pod_log(self.cluster.namespace, pod.metadata.name, pod.metadata.uid, "trial")
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def finish(self, job: str) -> dict[str, Any]:
        finished = self.cluster.wait_finished(job, timeout=JOB_TIMEOUT)
        if finished["status"]["phase"] != "Succeeded":
            trials = [(t["metadata"]["name"], t.get("status")) for t in self.cluster.trials(job)]
            logs = {p.metadata.name: self.pod_log_tail(p) for p in self.cluster.pods(job) if p.status.phase == "Failed"}
            pytest.fail(f"{job} {finished['status']['phase']}:\n{json.dumps(finished['status'], indent=1)}\n"
                        f"trials: {json.dumps(trials, indent=1)}\nfailed pods' logs: {json.dumps(logs, indent=1)}\n"
                        f"operator log:\n{self.operator.log_tail()}")
        return finished


@pytest.fixture(scope="module")
def crds(kube: Kube) -> None:
    install_crds(kube.api_client)


@pytest.fixture
def faulty(crds: None, kube: Kube, namespace: str, dev_cluster_ctl: DevCluster, dev_cluster: ClusterInfo,
           tmp_path: Path) -> Iterator[Faulty]:
    operator = OperatorProcess(dev_cluster.kubeconfig, dev_cluster.prometheus_url, tmp_path / "operator.log",
                               KUBETUNE_NAMESPACES=namespace)
    operator.start()
    try:
        yield Faulty(Cluster(kube.api_client, namespace), operator, Ledger(tmp_path / "ledger"), dev_cluster_ctl,
                     dev_cluster, kube)
    finally:
        operator.stop()


def assert_exactly_once(
    faulty: Faulty, job_name: str, max_trials: int, retried: Mapping[str, int] | None = None, *, exact: bool = True
) -> dict[str, Any]:
    """No trial result lost, no trial run twice. Precisely:

    - the job Succeeded with exactly `max_trials` Trials, `<job>-0` .. `<job>-<max_trials-1>`;
    - every Trial Succeeded with objective == the workload's score of its own parameters;
    - the job's counts equal the tally of the Trials' phases, and bestTrial is the best Trial;
    - per Trial: status.attempts - 1 retries, exactly `retried[trial]` (at most, if not `exact`)
      and 0 for Trials the faults did not touch; no pod of it is still active; at most one
      Succeeded pod, and that is the last attempt;
    - per the ledger: no pod's process started twice, and each Trial's process completed
      exactly once, in its last attempt (so no finished result was thrown away and rerun).

    Returns figures for the report.
    """
    retried = retried or {}
    job = faulty.cluster.job(job_name)
    trials = faulty.cluster.trials(job_name)
    log = faulty.operator.log_tail()
    assert job["status"]["phase"] == "Succeeded", (job["status"], log)
    succeeded = condition(job, "Succeeded")
    assert succeeded is not None and succeeded["reason"] == "MaxTrialsReached", job["status"]
    names = [t["metadata"]["name"] for t in trials]
    assert names == [f"{job_name}-{i}" for i in range(max_trials)], names

    for trial in trials:
        status = trial["status"]
        assert status["phase"] == "Succeeded", (trial["metadata"]["name"], status)
        assert status["objective"] == pytest.approx(expected_score(trial["spec"]["parameters"]["x"]), abs=1e-9), trial

    tally = {key: 0 for key in ("pending", "running", "succeeded", "failed", "earlyStopped", "cancelled")}
    phase_key = {"Pending": "pending", "Running": "running", "Succeeded": "succeeded", "Failed": "failed",
                 "EarlyStopped": "earlyStopped", "Cancelled": "cancelled"}
    for trial in trials:
        tally[phase_key[trial["status"]["phase"]]] += 1
    assert job["status"]["counts"] == {"created": max_trials, **tally}, job["status"]["counts"]
    assert job["status"]["progress"] == f"{max_trials}/{max_trials}"
    best = max(trials, key=lambda t: t["status"]["objective"])
    assert job["status"]["bestTrial"]["name"] == best["metadata"]["name"], (job["status"]["bestTrial"], best)
    assert job["status"]["bestTrial"]["objective"] == best["status"]["objective"]
    assert job["status"]["bestTrial"]["parameters"] == best["spec"]["parameters"]

    pods: dict[str, list[Any]] = {}
    for pod in faulty.cluster.pods(job_name):
        pods.setdefault(pod.metadata.labels["kubetune.io/trial"], []).append(pod)
    ledger = faulty.ledger.lines()
    starts: dict[str, int] = {}
    for event, pod_name, _ in ledger:
        if event == "start":
            starts[pod_name] = starts.get(pod_name, 0) + 1
    assert all(count == 1 for count in starts.values()), f"a pod's process started twice: {starts}"
    retries: dict[str, int] = {}
    for trial in trials:
        name, attempts = trial["metadata"]["name"], trial["status"]["attempts"]
        retries[name] = attempts - 1
        allowed = retried.get(name, 0)
        if exact:
            assert attempts - 1 == allowed, f"{name}: {attempts} attempts, faults explain {allowed + 1}"
        else:
            assert attempts - 1 <= allowed, f"{name}: {attempts} attempts, faults explain at most {allowed + 1}"
        own = pods.get(name, [])
        assert not [p.metadata.name for p in own if p.status.phase not in FINAL_PHASES], f"{name}: active pods left"
        winners = [p.metadata.name for p in own if p.status.phase == "Succeeded"]
        assert winners in ([], [f"{name}-{attempts}"]), f"{name}: succeeded pods {winners}, attempts {attempts}"
        done = [pod for event, pod, _ in ledger if event == "done" and pod.rsplit("-", 1)[0] == name]
        assert done == [f"{name}-{attempts}"], f"{name}: completed runs {done}, attempts {attempts}"
    return {"trials": len(trials), "retries": sum(retries.values()), "lost": 0, "duplicated": 0}


def report(figures: dict[str, Any], record_property: Any, **extra: Any) -> None:
    figures = {**figures, **extra}
    for key, value in figures.items():
        record_property(key, value)
    print("fault figures:", ", ".join(f"{key}={value}" for key, value in figures.items()))


# --------------------------------------------------------------------------- the faults


def test_operator_sigkilled_at_random_points(faulty: Faulty, record_property: Any) -> None:
    chaos = random.Random(20261129)
    job = faulty.job("killed", max_trials=12, parallelism=2, steps=4)
    operator = faulty.operator
    kills = 0
    deadline = time.monotonic() + JOB_TIMEOUT
    while (faulty.cluster.job(job).get("status") or {}).get("phase") not in FINAL_PHASES and kills < 12:
        assert time.monotonic() < deadline, "the job did not finish under repeated operator kills"
        # Each kill hits a working operator: up to 2.5 s after its start-up (its first reconciles, a
        # wave of creations, an idle wait), never only the Python import of a slow start.
        wait_for("the operator's start-up", lambda: operator.log_path.read_text(errors="replace").count(
            OPERATOR_STARTED) >= operator.starts, timeout=120, interval=0.1)
        time.sleep(chaos.uniform(0.0, 2.5))
        faulty.operator.kill()
        kills += 1
        time.sleep(chaos.uniform(0.0, 1.5))
        faulty.operator.start()
    faulty.finish(job)
    assert kills >= 10, f"the job finished after only {kills} operator kills"
    report(assert_exactly_once(faulty, job, 12), record_property, kills_survived=kills)


def test_deleted_pod_and_killed_trial_process_are_retried(faulty: Faulty, record_property: Any) -> None:
    job = faulty.job("retried", max_trials=4, parallelism=2, steps=4, retries=2)
    deleted, killed = f"{job}-0-1", f"{job}-1-1"
    wait_for("both first pods running", lambda: set(faulty.running_pods(job, 2)) >= {deleted, killed}, timeout=240)
    faulty.kube.core.delete_namespaced_pod(deleted, faulty.cluster.namespace)
    pid = faulty.ledger.started(killed)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the trial's own process, as the OOM killer would
    faulty.finish(job)
    figures = assert_exactly_once(faulty, job, 4, {f"{job}-0": 1, f"{job}-1": 1})
    trials = {t["metadata"]["name"]: t for t in faulty.cluster.trials(job)}
    reasons = {e.reason for e in faulty.cluster.events(f"{job}-1")}
    assert "TrialRetried" in reasons, reasons
    assert trials[f"{job}-1"]["status"]["attempts"] == 2
    report(figures, record_property)


def test_node_agent_killed_and_restarted_mid_job(faulty: Faulty, record_property: Any) -> None:
    job = faulty.job("agentless", max_trials=6, parallelism=3, steps=4)
    faulty.running_pods(job, 2)
    faulty.ctl.stop_component("agent", signal.SIGKILL)
    time.sleep(6)  # trials finish meanwhile; their pods still say Running
    faulty.ctl.start_agent()
    faulty.finish(job)
    report(assert_exactly_once(faulty, job, 6), record_property)


@contextlib.contextmanager
def bystander_node(kube: Kube, name: str) -> Iterator[None]:
    """A second Node, healthy (this test renews its Lease, as a kubelet would) and unschedulable.

    With one node, "every node NotReady" is what the node lifecycle controller takes for its own
    network partition ("master disruption mode"), and it evicts nothing; a real cluster has more.
    """
    coordination = client.CoordinationV1Api(kube.api_client)
    taint = client.V1Taint(key="kubetune.io/bystander", effect="NoSchedule")
    kube.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name),
                                        spec=client.V1NodeSpec(unschedulable=True, taints=[taint])))
    stop = threading.Event()

    def heartbeat() -> None:
        while True:
            now = datetime.now(UTC)
            ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "bystander",
                     "lastHeartbeatTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "lastTransitionTime": "2026-11-29T00:00:00Z"}
            spec = {"holderIdentity": name, "leaseDurationSeconds": 40,
                    "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
            try:
                kube.core.patch_node_status(name, {"status": {"conditions": [ready]}})
                try:
                    coordination.patch_namespaced_lease(name, "kube-node-lease", {"spec": spec})
                except ApiException as error:
                    if error.status != 404:
                        raise
                    coordination.create_namespaced_lease("kube-node-lease", {"metadata": {"name": name},
                                                                             "spec": spec})
            except (ApiException, OSError, urllib3.exceptions.HTTPError) as error:
                print(f"bystander heartbeat failed, retrying: {error}")  # a missed beat or two is harmless
            if stop.wait(2.0):
                return

    thread = threading.Thread(target=heartbeat, name=f"bystander-{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        kube.core.delete_node(name)
        with contextlib.suppress(ApiException):
            coordination.delete_namespaced_lease(name, "kube-node-lease")


def test_node_not_ready_evicts_pods_and_the_job_recovers(faulty: Faulty, record_property: Any) -> None:
    # Evicted soon after the node becomes unreachable, rather than after the default 300 s; not at
    # once, so a retry that lands on the node in the seconds before its taint is lifted survives.
    tolerations = [{"key": f"node.kubernetes.io/{taint}", "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": 8} for taint in ("unreachable", "not-ready")]
    node = faulty.info.node_name
    faulty.ctl.restart_component("kube-controller-manager", extra_args=FAST_NODE_MONITOR)
    try:
        with bystander_node(faulty.kube, f"{node}-bystander"):
            job = faulty.job("nodeless", max_trials=4, parallelism=2, steps=12, retries=1, tolerations=tolerations)
            active = faulty.running_pods(job, 2)
            faulty.ctl.stop_component("agent", signal.SIGKILL)

            def not_ready() -> bool:
                status = faulty.kube.core.read_node(node).status
                return any(c.type == "Ready" and c.status != "True" for c in status.conditions or [])

            wait_for(f"node {node} NotReady", not_ready, timeout=120)

            def evicted() -> list[str]:
                return [p.metadata.name for p in faulty.cluster.pods(job) if p.metadata.deletion_timestamp]

            gone = wait_for("the controller manager to evict the node's trial pods", evicted, timeout=120)
            faulty.ctl.start_agent()
            faulty.finish(job)
    finally:
        faulty.ctl.start_agent()  # a no-op unless the test failed while the node was down
        faulty.ctl.restart_component("kube-controller-manager")
    # Trials running when the node went away may need their one retry; the others should not.
    figures = assert_exactly_once(faulty, job, 4, {pod.rsplit("-", 1)[0]: 1 for pod in active}, exact=False)
    report(figures, record_property, evicted=len(gone))


def test_prometheus_down_degrades_then_recovers(faulty: Faulty, record_property: Any) -> None:
    # Median early stopping makes the operator read curves; minTrials above maxTrials never stops one.
    job = faulty.job("promless", max_trials=4, parallelism=2, steps=8,
                     earlyStopping={"rule": "median", "minTrials": 100})

    def metrics(status: str) -> dict[str, Any] | None:
        found = condition(faulty.cluster.job(job), "MetricsAvailable")
        return found if found and found["status"] == status else None

    faulty.running_pods(job, 1)
    faulty.ctl.stop_component("prometheus", signal.SIGKILL)
    try:
        down = wait_for("MetricsAvailable=False", lambda: metrics("False"), timeout=120)
        assert down["reason"] == "PrometheusUnavailable", down
    finally:
        faulty.ctl.start_component("prometheus")
    wait_for("MetricsAvailable=True again", lambda: metrics("True"), timeout=120)
    assert faulty.cluster.job(job)["status"]["phase"] == "Running", "recovery was only seen after the job ended"
    faulty.finish(job)
    report(assert_exactly_once(faulty, job, 4), record_property)


def test_api_server_restart_mid_job(faulty: Faulty, record_property: Any) -> None:
    job = faulty.job("apiless", max_trials=6, parallelism=3, steps=4)
    faulty.running_pods(job, 2)
    faulty.ctl.stop_component("kube-apiserver", signal.SIGKILL)
    time.sleep(3)
    faulty.ctl.start_component("kube-apiserver")
    faulty.finish(job)
    assert faulty.operator.alive(), faulty.operator.log_tail()
    assert faulty.operator.starts == 1
    report(assert_exactly_once(faulty, job, 6), record_property)


def test_concurrent_status_writers_lose_no_update(faulty: Faulty, tmp_path: Path, record_property: Any) -> None:
    """A second operator (as during a rolling update) and an outside client that updates the
    job's status with resourceVersion preconditions, all at once with the operator."""
    second = OperatorProcess(faulty.info.kubeconfig, faulty.info.prometheus_url, tmp_path / "second.log",
                             KUBETUNE_NAMESPACES=faulty.cluster.namespace)
    second.start()
    job = faulty.job("contended", max_trials=6, parallelism=3, steps=3)
    written: list[str] = []
    conflicts = 0
    stop = threading.Event()

    def outside_writer() -> None:
        """Read, think, write back under the read resourceVersion (409 if anyone wrote meanwhile)."""
        nonlocal conflicts
        while not stop.is_set():
            current = faulty.cluster.job(job)
            status = dict(current.get("status") or {})
            if not status.get("conditions"):
                time.sleep(0.2)
                continue
            time.sleep(0.3)
            message = f"write {len(written) + conflicts}"
            own = {"type": "Audited", "status": "True", "reason": "OutsideWriter", "message": message,
                   "lastTransitionTime": "2026-11-29T00:00:00Z"}
            status["conditions"] = [c for c in status["conditions"] if c["type"] != "Audited"] + [own]
            current["status"] = status
            try:
                faulty.cluster.custom.replace_namespaced_custom_object_status(
                    GROUP, VERSION, faulty.cluster.namespace, "tuningjobs", job, current
                )
                written.append(message)
            except ApiException as error:
                if error.status != 409:
                    raise
                conflicts += 1

    writer = threading.Thread(target=outside_writer, name="outside-writer")
    writer.start()
    try:
        faulty.finish(job)
    finally:
        stop.set()
        writer.join(timeout=60)
        second.stop()
    assert len(written) >= 3, f"the outside writer got only {len(written)} writes through"
    assert conflicts >= 1, "no write ever conflicted: the fault was not exercised"
    # Let the operators react to the last outside write, then check that neither side lost an update.
    time.sleep(2)
    audited = condition(faulty.cluster.job(job), "Audited")
    assert audited is not None and audited["message"] == written[-1], ("an outside update was lost", audited)
    report(assert_exactly_once(faulty, job, 6), record_property, outside_writes=len(written), conflicts=conflicts)
