"""Writes tests/data/inception_reference.npz: FID Inception-v3 features computed by the original
torchvision and pytorch-fid code, for tests/test_inception_reference.py to check our port against.

How it was run (torchvision cannot be installed next to torch 2.13.0+cpu, and neither package
is a dependency of the project, so their source files are downloaded, unzipped, and loaded by
path; nothing is pip-installed):

    pip download --no-deps torchvision==0.28.0 -d /tmp/ref
    pip download --no-deps pytorch-fid==0.3.0 -d /tmp/ref
    cd /tmp/ref && unzip -o torchvision-0.28.0-*.whl 'torchvision/models/inception.py' \\
        'torchvision/version.py' && unzip -o pytorch_fid-0.3.0-py3-none-any.whl
    cd /work/main && python -m tests.fid_reference.make_reference

with torch 2.13.0+cpu, numpy 2.4.6, Python 3.11, on x86-64 CPU. The versions and the SHA-256 of
both source files are also stored in the output's ``versions`` entry.

What runs is theirs: torchvision's Inception3 / BasicConv2d / InceptionA..E and inception_v3(),
pytorch-fid's FIDInceptionA / C / E_1 / E_2, fid_inception_v3() and the InceptionV3 wrapper
(output_blocks=[0, 1, 2, 3], resize_input=True, normalize_input=True, use_fid_inception=True).
Stand-ins are given only for the names torchvision's file imports from the rest of torchvision
(weight metadata, the model registry, API-usage logging; none of them runs for weights=None),
and for pytorch-fid's load_state_dict_from_url, which returns the deterministic state dict of
tests/fid_reference/weights.py in place of downloading pt_inception-2015-12-05-6726825d.pth,
so pytorch-fid loads it into the patched Inception3 exactly as it loads the real file. The
features are pooled to 1x1 and flattened as pytorch-fid's fid_score.get_activations does.
"""

from __future__ import annotations

import argparse
import enum
import hashlib
import importlib.util
import json
import platform
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tests.fid_reference.weights import random_state_dict, state_dict_sha256

DIMS = (64, 192, 768, 2048)
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TORCHVISION = Path("/tmp/ref/torchvision/models/inception.py")
DEFAULT_PYTORCH_FID = Path("/tmp/ref/pytorch_fid/inception.py")
DEFAULT_OUT = ROOT / "tests" / "data" / "inception_reference.npz"


