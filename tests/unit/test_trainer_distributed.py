"""The trainer under torchrun: rank/world settings, shards, rank-0-only reporting, DDP end to end, a dead peer."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubetune_trainer.cli import main
from kubetune_trainer.distributed import (
    DEFAULT_DIST_TIMEOUT_SECONDS,
    ENV_DIST_TIMEOUT,
    SINGLE_PROCESS,
    Collectives,
    WorldSettings,
    world_from_env,
)
from kubetune_trainer.training import shard_order

TORCHRUN = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


# -- settings, shards, identities (no process group) --------------------------------------------------


@pytest.mark.parametrize("env", [{}, {"WORLD_SIZE": ""}, {"WORLD_SIZE": "1", "RANK": "0"}])
def test_a_single_process_has_no_world(env: dict[str, str]) -> None:
    assert world_from_env(env) is None


def test_world_from_torchrun_variables() -> None:
    assert world_from_env(TORCHRUN) == WorldSettings(rank=1, local_rank=1, size=2, timeout_seconds=300.0)
    assert DEFAULT_DIST_TIMEOUT_SECONDS == 300.0
    assert world_from_env({**TORCHRUN, ENV_DIST_TIMEOUT: "12.5"}) == WorldSettings(1, 1, 2, 12.5)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"RANK": ""}, "RANK must be set"),
        ({"RANK": "2"}, "RANK must be in 0..1"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE must be >= 1"),
        ({"MASTER_ADDR": ""}, "MASTER_ADDR must be set"),
        ({ENV_DIST_TIMEOUT: "0"}, f"{ENV_DIST_TIMEOUT} must be a finite number > 0"),
        ({ENV_DIST_TIMEOUT: "soon"}, f"{ENV_DIST_TIMEOUT} must be a number"),
    ],
)
def test_bad_world_settings_are_named(change: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        world_from_env({**TORCHRUN, **change})


def test_single_process_collectives_are_identities() -> None:
    assert SINGLE_PROCESS.sum(1.5, 7) == (1.5, 7)
    assert SINGLE_PROCESS.any(True) and not SINGLE_PROCESS.any(False)
    assert SINGLE_PROCESS.bounds(360) == (0, 360)


def test_validation_slices_partition_the_set() -> None:
    slices = [Collectives(rank, 3).bounds(10) for rank in range(3)]
    assert slices == [(0, 3), (3, 6), (6, 10)]


def test_training_shards_are_disjoint_equal_and_reshuffled_each_epoch() -> None:
    n, size = 1437, 2
    shards = [shard_order(n, Collectives(rank, size), seed=0, epoch=1).tolist() for rank in range(size)]
    assert [len(shard) for shard in shards] == [n // size] * size  # same number of batches on every rank
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) <= set(range(n))
    assert shard_order(n, Collectives(0, size), seed=0, epoch=1).tolist() == shards[0]  # every rank agrees
    assert shard_order(n, Collectives(0, size), seed=0, epoch=2).tolist() != shards[0]  # set_epoch reshuffles


def test_bad_world_settings_fail_as_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    env = {**TORCHRUN, "RANK": "", "KUBETUNE_METRICS_PORT": "0", "KUBETUNE_TERMINATION_MESSAGE_PATH": str(path)}
    assert main(["--epochs", "1"], env) == 2
    message = json.loads(path.read_text())
    assert message["status"] == "failed" and "RANK must be set" in message["reason"]


def test_other_ranks_do_not_write_the_termination_message(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    env = {**TORCHRUN, "KUBETUNE_METRICS_PORT": "0", "KUBETUNE_TERMINATION_MESSAGE_PATH": str(path)}
    assert main(["--lr", "-1"], env) == 2  # rank 1: fails like rank 0, but leaves the message to rank 0
    assert not path.exists()
    assert main(["--lr", "-1"], {**env, "RANK": "0", "LOCAL_RANK": "0"}) == 2
    assert "lr: must be a finite number > 0" in json.loads(path.read_text())["reason"]


# -- torchrun end to end -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun(tmp_path: Path, *argv: str, **env: str) -> subprocess.Popen[str]:
    """`torchrun --standalone --nproc_per_node=2 -m kubetune_trainer ...`, output merged into stdout."""
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + ["-m", "kubetune_trainer", "--model", "mlp", "--hidden-units", "32", *argv],
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "KUBETUNE_METRICS_ADDRESS": "127.0.0.1",
            "KUBETUNE_METRICS_PORT": "0",
            "KUBETUNE_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def rank_lines(output: str, rank: int, fragment: str) -> list[str]:
    return [line for line in output.splitlines() if f"[rank {rank}/2]" in line and fragment in line]


@pytest.mark.slow
def test_torchrun_trains_with_ddp_on_disjoint_shards_and_only_rank_0_reports(tmp_path: Path) -> None:
    # A real port: were rank 1 to serve metrics too, it could not bind it and the run would fail.
    port = free_port()
    process = torchrun(
        tmp_path,
        *("--epochs", "3", "--lr", "0.01"),
        KUBETUNE_METRICS_PORT=str(port),
        KUBETUNE_FINAL_SCRAPE_TIMEOUT_SECONDS="0",
    )
    output = process.communicate(timeout=240)[0]

    assert process.returncode == 0, output
    message = json.loads((tmp_path / "termination-log").read_text())
    assert message["status"] == "completed" and message["step"] == 3
    assert message["metrics"]["val_accuracy"] > 0.8
    # Only rank 0 serves metrics and writes the termination message.
    assert len(rank_lines(output, 0, f"serving metrics on http://127.0.0.1:{port}")) == 1
    assert len(rank_lines(output, 0, "wrote the termination message")) == 1
    assert "serving metrics" not in output.replace(rank_lines(output, 0, "serving metrics")[0], "")
    assert output.count("wrote the termination message") == 1
    assert len(rank_lines(output, 1, "trial completed: trained 3 epochs (rank 0 reports it)")) == 1
    # Each rank trains on half of the 1437 training samples (disjointness: test_training_shards_are_disjoint...).
    for rank in (0, 1):
        assert len(rank_lines(output, rank, "this rank trains on 718 of 1437 samples per epoch")) == 1
    # DDP kept the replicas identical although they saw different samples (without it the checksums differ).
    checksums = [rank_lines(output, rank, "parameter checksum after training: ") for rank in (0, 1)]
    assert all(len(lines) == 1 for lines in checksums), output
    assert checksums[0][0].rsplit(" ", 1)[1] == checksums[1][0].rsplit(" ", 1)[1]
    # Both ranks saw the same (all-reduced) validation metrics, so they take the same decisions.
    epoch_3 = [
        rank_lines(output, rank, "epoch 3/3 ")[0].split("epoch 3/3 ")[1].split(" samples/s")[0] for rank in (0, 1)
    ]
    assert epoch_3[0] == epoch_3[1]


def worker_pids(launcher: subprocess.Popen[str]) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes, read from /proc (Linux)."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    ranks: dict[int, int] = {}
    for pid in map(int, children):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = next((int(item[5:]) for item in environ if item.startswith(b"RANK=")), None)
        if rank is not None:
            ranks[rank] = pid
    return ranks


def start_until_training(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[str], dict[int, int]]:
    """A long torchrun run, returned once both ranks finished an epoch; with rank -> worker pid."""
    process = torchrun(tmp_path, "--epochs", "100000", **env)
    assert process.stdout is not None
    seen: list[str] = []
    for line in process.stdout:
        seen.append(line)
        if sum("epoch 2/100000" in line for line in seen) == 2:
            break
    pids = worker_pids(process)
    assert set(pids) == {0, 1}, "".join(seen)
    return process, pids


def stop_all(process: subprocess.Popen[str], pids: dict[int, int]) -> None:
    """SIGKILL whatever of this test's torchrun and its workers still runs."""
    for pid in [process.pid, *pids.values()]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.communicate()


