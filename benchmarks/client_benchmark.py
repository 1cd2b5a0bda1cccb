"""Which Kubernetes client for kubetune: ours against well-kept ones, in the same run on the same API server.

Each candidate runs in a fresh Python process (so import cost and memory are its own) and does, for
each of N "trials", what the operator does to a trial's pod: create it, read it, merge-patch its
status, patch its labels, delete it (5 calls), 10 trials at a time. Measured per candidate:
- throughput (trials per second) and the median latency of one call,
- API requests per trial, from the API server's own `apiserver_request_total` (a client that adds
  discovery or retries shows it),
- peak RSS of the process (imports + client + the run).

Candidates: `kubetune.k8s` (aiohttp, today's operator client), kubernetes_asyncio, lightkube (async),
and the official `kubernetes` client driven from a thread pool. Rounds alternate the candidates;
the report gives medians and ratios against kubetune's client measured in the same round.

    python benchmarks/client_benchmark.py [--kubeconfig K] [--trials 300] [--rounds 3]

Without --kubeconfig a private dev cluster (node agent) is started and stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CANDIDATES = ("kubetune", "kubernetes_asyncio", "lightkube", "kubernetes-threads")
CONCURRENCY = 10
CALLS_PER_TRIAL = 5


def pod(name: str) -> dict[str, Any]:
    # No scheduler takes it: the pod stays Pending and untouched, so the API server counts only our calls.
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"kubetune.io/bench": "client"}},
        "spec": {
            "schedulerName": "kubetune-bench-nobody",
            "containers": [{"name": "c", "image": "example.invalid/none:1", "command": ["true"]}],
        },
    }


STATUS = {"status": {"conditions": [{"type": "kubetune.io/Bench", "status": "True"}]}}
LABELS = {"metadata": {"labels": {"kubetune.io/phase": "done"}}}


async def run_trials(trials: int, one: Callable[[str], Awaitable[list[float]]]) -> tuple[float, list[float]]:
    semaphore = asyncio.Semaphore(CONCURRENCY)
    latencies: list[float] = []

    async def guarded(i: int) -> None:
        async with semaphore:
            latencies.extend(await one(f"bench-{os.getpid()}-{i}"))

    start = time.perf_counter()
    await asyncio.gather(*(guarded(i) for i in range(trials)))
    return time.perf_counter() - start, latencies


async def timed(call: Awaitable[Any]) -> float:
    start = time.perf_counter()
    await call
    return time.perf_counter() - start


# --------------------------------------------------------------------------- candidates (child process)


async def bench_kubetune(kubeconfig: str, namespace: str, trials: int) -> tuple[float, list[float]]:
    from kubetune.k8s.client import KubeClient
    from kubetune.k8s.core import Credentials, resource_path

    client = KubeClient(Credentials.load(kubeconfig))
    pods = resource_path("", "v1", "pods", namespace)

    async def one(name: str) -> list[float]:
        path = f"{pods}/{name}"
        return [
            await timed(client.create(pods, pod(name))),
            await timed(client.request("GET", path)),
            await timed(client.merge_patch(path + "/status", STATUS)),
            await timed(client.merge_patch(path, LABELS)),
            await timed(client.delete(path, grace_period_seconds=0)),
        ]

    try:
        return await run_trials(trials, one)
    finally:
        await client.close()


async def bench_kubernetes_asyncio(kubeconfig: str, namespace: str, trials: int) -> tuple[float, list[float]]:
    from kubernetes_asyncio import client, config

    api_client = await config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api_client)

    async def one(name: str) -> list[float]:
        return [
            await timed(core.create_namespaced_pod(namespace, pod(name))),
            await timed(core.read_namespaced_pod(name, namespace)),
            await timed(core.patch_namespaced_pod_status(name, namespace, STATUS,
                                                         _content_type="application/merge-patch+json")),
            await timed(core.patch_namespaced_pod(name, namespace, LABELS,
                                                  _content_type="application/merge-patch+json")),
            await timed(core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)),
        ]

    try:
        return await run_trials(trials, one)
    finally:
        await api_client.close()


async def bench_lightkube(kubeconfig: str, namespace: str, trials: int) -> tuple[float, list[float]]:
    from lightkube import AsyncClient, KubeConfig
    from lightkube.resources.core_v1 import Pod
    from lightkube.types import PatchType

    client = AsyncClient(KubeConfig.from_file(kubeconfig), namespace=namespace)

    async def one(name: str) -> list[float]:
        return [
            await timed(client.create(Pod.from_dict(pod(name)))),
            await timed(client.get(Pod, name)),
            await timed(client.patch(Pod.Status, name, STATUS, patch_type=PatchType.MERGE)),
            await timed(client.patch(Pod, name, LABELS, patch_type=PatchType.MERGE)),
            await timed(client.delete(Pod, name, grace_period=0)),
        ]

    try:
        return await run_trials(trials, one)
    finally:
        await client.close()


async def bench_kubernetes_threads(kubeconfig: str, namespace: str, trials: int) -> tuple[float, list[float]]:
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    pool = ThreadPoolExecutor(CONCURRENCY)
    loop = asyncio.get_running_loop()

    def blocking(name: str) -> list[float]:
        def clock(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
            start = time.perf_counter()
            fn(*args, **kwargs)
            return time.perf_counter() - start

        return [
            clock(core.create_namespaced_pod, namespace, pod(name)),
            clock(core.read_namespaced_pod, name, namespace),
            clock(core.patch_namespaced_pod_status, name, namespace, STATUS,
                  _content_type="application/merge-patch+json"),
            clock(core.patch_namespaced_pod, name, namespace, LABELS, _content_type="application/merge-patch+json"),
            clock(core.delete_namespaced_pod, name, namespace, grace_period_seconds=0),
        ]

    async def one(name: str) -> list[float]:
        return await loop.run_in_executor(pool, blocking, name)

    try:
        return await run_trials(trials, one)
    finally:
        pool.shutdown()


BENCHES = {
    "kubetune": bench_kubetune,
    "kubernetes_asyncio": bench_kubernetes_asyncio,
    "lightkube": bench_lightkube,
    "kubernetes-threads": bench_kubernetes_threads,
}


def child(candidate: str, kubeconfig: str, namespace: str, trials: int) -> None:
    seconds, latencies = asyncio.run(BENCHES[candidate](kubeconfig, namespace, trials))
    print(json.dumps({
        "seconds": seconds,
        "median_call_ms": statistics.median(latencies) * 1000,
        "calls": len(latencies),
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


# --------------------------------------------------------------------------- parent


def pod_requests(api: Any) -> float:
    """The API server's count of requests on pods so far (every verb, every code)."""
    total = 0.0
    for line in api.get_text("/metrics").splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="pods"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure(candidate: str, kubeconfig: str, namespace: str, trials: int, api: Any) -> dict[str, float]:
    before = pod_requests(api)
    out = subprocess.run(
        [sys.executable, __file__, "--child", candidate, "--kubeconfig", kubeconfig, "--namespace", namespace,
         "--trials", str(trials)],
        check=True, capture_output=True, text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    result["requests_per_trial"] = (pod_requests(api) - before) / trials
    result["trials_per_second"] = trials / result["seconds"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig")
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--namespace", default="client-bench")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.kubeconfig, args.namespace, args.trials)
        return 0

    from kubetune.k8s.core import AlreadyExists
    from kubetune.k8s.sync import KubeApi

    cluster = None
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        from kubetune_dev.cluster import DevCluster

        cluster = DevCluster(Path(tempfile.mkdtemp(prefix="kt-client-bench-")), owner_pid=os.getpid())
        cluster.up()
        kubeconfig = str(cluster.info().kubeconfig)
    try:
        api = KubeApi.from_kubeconfig(Path(kubeconfig))
        try:
            api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": args.namespace}})
        except AlreadyExists:
            pass
        time.sleep(2)  # the ServiceAccount controller's default account
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in CANDIDATES}
        for number in range(args.rounds):
            order = CANDIDATES[number % len(CANDIDATES):] + CANDIDATES[: number % len(CANDIDATES)]
            for candidate in order:
                rounds[candidate].append(measure(candidate, kubeconfig, args.namespace, args.trials, api))
                print(f"round {number + 1} {candidate}: {json.dumps(rounds[candidate][-1])}", file=sys.stderr)
        report(rounds, args)
    finally:
        if cluster is not None:
            cluster.down()
    return 0


def report(rounds: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds[name])

    base = "kubetune"
    print(f"{args.trials} trials x {CALLS_PER_TRIAL} pod calls, {CONCURRENCY} at a time, {args.rounds} rounds; medians")
    print("| client | trials/s | vs kubetune | median call (ms) | API requests/trial | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for name in CANDIDATES:
        ratio = med(name, "trials_per_second") / med(base, "trials_per_second")
        print(f"| {name} | {med(name, 'trials_per_second'):.0f} | {ratio:.2f}x | {med(name, 'median_call_ms'):.1f} "
              f"| {med(name, 'requests_per_trial'):.2f} | {med(name, 'max_rss_mib'):.0f} |")


if __name__ == "__main__":
    sys.exit(main())
