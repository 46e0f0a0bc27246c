"""The optimizers a task's networks train with, their rates under the schedule, and one update.

    opt_d = make_optimizer(config.optim, D.parameters(), config.optim.lr_d)
    rates = scale_rates(factor, lr_g=(opt_g, optim.lr_g), lr_d=(opt_d, optim.lr_d))
    grad_norm_d = update(D, opt_d, loss_d)

Shared by every task, so that `optim.optimizer` and the schedule mean the same in each.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.training.stats import grad_norm

# The optimizers the networks can train with (`optim.optimizer`): Adam with the config's betas,
# RMSProp without momentum, as WGAN trains (Arjovsky et al. 2017: momentum-based optimizers
# made its critic unstable), or Adadelta, as GLCIC trains (Iizuka et al. 2017; its lr scales
# the computed update: 1.0 is Zeiler's).
OPTIMIZERS = {
    "adam": lambda params, lr, optim: torch.optim.Adam(
        params, lr=lr, betas=(optim.beta1, optim.beta2)
    ),
    "rmsprop": lambda params, lr, optim: torch.optim.RMSprop(params, lr=lr),
    "adadelta": lambda params, lr, optim: torch.optim.Adadelta(params, lr=lr),
}


def make_optimizer(optim, params, lr: float) -> torch.optim.Optimizer:
    return OPTIMIZERS[optim.optimizer](params, lr, optim)


def scale_rates(factor: float, **optimizers) -> dict[str, float]:
    """Set each optimizer's rate to its config rate x `factor`: `name=(optimizer, lr)`;
    returns {name: the rate now} for the report."""
    for optimizer, lr in optimizers.values():
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
    return {name: opt.param_groups[0]["lr"] for name, (opt, _) in optimizers.items()}


def update(net: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
    """Gradients zeroed, backward, one optimizer step; returns the gradient norm."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = grad_norm(net)
    optimizer.step()
    return norm
