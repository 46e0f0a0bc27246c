"""A deterministic random state dict for the FID Inception-v3 network.

Both tests/fid_reference/make_reference.py (which runs the original torchvision / pytorch-fid
code) and tests/test_inception_reference.py (which runs ours) build the same weights from the
same list of (key, shape) pairs, so the reference features need no 100 MB weights file. Each
tensor comes from numpy's legacy ``RandomState`` seeded with the CRC-32 of its key: that stream
is frozen across numpy versions, and the key order does not matter. The scales keep the
activations of a 90-layer network in a sane range (He-scaled convolutions, batch-norm
statistics near identity), so a port's mistakes show instead of vanishing or overflowing.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch


def random_tensor(key: str, shape: Sequence[int]) -> np.ndarray:
    """The float32 array for one state-dict entry, chosen by the kind of entry its key names."""
    rng = np.random.RandomState(zlib.crc32(key.encode()))
    shape = tuple(shape)
    if key.endswith("fc.weight"):
        array = 0.01 * rng.standard_normal(shape)
    elif key.endswith("fc.bias"):
        array = np.zeros(shape)
    elif key.endswith("conv.weight") and len(shape) == 4:
        fan_in = int(np.prod(shape[1:]))
        array = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    elif key.endswith("bn.weight"):
        array = rng.uniform(0.8, 1.2, shape)
    elif key.endswith("bn.bias") or key.endswith("bn.running_mean"):
        array = 0.1 * rng.standard_normal(shape)
    elif key.endswith("bn.running_var"):
        array = rng.uniform(0.5, 1.5, shape)
    else:
        raise ValueError(f"no rule for state-dict key {key!r} with shape {shape}")
    return array.astype(np.float32)


def random_state_dict(spec: Iterable[tuple[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
    """The state dict for ``spec``, a list of (key, shape) pairs in torchvision Inception3 names
    (those of pytorch-fid's pt_inception-2015-12-05-6726825d.pth)."""
    return {key: torch.from_numpy(random_tensor(key, shape)) for key, shape in spec}


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor | np.ndarray]) -> str:
    """SHA-256 over the sorted keys, each key's UTF-8 bytes then its values as float32 bytes."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key]
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(value, dtype=np.float32).tobytes())
    return digest.hexdigest()
