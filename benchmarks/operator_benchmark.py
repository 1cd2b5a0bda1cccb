"""Control-plane benchmarks of the operator on a private dev cluster (results: OPERATOR.md).

    python benchmarks/operator_benchmark.py turnover   # issue 4: 20 jobs x 10 parallel short trials
    python benchmarks/operator_benchmark.py scale      # issue 6: one 20,000-trial job, then 200 jobs at once
    python benchmarks/operator_benchmark.py plan       # one reconcile's pure part (no cluster) vs history size

Each command starts its own dev cluster (real etcd, kube-apiserver, scheduler, controller-manager,
node agent) in a temporary home, runs the operator as a real process (`python -m
kubetune.handlers.main`), and measures from outside:

- turnover: an independent watcher in this process sees pod events; for each job, the i-th pod to
  finish is paired with the (parallelism + i)-th pod to be created (the one its freed slot allows),
  and turnover = creation seen - finish seen. The operator's own histogram
  (kubetune_trial_turnover_seconds) is read from its /metrics too.
- baseline, same run, same cluster: a trivial client (`floor-client`, its own process) that watches
  pods and creates the next one as soon as one finished - the floor any controller pays on this
  cluster. Turnover is reported as a ratio over that floor.
- API requests per trial: the operator's kubetune_api_requests_total (its own REST client; Kopf's
  three list+watch streams are not counted). Operator CPU seconds (utime+stime) and RSS from /proc.
- `turnover --nodes agent,real`: the same runs on a cluster with the node agent and on one with a
  real node (kubelet, containerd, runc: kubetune_dev/realnode.py), one after the other in one
  invocation; trials there are containers of the node's busybox image. Pod start (creation seen ->
  Running seen) is reported beside turnover, so the real node's start cost is known. The real
  node takes 110 pods: keep jobs x parallelism under 100 when it is in the run.

`scale` runs trials in the node agent's fast mode (pod annotation dev.kubetune.io/simulate-exit-code:
no process is started; the container ends at once with that exit code and the termination
message from its env), so the control plane, not process start-up, is what is measured; the 200-job
run uses real `sleep` processes so running pods can be counted (Katib #1328 comparison).

Raw results go to benchmarks/out/operator_<command>.json (git-ignored); a summary is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from kubetune.k8s.sync import JSON, ApiError, Gone, KubeApi, NotFound
from kubetune_dev.agent import SIMULATE_ANNOTATION, SIMULATED_MESSAGE_ENV
from kubetune_dev.cluster import ClusterInfo, DevCluster
from kubetune_dev.preflight import free_ports
from kubetune_dev.realcluster import node_images

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from kubetune_harness import OperatorProcess, operator_samples  # noqa: E402

GROUP_LABEL = "kubetune.io/job"  # the operator's label; the floor client sets it too
API = "/apis/kubetune.io/v1alpha1"
TICKS = os.sysconf("SC_CLK_TCK")
# The trial: sleep, then write the objective where the trainer contract expects it.
TRIAL_SCRIPT = 'sleep "$1"; printf \'{"status":"completed","metrics":{"loss":%s}}\' "$2" > /dev/termination-log'


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# ============================================================================ statistics


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": quantile(values, 0.5),
        "p90": quantile(values, 0.9),
        "p99": quantile(values, 0.99),
        "max": max(values) if values else None,
        "within_0.3s": sum(v <= 0.3 for v in values) / len(values) if values else None,
        "within_1s": sum(v <= 1.0 for v in values) / len(values) if values else None,
    }


# ============================================================================ measurement


@dataclass
class PodTimes:
    group: str
    created: float
    running: float | None = None
    finished: float | None = None


class PodClock:
    """Watches the pods of one namespace and notes when each was first seen created, running, finished."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.pods: dict[str, PodTimes] = {}
        self.peak_running = 0
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"clock-{namespace}", daemon=True)

    def start(self) -> PodClock:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listing = self.api.get(path)
                    for pod in listing.get("items", []):
                        self._see(pod, time.monotonic())
                    version = str(listing["metadata"]["resourceVersion"])
                for event in self.api.watch(path, timeout_seconds=30, resourceVersion=version):
                    now = time.monotonic()
                    pod = event.get("object") or {}
                    version = str((pod.get("metadata") or {}).get("resourceVersion") or version)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._see(pod, now)
                    if self._stop.is_set():
                        return
            except Gone:
                version = None
            except ApiError:
                time.sleep(0.2)

    def _see(self, pod: JSON, now: float) -> None:
        metadata = pod["metadata"]
        name = metadata["name"]
        phase = (pod.get("status") or {}).get("phase")
        with self._lock:
            times = self.pods.get(name)
            if times is None:
                times = self.pods[name] = PodTimes(group=(metadata.get("labels") or {}).get(GROUP_LABEL, ""),
                                                   created=now)
            if phase == "Running" and times.running is None:
                times.running = now
                self._running.add(name)
                self.peak_running = max(self.peak_running, len(self._running))
            if phase in ("Succeeded", "Failed") and times.finished is None:
                times.finished = now
                self._running.discard(name)

    def finished(self) -> int:
        with self._lock:
            return sum(t.finished is not None for t in self.pods.values())

    def starts(self) -> list[float]:
        """Pod creation seen -> Running seen, for every pod seen running: what the node costs."""
        with self._lock:
            return [t.running - t.created for t in self.pods.values() if t.running is not None]

    def turnovers(self, parallelism: int) -> list[tuple[float, float]]:
        """(finish moment, turnover) for every finished pod whose freed slot was refilled."""
        groups: dict[str, list[PodTimes]] = {}
        with self._lock:
            for times in self.pods.values():
                groups.setdefault(times.group, []).append(times)
        pairs = []
        for members in groups.values():
            created = sorted(t.created for t in members)
            finished = sorted(t.finished for t in members if t.finished is not None)
            for i, moment in enumerate(finished):
                if parallelism + i < len(created):
                    pairs.append((moment, created[parallelism + i] - moment))
        return sorted(pairs)


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def proc_memory_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


