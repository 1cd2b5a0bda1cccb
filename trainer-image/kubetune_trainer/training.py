"""The training loop: epochs of shuffled mini-batches, validation, early stopping.

The loop knows nothing about Prometheus or Kubernetes: it calls `on_epoch`
with each epoch's metrics and returns a `TrainingOutcome` whose status is one
of the trial contract's ("completed", "stopped", "diverged"). Failures other
than divergence surface as exceptions.
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

from kubetune_trainer.augment import Augmenter
from kubetune_trainer.config import TrainerConfig
from kubetune_trainer.data import PreparedData
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
) -> TrainingOutcome:
    """Train on `data.x_train`, validate on `data.x_val` after each epoch.

    `stop` is checked at every batch boundary; when set, training ends with
    status "stopped" and the partial epoch is discarded. A non-finite training
    or validation loss ends it with status "diverged".
    """
    device = device or resolve_device(config.device)
    stop = stop or threading.Event()
    amp_dtype = resolve_amp_dtype(config, device)
    torch.manual_seed(config.seed)
    shuffle_generator = torch.Generator().manual_seed(config.seed)

    model = model if model is not None else build_model(config, data.input_shape, data.n_classes)
    model.to(device)
    optimizer = build_optimizer(config, model.parameters())
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    augmenter = _build_augmenter(config, data, device)

    x_train = torch.from_numpy(data.x_train).to(device)
    y_train = torch.from_numpy(data.y_train).to(device)
    x_val = torch.from_numpy(data.x_val).to(device)
    y_val = torch.from_numpy(data.y_val).to(device)
    n_train = x_train.shape[0]

    mode: Literal["min", "max"] = "max" if config.early_stopping_metric == "val_accuracy" else "min"
    early_stopping = EarlyStopping(config.patience, config.min_delta, mode)
    history: list[EpochMetrics] = []

    def outcome(status: OutcomeStatus, reason: str) -> TrainingOutcome:
        return TrainingOutcome(status, reason, history, model, device, amp_dtype)

    for epoch in range(1, config.epochs + 1):
        if stop.is_set():
            return outcome("stopped", f"stop requested before epoch {epoch}")
        lr = lr_at_epoch(config, epoch)
        set_lr(optimizer, lr)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()

        model.train()
        order = torch.randperm(n_train, generator=shuffle_generator).to(device)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, n_train, config.batch_size):
            if stop.is_set():
                return outcome("stopped", f"stop requested during epoch {epoch}")
            batch = order[start : start + config.batch_size]
            inputs, targets = x_train[batch], y_train[batch]
            if augmenter is not None:
                inputs = augmenter(inputs)
            with _autocast(device, amp_dtype):
                loss = F.cross_entropy(model(inputs), targets)
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
        train_loss = float(loss_sum.item()) / n_train  # .item() synchronises the device
        train_seconds = time.perf_counter() - started

        if not math.isfinite(train_loss):
            return outcome(
                "diverged",
                f"training loss is {train_loss} in epoch {epoch} (lr={lr:g}); training diverged, try a lower lr",
            )
        val_loss, val_accuracy = evaluate(model, x_val, y_val, device, amp_dtype)
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
            samples_per_second=n_train / train_seconds if train_seconds > 0 else 0.0,
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


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, amp_dtype: torch.dtype | None
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on (x, y), in eval mode, without augmentation."""
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
    n = x.shape[0]
    return float(loss_sum.item()) / n, float(correct.item()) / n


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> AbstractContextManager[object]:
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _build_augmenter(config: TrainerConfig, data: PreparedData, device: torch.device) -> Augmenter | None:
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
    generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    return Augmenter(ops, config.augment_strength, config.augment_prob, data.image_shape, data.background, generator)
