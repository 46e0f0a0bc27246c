"""Building blocks shared by the architectures: upsampling stages, the ways a conditional G
joins the class to z, ACGAN's D heads, and weight initialization.

- Upsampling: transposed convolutions (DCGAN, Radford et al. 2015) or upsample-then-convolve
  (Odena, Dumoulin & Olah 2016, "Deconvolution and Checkerboard Artifacts"), the fix for the
  checkerboard patterns that stride-2 transposed convolutions leave.
- Conditioning and heads: ACGAN (Odena, Olah & Shlens 2017): G gets the class with z, D
  predicts it with an auxiliary classifier on its features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.config import ClassSpec

CLASS_EMBED_DIM = 128  # width of a class embedding joined to z (conditioning "embedding")
HEAD_HIDDEN = 512  # hidden width of the decoupled ACGAN heads


# Upsampling: each builder returns a stage that doubles H and W and maps in_ch -> out_ch.


def transposed(in_ch: int, out_ch: int, bias: bool = False) -> nn.Module:
    return nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=bias)


def nearest_conv(in_ch: int, out_ch: int, bias: bool = False) -> nn.Module:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=bias)
    )


def bilinear_conv(in_ch: int, out_ch: int, bias: bool = False) -> nn.Module:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=bias),
    )


UPSAMPLES = {"transposed": transposed, "nearest-conv": nearest_conv, "bilinear-conv": bilinear_conv}


def upsample_only(name: str) -> nn.Module:
    """The parameter-free x2 upsampling that goes with `name` (for residual shortcuts)."""
    if name == "bilinear-conv":
        return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    return nn.Upsample(scale_factor=2, mode="nearest")


class Project(nn.Module):
    """z -> (B, C, 4, 4) by a linear layer: the paper's "project and reshape"."""

    def __init__(self, in_features: int, channels: int, bias: bool = False):
        super().__init__()
        self.channels = channels
        self.linear = nn.Linear(in_features, channels * 16, bias=bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z.flatten(1)).view(-1, self.channels, 4, 4)


class CondSequential(nn.Sequential):
    """nn.Sequential that also hands the labels y to the layers marked `takes_y`
    (conditional batch norm, residual blocks holding one)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, y) if getattr(layer, "takes_y", False) else layer(x)
        return x


def call(layer: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """layer(x, y) for a label-taking layer, else layer(x)."""
    return layer(x, y) if getattr(layer, "takes_y", False) else layer(x)


# Conditioning of G on y.


class LabelEmbedding(nn.Module):
    """y -> (B, dim): one embedding table per softmax group, summed, plus a linear map of the
    0/1 attribute vector (one learned vector per attribute, added when it is on)."""

    def __init__(self, classes: ClassSpec, dim: int):
        super().__init__()
        self.classes = classes
        self.tables = nn.ModuleList(nn.Embedding(n, dim) for n in classes.groups)
        # A parameter, not nn.Linear, so weight inits and spectral norm treat it like the
        # embedding tables it sits beside.
        self.attrs = nn.Parameter(torch.randn(classes.binary, dim)) if classes.binary else None

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        out = 0
        for i, table in enumerate(self.tables):
            out = out + table(y[:, i])
        if self.attrs is not None:
            bits = y[:, len(self.tables) :].to(self.attrs.dtype)
            out = out + bits @ self.attrs
        return out


def one_hot(y: torch.Tensor, classes: ClassSpec) -> torch.Tensor:
    """y -> (B, classes.logits) float: a one-hot block per group, then the 0/1 attributes."""
    parts = [F.one_hot(y[:, i], n) for i, n in enumerate(classes.groups)]
    if classes.binary:
        parts.append(y[:, len(classes.groups) :])
    return torch.cat(parts, 1).float()


class LabelInput(nn.Module):
    """Joins the class to z by concatenation: [z, embedding(y)] or [z, one_hot(y)]."""

    def __init__(self, classes: ClassSpec, conditioning: str):
        super().__init__()
        self.classes = classes
        if conditioning == "embedding":
            self.embed = LabelEmbedding(classes, CLASS_EMBED_DIM)
            self.dim = CLASS_EMBED_DIM
        else:  # "onehot", the DCGAN / ACGAN papers' way
            self.embed = None
            self.dim = classes.logits

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        code = self.embed(y) if self.embed is not None else one_hot(y, self.classes)
        return torch.cat([z, code.to(z.dtype)], 1)


# ACGAN heads of D.


def linear_head(features: int, out: int, bias: bool = True) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(features, out, bias=bias))


def mlp_head(features: int, out: int) -> nn.Module:
    """A head of its own ("decoupled"): Linear -> LeakyReLU(0.2) -> Linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, HEAD_HIDDEN),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Linear(HEAD_HIDDEN, out),
    )


# Weight initialization.


def dcgan_init(module: nn.Module) -> None:
    """Radford et al. 2015: weights from N(0, 0.02), as pytorch/examples' weights_init (conv
    weights N(0, 0.02); norm gains N(1, 0.02), shifts 0); linear layers likewise."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
