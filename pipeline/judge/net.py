"""The judge's network: a small CNN that reads a dataset's labels off its images.

Four strided blocks (conv 3x3 stride 2, conv 3x3, each with batch norm and LeakyReLU) halve
the image four times, global average pooling makes the features independent of the image
size (32..128 px), then one linear head per softmax group (its class count of logits) and one
logit per binary attribute, laid out as the label tensor y is (`pipeline.training.labels`).

The datasets it learns from are small (the anime sample holds 502 training faces), hence the
light augmentation in training: a horizontal flip and a translation by a few pixels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Changes whenever the network, its input scaling or its augmentation changes: it is part of
# the cache key, so a judge cached by an older version is retrained, never misread.
ARCHITECTURE = "judge-cnn-4x2conv-gap-v1"
WIDTH = 32  # channels of the first block; each block doubles them
DROPOUT = 0.3


class JudgeNet(nn.Module):
    """uint8-derived images in [-1, 1] (N, C, H, W) -> (group logits, attribute logits)."""

    def __init__(self, channels: int, groups: tuple[int, ...], binary: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for block in range(4):
            c_out = WIDTH * 2**block
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(DROPOUT)
        self.groups = nn.ModuleList(nn.Linear(c_in, n) for n in groups)
        self.attrs = nn.Linear(c_in, binary) if binary else None

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        h = self.dropout(self.features(x).mean(dim=(2, 3)))
        return [head(h) for head in self.groups], (self.attrs(h) if self.attrs else None)


def build(key: dict) -> JudgeNet:
    """The network a cache key describes (untrained)."""
    return JudgeNet(
        key["channels"], tuple(len(names) for names in key["class_names"]), len(key["attrs"])
    )


def to_input(images: torch.Tensor, device) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1] on `device`."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1


def augment(x: torch.Tensor, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """A random horizontal flip (when `flip`) and a random integer translation of up to
    1/16 of the side, per image, the borders repeated. Integer shifts sampled at pixel centres
    copy pixels exactly: no blur from resampling."""
    n, _, h, w = x.shape
    if flip:
        mirrored = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mirrored.to(x.device)[:, None, None, None], x.flip(3), x)
    reach = max(1, h // 16)
    shifts = torch.randint(-reach, reach + 1, (n, 2), generator=generator).to(x.device)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = shifts[:, 0] * 2 / w  # normalised coordinates span 2 over the side
    theta[:, 1, 2] = shifts[:, 1] * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)


def logits_to_labels(group_logits: list[torch.Tensor], attr_logits) -> torch.Tensor:
    """int64 (N, groups + attrs): the argmax of each group, then 1 where an attribute's
    logit is positive."""
    parts = [logits.argmax(dim=1, keepdim=True) for logits in group_logits]
    if attr_logits is not None:
        parts.append((attr_logits > 0).long())
    return torch.cat(parts, dim=1)


def loss(group_logits: list[torch.Tensor], attr_logits, y: torch.Tensor) -> torch.Tensor:
    """Mean over tasks (each group, each attribute) of their cross-entropy; a little label
    smoothing on the groups, as a few hundred images are easily memorised."""
    terms = [
        F.cross_entropy(logits, y[:, g], label_smoothing=0.1)
        for g, logits in enumerate(group_logits)
    ]
    if attr_logits is not None:
        target = y[:, len(group_logits) :].float()
        terms += list(
            F.binary_cross_entropy_with_logits(attr_logits, target, reduction="none").mean(0)
        )
    return torch.stack(terms).mean()