def _package(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so its stand-in submodules resolve
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def _load_source(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _read_version(path: Path) -> str:
    """``__version__`` from a source file, without executing it."""
    for line in path.read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("'\"")
    raise ValueError(f"no __version__ in {path}")


@dataclass
class _Weights:
    """Stand-in for torchvision.models._api.Weights: holds the metadata, loads nothing."""

    url: str
    transforms: Any
    meta: dict[str, Any]


class _WeightsEnum(enum.Enum):
    @classmethod
    def verify(cls, obj: Any) -> Any:
        if obj is not None:
            raise ValueError("the reference is built with weights=None only")
        return obj


def load_reference(torchvision_path: Path, pytorch_fid_path: Path):
    """torchvision's models/inception.py and pytorch-fid's inception.py, loaded by path with
    stand-ins for the rest of torchvision. Returns (pytorch_fid.inception, torchvision version,
    the Inception3 instances inception_v3() builds, in order)."""
    version_file = torchvision_path.parent.parent / "version.py"
    torchvision_version = _read_version(version_file).split("+")[0]

    def identity_decorator(*args: Any, **kwargs: Any):
        return lambda fn: fn

    torchvision = _package("torchvision", __version__=torchvision_version)
    models = _package("torchvision.models")
    torchvision.models = models
    _package("torchvision.transforms")
    _package("torchvision.transforms._presets", ImageClassification=object)
    _package("torchvision.utils", _log_api_usage_once=lambda obj: None)
    _package(
        "torchvision.models._api",
        register_model=identity_decorator,
        Weights=_Weights,
        WeightsEnum=_WeightsEnum,
    )
    _package("torchvision.models._meta", _IMAGENET_CATEGORIES=[f"c{i}" for i in range(1000)])
    _package(
        "torchvision.models._utils",
        handle_legacy_interface=identity_decorator,
        _ovewrite_named_param=None,  # only used for weights other than None
    )
    tv_inception = _load_source("torchvision.models.inception", torchvision_path)
    models.inception = tv_inception

    # pytorch-fid calls torchvision.models.inception_v3; keep each model it returns, so that
    # the state dict can be made for that model's own keys and shapes.
    built: list[torch.nn.Module] = []

    def inception_v3(*args: Any, **kwargs: Any) -> torch.nn.Module:
        model = tv_inception.inception_v3(*args, **kwargs)
        built.append(model)
        return model

    models.inception_v3 = inception_v3

    fid_inception = _load_source("pytorch_fid.inception", pytorch_fid_path)
    return fid_inception, torchvision_version, built


def inception_spec(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """The (key, shape) pairs of the FID weights file: the patched Inception3's state dict
    without num_batches_tracked (BatchNorm fills it in when loading)."""
    return [
        (key, tuple(value.shape))
        for key, value in model.state_dict().items()
        if not key.endswith("num_batches_tracked")
    ]


def build_reference(torchvision_path: Path, pytorch_fid_path: Path):
    """pytorch-fid's InceptionV3 for all four blocks, with the deterministic weights loaded by
    fid_inception_v3(). Returns (model in eval mode, spec, state dict, torchvision version)."""
    fid_inception, torchvision_version, built = load_reference(torchvision_path, pytorch_fid_path)
    loaded: dict[str, Any] = {}

    def load_state_dict_from_url(url: str, progress: bool = True) -> dict[str, torch.Tensor]:
        assert url.endswith("pt_inception-2015-12-05-6726825d.pth"), url
        (inception,) = built  # patched with the FID blocks by now
        loaded["spec"] = inception_spec(inception)
        loaded["state_dict"] = random_state_dict(loaded["spec"])
        return loaded["state_dict"]

    fid_inception.load_state_dict_from_url = load_state_dict_from_url
    model = fid_inception.InceptionV3(
        output_blocks=[0, 1, 2, 3],
        resize_input=True,
        normalize_input=True,
        use_fid_inception=True,
    ).eval()

    # The wrapper's blocks hold the very modules the weights went into.
    (inception,) = built
    for key, value in inception.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, loaded["state_dict"][key]), key
    return model, loaded["spec"], loaded["state_dict"], torchvision_version


def make_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four 64x64 and two 299x299 uint8 RGB images (NHWC): per-channel linear gradients plus a
    few Gaussian blobs plus mild noise, so they have structure at several scales."""
    rng = np.random.RandomState(seed)

    def image(size: int) -> np.ndarray:
        y, x = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
        channels = []
        for _ in range(3):
            a, b, c = rng.uniform(-1, 1, 3)
            channel = 0.5 + 0.3 * (a * x + b * y + c * x * y)
            for _ in range(4):
                cy, cx = rng.uniform(0, 1, 2)
                width = rng.uniform(0.05, 0.25)
                channel += rng.uniform(-0.4, 0.4) * np.exp(
                    -((x - cx) ** 2 + (y - cy) ** 2) / (2 * width**2)
                )
            channels.append(channel)
        pixels = np.stack(channels, axis=-1) * 255 + rng.normal(0, 4, (size, size, 3))
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    images_64 = np.stack([image(64) for _ in range(4)])
    images_299 = np.stack([image(299) for _ in range(2)])
    return images_64, images_299


@torch.no_grad()
def reference_features(model: torch.nn.Module, images: np.ndarray, dtype: torch.dtype):
    """{dims: (N, dims) array} for uint8 NHWC ``images``, fed as float NCHW in [0, 1] (what
    torchvision's ToTensor gives pytorch-fid) and pooled as fid_score.get_activations does."""
    model = model.to(dtype)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).to(dtype) / 255
    features = {}
    for dims, pred in zip(DIMS, model(batch), strict=True):
        # fid_score.get_activations: global average pooling where the map is not 1x1.
        if pred.size(2) != 1 or pred.size(3) != 1:
            pred = F.adaptive_avg_pool2d(pred, output_size=(1, 1))
        pred = pred.squeeze(3).squeeze(2).cpu().numpy()
        assert pred.shape == (len(images), dims), pred.shape
        features[dims] = pred
    return features


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torchvision-inception", type=Path, default=DEFAULT_TORCHVISION)
    parser.add_argument("--pytorch-fid-inception", type=Path, default=DEFAULT_PYTORCH_FID)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    # Build the reference model.
    model, spec, state_dict, torchvision_version = build_reference(
        args.torchvision_inception, args.pytorch_fid_inception
    )
    pytorch_fid_version = _read_version(args.pytorch_fid_inception.parent / "__init__.py")

    # Compute the features in float64 and in float32.
    images_64, images_299 = make_images()
    arrays: dict[str, np.ndarray] = {"images_64": images_64, "images_299": images_299}
    for dtype_name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        for size, images in (("64", images_64), ("299", images_299)):
            for dims, features in reference_features(model, images, dtype).items():
                arrays[f"features_{dims}_{size}_{dtype_name}"] = features

    # Report float32 against float64, then save.
    for dims in DIMS:
        for size in ("64", "299"):
            ref = arrays[f"features_{dims}_{size}_float64"]
            err = np.abs(arrays[f"features_{dims}_{size}_float32"] - ref).max() / np.abs(ref).max()
            print(
                f"dims {dims:4d}, {size:>3}px: max|ref| {np.abs(ref).max():.4g}, "
                f"float32 vs float64 max relative error {err:.3g}"
            )

    def file_sha256(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    versions = (
        f"torchvision {torchvision_version} (models/inception.py sha256 "
        f"{file_sha256(args.torchvision_inception)}); "
        f"pytorch-fid {pytorch_fid_version} (inception.py sha256 "
        f"{file_sha256(args.pytorch_fid_inception)}); "
        f"torch {torch.__version__}; numpy {np.__version__}; "
        f"python {platform.python_version()}; {platform.machine()}"
    )
    arrays["state_dict_sha256"] = np.array(state_dict_sha256(state_dict))
    arrays["state_dict_spec"] = np.array(json.dumps([[key, list(shape)] for key, shape in spec]))
    arrays["versions"] = np.array(versions)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(versions)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB), "
        f"{len(spec)} state-dict entries, sha256 {arrays['state_dict_sha256']}"
    )


if __name__ == "__main__":
    main()
