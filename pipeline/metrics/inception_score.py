"""The Inception Score (Salimans et al. 2016, "Improved Techniques for Training GANs").

    net = build(backbone, (2048,), device, logits=True)
    features, logits = net(images_0_1)              # logits: (N, 1008), no fc bias
    is_mean, is_std = inception_score(logits)       # 10 splits, shuffled with seed 2020

IS = exp(E_x KL(p(y|x) || p(y))), p(y) being the mean of p(y|x) over the split, computed on
each of `splits` parts and reported as mean and std over the parts. The computation is
torch-fidelity's `isc_features_to_metric` (torch_fidelity/metric_isc.py) step for step, so
that the same logits give the same numbers: the rows shuffled by
`np.random.RandomState(seed).permutation(N)`, float64 softmax and log-softmax, part i the
rows [i N // splits, (i + 1) N // splits), the per-part KL summed over classes and averaged
over rows, exp, then numpy's mean and population std (ddof 0) over the parts.

The logits are the Inception's 1008-way logits WITHOUT the fc bias (torch-fidelity's
`logits_unbiased`, stylegan2-ada's `no_output_bias=True`): that is how the original TF code
read the graph. The standard protocol is 50k generated images and 10 splits; StudioGAN keeps
the bias and uses 1 split, so its IS is not this one.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.errors import PipelineError


def inception_score(
    logits, splits: int = 10, shuffle_seed: int | None = 2020
) -> tuple[float, float]:
    """(mean, std) of the Inception Score over `splits` parts of the (N, 1008) unbiased
    logits (torch or numpy); `shuffle_seed=None` keeps the rows in their order."""
    logits = logits if isinstance(logits, torch.Tensor) else torch.from_numpy(np.asarray(logits))
    if logits.ndim != 2:
        raise PipelineError(f"logits of shape {tuple(logits.shape)}, expected (N, classes)")
    if not torch.isfinite(logits).all():
        raise PipelineError("the logits are not all finite")
    n = len(logits)
    if splits < 1 or n < splits:
        raise PipelineError(
            f"{n} samples for {splits} splits: the Inception Score needs at least one per split"
        )
    if shuffle_seed is not None:
        order = np.random.RandomState(shuffle_seed).permutation(n)
        logits = logits[torch.from_numpy(order).to(logits.device)]
    logits = logits.detach().double()
    p = logits.softmax(dim=1)
    log_p = logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        part = slice(i * n // splits, (i + 1) * n // splits)
        p_y = p[part].mean(dim=0, keepdim=True)
        kl = (p[part] * (log_p[part] - p_y.log())).sum(dim=1)
        scores.append(kl.mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))
