"""pipeline.metrics.prdc against the papers' definitions, written out here with numpy.

The reference builds the full distance matrices (differences, not the batched
||x||^2 + ||y||^2 - 2 x.y of the module) and sorts them: Kynkaanniemi et al. 2019 for
precision/recall (k-th neighbour excluding the point itself, `<=` as NVIDIA's code), Naeem et
al. 2020 for density/coverage (`<` as clovaai's prdc).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.metrics.prdc import prdc

METRICS = ("precision", "recall", "density", "coverage")


def distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))


def kth_neighbour(x: np.ndarray, k: int) -> np.ndarray:
    # Column 0 of the sorted row is the point itself (distance 0).
    return np.sort(distances(x, x), axis=1)[:, k]


def reference_prdc(real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int) -> dict:
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    d = distances(real, fake)  # (N_real, N_fake)
    real_pr, fake_pr = kth_neighbour(real, k_pr), kth_neighbour(fake, k_pr)
    real_dc = kth_neighbour(real, k_dc)
    return {
        "precision": (d <= real_pr[:, None]).any(axis=0).mean(),
        "recall": (d <= fake_pr[None, :]).any(axis=1).mean(),
        "density": (d < real_dc[:, None]).sum(axis=0).mean() / k_dc,
        "coverage": (d.min(axis=1) < real_dc).mean(),
    }


def features(seed: int, n: int = 300, d: int = 64, fake_scale: float = 1.0, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, d)).astype(np.float32)
    fake = (rng.standard_normal((n, d)) * fake_scale + shift).astype(np.float32)
    return real, fake


@pytest.mark.parametrize(
    "seed, fake_scale, shift",
    [(0, 1.0, 0.0), (1, 1.0, 0.0), (2, 0.6, 0.0), (3, 1.5, 0.1), (4, 1.0, 0.3)],
)
@pytest.mark.parametrize("k_pr, k_dc", [(3, 5), (5, 3), (1, 1)])
def test_matches_the_definitions(seed, fake_scale, shift, k_pr, k_dc):
    real, fake = features(seed, fake_scale=fake_scale, shift=shift)
    ours = prdc(real, fake, k_pr=k_pr, k_dc=k_dc)
    expected = reference_prdc(real, fake, k_pr, k_dc)
    print(seed, fake_scale, shift, {m: round(ours[m], 4) for m in METRICS})
    assert set(ours) == set(METRICS)
    for metric in METRICS:
        assert isinstance(ours[metric], float)
        assert ours[metric] == pytest.approx(expected[metric], abs=1e-6), metric


def test_unequal_spreads_move_precision_and_recall_apart():
    """A narrow fake set sits inside the real support (high precision, low recall); a wide
    one the other way round."""
    real, narrow = features(5, fake_scale=0.5)
    _, wide = features(5, fake_scale=2.0)
    narrow_scores, wide_scores = prdc(real, narrow), prdc(real, wide)
    assert narrow_scores["precision"] > narrow_scores["recall"]
    assert wide_scores["recall"] > wide_scores["precision"]


def test_identical_sets_are_perfect():
    real, _ = features(6)
    scores = prdc(real, real.copy())
    assert scores["precision"] == 1.0
    assert scores["recall"] == 1.0
    assert scores["coverage"] == 1.0
    assert scores["density"] == pytest.approx(reference_prdc(real, real, 3, 5)["density"], abs=1e-6)


def test_one_repeated_fake_has_no_recall():
    real, fake = features(7)
    collapsed = np.repeat(fake[:1], len(fake), axis=0)
    scores = prdc(real, collapsed)
    assert scores["recall"] < 0.05
    assert scores["coverage"] < 0.05


def test_batches_give_the_numbers_of_one_batch():
    real, fake = features(8, fake_scale=1.2)
    whole = prdc(real, fake, batch=len(real))
    for batch in (1, 7, 64, 299):
        assert prdc(real, fake, batch=batch) == pytest.approx(whole, abs=1e-12), batch


def test_torch_and_numpy_inputs_agree():
    real, fake = features(9)
    assert prdc(torch.from_numpy(real), torch.from_numpy(fake)) == pytest.approx(
        prdc(real, fake), abs=1e-12
    )


def test_unequal_sizes_are_a_one_line_error():
    real, fake = features(10)
    with pytest.raises(PipelineError, match="300 real and 200 fake") as error:
        prdc(real, fake[:200])
    assert "\n" not in str(error.value)


def test_too_few_points_are_a_one_line_error():
    real, fake = features(11, n=6)
    with pytest.raises(PipelineError, match="at least 7") as error:
        prdc(real, fake, k_pr=3, k_dc=5)
    assert "\n" not in str(error.value)
    assert set(prdc(real, fake, k_pr=3, k_dc=4)) == set(METRICS)  # 6 = 4 + 2 is enough


def test_other_bad_inputs_are_one_line_errors():
    real, fake = features(12)
    for bad_real, bad_fake in [(real, fake[:, :32]), (real[0], fake[0])]:
        with pytest.raises(PipelineError) as error:
            prdc(bad_real, bad_fake)
        assert "\n" not in str(error.value)
    fake[0, 0] = np.nan
    with pytest.raises(PipelineError, match="not all finite"):
        prdc(real, fake)
