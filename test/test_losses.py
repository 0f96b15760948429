"""The compound loss against a hand-written per-pixel reference; ignore handling; divergences."""

import math

import numpy as np
import pytest
import torch

from openset_perception.losses import (
    LossWeights,
    densehybrid_loss,
    jsd_to_uniform,
    kl_to_uniform,
    moose_probe_loss,
    segmentation_ce,
)


def _reference_loss(s, g, y, m, b: LossWeights) -> float:
    """Per-pixel loop over the definition (thesis eq. 4.16 with the reference's normalisation)."""
    s = s.double().movedim(1, -1).reshape(-1, s.shape[1]).numpy()
    g = g.double().reshape(-1).numpy()
    y = y.reshape(-1).numpy()
    m = m.reshape(-1).numpy()
    ce, n_in, bce_in, bce_out, lse_out, n_out = 0.0, 0, 0.0, 0.0, 0.0, 0
    for logits, gi, yi, mi in zip(s, g, y, m, strict=True):
        lse = math.log(sum(math.exp(v) for v in logits))
        if mi:
            n_out += 1
            bce_out += -math.log(1 - 1 / (1 + math.exp(-gi)))
            lse_out += lse
        elif yi != 255:
            n_in += 1
            ce += lse - logits[yi]
            bce_in += -math.log(1 / (1 + math.exp(-gi)))
    head = max(n_in + n_out, 1)
    return (
        b.beta1 * ce / max(n_in, 1)
        + b.beta2 * bce_in / head
        + b.beta3 * bce_out / head
        + b.beta4 * lse_out / max(n_out, 1)
    )


@pytest.mark.parametrize("spatial", [(), (5,), (4, 6)])
def test_loss_matches_reference_for_any_spatial_shape(spatial) -> None:
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(3, 4, *spatial, generator=gen) * 2
    g = torch.randn(3, 1, *spatial, generator=gen)
    y = torch.randint(0, 4, (3, *spatial), generator=gen)
    y[torch.rand(y.shape, generator=gen) < 0.2] = 255
    m = torch.rand(y.shape, generator=gen) < 0.3
    betas = LossWeights(1.0, 0.3, 0.5, 0.03)
    loss, parts = densehybrid_loss(s, g, y, m, betas)
    assert loss.item() == pytest.approx(_reference_loss(s, g, y, m, betas), rel=1e-5)
    assert set(parts) == {"ce", "bce_inlier", "bce_outlier", "negative_log_likelihood"}


def test_ignore_pixels_contribute_nothing() -> None:
    gen = torch.Generator().manual_seed(2)
    s = torch.randn(1, 3, 4, 4, generator=gen, requires_grad=True)
    g = torch.randn(1, 1, 4, 4, generator=gen, requires_grad=True)
    y = torch.randint(0, 3, (1, 4, 4), generator=gen)
    y[0, 0] = 255
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, 3] = True
    loss, _ = densehybrid_loss(s, g, y, m)
    loss.backward()
    assert torch.all(s.grad[0, :, 0] == 0) and torch.all(g.grad[0, :, 0] == 0)
    assert torch.any(s.grad[0, :, 3] != 0) and torch.any(g.grad[0, :, 3] != 0)


def test_batch_without_negatives_is_plain_ce_plus_inlier_bce() -> None:
    s = torch.randn(2, 3, 5)
    g = torch.randn(2, 1, 5)
    y = torch.randint(0, 3, (2, 5))
    loss, parts = densehybrid_loss(s, g, y, torch.zeros(2, 5, dtype=torch.bool))
    assert torch.isfinite(loss)
    assert parts["bce_outlier"] == 0 and parts["negative_log_likelihood"] == 0
    assert parts["ce"].item() == pytest.approx(segmentation_ce(s, y).item(), rel=1e-6)


def test_likelihood_floor_stops_the_push_below_it() -> None:
    s = torch.full((1, 3, 2), -50.0, requires_grad=True)
    g = torch.zeros(1, 1, 2)
    y = torch.full((1, 2), 255)
    m = torch.ones(1, 2, dtype=torch.bool)
    loss, _ = densehybrid_loss(s, g, y, m, LossWeights(likelihood_floor=-10.0))
    loss.backward()
    assert torch.all(s.grad == 0)


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        densehybrid_loss(torch.randn(1, 3, 4), torch.randn(1, 1, 5), torch.zeros(1, 4), torch.zeros(1, 4))


def test_kl_and_jsd_to_uniform() -> None:
    uniform = torch.zeros(4, 5)
    mask = torch.ones(4, dtype=torch.bool)
    assert kl_to_uniform(uniform, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert jsd_to_uniform(uniform, mask).item() == pytest.approx(0.0, abs=1e-6)
    peaked = torch.tensor([[30.0, 0.0, 0.0, 0.0]])
    one = torch.ones(1, dtype=torch.bool)
    # JSD(U, one-hot) for K = 4, computed by hand in nats.
    u, p = np.full(4, 0.25), np.array([1.0, 0, 0, 0])
    mix = (u + p) / 2
    expected = 0.5 * np.sum(u * np.log(u / mix)) + 0.5 * np.log(1 / mix[0])
    assert jsd_to_uniform(peaked, one).item() == pytest.approx(expected, rel=1e-4)
    assert jsd_to_uniform(peaked, one).item() < math.log(2)
    assert kl_to_uniform(peaked, one).item() == pytest.approx(-math.log(4) + 30 * 0.75 - 0.25 * 0, rel=1e-3)


def test_jsd_gradient_flows_to_the_input_of_the_logits() -> None:
    source = torch.randn(2, 6, requires_grad=True)
    logits = source @ torch.randn(6, 4)
    jsd_to_uniform(logits, torch.ones(2, dtype=torch.bool)).backward()
    assert torch.isfinite(source.grad).all() and source.grad.abs().sum() > 0


def test_probe_loss_averages_heads() -> None:
    y = torch.randint(0, 3, (2, 4))
    heads = [torch.randn(2, 3, 4) for _ in range(3)]
    expected = sum(segmentation_ce(h, y) for h in heads) / 3
    assert moose_probe_loss(heads, y).item() == pytest.approx(expected.item(), rel=1e-6)
