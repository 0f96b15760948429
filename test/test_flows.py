"""Tests for the normalizing flows (RealNVP, DenseFlow) that generate synthetic negatives."""

import math
from typing import Any

import pytest
import torch
from torch.autograd.functional import jacobian

from openset_perception.flows import (
    DEFAULT_DENSEFLOW_CONFIG,
    DEFAULT_REALNVP_CONFIG,
    DenseFlow,
    NormalizingFlow,
    build_flow,
    dequantize,
)
from openset_perception.flows.layers import ActNorm

# Small versions with every structural element of the defaults (3 scales, cross-unit couplings).
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "realnvp": {"num_scales": 3, "hidden_channels": 8, "num_blocks": 1},
    "denseflow": {
        "units_per_block": (2, 2, 1),
        "modules_per_unit": (1, 1, 2),
        "growth": 2,
        "coupling_width": 8,
        "dense_layers": 2,
        "dense_growth": 4,
        "cross_unit_width": 8,
    },
}
KINDS = sorted(TINY_CONFIGS)


def _perturbed_flow(kind: str, dtype: torch.dtype = torch.float32, spread: float = 0.1) -> NormalizingFlow:
    """A tiny flow with data-initialised ActNorm and every parameter moved off its (identity) init.

    Zero-initialised coupling heads would make every coupling the identity and the tests trivial.
    A ``spread`` of 0.1 makes the flow badly conditioned (latents in the hundreds): fine in float64,
    too much for float32 round trips, which get 0.03 (latents of a few units, like a trained flow).
    """
    torch.manual_seed(0)
    flow = build_flow(kind, **TINY_CONFIGS[kind]).to(dtype)
    flow.train()
    flow(1.5 * torch.randn(4, 3, 16, 16, dtype=dtype))
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(spread * torch.randn_like(parameter))
    return flow.eval()


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def test_dequantize_keeps_each_value_inside_its_level_bin() -> None:
    torch.manual_seed(0)
    levels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    unit = dequantize(levels)
    assert torch.equal(torch.floor(unit * 256).long(), levels.long())
    # A float image in [0, 1] stands for the nearest 8-bit levels (off-grid values, e.g. after resizing).
    off_grid = levels.float() / 255.0 + (torch.rand(levels.shape) - 0.5) * (0.8 / 255.0)
    unit_from_float = dequantize(off_grid.clamp(0.0, 1.0))
    assert torch.equal(torch.floor(unit_from_float * 256).long(), levels.long())


def test_image_mapping_inverts_and_reports_its_log_derivative() -> None:
    flow = build_flow("realnvp", **TINY_CONFIGS["realnvp"]).double()
    image = torch.rand(2, 3, 4, 4, dtype=torch.float64).requires_grad_()
    x, logdet = flow.from_image(image)
    (derivative,) = torch.autograd.grad(x.sum(), image)  # elementwise map: the Jacobian is diagonal
    torch.testing.assert_close(logdet, derivative.log().flatten(1).sum(dim=1))
    torch.testing.assert_close(flow.to_image(x), image)
    margin = flow.logit_margin
    expected_x = torch.logit(margin + (1 - 2 * margin) * image)
    torch.testing.assert_close(x, expected_x)


def test_to_image_lands_in_unit_range_and_passes_gradients() -> None:
    flow = build_flow("realnvp", **TINY_CONFIGS["realnvp"])
    x = torch.linspace(-10, 10, 101).view(1, 1, 1, -1).expand(1, 3, 1, -1).clone().requires_grad_()
    image = flow.to_image(x)
    assert image.min() >= 0 and image.max() <= 1
    image.sum().backward()
    # Inside the range real images occupy (|x| < logit(1 - margin)) the gradient is the sigmoid's.
    inside = x.detach().abs() < math.log((1 - flow.logit_margin) / flow.logit_margin)
    assert torch.all(x.grad[inside] > 0)


