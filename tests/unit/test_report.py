"""The trial metrics contract as served by `kubetune.report` (no torch, no cluster)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import kubetune
from kubetune.report import (
    TERMINATION_MESSAGE_LIMIT_BYTES,
    ReporterSettings,
    TrialReporter,
    build_termination_message,
    metric_goal,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(address: str, port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def reporter(tmp_path: Path) -> Iterator[TrialReporter]:
    settings = ReporterSettings(
        metrics_address="127.0.0.1",
        metrics_port=free_port(),
        termination_message_path=str(tmp_path / "termination-log"),
        final_scrape_timeout_seconds=30,
    )
    instance = TrialReporter(settings)
    yield instance
    instance.close()


def per_step(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, step: int) -> float:
    return samples[("kubetune_trial_metric", (("metric", metric), ("step", str(step))))]


def test_every_step_stays_scrapable_and_latest_follows(reporter: TrialReporter) -> None:
    assert not reporter.serving  # lazily started
    for step in range(1, 6):
        reporter.report(step, val_accuracy=0.5 + step / 100, val_loss=1.0 / step)
    samples = scrape("127.0.0.1", reporter.settings.metrics_port)

    for step in range(1, 6):
        assert per_step(samples, "val_accuracy", step) == pytest.approx(0.5 + step / 100)
        assert per_step(samples, "val_loss", step) == pytest.approx(1.0 / step)
    assert samples[("kubetune_trial_latest", (("metric", "val_accuracy"),))] == pytest.approx(0.55)
    assert samples[("kubetune_trial_step", ())] == 5
    assert samples[("kubetune_trial_done", ())] == 0
    assert not any(name == "kubetune_trial_final" for name, _ in samples)
    # No identification labels: Prometheus adds namespace/pod/job/trial itself.
    labels = {key for _, pairs in samples for key, _ in pairs}
    assert labels == {"metric", "step"}


def test_same_step_reported_in_parts_merges(reporter: TrialReporter) -> None:
    reporter.report(1, train_loss=0.9)
    reporter.report(1, val_accuracy=0.7)
    samples = scrape("127.0.0.1", reporter.settings.metrics_port)
    assert per_step(samples, "train_loss", 1) == pytest.approx(0.9)
    assert per_step(samples, "val_accuracy", 1) == pytest.approx(0.7)


def test_finish_sets_final_values_and_writes_termination_message(reporter: TrialReporter) -> None:
    reporter.report(1, val_accuracy=0.8, val_loss=0.5, lr=0.1)
    reporter.report(2, val_accuracy=0.9, val_loss=0.4, lr=0.01)
    reporter.report(3, val_accuracy=0.85, val_loss=0.45, lr=0.001)
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def scrape_until_done() -> None:
        while True:
            samples = scrape("127.0.0.1", reporter.settings.metrics_port)
            if samples[("kubetune_trial_done", ())] == 1:
                seen.update(samples)
                return

    scraper = threading.Thread(target=scrape_until_done)
    scraper.start()
    final = reporter.finish(status="completed", reason="all epochs")
    scraper.join(timeout=30)

    assert final.final_scrape_seen  # returned on the scrape, not after the 30 s bound
    assert seen[("kubetune_trial_final", (("metric", "val_accuracy"),))] == pytest.approx(0.85)
    assert seen[("kubetune_trial_final", (("metric", "lr"),))] == pytest.approx(0.001)
    message = json.loads(Path(reporter.settings.termination_message_path).read_text())
    assert message == {
        "status": "completed",
        "step": 3,
        "metrics": {"val_accuracy": 0.85, "val_loss": 0.45, "lr": 0.001},
        "best": {"val_accuracy": 0.9, "val_loss": 0.4},
        "reason": "all epochs",
    }
    with pytest.raises(RuntimeError, match="after finish"):
        reporter.report(4, val_accuracy=0.1)
    assert reporter.finish(status="failed") is final


def test_final_scrape_wait_is_bounded_and_ignores_earlier_scrapes(tmp_path: Path) -> None:
    settings = ReporterSettings(
        metrics_address="127.0.0.1",
        metrics_port=free_port(),
        termination_message_path=str(tmp_path / "msg"),
        final_scrape_timeout_seconds=0.2,
    )
    reporter = TrialReporter(settings)
    try:
        reporter.report(1, val_accuracy=0.5)
        scrape("127.0.0.1", settings.metrics_port)  # before the final values: does not count
        deadline = time.monotonic() + 10
        while reporter.scrape_count < 1 and time.monotonic() < deadline:
            time.sleep(0.01)  # the server counts a scrape just after the client has the body
        assert reporter.scrape_count == 1
        final = reporter.finish()
        assert not final.final_scrape_seen
        assert final.termination_message_written
    finally:
        reporter.close()


def test_final_scrape_wait_can_be_cancelled(reporter: TrialReporter) -> None:
    reporter.report(1, val_accuracy=0.5)
    cancel = threading.Event()
    cancel.set()  # e.g. SIGTERM while waiting: the message is written, stop waiting (bound is 30 s)
    final = reporter.finish(cancel=cancel)
    assert not final.final_scrape_seen and final.termination_message_written


def test_metrics_disabled_serves_nothing_and_does_not_wait(tmp_path: Path) -> None:
    settings = ReporterSettings(
        metrics_port=0, termination_message_path=str(tmp_path / "msg"), final_scrape_timeout_seconds=3600
    )
    reporter = TrialReporter(settings)
    reporter.report(1, val_accuracy=0.5)
    assert not reporter.serving
    final = reporter.finish(status="stopped", reason="SIGTERM")
    assert not final.final_scrape_seen  # returned at once despite the one-hour bound
    assert json.loads((tmp_path / "msg").read_text())["status"] == "stopped"


def test_binds_only_the_configured_address(tmp_path: Path) -> None:
    # Each dev-cluster pod has its own loopback IP; the exporter must listen on it.
    port = free_port()
    settings = ReporterSettings(
        metrics_address="127.0.0.2", metrics_port=port, termination_message_path=str(tmp_path / "m")
    )
    reporter = TrialReporter(settings)
    try:
        reporter.report(1, val_loss=1.0)
        assert per_step(scrape("127.0.0.2", port), "val_loss", 1) == 1.0
        with pytest.raises(urllib.error.URLError):
            scrape("127.0.0.1", port)
    finally:
        reporter.close()


def test_unwritable_termination_path_is_skipped(tmp_path: Path) -> None:
    settings = ReporterSettings(metrics_port=0, termination_message_path=str(tmp_path / "missing" / "log"))
    final = TrialReporter(settings).finish(status="failed", reason="boom")
    assert not final.termination_message_written
    assert json.loads(final.message)["reason"] == "boom"


def test_other_paths_are_not_found(reporter: TrialReporter) -> None:
    reporter.report(1, val_loss=1.0)
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"http://127.0.0.1:{reporter.settings.metrics_port}/", timeout=5)
    assert error.value.code == 404


def test_termination_message_stays_under_the_kubernetes_limit() -> None:
    metrics = {f"metric_number_{i}_loss": float(i) for i in range(300)}
    metrics |= {"val_accuracy": 0.9, "val_loss": 0.3}
    text = build_termination_message("failed", 7, metrics, metrics, "x" * 10_000)
    document = json.loads(text)
    assert len(text.encode()) < TERMINATION_MESSAGE_LIMIT_BYTES
    assert document["status"] == "failed" and document["step"] == 7
    assert document["metrics"]["val_accuracy"] == 0.9 and document["metrics"]["val_loss"] == 0.3
    assert document["reason"].startswith("xxx")


def test_non_finite_values_become_null() -> None:
    text = build_termination_message("diverged", 2, {"train_loss": float("nan")}, {}, "nan loss")
    assert json.loads(text)["metrics"] == {"train_loss": None}


def test_metric_goals_by_name() -> None:
    assert metric_goal("val_accuracy") == "max"
    assert metric_goal("val_loss") == "min"
    assert metric_goal("lr") is None


@pytest.mark.parametrize(
    ("step", "metrics", "error"),
    [
        (-1, {"loss": 1.0}, ValueError),
        (True, {"loss": 1.0}, ValueError),
        (1, {"bad-name": 1.0}, ValueError),
        (1, {"loss": "high"}, TypeError),
    ],
)
def test_report_rejects_bad_input(step: int, metrics: dict[str, object], error: type[Exception]) -> None:
    reporter = TrialReporter(ReporterSettings(metrics_port=0))
    with pytest.raises(error):
        reporter.report(step, **metrics)  # type: ignore[arg-type]


def test_settings_from_env() -> None:
    settings = ReporterSettings.from_env(
        {
            "KUBETUNE_METRICS_ADDRESS": "10.1.2.3",
            "KUBETUNE_METRICS_PORT": "9100",
            "KUBETUNE_TERMINATION_MESSAGE_PATH": "/tmp/x",
            "KUBETUNE_FINAL_SCRAPE_TIMEOUT_SECONDS": "2.5",
        }
    )
    assert settings == ReporterSettings("10.1.2.3", 9100, "/tmp/x", 2.5)
    assert ReporterSettings.from_env({}) == ReporterSettings("0.0.0.0", 8000, "/dev/termination-log", 10.0)
    with pytest.raises(ValueError, match="KUBETUNE_METRICS_PORT"):
        ReporterSettings.from_env({"KUBETUNE_METRICS_PORT": "http"})
    with pytest.raises(ValueError, match="port"):
        ReporterSettings.from_env({"KUBETUNE_METRICS_PORT": "70000"})


def test_two_line_api_in_a_fresh_process(tmp_path: Path) -> None:
    """`import kubetune` stays light, and report/finish follow the contract from env vars."""
    script = """
import sys, json, kubetune
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes', 'aiohttp', 'torch'))
kubetune.report(step=1, val_accuracy=0.8, loss=0.5)
kubetune.report(step=2, val_accuracy=0.9, loss=0.3)
final = kubetune.finish(status="completed")
print(json.dumps({"heavy": heavy, "scraped": final.final_scrape_seen}))
"""
    env = {
        "PATH": "/usr/bin:/bin",
        "KUBETUNE_METRICS_PORT": "0",
        "KUBETUNE_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == {"heavy": [], "scraped": False}
    message = json.loads((tmp_path / "termination-log").read_text())
    assert message["status"] == "completed" and message["step"] == 2
    assert message["metrics"] == {"val_accuracy": 0.9, "loss": 0.3}
    assert message["best"] == {"val_accuracy": 0.9, "loss": 0.3}


def test_package_exports_the_helpers() -> None:
    from kubetune.report import finish, report

    assert kubetune.report is report
    assert kubetune.finish is finish
