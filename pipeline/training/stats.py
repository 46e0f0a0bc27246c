"""What a step measures, kept on the device until a report: the meter that sums per-step
values without a host sync and reduces them across ranks, and the statistics every GAN run
logs (gradient norms, D's scores, colour drift, diversity)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn


class Meter:
    """Per-step values summed as tensors (no sync), averaged across ranks at report time.

    Each name keeps its own count: G's losses exist only every n_critic steps. Every rank
    records the same names in the same steps, so one all-reduce of the stacked sums suffices.
    """

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, **values: torch.Tensor) -> None:
        for name, value in values.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
            self.counts[name] = self.counts.get(name, 0) + 1

    def peek(self, names) -> dict[str, float]:
        """This rank's mean since the last report of each scalar in `names` it holds: one host
        sync (the progress line's, every few seconds; never per step)."""
        have = [n for n in names if n in self.sums and self.sums[n].numel() == 1]
        if not have:
            return {}
        means = torch.stack([self.sums[n].reshape(()) / self.counts[n] for n in have])
        return dict(zip(have, means.tolist(), strict=True))

    def reduce(self, world_size: int) -> dict[str, torch.Tensor]:
        names = sorted(self.sums)
        flat = torch.cat([self.sums[n].reshape(-1) for n in names])
        if world_size > 1:
            dist.all_reduce(flat)
        out, i = {}, 0
        for n in names:
            size = self.sums[n].numel()
            total = flat[i : i + size] / (self.counts[n] * world_size)
            out[n] = total.reshape(self.sums[n].shape).cpu()
            i += size
        self.sums, self.counts = {}, {}
        return out


def flatten_metrics(values: dict[str, torch.Tensor], channels: int) -> dict[str, float]:
    """Scalars as they are; per-channel values as name_r/g/b (or name_0, name_1, ...)."""
    names = "rgb" if channels == 3 else [str(i) for i in range(channels)]
    out: dict[str, float] = {}
    for key, value in values.items():
        if value.numel() == 1:
            out[key] = float(value)
        else:
            for c, v in zip(names, value.tolist(), strict=True):
                out[f"{key}_{c}"] = v
    return out


def grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad.detach().float() for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [-1, 1] units (colour drift and darkening show here)."""
    x = x.detach().float()
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))


def diversity(x: torch.Tensor) -> torch.Tensor:
    """Mean pairwise L2 distance between the images of a batch (mode collapse drives it to 0)."""
    flat = x.detach().float().flatten(1)
    return torch.pdist(flat).mean() / math.sqrt(flat.shape[1]) if len(flat) > 1 else flat.sum() * 0


def score(logits: torch.Tensor, wasserstein: bool) -> torch.Tensor:
    """D's mean output: a probability (D(x), D(G(z))), or the raw critic score for WGAN."""
    return logits.float().mean() if wasserstein else torch.sigmoid(logits.float()).mean()


def image_summaries(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """One number for "are the colours right" and one for "is G collapsing", from the reduced
    channel statistics and diversities of fake and real batches."""
    # color_gap: mean |fake - real| over the channel means and stds.
    color_gap = (
        (values["fake_mean"] - values["real_mean"]).abs().mean()
        + (values["fake_std"] - values["real_std"]).abs().mean()
    ) / 2
    ratio = values["diversity_fake"] / values["diversity_real"].clamp_min(1e-8)
    return {"color_gap": float(color_gap), "diversity": float(ratio)}
