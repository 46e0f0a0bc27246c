"""SRResNet-style G and D: the residual networks the anime-face ACGAN write-ups took from the
MakeGirlsMoe project (Jin et al. 2017, "Towards the Automatic Anime Characters Creation with
Generative Adversarial Networks", arXiv:1708.05509), which borrowed G from SRResNet (Ledig et
al. 2017, "Photo-Realistic Single Image Super-Resolution Using a GAN", arXiv:1609.04802).
Details checked against public reimplementations: bhpfelix/PyTorch-Face-Generator-SRResNet-
based-ACGAN-DRAGAN (models.py) and CirQ/AnimeNet; read, not copied.

G: [z, label code] -> dense to 16x16 x C (C = width_g, the paper's 64) -> norm, ReLU; 16
residual blocks [conv3x3, norm, ReLU, conv3x3, norm] + identity; norm, ReLU, then the long skip
from before the blocks; sub-pixel upsampling blocks [conv3x3 to 4C, pixel shuffle x2, norm,
ReLU] until the image size (2 at 64 px, 3 at 128, 1 at 32); conv9x9 to the channels, tanh.
D: conv4x4 stride 2 to D = width_d (the paper's 32), leaky ReLU; then per stage two residual
blocks [conv3x3, LReLU, conv3x3] + identity, LReLU, and a conv4x4 stride 2 doubling the
width, LReLU, down to 2x2 (5 stages at 128 px, 4 at 64, 3 at 32); the 2x2 features flattened
into the adversarial and class heads (the ACGAN family's shared or decoupled heads). The
feature norm of D is the config's (the paper has none); its conv stages use no norm layers
but take spectral norm when norm_d=spectral.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.conditional import Discriminator, Generator
from pipeline.models.config import ClassSpec, ModelConfig
from pipeline.models.layers import CondSequential, call, linear_head
from pipeline.models.norms import apply_weight_norm, make_norm

RES_BLOCKS = 16  # G's residual blocks (SRResNet's, and the paper's)
START = 16  # G's first feature map side


class ResidualBlock(nn.Module):
    """G's block: conv3x3, norm, ReLU, conv3x3, norm, plus the identity."""

    takes_y = True  # its norms may be conditional (ACGAN's class-conditional batch norm)

    def __init__(self, channels: int, norm: str, cond: ClassSpec | None):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.norm1 = make_norm(norm, channels, conditional_on=cond)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.norm2 = make_norm(norm, channels, conditional_on=cond)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(call(self.norm1, self.conv1(x), y))
        return x + call(self.norm2, self.conv2(h), y)


class SubPixelUp(nn.Module):
    """x2 by sub-pixel convolution: conv3x3 to 4C, pixel shuffle (C at twice the side), norm,
    ReLU."""

    takes_y = True

    def __init__(self, channels: int, norm: str, cond: ClassSpec | None):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4 * channels, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(2)
        self.norm = make_norm(norm, channels, conditional_on=cond)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return F.relu(call(self.norm, self.shuffle(self.conv(x)), y))


class SRResNetGenerator(Generator):
    def __init__(
        self, cfg: ModelConfig, image_size: int, channels: int, classes: ClassSpec | None = None
    ):
        super().__init__()
        nz, cond = self.init_conditioning(cfg, classes)
        c = cfg.width_g
        self.channels = c
        self.dense = nn.Linear(nz, c * START * START)
        self.norm_in = make_norm(cfg.norm_g, c, conditional_on=cond)
        self.blocks = CondSequential(
            *(ResidualBlock(c, cfg.norm_g, cond) for _ in range(RES_BLOCKS))
        )
        self.norm_out = make_norm(cfg.norm_g, c, conditional_on=cond)
        ups = (image_size // START).bit_length() - 1  # 1 at 32 px, 2 at 64, 3 at 128
        self.up = CondSequential(*(SubPixelUp(c, cfg.norm_g, cond) for _ in range(ups)))
        self.to_image = nn.Conv2d(c, channels, 9, 1, 4)
        apply_weight_norm(self, cfg.norm_g)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.dense(self.join_labels(z, y)).view(-1, self.channels, START, START)
        h = F.relu(call(self.norm_in, h, y))
        h = h + F.relu(call(self.norm_out, self.blocks(h, y), y))  # the long skip
        return torch.tanh(self.to_image(self.up(h, y)))


class DResidualBlock(nn.Module):
    """D's block: conv3x3, LReLU, conv3x3, plus the identity, LReLU."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.norm1 = make_norm(norm, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.norm2 = make_norm(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.norm1(self.conv1(x)), 0.2)
        return F.leaky_relu(x + self.norm2(self.conv2(h)), 0.2)


class SRResNetDiscriminator(Discriminator):
    def __init__(
        self, cfg: ModelConfig, image_size: int, channels: int, classes: ClassSpec | None = None
    ):
        super().__init__()
        self.init_classes(cfg, classes)
        stages = image_size.bit_length() - 3  # stride-2 convs after the first, down to 2x2
        widths = [cfg.width_d * 2**i for i in range(stages + 1)]
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                DResidualBlock(c_in, cfg.norm_d),
                DResidualBlock(c_in, cfg.norm_d),
                nn.Conv2d(c_in, c_out, 4, 2, 1),
                nn.LeakyReLU(0.2),
            ]
        self.main = nn.Sequential(*layers)
        features = widths[-1] * 2 * 2
        self.init_heads(cfg, features, linear_head(features, 1))
        apply_weight_norm(self, cfg.norm_d)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # y is unused: ACGAN's D predicts the class.
        h = self.main(x).flatten(1)
        return self.adv(h).flatten(), self.cls(h) if self.cls is not None else None