def test_actnorm_initialises_from_a_single_image_and_only_once() -> None:
    torch.manual_seed(0)
    layer = ActNorm(3).train()
    x = torch.randn(1, 3, 5, 7) * torch.tensor([0.5, 2.0, 3.0]).view(1, 3, 1, 1) + 4.0
    y, logdet = layer(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5, rtol=0)
    stds = x.std(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(logdet, -(5 * 7) * stds.log().sum().view(1))
    state = {name: value.clone() for name, value in layer.state_dict().items()}
    layer(torch.randn(2, 3, 5, 7))
    for name, value in layer.state_dict().items():
        assert torch.equal(value, state[name]), name


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [(16, 16), (24, 40)])
def test_inverse_recovers_the_input(kind: str, size: tuple[int, int]) -> None:
    for dtype, spread, tolerance in [(torch.float32, 0.03, 1e-4), (torch.float64, 0.1, 1e-8)]:
        flow = _perturbed_flow(kind, dtype, spread)
        x = 1.5 * torch.randn(2, 3, *size, dtype=dtype)
        with torch.no_grad():
            latents, _ = flow(x)
            assert [tuple(z.shape[1:]) for z in latents] == flow.latent_shapes(*size)
            reconstruction = flow.inverse(latents)
        assert (reconstruction - x).abs().max() < tolerance, dtype


def test_realnvp_logdet_matches_autograd_jacobian() -> None:
    flow = _perturbed_flow("realnvp", torch.float64)
    x = 1.5 * torch.randn(1, 3, 8, 8, dtype=torch.float64)

    def to_latents(flat: torch.Tensor) -> torch.Tensor:
        return _flat(flow(flat.view_as(x))[0])

    full_jacobian = jacobian(to_latents, x.reshape(-1), vectorize=True)
    assert full_jacobian.shape == (x.numel(), x.numel())
    reference_logdet = torch.linalg.slogdet(full_jacobian).logabsdet
    latents, logdet = flow(x)
    torch.testing.assert_close(logdet, reference_logdet.view(1), rtol=1e-9, atol=1e-9)
    # log_prob is the change of variables under a standard normal prior.
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(_flat(latents)).sum()
    torch.testing.assert_close(flow.log_prob(x), (prior + reference_logdet).view(1), rtol=1e-9, atol=1e-9)


def test_denseflow_augmented_logdet_matches_autograd_jacobian() -> None:
    flow = _perturbed_flow("denseflow", torch.float64)
    assert isinstance(flow, DenseFlow)
    x = 1.5 * torch.randn(1, 3, 8, 8, dtype=torch.float64)
    noise_shapes = flow.noise_shapes(8, 8)
    assert len(noise_shapes) == 2  # one cross-unit coupling in each of the first two blocks
    noise = [torch.randn(1, *shape, dtype=torch.float64) for shape in noise_shapes]
    sizes = [x.numel()] + [e.numel() for e in noise]

    def to_latents(flat: torch.Tensor) -> torch.Tensor:
        parts = flat.split(sizes)
        noise_parts = [part.view_as(e) for part, e in zip(parts[1:], noise, strict=True)]
        return _flat(flow.forward_augmented(parts[0].view_as(x), noise_parts)[0])

    inputs = _flat([x, *noise])
    full_jacobian = jacobian(to_latents, inputs, vectorize=True)
    assert full_jacobian.shape == (inputs.numel(), inputs.numel())  # (x, e) -> z is square
    _, logdet = flow.forward_augmented(x, noise)
    reference_logdet = torch.linalg.slogdet(full_jacobian).logabsdet
    torch.testing.assert_close(logdet, reference_logdet.view(1), rtol=1e-9, atol=1e-9)

    # forward() draws the noise itself and subtracts its log-density (the bound's -log p(e) term).
    torch.manual_seed(123)
    drawn_latents, bound_logdet = flow(x)
    torch.manual_seed(123)
    same_noise = [torch.randn(1, *shape, dtype=torch.float64) for shape in noise_shapes]
    same_latents, augmented_logdet = flow.forward_augmented(x, same_noise)
    noise_log_density = torch.distributions.Normal(0.0, 1.0).log_prob(_flat(same_noise)).sum()
    torch.testing.assert_close(drawn_latents, same_latents)
    torch.testing.assert_close(bound_logdet, augmented_logdet - noise_log_density)


