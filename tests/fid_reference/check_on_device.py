"""Our FID Inception against pytorch-fid running on the REAL torchvision (on the device
machine, which has torchvision; this machine cannot import it).

    python -m tests.fid_reference.check_on_device --pytorch-fid PATH/pytorch_fid/inception.py \\
        --photos ../shared/datasets/celeba/img_align_celeba

pytorch-fid's `inception.py` (0.3.0) is loaded by path and builds its InceptionV3
(output_blocks 0-3, resize_input, normalize_input, use_fid_inception) through the installed
torchvision; its weights download is replaced by the deterministic random state dict of
tests/fid_reference/weights.py, which pytorch-fid loads strictly as it loads the real file.
Ours gets the same dict. Inputs: real CelebA photos (centre 178x178 crops, and the same at
64 px), uint8 -> [0, 1] as pytorch-fid's ToTensor. Printed: the max relative feature error
`max|ours - ref| / max|ref|` per feature layer, on the GPU (TF32 off, and TF32 as torch's
defaults leave it for convolutions) and on the CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.metrics.inception import InceptionV3
from tests.fid_reference.weights import random_state_dict

DIMS = (64, 192, 768, 2048)


def photos(folder: Path, n: int) -> dict[str, np.ndarray]:
    crops = []
    for path in sorted(folder.glob("*.jpg"))[:n]:
        with Image.open(path) as image:
            w, h = image.size
            side = min(w, h)
            box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
            crops.append(image.convert("RGB").crop(box))
    return {
        f"{crops[0].size[0]}px": np.stack([np.asarray(c) for c in crops]),
        "64px": np.stack([np.asarray(c.resize((64, 64), Image.LANCZOS)) for c in crops]),
    }


def reference_model(path: Path, state: dict):
    import torchvision

    spec = importlib.util.spec_from_file_location("pytorch_fid_inception", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.load_state_dict_from_url = lambda url, progress=True: state
    model = module.InceptionV3(
        output_blocks=[0, 1, 2, 3], resize_input=True, normalize_input=True, use_fid_inception=True
    )
    return model.eval(), torchvision.__version__


@torch.no_grad()
def features(model, images: np.ndarray, device, ours: bool) -> list[torch.Tensor]:
    out = [[] for _ in DIMS]
    for start in range(0, len(images), 32):
        x = torch.from_numpy(images[start : start + 32]).to(device).permute(0, 3, 1, 2)
        x = x.float() / 255
        preds = model(x)
        for i, pred in enumerate(preds):
            if not ours and (pred.size(2) != 1 or pred.size(3) != 1):
                pred = F.adaptive_avg_pool2d(pred, output_size=(1, 1))
            out[i].append(pred.reshape(len(x), -1).double().cpu())
    return [torch.cat(parts) for parts in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pytorch-fid", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--n", type=int, default=128)
    args = parser.parse_args()

    ours = InceptionV3(DIMS)
    spec = [(k, tuple(v.shape)) for k, v in ours.state_dict().items() if "num_batches" not in k]
    state = random_state_dict(spec)
    ours.load_state_dict(state, strict=False)
    ours.eval()
    reference, tv_version = reference_model(args.pytorch_fid, state)
    print(f"torch {torch.__version__}, torchvision {tv_version}, pytorch-fid inception.py")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name, images in photos(args.photos, args.n).items():
        for device in devices:
            for tf32 in [False] + ([True] if device == "cuda" else []):
                torch.backends.cudnn.allow_tf32 = tf32
                torch.backends.cuda.matmul.allow_tf32 = tf32
                a = features(ours.to(device), images, device, ours=True)
                b = features(reference.to(device), images, device, ours=False)
                pairs = zip(a, b, strict=True)
                errors = [float((x - y).abs().max() / y.abs().max()) for x, y in pairs]
                label = f"{device}{' tf32' if tf32 else ''}"
                print(
                    f"{len(images)} photos {name:>6} {label:<9} max rel error "
                    + "  ".join(f"{d}-d {e:.2e}" for d, e in zip(DIMS, errors, strict=True))
                )


if __name__ == "__main__":
    main()
