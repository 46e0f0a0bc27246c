"""The real side of FID (and of every metric on its features): embedding, cached reference
statistics.

The protocol is pytorch-fid's: images as uint8 (generated images are quantised first, as
when they are saved to PNG and read back), /255, bilinear resize to 299, the Inception of
`pipeline.metrics.inception`, pool3 features; N generated against N real images (a fixed
seeded subset of the split, all of it when smaller). KID uses the same features.

Work is split across ranks: each embeds its share of the real and generated images, the
float64 sums are all-reduced and rank 0 scores. The real statistics are cached under the
dataset's `stats/`, keyed by everything that changes them, and written atomically. The
generated side and the scores: `pipeline.metrics.evaluation`.

    embedder = Embedder(backbone, 2048, device, logits=True)
    real = dataset_reference(embedder, dataset_path, "train", fid)   # rank 0: RealStats
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pipeline.data.staging import fetch_beside, put_beside
from pipeline.errors import PipelineError
from pipeline.metrics.config import FidConfig
from pipeline.metrics.stats import FeatureStats, comm_device
from pipeline.metrics.weights import Backbone

RESIZE = "bilinear 299x299, align_corners=False (pytorch-fid)"
CACHE_VERSION = 1


class Embedder:
    """uint8 images (N, H, W, C) -> Inception features (N, dims), batch by batch; with
    `logits`, `embed` also gives the 1008-way logits without the fc bias (the Inception
    Score's) from the same forward."""

    def __init__(
        self, backbone: Backbone, dims: int, device="cpu", batch: int = 50, logits: bool = False
    ):
        from pipeline.metrics.inception import build

        self.backbone, self.dims, self.device, self.batch = (
            backbone,
            dims,
            torch.device(device),
            batch,
        )
        self.logits = logits
        self.net = build(backbone, (dims,), self.device, logits=logits)
        # oneDNN's channels-last convolutions: 1.5-1.7x the images/s at 64/192-d and 1.3x at
        # 2048-d on one CPU thread (benchmarks/fid.py), features equal to 1e-6; the reference
        # test checks this layout too.
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def __call__(self, images) -> torch.Tensor:
        return self.embed(images)[0]

    @torch.inference_mode()
    def embed(self, images) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features (N, dims), logits (N, 1008) or None), float32 on the CPU."""
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise PipelineError(
                f"expected uint8 images (N, H, W, C), got {images.dtype} {tuple(images.shape)}"
            )
        features, logits = [], []
        tf32 = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False  # FID in true float32, as the reference
        try:
            for start in range(0, len(images), self.batch):
                x = images[start : start + self.batch].to(self.device).permute(0, 3, 1, 2)
                x = x.float() / 255
                if x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)  # grayscale read as RGB, as pytorch-fid does
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out = self.net(x)
                features.append(out[0].float().cpu())
                if self.logits:
                    logits.append(out[1].float().cpu())
        finally:
            torch.backends.cudnn.allow_tf32 = tf32
        if not features:
            return torch.zeros(0, self.dims), (torch.zeros(0, 1008) if self.logits else None)
        return torch.cat(features), (torch.cat(logits) if self.logits else None)


@dataclass
class RealStats:
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None  # for KID (None for published mu/sigma files)
    n: int
    source: str  # what they describe, for the protocol
    status: str = "computed"  # computed | cached | loaded


def share(n: int, rank: int, world: int) -> range:
    """This rank's part of n items: contiguous, sizes differing by at most one."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def cache_key(manifest: dict, split: str, n: int, fid: FidConfig, backbone: Backbone) -> dict:
    return {
        "version": CACHE_VERSION,
        "dataset": manifest["name"],
        "fingerprint": manifest["fingerprint"],
        "split": split,
        "size": manifest["image"]["height"],
        "n": n,
        "seed": fid.seed,
        "dims": fid.dims,
        "backbone": backbone.kind,
        "weights_sha256": backbone.sha256,
        "resize": RESIZE,
    }


