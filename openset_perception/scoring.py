"""Dense anomaly scores and open-set fusion.

Every score follows one convention: higher = more anomalous, float32, finite everywhere (saturated
logits of +-1e4 included), shape (B, H, W). Scores work on any stride: the engine upsamples logits
to the input size first, as the papers do, so ranking metrics see full-resolution maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from openset_perception.models.blocks import resize_to
from openset_perception.row_blocks import in_row_blocks, tracing

SCORE_METHODS = (
    "densehybrid",
    "generative",
    "discriminative",
    "msp",
    "max_logit",
    "entropy",
    "energy",
    "moose_msp",
    "moose_entropy",
    "moose_max_logit",
)
MOOSE_METHODS = ("moose_msp", "moose_entropy", "moose_max_logit")


def check_score_method(method: str) -> str:
    """``method`` if it is a known score; ValueError naming the known ones otherwise."""
    if method not in SCORE_METHODS:
        raise ValueError(f"unknown score method '{method}'; choose one of {', '.join(SCORE_METHODS)}")
    return method


class DenseOutputs(Protocol):
    logits: torch.Tensor
    ood_logit: torch.Tensor
    probe_logits: Sequence[torch.Tensor]


def densehybrid_score(
    logits: torch.Tensor, ood_logit: torch.Tensor, class_max: torch.Tensor | None = None
) -> torch.Tensor:
    """s_H = ln P(d_out|x) - ln p^(x) = logsigmoid(-g) - logsumexp(s) (thesis eq. 4.11)."""
    return discriminative_score(ood_logit) + generative_score(logits, class_max)


def generative_score(logits: torch.Tensor, class_max: torch.Tensor | None = None) -> torch.Tensor:
    """-ln p^(x): the negative unnormalised log-likelihood (free energy at T = 1)."""
    return -logsumexp_over_classes(logits, class_max)


def logsumexp_over_classes(logits: torch.Tensor, class_max: torch.Tensor | None = None) -> torch.Tensor:
    """logsumexp over the class channels (dim 1).

    ``class_max``, the per-pixel maximum over the classes that the closed-set argmax finds anyway,
    spares searching it again: on a CPU that search was a third of the hybrid score's cost at 2 MP.
    """
    if class_max is None:
        return torch.logsumexp(logits.float(), dim=1)
    # Shift by the maximum only where it is finite, as torch.logsumexp does: +-inf logits give +-inf.
    shift = torch.nan_to_num(class_max.float(), posinf=0.0, neginf=0.0)
    return (logits.float() - shift.unsqueeze(1)).exp_().sum(dim=1).log_().add_(shift)


def discriminative_score(ood_logit: torch.Tensor) -> torch.Tensor:
    """ln P(d_out|x) = logsigmoid(-g); logsigmoid stays finite where log(1 - sigmoid) would give -inf."""
    return F.logsigmoid(-ood_logit.float()).squeeze(1)


def msp_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return -torch.softmax(logits.float() / temperature, dim=1).amax(dim=1)


def max_logit_score(logits: torch.Tensor, class_max: torch.Tensor | None = None) -> torch.Tensor:
    return -(logits.amax(dim=1) if class_max is None else class_max).float()


def entropy_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    log_p = torch.log_softmax(logits.float() / temperature, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def energy_score(
    logits: torch.Tensor, temperature: float = 1.0, class_max: torch.Tensor | None = None
) -> torch.Tensor:
    scaled_max = None if class_max is None else class_max.float() / temperature
    return -temperature * logsumexp_over_classes(logits.float() / temperature, scaled_max)


def anomaly_score(
    outputs: DenseOutputs, method: str = "densehybrid", temperature: float = 1.0
) -> torch.Tensor:
    """Dense anomaly score (B, H, W) of ``method`` (one of SCORE_METHODS) from a model's outputs."""
    return classes_and_anomaly_score(outputs, method, temperature)[1]


