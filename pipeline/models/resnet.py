"""ResNet G and D: the residual GAN architectures of Miyato et al. 2018 ("Spectral
Normalization for GANs", SNGAN; after Gulrajani et al. 2017's WGAN-GP ResNet), pre-activation
blocks as in SRResNet-style generators, with ACGAN's conditioning (Odena et al. 2017).

G: linear z -> 4x4 x C, up-blocks [norm, ReLU, upsample + conv3x3, norm, ReLU, conv3x3] plus
a shortcut (conv1x1 + upsample), channels halving down to ngf; then norm, ReLU, conv3x3, tanh.
D: an optimized first block [conv3x3, ReLU, conv3x3, avgpool] + [avgpool, conv1x1], then
down-blocks [norm, ReLU, conv3x3, norm, ReLU, conv3x3, avgpool] + [conv1x1, avgpool] doubling
from ndf down to 4x4; ReLU, global sum pool, linear to one logit. The feature norm is picked
by config (SNGAN itself uses none in D, with spectral norm on the weights), so one
architecture serves every loss. Initialization as SNGAN: Glorot uniform, gain sqrt(2) on the
residual convs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.conditional import Discriminator, Generator
from pipeline.models.config import ClassSpec, ModelConfig
from pipeline.models.dcgan import stages
from pipeline.models.layers import (
    UPSAMPLES,
    CondSequential,
    Project,
    call,
    linear_head,
    upsample_only,
)
from pipeline.models.norms import apply_weight_norm, make_norm


class UpBlock(nn.Module):
    takes_y = True  # its norms may be conditional

    def __init__(self, in_ch: int, out_ch: int, cfg: ModelConfig, cond: ClassSpec | None):
        super().__init__()
        self.norm1 = make_norm(cfg.norm_g, in_ch, conditional_on=cond)
        self.conv1 = UPSAMPLES[cfg.upsample](in_ch, out_ch, bias=True)
        self.norm2 = make_norm(cfg.norm_g, out_ch, conditional_on=cond)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        # conv1x1 before the upsampling: the same map (both are linear and per pixel), 4x cheaper
        self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), upsample_only(cfg.upsample))
        _glorot(self.conv1, math.sqrt(2))
        _glorot(self.conv2, math.sqrt(2))
        _glorot(self.shortcut[0], 1.0)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.relu(call(self.norm1, x, y)))
        h = self.conv2(F.relu(call(self.norm2, h, y)))
        return h + self.shortcut(x)


class DownBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, norm: str, first: bool = False):
        super().__init__()
        self.first = first  # the optimized block: on the image, no norm or ReLU before conv1
        self.norm1 = nn.Identity() if first else make_norm(norm, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.norm2 = make_norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1)
        _glorot(self.conv1, math.sqrt(2))
        _glorot(self.conv2, math.sqrt(2))
        _glorot(self.shortcut, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(self.norm1(x))
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        h = F.avg_pool2d(h, 2)
        if self.first:
            return h + self.shortcut(F.avg_pool2d(x, 2))
        return h + F.avg_pool2d(self.shortcut(x), 2)


class ResNetGenerator(Generator):
    def __init__(
        self, cfg: ModelConfig, image_size: int, channels: int, classes: ClassSpec | None = None
    ):
        super().__init__()
        n = stages(image_size)
        nz, cond = self.init_conditioning(cfg, classes)
        widths = [cfg.width_g * 2 ** (n - 1 - i) for i in range(n)]  # block outputs, to ngf
        blocks = [
            UpBlock(c_in, c_out, cfg, cond)
            for c_in, c_out in zip([widths[0], *widths[:-1]], widths, strict=True)
        ]
        self.main = CondSequential(
            Project(nz, widths[0], bias=True),
            *blocks,
            make_norm(cfg.norm_g, cfg.width_g, conditional_on=cond),
            nn.ReLU(),
            nn.Conv2d(cfg.width_g, channels, 3, 1, 1),
            nn.Tanh(),
        )
        _glorot(self.main[0].linear, 1.0)
        _glorot(self.main[-2], 1.0)
        apply_weight_norm(self, cfg.norm_g)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(self.join_labels(z, y), y)


class ResNetDiscriminator(Discriminator):
    def __init__(
        self, cfg: ModelConfig, image_size: int, channels: int, classes: ClassSpec | None = None
    ):
        super().__init__()
        n = stages(image_size)
        self.init_classes(cfg, classes)
        widths = [cfg.width_d * 2**i for i in range(n)]  # ndf, doubling, down to 4x4
        self.main = nn.Sequential(
            DownBlock(channels, widths[0], cfg.norm_d, first=True),
            *(
                DownBlock(c_in, c_out, cfg.norm_d)
                for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
            ),
        )
        self.init_heads(cfg, widths[-1], linear_head(widths[-1], 1))
        _glorot(self.adv, 1.0)
        if self.cls is not None:
            _glorot(self.cls, 1.0)
        apply_weight_norm(self, cfg.norm_d)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # y is unused: ACGAN's D predicts the class (a projection D would take it).
        h = F.relu(self.main(x)).sum(dim=(2, 3))  # global sum pool
        return self.adv(h).flatten(), self.cls(h) if self.cls is not None else None


def _glorot(module: nn.Module, gain: float) -> None:
    """Glorot-uniform weights and zero biases for every conv and linear layer in `module`."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
