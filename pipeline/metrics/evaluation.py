"""Every number of one evaluation of a generator, from one pass over its images.

Each rank draws its share of `fid.samples` generated images (z seeded by (seed, rank); a
conditional G is asked for a balanced, seeded sequence of labels: every class of a group
equally often), embeds them once through FID's Inception (pool3 features and, from the same
forward, the 1008-way logits) and, when the dataset has a judge, lets the judge classify
them. The ranks gather; rank 0 scores against the real side (`pipeline.metrics.fid`):

    fid, kid, kid_std            pool3 features (Heusel et al. 2017; Binkowski et al. 2018)
    precision, recall            k = 3 nearest neighbours on the same features
    density, coverage            k = 5 (`pipeline.metrics.prdc`)
    is, is_std                   the logits without the fc bias, 10 splits (at 2048-d, where
                                 they come free, or with fid.inception_score)
    intra_fid, intra_fid_worst   `fid.intra`: FID per class of each label group, against
                                 that class's real images (Miyato and Koyama 2018)
    class_acc, class_acc/<name>  the judge's accuracy on the intended labels, beside
    judge_val_acc                its own accuracy on the real val split (`pipeline.judge`)

The Inception-derived names carry `_standin` with the stand-in network; the judge is a real
classifier, so `class_acc` keeps its name.

    evaluator = Evaluator(config.fid, backbone, dataset_path, split, device, labels=plan,
                          judge=find_judge(dataset_path, plan.to_dict()))
    metrics = evaluator.evaluate(task.generate)    # rank 0: {"fid": ..., "precision": ...}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pipeline.config import ConfigError
from pipeline.judge.judge import class_accuracy
from pipeline.metrics.config import FidConfig, metric_name, wants_logits
from pipeline.metrics.fid import (
    RESIZE,
    Embedder,
    RealStats,
    dataset_reference,
    reference_rows,
    share,
)
from pipeline.metrics.inception_score import inception_score
from pipeline.metrics.prdc import prdc
from pipeline.metrics.stats import FeatureStats, frechet_distance, gather_rows, kid_score
from pipeline.metrics.weights import Backbone

K_PRECISION_RECALL = 3  # Kynkaanniemi et al. 2019 (and stylegan2-ada's pr50k3)
K_DENSITY_COVERAGE = 5  # Naeem et al. 2020 (and StudioGAN)
IS_SPLITS = 10  # Salimans et al. 2016


@dataclass
class Generated:
    """One pass over generated images, gathered from every rank."""

    stats: FeatureStats  # features and their sums
    logits: torch.Tensor | None  # (N, 1008)
    intended: np.ndarray | None  # the labels G was asked for (N, groups + attributes)
    judged: np.ndarray | None  # the judge's reading of the same images

    @property
    def n(self) -> int:
        return self.stats.n


def balanced_labels(label_spec: dict | None, n: int, seed: int) -> np.ndarray | None:
    """y (n, groups + attributes) for the evaluation: each group's classes (and each
    attribute's 0/1) equally often (counts differ by at most one), in a seeded order. As
    uniform as drawing them, without the noise: every class gets its share of images."""
    if label_spec is None:
        return None
    rng = np.random.RandomState(seed)
    sizes = [*label_spec["groups"], *[2] * label_spec["binary"]]
    return np.stack([rng.permutation(np.arange(n) % k) for k in sizes], axis=1).astype(np.int64)


def generated_pass(
    embedder: Embedder,
    sample: Callable,
    fid: FidConfig,
    label_spec: dict | None = None,
    judge=None,
) -> Generated:
    """`fid.samples` generated images, this rank drawing its share: `sample(n, generator)`
    (unconditional) or `sample(n, generator, y)` -> uint8 NHWC. The same images at every
    evaluation of a run."""
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    generator = torch.Generator().manual_seed(fid.seed * 1000 + rank)
    wanted = balanced_labels(label_spec, fid.samples, fid.seed)
    stats = FeatureStats(fid.dims)
    logits, intended, judged = [], [], []
    mine = share(fid.samples, rank, world)
    for start in range(mine.start, mine.stop, fid.batch):
        stop = min(start + fid.batch, mine.stop)
        if wanted is None:
            images = sample(stop - start, generator)
        else:
            y = torch.from_numpy(wanted[start:stop])
            images = sample(stop - start, generator, y)
            intended.append(y)
            if judge is not None:
                judged.append(torch.from_numpy(judge.predict(images)))
        features, batch_logits = embedder.embed(images)
        stats.add(features)
        if batch_logits is not None:
            logits.append(batch_logits)
    stats.all_reduce()

    def gathered(parts: list[torch.Tensor]):
        return gather_rows(torch.cat(parts)) if parts else None

    return Generated(
        stats,
        gathered(logits),
        None if wanted is None else gathered(intended).numpy(),
        None if judge is None or wanted is None else gathered(judged).numpy(),
    )


def reference_labels(dataset_path: str | Path, split: str, fid: FidConfig, plan) -> np.ndarray:
    """The labels (n, groups + attributes) of the real images FID compares with, in the order
    of their features; -1 where a row has no label. `plan`: the run's LabelPlan."""
    from pipeline.data.reader import ShardDataset

    data = ShardDataset(dataset_path, split)
    rows = reference_rows(len(data), fid)
    return plan.labels(data.take(rows, columns=plan.columns))


