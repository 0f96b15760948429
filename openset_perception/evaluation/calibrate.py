"""Open-set threshold calibration: the score at which a chosen share of anomaly pixels is flagged.

The threshold is the score of the first operating point (by descending threshold) whose TPR reaches
the target, the same rule that gives ``threshold_at_tpr95`` in the metrics: with ``score >= threshold``
flagged, at least ``tpr`` of the calibration set's anomaly pixels become unknown.
"""

from __future__ import annotations

from pathlib import Path

from openset_perception.checkpoint import load_checkpoint, save_checkpoint
from openset_perception.data.sample import Dataset
from openset_perception.engine import Segmenter
from openset_perception.evaluation.accumulate import EvaluationAccumulator
from openset_perception.evaluation.evaluate import run_frames
from openset_perception.evaluation.report import jsonable
from openset_perception.metrics import AccumulatorMode, AnomalyMetricAccumulator


class CalibrationError(ValueError):
    """The calibration data cannot give a threshold (no anomaly or no inlier pixels)."""


def threshold_at_tpr(accumulator: AnomalyMetricAccumulator, tpr: float) -> tuple[float, float, float]:
    """(threshold, its TPR, its FPR) at the first operating point whose TPR >= ``tpr``."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"target TPR must be in (0, 1], got {tpr}")
    if not (accumulator.n_pos and accumulator.n_neg):
        raise CalibrationError(
            f"calibration needs anomaly and inlier pixels, got {accumulator.n_pos} anomaly and "
            f"{accumulator.n_neg} inlier pixels"
        )
    return accumulator.at_tpr(tpr)


def calibrate_threshold(
    segmenter: Segmenter,
    dataset: Dataset,
    tpr: float = 0.95,
    max_frames: int | None = None,
    batch_size: int = 1,
    mode: AccumulatorMode = "binned",
    progress: bool = False,
) -> tuple[float, dict]:
    """Pick the open-set threshold at ``tpr`` on ``dataset``; returns (threshold, calibration metrics).

    Anomaly labels come from the anomaly ground truth or, without it, from semantic label K. In
    ``binned`` mode the threshold is a bin edge, which reproduces its operating point exactly.
    Raises :class:`CalibrationError` when the data has no anomaly or no inlier pixels.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"target TPR must be in (0, 1], got {tpr}")
    accumulator = EvaluationAccumulator(segmenter.card.class_names, mode=mode, components=None)
    run_frames(
        segmenter,
        dataset,
        accumulator,
        batch_size=batch_size,
        max_frames=max_frames,
        outputs=("anomaly_score",),
        progress=progress,
    )
    threshold, reached_tpr, fpr = threshold_at_tpr(accumulator.anomaly, tpr)
    anomaly = accumulator.anomaly.compute()
    metrics = {
        "target_tpr": tpr,
        "threshold": threshold,
        "tpr": reached_tpr,
        "fpr": fpr,
        "ap": anomaly["ap"],
        "auroc": anomaly["auroc"],
        "fpr95": anomaly["fpr95"],
        "n_pos": anomaly["n_pos"],
        "n_neg": anomaly["n_neg"],
        "frames": accumulator.counts["evaluated"],
        "skipped": accumulator.num_skipped,
        "score_method": segmenter.score_method,
        "mode": mode,
    }
    return threshold, metrics


# Metrics in a card that were measured at the card's threshold: a new threshold makes them stale.
THRESHOLD_DEPENDENT_METRICS = (
    "open_miou",
    "open_set_threshold",
    "per_class_open_iou",
    "unknown_iou",
    "macro_f1",
    "per_class_f1",
)


def write_calibrated_checkpoint(
    src: str | Path,
    dst: str | Path,
    threshold: float,
    tpr: float,
    metrics: dict,
    score_method: str | None = None,
    data: dict | None = None,
) -> None:
    """Copy ``src`` to ``dst`` (atomically; they may be the same file) with the calibrated threshold.

    The card gets ``threshold``, ``threshold_tpr`` and ``metrics["calibration"]`` (with ``data``, a
    description of what it was calibrated on); the metrics the new threshold or score makes stale move
    to ``metrics["superseded"]`` (see :func:`recalibrated_metrics`). ``score_method`` records the
    score the threshold belongs to when it differs from the card's.
    """
    model, card = load_checkpoint(src, device="cpu")
    method = score_method or card.score_method
    calibration = jsonable(metrics) | ({"data": data} if data else {})
    # updated() re-runs the card's validation (e.g. of the score method).
    card = card.updated(
        threshold=float(threshold),
        threshold_tpr=float(tpr),
        metrics=recalibrated_metrics(card.metrics, calibration, score_changed=method != card.score_method),
        score_method=method,
    )
    save_checkpoint(dst, model, card)


def recalibrated_metrics(metrics: dict, calibration: dict, score_changed: bool) -> dict:
    """A card's metrics after a new calibration.

    Threshold-free metrics (AP, AUROC, FPR95, mIoU) stay where they were measured with the same
    score; with another score every earlier section is stale. Stale values are kept, marked, under
    ``superseded`` so that no reader takes them for the new model's.
    """
    kept: dict = {}
    superseded: dict = {}
    for section, values in metrics.items():
        if section in ("calibration", "superseded"):
            continue
        if score_changed or not isinstance(values, dict):
            superseded[section] = values
            continue
        stale = {k: v for k, v in values.items() if k in THRESHOLD_DEPENDENT_METRICS}
        kept[section] = {k: v for k, v in values.items() if k not in stale}
        if stale:
            superseded[section] = stale
    result = kept | {"calibration": calibration}
    if superseded:
        reason = "score method changed" if score_changed else "measured at the previous threshold"
        result["superseded"] = {"reason": f"{reason}; re-evaluate to update", **superseded}
    return result
