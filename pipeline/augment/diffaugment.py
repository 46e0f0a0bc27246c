"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
Training"): three cheap operations on float NCHW images in [-1, 1], differentiable, so that G
learns through them. The ranges are those of the paper's reference code
(mit-han-lab/data-efficient-gans, `DiffAugment_pytorch.py`):

    color        brightness + U(-0.5, 0.5); saturation: the distance to the per-pixel mean of
                 the channels x U(0, 2); contrast: the distance to the image's mean x U(0.5, 1.5)
    translation  a shift of up to 1/8 of the side (a whole number of pixels, drawn uniformly
                 per axis), the uncovered border zero (mid grey)
    cutout       a square of half the side set to zero, centred anywhere in the image (it may
                 hang over the border)

The paper applies every operation to every image (p = 1); with `augment.p` < 1 each image
gets each operation with probability p, and the others are left bit for bit as they were.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

TRANSLATION = 1 / 8  # of the image side
CUTOUT = 1 / 2


def per_image(x: Tensor, changed: Tensor, p: float) -> Tensor:
    """`changed` where an image drew the operation (probability p), else `x` untouched."""
    if p >= 1.0:
        return changed
    picked = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(picked[:, None, None, None], changed, x)


def _pixel_grid(x: Tensor) -> tuple[Tensor, Tensor]:
    """Row and column indices, shaped to broadcast against (batch, 1, 1) offsets."""
    h, w = x.shape[2:]
    return torch.arange(h, device=x.device)[None, :, None], torch.arange(w, device=x.device)[
        None, None, :
    ]


def _uniform(x: Tensor, low: float, high: float) -> Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * (high - low) + low


class Color:
    """Brightness, saturation and contrast, in that order (the reference's `color`)."""

    name = "color"
    adaptive = False

    def __call__(self, x: Tensor, p: float) -> Tensor:
        if p <= 0:
            return x  # drawing nothing: p = 0 leaves the run's random numbers as they were
        x = per_image(x, x + _uniform(x, -0.5, 0.5), p)
        mean = x.mean(dim=1, keepdim=True)
        x = per_image(x, (x - mean) * _uniform(x, 0.0, 2.0) + mean, p)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return per_image(x, (x - mean) * _uniform(x, 0.5, 1.5) + mean, p)


class Translation:
    """A whole-pixel shift of up to `TRANSLATION` of the side; zeros come in at the border."""

    name = "translation"
    adaptive = False

    def __call__(self, x: Tensor, p: float) -> Tensor:
        if p <= 0:
            return x
        b, _, h, w = x.shape
        sh, sw = int(h * TRANSLATION + 0.5), int(w * TRANSLATION + 0.5)
        dy = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
        dx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
        # Output pixel (i, j) reads padded pixel (i + dy + 1, j + dx + 1): the one-pixel zero
        # frame of the padding is what every read past the border lands on.
        rows, cols = _pixel_grid(x)
        rows, cols = (rows + dy + 1).clamp(0, h + 1), (cols + dx + 1).clamp(0, w + 1)
        padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # NHWC for the gather
        batch = torch.arange(b, device=x.device)[:, None, None]
        return per_image(x, padded[batch, rows, cols].permute(0, 3, 1, 2), p)


class Cutout:
    """A zero square of `CUTOUT` of the side, its centre drawn uniformly over the image."""

    name = "cutout"
    adaptive = False

    def __call__(self, x: Tensor, p: float) -> Tensor:
        if p <= 0:
            return x
        b, _, h, w = x.shape
        ch, cw = int(h * CUTOUT + 0.5), int(w * CUTOUT + 0.5)
        # The reference's offsets: 0 .. side - 1 for an even square, 0 .. side for an odd one.
        top = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device) - ch // 2
        left = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device) - cw // 2
        rows, cols = _pixel_grid(x)
        inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
        return per_image(x, x * (~inside)[:, None].to(x.dtype), p)
