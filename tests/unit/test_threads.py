"""The operator's numeric thread pools follow its CPU limit (kubetune/threads.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune.threads import available_cpus, cgroup_cpu_limit, numeric_threads


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_tightest_on_the_path(tmp_path: Path) -> None:
    proc, root = tmp_path / "cgroup", tmp_path / "fs"
    write(proc, "0::/kubepods/pod1/operator\n")
    write(root / "cpu.max", "max 100000\n")
    write(root / "kubepods/pod1/cpu.max", "250000 100000\n")  # the pod's limit: 2.5 CPUs
    write(root / "kubepods/pod1/operator/cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(proc, root) == 2.5
    write(root / "kubepods/pod1/operator/cpu.max", "50000 100000\n")
    assert cgroup_cpu_limit(proc, root) == 0.5
    for name in ("kubepods/pod1/operator/cpu.max", "kubepods/pod1/cpu.max"):
        write(root / name, "max 100000\n")
    assert cgroup_cpu_limit(proc, root) is None


def test_cgroup_v2_in_its_own_namespace_reads_the_mount(tmp_path: Path) -> None:
    proc, root = tmp_path / "cgroup", tmp_path / "fs"
    write(proc, "0::/\n")
    write(root / "cpu.max", "100000 100000\n")
    assert cgroup_cpu_limit(proc, root) == 1.0


def test_cgroup_v1_quota_with_and_without_the_process_path(tmp_path: Path) -> None:
    proc, root = tmp_path / "cgroup", tmp_path / "fs"
    write(proc, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    # Docker without a cgroup namespace mounts the container's own cgroup as the mount's root.
    write(root / "cpu,cpuacct/cpu.cfs_quota_us", "300000\n")
    write(root / "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(proc, root) == 3.0
    # The whole hierarchy visible: the container's directory has the quota, the root none.
    write(root / "cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "150000\n")
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(proc, root) == 1.5
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_limit(proc, root) is None


def test_no_cgroup_information_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / "missing", tmp_path) is None
    write(tmp_path / "cgroup", "0::/\n")
    write(tmp_path / "fs/cpu.max", "garbage\n")
    assert cgroup_cpu_limit(tmp_path / "cgroup", tmp_path / "fs") is None


@pytest.mark.parametrize(
    ("setting", "limit", "cpus", "threads"),
    [
        (None, None, 16, 1),  # the default: one thread, whatever the machine
        (None, 2.0, 16, 1),
        ("8", None, 16, 8),  # an explicit setting...
        ("8", 2.0, 16, 2),  # ...capped at the CPU limit (the chart's default limit)...
        ("8", 2.5, 16, 2),  # ...rounded down: a third thread would only wait for quota...
        ("8", 0.5, 16, 1),  # ...never below one...
        ("8", 8.0, 2, 2),  # ...and at the CPUs the process may run on
        ("", 2.0, 16, 1),
        ("0", 2.0, 16, 1),  # not positive: the default, with a warning
        ("many", 2.0, 16, 1),
    ],
)
def test_thread_count(setting: str | None, limit: float | None, cpus: int, threads: int) -> None:
    assert numeric_threads(setting, limit, cpus) == threads


def test_limiting_resizes_numpy_and_scipy_pools_already_loaded() -> None:
    # In a child process (the limit is process-wide) whose pools start at one thread, loaded before the
    # limit as in the operator; the setting asks for two.
    if available_cpus() < 2:
        pytest.skip("one CPU: OpenBLAS cannot run a second thread to show the pools were resized")
    code = (
        "import json, os, numpy, scipy.linalg, threadpoolctl\n"
        "from kubetune.threads import limit_numeric_threads\n"
        "before = [p['num_threads'] for p in threadpoolctl.threadpool_info()]\n"
        "threads = limit_numeric_threads()\n"
        "after = [p['num_threads'] for p in threadpoolctl.threadpool_info()]\n"
        "print(json.dumps({'threads': threads, 'before': before, 'after': after,\n"
        "                  'env': [os.environ[v] for v in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS')]}))\n"
    )
    env = {**os.environ, "KUBETUNE_NUMERIC_THREADS": "2", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(output)
    assert len(result["before"]) >= 2 and set(result["before"]) == {1}, result  # numpy's and scipy's OpenBLAS
    assert result["threads"] == 2 and set(result["after"]) == {2} and result["env"] == ["2", "2"], result
