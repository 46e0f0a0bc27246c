"""`pipeline evaluate RUN` on a GLCIC run: the completion metrics, logged into the run.

    scores, protocol, step = evaluate(state, handle, fid, data=None, masks=None)
    scores          # {"val_l1_hole": ..., "val_psnr_hole": ..., "val_ssim": ..., "val_fid": ...}

The images are up to `fid.samples` evenly spaced images of the split (default: the run's
evaluation split), each with a hole from the run's mask kind seeded by `fid.seed` (or from
`--masks DIR`, in turn); L1 / PSNR / SSIM in the hole and over the image
(`pipeline.metrics.completion`), and FID / KID of the completions against the split's real
images with the FID machinery of the GANs. Logged with the split as prefix
(`val_psnr_hole`), so they do not mix with the training-time evaluation set's curves. The
evaluation set of training (`CompletionTask.fixed_samples`) comes from the same split
(`evaluation_split`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pipeline.config import ConfigError
from pipeline.errors import PipelineError
from pipeline.training.config import TrainConfig


def evaluate(
    state: dict,
    handle,
    fid,
    data: str | None = None,
    real: str | None = None,
    masks: str | None = None,
    device: str | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> tuple[dict[str, float], dict, int]:
    """(scores, protocol, the run's images seen), the scores logged into `handle`'s run."""
    from pipeline.data.reader import ShardDataset
    from pipeline.data.shards import read_manifest
    from pipeline.data.staging import local_copy
    from pipeline.metrics.completion import completion_scores
    from pipeline.metrics.config import wants_logits
    from pipeline.metrics.evaluation import generated_pass, protocol, scores
    from pipeline.metrics.fid import Embedder, dataset_reference
    from pipeline.metrics.weights import resolve
    from pipeline.models.glcic import CompletionNetwork
    from pipeline.settings import resolve_dataset
    from pipeline.tasks.completion.masks import FolderMasks, composite, fill, make_masks
    from pipeline.training.checkpoint import config_from_checkpoint
    from pipeline.training.images import to_images, to_uint8

    if real is not None:
        raise PipelineError("--real is for GAN runs; a GLCIC run is scored on --data's split")
    config = config_from_checkpoint(state)
    size, channels = state["image"]["size"], state["image"]["channels"]
    name = data or config.data.dataset
    if not name:
        raise PipelineError("no dataset to evaluate on: pass --data NAME")
    path = local_copy(resolve_dataset(name))
    manifest = read_manifest(path)
    if (manifest["image"]["height"], manifest["image"].get("channels", 3)) != (size, channels):
        raise PipelineError(
            f"dataset {manifest['name']} holds {manifest['image']['height']} px images, the run "
            f"completes {size} px: evaluate on a dataset ingested at the run's size"
        )
    split = fid.split or evaluation_split(manifest, config)
    if split not in manifest["splits"]:
        raise PipelineError(f"dataset {manifest['name']} has no split {split!r}")
    source = FolderMasks(masks, size) if masks else make_masks(config.completion, size)

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    C = CompletionNetwork(config.model, size, channels)
    C.load_state_dict(state["C"])
    C = C.to(device).eval()
    mean = state["mean_pixel"].to(device)
    dataset = ShardDataset(path, split)
    n = min(len(dataset), fid.samples)
    rows = np.linspace(0, len(dataset) - 1, n).round().astype(np.int64)
    generator = torch.Generator().manual_seed(fid.seed)

    completed, originals, holes = [], [], []
    with torch.no_grad():
        for i in range(0, n, fid.batch):
            x = to_images(torch.from_numpy(dataset.take(rows[i : i + fid.batch], columns=[])[
                "image"]), device, False)  # fmt: skip
            m = source.draw(len(x), generator)[0].to(device)
            out = composite(x, C(fill(x, m, mean)), m)
            completed.append(torch.from_numpy(to_uint8(out)))
            originals.append(torch.from_numpy(to_uint8(x)))
            holes.append(m.cpu())
    done, real = torch.cat(completed), torch.cat(originals)
    result = completion_scores(
        done.permute(0, 3, 1, 2).float(), real.permute(0, 3, 1, 2).float(), torch.cat(holes)
    )

    # FID / KID of the completions against the split's real images.
    fid = replace(fid, samples=n, split=split)
    backbone = resolve(fid.weights or None, say=say)
    embedder = Embedder(backbone, fid.dims, device, fid.batch, logits=wants_logits(fid))
    reference = dataset_reference(embedder, path, split, fid, say)
    cursor = iter(range(0, n, fid.batch))

    def in_order(count: int, generator) -> np.ndarray:
        start = next(cursor)
        return done[start : start + count].numpy()

    fake = generated_pass(embedder, in_order, fid)
    result.update(scores(fake, reference, fid, backbone.standin))
    result = {f"{split}_{key}": value for key, value in result.items()}
    details = {
        **protocol(backbone, fid, reference, fake),
        "masks": str(Path(masks).expanduser()) if masks else config.completion.masks,
        "images": n,
        "split": split,
    }
    step = int(state.get("images_seen", 0))
    if handle is not None:
        from pipeline import tracking

        tracker = tracking.Tracker(handle)
        tracker.log_metrics(result, step=step)
        tracker.log_dict(details, f"completion/evaluate-{manifest['name']}-{split}-n{n}.json")
        tracker.close()  # in MLflow when this returns (or its journal named)
    return result, details, step


def evaluation_split(manifest: dict, config: TrainConfig) -> str:
    """The split the evaluation set comes from: completion.eval_split, else val, else test,
    else the training split."""
    wanted = config.completion.eval_split
    splits = manifest["splits"]
    if wanted:
        if wanted not in splits:
            raise ConfigError(
                f"dataset {manifest['name']} has no split {wanted!r} for the evaluation set; "
                f"it has: {', '.join(splits)}"
            )
        return wanted
    return next((s for s in ("val", "test") if s in splits), config.data.split)