def classes_and_anomaly_score(
    outputs: DenseOutputs,
    method: str = "densehybrid",
    temperature: float = 1.0,
    upsample: tuple[int, int] | None = None,
    crop: tuple[int, int] | None = None,
    classes_dtype: torch.dtype = torch.int64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predicted_classes, anomaly_score)`` of the outputs from one pass over the logits.

    What a deployed segmenter needs every frame. The per-pixel class maximum behind the argmax also
    serves the scores built on it, and on a CPU each block of logits is read while still in cache.
    ``upsample``: the outputs are at the network's stride; they are upsampled (bilinear,
    ``align_corners=False``) to this size and cropped to ``crop`` (default: all of it). On a CPU the
    upsampling, argmax and score run as one kernel (``kernels.upsample_score``), so the K x H x W
    logits never exist; the classes equal upsampling first bit for bit, the scores up to rounding.
    ``classes_dtype``: int64, or uint8 for fewer than 256 classes.
    """
    check_score_method(method)
    if method in MOOSE_METHODS and not outputs.probe_logits:
        raise ValueError(f"score method '{method}' needs a model with MOoSe probe heads (moose_probes: true)")

    def classes_and_score(
        logits: torch.Tensor, ood_logit: torch.Tensor, *probe_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        class_max, classes = logits.max(dim=1)
        return classes, _score(method, temperature, logits, ood_logit, probe_logits, class_max)

    crop = crop or upsample
    if upsample is not None and not outputs.probe_logits and not tracing():
        from openset_perception.kernels import upsample_score

        if upsample_score.supports(outputs.logits, outputs.ood_logit, upsample, method):
            return upsample_score.upsampled_classes_and_score(
                outputs.logits, outputs.ood_logit, upsample, crop, method, temperature, classes_dtype
            )
    maps = (outputs.logits, outputs.ood_logit, *outputs.probe_logits)
    if upsample is not None:
        maps = tuple(resize_to(m, upsample)[..., : crop[0], : crop[1]] for m in maps)
    classes, score = in_row_blocks(classes_and_score, *maps)
    return classes.to(classes_dtype), score


def _score(
    method: str,
    temperature: float,
    logits: torch.Tensor,
    ood_logit: torch.Tensor,
    probe_logits: Sequence[torch.Tensor],
    class_max: torch.Tensor,
) -> torch.Tensor:
    if method == "densehybrid":
        return densehybrid_score(logits, ood_logit, class_max)
    if method == "generative":
        return generative_score(logits, class_max)
    if method == "discriminative":
        return discriminative_score(ood_logit)
    if method == "msp":
        return msp_score(logits, temperature)
    if method == "max_logit":
        return max_logit_score(logits, class_max)
    if method == "entropy":
        return entropy_score(logits, temperature)
    if method == "energy":
        return energy_score(logits, temperature, class_max)
    heads = [logits, *probe_logits]
    if method == "moose_max_logit":
        return max_logit_score(torch.stack([h.float() for h in heads]).mean(dim=0))
    probs = torch.stack([torch.softmax(h.float() / temperature, dim=1) for h in heads]).mean(dim=0)
    if method == "moose_msp":
        return -probs.amax(dim=1)
    # The averaged softmax can underflow to exactly 0; clamping keeps 0 * log 0 at 0 instead of NaN.
    return -(probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum(dim=1)


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """(B,H,W) int64 closed-set argmax over the class channels, first maximum on ties.

    ``max(dim=1).indices`` instead of ``argmax(dim=1)``: same result, but on a CPU argmax over a
    non-innermost dimension takes about three times as long (248 vs 78 ms on 19x1024x2048).
    """
    return logits.max(dim=1).indices


def open_set_labels(logits: torch.Tensor, score: torch.Tensor, threshold: float) -> torch.Tensor:
    """Closed-set argmax, with label K (= number of known classes) where score >= threshold.

    ``>=`` matches the operating point the metrics report as ``threshold_at_tpr95``.
    """
    return open_set_from_semantic(predicted_classes(logits), score, threshold, logits.shape[1])


def open_set_from_semantic(
    semantic: torch.Tensor, score: torch.Tensor, threshold: float, num_known: int
) -> torch.Tensor:
    """Open-set map from an already computed argmax (saves a second argmax in the engine)."""
    return semantic.masked_fill(score >= threshold, num_known)
