"""Gaussian-process suggestion time with the BLAS thread pools at the libraries' default and at the operator's limit.

    python benchmarks/numeric_threads.py                    # this machine as it is (shared, busy)
    python benchmarks/numeric_threads.py --cpu-quota 1      # in a cgroup limited to 1 CPU (root; v1 or v2)

Each sample is a fresh process, so its pools start as the libraries set them: `default` leaves them
there (one thread per CPU the process can run on), `operator` calls `kubetune.threads.limit_numeric_threads()`
as the operator does at start. A process times `--repeats` waves of `suggest(spec, history, 10)` with
the `bayesian` algorithm after `--trials` finished trials (a 6-parameter space, as the search
benchmark's latency table); the two modes alternate, round after round, so they share the machine's
noise. Prints the median wall and CPU seconds of a wave per mode and the ratio default / operator.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHILD = """
import json, math, os, sys, time
import numpy as np
mode, trials, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
threads = None
if mode != "default":  # "operator": from the CPU limit; a number: KUBETUNE_NUMERIC_THREADS
    from kubetune.threads import limit_numeric_threads
    threads = limit_numeric_threads({} if mode == "operator" else {"KUBETUNE_NUMERIC_THREADS": mode})
import threadpoolctl
from kubetune.search import suggest

parameters = [
    {"name": "lr", "type": "float", "min": 1e-5, "max": 1.0, "log": True},
    {"name": "momentum", "type": "float", "min": 0.0, "max": 1.0},
    {"name": "layers", "type": "int", "min": 1, "max": 8},
    {"name": "width", "type": "int", "min": 16, "max": 1024, "log": True},
    {"name": "optimizer", "type": "categorical", "values": ["sgd", "adam", "rmsprop"]},
    {"name": "batch_size", "type": "discrete", "values": [16, 32, 64, 128, 256]},
]
spec = {
    "objective": {"metric": "loss", "goal": "minimize"},
    "parameters": parameters,
    "algorithm": {"name": "bayesian", "seed": 0},
    "budget": {"maxTrials": 1000, "parallelism": 10},
    "trialTemplate": {"template": {"spec": {"containers": [{"name": "trainer", "image": "trainer"}]}}},
}
rng = np.random.default_rng(trials)
history = []
for k in range(trials):
    p = {"lr": float(10 ** rng.uniform(-5, 0)), "momentum": float(rng.uniform()), "layers": int(rng.integers(1, 9)),
         "width": int(rng.integers(16, 1025)), "optimizer": ["sgd", "adam", "rmsprop"][k % 3],
         "batch_size": [16, 32, 64, 128, 256][k % 5]}
    value = (math.log10(p["lr"]) + 2.5) ** 2 + p["momentum"] + rng.normal(0, 0.1)
    history.append({"parameters": p, "state": "Succeeded", "objective": value})
suggest(spec, history[:20], 1)  # imports and first-call costs are not part of a wave
walls, cpus = [], []
for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    assert len(suggest(spec, history, 10)) == 10
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
pools = sorted({p["num_threads"] for p in threadpoolctl.threadpool_info()})
print(json.dumps({"walls": walls, "cpus": cpus, "pools": pools, "threads": threads}))
"""


@contextmanager
def cpu_quota(cpus: float | None) -> Iterator[Path | None]:
    """A fresh cgroup limited to `cpus` CPUs (v2 cpu.max, else v1 cpu.cfs_quota_us); removed afterwards."""
    if cpus is None:
        yield None
        return
    period = 100_000
    root = Path("/sys/fs/cgroup")
    name = f"kubetune-threads-bench-{os.getpid()}"
    if (root / "cgroup.controllers").exists():  # v2
        group = root / name
        group.mkdir()
        (group / "cpu.max").write_text(f"{int(cpus * period)} {period}\n")
    else:
        group = root / "cpu" / name
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(f"{period}\n")
        (group / "cpu.cfs_quota_us").write_text(f"{int(cpus * period)}\n")
    try:
        yield group
    finally:
        group.rmdir()


def run_child(mode: str, args: argparse.Namespace, group: Path | None) -> dict[str, Any]:
    def enter_group() -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(f"{os.getpid()}\n")

    unset = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "KUBETUNE_NUMERIC_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    command = [sys.executable, "-c", CHILD, mode, str(args.trials), str(args.repeats)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True, preexec_fn=enter_group)
    result: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=199, help="finished trials before the wave (default 199)")
    parser.add_argument("--repeats", type=int, default=3, help="waves timed per process (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="processes per mode, alternating (default 5)")
    parser.add_argument("--cpu-quota", type=float, default=None, help="run in a cgroup limited to this many CPUs")
    parser.add_argument("--output", type=Path, default=None, help="write the raw results as JSON")
    parser.add_argument("--threads", type=int, nargs="*", default=[],
                        help="also explicit thread counts (KUBETUNE_NUMERIC_THREADS), e.g. --threads 1")
    args = parser.parse_args(argv)
    modes = ("default", "operator", *map(str, args.threads))
    samples: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    started = time.time()
    with cpu_quota(args.cpu_quota) as group:
        for round_ in range(args.rounds):
            for mode in modes if round_ % 2 == 0 else tuple(reversed(modes)):
                samples[mode].append(run_child(mode, args, group))
                print(f"round {round_ + 1} {mode}: {', '.join(f'{w:.2f}' for w in samples[mode][-1]['walls'])} s",
                      flush=True)
    summary = {}
    for mode in modes:
        walls = [w for sample in samples[mode] for w in sample["walls"]]
        cpus = [c for sample in samples[mode] for c in sample["cpus"]]
        summary[mode] = {"wall_median": statistics.median(walls), "cpu_median": statistics.median(cpus),
                         "pools": sorted({t for sample in samples[mode] for t in sample["pools"]})}
    load = os.getloadavg()[0]
    print(f"\n{args.trials} finished trials, wave of 10, bayesian; {args.rounds} processes x {args.repeats} waves "
          f"per mode; {len(os.sched_getaffinity(0))} CPUs, cpu quota {args.cpu_quota or 'none'}, "
          f"load average {load:.1f}; {time.time() - started:.0f} s\n")
    print("| mode | BLAS threads | wave wall median (s) | wave CPU median (s) |")
    print("| --- | --- | --- | --- |")
    for mode in modes:
        row = summary[mode]
        print(f"| {mode} | {','.join(map(str, row['pools']))} | {row['wall_median']:.2f} | {row['cpu_median']:.2f} |")
    ratio = summary["default"]["wall_median"] / summary["operator"]["wall_median"]
    print(f"\ndefault / operator wall: {ratio:.2f}x")
    if args.output:
        args.output.write_text(json.dumps({"args": vars(args) | {"output": str(args.output)}, "summary": summary,
                                           "samples": samples}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
