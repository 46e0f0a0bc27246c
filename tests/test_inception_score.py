"""pipeline.metrics.inception_score against torch-fidelity's formula, and the Inception's
unbiased logits.

`torch_fidelity_isc` restates torch_fidelity/metric_isc.py `isc_features_to_metric`
(toshas/torch-fidelity @5b1e99c) so the test needs no torch-fidelity (it imports torchvision).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.metrics.inception_score import inception_score


def torch_fidelity_isc(feature: torch.Tensor, splits=10, shuffle=True, rng_seed=2020):
    n = feature.shape[0]
    if shuffle:
        feature = feature[np.random.RandomState(rng_seed).permutation(n), :]
    feature = feature.double()
    p = feature.softmax(dim=1)
    log_p = feature.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        p_chunk = p[(i * n // splits) : ((i + 1) * n // splits), :]
        log_p_chunk = log_p[(i * n // splits) : ((i + 1) * n // splits), :]
        q_chunk = p_chunk.mean(dim=0, keepdim=True)
        kl = p_chunk * (log_p_chunk - q_chunk.log())
        scores.append(kl.sum(dim=1).mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def logits(seed: int, n: int, classes: int = 1008, scale: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, classes, generator=generator) * scale


@pytest.mark.parametrize(
    "n, splits, seed",
    [(1000, 10, 2020), (1003, 10, 2020), (517, 7, 0), (250, 1, 2020), (400, 10, None)],
)
def test_matches_torch_fidelity(n, splits, seed):
    """Uneven split sizes (1003 / 10, 517 / 7) follow torch-fidelity's i N // splits bounds."""
    x = logits(seed=n, n=n)
    expected = torch_fidelity_isc(x, splits, shuffle=seed is not None, rng_seed=seed)
    ours = inception_score(x, splits=splits, shuffle_seed=seed)
    print(n, splits, seed, ours, expected)
    assert ours == pytest.approx(expected, abs=1e-6)
    assert inception_score(x.numpy(), splits=splits, shuffle_seed=seed) == ours


def test_the_shuffle_matters_for_the_std():
    """Rows sorted by confidence make uneven splits: shuffling changes the per-split scores."""
    x = logits(1, 1000) * torch.linspace(0, 2, 1000)[:, None]
    assert inception_score(x)[1] != inception_score(x, shuffle_seed=None)[1]


def test_uniform_logits_score_one():
    mean, std = inception_score(torch.zeros(500, 1008))
    assert mean == pytest.approx(1.0, abs=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_confident_and_spread_logits_score_high():
    """Confident one-hot logits over C classes, each split holding every class equally: KL =
    log C in every split, IS = C. Shuffled, the splits' class counts vary: a little less."""
    classes = 100
    labels = torch.arange(5000) % classes
    confident = torch.nn.functional.one_hot(labels, 1008).double() * 50
    mean, std = inception_score(confident, shuffle_seed=None)
    assert mean == pytest.approx(classes, rel=1e-6) and std < 1e-6
    mean, std = inception_score(confident)
    assert 0.85 * classes < mean < classes and std < 0.05 * classes
    # The same confidence on a single class is a collapsed generator: IS 1.
    collapsed = torch.nn.functional.one_hot(torch.zeros(5000, dtype=torch.long), 1008) * 50.0
    assert inception_score(collapsed)[0] == pytest.approx(1.0, abs=1e-6)


def test_fewer_samples_than_splits_is_a_one_line_error():
    with pytest.raises(PipelineError, match="9 samples for 10 splits") as error:
        inception_score(logits(0, 9))
    assert "\n" not in str(error.value)
    assert inception_score(logits(0, 10))[0] == pytest.approx(1.0, abs=1e-12)  # one per split


def test_bad_logits_are_one_line_errors():
    for bad in (torch.zeros(1008), torch.full((20, 1008), float("nan"))):
        with pytest.raises(PipelineError) as error:
            inception_score(bad)
        assert "\n" not in str(error.value)


def test_inception_returns_the_unbiased_logits():
    """logits=True appends pool3 @ fc.weight^T (no bias) after the asked-for features, and
    computes pool3 even when 2048 is not among the dims."""
    from pipeline.metrics.inception import InceptionV3, load_weights, standin_state_dict

    state = standin_state_dict()
    state["fc.bias"] = torch.full_like(state["fc.bias"], 5.0)  # a bias the logits must skip
    images = torch.rand(2, 3, 75, 75, generator=torch.Generator().manual_seed(0))
    with_pool3 = InceptionV3(dims=(2048,), resize=False, logits=True)
    without_pool3 = InceptionV3(dims=(64,), resize=False, logits=True)
    plain = InceptionV3(dims=(64, 2048), resize=False)
    for net in (with_pool3, without_pool3, plain):
        load_weights(net, state)
        net.eval()
    with torch.no_grad():
        pool3, logits_out = with_pool3(images)
        features_64, logits_64 = without_pool3(images)
        plain_64, plain_pool3 = plain(images)  # without logits=True: the features only
    assert logits_out.shape == (2, 1008) and logits_64.shape == (2, 1008)
    expected = pool3 @ state["fc.weight"].T
    torch.testing.assert_close(logits_out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits_64, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pool3, plain_pool3)
    torch.testing.assert_close(features_64, plain_64)
