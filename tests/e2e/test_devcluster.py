"""Acceptance tests of the dev cluster: real control plane, node agent, Prometheus.

No test asserts how long something takes; each polls for the state it expects with a generous
timeout (the machine running CI may be slow).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubetune_harness import (
    kubectl,
    phase,
    prometheus_query,
    restricted_container_context,
    restricted_pod_context,
    wait_gone,
    wait_phase,
)

from kubetune_dev import procs
from kubetune_dev.cluster import ClusterInfo, DevCluster
from kubetune_dev.layout import MARKER_ENV
from kubetune_dev.prometheus import build_file_sd_targets
from kubetune_dev.testing import Kube, poll

TIMEOUT = 120.0


def python_pod(
    name: str,
    script: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    gpus: int = 0,
    ports: list[client.V1ContainerPort] | None = None,
    env: dict[str, str] | None = None,
    restart_policy: str = "Never",
    grace: int | None = None,
    **spec: Any,
) -> client.V1Pod:
    variables = [client.V1EnvVar(name=k, value=v) for k, v in (env or {}).items()]
    variables.append(
        client.V1EnvVar(
            name="POD_IP",
            value_from=client.V1EnvVarSource(field_ref=client.V1ObjectFieldSelector(field_path="status.podIP")),
        )
    )
    container = client.V1Container(
        name="main",
        image="python:3.11-slim",
        command=["python", "-c", textwrap.dedent(script)],
        env=variables,
        ports=ports,
        resources=client.V1ResourceRequirements(limits={"nvidia.com/gpu": str(gpus)}) if gpus else None,
        security_context=restricted_container_context(),
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels, annotations=annotations),
        spec=client.V1PodSpec(
            containers=[container], restart_policy=restart_policy, termination_grace_period_seconds=grace,
            security_context=restricted_pod_context(), **spec
        ),
    )


def pod_log(info: ClusterInfo, kube: Kube, namespace: str, name: str) -> str:
    pod = kube.core.read_namespaced_pod(name, namespace)
    path = info.pod_log(namespace, name, pod.metadata.uid, "main")
    return path.read_text() if path.exists() else ""


def wait_log(info: ClusterInfo, kube: Kube, namespace: str, name: str, needle: str) -> str:
    return poll(
        f"{needle!r} in the log of {name}",
        lambda: text if needle in (text := pod_log(info, kube, namespace, name)) else None,
    )


# --------------------------------------------------------------------------- control plane


def test_node_is_ready_with_four_gpus(dev_cluster: ClusterInfo) -> None:
    table = kubectl(dev_cluster, "get", "nodes")
    assert dev_cluster.node_name in table and " Ready " in table, table
    node = json.loads(kubectl(dev_cluster, "get", "node", dev_cluster.node_name, "-o", "json"))
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "4"
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_api_server_reports_v1_34_4(kube: Kube) -> None:
    assert client.VersionApi(kube.api_client).get_code().git_version == "v1.34.4"


def test_up_again_reuses_the_running_cluster(dev_cluster_ctl: DevCluster, dev_cluster: ClusterInfo) -> None:
    again = dev_cluster_ctl.up()
    assert again.reused
    assert again.apiserver_url == dev_cluster.apiserver_url


def test_crds_are_served_with_cel_validation(kube: Kube, namespace: str) -> None:
    group = f"e2e-{namespace}.kubetune.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"ranges.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "ranges", "singular": "range", "kind": "Range"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"low": {"type": "integer"}, "high": {"type": "integer"}},
                                    "x-kubernetes-validations": [
                                        {"rule": "self.low <= self.high", "message": "low must not exceed high"}
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    extensions = client.ApiextensionsV1Api(kube.api_client)
    extensions.create_custom_resource_definition(crd)
    try:

        def create(low: int, high: int) -> ApiException | None:
            body = {"apiVersion": f"{group}/v1", "kind": "Range", "metadata": {"name": f"r{low}-{high}"},
                    "spec": {"low": low, "high": high}}  # fmt: skip
            try:
                kube.custom.create_namespaced_custom_object(group, "v1", namespace, "ranges", body)
            except ApiException as exc:
                return exc
            return None

        # Until the CRD is established the API answers 404; then the good object is accepted.
        poll("CRD served", lambda: (error := create(1, 2)) is None or error.status == 409)
        error = create(3, 2)
        assert error is not None and error.status == 422
        assert "low must not exceed high" in str(error.body)
    finally:
        extensions.delete_custom_resource_definition(crd["metadata"]["name"])


# --------------------------------------------------------------------------- pods through controllers


def test_job_completes_through_the_job_controller_and_gc_removes_its_pod(
    kube: Kube, namespace: str, dev_cluster: ClusterInfo
) -> None:
    script = """
        import os, sys
        print("hello from", os.environ["POD_NAME"], sys.executable)
        with open("/dev/termination-log", "w") as f:
            f.write("accuracy=0.93")
    """
    container = client.V1Container(
        name="main",
        image="python:3.11-slim",
        command=["python", "-c", textwrap.dedent(script)],
        env=[
            client.V1EnvVar(
                name="POD_NAME",
                value_from=client.V1EnvVarSource(field_ref=client.V1ObjectFieldSelector(field_path="metadata.name")),
            )
        ],
    )
    container.security_context = restricted_container_context()
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="pi"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(restart_policy="Never", containers=[container],
                                      security_context=restricted_pod_context())
            ),
        ),
    )
    kube.batch.create_namespaced_job(namespace, job)

    def complete() -> bool:
        conditions = kube.batch.read_namespaced_job("pi", namespace).status.conditions or []
        failed = [c for c in conditions if c.type == "Failed" and c.status == "True"]
        assert not failed, failed
        return any(c.type == "Complete" and c.status == "True" for c in conditions)

    poll("job pi Complete", complete)
    pods = kube.core.list_namespaced_pod(namespace, label_selector="job-name=pi").items
    assert len(pods) == 1
    pod = pods[0]
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0 and terminated.reason == "Completed"
    assert terminated.message == "accuracy=0.93"
    # `kubectl logs` goes through the API server to the agent's kubelet endpoint.
    logs = kubectl(dev_cluster, "logs", "-n", namespace, pod.metadata.name)
    assert f"hello from {pod.metadata.name}" in logs
    assert str(Path(sys.executable).parent) in logs  # the project's interpreter

    kube.batch.delete_namespaced_job("pi", namespace, propagation_policy="Background")
    poll(
        "job pod garbage-collected",
        lambda: not kube.core.list_namespaced_pod(namespace, label_selector="job-name=pi").items,
    )


def test_jobset_runs_through_its_controller_with_its_defaulting_webhook(kube: Kube, namespace: str) -> None:
    """A JobSet given only its replicated Job: JobSet's mutating webhook (served by the controller on
    loopback, called by the API server) fills in the success policy and the headless Service network,
    the controller runs its Job, the Job controller its two indexed pods; deletion takes them all."""
    serialize = kube.api_client.sanitize_for_serialization
    container = {"name": "main", "image": "python:3.11-slim",
                 "command": ["python", "-c", "import os; print(os.environ['JOB_COMPLETION_INDEX'])"],
                 "securityContext": serialize(restricted_container_context())}
    jobset = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "pair"},
        "spec": {"replicatedJobs": [{"name": "workers", "replicas": 1, "template": {"spec": {
            "completions": 2, "parallelism": 2, "backoffLimit": 0, "completionMode": "Indexed",
            "template": {"spec": {"restartPolicy": "Never", "containers": [container],
                                  "securityContext": serialize(restricted_pod_context())}},
        }}}]},
    }
    custom = kube.custom
    created = custom.create_namespaced_custom_object("jobset.x-k8s.io", "v1alpha2", namespace, "jobsets", jobset)
    assert created["spec"]["successPolicy"]["operator"] == "All", created["spec"]  # defaulted by the webhook
    assert created["spec"]["network"]["enableDNSHostnames"] is True, created["spec"]

    def completed() -> bool:
        got = custom.get_namespaced_custom_object("jobset.x-k8s.io", "v1alpha2", namespace, "jobsets", "pair")
        conditions = {c["type"]: c["status"] for c in (got.get("status") or {}).get("conditions", [])}
        assert conditions.get("Failed") != "True", got["status"]
        return conditions.get("Completed") == "True"

    poll("JobSet pair Completed", completed)
    selector = "jobset.sigs.k8s.io/jobset-name=pair"
    pods = kube.core.list_namespaced_pod(namespace, label_selector=selector).items
    assert sorted(p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1"]
    assert all(p.status.phase == "Succeeded" for p in pods)
    assert kube.core.read_namespaced_service("pair", namespace).spec.cluster_ip == "None"  # the pods' DNS

    custom.delete_namespaced_custom_object("jobset.x-k8s.io", "v1alpha2", namespace, "jobsets", "pair",
                                           propagation_policy="Foreground")
    poll("the JobSet's pods garbage-collected",
         lambda: not kube.core.list_namespaced_pod(namespace, label_selector=selector).items)


def test_gpu_pods_never_share_a_gpu_and_wait_for_free_ones(
    kube: Kube, namespace: str, dev_cluster: ClusterInfo, tmp_path: Path
) -> None:
    script = """
        import os, pathlib, time
        print("CUDA_VISIBLE_DEVICES=" + os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
        release = pathlib.Path(os.environ["RELEASE"])
        while not release.exists():
            time.sleep(0.2)
    """
    names = [f"gpu-{i}" for i in range(6)]
    for name in names:
        pod = python_pod(name, script, gpus=1, env={"RELEASE": str(tmp_path / f"release-{name}")})
        kube.core.create_namespaced_pod(namespace, pod)

    def split() -> tuple[list[str], list[str]] | None:
        pods = kube.core.list_namespaced_pod(namespace).items
        running = sorted(p.metadata.name for p in pods if p.status.phase == "Running")
        pending = [p for p in pods if p.status.phase == "Pending"]
        unschedulable = sorted(
            p.metadata.name
            for p in pending
            if any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in p.status.conditions or [])
        )
        return (running, unschedulable) if len(running) == 4 and len(unschedulable) == 2 else None

    running, waiting = poll("4 GPU pods running and 2 unschedulable", split)

    def indices(names: list[str]) -> dict[str, str]:
        found = {}
        for name in names:
            text = wait_log(dev_cluster, kube, namespace, name, "CUDA_VISIBLE_DEVICES=")
            found[name] = text.split("CUDA_VISIBLE_DEVICES=", 1)[1].split()[0]
        return found

    first = indices(running)
    assert sorted(first.values()) == ["0", "1", "2", "3"], first

    # Still unschedulable while the GPUs are held.
    assert all(phase(kube, namespace, name) == "Pending" for name in waiting)
    for name in running:
        (tmp_path / f"release-{name}").touch()
    for name in waiting:
        wait_phase(kube, namespace, name, "Running")
    second = indices(waiting)
    assert len(set(second.values())) == 2 and set(second.values()) <= {"0", "1", "2", "3"}, second
    for name in waiting:
        (tmp_path / f"release-{name}").touch()
    for name in names:
        assert wait_phase(kube, namespace, name, "Succeeded", "Failed").status.phase == "Succeeded"


# --------------------------------------------------------------------------- Prometheus


METRICS_SCRIPT = """
    import os, time
    from prometheus_client import Gauge, start_http_server
    Gauge("kubetune_e2e_value", "a test gauge").set(42)
    start_http_server(8000, addr=os.environ["POD_IP"])
    print("serving", flush=True)
    while True:
        time.sleep(1)
"""

CUSTOM_PATH_SCRIPT = """
    import http.server, os
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/custom/metrics":
                self.send_response(404); self.end_headers(); return
            body = b"kubetune_e2e_custom_path 7\\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)
    http.server.HTTPServer((os.environ["POD_IP"], 9100), Handler).serve_forever()
"""


def test_prometheus_scrapes_labelled_pods_with_contract_labels(kube: Kube, namespace: str, prometheus_url: str) -> None:
    scrape = {"kubetune.io/scrape": "true", "kubetune.io/job": "job-a"}
    kube.core.create_namespaced_pod(
        namespace,
        python_pod(
            "trial-1-pod",
            METRICS_SCRIPT,
            labels={**scrape, "kubetune.io/trial": "trial-1"},
            ports=[client.V1ContainerPort(name="metrics", container_port=8000)],
        ),
    )
    kube.core.create_namespaced_pod(
        namespace,
        python_pod(
            "custom-path",
            CUSTOM_PATH_SCRIPT,
            labels={**scrape, "kubetune.io/trial": "trial-2"},
            annotations={"kubetune.io/metrics-path": "/custom/metrics"},
            ports=[client.V1ContainerPort(name="metrics", container_port=9100)],
        ),
    )
    # Not scraped: no scrape label, and a labelled pod whose port is not named `metrics`.
    kube.core.create_namespaced_pod(
        namespace,
        python_pod("unlabelled", METRICS_SCRIPT, ports=[client.V1ContainerPort(name="metrics", container_port=8000)]),
    )
    kube.core.create_namespaced_pod(
        namespace,
        python_pod(
            "other-port",
            METRICS_SCRIPT,
            labels=scrape,
            ports=[client.V1ContainerPort(name="http", container_port=8000)],
        ),
    )

    series = poll(
        "kubetune_e2e_value scraped",
        lambda: prometheus_query(prometheus_url, f'kubetune_e2e_value{{namespace="{namespace}"}}'),
    )
    labels = series[0]["metric"]
    assert labels["kubetune_io_trial"] == "trial-1"
    assert labels["kubetune_io_job"] == "job-a"
    assert labels["pod"] == "trial-1-pod"
    assert labels["namespace"] == namespace
    assert series[0]["value"][1] == "42"

    custom = poll(
        "metrics at the annotated path",
        lambda: prometheus_query(prometheus_url, f'kubetune_e2e_custom_path{{namespace="{namespace}"}}'),
    )
    assert custom[0]["metric"]["kubetune_io_trial"] == "trial-2"

    # Both decoys run (so they would have been discovered) but never become targets.
    wait_phase(kube, namespace, "unlabelled", "Running")
    wait_phase(kube, namespace, "other-port", "Running")
    targets_url = f"{prometheus_url}/api/v1/targets?state=active"
    with urllib.request.urlopen(targets_url, timeout=10) as resp:
        active = json.load(resp)["data"]["activeTargets"]
    pods = {t["labels"].get("pod") for t in active if t["labels"].get("namespace") == namespace}
    assert pods == {"trial-1-pod", "custom-path"}


def test_prometheus_scrapes_file_sd_targets_of_an_in_process_operator(
    dev_cluster: ClusterInfo, prometheus_url: str
) -> None:
    body = b"kubetune_e2e_operator_up 1\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    targets = dev_cluster.layout.prometheus_targets_dir / "e2e-operator.json"
    try:
        targets.write_text(build_file_sd_targets([f"127.0.0.1:{server.server_address[1]}"], {"instance": "e2e"}))
        series = poll(
            "operator metrics via file_sd",
            lambda: prometheus_query(prometheus_url, 'kubetune_e2e_operator_up{job="kubetune-operator-static"}'),
        )
        assert series[0]["metric"]["instance"] == "e2e"
    finally:
        targets.unlink(missing_ok=True)
        server.shutdown()


# --------------------------------------------------------------------------- pod lifecycle


def _pid_from(path: Path) -> int:
    return poll(f"pid in {path}", lambda: int(path.read_text()) if path.exists() and path.read_text() else None)


def test_deleting_running_pods_stops_their_processes(kube: Kube, namespace: str, tmp_path: Path) -> None:
    polite = """
        import os, sys, time
        open(os.environ["PIDFILE"], "w").write(str(os.getpid()))
        while True:
            time.sleep(0.2)
    """
    stubborn = """
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open(os.environ["PIDFILE"], "w").write(str(os.getpid()))
        while True:
            time.sleep(0.2)
    """
    kube.core.create_namespaced_pod(namespace, python_pod("polite", polite, env={"PIDFILE": str(tmp_path / "polite")}))
    kube.core.create_namespaced_pod(
        namespace, python_pod("stubborn", stubborn, env={"PIDFILE": str(tmp_path / "stubborn")}, grace=2)
    )
    pids = {name: _pid_from(tmp_path / name) for name in ("polite", "stubborn")}
    assert all(procs.is_running(pid) for pid in pids.values())
    for name in pids:
        kube.core.delete_namespaced_pod(name, namespace)
    for name, pid in pids.items():
        wait_gone(kube, namespace, name)
        assert not procs.is_running(pid), f"{name} (pid {pid}) still runs after its pod was deleted"


def test_active_deadline_kills_the_pod(kube: Kube, namespace: str) -> None:
    script = "import time\nwhile True: time.sleep(0.2)"
    kube.core.create_namespaced_pod(namespace, python_pod("deadline", script, active_deadline_seconds=2))
    pod = wait_phase(kube, namespace, "deadline", "Failed", "Succeeded")
    assert pod.status.phase == "Failed"
    assert pod.status.reason == "DeadlineExceeded"


def test_missing_command_fails_the_pod_with_a_clear_reason(kube: Kube, namespace: str) -> None:
    for name, command in (("abs-path", "/nonexistent/bin/kt-no-such-tool"), ("on-path", "kt-no-such-tool")):
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(
                restart_policy="Never",
                containers=[client.V1Container(name="main", image="busybox", command=[command],
                                               security_context=restricted_container_context())],
                security_context=restricted_pod_context(),
            ),
        )
        kube.core.create_namespaced_pod(namespace, pod)
    for name, needle in (("abs-path", "no such file or directory"), ("on-path", "executable file not found in $PATH")):
        pod = wait_phase(kube, namespace, name, "Failed", "Succeeded")
        assert pod.status.phase == "Failed"
        terminated = pod.status.container_statuses[0].state.terminated
        assert terminated.reason == "StartError"
        assert terminated.exit_code == 128
        assert "kt-no-such-tool" in terminated.message and needle in terminated.message


def test_in_cluster_config_works_inside_pods(kube: Kube, namespace: str, dev_cluster: ClusterInfo) -> None:
    script = """
        from kubernetes import client, config
        config.load_incluster_config()
        print("server", client.VersionApi().get_code().git_version, flush=True)
    """
    kube.core.create_namespaced_pod(namespace, python_pod("incluster", script))
    pod = wait_phase(kube, namespace, "incluster", "Succeeded", "Failed")
    log = pod_log(dev_cluster, kube, namespace, "incluster")
    assert pod.status.phase == "Succeeded", log
    assert "server v1.34.4" in log


def test_agent_restart_neither_orphans_nor_reruns_pods(
    kube: Kube, namespace: str, dev_cluster_ctl: DevCluster, tmp_path: Path
) -> None:
    # Each start appends one line; the pod then waits for its release file.
    script = """
        import os, pathlib, time
        out = pathlib.Path(os.environ["OUT"])
        with out.open("a") as f:
            f.write(f"{os.getpid()}\\n")
        release = pathlib.Path(os.environ["RELEASE"])
        while not release.exists():
            time.sleep(0.2)
        raise SystemExit(int(os.environ.get("CODE", "0")))
    """

    def make(name: str, code: int = 0) -> None:
        env = {"OUT": str(tmp_path / f"{name}.starts"), "RELEASE": str(tmp_path / f"{name}.release"), "CODE": str(code)}
        kube.core.create_namespaced_pod(namespace, python_pod(name, script, env=env))

    def starts(name: str) -> list[int]:
        path = tmp_path / f"{name}.starts"
        return [int(line) for line in path.read_text().split()] if path.exists() else []

    make("survivor")  # runs across the agent restart, ends afterwards
    make("finisher", code=3)  # ends while the agent is down
    make("vanisher")  # killed (no exit code recorded) while the agent is down
    for name in ("survivor", "finisher", "vanisher"):
        wait_phase(kube, namespace, name, "Running")
        poll(f"{name} started", lambda n=name: starts(n))  # type: ignore[misc]

    dev_cluster_ctl.stop_component("agent", signal.SIGKILL)
    make("latecomer")  # created while no agent runs
    (tmp_path / "finisher.release").touch()
    poll("finisher exited", lambda: not procs.is_running(starts("finisher")[0]))
    os.killpg(os.getpgid(starts("vanisher")[0]), signal.SIGKILL)
    poll("vanisher killed", lambda: not procs.is_running(starts("vanisher")[0]))
    assert phase(kube, namespace, "survivor") == "Running"
    dev_cluster_ctl.start_agent()

    wait_phase(kube, namespace, "latecomer", "Running")
    pod = wait_phase(kube, namespace, "finisher", "Failed", "Succeeded")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3
    pod = wait_phase(kube, namespace, "vanisher", "Failed", "Succeeded")
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.reason == "ContainerStatusUnknown"

    for name in ("survivor", "latecomer"):
        (tmp_path / f"{name}.release").touch()
        assert wait_phase(kube, namespace, name, "Succeeded", "Failed").status.phase == "Succeeded"
    for name in ("survivor", "finisher", "vanisher", "latecomer"):
        assert len(starts(name)) == 1, f"{name} started {len(starts(name))} times"


def test_up_after_a_crash_cleans_up_and_down_leaves_no_process(tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path / "crashy", node_name="crashy", owner_pid=os.getpid())
    try:
        first = cluster.up()
        cluster_id = cluster.config.cluster_id  # type: ignore[union-attr]
        # Simulate a crash: every component dies at once, pid files stay behind.
        for name in reversed(list(cluster.status())):
            cluster.stop_component(name, signal.SIGKILL)
        assert not any(cluster.status().values())
        second = cluster.up()
        assert not second.reused
        assert second.apiserver_url != first.apiserver_url or cluster.config.cluster_id != cluster_id  # type: ignore[union-attr]
        assert not list(procs.processes_with_env(MARKER_ENV, cluster_id)), "processes of the crashed cluster survived"
        new_id = cluster.config.cluster_id  # type: ignore[union-attr]
    finally:
        cluster.down()
    assert not list(procs.processes_with_env(MARKER_ENV, new_id))
    assert not (tmp_path / "crashy").exists()


def test_cluster_of_a_killed_test_session_tears_itself_down(tmp_path: Path) -> None:
    home = tmp_path / "orphan"
    script = (
        "import os, time\n"
        "from pathlib import Path\n"
        "from kubetune_dev.cluster import DevCluster\n"
        f"DevCluster(Path({str(home)!r}), node_name='orphan', owner_pid=os.getpid()).up()\n"
        "print('up', flush=True)\n"
        "time.sleep(3600)\n"
    )
    session = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert session.stdout is not None and session.stdout.readline().strip() == "up"
        cluster_id = json.loads((home / "cluster.json").read_text())["cluster_id"]
        assert list(procs.processes_with_env(MARKER_ENV, cluster_id))
    finally:
        session.kill()
        session.wait()
    poll(
        "the orphaned cluster to tear itself down",
        lambda: not home.exists() and not list(procs.processes_with_env(MARKER_ENV, cluster_id)),
    )


def test_agent_rides_out_an_api_server_restart(kube: Kube, namespace: str, dev_cluster_ctl: DevCluster) -> None:
    agent = procs.ProcessHandle.read(dev_cluster_ctl.layout.pid_file("agent"))
    assert agent is not None and agent.alive()
    dev_cluster_ctl.stop_component("kube-apiserver", signal.SIGKILL)
    dev_cluster_ctl.start_component("kube-apiserver")

    def created() -> bool:
        try:
            kube.core.create_namespaced_pod(namespace, python_pod("after-restart", "print('ok')"))
        except ApiException as exc:
            return exc.status == 409  # 409: an earlier attempt got through
        except (OSError, urllib3.exceptions.HTTPError):
            return False  # the client's pooled connections may still point at the old server
        return True

    poll("pod created after the restart", created)
    assert wait_phase(kube, namespace, "after-restart", "Succeeded", "Failed").status.phase == "Succeeded"
    assert agent.alive(), "the node agent died while the API server was away"
