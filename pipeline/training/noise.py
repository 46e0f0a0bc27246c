"""What G is fed: the latent z (normal or uniform, as the config says) and, for conditional
models, labels y drawn uniformly over every group's classes and every attribute."""

from __future__ import annotations

import torch

from pipeline.models.config import ClassSpec
from pipeline.training.config import TrainConfig


def sample_z(config: TrainConfig, n: int, device, generator: torch.Generator | None = None):
    z_dim = config.model.z_dim
    if config.z_dist == "uniform":
        return (torch.rand(n, z_dim, generator=generator) * 2 - 1).to(device)
    return (torch.randn(n, z_dim, generator=generator) * config.z_std).to(device)


def random_labels(
    classes: ClassSpec | None, n: int, device, generator: torch.Generator | None = None
) -> torch.Tensor | None:
    """y (n, groups + attributes): a uniform class per group, a fair coin per attribute."""
    if classes is None:
        return None
    parts = [torch.randint(0, k, (n, 1), generator=generator) for k in classes.groups]
    if classes.binary:
        parts.append(torch.randint(0, 2, (n, classes.binary), generator=generator))
    return torch.cat(parts, dim=1).to(device)
