"""FID in use: the cached reference statistics, FID during training (world size 1), and
`pipeline evaluate` on a checkpoint, with each bad input a user can give."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.metrics.config import FidConfig
from pipeline.metrics.fid import Embedder, dataset_reference, ensure_reference
from pipeline.metrics.weights import resolve
from pipeline.training.runner import LocalContext, run_worker
from tests.test_training_loop import config
from tests.train_fixtures import anime_dataset

SMALL = ("--samples", "96", "--dims", "64", "--kid-subsets", "10")


@pytest.fixture(scope="module")
def anime(tmp_path_factory):
    from tests.conftest import require_shared

    require_shared("anime-mlds2018")
    return anime_dataset(tmp_path_factory.mktemp("fid"))


@pytest.fixture(scope="module")
def checkpoint(anime, tmp_path_factory):
    """A 32 px DCGAN trained one epoch on the anime faces (no Ray: the loop alone)."""
    ctx = LocalContext(tmp_path_factory.mktemp("ckpt"))
    run_worker(config("dcgan", anime, epochs=1), ctx, str(anime))
    return ctx.resume_from / "checkpoint.pt"


def stats_files(dataset):
    return sorted((dataset / "stats").glob("*.npz")) if (dataset / "stats").exists() else []


def test_reference_statistics_are_computed_once_then_read_from_the_cache(tmp_path):
    from tests.conftest import require_shared

    require_shared("anime-mlds2018")
    dataset = anime_dataset(tmp_path)
    embedder = Embedder(resolve(), 64, batch=32)
    fid = FidConfig(samples=80, dims=64)
    first = dataset_reference(embedder, dataset, "train", fid)
    (path,) = stats_files(dataset)
    stamp = path.stat().st_mtime_ns
    second = dataset_reference(embedder, dataset, "train", fid)
    assert (first.status, second.status) == ("computed", "cached")
    assert path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first.sigma, second.sigma)
    assert first.n == 80 and second.features.shape == (80, 64)
    # Another sample count is another key; a damaged cache file is recomputed, not trusted.
    dataset_reference(embedder, dataset, "train", FidConfig(samples=90, dims=64))
    assert len(stats_files(dataset)) == 2
    path.write_bytes(b"garbage")
    again = dataset_reference(embedder, dataset, "train", fid)
    assert again.status == "computed"
    np.testing.assert_allclose(again.sigma, first.sigma, rtol=1e-12)
    assert not list((dataset / "stats").glob(".*tmp*"))  # no half-written file left


def _reference_on_rank(rank: int, world: int, init: str, dataset: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    embedder = Embedder(resolve(download=False, say=lambda line: None), 64, batch=16)
    real = dataset_reference(embedder, dataset, "train", FidConfig(samples=70, dims=64))
    assert (real is None) == (rank != 0)  # the statistics live on rank 0
    if rank == 0:
        np.savez(out, mu=real.mu, sigma=real.sigma, features=real.features)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_compute_the_reference_together_as_one_process_does(tmp_path):
    """GPU runs and remote clusters: the workers share the reference images at the first
    evaluation (gloo here); rank 0 gets the numbers one process computes alone."""
    import torch.multiprocessing as mp

    from tests.conftest import require_shared

    require_shared("anime-mlds2018")
    together, alone = anime_dataset(tmp_path / "together"), anime_dataset(tmp_path / "alone")
    out = tmp_path / "ranks.npz"
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_reference_on_rank, args=(2, init, str(together), str(out)), nprocs=2)
    (written,) = stats_files(together)  # rank 0 wrote the cache, once
    one = dataset_reference(Embedder(resolve(), 64, batch=16), alone, "train",
                            FidConfig(samples=70, dims=64))  # fmt: skip
    got = np.load(out)
    np.testing.assert_allclose(got["features"], one.features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["mu"], one.mu, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["sigma"], one.sigma, rtol=1e-4, atol=1e-7)
    assert written.name == stats_files(alone)[0].name  # the same cache key


def test_ensure_reference_computes_only_what_the_cache_lacks(tmp_path):
    """What the driver runs before CPU workers start (`precompute_fid_reference`)."""
    from tests.conftest import require_shared

    require_shared("anime-mlds2018")
    dataset = anime_dataset(tmp_path)
    fid = FidConfig(samples=40, dims=64)
    lines = []
    path = ensure_reference(resolve(), dataset, "train", fid, say=lines.append)
    assert stats_files(dataset) == [path] and "computed" in lines[-1]
    stamp = path.stat().st_mtime_ns
    assert ensure_reference(resolve(), dataset, "train", fid, say=lines.append) == path
    assert path.stat().st_mtime_ns == stamp and len(lines) == 1  # read, not recomputed
    cached = dataset_reference(Embedder(resolve(), 64, batch=16), dataset, "train", fid)
    assert cached.status == "cached"


def test_training_logs_standin_fid_every_epoch_with_the_reference_computed_once(anime, tmp_path):
    protocols = []
    cfg = config(
        "dcgan",
        anime,
        epochs=2,
        **{"fid.every": 1, "fid.samples": 96, "fid.dims": 64, "fid.kid_subsets": 5},
    )
    ctx = LocalContext(tmp_path)
    run_worker(cfg, ctx, str(anime), lambda report: protocols.append(report.fid_protocol))
    assert [("fid_standin" in m, "kid_standin" in m, "fid" in m) for m in ctx.reports] == [
        (True, True, False)
    ] * 2
    assert all(np.isfinite(m["fid_standin"]) and m["fid_standin"] > 0 for m in ctx.reports)
    assert [p["reference"] for p in protocols] == ["computed", "computed"]  # kept in memory
    assert protocols[0]["backbone"] == "standin" and protocols[0]["n_fake"] == 96
    assert not protocols[0]["comparable_with_published_fid"]
    assert len(stats_files(anime)) >= 1
    # The same pass gives precision/recall and density/coverage on the same features; the
    # Inception Score only where the network reaches its logits anyway (2048-d) or is asked.
    prdc = ("precision_standin", "recall_standin", "density_standin", "coverage_standin")
    assert all(name in m and 0 <= m[name] for m in ctx.reports for name in prdc)
    assert all("is_standin" not in m and "precision" not in m for m in ctx.reports)
    assert protocols[0]["precision_recall"] | {"features": ""} == {
        "features": "", "k": 3, "n": 96, "membership": "distance <= k-NN radius "
        "(Kynkaanniemi et al. 2019)"}  # fmt: skip
    assert protocols[0]["density_coverage"]["k"] == 5
    assert protocols[0]["inception_score"].startswith("not computed")


def test_evaluate_a_checkpoint_prints_fid_kid_and_the_protocol(cli, anime, checkpoint):
    result = cli("evaluate", checkpoint, "--data", anime, *SMALL)
    assert result.exit_code == 0, result.stderr
    line = result.stdout.splitlines()[0]
    assert line.startswith("fid_standin ") and "kid_standin" in line
    assert "precision_standin" in line and "coverage_standin" in line
    assert "standin weights sha256" in result.stdout and "96 generated" in result.stdout
    assert "not comparable with published FID (stand-in backbone)" in result.stdout
    assert "STAND-IN" in result.stderr
    again = cli("evaluate", checkpoint, "--data", anime, *SMALL)
    assert "(cached)" in again.stdout
    assert again.stdout.splitlines()[0] == line  # same z, same real subset: same numbers


def test_evaluate_against_a_folder_and_published_statistics(cli, anime, checkpoint, tmp_path):
    from pipeline.data.reader import ShardDataset

    folder = tmp_path / "real"
    folder.mkdir()
    images = ShardDataset(anime, "train").take(np.arange(80), columns=[])["image"]
    for i, pixels in enumerate(images):
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    result = cli("evaluate", checkpoint, "--real", folder, *SMALL)
    assert result.exit_code == 0, result.stderr
    assert "(80 images)" in result.stdout and "kid_standin" in result.stdout

    features = np.random.RandomState(0).rand(100, 64)
    stats = tmp_path / "published.npz"
    np.savez(stats, mu=features.mean(0), sigma=np.cov(features, rowvar=False))
    published = cli("evaluate", checkpoint, "--real", stats, *SMALL)
    assert published.exit_code == 0, published.stderr
    first = published.stdout.splitlines()[0]
    assert first.startswith("fid_standin ") and "kid" not in first  # no features: FID only
    assert "precision" not in first and "is_standin" not in first


def one_line_error(result, *fragments):
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_fewer_samples_than_the_statistics_need(cli, anime, checkpoint):
    one_line_error(
        cli("evaluate", checkpoint, "--data", anime, "--samples", "50", "--dims", "64"),
        "fid.samples=50 is too few for 64-d",
    )
    # The dataset itself may be too small for the features asked for.
    one_line_error(
        cli("evaluate", checkpoint, "--data", anime, "--samples", "5000", "--dims", "2048"),
        "too few for 2048-d",
    )


def test_a_dataset_of_another_image_size(cli, checkpoint, tmp_path):
    other = anime_dataset(tmp_path, size=16)
    one_line_error(
        cli("evaluate", checkpoint, "--data", other, *SMALL),
        "holds 16px images",
        "the generator makes 32px",
    )


def test_a_checkpoint_that_is_not_ours(cli, anime, tmp_path):
    foreign = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    one_line_error(cli("evaluate", foreign, "--data", anime, *SMALL), "not a pipeline checkpoint")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    one_line_error(cli("evaluate", text, "--data", anime, *SMALL), "not a pipeline checkpoint")


def test_weights_with_the_wrong_hash_or_keys(cli, anime, checkpoint, tmp_path, monkeypatch):
    wrong = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    wrong.write_bytes(b"\0" * 100)
    one_line_error(
        cli("evaluate", checkpoint, "--data", anime, "--fid-weights", wrong, *SMALL),
        "is not the FID Inception weights",
    )
    keys = tmp_path / "keys.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, keys)
    import hashlib

    monkeypatch.setenv("PIPELINE_FID_SHA256", hashlib.sha256(keys.read_bytes()).hexdigest())
    one_line_error(
        cli("evaluate", checkpoint, "--data", anime, "--fid-weights", keys, *SMALL),
        "does not hold pytorch-fid's Inception weights",
    )


def test_unknown_dims_and_a_missing_real_folder(cli, anime, checkpoint, tmp_path):
    one_line_error(
        cli("evaluate", checkpoint, "--data", anime, "--dims", "100"), "fid.dims=100 is not allowed"
    )
    one_line_error(
        cli("evaluate", checkpoint, "--real", tmp_path / "nowhere", *SMALL),
        "neither a folder of images nor a .npz",
    )


@pytest.mark.slow  # the Inception Score asked for at 64-d: the whole network on 96 images
def test_protocol_is_json_ready(anime, checkpoint):
    from pipeline.training.evaluate import evaluate

    fid = FidConfig(samples=96, dims=64, kid_subsets=3, inception_score=True)
    result = evaluate(str(checkpoint), data=str(anime), fid=fid)
    protocol = json.loads(json.dumps(result.protocol))
    assert protocol["n_real"] == 96
    assert result.run_id is None and result.step > 0
    # Asked for at 64-d, the Inception Score comes from the same pass, 10 splits.
    assert protocol["inception_score"]["splits"] == 10 and protocol["inception_score"]["n"] == 96
    assert result.scores["is_standin"] >= 1 and result.scores["is_std_standin"] >= 0
