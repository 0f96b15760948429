"""The CPU kernel that upsamples stride-f maps and computes classes and score in one pass.

Reference: PyTorch's ``F.interpolate(bilinear, align_corners=False)`` on the whole map, then
``max(dim=1)`` and ``scoring``'s formulas, on maps this file makes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from openset_perception.kernels import upsample_score
from openset_perception.kernels.upsample_score import KERNEL_METHODS, supports, upsampled_classes_and_score
from openset_perception.scoring import _score


def _maps(batch: int, classes: int, height: int, width: int, seed: int, kind: str = "normal"):
    generator = torch.Generator().manual_seed(seed)
    logits = 6 * torch.randn((batch, classes, height, width), generator=generator)
    if kind == "ties":  # small integers: neighbours blend to equal values, argmax must pick the first
        logits = logits.round().clamp(-2, 2)
    elif kind == "saturated":
        logits = logits.sign() * 1e4
    ood = 4 * torch.randn((batch, 1, height, width), generator=generator)
    return logits, ood


def _reference(logits, ood, size, crop, method, temperature):
    up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[..., : crop[0], : crop[1]]
    up_ood = F.interpolate(ood, size=size, mode="bilinear", align_corners=False)[..., : crop[0], : crop[1]]
    class_max, classes = up.max(dim=1)
    return classes, _score(method, temperature, up, up_ood, [], class_max)


@pytest.mark.parametrize("kind", ["normal", "ties", "saturated"])
@pytest.mark.parametrize(
    ("batch", "classes", "height", "width", "factor", "crop"),
    [
        (1, 19, 24, 40, 4, (96, 160)),
        (2, 8, 17, 33, 4, (61, 130)),
        (1, 5, 9, 70, 8, (70, 555)),
        (2, 1, 40, 37, 2, (80, 74)),
    ],
)
def test_classes_equal_upsampling_then_argmax_bit_for_bit(batch, classes, height, width, factor, crop, kind):
    logits, ood = _maps(batch, classes, height, width, seed=classes, kind=kind)
    size = (factor * height, factor * width)
    assert supports(logits, ood, size, "densehybrid")
    got_classes, got_score = upsampled_classes_and_score(logits, ood, size, crop, "max_logit")
    expected_classes, expected_score = _reference(logits, ood, size, crop, "max_logit", 1.0)
    assert got_classes.dtype == torch.int64 and got_classes.shape == (batch, *crop)
    assert torch.equal(got_classes, expected_classes)
    assert torch.equal(got_score, expected_score)  # minus the upsampled maximum: the blend itself
    if kind == "ties" and classes > 1:
        assert (F.interpolate(logits, size=size, mode="bilinear").diff(dim=1) == 0).any()


@pytest.mark.parametrize("temperature", [1.0, 1.7])
@pytest.mark.parametrize("method", KERNEL_METHODS)
@pytest.mark.parametrize("kind", ["normal", "saturated"])
def test_scores_equal_pytorch_up_to_rounding(method: str, temperature: float, kind: str) -> None:
    logits, ood = _maps(2, 11, 20, 36, seed=5, kind=kind)
    size, crop = (80, 144), (77, 141)
    got_classes, got_score = upsampled_classes_and_score(logits, ood, size, crop, method, temperature)
    expected_classes, expected_score = _reference(logits, ood, size, crop, method, temperature)
    assert torch.equal(got_classes, expected_classes)
    assert got_score.dtype == torch.float32
    torch.testing.assert_close(got_score, expected_score, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_rows_with_non_finite_logits_give_pytorch_results(value: float) -> None:
    logits, ood = _maps(1, 4, 10, 40, seed=2)
    logits[0, 2, 3, 5:9] = value
    size = (40, 160)
    for method in ("densehybrid", "generative"):
        got_classes, got_score = upsampled_classes_and_score(logits, ood, size, size, method)
        expected_classes, expected_score = _reference(logits, ood, size, size, method, 1.0)
        assert torch.equal(got_classes, expected_classes)
        torch.testing.assert_close(got_score, expected_score, rtol=1e-6, atol=1e-4, equal_nan=True)


@pytest.mark.parametrize("threads", [1, 3, 8])
def test_any_number_of_threads_gives_the_same_maps(threads: int, monkeypatch) -> None:
    logits, ood = _maps(2, 6, 16, 48, seed=9)
    size, crop = (64, 192), (60, 190)
    single = upsampled_classes_and_score(logits, ood, size, crop, "densehybrid")
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    sliced = upsampled_classes_and_score(logits, ood, size, crop, "densehybrid")
    assert torch.equal(single[0], sliced[0]) and torch.equal(single[1], sliced[1])


@pytest.mark.parametrize("channels", [1, 2, 8, 19])
def test_the_blend_matches_this_pytorch_build(channels: int) -> None:
    assert upsample_score.matches_pytorch(channels, torch.get_num_threads())


def test_a_pytorch_that_blends_otherwise_gets_pytorch(monkeypatch) -> None:
    logits, ood = _maps(1, 5, 16, 32, seed=0)
    monkeypatch.setattr(upsample_score, "matches_pytorch", lambda channels, threads: channels != 5)
    assert not supports(logits, ood, (64, 128), "densehybrid")


def test_only_the_cases_it_is_exact_for_are_supported() -> None:
    logits, ood = _maps(1, 5, 16, 32, seed=0)
    assert supports(logits, ood, (64, 128), "densehybrid")
    assert not supports(logits, ood, (48, 96), "densehybrid")  # factor 3
    assert not supports(logits, ood, (64, 96), "densehybrid")  # another factor per axis
    assert not supports(logits, ood, (32, 64), "densehybrid")  # H + W <= 128: another PyTorch kernel
    assert not supports(logits, ood, (64, 128), "moose_msp")
    assert not supports(logits.double(), ood.double(), (64, 128), "densehybrid")
    with torch.enable_grad():
        assert not supports(logits.requires_grad_(), ood, (64, 128), "densehybrid")
