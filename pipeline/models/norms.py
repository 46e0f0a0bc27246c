"""The normalization factory: one name -> the normalization of a network's 2-d features.

    batch        BatchNorm2d (Ioffe & Szegedy 2015), the DCGAN default
    sync-batch   BatchNorm2d here; under DDP the runner converts it (`Norm.under_ddp`) with
                 nn.SyncBatchNorm.convert_sync_batchnorm so that statistics span all ranks.
                 SyncBatchNorm runs on CUDA (and XPU/HPU) only: with gloo on CPU it raises,
                 so it is converted on GPUs only.
    instance     InstanceNorm2d with affine gain and shift (Ulyanov et al. 2016)
    layer        GroupNorm(1, C): LayerNorm over C, H, W (Ba et al. 2016), the WGAN-GP critic's
    group        GroupNorm with the largest group count <= 32 dividing C (Wu & He 2018)
    spectral     not a feature norm: spectral normalization of every conv and linear weight
                 of the network (Miyato et al. 2018), applied by `apply_weight_norm`; the
                 features get none
    none         Identity

Conditional batch norm (de Vries et al. 2017; Miyato & Koyama 2018 for cGANs): batch norm
without its own affine, then a per-class gain and shift from an embedding of y. Only batch
and sync-batch mix samples of a batch (the reason a WGAN-GP critic must not use them).

One `Norm` entry per name says all of it (makes it, mixes the batch, syncs under DDP, acts
on weights): adding a normalization is one function and one line in NORMS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pipeline.config import ConfigError
from pipeline.models.config import ClassSpec
from pipeline.models.layers import LabelEmbedding


def _batch(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels)


def _instance(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True)


def _layer(channels: int) -> nn.Module:
    return nn.GroupNorm(1, channels)


def _group(channels: int) -> nn.Module:
    groups = max(g for g in range(1, min(32, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def _identity(channels: int) -> nn.Module:
    return nn.Identity()


def _spectral(net: nn.Module) -> None:
    # One power iteration per forward in training mode (torch's parametrization).
    for m in list(net.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            spectral_norm(m)


@dataclass(frozen=True)
class Norm:
    """Everything the models, the runner and the driver ask of a normalization."""

    name: str
    make: Callable[[int], nn.Module]  # the norm of `channels` 2-d feature maps
    # Statistics across the samples of a batch: conditional batch norm builds on it, and a
    # WGAN-GP critic must not have it (the per-sample gradient penalty would be wrong).
    mixes_batch: bool = False
    # A learned shift, which makes the bias of the layer before it redundant (DCGAN's convs
    # have bias=False with batch norm).
    shift: bool = True
    # Statistics span all ranks under DDP (SyncBatchNorm): needs GPUs, torch has no CPU kernel.
    syncs: bool = False
    on_weights: Callable[[nn.Module], None] | None = None  # acts on the weights instead

    def under_ddp(self, net: nn.Module, cuda: bool) -> nn.Module:
        """`net` as it trains under DDP: batch norms synchronised where this norm syncs (on
        GPUs only: the driver refuses a CPU run of several workers with it)."""
        if self.syncs and cuda:
            return nn.SyncBatchNorm.convert_sync_batchnorm(net)
        return net


NORMS: dict[str, Norm] = {
    norm.name: norm
    for norm in (
        Norm("batch", _batch, mixes_batch=True),
        Norm("sync-batch", _batch, mixes_batch=True, syncs=True),
        Norm("instance", _instance),
        Norm("layer", _layer),
        Norm("group", _group),
        Norm("spectral", _identity, shift=False, on_weights=_spectral),
        Norm("none", _identity, shift=False),
    )
}


def get_norm(name: str) -> Norm:
    if name not in NORMS:
        raise ConfigError(f"norm {name!r} is not known; choose one of: {', '.join(NORMS)}")
    return NORMS[name]


def has_shift(name: str) -> bool:
    """Whether norm `name` adds a learned shift (see `Norm.shift`)."""
    return get_norm(name).shift


def make_norm(name: str, channels: int, *, conditional_on: ClassSpec | None = None) -> nn.Module:
    """The normalization `name` of `channels` 2-d feature maps; conditional batch norm (taking
    forward(x, y)) when `conditional_on` names classes and `name` is batch or sync-batch."""
    norm = get_norm(name)
    if conditional_on is not None and conditional_on.logits:
        if not norm.mixes_batch:
            raise ConfigError(
                f"conditional normalization is batch or sync-batch only, not {name!r}"
            )
        return ConditionalBatchNorm2d(channels, conditional_on)
    return norm.make(channels)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d without affine, then gain (1 + gamma(y)) and shift beta(y) per sample."""

    takes_y = True

    def __init__(self, channels: int, classes: ClassSpec):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = LabelEmbedding(classes, channels)
        self.shift = LabelEmbedding(classes, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Gains start at 1 + N(0, 0.02) as DCGAN's batch-norm gains do (so classes already
        # differ a little), shifts at 0.
        for p in self.gain.parameters():
            nn.init.normal_(p, 0.0, 0.02)
        for p in self.shift.parameters():
            nn.init.zeros_(p)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y is None:
            raise ValueError("conditional batch norm needs the labels y")
        gain = 1 + self.gain(y)
        shift = self.shift(y)
        return self.bn(x) * gain[:, :, None, None] + shift[:, :, None, None]


def apply_weight_norm(net: nn.Module, name: str) -> nn.Module:
    """The norm's action on the weights of `net` (spectral: every conv, transposed conv and
    linear weight spectral-normalized); other norms leave the weights alone."""
    norm = get_norm(name)
    if norm.on_weights is not None:
        norm.on_weights(net)
    return net
