"""`python -m kubetune_trainer`: resolve knobs, train, report, exit with the trial's status.

Exit codes:

====  ==========  ==================================================================
code  status      when
====  ==========  ==================================================================
0     completed   all epochs ran, or the trainer's own early stopping (`patience`)
2     failed      invalid knob or flag, missing CSV, or other bad input (nothing trained)
1     failed      any other error (e.g. device=cuda without CUDA, port in use)
3     diverged    a non-finite training or validation loss
143   stopped     SIGTERM (130 for SIGINT): stopped at the next batch boundary
====  ==========  ==================================================================

Every path writes the termination message (see `kubetune.report`), and every
path that started the metrics exporter waits (bounded) for a final scrape.

Under torchrun (WORLD_SIZE > 1) only rank 0 reports: it alone serves metrics
and writes the termination message; the other ranks train, log, and exit with
the same status's code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from kubetune.report import (
    DEFAULT_TERMINATION_MESSAGE_PATH,
    ENV_TERMINATION_MESSAGE_PATH,
    FinalReport,
    ReporterSettings,
    TrialReporter,
    TrialStatus,
)
from kubetune_trainer.config import (
    ENV_PARAM_PREFIX,
    ENV_PARAMS_JSON,
    ConfigError,
    TrainerConfig,
    add_knob_arguments,
    knob_values_from_args,
    resolve_config,
)
from kubetune_trainer.distributed import WorldSettings, world_from_env

log = logging.getLogger("kubetune_trainer")

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_CODES: dict[str, int] = {"completed": EXIT_COMPLETED, "diverged": EXIT_DIVERGED, "failed": EXIT_FAILED}


class CommandLineError(Exception):
    """An unusable command line (unknown flag, missing value)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Raise instead of exiting, so the termination message still says why.
        raise CommandLineError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m kubetune_trainer",
        description="kubetune reference trainer. Knob precedence: command-line flag > "
        f"{ENV_PARAM_PREFIX}<NAME> > {ENV_PARAMS_JSON} (JSON object) > default.",
    )
    runtime = parser.add_argument_group("runtime settings (not knobs)")
    runtime.add_argument(
        "--metrics-address",
        help="address to serve /metrics on (env KUBETUNE_METRICS_ADDRESS, default 0.0.0.0)",
    )
    runtime.add_argument(
        "--metrics-port",
        type=int,
        help="port for /metrics, 0 disables (env KUBETUNE_METRICS_PORT, default 8000)",
    )
    runtime.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved knobs and their sources as JSON, then exit",
    )
    add_knob_arguments(parser)
    return parser


def reporter_settings(args: argparse.Namespace, env: Mapping[str, str]) -> ReporterSettings:
    """Settings from the environment, overridden by --metrics-address/--metrics-port."""
    settings = ReporterSettings.from_env(env)
    return ReporterSettings(
        metrics_address=args.metrics_address or settings.metrics_address,
        metrics_port=settings.metrics_port if args.metrics_port is None else args.metrics_port,
        termination_message_path=settings.termination_message_path,
        final_scrape_timeout_seconds=settings.final_scrape_timeout_seconds,
    )


class StopSignal:
    """Turns SIGTERM/SIGINT into a stop request that the training loop polls between batches.

    A signal while finishing (or a second signal) also ends the wait for the
    final scrape: the termination message is already written by then.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.abandon_final_wait = threading.Event()
        self.finishing = False
        self.signal_number: int | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.finishing or self.event.is_set():
            self.abandon_final_wait.set()
        if self.signal_number is None and not self.finishing:
            self.signal_number = signum
            log.warning("received %s; stopping at the next batch boundary", signal.Signals(signum).name)
        self.event.set()

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Install the handlers (main thread only), restoring the previous ones afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run one trial; returns the process exit code."""
    env = os.environ if env is None else env
    world: WorldSettings | None = None
    world_error: ValueError | None = None
    try:
        world = world_from_env(env)
    except ValueError as error:
        world_error = error
    if not logging.getLogger().handlers:
        # Under torchrun the ranks' lines interleave in one stream; say whose each line is.
        where = f"[rank {world.rank}/{world.size}] " if world is not None else ""
        logging.basicConfig(
            stream=sys.stderr, level=logging.INFO, format=f"%(asctime)s %(levelname)s {where}%(message)s"
        )
    # Rank 0 (or the only process) reports; other ranks neither serve metrics nor write the termination message.
    reports = world is None or world.rank == 0
    parser = build_parser()
    path = env.get(ENV_TERMINATION_MESSAGE_PATH) or DEFAULT_TERMINATION_MESSAGE_PATH
    fallback = ReporterSettings(metrics_port=0, termination_message_path=path)
    try:
        args = parser.parse_args(argv)
    except CommandLineError as error:
        parser.print_usage(sys.stderr)
        log.error("invalid command line: %s", error)
        return _finish_without_exporter(fallback, "failed", f"invalid command line: {error}", EXIT_BAD_INPUT, reports)
    try:
        if world_error is not None:
            raise world_error
        settings = reporter_settings(args, env)
    except ValueError as error:
        log.error("invalid runtime settings: %s", error)
        reason = f"invalid runtime settings: {error}"
        return _finish_without_exporter(fallback, "failed", reason, EXIT_BAD_INPUT, reports)
    try:
        resolved = resolve_config(knob_values_from_args(args), env)
    except ConfigError as error:
        log.error("invalid configuration: %s", error)
        reason = f"invalid configuration: {error}"
        return _finish_without_exporter(settings, "failed", reason, EXIT_BAD_INPUT, reports)
    config = resolved.config
    if args.print_config:
        print(json.dumps({"knobs": config.to_dict(), "sources": resolved.sources}, indent=2))
        return EXIT_COMPLETED
    log.info("knobs: %s", json.dumps(config.to_dict(), separators=(",", ":")))
    for name, winner, loser in resolved.shadowed:
        log.warning("%s from %s overrides %s (precedence: flag > env > JSON)", name, winner, loser)
    overridden = {name: source for name, source in resolved.sources.items() if source != "default"}
    if overridden:
        log.info("knob sources: %s", json.dumps(overridden, separators=(",", ":")))

    reporter = TrialReporter(settings) if reports else None
    try:
        if reporter is not None:
            reporter.start()
    except OSError as error:
        reason = f"cannot serve metrics on {settings.metrics_address}:{settings.metrics_port}: {error}"
        log.error("%s", reason)
        return _finish_without_exporter(settings, "failed", reason, EXIT_FAILED)

    stop = StopSignal()
    with stop.installed():
        status, reason, code = _train(config, reporter, stop, world)
        stop.finishing = True
        if reporter is None:
            log.info("trial %s: %s (rank 0 reports it)", status, reason)
            return code
        final = reporter.finish(status=status, reason=reason, cancel=stop.abandon_final_wait)
    _log_final(final)
    return code


