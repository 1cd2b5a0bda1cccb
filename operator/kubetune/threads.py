"""The operator's numeric thread pools (OpenBLAS, MKL, OpenMP under numpy and scipy): one thread by default.

A BLAS library starts one thread per CPU it can see, and a container sees every CPU of its node, not
its limit. The search engine's matrices are small (the Gaussian process trains on at most 200 points),
so extra threads gain nothing and, on a CPU quota or a busy node, spin-wait on each other: a wave of 10
at ~200 trials took 8-18 s in such a container against 2.3-3.4 s with one thread, and
`benchmarks/numeric_threads.py` measures the same here (benchmarks/RESULTS.md). Several reconciles
run at once (KUBETUNE_WORKERS), each on its own thread, so the operator's parallelism comes from them.

`limit_numeric_threads()`, called once when the operator starts, sets the pools to
`KUBETUNE_NUMERIC_THREADS` threads (default 1), never more than the CPU limit: the cgroup CPU quota
(v2 `cpu.max`, v1 `cpu.cfs_quota_us`, the tightest along the process's cgroup path) rounded down, at
least 1, and the CPUs the process may run on.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

THREADS_VARIABLE = "KUBETUNE_NUMERIC_THREADS"
DEFAULT_THREADS = 1
# Read by OpenBLAS, OpenMP and MKL when they load: covers libraries imported after the limit is set.
LIBRARY_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _quota_v2(directory: Path) -> float | None:
    """CPUs allowed by `cpu.max` ("<quota> <period>" or "max <period>") in one cgroup v2 directory."""
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _quota_v1(directory: Path) -> float | None:
    """CPUs allowed by `cpu.cfs_quota_us` / `cpu.cfs_period_us` in one cgroup v1 cpu directory (-1: none)."""
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def _ancestry(mount: Path, path: str) -> list[Path]:
    """The cgroup directory of `path` under `mount` and each parent up to the mount itself."""
    parts = [p for p in path.strip("/").split("/") if p]
    return [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def cgroup_cpu_limit(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> float | None:
    """CPUs this process may use by its cgroup CPU quota, v2 or v1; None when unlimited or unreadable.

    A quota anywhere on the way from the process's cgroup to the root applies, so the tightest counts.
    In a container with its own cgroup namespace the path is "/" and the mount is the container's cgroup.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    limits: list[float] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2: "0::/path"
            directories, read = _ancestry(root, path), _quota_v2
        elif "cpu" in controllers.split(","):  # v1: "4:cpu,cpuacct:/path", mounted as cpu,cpuacct or cpu
            mount = next((root / name for name in (controllers, "cpu", "cpu,cpuacct") if (root / name).is_dir()), None)
            if mount is None:
                continue
            directories, read = _ancestry(mount, path), _quota_v1
        else:
            continue
        # The process's own directory may not be visible (no cgroup namespace): the mount's root then is.
        limits += [cpus for directory in directories if directory.is_dir() for cpus in [read(directory)] if cpus]
    return min(limits) if limits else None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def numeric_threads(setting: str | None, cpu_limit: float | None, cpus: int) -> int:
    """Threads for the numeric pools: `setting` when it is a positive integer, else DEFAULT_THREADS; never
    more than the CPU limit rounded down (at least 1) nor than `cpus`."""
    requested = DEFAULT_THREADS
    if setting and setting.strip():
        try:
            requested = int(setting)
        except ValueError:
            requested = 0
        if requested < 1:
            log.warning("%s=%r is not a positive integer: using %d", THREADS_VARIABLE, setting, DEFAULT_THREADS)
            requested = DEFAULT_THREADS
    cap = max(cpus, 1) if cpu_limit is None else max(1, min(cpus, math.floor(cpu_limit)))
    return min(requested, cap)


def limit_numeric_threads(environ: Mapping[str, str] | None = None) -> int:
    """Cap numpy's and scipy's BLAS/OpenMP thread pools for this process; returns the thread count.

    The library variables are set for anything loaded later, and the pools already loaded are resized
    with threadpoolctl (numpy and scipy.linalg are imported first so that both of their BLAS copies are).
    """
    environ = os.environ if environ is None else environ
    threads = numeric_threads(environ.get(THREADS_VARIABLE), cgroup_cpu_limit(), available_cpus())
    for name in LIBRARY_VARIABLES:
        os.environ[name] = str(threads)
    import numpy  # noqa: F401  (loads numpy's OpenBLAS)
    import scipy.linalg  # noqa: F401  (loads scipy's own OpenBLAS)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    log.info("numeric thread pools: %d thread(s)", threads)
    return threads
