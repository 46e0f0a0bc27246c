"""The GAN objective of a run: the adversarial loss from `pipeline.losses` plus the terms the
config adds, behind one interface, `Objective.loss(phase, real, fake)`, as stylegan2-ada's
`Loss.accumulate_gradients(phase, ...)`. The step asks for "D" or "G"; which terms take part
is decided once, from the config, by the TERMS registry:

    class      ACGAN (Odena et al. 2017): D classifies real and fake, G wants its fakes
               classified as the class it was asked for; weighted by lambda_cls
    penalty    WGAN-GP (Gulrajani et al. 2017): (||grad D(x_hat)|| - 1)^2 on D only;
               weighted by lambda_gp

When the phases run is data too (`Phase`): D every step, G every `optim.n_critic` steps.
A constraint on D's weights after its update (WGAN's clipping, Arjovsky et al. 2017) is the
objective's too: `constrain_d`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.losses import GANLoss, class_accuracy, class_loss, get_loss, gradient_penalty
from pipeline.models.config import ClassSpec
from pipeline.training.config import TrainConfig


@dataclass(frozen=True)
class Phase:
    """One network's update: `D` or `G`, once every `every` steps."""

    name: str
    every: int = 1

    def due(self, step: int) -> bool:
        return (step + 1) % self.every == 0


def gan_phases(config: TrainConfig) -> tuple[Phase, Phase]:
    """D every step, G every n_critic D steps (WGAN's critic iterations)."""
    return Phase("D"), Phase("G", every=config.optim.n_critic)


@dataclass
class Judged:
    """A batch and what D said of it: adversarial logits, class logits (ACGAN heads)."""

    x: Tensor
    y: Tensor | None
    logits: Tensor
    cls: Tensor | None = None


Parts = dict[str, Tensor]  # a loss's named parts and side measures, for the report


class Term:
    """A weighted addition to the adversarial loss of D, of G, or both (None: not in that
    phase). `applies` says from the config whether a run has the term at all."""

    name = ""

    def __init__(self, config: TrainConfig, classes: ClassSpec | None, D: nn.Module):
        self.config, self.classes, self.D = config, classes, D

    @staticmethod
    def applies(config: TrainConfig, classes: ClassSpec | None, loss: GANLoss) -> bool:
        raise NotImplementedError

    @property
    def weight(self) -> float:
        raise NotImplementedError

    def d(self, real: Judged, fake: Judged) -> tuple[Tensor, Parts] | None:
        return None

    def g(self, fake: Judged) -> tuple[Tensor, Parts] | None:
        return None


class ClassTerm(Term):
    """ACGAN's auxiliary classifier: cross-entropy per group, BCE per attribute."""

    name = "class"

    @staticmethod
    def applies(config, classes, loss):
        return classes is not None

    @property
    def weight(self):
        return self.config.lambda_cls

    def d(self, real, fake):
        c = self.classes
        errD_cls = class_loss(real.cls.float(), real.y, c) + class_loss(fake.cls.float(), fake.y, c)
        return errD_cls, {
            "loss_d_cls": errD_cls,
            "acc_real": class_accuracy(real.cls.float(), real.y, c),
        }

    def g(self, fake):
        errG_cls = class_loss(fake.cls.float(), fake.y, self.classes)
        return errG_cls, {
            "loss_g_cls": errG_cls,
            "acc_fake": class_accuracy(fake.cls.float(), fake.y, self.classes),
        }


class PenaltyTerm(Term):
    """WGAN-GP's gradient penalty at random points between real and fake, on D's update."""

    name = "penalty"

    @staticmethod
    def applies(config, classes, loss):
        return loss.gradient_penalty

    @property
    def weight(self):
        return self.config.lambda_gp

    def d(self, real, fake):
        gp = gradient_penalty(self.D, real.x, fake.x.detach().to(real.x.dtype), real.y)
        return gp, {"loss_gp": gp}


TERMS: tuple[type[Term], ...] = (ClassTerm, PenaltyTerm)  # in the order they are added


class Objective:
    """What D and G minimise: the adversarial loss plus the run's terms."""

    def __init__(self, config: TrainConfig, classes: ClassSpec | None, D: nn.Module):
        """`D` is the discriminator as it trains (DDP-wrapped): the penalty differentiates
        through it."""
        self.config = config
        self.adversarial = get_loss(config.loss)
        self.terms = [
            term(config, classes, D)
            for term in TERMS
            if term.applies(config, classes, self.adversarial)
        ]

    def loss(self, phase: str, real: Judged | None, fake: Judged) -> tuple[Tensor, Parts]:
        """The loss of `phase` ("D": real and fake batches; "G": the fake batch alone), and
        its parts: `loss_<d|g>_adv`, each term's own, `loss_g` for G."""
        if phase == "D":
            total = self.adversarial.d_loss(real.logits.float(), fake.logits.float())
            parts: Parts = {"loss_d_adv": total}
            extras = [term.d(real, fake) for term in self.terms]
        elif phase == "G":
            total = self.adversarial.g_loss(fake.logits.float())
            parts = {"loss_g_adv": total}
            extras = [term.g(fake) for term in self.terms]
        else:
            raise ValueError(f"no phase {phase!r}: a GAN's phases are D and G")
        for term, extra in zip(self.terms, extras, strict=True):
            if extra is not None:
                value, term_parts = extra
                total = total + term.weight * value
                parts.update(term_parts)
        if phase == "G":
            parts["loss_g"] = total
        return total, parts

    @torch.no_grad()
    def constrain_d(self, D: nn.Module) -> None:
        """After each D step: WGAN's weight clipping to [-c, c] (`weight_clip`; the critic's
        parameters only, not its normalisation's running statistics)."""
        c = self.config.weight_clip
        if c > 0:
            for parameter in D.parameters():
                parameter.clamp_(-c, c)

    @property
    def wasserstein(self) -> bool:
        """D's outputs are critic scores, not logits of a probability."""
        return self.adversarial.wasserstein


def judge(D: nn.Module, x: Tensor, y: Tensor | None) -> Judged:
    logits, cls = D(x, y)
    return Judged(x, y, logits, cls)
