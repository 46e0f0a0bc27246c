"""DCGAN: Radford, Metz & Chintala 2015, "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks", with ACGAN's conditioning (Odena et al. 2017).

G: z -> 4x4 (transposed conv, or linear "project and reshape"), stride-2 upsampling stages
halving the channels down to ngf, a last upsampling stage to the image and tanh; ReLU, and no
norm on the output layer. D: stride-2 4x4 convs with LeakyReLU(0.2), doubling from ndf, no
norm on the input layer, a final 4x4 conv to one logit. More stages for bigger images.

At the defaults (64 px, ngf = ndf = 64, transposed, batch norm) this is exactly
pytorch/examples' dcgan/main.py: `G.main` has the same layers, indices and state_dict keys as
its netG.main; `D.main` equals its netD.main[:11] and `D.adv` its final conv, netD.main[11]
(our D returns the logit; the reference ends in a sigmoid).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.conditional import Discriminator, Generator
from pipeline.models.config import ClassSpec, ModelConfig
from pipeline.models.layers import UPSAMPLES, CondSequential, Project, dcgan_init
from pipeline.models.norms import apply_weight_norm, has_shift, make_norm


def stages(image_size: int) -> int:
    """Stride-2 stages between 4x4 and the image: 3 at 32 px, 4 at 64, 5 at 128."""
    return image_size.bit_length() - 3


class DCGANGenerator(Generator):
    def __init__(
        self, cfg: ModelConfig, image_size: int, channels: int, classes: ClassSpec | None = None
    ):
        super().__init__()
        n = stages(image_size)
        nz, cond = self.init_conditioning(cfg, classes)
        bias = not has_shift(cfg.norm_g)
        up = UPSAMPLES[cfg.upsample]

        def block(layer: nn.Module, width: int) -> list[nn.Module]:
            return [layer, make_norm(cfg.norm_g, width, conditional_on=cond), nn.ReLU(True)]

        ngf = cfg.width_g * 2 ** (n - 1)
        if cfg.upsample == "transposed":
            first = nn.ConvTranspose2d(nz, ngf, 4, 1, 0, bias=bias)  # (nz, 1, 1) -> (ngf, 4, 4)
        else:
            first = Project(nz, ngf, bias=bias)
        layers = block(first, ngf)
        for _ in range(n - 1):
            layers += block(up(ngf, ngf // 2, bias), ngf // 2)
            ngf //= 2
        layers += [up(ngf, channels, bias), nn.Tanh()]  # no norm on the output layer
        self.main = CondSequential(*layers)
        dcgan_init(self)
        apply_weight_norm(self, cfg.norm_g)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(self.join_labels(z, y)[:, :, None, None], y)


class DCGANDiscriminator(Discriminator):
    def __init__(
        self, cfg: ModelConfig, image_size: int, channels: int, classes: ClassSpec | None = None
    ):
        super().__init__()
        n = stages(image_size)
        self.init_classes(cfg, classes)
        bias = not has_shift(cfg.norm_d)
        ndf = cfg.width_d
        # no norm on the input layer
        layers = [nn.Conv2d(channels, ndf, 4, 2, 1, bias=bias), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(n - 1):
            layers += [
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=bias),
                make_norm(cfg.norm_d, ndf * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            ndf *= 2
        self.main = nn.Sequential(*layers)  # -> (ndf, 4, 4)
        # shared: the paper's last conv, a linear map of the 4x4 features, to one logit
        self.init_heads(cfg, ndf * 16, nn.Conv2d(ndf, 1, 4, 1, 0, bias=bias))
        dcgan_init(self)
        apply_weight_norm(self, cfg.norm_d)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # y is unused: ACGAN's D predicts the class (a projection D would take it).
        h = self.main(x)
        return self.adv(h).flatten(), self.cls(h) if self.cls is not None else None
