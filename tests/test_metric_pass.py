"""One evaluation pass, every metric (pipeline.metrics.evaluation): intra-FID as the mean of
per-class FIDs computed one by one, balanced labels, the per-class check, class accuracy and
the metric names of the stand-in."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist

from pipeline.config import ConfigError
from pipeline.judge.judge import class_accuracy
from pipeline.metrics.config import FidConfig
from pipeline.metrics.evaluation import (
    Generated,
    balanced_labels,
    check_intra,
    generated_pass,
    intra_fid,
    scores,
)
from pipeline.metrics.fid import RealStats
from pipeline.metrics.stats import FeatureStats, frechet_distance

SPEC = {  # two softmax groups and one attribute, as LabelPlan.to_dict() gives them
    "groups": [3, 2],
    "binary": 1,
    "group_names": ["hair", "eyes"],
    "class_names": [["red", "blue", "green"], ["brown", "black"]],
    "attr_names": ["Smiling"],
}


def fake_and_real(n: int = 600, d: int = 8, seed: int = 0):
    """Features whose mean depends on the class, for a fake and a real side."""
    rng = np.random.RandomState(seed)
    intended = balanced_labels(SPEC, n, seed)
    real_labels = balanced_labels(SPEC, n, seed + 1)
    offsets = rng.randn(3, d)

    def features(hair):
        return (rng.randn(len(hair), d) + 2 * offsets[hair]).astype(np.float32)

    made = np.where(intended[:, 0] == 2, 0, intended[:, 0])  # G draws red when asked for green
    stats = FeatureStats(d)
    stats.add(torch.from_numpy(features(made)))
    theirs = features(real_labels[:, 0])
    mu, sigma = theirs.astype(np.float64).mean(0), np.cov(theirs.astype(np.float64), rowvar=False)
    real = RealStats(mu, sigma, theirs, n, "test")
    return Generated(stats, None, intended, None), real, real_labels


def test_intra_fid_is_the_mean_of_the_per_class_fids_computed_one_by_one():
    fake, real, real_labels = fake_and_real()
    per_class = intra_fid(fake, real, real_labels, SPEC)
    ours, theirs = fake.stats.features().astype(np.float64), real.features.astype(np.float64)
    by_hand = {}
    groups = zip(SPEC["group_names"], SPEC["class_names"], strict=True)
    for g, (group, names) in enumerate(groups):
        for c, name in enumerate(names):
            a, b = ours[fake.intended[:, g] == c], theirs[real_labels[:, g] == c]
            by_hand[f"{group}={name}"] = frechet_distance(
                a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
            )
    assert per_class.keys() == by_hand.keys()
    for name in by_hand:
        assert per_class[name] == pytest.approx(by_hand[name], rel=1e-9)
    out = scores(fake, real, FidConfig(dims=64, kid_subsets=2), standin=False, intra=per_class)
    assert out["intra_fid"] == pytest.approx(np.mean(list(by_hand.values())), rel=1e-9)
    assert out["intra_fid_worst"] == pytest.approx(max(by_hand.values()), rel=1e-9)
    # The class G fails is the worst, far above the ones it makes right.
    assert out["intra_fid_worst"] == per_class["hair=green"] > 10 * per_class["hair=blue"]


def test_every_inception_metric_carries_the_standin_suffix_and_precision_is_a_fraction():
    fake, real, _ = fake_and_real()
    out = scores(fake, real, FidConfig(dims=64, kid_subsets=2), standin=True)
    assert set(out) == {
        "fid_standin", "kid_standin", "kid_std_standin", "precision_standin",
        "recall_standin", "density_standin", "coverage_standin",
    }  # fmt: skip
    for name in ("precision_standin", "recall_standin", "coverage_standin"):
        assert 0 <= out[name] <= 1


def test_balanced_labels_give_every_class_its_share_in_a_seeded_order():
    y = balanced_labels(SPEC, 1001, seed=3)
    assert y.shape == (1001, 3) and y.dtype == np.int64
    for column, classes in ((0, 3), (1, 2), (2, 2)):
        counts = np.bincount(y[:, column], minlength=classes)
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(y, balanced_labels(SPEC, 1001, seed=3))
    assert not np.array_equal(y, balanced_labels(SPEC, 1001, seed=4))
    assert balanced_labels(None, 10, 0) is None


def test_class_accuracy_per_group_and_attribute_and_their_mean():
    intended = np.array([[0, 1, 1], [1, 0, 0], [2, 1, 1], [0, 0, 0]])
    judged = np.array([[0, 1, 0], [2, 0, 0], [2, 1, 0], [0, 1, 0]])
    out = class_accuracy(judged, intended, ["hair", "eyes", "Smiling"])
    assert out == pytest.approx(
        {
            "class_acc/hair": 0.75,
            "class_acc/eyes": 0.75,
            "class_acc/Smiling": 0.5,
            "class_acc": (0.75 + 0.75 + 0.5) / 3,
        }  # fmt: skip
    )


def test_intra_fid_refuses_a_class_with_too_few_real_images_in_one_line():
    labels = balanced_labels(SPEC, 300, 0)
    labels[labels[:, 0] == 2, 0] = 1  # no green at all, blue twice
    with pytest.raises(ConfigError) as error:
        check_intra(labels, SPEC, FidConfig(dims=64, samples=600), "anime/train")
    message = str(error.value)
    assert "\n" not in message
    assert "class hair=green has 0 real images among the 300 compared" in message
    with pytest.raises(ConfigError, match="fid.samples=150 gives 50 generated images per hair"):
        check_intra(balanced_labels(SPEC, 600, 0), SPEC, FidConfig(dims=64, samples=150), "x")
    check_intra(balanced_labels(SPEC, 600, 0), SPEC, FidConfig(dims=64, samples=600), "x")
    unconditional = {**SPEC, "groups": [], "group_names": [], "class_names": []}
    with pytest.raises(ConfigError, match="needs a conditional run with class groups"):
        check_intra(labels, unconditional, FidConfig(dims=64), "x")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_k_nn_metrics_on_a_gpu_equal_the_cpu_ones():
    """A GPU run computes precision/recall/density/coverage where its features are made."""
    from pipeline.metrics.prdc import prdc

    rng = np.random.RandomState(0)
    real, fake = rng.randn(3000, 2048), rng.randn(3000, 2048) * 1.1 + 0.05
    on_cpu = prdc(real, fake, batch=512)
    on_gpu = prdc(real, fake, batch=512, device="cuda")
    assert on_gpu == pytest.approx(on_cpu, abs=1e-6)


# -- the pass itself, on two real gloo ranks -------------------------------------------------

TWO_GROUPS = {
    "groups": [3, 2],
    "binary": 0,
    "group_names": ["hair", "eyes"],
    "class_names": [["red", "blue", "green"], ["brown", "black"]],
    "attr_names": [],
}
JUDGE_KEY = {"groups": ["hair", "eyes"], "attrs": [], "height": 16, "width": 16, "channels": 3,
             "class_names": TWO_GROUPS["class_names"]}  # fmt: skip


def one_rank(rank: int, world: int, port: int, folder: str) -> None:
    """What one rank of a `world`-rank evaluation pass gathers, beside what it made itself."""
    from pipeline.judge.judge import Judge
    from pipeline.judge.net import JudgeNet
    from pipeline.metrics.fid import Embedder
    from pipeline.metrics.weights import resolve

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # one judge, the same on both ranks
        judge = Judge(JudgeNet(3, (3, 2), 0), JUDGE_KEY, device="cpu")
        embedder = Embedder(resolve(download=False), 64, "cpu", batch=6, logits=True)
        made = []

        def sample(n, generator, y):  # images that depend on the asked hair colour
            noise = torch.randint(0, 200, (n, 16, 16, 3), generator=generator)
            made.append((noise + 25 * y[:, :1, None, None]).to(torch.uint8).numpy())
            return made[-1]

        fake = generated_pass(
            embedder, sample, FidConfig(samples=22, dims=64, batch=6), TWO_GROUPS, judge
        )
        mine = np.concatenate(made)
        features, logits = embedder.embed(mine)
        torch.save(
            {"n": fake.n, "features": fake.stats.features(), "logits": fake.logits,
             "intended": fake.intended, "judged": fake.judged, "own_features": features,
             "own_logits": logits, "own_judged": judge.predict(mine)},
            os.path.join(folder, f"rank{rank}.pt"),
        )  # fmt: skip
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes, each building the full stand-in Inception
def test_two_ranks_gather_every_image_label_reading_and_logit_in_rank_order(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(one_rank, args=(2, port, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for got in ranks:  # every rank ends with the whole set
        assert got["n"] == 22
        np.testing.assert_array_equal(
            got["features"], np.concatenate([r["own_features"].numpy() for r in ranks])
        )
        torch.testing.assert_close(got["logits"], torch.cat([r["own_logits"] for r in ranks]))
        np.testing.assert_array_equal(got["intended"], balanced_labels(TWO_GROUPS, 22, 0))
        np.testing.assert_array_equal(
            got["judged"], np.concatenate([r["own_judged"] for r in ranks])
        )
