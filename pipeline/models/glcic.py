"""GLCIC: Iizuka, Simo-Serra & Ishikawa 2017, "Globally and Locally Consistent Image
Completion": the completion network C and the global + local discriminator.

    C = CompletionNetwork(cfg, image_size=64, channels=3)
    out = C(torch.cat([x_filled, mask], 1))        # (B, 3, 64, 64) in [-1, 1]
    D = GlobalLocalDiscriminator(cfg, 64, 3, local_size=32)
    logit = D(completed, local_patch)              # (B,)

C is the paper's 17 layers: a 5x5 conv, two stride-2 stages down to H/4, dilated 3x3 convs
at H/4 (dilation 2, 4, 8, 16; capped at half the bottleneck's side, so 2/4/8/8 at 64 px),
two transposed-conv upsampling stages back to H, and an output conv. Every layer but the last
is followed by a norm (`model.norm_g`) and ReLU; the last by tanh (images in [-1, 1]; the
paper's sigmoid for [0, 1]). Widths scale with `model.width_g` (the paper's 64).

D: the global branch sees the whole image, the local branch a patch centred on the hole;
each is 5x5 stride-2 convs down to 4x4 (6 for 256 px, 5 for the 128 px patch; 4 and 3 at
64 px) then a linear layer to 1024 features (16 x `model.width_d`); the two feature vectors
are concatenated and one linear layer gives the logit. The flattening is
`torch.flatten(x, 1)` with the feature count checked when the model is built: a missing
reshape before the dense layer is one of the reimplementations' documented bugs.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.models.config import ModelConfig
from pipeline.models.norms import apply_weight_norm, has_shift, make_norm

SIZES = (64, 128, 256)  # the scaled recipes of the paper (notes/glcic.md)
DILATIONS = (2, 4, 8, 16)


def check_size(image_size: int, local_size: int) -> None:
    """Raise ConfigError when the networks cannot be built for these sizes."""
    if image_size not in SIZES:
        raise ConfigError(
            f"GLCIC needs {', '.join(map(str, SIZES))} px images (its C downsamples to H/4 and "
            f"its D to 4x4); this dataset has {image_size} px: ingest it at one of those sizes"
        )
    if local_size < 8 or local_size > image_size or local_size & (local_size - 1):
        raise ConfigError(
            f"the local discriminator's patch of {local_size} px must be a power of two "
            f"between 8 and the image's {image_size} px (completion.local)"
        )


def stride2_stages(side: int) -> int:
    """Stride-2 convs from `side` down to 4x4: 4 at 64 px, 5 at 128, 6 at 256."""
    return side.bit_length() - 3


class CompletionNetwork(nn.Module):
    """C(x with the hole filled, mask) -> the image C proposes (composited by the caller)."""

    def __init__(self, cfg: ModelConfig, image_size: int, channels: int):
        super().__init__()
        w = cfg.width_g
        bias = not has_shift(cfg.norm_g)
        bottleneck = image_size // 4
        dilations = [min(d, bottleneck // 2) for d in DILATIONS]

        def conv(c_in, c_out, kernel, stride=1, dilation=1):
            padding = dilation * (kernel - 1) // 2
            return [
                nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, bias=bias),
                make_norm(cfg.norm_g, c_out),
                nn.ReLU(True),
            ]

        def up(c_in, c_out):
            return [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias),
                make_norm(cfg.norm_g, c_out),
                nn.ReLU(True),
            ]

        layers = conv(channels + 1, w, 5)  # 1: 5x5
        layers += conv(w, 2 * w, 3, 2) + conv(2 * w, 2 * w, 3)  # 2-3: to H/2
        layers += conv(2 * w, 4 * w, 3, 2) + conv(4 * w, 4 * w, 3) + conv(4 * w, 4 * w, 3)  # 4-6
        for d in dilations:  # 7-10: dilated, at H/4
            layers += conv(4 * w, 4 * w, 3, dilation=d)
        layers += conv(4 * w, 4 * w, 3) + conv(4 * w, 4 * w, 3)  # 11-12
        layers += up(4 * w, 2 * w) + conv(2 * w, 2 * w, 3)  # 13-14: to H/2
        layers += up(2 * w, w) + conv(w, max(1, w // 2), 3)  # 15-16: to H
        layers += [nn.Conv2d(max(1, w // 2), channels, 3, 1, 1), nn.Tanh()]  # 17: no norm
        self.main = nn.Sequential(*layers)
        self.dilations = tuple(dilations)
        apply_weight_norm(self, cfg.norm_g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class ConvBranch(nn.Module):
    """5x5 stride-2 convs from `side` down to 4x4, doubling from `width` (capped at 8x), then
    a linear layer to `features`."""

    def __init__(self, cfg: ModelConfig, side: int, channels: int, features: int):
        super().__init__()
        w, bias = cfg.width_d, not has_shift(cfg.norm_d)
        layers, c_in = [], channels
        for i in range(stride2_stages(side)):
            c_out = w * min(2**i, 8)
            layers += [
                nn.Conv2d(c_in, c_out, 5, 2, 2, bias=bias),
                make_norm(cfg.norm_d, c_out),
                nn.ReLU(True),
            ]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        self.flat = c_in * 4 * 4
        with torch.no_grad():  # the feature count the dense layer expects, checked once
            probe = self.convs(torch.zeros(2, channels, side, side))
        if torch.flatten(probe, 1).shape[1] != self.flat:
            raise ConfigError(f"D branch at {side} px ends in {tuple(probe.shape[1:])}, not 4x4")
        self.fc = nn.Linear(self.flat, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(torch.flatten(self.convs(x), 1)))


class GlobalLocalDiscriminator(nn.Module):
    """D(whole image, local patch) -> one logit from the two branches' features."""

    def __init__(self, cfg: ModelConfig, image_size: int, channels: int, local_size: int):
        super().__init__()
        check_size(image_size, local_size)
        features = 16 * cfg.width_d  # the paper's 1024 at width 64
        self.global_d = ConvBranch(cfg, image_size, channels, features)
        self.local_d = ConvBranch(cfg, local_size, channels, features)
        self.head = nn.Linear(2 * features, 1)
        apply_weight_norm(self, cfg.norm_d)

    def forward(self, x: torch.Tensor, patch: torch.Tensor, parts: bool = False):
        """The logit (B,); with `parts`, also each branch's share of it (the head is linear:
        logit = global part + local part + bias), for per-branch accuracies."""
        g, loc = self.global_d(x), self.local_d(patch)
        logit = self.head(torch.cat([g, loc], 1)).squeeze(1)
        if not parts:
            return logit
        weight, n = self.head.weight[0].detach(), g.shape[1]
        return logit, g.detach() @ weight[:n], loc.detach() @ weight[n:]


def build_completion(cfg: ModelConfig, image_size: int, channels: int) -> CompletionNetwork:
    check_size(image_size, image_size // 2)
    return CompletionNetwork(cfg, image_size, channels)