def class_names(label_spec: dict) -> list[tuple[int, int, str]]:
    """(group, class, "group=class") for every class of every softmax group."""
    return [
        (g, c, f"{group}={name}")
        for g, (group, names) in enumerate(
            zip(label_spec["group_names"], label_spec["class_names"], strict=True)
        )
        for c, name in enumerate(names)
    ]


def check_intra(real_labels: np.ndarray, label_spec: dict | None, fid: FidConfig, where: str):
    """Intra-FID needs, for every class, more real and more generated images than the
    features have dimensions (else that class's covariance is singular): one line naming
    the first class short of them."""
    if label_spec is None or not label_spec["groups"]:
        raise ConfigError(
            f"intra-FID needs a conditional run with class groups; {where} is not one "
            "(leave fid.intra off)"
        )
    for g, c, name in class_names(label_spec):
        real = int((real_labels[:, g] == c).sum())
        if real <= fid.dims:
            raise ConfigError(
                f"intra-FID against {where}: class {name} has {real} real images among the "
                f"{len(real_labels)} compared, {fid.dims}-d features need more than {fid.dims}; "
                "use fewer FID dims (64, 192, 768) or leave fid.intra off"
            )
        fake = fid.samples // label_spec["groups"][g]
        if fake <= fid.dims:
            raise ConfigError(
                f"intra-FID: fid.samples={fid.samples} gives {fake} generated images per "
                f"{name.split('=')[0]} class, {fid.dims}-d features need more than {fid.dims}; "
                "raise fid.samples or use fewer FID dims"
            )


def intra_fid(
    fake: Generated, real: RealStats, real_labels: np.ndarray, label_spec: dict
) -> dict[str, float]:
    """FID of each class of each group against that class's real images: {"group=class": fid}."""
    fake_features = fake.stats.features().astype(np.float64)
    out = {}
    for g, c, name in class_names(label_spec):
        ours = fake_features[fake.intended[:, g] == c]
        theirs = real.features[real_labels[:, g] == c].astype(np.float64)
        out[name] = frechet_distance(
            ours.mean(0), np.cov(ours, rowvar=False), theirs.mean(0), np.cov(theirs, rowvar=False)
        )
    return out


def scores(
    fake: Generated,
    real: RealStats,
    fid: FidConfig,
    standin: bool,
    intra: dict[str, float] | None = None,
    device=None,
) -> dict[str, float]:
    """The Inception metrics of generated against real, named for the backbone; the k-NN
    distances on `device` (the GPU of a GPU run: 50k x 50k in float64 takes seconds there,
    minutes on a CPU)."""
    mu, sigma = fake.stats.mean_cov()
    out = {"fid": frechet_distance(mu, sigma, real.mu, real.sigma)}
    if real.features is not None:  # a published mu/sigma file has no features
        fake_features = fake.stats.features()
        out["kid"], out["kid_std"] = kid_score(
            fake_features, real.features, fid.kid_subsets, fid.kid_subset_size, fid.seed
        )
        ours, theirs = equal_sizes(fake_features, real.features, fid.seed)
        out.update(prdc(theirs, ours, K_PRECISION_RECALL, K_DENSITY_COVERAGE, device=device))
    if fake.logits is not None and fake.n >= IS_SPLITS:
        out["is"], out["is_std"] = inception_score(fake.logits, IS_SPLITS)
    if intra:
        out["intra_fid"] = float(np.mean(list(intra.values())))
        out["intra_fid_worst"] = float(max(intra.values()))
    return {metric_name(name, standin): value for name, value in out.items()}


