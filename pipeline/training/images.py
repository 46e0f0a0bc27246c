"""Pixels in and out of the networks: uint8 NHWC from the reader to float NCHW in [-1, 1]
(with the training-time augmentation), and back to uint8 for grids, FID and files."""

from __future__ import annotations

import math

import numpy as np
import torch


def to_images(batch: torch.Tensor, device, channels_last: bool) -> torch.Tensor:
    """uint8 NHWC from the reader -> float NCHW in [-1, 1], converted on the device."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def augment(x: torch.Tensor, flip: bool, rotate: float) -> torch.Tensor:
    """Random horizontal flip and small rotation (degrees), per image, on the device."""
    if flip:
        mask = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if rotate:
        import torch.nn.functional as F

        angle = (torch.rand(x.shape[0], device=x.device) * 2 - 1) * math.radians(rotate)
        cos, sin = angle.cos(), angle.sin()
        zero = torch.zeros_like(cos)
        theta = torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    return x


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW -> uint8 NHWC."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()