def run() -> NoReturn:
    """The process entry point (`python -m kubetune_trainer`, `kubetune-trainer`): `main()`, then exit with its code.

    A torchrun worker leaves without finalizing the interpreter. DistributedDataParallel keeps the gloo process
    group, and with it gloo's worker threads, alive past `destroy_process_group()`; a worker thread that drops a
    finished collective's tensors while the interpreter finalizes aborts the process ("terminate called without
    an active exception", SIGABRT) after a run that succeeded, and the trial's workload fails. By then the
    result is written, so flushing the logs and streams is all the finalization left to do.
    """
    code = main()
    if os.environ.get("WORLD_SIZE", "").strip() not in ("", "1"):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _train(
    config: TrainerConfig, reporter: TrialReporter | None, stop: StopSignal, world: WorldSettings | None = None
) -> tuple[TrialStatus, str, int]:
    """Train and report each epoch; returns (status, reason, exit code). Imports torch lazily."""
    try:
        import torch

        from kubetune_trainer.data import prepare_data
        from kubetune_trainer.distributed import process_group, worker_device
        from kubetune_trainer.training import EpochMetrics, resolve_device, train

        data = prepare_data(config)
        device = worker_device(resolve_device(config.device), world)
        log.info(
            "dataset %s: %d train / %d validation samples, input shape %s, %d classes; device %s (torch %s)",
            data.name,
            len(data.y_train),
            len(data.y_val),
            data.input_shape,
            data.n_classes,
            device,
            torch.__version__,
        )

        def on_epoch(metrics: EpochMetrics) -> None:
            if reporter is not None:
                reporter.report(metrics.epoch, **metrics.as_dict())

        with process_group(world, device) as collectives:
            outcome = train(config, data, device=device, stop=stop.event, on_epoch=on_epoch, world=collectives)
    except ConfigError as error:
        log.error("invalid input: %s", error)
        return "failed", f"invalid input: {error}", EXIT_BAD_INPUT
    except Exception as error:
        log.exception("trial failed")
        return "failed", f"{type(error).__name__}: {error}", EXIT_FAILED
    if outcome.status == "stopped":
        signum = stop.signal_number or signal.SIGTERM
        return "stopped", f"{signal.Signals(signum).name}: {outcome.reason}", 128 + signum
    return outcome.status, outcome.reason, EXIT_CODES[outcome.status]


def _finish_without_exporter(
    settings: ReporterSettings, status: TrialStatus, reason: str, code: int, reports: bool = True
) -> int:
    """Write the termination message for a trial that never started its exporter (rank 0 or single process only)."""
    if not reports:
        return code
    quiet = ReporterSettings(
        metrics_address=settings.metrics_address,
        metrics_port=0,
        termination_message_path=settings.termination_message_path,
        final_scrape_timeout_seconds=0,
    )
    _log_final(TrialReporter(quiet).finish(status=status, reason=reason))
    return code


def _log_final(final: FinalReport) -> None:
    level = logging.INFO if final.status == "completed" else logging.WARNING
    log.log(level, "trial %s at step %d: %s", final.status, final.step, final.reason)
    log.info("final: %s", final.message)
