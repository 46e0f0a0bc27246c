"""GAN losses behind one small interface, picked by name from LOSSES.

    loss = get_loss("nsgan")
    errD = loss.d_loss(real_logits, fake_logits)   # scalar; d_loss_parts gives real, fake
    errG = loss.g_loss(fake_logits)
    if loss.gradient_penalty:                      # WGAN-GP
        errD = errD + 10 * gradient_penalty(D, real, fake, y)

All take D's raw outputs (logits, critic scores), never probabilities: the log-sigmoid forms
are written with softplus, log(sigmoid(t)) = -softplus(-t), which stays finite where
sigmoid-then-log gives -inf.

    nsgan     Goodfellow et al. 2014, the non-saturating G loss -log D(G(z)) (DCGAN's)
    minimax   Goodfellow et al. 2014, the original game: G minimizes log(1 - D(G(z)))
    hinge     Lim & Ye 2017; Miyato et al. 2018 (SNGAN)
    wgan      Arjovsky et al. 2017's critic loss (the critic kept Lipschitz by weight clipping)
    wgan-gp   the same critic loss with Gulrajani et al. 2017's gradient penalty
    lsgan     Mao et al. 2017, least squares with the 0-1 coding (a=0, b=c=1)

The ACGAN class loss (Odena et al. 2017) is `class_loss`: cross-entropy per softmax group
plus binary cross-entropy per attribute. Labels equal to -1 (a missing label in the shard
reader's batches) are left out of the class loss and accuracy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.config import ConfigError

if TYPE_CHECKING:  # the models check configs against the losses, so losses import no model
    from pipeline.models.config import ClassSpec

MISSING = -1  # a label the dataset does not have (pipeline.data.reader.MISSING)


class GANLoss:
    """The adversarial loss of D and of G from D's logits on real and fake images."""

    name: str = ""
    gradient_penalty: bool = False  # the caller adds lambda * gradient_penalty(...) to D's loss
    wasserstein: bool = False  # D outputs critic scores, not the logit of a probability
    # D's output between a "real" and a "fake" verdict; None: a critic's scores have none.
    boundary: float | None = 0.0

    def d_loss_parts(self, real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
        """D's loss on the real batch and on the fake batch (errD_real, errD_fake)."""
        raise NotImplementedError

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        real, fake = self.d_loss_parts(real_logits, fake_logits)
        return real + fake

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def real_signs(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """+1 for each real image D puts on the real side of its boundary, -1 on the fake side
        (ADA's r_t is their mean). A critic's scores have no fixed boundary: the midpoint of
        the batch's mean score on reals and on fakes stands for it."""
        real, fake = real_logits.detach().float(), fake_logits.detach().float()
        boundary = self.boundary if self.boundary is not None else (real.mean() + fake.mean()) / 2
        return torch.sign(real - boundary)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NonSaturating(GANLoss):
    """D: -log D(x) - log(1 - D(G(z))); G: -log D(G(z))."""

    name = "nsgan"

    def d_loss_parts(self, real_logits, fake_logits):
        return F.softplus(-real_logits).mean(), F.softplus(fake_logits).mean()

    def g_loss(self, fake_logits):
        return F.softplus(-fake_logits).mean()


class Minimax(NonSaturating):
    """D as nsgan; G minimizes log(1 - D(G(z))) = -softplus(logit) (saturates early on)."""

    name = "minimax"

    def g_loss(self, fake_logits):
        return -F.softplus(fake_logits).mean()


class Hinge(GANLoss):
    """D: relu(1 - D(x)) + relu(1 + D(G(z))); G: -D(G(z))."""

    name = "hinge"

    def d_loss_parts(self, real_logits, fake_logits):
        return F.relu(1 - real_logits).mean(), F.relu(1 + fake_logits).mean()

    def g_loss(self, fake_logits):
        return -fake_logits.mean()


class Wasserstein(GANLoss):
    """Critic: D(G(z)) - D(x); G: -D(G(z)). The critic must be kept Lipschitz: by clipping its
    weights (`weight_clip`, done after each D step) or by the gradient penalty (wgan-gp)."""

    name = "wgan"
    wasserstein = True
    boundary = None

    def d_loss_parts(self, real_logits, fake_logits):
        return -real_logits.mean(), fake_logits.mean()

    def g_loss(self, fake_logits):
        return -fake_logits.mean()


class WassersteinGP(Wasserstein):
    """The Wasserstein losses, plus the gradient penalty (added by the caller)."""

    name = "wgan-gp"
    gradient_penalty = True


class LeastSquares(GANLoss):
    """D: (D(x) - 1)^2 / 2 + D(G(z))^2 / 2; G: (D(G(z)) - 1)^2 / 2."""

    name = "lsgan"
    boundary = 0.5  # halfway between the fake (0) and real (1) targets

    def d_loss_parts(self, real_logits, fake_logits):
        return 0.5 * (real_logits - 1).square().mean(), 0.5 * fake_logits.square().mean()

    def g_loss(self, fake_logits):
        return 0.5 * (fake_logits - 1).square().mean()


LOSSES: dict[str, type[GANLoss]] = {
    "nsgan": NonSaturating,
    "minimax": Minimax,
    "hinge": Hinge,
    "wgan": Wasserstein,
    "wgan-gp": WassersteinGP,
    "lsgan": LeastSquares,
}


def get_loss(name: str) -> GANLoss:
    if name not in LOSSES:
        raise ConfigError(f"loss {name!r} is not known; choose one of: {', '.join(LOSSES)}")
    return LOSSES[name]()


def gradient_penalty(D, real: Tensor, fake: Tensor, y: Tensor | None = None) -> Tensor:
    """Gulrajani et al. 2017: mean over the batch of (||grad_x D(x_hat)||_2 - 1)^2 at
    x_hat = eps * real + (1 - eps) * fake, eps ~ U[0, 1] per sample. The graph is kept
    (create_graph) so that the penalty trains D; the weight (10) is the caller's. D may return
    a tensor or (adv_logits, class_logits). Per-sample gradients are only right when D treats
    samples independently: no batch norm in D."""
    eps = torch.rand(real.size(0), *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = D(x_hat, y) if y is not None else D(x_hat)
    if isinstance(out, tuple):
        out = out[0]
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    # The 1e-12 keeps the backward of the norm finite where a gradient is exactly zero.
    norm = grad.flatten(1).square().sum(1).add(1e-12).sqrt()
    return (norm - 1).square().mean()


def class_loss(class_logits: Tensor, y: Tensor, classes: ClassSpec) -> Tensor:
    """ACGAN's class loss: cross-entropy per softmax group plus binary cross-entropy per
    attribute, each a mean over the labelled samples of the batch, summed over groups and
    attributes."""
    total = class_logits.new_zeros(())
    for logits, target, binary in _tasks(class_logits, y, classes):
        known = target != MISSING
        if binary:
            per_sample = F.binary_cross_entropy_with_logits(
                logits, target.clamp(min=0).to(logits.dtype), reduction="none"
            )
        else:
            per_sample = F.cross_entropy(logits, target.clamp(min=0), reduction="none")
        total = total + (per_sample * known).sum() / known.sum().clamp(min=1)
    return total


@torch.no_grad()
def class_accuracy(class_logits: Tensor, y: Tensor, classes: ClassSpec) -> Tensor:
    """Accuracy per group (argmax) and per attribute (logit > 0), averaged over them."""
    accuracies = []
    for logits, target, binary in _tasks(class_logits, y, classes):
        known = target != MISSING
        if not known.any():
            continue
        predicted = (logits > 0).long() if binary else logits.argmax(1)
        accuracies.append((predicted == target)[known].float().mean())
    if not accuracies:
        return class_logits.new_zeros(())
    return torch.stack(accuracies).mean()


def _tasks(class_logits: Tensor, y: Tensor, classes: ClassSpec):
    """(logits, target, binary) per group (logits (B, n)) and per attribute (logits (B,))."""
    if class_logits.shape[1] != classes.logits or y.shape[1] != classes.columns:
        raise ValueError(
            f"class logits {tuple(class_logits.shape)} and labels {tuple(y.shape)} do not fit "
            f"{classes}: expected {classes.logits} logits and {classes.columns} label columns"
        )
    start = 0
    for i, n in enumerate(classes.groups):
        yield class_logits[:, start : start + n], y[:, i], False
        start += n
    for a in range(classes.binary):
        yield class_logits[:, start + a], y[:, len(classes.groups) + a], True
