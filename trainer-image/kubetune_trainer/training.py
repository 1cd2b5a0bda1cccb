"""The training loop: epochs of shuffled mini-batches, validation, early stopping.

The loop knows nothing about Prometheus or Kubernetes: it calls `on_epoch`
with each epoch's metrics and returns a `TrainingOutcome` whose status is one
of the trial contract's ("completed", "stopped", "diverged"). Failures other
than divergence surface as exceptions.

Given `Collectives` of several ranks (under torchrun) the model is wrapped in
DistributedDataParallel, each rank trains on its DistributedSampler shard and
validates on its slice of the validation set, and the metrics are summed over
all ranks, so every rank sees the same values and takes the same stop,
divergence and early-stopping decisions (a rank that decided differently would
hang its peers in the next collective).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, TensorDataset

from kubetune_trainer.augment import Augmenter
from kubetune_trainer.config import TrainerConfig
from kubetune_trainer.data import PreparedData
from kubetune_trainer.distributed import SINGLE_PROCESS, Collectives
from kubetune_trainer.models import build_model
from kubetune_trainer.optim import build_optimizer, lr_at_epoch, set_lr

log = logging.getLogger(__name__)

OutcomeStatus = Literal["completed", "stopped", "diverged"]
EVAL_BATCH_SIZE = 2048


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch's metrics, named as in the metrics contract."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    lr: float
    samples_per_second: float
    epoch_seconds: float
    gpu_memory_bytes: float | None = None

    def as_dict(self) -> dict[str, float]:
        values = {
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_accuracy": self.val_accuracy,
            "lr": self.lr,
            "samples_per_second": self.samples_per_second,
            "epoch_seconds": self.epoch_seconds,
        }
        if self.gpu_memory_bytes is not None:
            values["gpu_memory_bytes"] = self.gpu_memory_bytes
        return values


@dataclass(frozen=True)
class TrainingOutcome:
    status: OutcomeStatus
    reason: str
    history: list[EpochMetrics]
    model: nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None

    @property
    def epochs_completed(self) -> int:
        return len(self.history)


class EarlyStopping:
    """Stops after `patience` epochs in which the metric failed to improve by more than `min_delta`."""

    def __init__(self, patience: int, min_delta: float, mode: Literal["min", "max"]) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.best: float | None = None
        self.epochs_without_improvement = 0

    def update(self, value: float) -> bool:
        """Record this epoch's value; True when training should stop."""
        improved = self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )
        if improved:
            self.best = value
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return self.patience > 0 and self.epochs_without_improvement >= self.patience


