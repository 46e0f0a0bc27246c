"""What a model is built from: the architecture options and the class spec it conditions on.

Plain dataclasses with no torch import, so the command line can build, check and print a
config without loading torch. The builders live in `pipeline.models` (DCGAN, Radford et al.
2015; ResNet, Miyato et al. 2018; ACGAN conditioning, Odena et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "dcgan"  # registry ARCHS: dcgan, resnet, srresnet
    z_dim: int = 100  # nz
    # ngf: channels of G's last hidden layer; the 4x4 layer has ngf * 2**(stages - 1)
    # (pytorch/examples at 64 px: 64 -> 512..64; the paper: 128 -> 1024..128)
    width_g: int = 64
    width_d: int = 64  # ndf: channels of D's first layer, doubled per stride-2 stage
    upsample: str = "transposed"  # registry UPSAMPLES: transposed, nearest-conv, bilinear-conv
    norm_g: str = "batch"  # registry NORMS: batch, sync-batch, instance, layer, group, ...
    norm_d: str = "batch"  # ... spectral, none
    conditioning: str = "embedding"  # embedding | onehot: how a conditional G joins y to z
    # shared | decoupled: ACGAN D's adversarial and class outputs as one linear layer each on
    # the shared features, or each with its own deeper MLP head
    heads: str = "shared"
    cond_norm: bool = True  # conditional batch norm in a conditional G (norm_g batch kinds)


@dataclass(frozen=True)
class ClassSpec:
    """What a conditional model conditions on: softmax groups and binary attributes.

    The labels `y` are int64 of shape (B, len(groups) + binary): the class index per group,
    then 0/1 per attribute. The class head of D has `logits` outputs laid out the same way:
    one block of `groups[i]` logits per group, then one logit per attribute.
    """

    groups: tuple[int, ...] = ()  # classes per softmax group: (12, 10) anime hair + eyes
    binary: int = 0  # binary attributes, e.g. 3 for CelebA [Male, Smiling, Blond_Hair]

    def __post_init__(self) -> None:
        if any(n < 2 for n in self.groups) or self.binary < 0:
            raise ConfigError(
                f"class spec groups={list(self.groups)} binary={self.binary}: each group "
                "needs at least 2 classes and binary cannot be negative"
            )

    @property
    def logits(self) -> int:
        """Outputs of D's class head: all groups' classes plus one per attribute."""
        return sum(self.groups) + self.binary

    @property
    def columns(self) -> int:
        """Columns of `y`: one per group, one per attribute."""
        return len(self.groups) + self.binary
