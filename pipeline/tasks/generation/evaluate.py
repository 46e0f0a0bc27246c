"""`pipeline evaluate` on a GAN run: FID, KID, precision / recall, density / coverage and IS
of its generator (G_ema), the class judge's accuracy for a conditional one, and with `fid.intra`
FID per class; logged into the run.

    scores, protocol, step = evaluate(state, handle, fid, data="celeba-64")
    scores      # {"fid": 23.1, "kid": 0.018, "kid_std": 0.001, ...}
    protocol    # backbone, weights hash, dims, resize, N real / fake, reference

The real side is a dataset split (reference statistics cached under its `stats/`), a folder
of images, or a published statistics file (`.npz` with mu and sigma: FID only). Which task's
evaluation a checkpoint gets is `pipeline.training.evaluate`'s choice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.metrics.config import FidConfig, check_reference, wants_logits


def evaluate(
    state: dict,
    handle,
    fid: FidConfig,
    data: str | None = None,
    real: str | None = None,
    masks: str | None = None,
    device: str | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> tuple[dict[str, float], dict, int]:
    """(scores, protocol, the run's images seen), the scores logged into `handle`'s run."""
    from pipeline.metrics import evaluation
    from pipeline.metrics.fid import Embedder, dataset_reference, folder_reference
    from pipeline.metrics.weights import resolve
    from pipeline.tasks.generation.sample import generator_from_state, labels_for
    from pipeline.training.checkpoint import config_from_checkpoint
    from pipeline.training.images import to_uint8
    from pipeline.training.noise import sample_z

    if masks is not None:
        raise PipelineError("--masks is for GLCIC runs (image completion), not GAN runs")
    G, state = generator_from_state(state, "this checkpoint")
    config = config_from_checkpoint(state)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    split = fid.split or config.data.split
    dataset_path = None
    if real is None:
        dataset_path = _dataset(data or config.data.dataset, state, fid, split)
    labels = state.get("labels")
    if fid.intra and real is not None:
        raise PipelineError("intra-FID compares with a dataset's classes: use --data, not --real")
    backbone = resolve(fid.weights or None, say=say)
    embedder = Embedder(backbone, fid.dims, device, fid.batch, logits=wants_logits(fid))
    real_labels = judge = None
    if real is not None:
        reference = folder_reference(embedder, real)
    else:
        from pipeline.data.staging import local_copy

        dataset_path = local_copy(dataset_path)
        if fid.intra:
            real_labels = _intra_labels(dataset_path, split, fid, config, labels)
        judge = _judge(dataset_path, labels, say)
        reference = dataset_reference(embedder, dataset_path, split, fid, say)

    G = G.to(device)

    @torch.no_grad()
    def sample(n: int, generator: torch.Generator, y=None) -> np.ndarray:
        z = sample_z(config, n, device, generator)
        if y is None:
            y = labels_for(labels, n, None, generator)
        return to_uint8(G(z, y.to(device) if y is not None else None))

    fake = evaluation.generated_pass(embedder, sample, fid, labels, judge)
    result, details = evaluation.score_pass(
        fake, reference, fid, backbone, device, labels, real_labels, judge
    )
    step = int(state.get("images_seen", 0))
    if handle is not None:
        from pipeline import tracking

        tracker = tracking.Tracker(handle)
        tracker.log_metrics(result, step=step)
        where = Path(real).name if real else f"{details['real'].split(' ')[0].replace('/', '-')}"
        tracker.log_dict(details, f"fid/evaluate-{where}-n{fake.n}-{fid.dims}d.json")
        tracker.set_tags({"pipeline.fid_backbone": backbone.kind})
        tracker.close()  # in MLflow when this returns (or its journal named)
    return result, details, step


def _intra_labels(dataset_path, split: str, fid: FidConfig, config, labels: dict | None):
    """The reference images' labels, checked to hold enough images of every class."""
    from pipeline.data.shards import read_manifest
    from pipeline.metrics.evaluation import check_intra, reference_labels
    from pipeline.training.labels import plan_labels

    if labels is None:
        raise PipelineError("intra-FID needs a conditional generator; this one has no labels")
    manifest = read_manifest(dataset_path)
    plan = plan_labels(manifest, config.data.groups, config.data.attrs)
    real_labels = reference_labels(dataset_path, split, fid, plan)
    check_intra(real_labels, labels, fid, f"{manifest['name']}/{split}")
    return real_labels


def _judge(dataset_path, labels: dict | None, say):
    """The dataset's class judge for a conditional generator (None: said how to train one)."""
    if labels is None:
        return None
    from pipeline.data.shards import read_manifest
    from pipeline.judge import find_judge, how_to_train

    judge = find_judge(dataset_path, labels)
    if judge is None:
        say(f"no class judge: class_acc is not measured; "
            f"{how_to_train(read_manifest(dataset_path)['name'], labels)}")  # fmt: skip
    return judge


def _dataset(name: str, state: dict, fid: FidConfig, split: str) -> Path:
    """The dataset to compare with, checked against the generator and the sample count."""
    from pipeline.data.shards import read_manifest
    from pipeline.settings import resolve_dataset

    if not name:
        raise PipelineError("no dataset to compare with: pass --data NAME or --real FOLDER")
    path = resolve_dataset(name)
    manifest = read_manifest(path)
    size, channels = manifest["image"]["height"], manifest["image"].get("channels", 3)
    if (size, channels) != (state["image"]["size"], state["image"]["channels"]):
        raise PipelineError(
            f"dataset {manifest['name']} holds {size}px images with {channels} channel(s), the "
            f"generator makes {state['image']['size']}px with {state['image']['channels']}: "
            "compare with a dataset ingested at the generator's size"
        )
    check_reference(manifest, split, fid)
    return path
