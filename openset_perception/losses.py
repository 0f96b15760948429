"""Training losses: DenseHybrid's compound loss, MOoSe probe CE, and divergences to the uniform.

All losses take logits of shape (N, K, *spatial) (spatial dims optional) and per-pixel targets of
shape (N, *spatial); ignore pixels (255) are excluded from every term, including the inlier-posterior
BCE (the reference code counts them as inliers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


@dataclass(frozen=True)
class LossWeights:
    """Modulation factors of the compound loss (thesis 5.3); defaults = LDN-121 on traffic scenes.

    ``likelihood_floor``: optional lower bound on the negatives' logsumexp term; below it the term
    gives no gradient, so negative-pixel logits cannot drift without limit. Off (None) by default.
    """

    beta1: float = 1.0
    beta2: float = 0.3
    beta3: float = 0.3
    beta4: float = 0.03
    likelihood_floor: float | None = None


def _flatten(logits: torch.Tensor) -> torch.Tensor:
    """(N, K, *spatial) -> (P, K) with one row per pixel."""
    return logits.movedim(1, -1).reshape(-1, logits.shape[1])


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # A batch with no pixels of a kind contributes zero (with a graph) rather than NaN.
    return (values * mask).sum() / mask.sum().clamp_min(1)


def densehybrid_loss(
    logits: torch.Tensor,
    ood_logit: torch.Tensor,
    target: torch.Tensor,
    outlier_mask: torch.Tensor,
    betas: LossWeights = LossWeights(),
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Compound loss of eq. 4.16 on a mixed-content batch.

    - ``beta1 * CE`` over inlier pixels (ignore and pasted pixels excluded);
    - ``beta2 * BCE(d_in)`` on inlier pixels and ``beta3 * BCE(d_out)`` on pasted pixels, both normalised
      by the number of pixels the head is trained on, so beta2 == beta3 weighs every pixel alike (as the
      reference's all-pixel mean does);
    - ``beta4 * mean over pasted pixels of logsumexp(s)``: lowers the unnormalised likelihood of
      negatives (the inlier half of the bound is already inside CE).

    Returns the total loss and its detached parts for logging.
    """
    flat_logits = _flatten(logits.float())
    flat_g = ood_logit.float().reshape(-1)
    flat_target = target.reshape(-1).long()
    outliers = outlier_mask.reshape(-1).bool()
    if not (flat_logits.shape[0] == flat_g.shape[0] == flat_target.shape[0] == outliers.shape[0]):
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)}, ood_logit {tuple(ood_logit.shape)}, "
            f"target {tuple(target.shape)}, outlier_mask {tuple(outlier_mask.shape)}"
        )
    inliers = (flat_target != ignore_index) & ~outliers

    safe_target = torch.where(inliers, flat_target, torch.zeros_like(flat_target))
    ce = _masked_mean(F.cross_entropy(flat_logits, safe_target, reduction="none"), inliers)

    head_pixels = (inliers | outliers).sum().clamp_min(1)
    bce_in = (-F.logsigmoid(flat_g) * inliers).sum() / head_pixels
    bce_out = (-F.logsigmoid(-flat_g) * outliers).sum() / head_pixels

    log_likelihood = torch.logsumexp(flat_logits, dim=1)
    if betas.likelihood_floor is not None:
        log_likelihood = log_likelihood.clamp_min(betas.likelihood_floor)
    negative_likelihood = _masked_mean(log_likelihood, outliers)

    total = (
        betas.beta1 * ce + betas.beta2 * bce_in + betas.beta3 * bce_out + betas.beta4 * negative_likelihood
    )
    parts = {
        "ce": ce.detach(),
        "bce_inlier": bce_in.detach(),
        "bce_outlier": bce_out.detach(),
        "negative_log_likelihood": negative_likelihood.detach(),
    }
    return total, parts


def segmentation_ce(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Plain closed-set cross-entropy (the first training stage), ignore pixels excluded."""
    flat_target = target.reshape(-1).long()
    valid = flat_target != ignore_index
    safe_target = torch.where(valid, flat_target, torch.zeros_like(flat_target))
    return _masked_mean(F.cross_entropy(_flatten(logits.float()), safe_target, reduction="none"), valid)


def moose_probe_loss(
    probe_logits: Sequence[torch.Tensor], target: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean cross-entropy over the MOoSe probe heads (their inputs are detached by the model)."""
    if not probe_logits:
        raise ValueError("moose_probe_loss needs at least one probe head")
    return torch.stack([segmentation_ce(p, target, ignore_index) for p in probe_logits]).mean()


def kl_to_uniform(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked pixels of KL(U || softmax(s)) (the RNVP paper's loss on outlier pixels)."""
    log_p = F.log_softmax(_flatten(logits.float()), dim=1)
    num_classes = log_p.shape[1]
    kl = -math.log(num_classes) - log_p.mean(dim=1)
    return _masked_mean(kl, mask.reshape(-1).bool())


def jsd_to_uniform(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked pixels of the Jensen-Shannon divergence between U and softmax(s) (eq. 4.20).

    Bounded by ln 2, differentiable everywhere, and its gradient flows through the logits to whatever
    produced the masked pixels (the flow, for synthetic negatives).
    """
    log_p = F.log_softmax(_flatten(logits.float()), dim=1)
    num_classes = log_p.shape[1]
    log_u = torch.full_like(log_p, -math.log(num_classes))
    log_m = torch.logaddexp(log_p, log_u) - math.log(2.0)
    kl_u_m = (log_u.exp() * (log_u - log_m)).sum(dim=1)
    kl_p_m = (log_p.exp() * (log_p - log_m)).sum(dim=1)
    return _masked_mean(0.5 * (kl_u_m + kl_p_m), mask.reshape(-1).bool())
