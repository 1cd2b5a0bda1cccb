"""`python -m kubetune_trainer` end to end: exit codes, termination message, metrics endpoint, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from kubetune_trainer.cli import StopSignal, main

EPOCH_METRICS = ("train_loss", "val_loss", "val_accuracy", "lr", "samples_per_second", "epoch_seconds")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> Samples | None:
    """The samples served on 127.0.0.1:port, or None when nothing listens (yet or any more)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def quiet_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "KUBETUNE_METRICS_PORT": "0",
        "KUBETUNE_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
        **extra,
    }


def termination_message(tmp_path: Path) -> dict[str, object]:
    text = (tmp_path / "termination-log").read_text()
    assert len(text.encode()) < 4096
    document: dict[str, object] = json.loads(text)
    return document


def test_completed_run_writes_the_final_json(tmp_path: Path) -> None:
    code = main(["--epochs", "3", "--model", "logistic"], quiet_env(tmp_path))
    message = termination_message(tmp_path)
    assert code == 0
    assert message["status"] == "completed" and message["step"] == 3
    metrics, best = message["metrics"], message["best"]
    assert isinstance(metrics, dict) and isinstance(best, dict)
    assert set(EPOCH_METRICS) <= set(metrics)
    assert best["val_accuracy"] >= metrics["val_accuracy"]
    assert best["val_loss"] <= metrics["val_loss"]


def test_huge_lr_reports_diverged_with_nonzero_exit(tmp_path: Path) -> None:
    code = main(["--optimizer", "sgd", "--lr", "1e6", "--epochs", "5"], quiet_env(tmp_path))
    message = termination_message(tmp_path)
    assert code == 3
    assert message["status"] == "diverged"
    assert "diverged" in str(message["reason"]) and "nan" in str(message["reason"])


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--model", "resnet"], {}, "model: unknown value 'resnet'"),
        ([], {"KUBETUNE_PARAM_OPTIMIZER": "adagrad"}, "optimizer: unknown value 'adagrad'"),
        (["--lr", "-0.01"], {}, "lr: must be a finite number > 0"),
        ([], {"KUBETUNE_PARAMS": '{"batch_size": 0}'}, "batch_size: must be >= 1"),
        (["--dataset", "csv:/nonexistent/train.csv"], {}, "dataset: CSV file not found"),
        (["--model", "cnn", "--dataset", "wine"], {}, "model: cnn needs image data"),
        ([], {"KUBETUNE_METRICS_PORT": "eighty"}, "KUBETUNE_METRICS_PORT must be an integer"),
        (["--learning-rate", "0.1"], {}, "unrecognized arguments: --learning-rate"),
        (["--epochs"], {}, "expected one argument"),
    ],
)
def test_bad_input_fails_clearly(tmp_path: Path, argv: list[str], env: dict[str, str], fragment: str) -> None:
    code = main(argv, {**quiet_env(tmp_path), **env})
    message = termination_message(tmp_path)
    assert code == 2
    assert message["status"] == "failed" and message["step"] == 0
    assert fragment in str(message["reason"])


def test_print_config_shows_values_and_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--print-config", "--epochs", "7"], quiet_env(tmp_path, KUBETUNE_PARAM_LR="0.01"))
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert printed["knobs"]["epochs"] == 7 and printed["sources"]["epochs"] == "--epochs"
    assert printed["knobs"]["lr"] == 0.01 and printed["sources"]["lr"] == "KUBETUNE_PARAM_LR"


def test_signal_handling_states() -> None:
    during_training = StopSignal()
    during_training.handle(signal.SIGTERM, None)
    assert during_training.event.is_set() and during_training.signal_number == signal.SIGTERM
    assert not during_training.abandon_final_wait.is_set()  # still wait for the final scrape
    during_training.handle(signal.SIGINT, None)  # a second signal gives up waiting
    assert during_training.abandon_final_wait.is_set() and during_training.signal_number == signal.SIGTERM

    while_finishing = StopSignal()
    while_finishing.finishing = True
    while_finishing.handle(signal.SIGTERM, None)
    assert while_finishing.abandon_final_wait.is_set() and while_finishing.signal_number is None


def start_trainer(tmp_path: Path, port: int, *argv: str, timeout: str = "60") -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "KUBETUNE_METRICS_ADDRESS": "127.0.0.1",
        "KUBETUNE_METRICS_PORT": str(port),
        "KUBETUNE_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
        "KUBETUNE_FINAL_SCRAPE_TIMEOUT_SECONDS": timeout,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "kubetune_trainer", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def scrape_until(port: int, process: subprocess.Popen[str], done: str) -> Samples:
    """Scrape every 50 ms until `done` names a sample with value >= 1 (fails if the trainer exits first)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        samples = scrape(port)
        if samples is not None and samples.get((done, ()), 0) >= 1:
            return samples
        if process.poll() is not None:
            pytest.fail(f"trainer exited with {process.returncode}:\n{process.communicate()[0]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("trainer never reached the expected state")


def test_metrics_endpoint_serves_every_epoch_and_waits_for_the_final_scrape(tmp_path: Path) -> None:
    port = free_port()
    process = start_trainer(tmp_path, port, "--epochs", "5", "--model", "logistic", timeout="600")
    samples = scrape_until(port, process, "kubetune_trial_done")
    # Our scrape after the final values ends the (up to 600 s) wait at once.
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output

    for step in range(1, 6):
        for metric in EPOCH_METRICS:
            assert ("kubetune_trial_metric", (("metric", metric), ("step", str(step)))) in samples
    assert not any(key[1] == (("metric", "gpu_memory_bytes"),) for key in samples)  # CPU run
    assert samples[("kubetune_trial_step", ())] == 5
    final_accuracy = samples[("kubetune_trial_final", (("metric", "val_accuracy"),))]
    last_epoch = samples[("kubetune_trial_metric", (("metric", "val_accuracy"), ("step", "5")))]
    assert final_accuracy == last_epoch == samples[("kubetune_trial_latest", (("metric", "val_accuracy"),))]
    message = termination_message(tmp_path)
    assert message["status"] == "completed" and message["step"] == 5
    assert "final metrics were scraped" in output


def test_sigterm_stops_training_and_reports_stopped(tmp_path: Path) -> None:
    port = free_port()
    process = start_trainer(tmp_path, port, "--epochs", "100000", "--model", "logistic", timeout="600")
    scrape_until(port, process, "kubetune_trial_step")  # at least one epoch done
    process.send_signal(signal.SIGTERM)
    samples = scrape_until(port, process, "kubetune_trial_done")
    output = process.communicate(timeout=60)[0]

    assert process.returncode == 128 + signal.SIGTERM, output
    message = termination_message(tmp_path)
    assert message["status"] == "stopped"
    assert "SIGTERM" in str(message["reason"])
    step = message["step"]
    assert isinstance(step, int) and step >= 1
    assert samples[("kubetune_trial_step", ())] == step
    assert ("kubetune_trial_final", (("metric", "val_accuracy"),)) in samples
