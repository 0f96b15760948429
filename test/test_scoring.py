"""Anomaly scores against direct numpy formulas, finiteness at saturation, open-set fusion."""

import numpy as np
import pytest
import torch

from openset_perception.models import SegmenterOutput
from openset_perception.scoring import (
    SCORE_METHODS,
    anomaly_score,
    classes_and_anomaly_score,
    densehybrid_score,
    energy_score,
    generative_score,
    logsumexp_over_classes,
    max_logit_score,
    open_set_labels,
    predicted_classes,
)


def _score_alone(out: SegmenterOutput, method: str, temperature: float = 1.0) -> torch.Tensor:
    return anomaly_score(out, method, temperature)


def _score_with_classes(out: SegmenterOutput, method: str, temperature: float = 1.0) -> torch.Tensor:
    return classes_and_anomaly_score(out, method, temperature)[1]


# Both public entry points: the score on its own and the engine's classes-and-score pass.
SCORE_PATHS = pytest.mark.parametrize("score_fn", [_score_alone, _score_with_classes], ids=["alone", "fused"])


def _numpy_logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _reference(method: str, s: np.ndarray, g: np.ndarray, probes: list[np.ndarray], t: float) -> np.ndarray:
    """Each score written from its definition in float64."""
    if method == "densehybrid":
        return np.log(1.0 / (1.0 + np.exp(g[:, 0]))) - _numpy_logsumexp(s, 1)
    if method == "generative":
        return -_numpy_logsumexp(s, 1)
    if method == "discriminative":
        return np.log(1.0 - 1.0 / (1.0 + np.exp(-g[:, 0])))
    if method == "msp":
        return -_softmax(s / t).max(axis=1)
    if method == "max_logit":
        return -s.max(axis=1)
    if method == "entropy":
        p = _softmax(s / t)
        return -(p * np.log(p)).sum(axis=1)
    if method == "energy":
        return -t * _numpy_logsumexp(s / t, 1)
    heads = [s, *probes]
    if method == "moose_max_logit":
        return -np.mean(heads, axis=0).max(axis=1)
    p = np.mean([_softmax(h / t) for h in heads], axis=0)
    if method == "moose_msp":
        return -p.max(axis=1)
    return -(p * np.log(p)).sum(axis=1)


@pytest.fixture
def outputs() -> tuple[SegmenterOutput, tuple]:
    rng = np.random.default_rng(0)
    s = rng.normal(0, 3, (2, 5, 7, 9))
    g = rng.normal(0, 3, (2, 1, 7, 9))
    probes = [rng.normal(0, 3, (2, 5, 7, 9)) for _ in range(3)]
    out = SegmenterOutput(
        torch.tensor(s, dtype=torch.float32),
        torch.tensor(g, dtype=torch.float32),
        [torch.tensor(p, dtype=torch.float32) for p in probes],
    )
    return out, (s, g, probes)


