"""Is D memorising the training set? D's mean raw output on fixed training reals, on fixed
held-out reals and on G's fakes, each report (stylegan2-ada-pytorch's figure 1: on a small
set the training reals' outputs climb while the held-out reals' fall towards the fakes'):

    D_train, D_val, D_fake   D's mean output (logit, or critic score) on each set
    D_gap                    D_train - D_val: grows while D memorises the training images
    r_v                      (D_train - D_val) / (D_train - D_fake), ADA's validation
                             heuristic (Karras et al. 2020, eq. 1): 0 no overfitting, 1 the
                             held-out reals look as fake as the fakes

Every rank measures the same images (a synchronised batch norm then sees the same batch on
every rank), D and G in training mode as they judge and draw in the step, without augmentation;
their buffers (batch-norm statistics, spectral norm's power-iteration vectors) are put back
afterwards, so the measure leaves training bit for bit as it was. The held-out reals are the
dataset's `val` split, else its `test` split; a dataset with neither (an image folder ingested
without `--val`) logs D_train and D_fake only, and the run says so once.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.training.images import to_images

PROBE_IMAGES = 64  # per set: the same rows at every report and in every run of the dataset
HELD_OUT = ("val", "test")


def probe_rows(length: int) -> np.ndarray:
    return np.linspace(0, length - 1, min(length, PROBE_IMAGES)).round().astype(np.int64)


class OverfitProbe:
    def __init__(self, dataset_path: str, split: str, device, say=print):
        from pipeline.data.reader import ShardDataset

        train = ShardDataset(dataset_path, split)
        self.train = self._images(train, device)
        held_out = [s for s in HELD_OUT if s != split and s in train.manifest["splits"]]
        self.held_out_split = held_out[0] if held_out else None
        self.val = None
        if self.held_out_split is not None:
            self.val = self._images(ShardDataset(dataset_path, self.held_out_split), device)
        else:
            name = train.manifest.get("name", dataset_path)
            say(
                f"note: dataset {name} has no val or test split: D_val, D_gap and r_v (is D "
                "memorising?) are not measured; `pipeline ingest images --val 0.1` holds some out"
            )

    @staticmethod
    def _images(dataset, device) -> torch.Tensor:
        images = dataset.take(probe_rows(len(dataset)), columns=[])["image"]
        return to_images(torch.from_numpy(images), device, False)

    @torch.no_grad()
    def measure(self, D: nn.Module, G: nn.Module, z: torch.Tensor, y) -> dict[str, float]:
        saved = [(b, b.clone()) for net in (D, G) for b in net.buffers()]
        outputs = {"D_train": D(self.train)[0], "D_fake": D(G(z, y))[0]}
        if self.val is not None:
            outputs["D_val"] = D(self.val)[0]
        for buffer, value in saved:
            buffer.copy_(value)
        out = {name: float(value.float().mean()) for name, value in outputs.items()}
        if self.val is not None:
            out["D_gap"] = out["D_train"] - out["D_val"]
            spread = out["D_train"] - out["D_fake"]
            out["r_v"] = out["D_gap"] / spread if abs(spread) > 1e-6 else 0.0
        return out