def test_bits_per_dim_of_an_identity_flow_matches_a_hand_computation() -> None:
    # Untrained RealNVP in eval mode: couplings start as the identity and ActNorm is uninitialised,
    # so the flow only permutes dimensions and log p is the standard normal log-density of logit(u).
    flow = build_flow("realnvp", **TINY_CONFIGS["realnvp"]).double().eval()
    levels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(7)
    bits = flow.bits_per_dim(levels)
    torch.manual_seed(7)
    unit = (levels.double() + torch.rand(levels.shape).double()) / 256
    margin = flow.logit_margin
    squeezed = margin + (1 - 2 * margin) * unit
    logit = torch.log(squeezed / (1 - squeezed))
    log_density = (
        (
            -0.5 * (logit**2 + math.log(2 * math.pi))
            + torch.log((1 - 2 * margin) / (squeezed * (1 - squeezed)))
        )
        .flatten(1)
        .sum(dim=1)
    )
    expected = (-log_density / (3 * 8 * 8) + 8 * math.log(2)) / math.log(2)
    torch.testing.assert_close(bits, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kind, config",
    [("realnvp", DEFAULT_REALNVP_CONFIG), ("denseflow", DEFAULT_DENSEFLOW_CONFIG)],
)
def test_default_flows_sample_any_multiple_of_their_size(kind: str, config: Any) -> None:
    torch.manual_seed(0)
    flow = build_flow(kind)
    assert flow.config == config and flow.size_multiple == 8
    with torch.no_grad():
        for height, width in [(16, 16), (24, 40), (64, 64)]:
            sample = flow.sample(2, height, width, temperature=0.7)
            assert sample.shape == (2, 3, height, width)
            assert torch.isfinite(sample).all()
            image = flow.to_image(sample)
            assert image.min() >= 0 and image.max() <= 1
    with pytest.raises(ValueError, match="multiple of 8"):
        flow.sample(1, 20, 16)


def test_temperature_scales_the_latents() -> None:
    flow = _perturbed_flow("realnvp", spread=0.03)
    with torch.no_grad():
        torch.manual_seed(3)
        cold = flow.sample(1, 16, 16, temperature=0.5)
        torch.manual_seed(3)
        latents = [0.5 * torch.randn(1, *shape) for shape in flow.latent_shapes(16, 16)]
        torch.testing.assert_close(cold, flow.inverse(latents))
        torch.testing.assert_close(flow(cold)[0], latents, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_sample_is_differentiable_in_the_flow_parameters(kind: str) -> None:
    flow = _perturbed_flow(kind)
    loss = flow.to_image(flow.sample(2, 16, 24)).square().mean()
    loss.backward()
    for name, parameter in flow.named_parameters():
        if ".cross_unit." in name:
            # Cross-unit couplings only shape the noise, which sampling drops.
            assert parameter.grad is None, name
            continue
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def _smooth_images(count: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 images: a random colour per image plus a horizontal ramp and a little pixel noise."""
    colour = torch.randint(40, 200, (count, 3, 1, 1), generator=generator).float()
    ramp = torch.linspace(-30, 30, 16).view(1, 1, 1, 16)
    noise = torch.randint(-3, 4, (count, 3, 16, 16), generator=generator).float()
    return (colour + ramp + noise).clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("kind", KINDS)
def test_maximum_likelihood_training_reduces_bits_per_dim(kind: str) -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    held_out = _smooth_images(16, generator)
    flow = build_flow(kind, **TINY_CONFIGS[kind]).train()
    flow.bits_per_dim(_smooth_images(16, generator))  # data-dependent ActNorm initialisation

    def held_out_bits() -> float:
        torch.manual_seed(99)  # the same dequantization noise (and flow noise) for both evaluations
        with torch.no_grad():
            return float(flow.bits_per_dim(held_out).mean())

    before = held_out_bits()
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(30):
        loss = flow.bits_per_dim(_smooth_images(16, generator)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_bits()
    assert math.isfinite(after)
    assert after < before - 1.0, (before, after)


def test_build_flow_accepts_yaml_style_lists_and_rejects_unknown_kinds() -> None:
    flow = build_flow("denseflow", units_per_block=[2, 1], modules_per_unit=[1, 1], growth=2)
    assert flow.size_multiple == 4
    assert flow.latent_shapes(8, 12) == [(7, 4, 6), (28, 2, 3)]
    assert build_flow("realnvp", num_scales=2).latent_shapes(8, 12) == [(6, 4, 6), (6, 4, 6)]
    with pytest.raises(ValueError, match="unknown flow kind"):
        build_flow("glow")
    with pytest.raises(ValueError, match="invalid DenseFlow config"):
        build_flow("denseflow", units_per_block=[2, 1], modules_per_unit=[1])
