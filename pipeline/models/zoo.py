"""The architecture registry and the model builders used by the training loop.

    G = build_generator(cfg, image_size=64, channels=3, classes=ClassSpec(groups=(10,)))
    D = build_discriminator(cfg, 64, 3, classes)
    images = G(z, y)                      # (B, 3, 64, 64) in [-1, 1]
    adv_logits, class_logits = D(images)  # (B,), (B, classes.logits) or None

Adding an architecture is one file with a G and a D class taking (cfg, image_size, channels,
classes), plus one line in ARCHS.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from pipeline.config import ConfigError
from pipeline.models import dcgan, resnet, srresnet
from pipeline.models.config import ClassSpec, ModelConfig
from pipeline.models.layers import UPSAMPLES
from pipeline.models.norms import NORMS


class Arch(NamedTuple):
    generator: type[nn.Module]
    discriminator: type[nn.Module]


ARCHS: dict[str, Arch] = {
    "dcgan": Arch(dcgan.DCGANGenerator, dcgan.DCGANDiscriminator),
    "resnet": Arch(resnet.ResNetGenerator, resnet.ResNetDiscriminator),
    "srresnet": Arch(srresnet.SRResNetGenerator, srresnet.SRResNetDiscriminator),
}
SIZES = (32, 64, 128)  # image sizes every architecture supports
CONDITIONINGS = ("embedding", "onehot")
HEADS = ("shared", "decoupled")


def build_generator(
    cfg: ModelConfig, image_size: int, channels: int, classes: ClassSpec | None = None
) -> nn.Module:
    """G(z, y=None) -> images (B, channels, image_size, image_size) in [-1, 1]."""
    _check_names(cfg, image_size)
    return ARCHS[cfg.arch].generator(cfg, image_size, channels, classes)


def build_discriminator(
    cfg: ModelConfig, image_size: int, channels: int, classes: ClassSpec | None = None
) -> nn.Module:
    """D(x, y=None) -> (adv_logits (B,), class_logits (B, classes.logits) or None)."""
    _check_names(cfg, image_size)
    return ARCHS[cfg.arch].discriminator(cfg, image_size, channels, classes)


def check_config(cfg: ModelConfig, loss: str, image_size: int) -> None:
    """Raise ConfigError with the reason if `cfg` cannot be built or is wrong for `loss`."""
    from pipeline.losses import get_loss  # losses sit beside the models, not below them

    _check_names(cfg, image_size)
    if get_loss(loss).gradient_penalty and NORMS[cfg.norm_d].mixes_batch:
        raise ConfigError(
            f"norm_d={cfg.norm_d!r} is not allowed with loss {loss!r}: BatchNorm in a WGAN-GP "
            "critic makes the gradient penalty per-sample wrong; use layer, group, spectral "
            "or none"
        )


def _check_names(cfg: ModelConfig, image_size: int) -> None:
    _choose("arch", cfg.arch, ARCHS)
    _choose("norm_g", cfg.norm_g, NORMS)
    _choose("norm_d", cfg.norm_d, NORMS)
    _choose("upsample", cfg.upsample, UPSAMPLES)
    _choose("conditioning", cfg.conditioning, CONDITIONINGS)
    _choose("heads", cfg.heads, HEADS)
    if image_size not in SIZES:
        raise ConfigError(
            f"image size {image_size} is not supported by {cfg.arch}; "
            f"choose one of: {', '.join(map(str, SIZES))}"
        )
    for key in ("z_dim", "width_g", "width_d"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be a positive integer, got {getattr(cfg, key)}")


def _choose(key: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")
