"""Feature statistics, the Frechet distance and KID.

    stats = FeatureStats(2048)
    stats.add(features)                  # per batch, on any rank
    stats.all_reduce()                   # ranks add their sums (and gather features for KID)
    mu, sigma = stats.mean_cov()
    fid = frechet_distance(mu, sigma, mu_ref, sigma_ref)
    kid, kid_std = kid_score(stats.features(), ref_features)

Sums, not means: n, sum x and sum x x^T in float64 are what ranks can simply add, and the
covariance from them loses nothing that matters in float64 (features are O(1)).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from pipeline.errors import PipelineError


class FeatureStats:
    """Running float64 sums of features (and the features themselves, for KID)."""

    def __init__(self, dims: int, keep_features: bool = True):
        self.dims = dims
        self.n = 0
        self.sum = torch.zeros(dims, dtype=torch.float64)
        self.outer = torch.zeros(dims, dims, dtype=torch.float64)
        self.keep_features = keep_features
        self._features: list[torch.Tensor] = []

    def add(self, features: torch.Tensor) -> None:
        if features.ndim != 2 or features.shape[1] != self.dims:
            raise ValueError(
                f"features of shape {tuple(features.shape)}, expected (N, {self.dims})"
            )
        x = features.detach().to("cpu", torch.float64)
        self.n += x.shape[0]
        self.sum += x.sum(0)
        self.outer += x.T @ x
        if self.keep_features:
            self._features.append(features.detach().to("cpu", torch.float32))

    def all_reduce(self) -> None:
        """Add every rank's sums (all ranks end with the totals); gather the features."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        device = comm_device()
        n = torch.tensor([float(self.n)], dtype=torch.float64, device=device)
        total, outer = self.sum.to(device), self.outer.to(device)
        for tensor in (n, total, outer):
            dist.all_reduce(tensor)
        self.sum, self.outer = total.cpu(), outer.cpu()
        if self.keep_features:
            self._features = [gather_rows(self.features_tensor())]
        self.n = int(n.item())

    def features_tensor(self) -> torch.Tensor:
        if not self._features:
            return torch.zeros(0, self.dims)
        return torch.cat(self._features)

    def features(self) -> np.ndarray:
        return self.features_tensor().numpy()

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (as numpy's `np.cov(rowvar=False)`), float64."""
        if self.n < 2:
            raise PipelineError(f"{self.n} sample(s): the covariance needs at least 2")
        mu = self.sum / self.n
        sigma = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.numpy(), sigma.numpy()


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, in rank order, on every rank (the rows themselves when not
    distributed). Ranks may hold different counts; the dtype is kept."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    device = comm_device()
    counts = [
        torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())
    ]
    dist.all_gather(counts, torch.tensor([rows.shape[0]], device=device))
    most = int(max(c.item() for c in counts))
    padded = torch.zeros((most, *rows.shape[1:]), dtype=rows.dtype, device=device)
    padded[: rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(c.item())] for g, c in zip(gathered, counts, strict=True)]).cpu()


def comm_device() -> torch.device:
    """Where collective tensors must live: NCCL (GPU runs) moves CUDA tensors only, gloo CPU
    ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64.

    Tr((S1 S2)^(1/2)) is computed as the sum of the square roots of the eigenvalues of the
    symmetric matrix S1^(1/2) S2 S1^(1/2) (the same eigenvalues as S1 S2): two symmetric
    eigen-decompositions, no complex arithmetic, no sqrtm iterations. Eigenvalues a hair
    below zero (rounding, or a rank-deficient covariance) are clipped to zero: that is
    what the usual sqrtm-then-drop-the-imaginary-part route does in effect.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise PipelineError(
            f"statistics of different shapes: mean {mu1.shape} vs {mu2.shape}, covariance "
            f"{sigma1.shape} vs {sigma2.shape} (were they computed with the same --dims?)"
        )
    for name, value in (
        ("mean", mu1),
        ("mean", mu2),
        ("covariance", sigma1),
        ("covariance", sigma2),
    ):
        if not np.all(np.isfinite(value)):
            raise PipelineError(f"the {name} of the features is not finite")
    diff = mu1 - mu2
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)
    return max(value, 0.0)


def kid_score(
    features1: np.ndarray,
    features2: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): the unbiased MMD^2 estimate with the cubic polynomial
    kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets (torch-fidelity's
    defaults: 100 subsets of 1000, capped here at the smaller sample count). Returns
    (mean, std) over the subsets."""
    n = min(len(features1), len(features2), subset_size)
    if n < 2:
        raise PipelineError(f"KID needs at least 2 samples on each side, got {n}")
    rng = np.random.RandomState(seed)
    x_all = torch.from_numpy(np.asarray(features1, np.float64))
    y_all = torch.from_numpy(np.asarray(features2, np.float64))
    values = np.empty(subsets)
    for i in range(subsets):
        x = x_all[torch.from_numpy(rng.choice(len(x_all), n, replace=False))]
        y = y_all[torch.from_numpy(rng.choice(len(y_all), n, replace=False))]
        values[i] = polynomial_mmd2(x, y)
    return float(values.mean()), float(values.std())


def polynomial_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 between two equal-size samples, cubic polynomial kernel."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (
        m * (m - 1)
    )
    return float(within - 2 * k_xy.sum() / (m * m))
