"""Precision, recall, density and coverage of generated features against real ones.

    scores = prdc(real_features, fake_features)    # {"precision", "recall", "density", "coverage"}

Improved precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall
Metric for Assessing Generative Models"), with k = `k_pr`: each point carries a ball whose
radius is the distance to its k-th nearest neighbour in its own set, the point itself not
counted (the (k+1)-th smallest distance including itself, as NVIDIA's code takes it).
Precision is the fraction of fakes inside at least one real ball; recall the fraction of
reals inside at least one fake ball. Membership is `<=`, as in NVIDIA's code
(stylegan2-ada-pytorch `metrics/precision_recall.py`, the paper's own implementation).

Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
Generative Models"), with k = `k_dc` and only the real balls: density is
(1 / (k N_fake)) x the number of (fake, real ball) pairs with the fake inside the ball (it can
exceed 1); coverage is the fraction of reals whose nearest fake lies inside that real's ball.
Membership is strict `<`, as in the authors' code (clovaai/generative-evaluation-prdc), which
StudioGAN reports. Each pair follows the code its numbers are compared with; with continuous
features the two differ only on exact ties (a fake equal to a real's k-th neighbour).

Features: Inception pool3 (2048-d), the ones FID uses, as StudioGAN does. The original papers
and stylegan2-ada use VGG-16 fc features, whose weights cannot be fetched here: these numbers
are not comparable with those papers'. As in the papers, the two sets must be of equal size.

Distances are Euclidean, in float64, as ||x||^2 + ||y||^2 - 2 x.y (clamped at 0), in row
batches of `batch`: memory is O(batch x N), never N x N. The real-real distances are computed
once for both radii (k_pr and k_dc), and one pass over the real-fake distances yields all four
scores.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.errors import PipelineError


def prdc(
    real, fake, k_pr: int = 3, k_dc: int = 5, batch: int = 1024, device=None
) -> dict[str, float]:
    """Precision and recall (k = `k_pr`, `<=`), density and coverage (k = `k_dc`, `<`) of
    `fake` against `real`: (N, d) feature matrices (torch or numpy) of the same N."""
    if k_pr < 1 or k_dc < 1 or batch < 1:
        raise PipelineError(f"prdc needs k_pr, k_dc and batch >= 1, got {k_pr}, {k_dc}, {batch}")
    real, fake = _features(real, "real", device), _features(fake, "fake", device)
    if real.shape[1] != fake.shape[1]:
        raise PipelineError(f"real features are {real.shape[1]}-d, fake features {fake.shape[1]}-d")
    fake = fake.to(real.device)
    if len(real) != len(fake):
        raise PipelineError(
            f"{len(real)} real and {len(fake)} fake features: precision/recall/density/"
            "coverage compare sets of equal size"
        )
    k_max = max(k_pr, k_dc)
    if len(real) < k_max + 2:
        raise PipelineError(
            f"{len(real)} samples per set: k = {k_max} nearest neighbours need at least {k_max + 2}"
        )

    # The balls: real radii for both k from one pass, fake radii for precision/recall.
    real_radius_pr, real_radius_dc = _kth_neighbour_distances(real, (k_pr, k_dc), batch)
    (fake_radius_pr,) = _kth_neighbour_distances(fake, (k_pr,), batch)

    # Fake rows against all reals: each batch settles its fakes' precision and density and
    # updates every real's recall and nearest fake (for coverage).
    in_real_ball = torch.zeros(len(fake), dtype=torch.bool, device=real.device)
    real_balls_holding = torch.zeros(len(fake), dtype=torch.int64, device=real.device)
    in_fake_ball = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    nearest_fake = torch.full((len(real),), float("inf"), dtype=torch.float64, device=real.device)
    real_sq = _squared_norms(real)
    for start, distances in _row_batches(fake, real, real_sq, batch):
        rows = slice(start, start + len(distances))
        in_real_ball[rows] = (distances <= real_radius_pr).any(1)
        real_balls_holding[rows] = (distances < real_radius_dc).sum(1)
        in_fake_ball |= (distances <= fake_radius_pr[rows, None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, distances.min(0).values)

    return {
        "precision": in_real_ball.double().mean().item(),
        "recall": in_fake_ball.double().mean().item(),
        "density": real_balls_holding.double().mean().item() / k_dc,
        "coverage": (nearest_fake < real_radius_dc).double().mean().item(),
    }


def _features(x, name: str, device) -> torch.Tensor:
    x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if x.ndim != 2:
        raise PipelineError(f"{name} features of shape {tuple(x.shape)}, expected (N, d)")
    x = x.detach().to(device if device is not None else x.device, torch.float64)
    if not torch.isfinite(x).all():
        raise PipelineError(f"{name} features are not all finite")
    return x


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(1)


def _row_batches(rows: torch.Tensor, cols: torch.Tensor, cols_sq: torch.Tensor, batch: int):
    """(start, Euclidean distances of rows[start : start + batch] to every column)."""
    for start in range(0, len(rows), batch):
        x = rows[start : start + batch]
        squared = _squared_norms(x)[:, None] + cols_sq[None, :] - 2 * (x @ cols.T)
        yield start, squared.clamp_min_(0).sqrt_()


def _kth_neighbour_distances(
    x: torch.Tensor, ks: tuple[int, ...], batch: int
) -> list[torch.Tensor]:
    """For each k, every point's distance to its k-th nearest neighbour in x (itself excluded:
    the (k+1)-th smallest distance, the first being its own ~0)."""
    k_max = max(ks)
    smallest = []
    for _, distances in _row_batches(x, x, _squared_norms(x), batch):
        smallest.append(distances.topk(k_max + 1, dim=1, largest=False, sorted=True).values)
    smallest = torch.cat(smallest)
    return [smallest[:, k] for k in ks]