def resolve_device(name: str) -> torch.device:
    """`auto` → the current CUDA device when available, else CPU. Asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} was requested but CUDA is not available")
    return device


def resolve_amp_dtype(config: TrainerConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None when mixed precision is off (always off on CPU)."""
    if not config.amp:
        return None
    if device.type != "cuda":
        log.warning("amp is only used on CUDA; training in float32 on %s", device)
        return None
    return torch.bfloat16 if config.amp_dtype == "bfloat16" else torch.float16


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of absolute values of the weights (parameters with 2+ dimensions, i.e. not biases)."""
    terms = [p.abs().sum() for p in model.parameters() if p.dim() > 1]
    return torch.stack(terms).sum()


def train(
    config: TrainerConfig,
    data: PreparedData,
    *,
    device: torch.device | None = None,
    stop: threading.Event | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    model: nn.Module | None = None,
    world: Collectives = SINGLE_PROCESS,
) -> TrainingOutcome:
    """Train on `data.x_train`, validate on `data.x_val` after each epoch.

    `stop` is checked at every batch boundary; when set (on any rank), training
    ends with status "stopped" and the partial epoch is discarded. A non-finite
    training or validation loss ends it with status "diverged". With several
    ranks (`world`), `config.batch_size` is the batch size of each rank.
    """
    device = device or resolve_device(config.device)
    stop = stop or threading.Event()
    amp_dtype = resolve_amp_dtype(config, device)
    torch.manual_seed(config.seed)
    shuffle_generator = torch.Generator().manual_seed(config.seed)

    model = model if model is not None else build_model(config, data.input_shape, data.n_classes)
    model.to(device)
    # DDP broadcasts rank 0's initial weights and averages gradients in backward.
    net = _wrap_for_ranks(model, world, device)
    optimizer = build_optimizer(config, model.parameters())
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    augmenter = _build_augmenter(config, data, device, world.rank)

    x_train = torch.from_numpy(data.x_train).to(device)
    y_train = torch.from_numpy(data.y_train).to(device)
    val_start, val_end = world.bounds(data.x_val.shape[0])
    x_val = torch.from_numpy(data.x_val[val_start:val_end]).to(device)
    y_val = torch.from_numpy(data.y_val[val_start:val_end]).to(device)
    n_train = x_train.shape[0]
    n_local = n_train // world.size if world.size > 1 else n_train  # DistributedSampler with drop_last
    if world.size > 1:
        log.info(
            "DistributedDataParallel over %d ranks (backend %s): this rank trains on %d of %d samples per epoch, "
            "batch size %d per rank (%d per step in all)",
            world.size,
            world.backend,
            n_local,
            n_train,
            config.batch_size,
            config.batch_size * world.size,
        )

    mode: Literal["min", "max"] = "max" if config.early_stopping_metric == "val_accuracy" else "min"
    early_stopping = EarlyStopping(config.patience, config.min_delta, mode)
    history: list[EpochMetrics] = []

    def outcome(status: OutcomeStatus, reason: str) -> TrainingOutcome:
        if world.size > 1:
            # Equal on every rank when DDP kept the replicas in sync; a cheap check in the logs.
            checksum = sum(float(p.detach().double().sum()) for p in model.parameters())
            log.info("parameter checksum after training: %r", checksum)
        return TrainingOutcome(status, reason, history, model, device, amp_dtype)

    for epoch in range(1, config.epochs + 1):
        if world.any(stop.is_set()):
            return outcome("stopped", f"stop requested before epoch {epoch}")
        lr = lr_at_epoch(config, epoch)
        set_lr(optimizer, lr)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()

        net.train()
        if world.size > 1:
            order = shard_order(n_train, world, config.seed, epoch).to(device)
        else:
            order = torch.randperm(n_train, generator=shuffle_generator).to(device)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, n_local, config.batch_size):
            if world.any(stop.is_set()):
                return outcome("stopped", f"stop requested during epoch {epoch}")
            batch = order[start : start + config.batch_size]
            inputs, targets = x_train[batch], y_train[batch]
            if augmenter is not None:
                inputs = augmenter(inputs)
            with _autocast(device, amp_dtype):
                loss = F.cross_entropy(net(inputs), targets)
            total = loss.float() + config.l1 * l1_penalty(model) if config.l1 > 0 else loss.float()
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                torch.autograd.backward(scaler.scale(total))
                scaler.step(optimizer)
                scaler.update()
            else:
                torch.autograd.backward(total)
                optimizer.step()
            loss_sum += loss.detach().float() * batch.shape[0]
        # Global mean over all ranks' samples, so every rank sees the same (possibly non-finite) loss.
        loss_total, n_seen = world.sum(float(loss_sum.item()), n_local)  # .item() synchronises the device
        train_loss = loss_total / n_seen
        train_seconds = time.perf_counter() - started

        if not math.isfinite(train_loss):
            return outcome(
                "diverged",
                f"training loss is {train_loss} in epoch {epoch} (lr={lr:g}); training diverged, try a lower lr",
            )
        val_loss, val_accuracy = evaluate(model, x_val, y_val, device, amp_dtype, world)
        if not math.isfinite(val_loss):
            return outcome(
                "diverged",
                f"validation loss is {val_loss} after epoch {epoch} (lr={lr:g}); training diverged, try a lower lr",
            )
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            lr=lr,
            samples_per_second=n_seen / train_seconds if train_seconds > 0 else 0.0,
            epoch_seconds=time.perf_counter() - started,
            gpu_memory_bytes=float(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
        )
        history.append(metrics)
        log.info(
            "epoch %d/%d train_loss=%.4f val_loss=%.4f val_accuracy=%.4f lr=%.3g samples/s=%.0f",
            epoch,
            config.epochs,
            train_loss,
            val_loss,
            val_accuracy,
            lr,
            metrics.samples_per_second,
        )
        if on_epoch is not None:
            on_epoch(metrics)
        watched = val_accuracy if mode == "max" else val_loss
        if early_stopping.update(watched):
            return outcome(
                "completed",
                f"early stopping after epoch {epoch}: {config.early_stopping_metric} did not improve by more "
                f"than {config.min_delta:g} for {config.patience} epochs (best {early_stopping.best:.6g})",
            )
    return outcome("completed", f"trained {config.epochs} epochs")


def shard_order(n: int, world: Collectives, seed: int, epoch: int) -> torch.Tensor:
    """This rank's training sample order for `epoch`: a disjoint shard of an epoch-seeded permutation.

    drop_last: every rank gets n // size samples (the same number of batches,
    so no rank waits for a gradient sync the others never start); the up to
    size - 1 samples left over differ from epoch to epoch.
    """
    sampler: DistributedSampler[tuple[torch.Tensor, ...]] = DistributedSampler(
        TensorDataset(torch.empty(n, 0)),
        num_replicas=world.size,
        rank=world.rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    world: Collectives = SINGLE_PROCESS,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on (x, y), in eval mode, without augmentation.

    With several ranks, (x, y) is this rank's slice and the result is over all slices.
    """
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for start in range(0, x.shape[0], EVAL_BATCH_SIZE):
        inputs, targets = x[start : start + EVAL_BATCH_SIZE], y[start : start + EVAL_BATCH_SIZE]
        with _autocast(device, amp_dtype):
            logits = model(inputs)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum")
        correct += (logits.argmax(dim=1) == targets).sum()
    loss_total, n_correct, n = world.sum(float(loss_sum.item()), float(correct.item()), x.shape[0])
    return loss_total / n, n_correct / n


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> AbstractContextManager[object]:
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _wrap_for_ranks(model: nn.Module, world: Collectives, device: torch.device) -> nn.Module:
    if world.size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _build_augmenter(config: TrainerConfig, data: PreparedData, device: torch.device, rank: int) -> Augmenter | None:
    ops = config.augmentations
    if not ops:
        return None
    if data.image_shape is None:
        log.warning(
            "augment=%s ignored: %s has no image-shaped inputs (augmentation is for image data)",
            config.augment,
            data.name,
        )
        return None
    # Offset by rank so the ranks don't draw the same augmentations (rank 0 = the single-process stream).
    generator = torch.Generator(device=device).manual_seed(config.seed + 1 + rank)
    return Augmenter(ops, config.augment_strength, config.augment_prob, data.image_shape, data.background, generator)
