"""ADA's augmentation pipeline (Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data", appendix B) and its controller of p (sec. 2.3). The transforms, their
order and ranges are those of stylegan2-ada-pytorch's `training/augment.py` (pipeline `bgc`:
every probability multiplier 1); each is applied to an image with probability p:

    pixel blitting   x-flip; rotation by a multiple of 90 degrees; integer translation,
                     U(-0.125, 0.125) of the side per axis, rounded to whole pixels
    geometric        isotropic scaling 2^N(0, 0.2^2); rotation U(-pi, pi) before and after
                     the anisotropic scaling, each with 1 - sqrt(1 - p) (either: p);
                     anisotropic scaling 2^N(0, 0.2^2) along x, its inverse along y;
                     fractional translation N(0, 0.125^2) of the side
    colour           brightness + N(0, 0.2^2); contrast x 2^N(0, 0.5^2); luma flip (a
                     Householder reflection about the grey axis, half the time); hue rotation
                     U(-pi, pi) about the grey axis; saturation x 2^N(0, 1) off the grey axis

The geometric transforms compose into one matrix per image, sampled once (bilinear, the
image mirrored past its border, on a 2x supersampled grid averaged back down: the paper uses a
sym6 wavelet for the up- and downsampling, this a box filter). The colour transforms compose
into one 4x4 matrix. An image that drew no transform of a group is left bit for bit as it was,
so p = 0 is the identity.

The controller: r_t = E[sign(D(x_real))] over the reals D judged in the last `ada.interval`
steps (all ranks: the sums are all-reduced, so every rank holds the same p); then
p <- clamp(p + sign(r_t - target) x images / (kimg x 1000), 0, 1), images being the reals of
those steps over all ranks: p can go from 0 to 1 in `kimg` thousand images. p and the partial
sums are in every checkpoint, so a resumed run (or a PBT exploit) goes on with them
(stylegan2-ada saves p but does not load it back on resume).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from pipeline.augment.config import AdaConfig

XINT_MAX, SCALE_STD, ROTATE_MAX, ANISO_STD, XFRAC_STD = 0.125, 0.2, 1.0, 0.2, 0.125
BRIGHTNESS_STD, CONTRAST_STD, HUE_MAX, SATURATION_STD = 0.2, 0.5, 1.0, 1.0


def _eye(n: int, b: int, device) -> Tensor:
    return torch.eye(n, device=device).repeat(b, 1, 1)


def _affine(b: int, device, sx=1.0, sy=1.0, tx=0.0, ty=0.0, theta=None) -> Tensor:
    """Batched 3x3 matrices: scale, then rotate by theta, plus a translation."""
    m = _eye(3, b, device)
    if theta is not None:
        cos, sin = theta.cos(), theta.sin()
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos * sx, -sin * sy, sin * sx, cos * sy
    else:
        m[:, 0, 0], m[:, 1, 1] = sx, sy
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _drawn(b: int, p: float, device) -> Tensor:
    return torch.rand(b, device=device) < p


class AdaPipeline:
    """ADA's `bgc` (or `bg`): pixel blitting, general geometric, colour transforms."""

    adaptive = True

    def __init__(self, name: str, colour: bool = True):
        self.name, self.colour = name, colour

    def __call__(self, x: Tensor, p: float) -> Tensor:
        if p <= 0:
            return x
        x = self.geometric(x, p)
        return self.colours(x, p) if self.colour else x

    def geometric(self, x: Tensor, p: float) -> Tensor:
        b, _, h, w = x.shape
        dev = x.device
        # G_inv maps an output pixel to the input pixel it reads, in pixels from the centre.
        G_inv, moved = _eye(3, b, dev), torch.zeros(b, dtype=torch.bool, device=dev)

        def then(matrix: Tensor, drawn: Tensor) -> None:
            nonlocal G_inv, moved
            G_inv, moved = G_inv @ matrix, moved | drawn

        # Pixel blitting.
        flip, drawn = torch.floor(torch.rand(b, device=dev) * 2), _drawn(b, p, dev)
        flip = torch.where(drawn, flip, torch.zeros_like(flip))
        then(_affine(b, dev, sx=1 - 2 * flip), flip > 0)
        quarter, drawn = torch.floor(torch.rand(b, device=dev) * 4), _drawn(b, p, dev)
        quarter = torch.where(drawn, quarter, torch.zeros_like(quarter))
        then(_affine(b, dev, theta=math.pi / 2 * quarter), quarter > 0)
        t = (torch.rand(b, 2, device=dev) * 2 - 1) * XINT_MAX
        drawn = _drawn(b, p, dev)
        t = torch.where(drawn[:, None], t, torch.zeros_like(t))
        tx, ty = torch.round(t[:, 0] * w), torch.round(t[:, 1] * h)
        then(_affine(b, dev, tx=-tx, ty=-ty), (tx != 0) | (ty != 0))

        # General geometric transformations.
        s, drawn = torch.exp2(torch.randn(b, device=dev) * SCALE_STD), _drawn(b, p, dev)
        s = torch.where(drawn, s, torch.ones_like(s))
        then(_affine(b, dev, sx=1 / s, sy=1 / s), drawn)
        p_rot = 1 - math.sqrt(min(max(1 - p, 0.0), 1.0))  # P(pre- or post-rotation) = p
        pre = (torch.rand(b, device=dev) * 2 - 1) * math.pi * ROTATE_MAX
        drawn = _drawn(b, p_rot, dev)
        then(_affine(b, dev, theta=torch.where(drawn, pre, torch.zeros_like(pre))), drawn)
        s, drawn = torch.exp2(torch.randn(b, device=dev) * ANISO_STD), _drawn(b, p, dev)
        s = torch.where(drawn, s, torch.ones_like(s))
        then(_affine(b, dev, sx=1 / s, sy=s), drawn)
        post = (torch.rand(b, device=dev) * 2 - 1) * math.pi * ROTATE_MAX
        drawn = _drawn(b, p_rot, dev)
        then(_affine(b, dev, theta=torch.where(drawn, post, torch.zeros_like(post))), drawn)
        t, drawn = torch.randn(b, 2, device=dev) * XFRAC_STD, _drawn(b, p, dev)
        t = torch.where(drawn[:, None], t, torch.zeros_like(t))
        then(_affine(b, dev, tx=-t[:, 0] * w, ty=-t[:, 1] * h), drawn)

        # Pixels from the centre -> affine_grid's [-1, 1] (align_corners=False: a pixel centre
        # i sits at (2i + 1) / side - 1), the same at any resolution: sample on a 2x grid.
        to_unit = torch.diag(torch.tensor([2 / w, 2 / h, 1.0], device=dev))
        from_unit = torch.diag(torch.tensor([w / 2, h / 2, 1.0], device=dev))
        theta = (to_unit @ G_inv @ from_unit)[:, :2, :].to(x.dtype)
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        grid = F.affine_grid(theta, [b, x.shape[1], 2 * h, 2 * w], align_corners=False)
        sampled = F.grid_sample(up, grid, mode="bilinear", padding_mode="reflection",
                                align_corners=False)  # fmt: skip
        return torch.where(moved[:, None, None, None], F.avg_pool2d(sampled, 2), x)

    def colours(self, x: Tensor, p: float) -> Tensor:
        b, c, h, w = x.shape
        dev = x.device
        C, changed = _eye(4, b, dev), torch.zeros(b, dtype=torch.bool, device=dev)
        brightness, drawn = torch.randn(b, device=dev) * BRIGHTNESS_STD, _drawn(b, p, dev)
        step = _eye(4, b, dev)
        step[:, :3, 3] = torch.where(drawn, brightness, torch.zeros_like(brightness))[:, None]
        C, changed = step @ C, changed | drawn
        contrast, drawn = torch.exp2(torch.randn(b, device=dev) * CONTRAST_STD), _drawn(b, p, dev)
        contrast = torch.where(drawn, contrast, torch.ones_like(contrast))
        step = _eye(4, b, dev)
        step[:, 0, 0], step[:, 1, 1], step[:, 2, 2] = contrast, contrast, contrast
        C, changed = step @ C, changed | drawn
        v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev) / math.sqrt(3)  # the grey axis
        vv = torch.outer(v, v)
        flip, drawn = torch.floor(torch.rand(b, device=dev) * 2), _drawn(b, p, dev)
        flip = torch.where(drawn, flip, torch.zeros_like(flip))
        C = (torch.eye(4, device=dev) - 2 * vv * flip[:, None, None]) @ C  # Householder
        changed = changed | (flip > 0)
        if c > 1:
            hue = (torch.rand(b, device=dev) * 2 - 1) * math.pi * HUE_MAX
            drawn = _drawn(b, p, dev)
            C = _rotate_about(v[:3], torch.where(drawn, hue, torch.zeros_like(hue))) @ C
            changed = changed | drawn
            sat = torch.exp2(torch.randn(b, device=dev) * SATURATION_STD)
            drawn = _drawn(b, p, dev)
            sat = torch.where(drawn, sat, torch.ones_like(sat))
            C = (vv + (torch.eye(4, device=dev) - vv) * sat[:, None, None]) @ C
            changed = changed | drawn
        C = C.to(x.dtype)
        flat = x.reshape(b, c, h * w)
        if c == 3:
            out = C[:, :3, :3] @ flat + C[:, :3, 3:]
        else:  # grey images: the mean of the three rows acting on equal channels
            rows = C[:, :3, :].mean(dim=1, keepdim=True)
            out = flat * rows[:, :, :3].sum(dim=2, keepdim=True) + rows[:, :, 3:]
        out = out.reshape(b, c, h, w)
        if x.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        return torch.where(changed[:, None, None, None], out, x)


