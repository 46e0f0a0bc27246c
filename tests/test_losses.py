"""GAN losses against their closed forms, the WGAN-GP gradient penalty against a direct
per-sample computation, and the ACGAN class loss and accuracy on a hand-made class spec."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.losses import (
    LOSSES,
    class_accuracy,
    class_loss,
    get_loss,
    gradient_penalty,
)
from pipeline.models import ClassSpec, ModelConfig, build_discriminator

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(t: float) -> float:
    return math.log1p(math.exp(t))


def mean(*values: float) -> float:
    return sum(values) / len(values)


# (d_loss, g_loss) by hand for REAL, FAKE
CLOSED_FORMS = {
    # D: -log sigmoid(r) - log(1 - sigmoid(f)); G: -log sigmoid(f)
    "nsgan": (
        mean(softplus(-2), softplus(1)) + mean(softplus(0.5), softplus(-3)),
        mean(softplus(-0.5), softplus(3)),
    ),
    # G minimizes log(1 - sigmoid(f))
    "minimax": (
        mean(softplus(-2), softplus(1)) + mean(softplus(0.5), softplus(-3)),
        mean(math.log(1 - 1 / (1 + math.exp(-0.5))), math.log(1 - 1 / (1 + math.exp(3)))),
    ),
    "hinge": (mean(0, 2) + mean(1.5, 0), 1.25),
    "wgan": (mean(0.5, -3) - mean(2, -1), 1.25),  # the critic loss, kept Lipschitz by clipping
    "wgan-gp": (mean(0.5, -3) - mean(2, -1), 1.25),
    "lsgan": (0.5 * mean(1, 4) + 0.5 * mean(0.25, 9), 0.5 * mean(0.25, 16)),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_losses_match_closed_forms(name):
    loss = get_loss(name)
    d, g = CLOSED_FORMS[name]
    assert loss.name == name
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    assert loss.g_loss(FAKE).item() == pytest.approx(g, rel=1e-6)
    real_part, fake_part = loss.d_loss_parts(REAL, FAKE)
    assert (real_part + fake_part).item() == pytest.approx(d, rel=1e-6)
    assert loss.gradient_penalty == (name == "wgan-gp")


def test_saturating_logits_stay_finite():
    big = torch.tensor([100.0, -100.0], requires_grad=True)
    nsgan = get_loss("nsgan")
    # -log sigmoid(-100) = 100, where sigmoid-then-log gives inf
    assert nsgan.g_loss(big[1:]).item() == pytest.approx(100)
    d = nsgan.d_loss(big[:1], big[1:])
    assert d.item() == pytest.approx(0, abs=1e-30)
    minimax = get_loss("minimax").g_loss(big[:1])  # log(1 - sigmoid(100)) = -100
    assert minimax.item() == pytest.approx(-100)
    (d + minimax).backward()
    assert torch.isfinite(big.grad).all()


def test_unknown_loss_lists_the_registry():
    listed = "choose one of: nsgan, minimax, hinge, wgan, wgan-gp, lsgan"
    with pytest.raises(ConfigError, match=listed):
        get_loss("wasserstein")


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic():
    torch.manual_seed(0)
    D = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 1))
    with torch.no_grad():
        D[1].weight /= D[1].weight.norm()  # 1-Lipschitz, gradient norm exactly 1 everywhere
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    assert gradient_penalty(D, real, fake).item() == pytest.approx(0, abs=1e-10)
    with torch.no_grad():
        D[1].weight *= 3  # gradient norm 3: penalty (3 - 1)^2
    assert gradient_penalty(D, real, fake).item() == pytest.approx(4, rel=1e-5)


def test_gradient_penalty_matches_a_per_sample_loop():
    torch.manual_seed(0)
    D = nn.Sequential(
        nn.Conv2d(2, 3, 3, 2, 1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 2 * 2, 1)
    ).double()
    real = torch.randn(4, 2, 4, 4, dtype=torch.float64)
    fake = torch.randn(4, 2, 4, 4, dtype=torch.float64, requires_grad=True)

    torch.manual_seed(1)
    gp = gradient_penalty(D, real, fake)
    grads = torch.autograd.grad(gp, list(D.parameters()), materialize_grads=True)

    # Directly: the same eps, one sample at a time.
    torch.manual_seed(1)
    eps = torch.rand(4, 1, 1, 1, dtype=torch.float64)
    total = 0
    for i in range(4):
        x = (eps[i] * real[i] + (1 - eps[i]) * fake[i].detach())[None].requires_grad_(True)
        (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        total = total + (g.flatten().norm() - 1) ** 2 / 4
    expected = torch.autograd.grad(total, list(D.parameters()), materialize_grads=True)
    torch.testing.assert_close(gp, total)
    for a, b in zip(grads, expected, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("arch, norm", [("dcgan", "layer"), ("resnet", "spectral")])
def test_gradient_penalty_trains_our_critics(arch, norm):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, width_d=4, norm_d=norm)
    D = build_discriminator(cfg, 32, 3, ClassSpec(groups=(3,)))
    real, fake = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)
    y = torch.tensor([[0], [1], [2]])
    gp = gradient_penalty(D, real, fake, y)  # D returns (adv, cls): the penalty is on adv
    gp.backward()
    assert torch.isfinite(gp)
    # Every weight feeding the adversarial logit gets a finite gradient (biases need not: the
    # last one does not change grad_x D at all).
    weights = [p for n, p in D.named_parameters() if "weight" in n and not n.startswith("cls.")]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in weights)
    assert sum(p.grad.abs().sum() for p in weights) > 0


# Two softmax groups (3 and 2 classes) and two binary attributes: 7 logits, 4 label columns.
SPEC = ClassSpec(groups=(3, 2), binary=2)


def test_class_loss_closed_form():
    # Group 1 logits all equal: CE = log 3. Group 2 logits (log 3, 0) with target 0:
    # CE = -log(3/4). Attribute logits 0: BCE = log 2 each. Sum: log 3 + log 4/3 + 2 log 2.
    logits = torch.tensor([[0.0, 0.0, 0.0, math.log(3), 0.0, 0.0, 0.0]]).repeat(2, 1)
    y = torch.tensor([[0, 0, 1, 0], [2, 0, 0, 1]])
    assert class_loss(logits, y, SPEC).item() == pytest.approx(4 * math.log(2), rel=1e-6)


def test_class_loss_matches_torch_and_skips_missing_labels():
    torch.manual_seed(0)
    logits = torch.randn(4, SPEC.logits)
    y = torch.tensor([[0, 1, 1, 0], [2, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    ce, bce = nn.functional.cross_entropy, nn.functional.binary_cross_entropy_with_logits
    expected = (
        ce(logits[:, :3], y[:, 0])
        + ce(logits[:, 3:5], y[:, 1])
        + bce(logits[:, 5], y[:, 2].float())
        + bce(logits[:, 6], y[:, 3].float())
    )
    torch.testing.assert_close(class_loss(logits, y, SPEC), expected)
    # -1 = missing: left out of the mean; a column missing in the whole batch adds 0
    y_missing = y.clone()
    y_missing[0, 0] = -1
    y_missing[:, 3] = -1
    expected = (
        ce(logits[1:, :3], y[1:, 0])
        + ce(logits[:, 3:5], y[:, 1])
        + bce(logits[:, 5], y[:, 2].float())
    )
    torch.testing.assert_close(class_loss(logits, y_missing, SPEC), expected)


def test_class_accuracy_by_hand():
    logits = torch.tensor(
        [
            # group 1 (3)   group 2 (2)  attr a  attr b
            [5.0, 0.0, 0.0, 0.0, 1.0, 2.0, -1.0],  # predicts 0, 1, 1, 0
            [0.0, 0.0, 5.0, 1.0, 0.0, -2.0, 3.0],  # predicts 2, 0, 0, 1
        ]
    )
    y = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 1]])
    # group 1: 1/2, group 2: 1/2, attr a: 2/2, attr b: 1/2 -> mean 0.625
    assert class_accuracy(logits, y, SPEC).item() == pytest.approx(0.625)
    y[1, 0] = -1  # missing: group 1 now 1/1
    assert class_accuracy(logits, y, SPEC).item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="expected 7 logits and 4 label columns"):
        class_loss(logits[:, :6], y, SPEC)
