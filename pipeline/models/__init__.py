"""Generators, discriminators, ACGAN heads and the normalization factory, picked by name.

Architectures: DCGAN (Radford et al. 2015) and ResNet (Miyato et al. 2018), conditional in the
ACGAN way (Odena et al. 2017). Registries: ARCHS (pipeline.models.zoo), NORMS
(pipeline.models.norms), UPSAMPLES (pipeline.models.layers). Importing this package, or
pipeline.models.config, does not import torch: the names below load it on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pipeline.models.config import ClassSpec, ModelConfig

if TYPE_CHECKING:
    from pipeline.models.layers import UPSAMPLES
    from pipeline.models.norms import NORMS, make_norm
    from pipeline.models.zoo import (
        ARCHS,
        SIZES,
        build_discriminator,
        build_generator,
        check_config,
    )

_LAZY = {
    "ARCHS": "pipeline.models.zoo",
    "SIZES": "pipeline.models.zoo",
    "build_generator": "pipeline.models.zoo",
    "build_discriminator": "pipeline.models.zoo",
    "check_config": "pipeline.models.zoo",
    "NORMS": "pipeline.models.norms",
    "make_norm": "pipeline.models.norms",
    "UPSAMPLES": "pipeline.models.layers",
}

__all__ = [
    "ARCHS",
    "NORMS",
    "SIZES",
    "UPSAMPLES",
    "ClassSpec",
    "ModelConfig",
    "build_discriminator",
    "build_generator",
    "check_config",
    "make_norm",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline.models' has no attribute {name!r}")