class Sampler:
    """Every `interval` s: elapsed time, the process's RSS and CPU, plus whatever `extra` returns."""

    def __init__(self, pid: int, interval: float, extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.pid = pid
        self.interval = interval
        self.extra = extra
        self.samples: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.cpu_at_start = proc_cpu_seconds(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def sample(self) -> dict[str, Any]:
        memory = proc_memory_kib(self.pid)
        sample: dict[str, Any] = {
            "t": round(time.monotonic() - self.started, 2),
            "rss_mib": round(memory["VmRSS"] / 1024, 1),
            "peak_rss_mib": round(memory["VmHWM"] / 1024, 1),
            "cpu_s": round(proc_cpu_seconds(self.pid) - self.cpu_at_start, 2),
        }
        if self.extra is not None:
            with contextlib.suppress(ApiError):
                sample.update(self.extra())
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):
                self.samples.append(self.sample())

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        last = self.sample()
        self.samples.append(last)
        return last


def operator_metrics(port: int) -> dict[str, Any]:
    """The operator's counters, and its turnover histogram's cumulative buckets."""
    found: dict[str, Any] = {"turnover_buckets": {}}
    for sample in operator_samples(port):
        if sample.name == "kubetune_api_requests_total":
            found["api_requests"] = sample.value
        elif sample.name == "kubetune_trial_turnover_seconds_bucket":
            found["turnover_buckets"][sample.labels["le"]] = sample.value
        elif sample.name == "kubetune_trial_turnover_seconds_count":
            found["turnover_count"] = sample.value
        elif sample.name == "kubetune_trial_turnover_seconds_sum":
            found["turnover_sum"] = sample.value
        elif sample.name == "kubetune_reconcile_duration_seconds_count":
            found["reconciles"] = sample.value
        elif sample.name == "kubetune_reconcile_duration_seconds_sum":
            found["reconcile_seconds"] = sample.value
        elif sample.name == "kubetune_prometheus_errors_total":
            found["prometheus_errors"] = found.get("prometheus_errors", 0) + sample.value
    count = found.get("turnover_count") or 0
    buckets = found["turnover_buckets"]
    if count:
        found["turnover_within_0.3s"] = buckets.get("0.3", 0) / count
        found["turnover_within_1s"] = buckets.get("1.0", 0) / count
    return found


# ============================================================================ the cluster


def trial_container(seconds: float, simulate: bool, image: str = "busybox") -> dict[str, Any]:
    """`image` matters on the real node only (the node agent runs the command on the host)."""
    container: dict[str, Any] = {"name": "trial", "image": image}
    if simulate:
        container["command"] = ["true"]  # never run: the agent's fast mode ends the container at once
        container["env"] = [{"name": SIMULATED_MESSAGE_ENV,
                             "value": '{"status":"completed","metrics":{"loss":${params.x}}}'}]
    else:
        container["command"] = ["/bin/sh", "-c", TRIAL_SCRIPT, "trial", f"{seconds:g}", "${params.x}"]
    return container


def job_manifest(name: str, trials: int, parallelism: int, seconds: float, simulate: bool, seed: int,
                 extra_spec: dict[str, Any] | None = None, image: str = "busybox") -> JSON:
    metadata: JSON = {"annotations": {SIMULATE_ANNOTATION: "0"}} if simulate else {}
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningJob",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "loss", "goal": "minimize"},
            "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
            "algorithm": {"name": "random", "seed": seed},
            "budget": {"maxTrials": trials, "parallelism": parallelism, "maxFailedTrials": trials},
            "trialTemplate": {"template": {"metadata": metadata,
                                           "spec": {"containers": [trial_container(seconds, simulate, image)]}}},
            **(extra_spec or {}),
        },
    }