@SCORE_PATHS
@pytest.mark.parametrize("method", SCORE_METHODS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_scores_match_direct_formulas(outputs, method: str, temperature: float, score_fn) -> None:
    out, (s, g, probes) = outputs
    score = score_fn(out, method, temperature)
    assert score.shape == (2, 7, 9) and score.dtype == torch.float32
    expected = _reference(method, s, g, probes, temperature)
    np.testing.assert_allclose(score.numpy(), expected, rtol=1e-5, atol=1e-5)


@SCORE_PATHS
@pytest.mark.parametrize("method", SCORE_METHODS)
def test_scores_finite_at_extreme_logits(method: str, score_fn) -> None:
    s = torch.tensor([1e4, -1e4, 0.0]).view(1, 3, 1, 1).repeat(1, 1, 2, 2)
    s[..., 1, :] *= -1
    g = torch.tensor([[1e4, -1e4], [1e4, -1e4]]).view(1, 1, 2, 2)
    out = SegmenterOutput(s, g, [s.flip(1), -s])
    score = score_fn(out, method)
    assert torch.isfinite(score).all(), method


def test_hybrid_is_sum_of_components_and_monotone(outputs) -> None:
    out, _ = outputs
    hybrid = anomaly_score(out, "densehybrid")
    assert torch.allclose(hybrid, anomaly_score(out, "generative") + anomaly_score(out, "discriminative"))
    # Lowering every logit lowers the likelihood and must raise the anomaly score.
    lowered = SegmenterOutput(out.logits - 1.0, out.ood_logit, out.probe_logits)
    assert torch.allclose(anomaly_score(lowered, "densehybrid"), hybrid + 1.0, atol=1e-5)


def test_moose_scores_need_probes(outputs) -> None:
    out, _ = outputs
    with pytest.raises(ValueError, match="MOoSe probe"):
        anomaly_score(SegmenterOutput(out.logits, out.ood_logit, []), "moose_msp")


def test_unknown_method_names_choices(outputs) -> None:
    with pytest.raises(ValueError, match="densehybrid"):
        anomaly_score(outputs[0], "nope")


def test_open_set_labels_marks_unknown_at_threshold() -> None:
    logits = torch.tensor([[[[0.0, 5.0]], [[1.0, 0.0]], [[0.5, 0.2]]]])  # (1,3,1,2): argmax = [1, 0]
    score = torch.tensor([[[0.7, 0.2]]])
    np.testing.assert_array_equal(open_set_labels(logits, score, 0.7).numpy(), [[[3, 0]]])
    np.testing.assert_array_equal(open_set_labels(logits, score, 0.71).numpy(), [[[1, 0]]])


def test_predicted_classes_is_numpy_argmax_with_first_maximum_on_ties() -> None:
    generator = torch.Generator().manual_seed(3)
    # Values on a coarse grid so that many pixels have tied maxima across the 5 classes.
    logits = torch.randint(0, 3, (2, 5, 17, 23), generator=generator).float()
    expected = np.argmax(logits.numpy(), axis=1)  # numpy returns the first maximum
    np.testing.assert_array_equal(predicted_classes(logits).numpy(), expected)


def test_classes_of_the_fused_pass_are_the_argmax(outputs) -> None:
    generator = torch.Generator().manual_seed(4)
    tied = torch.randint(0, 3, (2, 5, 7, 9), generator=generator).float()
    out = SegmenterOutput(tied, outputs[0].ood_logit, outputs[0].probe_logits)
    classes, score = classes_and_anomaly_score(out, "densehybrid")
    np.testing.assert_array_equal(classes.numpy(), np.argmax(tied.numpy(), axis=1))
    assert classes.dtype == torch.int64
    torch.testing.assert_close(score, anomaly_score(out, "densehybrid"))


def test_logsumexp_from_a_known_maximum_handles_infinite_logits() -> None:
    inf = float("inf")
    logits = torch.tensor([[1.0, 2.0, 3.0], [inf, 0.0, 1.0], [-inf, -inf, -inf], [1e4, -1e4, 1e4]])
    logits = logits.view(4, 3, 1, 1)
    reused = logsumexp_over_classes(logits, logits.amax(dim=1))
    torch.testing.assert_close(reused, torch.logsumexp(logits, dim=1))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_score_functions_give_the_same_with_or_without_the_known_maximum(outputs, temperature: float) -> None:
    logits, ood_logit = outputs[0].logits, outputs[0].ood_logit
    class_max = logits.amax(dim=1)
    torch.testing.assert_close(
        energy_score(logits, temperature, class_max), energy_score(logits, temperature)
    )
    torch.testing.assert_close(generative_score(logits, class_max), generative_score(logits))
    torch.testing.assert_close(max_logit_score(logits, class_max), max_logit_score(logits))
    torch.testing.assert_close(
        densehybrid_score(logits, ood_logit, class_max), densehybrid_score(logits, ood_logit)
    )
