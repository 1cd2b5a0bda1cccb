"""Training throughput of the reference trainer (samples/s), digits MLP and CNN with default knobs.

    python benchmarks/trainer_throughput.py                  # 5 runs x 6 epochs each, CPU, ~1 min on 2 cores
    python benchmarks/trainer_throughput.py --device cuda    # the same on a GPU

samples/s is the trainer's own `samples_per_second` metric (training samples /
seconds in the training pass). Per run the first epoch is dropped (warm-up)
and the median of the rest taken; the table shows the median over runs, the
range over runs, and the median final val_accuracy. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass, replace

import torch

from kubetune_trainer.config import TrainerConfig
from kubetune_trainer.data import prepare_data
from kubetune_trainer.training import resolve_device, train

CASES: dict[str, TrainerConfig] = {
    "digits mlp (defaults)": TrainerConfig(model="mlp"),
    "digits cnn (defaults)": TrainerConfig(model="cnn"),
}


@dataclass(frozen=True)
class CaseResult:
    name: str
    parameters: int
    per_run: list[float]
    accuracies: list[float]


def bench_case(name: str, base: TrainerConfig, runs: int, epochs: int, device: torch.device) -> CaseResult:
    data = prepare_data(base)
    per_run: list[float] = []
    accuracies: list[float] = []
    parameters = 0
    for run in range(runs):
        config = replace(base, epochs=epochs, seed=run)
        outcome = train(config, data, device=device)
        parameters = sum(p.numel() for p in outcome.model.parameters())
        per_run.append(statistics.median(m.samples_per_second for m in outcome.history[1:]))
        accuracies.append(outcome.history[-1].val_accuracy)
    return CaseResult(name, parameters, per_run, accuracies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (the first is dropped)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is dropped)")
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    results = [bench_case(name, config, args.runs, args.epochs, device) for name, config in CASES.items()]
    seconds = time.perf_counter() - started

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"Machine: {platform.machine()} {where}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, device {device}; {args.runs} runs x {args.epochs} epochs, "
        f"batch_size {TrainerConfig().batch_size}, {seconds:.0f} s in all; "
        f"load average before/after {load_before:.1f}/{os.getloadavg()[0]:.1f}.\n"
    )
    print("| model | parameters | samples/s (median of runs) | range over runs | final val_accuracy (median) |")
    print("| --- | --- | --- | --- | --- |")
    for result in results:
        print(
            f"| {result.name} | {result.parameters:,} | {statistics.median(result.per_run):,.0f} "
            f"| {min(result.per_run):,.0f} – {max(result.per_run):,.0f} "
            f"| {statistics.median(result.accuracies):.3f} |"
        )


if __name__ == "__main__":
    main()