def equal_sizes(fake: np.ndarray, real: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall compare sets of one size: the larger one's seeded subset."""
    n = min(len(fake), len(real))
    rng = np.random.RandomState(seed)

    def cut(x):
        return x if len(x) == n else x[np.sort(rng.permutation(len(x))[:n])]

    return cut(fake), cut(real)


def protocol(backbone: Backbone, fid: FidConfig, real: RealStats, fake: Generated) -> dict:
    """What the numbers mean: written beside every evaluation the pipeline logs."""
    n_pr = min(fake.n, real.n) if real.features is not None else 0
    return {
        "backbone": backbone.kind,
        "comparable_with_published_fid": not backbone.standin and fid.dims == 2048,
        "weights": backbone.path,
        "weights_sha256": backbone.sha256,
        "dims": fid.dims,
        "resize": RESIZE,
        "n_real": real.n,
        "n_fake": fake.n,
        "real": real.source,
        "reference": real.status,
        "kid": {
            "subsets": fid.kid_subsets,
            "subset_size": fid.kid_subset_size,
            "kernel": "(x.y/d+1)^3",
        },
        "precision_recall": {
            "features": f"Inception {fid.dims}-d (FID's; StudioGAN's choice - stylegan2-ada and "
            "the paper use VGG16 fc features, so the numbers are not comparable with theirs)",
            "k": K_PRECISION_RECALL,
            "n": n_pr,
            "membership": "distance <= k-NN radius (Kynkaanniemi et al. 2019)",
        },
        "density_coverage": {
            "features": f"Inception {fid.dims}-d",
            "k": K_DENSITY_COVERAGE,
            "n": n_pr,
            "membership": "distance < k-NN radius (Naeem et al. 2020, prdc)",
        },
        "inception_score": {
            "logits": "1008-way fc without its bias (torch-fidelity's logits_unbiased)",
            "splits": IS_SPLITS,
            "n": fake.n,
            "shuffle_seed": 2020,
        }
        if fake.logits is not None
        else "not computed: below 2048-d it costs the rest of the network (fid.inception_score)",
    }


class Evaluator:
    """Every metric of a generator during training: every rank calls `evaluate` together.

    `labels`: the run's LabelPlan (conditional runs); `judge`: the dataset's class judge, or
    None. With `fid.intra` the per-class check runs here, before any training step."""

    def __init__(
        self,
        fid: FidConfig,
        backbone: Backbone,
        dataset_path: str | Path,
        split: str,
        device="cpu",
        say: Callable[[str], None] = lambda line: None,
        labels=None,
        judge=None,
    ):
        self.fid, self.backbone, self.say = fid, backbone, say
        self.dataset_path, self.split = dataset_path, split
        self.embedder = Embedder(backbone, fid.dims, device, fid.batch, logits=wants_logits(fid))
        self.label_spec = labels.to_dict() if labels is not None else None
        self.judge = judge
        self.real: RealStats | None = None
        self.protocol: dict | None = None
        self.real_labels = None
        if fid.intra:
            if labels is None:  # the driver says so first for a dataset on its own disk
                raise ConfigError("intra-FID needs a conditional model (acgan); leave it off")
            self.real_labels = reference_labels(dataset_path, split, fid, labels)
            check_intra(
                self.real_labels, self.label_spec, fid, f"{Path(dataset_path).name}/{split}"
            )

    def evaluate(self, sample: Callable) -> dict[str, float]:
        """Scores on rank 0 ({} on the others). `sample(n, generator[, y])` -> uint8 NHWC."""
        if self.real is None and self.protocol is None:
            self.real = dataset_reference(
                self.embedder, self.dataset_path, self.split, self.fid, self.say
            )
        started = time.perf_counter()
        fake = generated_pass(self.embedder, sample, self.fid, self.label_spec, self.judge)
        if self.real is None:  # not rank 0
            self.protocol = {}
            return {}
        out, self.protocol = score_pass(
            fake, self.real, self.fid, self.backbone, self.embedder.device,
            self.label_spec, self.real_labels, self.judge,
        )  # fmt: skip
        out["fid_seconds"] = time.perf_counter() - started
        return out


def score_pass(
    fake: Generated, real: RealStats, fid: FidConfig, backbone: Backbone, device,
    label_spec=None, real_labels=None, judge=None,
) -> tuple[dict[str, float], dict]:  # fmt: skip
    """Every score of one pass and its protocol: the Inception metrics, intra-FID when the
    real labels are given, class_acc (beside the judge's own accuracy) when it was judged."""
    details = protocol(backbone, fid, real, fake)
    intra = None
    if real_labels is not None:
        intra = intra_fid(fake, real, real_labels, label_spec)
        details["intra_fid"] = {"per_class": intra, "groups": "softmax groups only"}
    out = scores(fake, real, fid, backbone.standin, intra, device)
    if fake.judged is not None:
        out.update(class_accuracy(fake.judged, fake.intended, judge.names))
        out.update(judge.info)
        details["class_acc"] = judge_protocol(judge)
    return out, details


def judge_protocol(judge) -> dict:
    """What `class_acc` means: which judge read the images, and how well it reads real ones."""
    details = judge.details
    return {
        "judge": str(details.weights.name) if details else None,
        "held_out": details.held_out if details else None,
        "chance_uniform": details.uniform if details else None,
        "chance_majority": details.majority if details else None,
        "labels": "balanced: every class of a group equally often, seeded",
        **judge.info,
    }
