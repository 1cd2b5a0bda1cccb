"""Optimisers and the per-epoch learning-rate schedule.

The schedule is a pure function of the epoch (1-based), set on the optimiser
at the start of each epoch and reported as the `lr` metric:

* warmup (epochs 1..w, w = `warmup_epochs`): ``lr * e / w``;
* then, with ``k = e - w`` (1-based epoch after warmup) and ``T = epochs - w``:

  - ``constant``: ``lr``;
  - ``step``: ``lr * gamma ** ((k - 1) // step_size)`` (first decay at epoch w + step_size + 1);
  - ``cosine``: ``lr * (1 + cos(pi * (k - 1) / T)) / 2``, from ``lr`` at the first epoch
    down to nearly 0 at the last (it would reach exactly 0 one epoch later).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from kubetune_trainer.config import ConfigError, TrainerConfig


def lr_at_epoch(config: TrainerConfig, epoch: int) -> float:
    """The learning rate used throughout `epoch` (1-based)."""
    if epoch < 1:
        raise ValueError(f"epoch is 1-based, got {epoch}")
    warmup = config.warmup_epochs
    if epoch <= warmup:
        return config.lr * epoch / warmup
    k = epoch - warmup
    if config.lr_schedule == "constant":
        return config.lr
    if config.lr_schedule == "step":
        return config.lr * config.gamma ** ((k - 1) // config.step_size)
    if config.lr_schedule == "cosine":
        total = max(1, config.epochs - warmup)
        progress = min(1.0, (k - 1) / total)
        return config.lr * (1 + math.cos(math.pi * progress)) / 2
    raise ConfigError("lr_schedule", f"unknown value {config.lr_schedule!r}")  # unreachable: config validated


def build_optimizer(config: TrainerConfig, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser for `config.optimizer`; `weight_decay` is L2 (decoupled for adamw)."""
    params = list(parameters)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ConfigError("optimizer", f"unknown value {config.optimizer!r}")  # unreachable: config validated


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
