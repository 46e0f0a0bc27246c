"""The statistics of FID and KID: running sums, the Frechet distance, the KID estimator."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from pipeline.errors import PipelineError
from pipeline.metrics.stats import FeatureStats, frechet_distance, kid_score, polynomial_mmd2


def random_cov(rng: np.random.RandomState, d: int) -> np.ndarray:
    a = rng.randn(d, d)
    return a @ a.T / d + 0.1 * np.eye(d)


def reference_fid(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's formula, float64 NumPy/SciPy: sqrtm of the product, with the offset
    fallback and the imaginary part dropped."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def test_frechet_closed_form_for_diagonal_gaussians():
    rng = np.random.RandomState(0)
    d = 16
    mu1, mu2 = rng.randn(d), rng.randn(d)
    s1, s2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    # For commuting (diagonal) covariances: sum (sqrt(s1) - sqrt(s2))^2 + ||mu1 - mu2||^2.
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, 1e-12)


def test_frechet_closed_form_for_scaled_covariance():
    # S2 = c^2 S1: Tr(S1 + S2 - 2 sqrt(S1 S2)) = (1 - c)^2 Tr(S1)
    rng = np.random.RandomState(1)
    s1 = random_cov(rng, 32)
    mu = rng.randn(32)
    value = frechet_distance(mu, s1, mu, 4.0 * s1)
    assert value == pytest.approx(np.trace(s1), rel=1e-10)


def test_frechet_matches_the_numpy_scipy_reference_and_is_symmetric():
    rng = np.random.RandomState(2)
    for d in (8, 64, 256):
        mu1, mu2 = rng.randn(d), rng.randn(d) * 0.1
        s1, s2 = random_cov(rng, d), random_cov(rng, d)
        ours = frechet_distance(mu1, s1, mu2, s2)
        assert ours == pytest.approx(reference_fid(mu1, s1, mu2, s2), rel=1e-9)
        assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ours, rel=1e-9)


def test_frechet_is_zero_for_identical_statistics_even_rank_deficient():
    rng = np.random.RandomState(3)
    features = rng.randn(20, 64)  # 20 samples in 64-d: a singular covariance
    mu, sigma = features.mean(0), np.cov(features, rowvar=False)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_frechet_rejects_mismatched_or_non_finite_statistics():
    with pytest.raises(PipelineError, match="same --dims"):
        frechet_distance(np.zeros(4), np.eye(4), np.zeros(8), np.eye(8))
    bad = np.eye(4)
    bad[0, 0] = np.nan
    with pytest.raises(PipelineError, match="not finite"):
        frechet_distance(np.zeros(4), bad, np.zeros(4), np.eye(4))


def test_running_sums_give_numpy_mean_and_cov_and_add_across_parts():
    rng = np.random.RandomState(4)
    features = rng.rand(300, 32).astype(np.float32)
    whole = FeatureStats(32)
    for start in range(0, 300, 64):
        whole.add(torch.from_numpy(features[start : start + 64]))
    mu, sigma = whole.mean_cov()
    np.testing.assert_allclose(mu, features.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(features.astype(np.float64), rowvar=False), atol=1e-12)
    np.testing.assert_array_equal(whole.features(), features)


def test_too_few_samples_is_an_error():
    stats = FeatureStats(8)
    stats.add(torch.zeros(1, 8))
    with pytest.raises(PipelineError, match="at least 2"):
        stats.mean_cov()
    with pytest.raises(PipelineError, match="at least 2"):
        kid_score(np.zeros((1, 8)), np.zeros((5, 8)))


def direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimator written out pair by pair (slow, obviously right)."""
    m, d = x.shape

    def k(a, b):
        return (float(a @ b) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m)


def test_kid_matches_a_direct_implementation_of_the_estimator():
    rng = np.random.RandomState(5)
    x, y = rng.rand(40, 16), rng.rand(50, 16) + 0.1
    ours = polynomial_mmd2(torch.from_numpy(x[:12]), torch.from_numpy(y[:12]))
    assert ours == pytest.approx(direct_mmd2(x[:12], y[:12]), rel=1e-10)

    # Over subsets: the mean of the direct estimator on the same random subsets.
    subsets, size = 5, 12
    choice = np.random.RandomState(7)
    direct = []
    for _ in range(subsets):
        a = x[choice.choice(len(x), size, replace=False)]
        b = y[choice.choice(len(y), size, replace=False)]
        direct.append(direct_mmd2(a, b))
    mean, std = kid_score(x, y, subsets=subsets, subset_size=size, seed=7)
    assert mean == pytest.approx(np.mean(direct), rel=1e-10)
    assert std == pytest.approx(np.std(direct), rel=1e-8)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.RandomState(6)
    same = kid_score(rng.rand(400, 16), rng.rand(400, 16), subsets=10, subset_size=200)[0]
    other = kid_score(rng.rand(400, 16), rng.rand(400, 16) + 0.5, subsets=10, subset_size=200)[0]
    assert abs(same) < 1e-3 < other


def _rank_sums(rank: int, world: int, init: str, features: np.ndarray, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    stats = FeatureStats(features.shape[1])
    part = features[rank::world][: 7 + 5 * rank]  # unequal shares, as N % world leaves them
    stats.add(torch.from_numpy(part))
    stats.all_reduce()
    if rank == 0:
        mu, sigma = stats.mean_cov()
        np.savez(out, mu=mu, sigma=sigma, features=stats.features(), n=stats.n)
    dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_add_their_sums_and_gather_features_over_gloo(tmp_path):
    import torch.multiprocessing as mp

    features = np.random.RandomState(8).rand(40, 6).astype(np.float32)
    out = tmp_path / "stats.npz"
    mp.spawn(
        _rank_sums,
        args=(2, f"file://{tmp_path / 'rendezvous'}", features, str(out)),
        nprocs=2,
    )
    used = np.concatenate([features[0::2][:7], features[1::2][:12]])
    got = np.load(out)
    assert int(got["n"]) == 19
    np.testing.assert_array_equal(got["features"], used)
    np.testing.assert_allclose(got["mu"], used.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(
        got["sigma"], np.cov(used.astype(np.float64), rowvar=False), atol=1e-12
    )
