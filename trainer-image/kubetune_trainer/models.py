"""Model families: logistic regression, MLP and a small CNN.

Knobs that do not apply to the chosen family are ignored (e.g. `channels`
for `mlp`, `hidden_layers` for `cnn`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kubetune_trainer.config import ConfigError, TrainerConfig

ACTIVATION_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


def build_model(config: TrainerConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The model for `config.model`, taking inputs of `input_shape` (without the batch axis)."""
    n_inputs = 1
    for size in input_shape:
        n_inputs *= size
    if config.model == "logistic":
        return nn.Sequential(nn.Flatten(), nn.Linear(n_inputs, n_classes))
    if config.model == "mlp":
        return build_mlp(
            n_inputs, n_classes, config.hidden_layers, config.hidden_units, config.activation, config.dropout
        )
    if config.model == "cnn":
        if len(input_shape) != 3:
            raise ConfigError(
                "model",
                "cnn needs image data (dataset digits, without pca_components or rfe_features), "
                f"got inputs of shape {input_shape}",
            )
        channels, height, width = input_shape
        return SmallCNN(
            channels,
            height,
            width,
            n_classes,
            config.channels,
            config.hidden_units,
            config.activation,
            config.dropout,
        )
    raise ConfigError("model", f"unknown value {config.model!r}")  # unreachable: config validated


def build_mlp(
    n_inputs: int, n_classes: int, hidden_layers: int, hidden_units: int, activation: str, dropout: float
) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = n_inputs
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden_units), ACTIVATION_LAYERS[activation](), nn.Dropout(dropout)]
        width = hidden_units
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """conv3x3(c) → act → conv3x3(2c) → act → maxpool 2 → dropout → dense(hidden) → act → dropout → classes."""

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        n_classes: int,
        channels: int,
        hidden_units: int,
        activation: str,
        dropout: float,
    ) -> None:
        super().__init__()
        act = ACTIVATION_LAYERS[activation]
        pool = 2 if min(height, width) >= 2 else 1
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=3, padding=1),
            act(),
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            act(),
            nn.MaxPool2d(pool),
            nn.Dropout(dropout),
        )
        flat = 2 * channels * (height // pool) * (width // pool)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden_units),
            act(),
            nn.Dropout(dropout),
            nn.Linear(hidden_units, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out