@dataclass
class Bench:
    info: ClusterInfo
    api: KubeApi
    work: Path
    operator_env: dict[str, str] = field(default_factory=dict)
    operators: list[OperatorProcess] = field(default_factory=list)

    @property
    def trial_image(self) -> str:
        """What trial containers run: the real node's non-root busybox image (the operator's pods run
        as non-root by default; the node agent ignores images)."""
        return node_images(self.info.bin_dir)["busybox-nonroot"].name if self.info.node_kind == "real" else "busybox"

    def namespace(self, name: str) -> str:
        self.api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        for _ in range(300):  # pods are refused until the ServiceAccount controller made `default`
            with contextlib.suppress(ApiError):
                self.api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default")
                return name
            time.sleep(0.2)
        raise RuntimeError(f"namespace {name} got no default ServiceAccount")

    def operator(self, namespace: str, env: dict[str, str]) -> tuple[OperatorProcess, int]:
        """The operator as a real process watching `namespace`; returns it and its metrics port."""
        port = free_ports(1)[0]
        operator = OperatorProcess(self.info.kubeconfig, self.info.prometheus_url,
                                   self.work / f"operator-{namespace}.log",
                                   **{"KUBETUNE_NAMESPACES": namespace, "KUBETUNE_OPERATOR_METRICS_PORT": str(port),
                                      **self.operator_env, **env})
        operator.start()
        self.operators.append(operator)
        deadline = time.monotonic() + 120
        while True:
            try:
                operator_metrics(port)
                break
            except OSError:
                if time.monotonic() > deadline or not operator.alive():
                    raise RuntimeError(f"operator did not start:\n{operator.log_tail()}") from None
                time.sleep(0.3)
        time.sleep(3.0)  # Kopf's watches and indices settle before anything is measured
        return operator, port

    def jobs(self, namespace: str) -> list[JSON]:
        items: list[JSON] = self.api.get(f"{API}/namespaces/{namespace}/tuningjobs").get("items", [])
        return items

    def wait_jobs(self, namespace: str, count: int, timeout: float) -> list[JSON]:
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs(namespace)
            done = [j for j in jobs if (j.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
            if len(done) == count:
                return jobs
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(done)}/{count} jobs finished after {timeout:.0f}s")
            time.sleep(1.0)


@contextlib.contextmanager
def bench_cluster(max_pods: int, operator_env: list[str], node_kind: str = "agent") -> Iterator[Bench]:
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-") as work:
        cluster = DevCluster(Path(work) / "cluster", owner_pid=os.getpid(), node_kind=node_kind,
                             agent_args=("--max-pods", str(max_pods)), log=log)
        try:
            info = cluster.up()
            api = KubeApi.from_kubeconfig(info.kubeconfig, temp_dir=Path(work) / "credentials", pool_size=32)
            install_crds(api, REPO / "crds")
            bench = Bench(info, api, Path(work), dict(item.split("=", 1) for item in operator_env))
            try:
                yield bench
            finally:
                for operator in bench.operators:
                    operator.stop()
                    (OUT / f"{operator.log_path.stem}.log").write_bytes(operator.log_path.read_bytes())
        finally:
            cluster.down()


# ============================================================================ runs


def run_floor(bench: Bench, groups: int, parallelism: int, per_group: int, seconds: float) -> dict[str, Any]:
    """The trivial controller: a separate process creating the next pod when one finished."""
    namespace = bench.namespace(f"floor-{int(time.time())}")
    clock = PodClock(bench.api, namespace).start()
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, __file__, "floor-client", "--kubeconfig", str(bench.info.kubeconfig),
         "--namespace", namespace, "--groups", str(groups), "--parallelism", str(parallelism),
         "--per-group", str(per_group), "--seconds", str(seconds), "--image", bench.trial_image],
    )
    sampler = Sampler(process.pid, 1.0).start()
    total = groups * per_group
    while clock.finished() < total:
        if process.poll() is not None and process.returncode != 0:
            raise RuntimeError(f"floor client exited with {process.returncode}")
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    last = sampler.stop()
    process.terminate()
    process.wait(timeout=30)
    clock.stop()
    turnover = [t for _, t in clock.turnovers(parallelism)]
    return {"pods": total, "elapsed_s": round(elapsed, 1), "pods_per_s": round(total / elapsed, 2),
            "turnover": summary(turnover), "pod_start": summary(clock.starts()), "cpu_s_per_pod": last["cpu_s"] / total,
            "peak_running": clock.peak_running}