needs_proc = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds torchrun's workers in /proc")


@pytest.mark.slow
@needs_proc
def test_a_killed_rank_fails_the_whole_run_instead_of_hanging(tmp_path: Path) -> None:
    process, pids = start_until_training(tmp_path, KUBETUNE_DIST_TIMEOUT_SECONDS="30")
    try:
        os.kill(pids[1], signal.SIGKILL)
        started = time.monotonic()
        output = process.communicate(timeout=120)[0]
        elapsed = time.monotonic() - started
    finally:
        stop_all(process, pids)
    assert process.returncode != 0, output
    assert elapsed < 30, output  # gloo sees the closed connection; no need to wait for the timeout
    assert json.loads((tmp_path / "termination-log").read_text())["status"] == "failed"


@pytest.mark.slow
@needs_proc
def test_a_stuck_rank_fails_rank_0_after_the_timeout(tmp_path: Path) -> None:
    process, pids = start_until_training(tmp_path, KUBETUNE_DIST_TIMEOUT_SECONDS="3")
    path = tmp_path / "termination-log"
    try:
        os.kill(pids[1], signal.SIGSTOP)  # alive but silent: only the collective timeout notices
        started = time.monotonic()
        while not path.exists() and time.monotonic() - started < 60:
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        # torchrun would wait 30 s for the stopped rank to honour SIGTERM; spare the test that.
        os.kill(pids[1], signal.SIGKILL)
        output = process.communicate(timeout=120)[0]
    finally:
        stop_all(process, pids)
    message = json.loads(path.read_text())
    assert 3 <= elapsed < 30, output
    assert message["status"] == "failed" and "Timed out" in message["reason"], output
    assert process.returncode != 0, output


@pytest.mark.slow
@needs_proc
def test_sigterm_stops_every_rank_at_the_same_boundary_and_rank_0_reports_stopped(tmp_path: Path) -> None:
    process, pids = start_until_training(tmp_path, KUBETUNE_DIST_TIMEOUT_SECONDS="30")
    try:
        os.kill(pids[1], signal.SIGTERM)  # one rank only: its stop flag must stop rank 0 too
        output = process.communicate(timeout=120)[0]
    finally:
        stop_all(process, pids)
    message = json.loads((tmp_path / "termination-log").read_text())
    assert message["status"] == "stopped", output
    stopped = [rank_lines(output, rank, "trial stopped") for rank in (0, 1)]
    assert all(len(lines) == 1 for lines in stopped), output
    # The same reason (same epoch, before or during it) on both ranks.
    reasons = [lines[0].split("SIGTERM: ")[1].removesuffix(" (rank 0 reports it)") for lines in stopped]
    assert reasons[0] == reasons[1] == message["reason"].removeprefix("SIGTERM: "), output


@pytest.mark.parametrize(("world_size", "finalized"), [("", True), ("1", True), ("2", False)])
def test_a_torchrun_worker_exits_with_its_code_without_finalizing_the_interpreter(
    world_size: str, finalized: bool
) -> None:
    """Gloo's threads outlive destroy_process_group() under DDP, and one that frees tensors while the interpreter
    finalizes aborts a worker whose run succeeded: a torchrun worker skips finalization (an atexit hook shows it)."""
    script = ("import atexit, kubetune_trainer.cli as cli; atexit.register(print, 'finalized'); "
              "cli.main = lambda: 3; cli.run()")
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "WORLD_SIZE": world_size},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 3, done.stderr
    assert ("finalized" in done.stdout) == finalized, done.stdout
