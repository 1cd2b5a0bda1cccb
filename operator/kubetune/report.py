"""Report trial metrics the way the kubetune operator reads them.

Two calls make any training script follow the trial container contract::

    import kubetune

    for epoch in range(1, epochs + 1):
        ...
        kubetune.report(step=epoch, val_accuracy=acc, val_loss=loss)
    kubetune.finish(status="completed")

What this module does (the contract itself is documented in
`trainer-image/README.md`, "Trial container contract"):

* serves Prometheus metrics on `KUBETUNE_METRICS_ADDRESS`:`KUBETUNE_METRICS_PORT`
  (defaults `0.0.0.0`:8000; port 0 disables) at `/metrics`, started lazily on
  the first `report()`:

  - `kubetune_trial_metric{metric,step}`: one series per (metric, step), never
    removed while the process lives, so every step stays recoverable even when
    steps are faster than the scrape interval;
  - `kubetune_trial_latest{metric}`: latest value of each metric;
  - `kubetune_trial_step`: last reported step;
  - `kubetune_trial_final{metric}`: set by `finish()` only;
  - `kubetune_trial_done`: 0 until `finish()`, then 1.

  No identification labels: Prometheus adds namespace, pod, job and trial from
  the pod's labels.
* on `finish()`, writes a compact JSON summary (< 4096 bytes) to
  `KUBETUNE_TERMINATION_MESSAGE_PATH` (default `/dev/termination-log`), then
  waits up to `KUBETUNE_FINAL_SCRAPE_TIMEOUT_SECONDS` (default 10) until
  `/metrics` has been scraped once after the final values were set.

This module imports neither torch nor kopf nor kubernetes; environment
variables are read when a reporter is created, never at import time.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import choose_encoder

__all__ = [
    "FinalReport",
    "ReporterSettings",
    "TrialReporter",
    "TrialStatus",
    "build_termination_message",
    "finish",
    "get_reporter",
    "report",
]

log = logging.getLogger(__name__)

TrialStatus = Literal["completed", "stopped", "diverged", "failed"]
TRIAL_STATUSES: Final[frozenset[str]] = frozenset({"completed", "stopped", "diverged", "failed"})

ENV_METRICS_ADDRESS: Final = "KUBETUNE_METRICS_ADDRESS"
ENV_METRICS_PORT: Final = "KUBETUNE_METRICS_PORT"
ENV_TERMINATION_MESSAGE_PATH: Final = "KUBETUNE_TERMINATION_MESSAGE_PATH"
ENV_FINAL_SCRAPE_TIMEOUT: Final = "KUBETUNE_FINAL_SCRAPE_TIMEOUT_SECONDS"

DEFAULT_METRICS_ADDRESS: Final = "0.0.0.0"
DEFAULT_METRICS_PORT: Final = 8000
DEFAULT_TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
DEFAULT_FINAL_SCRAPE_TIMEOUT_SECONDS: Final = 10.0

METRICS_PATH: Final = "/metrics"
# Kubernetes truncates a container's termination message at 4096 bytes.
TERMINATION_MESSAGE_LIMIT_BYTES: Final = 4096
# Metrics kept first when the termination message must shrink.
PRIMARY_METRICS: Final[tuple[str, ...]] = ("val_accuracy", "val_loss")

_METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Which way is better, judged by the metric name's last word; other metrics
# (lr, samples_per_second, ...) have no "best".
_MAXIMISED_SUFFIXES: Final = ("accuracy", "acc", "auc", "f1", "precision", "recall", "score", "r2")
_MINIMISED_SUFFIXES: Final = ("loss", "error", "mse", "mae", "rmse", "perplexity")


def metric_goal(name: str) -> Literal["max", "min"] | None:
    """Whether a higher ("max") or lower ("min") value of `name` is better, by its suffix."""
    last_word = name.lower().rsplit("_", 1)[-1]
    if last_word in _MAXIMISED_SUFFIXES:
        return "max"
    if last_word in _MINIMISED_SUFFIXES:
        return "min"
    return None


@dataclass(frozen=True)
class ReporterSettings:
    """Where metrics are served and where the final summary goes."""

    metrics_address: str = DEFAULT_METRICS_ADDRESS
    metrics_port: int = DEFAULT_METRICS_PORT
    termination_message_path: str = DEFAULT_TERMINATION_MESSAGE_PATH
    final_scrape_timeout_seconds: float = DEFAULT_FINAL_SCRAPE_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics port must be in 0..65535 (0 disables), got {self.metrics_port}")
        if not self.metrics_address:
            raise ValueError("metrics address must not be empty")
        if not math.isfinite(self.final_scrape_timeout_seconds) or self.final_scrape_timeout_seconds < 0:
            raise ValueError(
                f"final scrape timeout must be a finite number >= 0, got {self.final_scrape_timeout_seconds}"
            )

    @property
    def metrics_enabled(self) -> bool:
        return self.metrics_port != 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReporterSettings:
        """Settings from the KUBETUNE_* environment variables (defaults where unset or empty)."""
        source = os.environ if env is None else env

        def read(name: str) -> str | None:
            value = source.get(name, "").strip()
            return value or None

        port_text = read(ENV_METRICS_PORT)
        timeout_text = read(ENV_FINAL_SCRAPE_TIMEOUT)
        try:
            port = int(port_text) if port_text is not None else DEFAULT_METRICS_PORT
        except ValueError:
            raise ValueError(f"{ENV_METRICS_PORT} must be an integer, got {port_text!r}") from None
        try:
            timeout = float(timeout_text) if timeout_text is not None else DEFAULT_FINAL_SCRAPE_TIMEOUT_SECONDS
        except ValueError:
            raise ValueError(f"{ENV_FINAL_SCRAPE_TIMEOUT} must be a number, got {timeout_text!r}") from None
        return cls(
            metrics_address=read(ENV_METRICS_ADDRESS) or DEFAULT_METRICS_ADDRESS,
            metrics_port=port,
            termination_message_path=read(ENV_TERMINATION_MESSAGE_PATH) or DEFAULT_TERMINATION_MESSAGE_PATH,
            final_scrape_timeout_seconds=timeout,
        )


@dataclass(frozen=True)
class FinalReport:
    """What `finish()` reported; `message` is the termination message as written."""

    status: TrialStatus
    step: int
    metrics: dict[str, float]
    best: dict[str, float]
    reason: str
    message: str
    termination_message_written: bool
    final_scrape_seen: bool


def _json_number(value: float) -> float | None:
    """JSON has no NaN or infinity; those become null."""
    return value if math.isfinite(value) else None


def _ordered(metrics: Mapping[str, float]) -> dict[str, float]:
    """Primary metrics first, then the rest alphabetically."""
    keys = [k for k in PRIMARY_METRICS if k in metrics] + sorted(k for k in metrics if k not in PRIMARY_METRICS)
    return {k: metrics[k] for k in keys}


def build_termination_message(
    status: TrialStatus,
    step: int,
    metrics: Mapping[str, float],
    best: Mapping[str, float],
    reason: str,
    limit_bytes: int = TERMINATION_MESSAGE_LIMIT_BYTES,
) -> str:
    """The compact JSON summary, shrunk to fewer than `limit_bytes` UTF-8 bytes.

    Shrinking drops secondary metrics (keeping val_accuracy and val_loss), then
    shortens the reason; status and step always survive.
    """
    kept_metrics = _ordered(metrics)
    kept_best = _ordered(best)
    kept_reason = reason

    def render() -> str:
        document = {
            "status": status,
            "step": step,
            "metrics": {k: _json_number(v) for k, v in kept_metrics.items()},
            "best": {k: _json_number(v) for k, v in kept_best.items()},
            "reason": kept_reason,
        }
        return json.dumps(document, separators=(",", ":"), allow_nan=False)

    def fits(text: str) -> bool:
        return len(text.encode("utf-8")) < limit_bytes

    text = render()
    if len(kept_reason) > 1024:
        kept_reason = kept_reason[:1021] + "..."
        text = render()
    for mapping in (kept_metrics, kept_best):
        while not fits(text) and len(mapping) > len([k for k in PRIMARY_METRICS if k in mapping]):
            mapping.pop(next(reversed(mapping)))
            text = render()
    while not fits(text) and kept_reason:
        kept_reason = kept_reason[: len(kept_reason) // 2]
        text = render()
    for mapping in (kept_best, kept_metrics):
        while not fits(text) and mapping:
            mapping.pop(next(reversed(mapping)))
            text = render()
    return text


class _ScrapeTracker:
    """Counts /metrics responses and lets a waiter block until a fresh one completed.

    Each request takes a ticket before it renders the metrics; a scrape "after
    the mark" is one whose ticket is newer than the mark, so its body holds
    everything set before the mark was taken.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._issued = 0
        self._newest_completed = 0

    def begin(self) -> int:
        with self._condition:
            self._issued += 1
            return self._issued

    def complete(self, ticket: int) -> None:
        with self._condition:
            self._newest_completed = max(self._newest_completed, ticket)
            self._condition.notify_all()

    def mark(self) -> int:
        with self._condition:
            return self._issued

    @property
    def completed_scrapes(self) -> int:
        with self._condition:
            return self._newest_completed

    def wait_after(self, mark: int, timeout: float) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: self._newest_completed > mark, timeout=timeout)


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, tracker: _ScrapeTracker) -> None:
        self.registry = registry
        self.tracker = tracker
        super().__init__(address, _MetricsHandler)


