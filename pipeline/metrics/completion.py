"""How inpainting is measured: L1, PSNR and SSIM, over the image and in the hole.

    scores = completion_scores(completed, original, mask)   # uint8-range floats, NCHW
    scores["psnr_hole"], scores["ssim"], scores["l1_hole"], ...

On the 0-255 scale, as mmagic reports GLCIC (CelebA-HQ: L1 6.678, PSNR 26.78, SSIM 0.904):
    l1     mean |completed - original| over pixels and channels
    psnr   10 log10(255^2 / MSE), the MSE over the whole evaluation set's pixels (not a mean
           of per-image PSNRs, which a perfect image would make infinite)
    ssim   Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, per
           channel; over the image it is the mean of the SSIM map without its 5 px border,
           which is skimage's `structural_similarity(gaussian_weights=True, sigma=1.5,
           use_sample_covariance=False, data_range=255)` (tests/test_completion_metrics.py
           checks it against skimage); in the hole, the map's mean over hole pixels.
The `_hole` variants weigh each pixel by the mask, so they measure what C made; the plain ones
include the untouched pixels too, as most papers' tables do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_SIGMA, SSIM_RADIUS, K1, K2, PEAK = 1.5, 5, 0.01, 0.03, 255.0


def _gaussian(channels: int, dtype) -> torch.Tensor:
    x = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=dtype)
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, -1, -1).contiguous()


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel, per-channel SSIM of two NCHW batches on the 0-255 scale (same size out;
    borders from reflected padding, which `completion_scores` leaves out of the image mean)."""
    a, b = a.double(), b.double()
    c = a.shape[1]
    window = _gaussian(c, a.dtype).to(a.device)

    def blur(t):
        return F.conv2d(F.pad(t, [SSIM_RADIUS] * 4, mode="reflect"), window, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (K1 * PEAK) ** 2, (K2 * PEAK) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )


def psnr(mse: float) -> float:
    return 10 * math.log10(PEAK**2 / mse) if mse > 0 else float("inf")


def completion_scores(completed: torch.Tensor, original: torch.Tensor, mask: torch.Tensor):
    """L1, PSNR, SSIM over the images and in the hole; images NCHW on the 0-255 scale (floats
    of uint8 values), mask (N, 1, H, W) with 1 in the hole."""
    a, b = completed.double(), original.double()
    m = mask.double().expand_as(a)
    diff = a - b
    hole = m.sum()
    ssim = ssim_map(a, b)
    r = SSIM_RADIUS
    return {
        "l1": float(diff.abs().mean()),
        "l1_hole": float((diff.abs() * m).sum() / hole),
        "psnr": psnr(float((diff**2).mean())),
        "psnr_hole": psnr(float((diff**2 * m).sum() / hole)),
        "ssim": float(ssim[:, :, r:-r, r:-r].mean()),
        "ssim_hole": float((ssim * m).sum() / hole),
    }
