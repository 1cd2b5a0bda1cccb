"""Batch augmentation for image data, applied to training batches only.

Operations (`augment` knob), each applied to each sample independently with
probability `augment_prob`; magnitudes scale with `augment_strength` in [0, 1]:

* ``shift``: translate by a whole number of pixels, up to
  ``round(strength * 0.25 * side)`` in each direction (2 px on 8x8 at 1.0);
  uncovered pixels take the background value (a random crop of a padded image);
* ``rotate``: rotate by up to ``strength * 30`` degrees either way;
* ``flip``: mirror left-right (not scaled). Opt-in only: it changes the
  meaning of digits and text, so never use it for `digits`;
* ``noise``: add Gaussian noise with std ``strength * 0.5`` (inputs are
  standardised, so this is in units of the data's standard deviation).

Shift and rotation share one bilinear resampling pass (`affine_grid` +
`grid_sample`), so integer shifts alone move pixels exactly.
"""

from __future__ import annotations

import math
from typing import Final

import torch
import torch.nn.functional as F

MAX_SHIFT_FRACTION: Final = 0.25
MAX_ROTATION_DEGREES: Final = 30.0
MAX_NOISE_STD: Final = 0.5


class Augmenter:
    """Callable that returns an augmented copy of an image batch of shape (n, c, h, w)."""

    def __init__(
        self,
        ops: frozenset[str],
        strength: float,
        prob: float,
        image_shape: tuple[int, int, int],
        background: float,
        generator: torch.Generator,
    ) -> None:
        self.ops = ops
        self.prob = prob
        self.background = background
        self.generator = generator
        _, height, width = image_shape
        self.max_shift = round(strength * MAX_SHIFT_FRACTION * min(height, width))
        self.max_radians = math.radians(strength * MAX_ROTATION_DEGREES)
        self.noise_std = strength * MAX_NOISE_STD
        self.height, self.width = height, width

    def _mask(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.rand(n, device=device, generator=self.generator) < self.prob

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected an image batch (n, c, h, w), got shape {tuple(x.shape)}")
        n, device = x.shape[0], x.device
        out = x
        shift = "shift" in self.ops and self.max_shift > 0
        rotate = "rotate" in self.ops and self.max_radians > 0
        if shift or rotate:
            out = self._resample(out, shift, rotate)
        if "flip" in self.ops:
            flip = self._mask(n, device).view(n, 1, 1, 1)
            out = torch.where(flip, out.flip(-1), out)
        if "noise" in self.ops and self.noise_std > 0:
            noisy = self._mask(n, device).view(n, 1, 1, 1).to(out.dtype)
            noise = torch.randn(out.shape, device=device, generator=self.generator, dtype=out.dtype)
            out = out + noisy * noise * self.noise_std
        return out

    def _resample(self, x: torch.Tensor, shift: bool, rotate: bool) -> torch.Tensor:
        n, device = x.shape[0], x.device
        zeros = torch.zeros(n, device=device)
        angle = zeros
        if rotate:
            uniform = torch.rand(n, device=device, generator=self.generator) * 2 - 1
            angle = uniform * self.max_radians * self._mask(n, device)
        dx, dy = zeros, zeros
        if shift:
            applied = self._mask(n, device)
            span = 2 * self.max_shift + 1
            dx = (torch.randint(span, (n,), device=device, generator=self.generator) - self.max_shift) * applied
            dy = (torch.randint(span, (n,), device=device, generator=self.generator) - self.max_shift) * applied
        cos, sin = torch.cos(angle), torch.sin(angle)
        # affine_grid maps output to input coordinates in [-1, 1]; one pixel is 2/side.
        theta = torch.stack(
            [
                torch.stack([cos, -sin, -2 * dx.float() / self.width], dim=1),
                torch.stack([sin, cos, -2 * dy.float() / self.height], dim=1),
            ],
            dim=1,
        ).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # grid_sample pads with zeros; shift so the padding is the background value.
        resampled = F.grid_sample(x - self.background, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return resampled + self.background
