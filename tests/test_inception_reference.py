"""Our FID Inception-v3 (pipeline/metrics/inception.py) against the original code.

tests/data/inception_reference.npz holds the features that torchvision's Inception3 with
pytorch-fid's FID blocks and InceptionV3 wrapper computed for six fixed images (four 64x64,
resized to 299 inside the network, and two 299x299), in float64 and float32, with the
deterministic weights of tests/fid_reference/weights.py; tests/fid_reference/make_reference.py
made it and says how. Neither torchvision nor pytorch-fid is needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fid_reference.weights import random_state_dict, state_dict_sha256

REFERENCE = Path(__file__).parent / "data" / "inception_reference.npz"
DIMS = (64, 192, 768, 2048)
MAX_RELATIVE_ERROR = 1e-5


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture(scope="module")
def weights(reference) -> dict[str, torch.Tensor]:
    spec = json.loads(str(reference["state_dict_spec"]))
    return random_state_dict((key, tuple(shape)) for key, shape in spec)


@pytest.fixture(scope="module")
def net(weights):
    from pipeline.metrics.inception import InceptionV3

    net = InceptionV3(dims=DIMS)
    net.load_state_dict(weights, strict=True)
    return net.eval()


def test_same_weights_as_the_reference(reference, weights, net):
    expected = str(reference["state_dict_sha256"])
    assert state_dict_sha256(weights) == expected, "the weights generator changed"
    loaded = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert state_dict_sha256(loaded) == expected, "the network does not hold the weights as loaded"


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last],
                         ids=["nchw", "channels_last"])  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_features_match_pytorch_fid(reference, net, dtype, layout):
    """NCHW is the reference's layout; channels-last is what the Embedder runs on a CPU."""
    dtype_name = str(dtype).removeprefix("torch.")
    net = net.to(dtype).to(memory_format=layout)
    for size in ("64", "299"):
        # What pytorch-fid feeds the network: ToTensor's uint8 / 255, NCHW.
        images = torch.from_numpy(reference[f"images_{size}"]).permute(0, 3, 1, 2)
        with torch.no_grad():
            features = net((images.to(dtype) / 255).contiguous(memory_format=layout))
        assert len(features) == len(DIMS)
        for dims, ours in zip(DIMS, features, strict=True):
            ref = reference[f"features_{dims}_{size}_{dtype_name}"]
            assert tuple(ours.shape) == ref.shape and ours.dtype == dtype
            error = np.abs(ours.numpy() - ref).max() / np.abs(ref).max()
            print(f"{dtype_name} {size:>3}px dims {dims:4d}: max relative error {error:.3g}")
            assert error <= MAX_RELATIVE_ERROR, (dtype_name, size, dims, error)