class _MetricsHandler(BaseHTTPRequestHandler):
    server: _MetricsServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != METRICS_PATH:
            self.send_error(404, f"only {METRICS_PATH} is served")
            return
        ticket = self.server.tracker.begin()
        try:
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            body = encoder(self.server.registry)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        finally:
            # A scrape counts once its body has been handed to the socket.
            self.server.tracker.complete(ticket)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics request: " + format, *args)


@dataclass
class _History:
    latest: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    step: int | None = None


class TrialReporter:
    """Serves the trial's metrics and writes its final summary; one per process.

    Thread-safe. `report()` may be called several times for the same step
    (e.g. training and validation metrics separately).
    """

    def __init__(self, settings: ReporterSettings | None = None) -> None:
        self.settings = settings or ReporterSettings()
        self.registry = CollectorRegistry(auto_describe=True)
        self._per_step = Gauge(
            "kubetune_trial_metric",
            "Value of a trial metric at a step; one series per (metric, step), kept for the process lifetime.",
            ["metric", "step"],
            registry=self.registry,
        )
        self._latest = Gauge(
            "kubetune_trial_latest", "Latest value of a trial metric.", ["metric"], registry=self.registry
        )
        self._step = Gauge("kubetune_trial_step", "Last reported step of the trial.", registry=self.registry)
        self._final = Gauge(
            "kubetune_trial_final",
            "Final value of a trial metric; set only when the trial finishes.",
            ["metric"],
            registry=self.registry,
        )
        self._done = Gauge("kubetune_trial_done", "1 once the trial has finished, else 0.", registry=self.registry)
        self._done.set(0)
        self._lock = threading.Lock()
        self._history = _History()
        self._tracker = _ScrapeTracker()
        self._server: _MetricsServer | None = None
        self._thread: threading.Thread | None = None
        self._final_report: FinalReport | None = None
        self._finishing = False

    # -- exporter -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving /metrics (idempotent; does nothing when the port is 0).

        Raises OSError when the address cannot be bound: a trial whose metrics
        cannot be read should fail loudly, not train unobserved.
        """
        with self._lock:
            if self._server is not None or not self.settings.metrics_enabled:
                return
            address = (self.settings.metrics_address, self.settings.metrics_port)
            server = self._server = _MetricsServer(address, self.registry, self._tracker)
            self._thread = threading.Thread(
                target=lambda: server.serve_forever(poll_interval=0.1), name="kubetune-metrics", daemon=True
            )
            self._thread.start()
        log.info("serving metrics on http://%s:%d%s", *address, METRICS_PATH)

    @property
    def serving(self) -> bool:
        return self._server is not None

    @property
    def scrape_count(self) -> int:
        """How many /metrics requests have been answered."""
        return self._tracker.completed_scrapes

    def close(self) -> None:
        """Stop serving (for tests and embedding; a trial process simply exits)."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # -- reporting ----------------------------------------------------------------------------

    def report(self, step: int, **metrics: float) -> None:
        """Record `metrics` at `step` (>= 0); starts the exporter on first use."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        values: dict[str, float] = {}
        for name, value in metrics.items():
            if not _METRIC_NAME.match(name):
                raise ValueError(f"metric name {name!r} must match {_METRIC_NAME.pattern}")
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"metric {name} must be a number, got {value!r}")
            values[name] = float(value)
        self.start()
        with self._lock:
            if self._finishing:
                raise RuntimeError("report() called after finish()")
            history = self._history
            for name, value in values.items():
                self._per_step.labels(metric=name, step=str(step)).set(value)
                self._latest.labels(metric=name).set(value)
                history.latest[name] = value
                goal = metric_goal(name)
                if goal is None or not math.isfinite(value):
                    continue
                previous = history.best.get(name)
                if previous is None or (value > previous if goal == "max" else value < previous):
                    history.best[name] = value
            history.step = step if history.step is None else max(history.step, step)
            self._step.set(history.step)

    def finish(
        self,
        status: TrialStatus = "completed",
        reason: str = "",
        metrics: Mapping[str, float] | None = None,
        cancel: threading.Event | None = None,
    ) -> FinalReport:
        """Publish final values, write the termination message, wait for a final scrape.

        `metrics` overrides the final values (default: the latest value of each
        reported metric). Setting `cancel` ends the wait early (e.g. on SIGTERM
        while waiting). Calling it again returns the first result unchanged.
        """
        if status not in TRIAL_STATUSES:
            raise ValueError(f"status must be one of {sorted(TRIAL_STATUSES)}, got {status!r}")
        with self._lock:
            if self._final_report is not None:
                log.warning("finish() called twice; keeping the first result (%s)", self._final_report.status)
                return self._final_report
            if self._finishing:
                raise RuntimeError("finish() is already running in another thread")
            self._finishing = True
            final = dict(self._history.latest if metrics is None else metrics)
            best = dict(self._history.best)
            step = self._history.step or 0
            for name, value in final.items():
                self._final.labels(metric=name).set(value)
            self._done.set(1)
            mark = self._tracker.mark()
        message = build_termination_message(status, step, final, best, reason)
        written = self._write_termination_message(message)
        scraped = self._wait_for_scrape_after(mark, cancel)
        result = FinalReport(
            status=status,
            step=step,
            metrics=final,
            best=best,
            reason=reason,
            message=message,
            termination_message_written=written,
            final_scrape_seen=scraped,
        )
        with self._lock:
            self._final_report = result
        return result

    def _write_termination_message(self, message: str) -> bool:
        path = self.settings.termination_message_path
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(message)
        except OSError as error:
            log.info("not writing the termination message to %s: %s", path, error)
            return False
        log.info("wrote the termination message to %s", path)
        return True

    def _wait_for_scrape_after(self, mark: int, cancel: threading.Event | None) -> bool:
        """Wait (bounded) until a scrape that began after `mark` has been answered."""
        if self._server is None:
            return False
        timeout = self.settings.final_scrape_timeout_seconds
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            # Short slices, so a cancel (set from a signal handler) is noticed promptly.
            if self._tracker.wait_after(mark, max(0.0, min(remaining, 0.1))):
                log.info("final metrics were scraped")
                return True
            if cancel is not None and cancel.is_set():
                log.warning("stopped waiting for the final scrape (cancelled)")
                return False
            if remaining <= 0:
                log.warning("no scrape of the final metrics within %.1f s; exiting anyway", timeout)
                return False


# -- module-level API: one lazily created reporter per process ------------------------------------

_default_reporter: TrialReporter | None = None
_default_lock = threading.Lock()


def get_reporter() -> TrialReporter:
    """The process-wide reporter, created from the environment on first use."""
    global _default_reporter
    with _default_lock:
        if _default_reporter is None:
            _default_reporter = TrialReporter(ReporterSettings.from_env())
        return _default_reporter


def report(step: int, **metrics: float) -> None:
    """Record metrics at a step: `kubetune.report(step=3, val_accuracy=0.9, loss=0.3)`."""
    get_reporter().report(step, **metrics)


def finish(status: TrialStatus = "completed", reason: str = "") -> FinalReport:
    """Finish the trial: final gauges, termination message, bounded wait for a final scrape."""
    return get_reporter().finish(status=status, reason=reason)