def _rotate_about(axis: Tensor, theta: Tensor) -> Tensor:
    """4x4 rotations by theta (batch) about the unit 3-vector `axis` (Rodrigues)."""
    a = axis
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    K = torch.tensor(
        [[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]], device=theta.device
    )
    R = torch.eye(3, device=theta.device) + sin * K + (1 - cos) * (K @ K)
    m = _eye(4, len(theta), theta.device)
    m[:, :3, :3] = R
    return m


class AdaController:
    """p, steered so that D's sign on the reals, r_t, stays near `config.target`."""

    def __init__(self, config: AdaConfig, device, distributed: bool, p: float = 0.0):
        self.config, self.distributed, self.p = config, distributed, p
        self.sums = torch.zeros(2, device=device)  # sum of sign(D(x_real)), reals counted
        self.steps = 0
        self.r_t = float("nan")  # the last interval's, for the report

    def observe(self, signs: Tensor) -> None:
        """One D step's signs of D's verdicts on the reals (+1: judged real); every
        `interval` steps, p moves."""
        self.sums += torch.stack([signs.detach().float().sum(), signs.new_tensor(signs.numel())])
        self.steps += 1
        if self.steps % self.config.interval == 0:
            self.adjust()

    def adjust(self) -> None:
        sums = self.sums.clone()
        if self.distributed:
            dist.all_reduce(sums)
        signs, images = sums.tolist()  # note: a host sync, once every `interval` steps
        self.sums.zero_()
        if images == 0:
            return
        self.r_t = signs / images
        step = np.sign(self.r_t - self.config.target) * images / (self.config.kimg * 1000)
        self.p = float(min(max(self.p + step, 0.0), 1.0))

    def state_dict(self) -> dict:
        return {"p": self.p, "sums": self.sums.cpu(), "steps": self.steps, "r_t": self.r_t}

    def load_state_dict(self, state: dict) -> None:
        self.p, self.steps, self.r_t = float(state["p"]), int(state["steps"]), state["r_t"]
        self.sums = state["sums"].to(self.sums.device)