def cache_path(dataset_path: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    name = (
        f"fid-{key['split']}-{key['size']}px-n{key['n']}-{key['dims']}d-{key['backbone']}-"
        f"{key['weights_sha256'][:8]}-{digest}.npz"
    )
    return Path(dataset_path) / "stats" / name


def reference_rows(length: int, fid: FidConfig) -> np.ndarray:
    """The rows of a split FID compares with: a seeded subset of `fid.samples` (all of them
    when the split is smaller), in row order (the order of the features)."""
    n = min(fid.samples, length)
    return np.sort(np.random.RandomState(fid.seed).permutation(length)[:n])


def dataset_reference(
    embedder: Embedder,
    dataset_path: str | Path,
    split: str,
    fid: FidConfig,
    say: Callable[[str], None] = lambda line: None,
) -> RealStats | None:
    """The real statistics of a dataset split, from the cache or computed (by all ranks
    together when distributed). Returns them on rank 0 (None on the other ranks)."""
    from pipeline.data.reader import ShardDataset

    data = ShardDataset(dataset_path, split)
    n = min(fid.samples, len(data))
    key = cache_key(data.manifest, split, n, fid, embedder.backbone)
    path = cache_path(Path(dataset_path), key)
    rank = dist.get_rank() if _distributed() else 0
    world = dist.get_world_size() if _distributed() else 1
    cached = torch.tensor([1.0 if rank == 0 and _cached(dataset_path, path, key) else 0.0])
    if world > 1:
        cached = cached.to(comm_device())
        dist.broadcast(cached, 0)  # every rank takes the same branch
    source = f"{data.manifest['name']}/{split} ({n} of {len(data)} images)"
    if cached.item():
        if rank != 0:
            return None
        with np.load(path) as stored:
            return RealStats(stored["mu"], stored["sigma"], stored["features"], n, source, "cached")
    started = time.perf_counter()
    rows = reference_rows(len(data), fid)
    stats = FeatureStats(fid.dims)
    mine = rows[share(n, rank, world).start : share(n, rank, world).stop]
    for start in range(0, len(mine), embedder.batch * 4):
        stats.add(
            embedder(data.take(mine[start : start + embedder.batch * 4], columns=[])["image"])
        )
    stats.all_reduce()
    if rank != 0:
        return None
    mu, sigma = stats.mean_cov()
    features = stats.features()
    if _write_atomic(path, key, mu, sigma, features, say):
        put_beside(dataset_path, str(path.relative_to(dataset_path)), say)
    say(f"FID reference statistics of {source}: computed in {time.perf_counter() - started:.1f} s")
    return RealStats(mu, sigma, features, n, source, "computed")


def ensure_reference(
    backbone: Backbone,
    dataset_path: str | Path,
    split: str,
    fid: FidConfig,
    device="cpu",
    say: Callable[[str], None] = lambda line: None,
) -> Path:
    """The reference statistics in the dataset's cache, computed here (one process) when they
    are not there yet; builds the network only then. Returns the cache file."""
    from pipeline.data.reader import ShardDataset

    data = ShardDataset(dataset_path, split)
    key = cache_key(data.manifest, split, min(fid.samples, len(data)), fid, backbone)
    path = cache_path(Path(dataset_path), key)
    if not _cached(dataset_path, path, key):
        dataset_reference(Embedder(backbone, fid.dims, device, fid.batch), dataset_path, split,
                          fid, say)  # fmt: skip
    return path


def _cached(dataset_path: str | Path, path: Path, key: dict) -> bool:
    """The statistics are in the dataset's cache; for a node's staged copy of a dataset at a
    URI, also when another node has put them beside the dataset since it was staged."""
    if _matches(path, key):
        return True
    try:
        fetched = fetch_beside(dataset_path, str(path.relative_to(dataset_path)))
    except PipelineError:  # the bucket out of reach now: computing them here still works
        return False
    return fetched and _matches(path, key)


def _matches(path: Path, key: dict) -> bool:
    if not path.is_file():
        return False
    try:
        with np.load(path) as stored:
            return json.loads(str(stored["key"])) == key
    except Exception:  # noqa: BLE001 - an unreadable cache file is recomputed
        return False


def _write_atomic(path: Path, key: dict, mu, sigma, features, say) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, key=json.dumps(key, sort_keys=True), mu=mu, sigma=sigma, features=features)
        os.replace(tmp, path)
        return True
    except OSError as exc:  # a read-only dataset folder: the numbers still hold
        say(f"could not cache the FID reference statistics at {path} ({exc})")
        return False


def folder_reference(embedder: Embedder, folder: str | Path, limit: int | None = None) -> RealStats:
    """Real statistics of a folder of images (png/jpg/webp/bmp, recursive), or of a published
    statistics file (`.npz` with `mu` and `sigma`, as pytorch-fid's --save-stats writes)."""
    from pipeline.data import limits

    folder = Path(folder).expanduser()
    if folder.is_file() and folder.suffix == ".npz":
        try:
            with np.load(folder) as stored:
                mu, sigma = stored["mu"], stored["sigma"]
        except (KeyError, ValueError, OSError) as exc:
            raise PipelineError(
                f"{folder} is not a statistics file with mu and sigma ({exc})"
            ) from None
        if mu.shape != (embedder.dims,):
            raise PipelineError(f"{folder} holds {mu.shape[0]}-d statistics, not {embedder.dims}-d")
        return RealStats(mu, sigma, None, 0, str(folder), "loaded")
    if not folder.is_dir():
        raise PipelineError(
            f"--real {folder} is neither a folder of images nor a .npz statistics file"
        )
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
    )[:limit]
    if not files:
        raise PipelineError(f"--real {folder} holds no images (png, jpg, webp, bmp)")
    stats = FeatureStats(embedder.dims)
    group: list[np.ndarray] = []
    for file in files:
        try:
            with limits.open_image(file) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (OSError, limits.TooLarge) as exc:
            raise PipelineError(f"cannot read image {file}: {exc}") from None
        if group and pixels.shape != group[0].shape:  # a batch holds one size
            stats.add(embedder(np.stack(group)))
            group = []
        group.append(pixels)
        if len(group) == embedder.batch:
            stats.add(embedder(np.stack(group)))
            group = []
    if group:
        stats.add(embedder(np.stack(group)))
    mu, sigma = stats.mean_cov()
    return RealStats(mu, sigma, stats.features(), stats.n, f"{folder} ({stats.n} images)")
