"""FID and KID of a generator against a dataset: embedding, cached reference statistics, scores.

The protocol is pytorch-fid's: images as uint8 (generated images are quantised first, as
when they are saved to PNG and read back), /255, bilinear resize to 299, the Inception of
`pipeline.metrics.inception`, pool3 features; N generated against N real images (a fixed
seeded subset of the split, all of it when smaller). KID uses the same features.

Work is split across ranks: each embeds its share of the real and generated images, the
float64 sums are all-reduced and rank 0 scores. The real statistics are cached under the
dataset's `stats/`, keyed by everything that changes them, and written atomically.

    fid = FidEvaluator(config.fid, backbone, dataset_path, split, device)
    scores = fid.evaluate(G_ema, sample_fn)    # rank 0: {"fid": ..., "kid": ..., ...}
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
from pipeline.metrics.config import FidConfig, metric_name
from pipeline.metrics.stats import FeatureStats, frechet_distance, kid_score
from pipeline.metrics.weights import Backbone

RESIZE = "bilinear 299x299, align_corners=False (pytorch-fid)"
CACHE_VERSION = 1


class Embedder:
    """uint8 images (N, H, W, C) -> Inception features (N, dims), batch by batch."""

    def __init__(self, backbone: Backbone, dims: int, device="cpu", batch: int = 50):
        from pipeline.metrics.inception import build

        self.backbone, self.dims, self.device, self.batch = (
            backbone,
            dims,
            torch.device(device),
            batch,
        )
        self.net = build(backbone, (dims,), self.device)
        # oneDNN's channels-last convolutions: 1.5-1.7x the images/s at 64/192-d and 1.3x at
        # 2048-d on one CPU thread (benchmarks/fid.py), features equal to 1e-6; the reference
        # test checks this layout too.
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, images) -> torch.Tensor:
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise PipelineError(
                f"expected uint8 images (N, H, W, C), got {images.dtype} {tuple(images.shape)}"
            )
        out = []
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
                (features,) = self.net(x)
                out.append(features.float().cpu())
        finally:
            torch.backends.cudnn.allow_tf32 = tf32
        return torch.cat(out) if out else torch.zeros(0, self.dims)


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
        dist.broadcast(cached, 0)  # every rank takes the same branch
    source = f"{data.manifest['name']}/{split} ({n} of {len(data)} images)"
    if cached.item():
        if rank != 0:
            return None
        with np.load(path) as stored:
            return RealStats(stored["mu"], stored["sigma"], stored["features"], n, source, "cached")
    started = time.perf_counter()
    rows = np.sort(np.random.RandomState(fid.seed).permutation(len(data))[:n])
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


def generated_stats(
    embedder: Embedder, sample: Callable[[int, torch.Generator], np.ndarray], fid: FidConfig
) -> FeatureStats:
    """Features of `fid.samples` generated images, this rank drawing its share with noise
    seeded by (seed, rank): the same images at every evaluation of a run."""
    rank = dist.get_rank() if _distributed() else 0
    world = dist.get_world_size() if _distributed() else 1
    generator = torch.Generator().manual_seed(fid.seed * 1000 + rank)
    stats = FeatureStats(fid.dims)
    todo = len(share(fid.samples, rank, world))
    while todo > 0:
        n = min(fid.batch, todo)
        stats.add(embedder(sample(n, generator)))
        todo -= n
    stats.all_reduce()
    return stats


def scores(fake: FeatureStats, real: RealStats, fid: FidConfig, standin: bool) -> dict[str, float]:
    """{fid, kid, kid_std} (or the stand-in's names) of generated against real statistics."""
    mu, sigma = fake.mean_cov()
    out = {metric_name("fid", standin): frechet_distance(mu, sigma, real.mu, real.sigma)}
    if real.features is not None:
        kid, kid_std = kid_score(
            fake.features(), real.features, fid.kid_subsets, fid.kid_subset_size, fid.seed
        )
        out[metric_name("kid", standin)] = kid
        out[metric_name("kid_std", standin)] = kid_std
    return out


def protocol(backbone: Backbone, fid: FidConfig, real: RealStats, n_fake: int) -> dict:
    """What a number means: written beside every FID the pipeline logs."""
    return {
        "backbone": backbone.kind,
        "comparable_with_published_fid": not backbone.standin and fid.dims == 2048,
        "weights": backbone.path,
        "weights_sha256": backbone.sha256,
        "dims": fid.dims,
        "resize": RESIZE,
        "n_real": real.n,
        "n_fake": n_fake,
        "real": real.source,
        "reference": real.status,
        "kid": {
            "subsets": fid.kid_subsets,
            "subset_size": fid.kid_subset_size,
            "kernel": "(x.y/d+1)^3",
        },
    }


class FidEvaluator:
    """FID/KID of a generator during training: every rank calls `evaluate` together."""

    def __init__(
        self,
        fid: FidConfig,
        backbone: Backbone,
        dataset_path: str | Path,
        split: str,
        device="cpu",
        say: Callable[[str], None] = lambda line: None,
    ):
        self.fid, self.backbone, self.say = fid, backbone, say
        self.dataset_path, self.split = dataset_path, split
        self.embedder = Embedder(backbone, fid.dims, device, fid.batch)
        self.real: RealStats | None = None
        self.protocol: dict | None = None

    def evaluate(self, sample: Callable[[int, torch.Generator], np.ndarray]) -> dict[str, float]:
        """Scores on rank 0 ({} on the others). `sample(n, generator)` -> uint8 NHWC."""
        if self.real is None and self.protocol is None:
            self.real = dataset_reference(
                self.embedder, self.dataset_path, self.split, self.fid, self.say
            )
        started = time.perf_counter()
        fake = generated_stats(self.embedder, sample, self.fid)
        if self.real is None:  # not rank 0
            self.protocol = {}
            return {}
        self.protocol = protocol(self.backbone, self.fid, self.real, fake.n)
        out = scores(fake, self.real, self.fid, self.backbone.standin)
        out["fid_seconds"] = time.perf_counter() - started
        return out