def floor_client(args: argparse.Namespace) -> int:
    api = KubeApi.from_kubeconfig(Path(args.kubeconfig), pool_size=32)
    created: dict[str, int] = {}
    done: set[str] = set()
    pool = ThreadPoolExecutor(16)

    def create(group: str) -> None:
        index = created[group] = created.get(group, 0) + 1
        container = trial_container(args.seconds, simulate=False, image=args.image)
        container["command"][-1] = "0.5"  # the objective the trial prints
        pod: JSON = {"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": f"{group}-{index}", "labels": {GROUP_LABEL: group}},
                     "spec": {"restartPolicy": "Never", "containers": [container]}}
        pool.submit(api.create, f"/api/v1/namespaces/{args.namespace}/pods", pod)

    for g in range(args.groups):
        for _ in range(args.parallelism):
            create(f"g{g}")
    path = f"/api/v1/namespaces/{args.namespace}/pods"
    version = str(api.get(path)["metadata"]["resourceVersion"])
    while len(done) < args.groups * args.per_group:
        try:
            for event in api.watch(path, timeout_seconds=60, resourceVersion=version):
                pod = event.get("object") or {}
                version = str(pod["metadata"].get("resourceVersion") or version)
                if event.get("type") not in ("ADDED", "MODIFIED"):
                    continue  # BOOKMARK, DELETED
                name, group = pod["metadata"]["name"], pod["metadata"].get("labels", {}).get(GROUP_LABEL)
                if group and (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") and name not in done:
                    done.add(name)
                    if created[group] < args.per_group:
                        create(group)
        except Gone:
            version = str(api.get(path)["metadata"]["resourceVersion"])
    pool.shutdown()
    return 0


def run_jobs(bench: Bench, label: str, manifests: list[JSON], parallelism: int, timeout: float,
             status_at: tuple[int, ...] = (), env: dict[str, str] | None = None) -> dict[str, Any]:
    """Create `manifests` in a fresh namespace watched by a fresh operator; measure until all finished."""
    namespace = bench.namespace(f"{label}-{int(time.time())}")
    operator, port = bench.operator(namespace, env or {})
    assert operator.process is not None
    clock = PodClock(bench.api, namespace).start()
    before = operator_metrics(port)
    watched = manifests[0]["metadata"]["name"]
    status_sizes: dict[str, int] = {}

    def job_status() -> dict[str, Any]:
        job = bench.api.get(f"{API}/namespaces/{namespace}/tuningjobs/{watched}")
        status = job.get("status") or {}
        created = (status.get("counts") or {}).get("created", 0)
        size = len(json.dumps(status, separators=(",", ":")))
        # The first job's status once it has created that many trials (sampled every 2 s: a threshold
        # too near the end is first seen on the finished job).
        for threshold in status_at:
            if created >= threshold and f"at_{threshold}" not in status_sizes:
                status_sizes[f"at_{threshold}"] = size
        return {"created": created, "status_bytes": size}

    sampler = Sampler(operator.process.pid, 2.0, job_status).start()
    started = time.monotonic()
    creator = ThreadPoolExecutor(8)
    list(creator.map(lambda m: bench.api.create(f"{API}/namespaces/{namespace}/tuningjobs", m), manifests))
    jobs = bench.wait_jobs(namespace, len(manifests), timeout)
    elapsed = time.monotonic() - started
    time.sleep(2.0)  # the last status writes land in the metrics
    last = sampler.stop()
    clock.stop()
    after = operator_metrics(port)
    operator.stop()  # an idle operator left running would load the machine under the next variant's run
    trials = sum((j.get("status") or {}).get("counts", {}).get("created", 0) for j in jobs)
    pairs = clock.turnovers(parallelism)
    tenth = max(1, len(pairs) // 10)
    final_status = (next(j for j in jobs if j["metadata"]["name"] == watched).get("status") or {})
    status_sizes["final"] = len(json.dumps(final_status, separators=(",", ":")))
    return {
        "jobs": len(manifests),
        "trials": trials,
        "phases": sorted({(j.get("status") or {}).get("phase") for j in jobs}),
        "elapsed_s": round(elapsed, 1),
        "trials_per_s": round(trials / elapsed, 2),
        "turnover": summary([t for _, t in pairs]),
        "pod_start": summary(clock.starts()),
        "turnover_first_10pct": summary([t for _, t in pairs[:tenth]]),
        "turnover_last_10pct": summary([t for _, t in pairs[-tenth:]]),
        # p50 and p99 per tenth of the trials, in order: growth shows as a trend, not just two ends.
        "turnover_by_tenth": [{q: summary([t for _, t in pairs[i * tenth:(i + 1) * tenth]])[q] for q in ("p50", "p99")}
                              for i in range(10)] if len(pairs) >= 10 else [],
        "operator_histogram": {k: after.get(k) for k in ("turnover_count", "turnover_within_0.3s",
                                                          "turnover_within_1s")},
        "api_requests_per_trial": (after.get("api_requests", 0) - before.get("api_requests", 0)) / trials,
        "reconciles_per_trial": (after.get("reconciles", 0) - before.get("reconciles", 0)) / trials,
        "reconcile_seconds_per_trial": (after.get("reconcile_seconds", 0) - before.get("reconcile_seconds", 0))
        / trials,
        "operator_cpu_s_per_trial": last["cpu_s"] / trials,
        "operator_peak_rss_mib": last["peak_rss_mib"],
        "peak_running_pods": clock.peak_running,
        "pods_left_in_api": len(bench.api.get(f"/api/v1/namespaces/{namespace}/pods").get("items", [])),
        "status_bytes": status_sizes,
        "samples": sampler.samples,
    }


# ============================================================================ commands


def environment() -> dict[str, Any]:
    load = os.getloadavg()
    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_at_start": load[0],
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}


def install_crds(api: KubeApi, directory: Path) -> None:
    """Create or replace the CRDs found in `directory`, then wait until they are served."""
    base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for path in sorted(directory.glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        name = manifest["metadata"]["name"]
        try:
            current = api.get(f"{base}/{name}")
        except NotFound:
            api.create(base, manifest)
            continue
        manifest["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        api.replace(f"{base}/{name}", manifest)
    for crd in ("tuningjobs.kubetune.io", "trials.kubetune.io"):
        while not any(c["type"] == "Established" and c["status"] == "True" for c in
                      (api.get(f"{base}/{crd}").get("status") or {}).get("conditions") or []):
            time.sleep(0.2)
    time.sleep(2.0)  # the API server's storage for the new schema (re)initialises


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """`label:NAME=VALUE,NAME=VALUE` -> (label, environment)."""
    label, _, settings = text.partition(":")
    return label, dict(item.split("=", 1) for item in settings.split(",") if item)


def turnover(args: argparse.Namespace) -> dict[str, Any]:
    variants = [parse_variant(v) for v in args.variant] or [("operator", {})]
    nodes = args.nodes.split(",")
    if "real" in nodes and args.jobs * args.parallelism > 100:
        raise SystemExit("the real node takes 110 pods: keep --jobs x --parallelism under 100")
    results: dict[str, Any] = {"environment": environment(), "variants": dict(variants), "nodes": {}}
    for node_kind in nodes:
        log(f"{node_kind} node")
        results["nodes"][node_kind] = {"rounds": turnover_rounds(args, variants, node_kind)}
    return results


def turnover_rounds(args: argparse.Namespace, variants: list[tuple[str, dict[str, str]]], node_kind: str) -> list[Any]:
    rounds: list[Any] = []
    with bench_cluster(1000, args.operator_env, node_kind) as bench:
        for number in range(args.rounds):
            # Floor and operators alternate, so all see the same (noisy) machine.
            log(f"round {number + 1}: floor client")
            floor = run_floor(bench, args.jobs, args.parallelism, args.trials_per_job, args.seconds)
            log(f"floor: {json.dumps(floor['turnover'])}")
            measured: dict[str, Any] = {"floor": floor}
            for label, variant_env in variants:
                log(f"round {number + 1}: {label}, {args.jobs} jobs")
                # CRDS=<dir>: that tree's CRDs while its operator runs (an older model refuses fields
                # newer CRDs default, and a newer operator's status fields would be pruned by older CRDs).
                env = dict(variant_env)
                install_crds(bench.api, Path(env.pop("CRDS", REPO / "crds")))
                manifests = [job_manifest(f"turnover-{i}", args.trials_per_job, args.parallelism, args.seconds,
                                          False, i, image=bench.trial_image) for i in range(args.jobs)]
                result = run_jobs(bench, label, manifests, args.parallelism, timeout=1800, env=env)
                log(f"{label}: {json.dumps(result['turnover'])}")
                result["ratio_over_floor"] = {q: result["turnover"][q] / floor["turnover"][q] for q in ("p50", "p99")
                                              if result["turnover"][q] and floor["turnover"][q]}
                measured[label] = result
            rounds.append(measured)
    return rounds


SPACE = [
    {"name": "lr", "type": "float", "min": 1e-5, "max": 1.0, "log": True},
    {"name": "batch_size", "type": "int", "min": 16, "max": 128, "step": 16},
    {"name": "optimizer", "type": "categorical", "values": ["sgd", "adam"]},
]


def plan_cost(args: argparse.Namespace) -> dict[str, Any]:
    """The pure part of one reconcile - `planner.plan` with the real search engine - for a job after n
    finished trials with one slot just freed (parallelism - 1 running), so each plan asks the engine
    for one suggestion, as the reconcile after a trial finishes does in the one-job scale run. As in the
    operator, the job's ledger keeps the finished trials between reconciles and each plan is given the
    running ones: each size is planned once with every trial (filling the ledger), then timed `repeat`
    times; the ratio is over the smallest size."""
    from kubetune.api import Trial, TuningJob
    from kubetune.controller.engine import SearchEngine
    from kubetune.controller.ledger import Ledger
    from kubetune.controller.observe import pod_view
    from kubetune.controller.planner import Observations, PlannerSettings, plan

    engine, now = SearchEngine(), datetime.now(UTC)
    manifest = job_manifest("big", max(args.sizes) + args.parallelism, args.parallelism, 0, True, 1)
    manifest["spec"]["parameters"] += SPACE  # a study's usual kinds of knobs; x stays first
    job = TuningJob.model_validate({**manifest, "metadata": {"name": "big", "namespace": "bench", "uid": "uid-big"}})
    results: dict[str, Any] = {"environment": environment(), "parallelism": args.parallelism, "sizes": {}}
    for size in args.sizes:
        def trial(index: int, status: dict[str, Any]) -> Trial:
            return Trial.model_validate({"metadata": {"name": f"big-{index}", "uid": f"uid-{index}"},
                                         "spec": {"index": index, "parameters": parameters(index)},
                                         "status": status})
        def parameters(index: int) -> dict[str, Any]:
            return {"x": (index * 0.618) % 1.0, "lr": 10 ** -(1 + index % 4), "batch_size": 16 * (1 + index % 8),
                    "optimizer": ("sgd", "adam")[index % 2]}

        trials = [trial(i, {"phase": "Succeeded", "attempts": 1, "objective": (i * 0.618) % 1.0,
                            "metrics": {"loss": (i * 0.618) % 1.0}}) for i in range(size)]
        running = args.parallelism - 1
        trials += [trial(size + i, {"phase": "Running", "attempts": 1}) for i in range(running)]
        pods = [pod_view({"metadata": {"name": f"big-{size + i}-1", "labels": {"kubetune.io/trial": f"big-{size + i}"}},
                          "status": {"phase": "Running"}}) for i in range(running)]
        views = [p for p in pods if p is not None]
        ledger, seconds = Ledger(), []
        for attempt in range(args.repeat + 1):
            given = trials[size:] if attempt else trials  # the first one fills the ledger, as the operator's does
            started = time.perf_counter()
            plan(job, given, views, Observations(), now, engine, frozenset(), PlannerSettings(), ledger)
            if attempt:
                seconds.append(time.perf_counter() - started)
        results["sizes"][size] = summary(seconds)
        log(f"{size} finished trials: median {results['sizes'][size]['p50'] * 1000:.1f} ms")
    return results


def scale(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"environment": environment()}
    with bench_cluster(max(1000, args.many_jobs * args.many_parallelism * 2), args.operator_env) as bench:
        if args.trials:
            log(f"one job of {args.trials} fast trials, parallelism {args.parallelism}")
            manifest = job_manifest("big", args.trials, args.parallelism, 0, True, 1)
            results["one_job"] = run_jobs(bench, "big", [manifest], args.parallelism, timeout=args.timeout,
                                          status_at=(100, max(100, args.trials - 10 * args.parallelism)))
            log(f"one job: {json.dumps({k: v for k, v in results['one_job'].items() if k != 'samples'})}")
        if args.many_jobs:
            log(f"{args.many_jobs} jobs x {args.many_trials} trials, parallelism {args.many_parallelism}")
            manifests = [job_manifest(f"many-{i}", args.many_trials, args.many_parallelism, args.seconds, False, i)
                         for i in range(args.many_jobs)]
            results["many_jobs"] = run_jobs(bench, "many", manifests, args.many_parallelism, timeout=args.timeout)
            log(f"many jobs: {json.dumps({k: v for k, v in results['many_jobs'].items() if k != 'samples'})}")
    return results


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def markdown(command: str, results: dict[str, Any]) -> str:
    """The summary tables of OPERATOR.md, from a results file."""
    env = results["environment"]
    lines = [f"`{env['command']}` - {env['date']}, {env['cpus']} CPUs ({env['machine']}), "
             f"load average {env['loadavg_at_start']:.1f} at start", ""]
    if command == "turnover":
        lines += ["| node | round | controller | turnover p50 | p99 | p50 / floor | p99 / floor | <= 0.3 s | <= 1 s "
                  "| pod start p50 | p99 | trials/s | API req./trial | CPU s/trial | peak RSS | peak running |",
                  "|" + " --- |" * 16]
        # Results from before `--nodes` hold one node agent's rounds.
        by_node = results.get("nodes") or {"agent": {"rounds": results["rounds"]}}
        rows = [(node, number, label, run) for node, found in by_node.items()
                for number, measured in enumerate(found["rounds"], 1) for label, run in measured.items()]
        for node, number, label, run in rows:
            t, ratio = run["turnover"], run.get("ratio_over_floor", {})
            start = run.get("pod_start") or {"p50": None, "p99": None}
            is_floor = label == "floor"
            lines.append(
                f"| {node} | {number} | {label} | {_ms(t['p50'])} | {_ms(t['p99'])} | "
                + (" 1 | 1 |" if is_floor else f" {ratio.get('p50', 0):.0f}x | {ratio.get('p99', 0):.0f}x |")
                + f" {_pct(t['within_0.3s'])} | {_pct(t['within_1s'])} | "
                + f"{_ms(start['p50'])} | {_ms(start['p99'])} | "
                + f"{run.get('trials_per_s', run.get('pods_per_s'))} | "
                + ("-" if is_floor else f"{run['api_requests_per_trial']:.1f}") + " | "
                + f"{run.get('operator_cpu_s_per_trial', run.get('cpu_s_per_pod', 0)):.4f} | "
                + ("-" if is_floor else f"{run['operator_peak_rss_mib']:.0f} MiB") + " | "
                + f"{run.get('peak_running_pods', run.get('peak_running'))} |")
        return "\n".join(lines)
    if command == "plan":
        sizes = results["sizes"]
        smallest = sizes[min(sizes, key=int)]["p50"]
        lines += [f"| finished trials (+ {results['parallelism'] - 1} running) | plan() median | p90 "
                  "| ratio over the smallest |", "| --- | --- | --- | --- |"]
        lines += [f"| {int(size):,} | {run['p50'] * 1000:.1f} ms | {run['p90'] * 1000:.1f} ms "
                  f"| {run['p50'] / smallest:.0f}x |" for size, run in sizes.items()]
        return "\n".join(lines)
    lines += ["| run | trials | time | trials/s | turnover p50 first 10 % | last 10 % | p99 first 10 % | last 10 % "
              "| API req./trial | CPU s/trial | RSS first / last sample | peak RSS | status bytes | peak running "
              "| pods left |", "|" + " --- |" * 15]
    for label in ("one_job", "many_jobs"):
        run = results.get(label)
        if run is None:
            continue
        first, last = run["turnover_first_10pct"], run["turnover_last_10pct"]
        samples = run["samples"]
        sizes = ", ".join(f"{k} {v}" for k, v in run["status_bytes"].items())
        lines.append(
            f"| {label} ({run['jobs']} job{'s' if run['jobs'] > 1 else ''}) | {run['trials']} | {run['elapsed_s']} s "
            f"| {run['trials_per_s']} | {_ms(first['p50'])} | {_ms(last['p50'])} | {_ms(first['p99'])} "
            f"| {_ms(last['p99'])} | {run['api_requests_per_trial']:.1f} | {run['operator_cpu_s_per_trial']:.4f} "
            f"| {samples[0]['rss_mib']:.0f} / {samples[-1]['rss_mib']:.0f} MiB "
            f"| {run['operator_peak_rss_mib']:.0f} MiB "
            f"| {sizes} | {run['peak_running_pods']} | {run['pods_left_in_api']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("turnover", help="issue 4: turnover latency against the floor client")
    one.add_argument("--jobs", type=int, default=20)
    one.add_argument("--parallelism", type=int, default=10)
    one.add_argument("--trials-per-job", type=int, default=40)
    one.add_argument("--seconds", type=float, default=2.0, help="how long each trial sleeps")
    one.add_argument("--rounds", type=int, default=1)
    one.add_argument("--nodes", default="agent", help="node kinds measured one after the other: agent, real or "
                     "agent,real (the real node's start cost beside the agent's)")
    one.add_argument("--variant", action="append", default=[], metavar="LABEL:NAME=VALUE,...",
                     help="operator configurations compared in the same run (default: one, as configured); "
                     "CRDS=<dir> installs that tree's CRDs while it runs")
    two = commands.add_parser("scale", help="issue 6: one huge job, then many jobs at once")
    two.add_argument("--trials", type=int, default=20_000, help="trials of the one job (0: skip)")
    two.add_argument("--parallelism", type=int, default=10)
    two.add_argument("--many-jobs", type=int, default=200, help="jobs created at once (0: skip)")
    two.add_argument("--many-trials", type=int, default=6)
    two.add_argument("--many-parallelism", type=int, default=2)
    two.add_argument("--seconds", type=float, default=20.0, help="how long each trial of the many jobs sleeps")
    two.add_argument("--timeout", type=float, default=7200.0)
    for command in (one, two):
        command.add_argument("--operator-env", action="append", default=[], metavar="NAME=VALUE",
                             help="extra operator setting, e.g. KUBETUNE_WORKERS=16 (repeatable)")
    three = commands.add_parser("plan", help="issue 6: one reconcile's pure part against the history size")
    three.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000, 20_000])
    three.add_argument("--parallelism", type=int, default=20)
    three.add_argument("--repeat", type=int, default=9)
    floor = commands.add_parser("floor-client", help="(internal) the baseline controller")
    for name in ("--kubeconfig", "--namespace"):
        floor.add_argument(name, required=True)
    for name in ("--groups", "--parallelism", "--per-group"):
        floor.add_argument(name, type=int, required=True)
    floor.add_argument("--seconds", type=float, required=True)
    floor.add_argument("--image", default="busybox")
    report = commands.add_parser("report", help="print the Markdown tables of a results file")
    report.add_argument("results", type=Path, help="benchmarks/out/operator_<command>.json")
    args = parser.parse_args(argv)
    if args.command == "floor-client":
        return floor_client(args)
    if args.command == "report":
        results = json.loads(args.results.read_text())
        kind = "turnover" if "rounds" in results or "nodes" in results else "plan" if "sizes" in results else "scale"
        print(markdown(kind, results))
        return 0
    OUT.mkdir(exist_ok=True)
    results = {"turnover": turnover, "scale": scale, "plan": plan_cost}[args.command](args)
    target = OUT / f"operator_{args.command}.json"
    target.write_text(json.dumps(results, indent=2))
    print(markdown(args.command, results))
    log(f"raw results: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
