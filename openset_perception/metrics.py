"""Evaluation metrics: anomaly detection, closed/open-set segmentation and per-distance breakdowns.

Anomaly conventions: labels 1 = anomaly (the positive class), 0 = inlier, ``ignore_index`` dropped;
higher score = more anomalous; a pixel is flagged when ``score >= threshold``. All pixels that share a
score form one operating point, so results never depend on pixel order. Rates are fractions in [0, 1]
computed over all pixels pooled (not averaged per image), as in the SMIYC / Fishyscapes evaluation.

Segmentation conventions: confusion matrices are indexed ``[target, prediction]``; open-set maps use
labels 0..K-1 for known classes and K for "unknown"; undefined per-class values (class absent from both
prediction and target) are NaN and left out of the means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from openset_perception.depth import DepthBins

IGNORE_INDEX = 255
TARGET_TPR = 0.95
DEFAULT_DISTANCE_EDGES_M = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0)
AccumulatorMode = Literal["exact", "binned"]


# ---------------------------------------------------------------------------------------------------
# Anomaly detection: AP, AUROC, FPR at 95% TPR
# ---------------------------------------------------------------------------------------------------


class _OperatingPoints(NamedTuple):
    """Detector operating points by descending threshold, with cumulative counts of flagged pixels."""

    thresholds: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray

    @property
    def n_pos(self) -> int:
        return int(self.true_positives[-1]) if self.true_positives.size else 0

    @property
    def n_neg(self) -> int:
        return int(self.false_positives[-1]) if self.false_positives.size else 0


@dataclass(frozen=True)
class CurvePoints:
    """PR and ROC curve points for plotting, aligned index by index, by descending threshold."""

    thresholds: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    precision: np.ndarray

    @property
    def recall(self) -> np.ndarray:
        return self.tpr


def _valid_pixels(scores: np.ndarray, labels: np.ndarray, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat scores and boolean anomaly labels of the non-ignored pixels, validated."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    if not np.issubdtype(scores.dtype, np.floating) and not np.issubdtype(scores.dtype, np.integer):
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    keep = labels != ignore_index
    kept_scores = scores[keep]
    kept_labels = labels[keep]
    if kept_labels.size and (kept_labels.min() < 0 or kept_labels.max() > 1):
        raise ValueError(f"anomaly labels must be 0 (inlier), 1 (anomaly) or {ignore_index} (ignore)")
    if not np.isfinite(kept_scores).all():
        raise ValueError("anomaly scores must be finite (NaN or inf found in non-ignored pixels)")
    return kept_scores, kept_labels.astype(bool)


def _exact_operating_points(scores: np.ndarray, positive: np.ndarray) -> _OperatingPoints:
    if scores.size == 0:
        no_counts = np.zeros(0, np.int64)
        return _OperatingPoints(scores, no_counts, no_counts)
    descending = np.argsort(scores)[::-1]
    sorted_scores = scores[descending]
    # The last pixel of each run of equal scores closes one operating point.
    group_ends = np.append(np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), sorted_scores.size - 1)
    true_positives = np.cumsum(positive[descending], dtype=np.int64)[group_ends]
    false_positives = group_ends.astype(np.int64) + 1 - true_positives
    return _OperatingPoints(sorted_scores[group_ends], true_positives, false_positives)


def _rates(points: _OperatingPoints) -> tuple[np.ndarray, np.ndarray]:
    """(TPR, FPR) per operating point; raises when either class is missing."""
    n_pos, n_neg = points.n_pos, points.n_neg
    if n_pos == 0:
        raise ValueError(f"anomaly metrics need anomaly pixels (label 1): got 0 anomaly, {n_neg} inlier")
    if n_neg == 0:
        raise ValueError(f"anomaly metrics need inlier pixels (label 0): got {n_pos} anomaly, 0 inlier")
    return points.true_positives / n_pos, points.false_positives / n_neg


def _summarise(points: _OperatingPoints) -> dict:
    tpr, fpr = _rates(points)
    precision = points.true_positives / (points.true_positives + points.false_positives)
    previous_tpr = np.concatenate(([0.0], tpr[:-1]))
    previous_fpr = np.concatenate(([0.0], fpr[:-1]))
    average_precision = np.sum((tpr - previous_tpr) * precision)
    auroc = np.sum((fpr - previous_fpr) * (tpr + previous_tpr)) / 2.0
    # tpr ends at 1, so some point always reaches the target.
    at_target = int(np.argmax(tpr >= TARGET_TPR))
    return {
        "ap": float(average_precision),
        "auroc": float(auroc),
        "fpr95": float(fpr[at_target]),
        "threshold_at_tpr95": float(points.thresholds[at_target]),
        "n_pos": points.n_pos,
        "n_neg": points.n_neg,
    }


def anomaly_metrics(scores: np.ndarray, labels: np.ndarray, ignore_index: int = IGNORE_INDEX) -> dict:
    """AP, AUROC, FPR95 and the TPR-95 threshold over all non-ignored pixels.

    Returns ``{"ap", "auroc", "fpr95", "threshold_at_tpr95", "n_pos", "n_neg"}``. AP uses step
    interpolation (sum of (R_n - R_{n-1}) P_n), AUROC the trapezoid rule, FPR95 the first operating point
    (by descending threshold) with TPR >= 0.95. Raises ValueError without anomaly or inlier pixels.
    """
    kept_scores, positive = _valid_pixels(scores, labels, ignore_index)
    return _summarise(_exact_operating_points(kept_scores, positive))


class _ExactStore:
    """Every non-ignored pixel, kept so the metrics equal the one-shot computation exactly."""

    def __init__(self) -> None:
        self._scores: list[np.ndarray] = []
        self._positive: list[np.ndarray] = []

    def update(self, scores: np.ndarray, positive: np.ndarray) -> None:
        self._scores.append(scores)
        self._positive.append(positive)

    def merge(self, other: _ExactStore) -> None:
        self._scores.extend(other._scores)
        self._positive.extend(other._positive)

    def operating_points(self) -> _OperatingPoints:
        if len(self._scores) > 1:
            # Keep the concatenation so repeated compute()/curves() calls do not redo it.
            self._scores = [np.concatenate(self._scores)]
            self._positive = [np.concatenate(self._positive)]
        if not self._scores:
            return _exact_operating_points(np.empty(0, np.float32), np.empty(0, bool))
        return _exact_operating_points(self._scores[0], self._positive[0])


def _order_preserving_keys(scores: np.ndarray) -> np.ndarray:
    """uint32 keys whose unsigned order equals the float32 order of ``scores`` (finite values)."""
    # Adding +0.0 turns -0.0 into +0.0 so both zeros share one key.
    bits = (scores.astype(np.float32) + np.float32(0.0)).view(np.uint32)
    negative = bits >= np.uint32(0x80000000)
    return np.where(negative, ~bits, bits | np.uint32(0x80000000))


def _lowest_value_of_keys(keys: np.ndarray) -> np.ndarray:
    """Inverse of ``_order_preserving_keys`` as float32."""
    keys = keys.astype(np.uint32)
    non_negative = keys >= np.uint32(0x80000000)
    bits = np.where(non_negative, keys & np.uint32(0x7FFFFFFF), ~keys)
    return bits.view(np.float32)


class _BinnedHistogram:
    """Counts of anomaly / inlier pixels per bin of the top ``bits`` bits of the float32 order key.

    Sign and exponent take 9 bits, so every bin lies within one power of two and its width is
    2 ** -(bits - 9) of its magnitude: fine where scores are dense, with no range fixed beforehand.
    """

    def __init__(self, bits: int) -> None:
        if not 9 <= bits <= 24:
            raise ValueError(f"binned accumulator bits must be in [9, 24], got {bits}")
        self.bits = bits
        self._shift = 32 - bits
        self._positives = np.zeros(1 << bits, np.int64)
        self._negatives = np.zeros(1 << bits, np.int64)

    def update(self, scores: np.ndarray, positive: np.ndarray) -> None:
        bin_index = _order_preserving_keys(scores) >> np.uint32(self._shift)
        for histogram, selected in (
            (self._positives, bin_index[positive]),
            (self._negatives, bin_index[~positive]),
        ):
            if selected.size:
                # A frame covers a narrow band of bins: count within it instead of the full 2**bits.
                lowest = selected.min()
                counts = np.bincount(selected - lowest)
                histogram[int(lowest) : int(lowest) + counts.size] += counts

    def merge(self, other: _BinnedHistogram) -> None:
        if other.bits != self.bits:
            raise ValueError(f"cannot merge binned accumulators with {self.bits} and {other.bits} bits")
        self._positives += other._positives
        self._negatives += other._negatives

    def operating_points(self) -> _OperatingPoints:
        occupied = np.flatnonzero(self._positives + self._negatives)[::-1]
        # Each bin's lower edge reproduces its operating point exactly under the `score >= t` rule.
        thresholds = _lowest_value_of_keys(occupied.astype(np.uint64) << np.uint64(self._shift))
        return _OperatingPoints(
            thresholds, np.cumsum(self._positives[occupied]), np.cumsum(self._negatives[occupied])
        )


class AnomalyMetricAccumulator:
    """Streaming anomaly metrics; ``compute()`` returns the same dict as :func:`anomaly_metrics`.

    ``mode="exact"`` keeps every non-ignored pixel (score + 1 byte) and equals the one-shot function
    exactly. ``mode="binned"`` keeps two histograms of ``2 ** bits`` int64 counts (16 MiB at 20 bits)
    over float32 score bins, so memory stays flat; each occupied bin is one operating point and its
    threshold is the bin's lowest float value.
    """

    def __init__(self, mode: AccumulatorMode = "exact", bits: int = 20, ignore_index: int = IGNORE_INDEX):
        if mode == "exact":
            self._store: _ExactStore | _BinnedHistogram = _ExactStore()
        elif mode == "binned":
            self._store = _BinnedHistogram(bits)
        else:
            raise ValueError(f"accumulator mode must be 'exact' or 'binned', got {mode!r}")
        self.mode = mode
        self.ignore_index = ignore_index
        self.n_pos = 0
        self.n_neg = 0

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        kept_scores, positive = _valid_pixels(scores, labels, self.ignore_index)
        n_positive = int(np.count_nonzero(positive))
        self.n_pos += n_positive
        self.n_neg += positive.size - n_positive
        self._store.update(kept_scores, positive)

    def merge(self, other: AnomalyMetricAccumulator) -> None:
        """Add another accumulator's pixels to this one (same mode, bits and ignore index)."""
        if (other.mode, other.ignore_index) != (self.mode, self.ignore_index):
            raise ValueError(
                f"cannot merge a {other.mode} accumulator (ignore {other.ignore_index}) "
                f"into a {self.mode} one (ignore {self.ignore_index})"
            )
        self._store.merge(other._store)
        self.n_pos += other.n_pos
        self.n_neg += other.n_neg

    def compute(self) -> dict:
        return _summarise(self._store.operating_points())

    def curves(self, max_points: int = 1000) -> CurvePoints:
        """At most ``max_points`` operating points, spread evenly in both TPR and FPR."""
        if max_points < 4:
            raise ValueError(f"max_points must be at least 4, got {max_points}")
        points = self._store.operating_points()
        tpr, fpr = _rates(points)
        chosen = np.arange(tpr.size)
        if tpr.size > max_points:
            targets = np.linspace(0.0, 1.0, (max_points - 2) // 2)
            chosen = np.unique(
                np.concatenate(
                    (
                        [0, tpr.size - 1],
                        np.minimum(np.searchsorted(tpr, targets), tpr.size - 1),
                        np.minimum(np.searchsorted(fpr, targets), fpr.size - 1),
                    )
                )
            )
        flagged = points.true_positives[chosen] + points.false_positives[chosen]
        return CurvePoints(
            thresholds=points.thresholds[chosen],
            tpr=tpr[chosen],
            fpr=fpr[chosen],
            precision=points.true_positives[chosen] / flagged,
        )


# ---------------------------------------------------------------------------------------------------
# Closed-set and open-set segmentation
# ---------------------------------------------------------------------------------------------------


def confusion_matrix(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """(num_classes, num_classes) int64 counts indexed [target, prediction]; ignored targets dropped."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    keep = target != ignore_index
    kept_target = target[keep].astype(np.int64)
    kept_pred = pred[keep].astype(np.int64)
    for name, values in (("target", kept_target), ("prediction", kept_pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes}) or equal {ignore_index} (target only), "
                f"got range [{values.min()}, {values.max()}]"
            )
    counts = np.bincount(kept_target * num_classes + kept_pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class ConfusionMatrixAccumulator:
    """Streaming confusion matrix; use ``num_classes = K + 1`` for open-set maps."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def merge(self, other: ConfusionMatrixAccumulator) -> None:
        if other.matrix.shape != self.matrix.shape:
            raise ValueError(f"cannot merge confusion matrices {other.matrix.shape} and {self.matrix.shape}")
        self.matrix += other.matrix


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio with NaN where the denominator is 0 (class absent everywhere)."""
    numerator = numerator.astype(np.float64)
    result = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=result, where=denominator > 0)
    return result


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _iou_and_f1(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(conf, dtype=np.int64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {conf.shape}")
    true_positives = np.diag(conf)
    # Row + column sums = 2 TP + FP + FN: every off-diagonal entry is an FP or FN of its class.
    rows_plus_columns = conf.sum(axis=0) + conf.sum(axis=1)
    iou = _ratio(true_positives, rows_plus_columns - true_positives)
    f1 = _ratio(2 * true_positives, rows_plus_columns)
    return iou, f1


def miou(conf: np.ndarray) -> tuple[float, np.ndarray]:
    """(mean IoU, per-class IoU) of a confusion matrix; absent classes are NaN and not averaged."""
    iou, _ = _iou_and_f1(conf)
    return _nanmean(iou), iou


def open_set_metrics(conf: np.ndarray, num_known: int) -> dict:
    """Open-set scores of a (K+1, K+1) confusion matrix whose last class is "unknown".

    open-IoU_k = TP_k / (TP_k + FP_k^os + FN_k^os) (thesis eqs. 5.4-5.5): known pixels predicted unknown
    are false negatives of their class, unknown pixels predicted k false positives of k. Means run over
    the K known classes only, so a perfect anomaly detector scores the closed-set mIoU.
    Returns ``{"open_miou", "per_class_open_iou", "unknown_iou", "macro_f1", "per_class_f1"}``.
    """
    if np.shape(conf) != (num_known + 1, num_known + 1):
        raise ValueError(f"open-set confusion matrix must be {(num_known + 1,) * 2}, got {np.shape(conf)}")
    iou, f1 = _iou_and_f1(conf)
    return {
        "open_miou": _nanmean(iou[:num_known]),
        "per_class_open_iou": iou[:num_known].tolist(),
        "unknown_iou": float(iou[num_known]),
        "macro_f1": _nanmean(f1[:num_known]),
        "per_class_f1": f1[:num_known].tolist(),
    }


def open_miou(
    pred_open: np.ndarray, target_open: np.ndarray, num_known: int, ignore_index: int = IGNORE_INDEX
) -> dict:
    """Open-set metrics of label maps in 0..K (K = unknown); see :func:`open_set_metrics`."""
    return open_set_metrics(confusion_matrix(pred_open, target_open, num_known + 1, ignore_index), num_known)


def anomaly_labels_from_open_target(
    target_open: np.ndarray, num_known: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """uint8 anomaly labels of an open-set target: 1 where class K, 0 where known, else ignore."""
    target_open = np.asarray(target_open)
    if np.any((target_open > num_known) & (target_open != ignore_index)):
        raise ValueError(f"open-set targets must lie in [0, {num_known}] or equal {ignore_index}")
    labels = np.full(target_open.shape, ignore_index, np.uint8)
    labels[target_open < num_known] = 0
    labels[target_open == num_known] = 1
    return labels


def open_set_prediction(
    closed_pred: np.ndarray, score: np.ndarray, threshold: float, num_known: int
) -> np.ndarray:
    """Closed-set prediction with label K wherever ``score >= threshold``."""
    closed_pred = np.asarray(closed_pred)
    score = np.asarray(score)
    if closed_pred.shape != score.shape:
        raise ValueError(f"prediction {closed_pred.shape} and score {score.shape} differ in shape")
    return np.where(score >= threshold, num_known, closed_pred)


class OpenSetImage(NamedTuple):
    """One evaluated image: anomaly score map, closed-set argmax (0..K-1), open-set target (0..K, 255)."""

    score: np.ndarray
    closed_pred: np.ndarray
    target: np.ndarray


def _fold_threshold(
    fold: Iterable[OpenSetImage], num_known: int, mode: AccumulatorMode, ignore_index: int
) -> tuple[float, int]:
    """(TPR-95 threshold, image count) of one fold."""
    accumulator = AnomalyMetricAccumulator(mode, ignore_index=ignore_index)
    n_images = 0
    for image in fold:
        accumulator.update(
            image.score, anomaly_labels_from_open_target(image.target, num_known, ignore_index)
        )
        n_images += 1
    return accumulator.compute()["threshold_at_tpr95"], n_images


def two_fold_open_miou(
    fold_a: Iterable[OpenSetImage],
    fold_b: Iterable[OpenSetImage],
    num_known: int,
    mode: AccumulatorMode = "exact",
    ignore_index: int = IGNORE_INDEX,
) -> dict:
    """Two-fold open-set protocol (DenseHybrid paper 5.3).

    The TPR-95 threshold picked on one fold labels pixels with ``score >= threshold`` as unknown on the
    other; open-set metrics are measured there, the folds swap, and the two results are averaged with
    the evaluated fold's image count as weight. Each fold is iterated twice (threshold, then
    confusion), so pass lists or re-iterable objects that reload images, not one-shot generators.
    ``mode`` picks the anomaly accumulator used for the thresholds. Returns ``{"open_miou",
    "unknown_iou", "macro_f1", "miou" (closed-set, both folds pooled), "folds": [per evaluation]}``.
    """
    folds = {"a": fold_a, "b": fold_b}
    for name, fold in folds.items():
        if iter(fold) is fold:
            raise TypeError(
                f"fold {name} is a one-shot iterator; it is read twice, pass a list or re-iterable"
            )
    calibration = {name: _fold_threshold(fold, num_known, mode, ignore_index) for name, fold in folds.items()}

    closed = ConfusionMatrixAccumulator(num_known, ignore_index)
    evaluations = []
    for calibrated_on, evaluated_on in (("a", "b"), ("b", "a")):
        threshold = calibration[calibrated_on][0]
        open_set = ConfusionMatrixAccumulator(num_known + 1, ignore_index)
        for image in folds[evaluated_on]:
            open_set.update(
                open_set_prediction(image.closed_pred, image.score, threshold, num_known), image.target
            )
            target = np.asarray(image.target)
            closed.update(image.closed_pred, np.where(target == num_known, ignore_index, target))
        evaluations.append(
            {
                "calibration_fold": calibrated_on,
                "evaluation_fold": evaluated_on,
                "threshold": threshold,
                "n_images": calibration[evaluated_on][1],
                **open_set_metrics(open_set.matrix, num_known),
            }
        )

    weights = np.array([evaluation["n_images"] for evaluation in evaluations], dtype=np.float64)

    def weighted(key: str) -> float:
        return float(np.dot(weights, [evaluation[key] for evaluation in evaluations]) / weights.sum())

    return {
        "open_miou": weighted("open_miou"),
        "unknown_iou": weighted("unknown_iou"),
        "macro_f1": weighted("macro_f1"),
        "miou": miou(closed.matrix)[0],
        "folds": evaluations,
    }


# ---------------------------------------------------------------------------------------------------
# Per-distance anomaly metrics
# ---------------------------------------------------------------------------------------------------


DEFAULT_DISTANCE_BINS = DepthBins(DEFAULT_DISTANCE_EDGES_M, beyond_last=False)


def _as_bins(bins: DepthBins | Sequence[float]) -> DepthBins:
    if isinstance(bins, DepthBins):
        return bins
    return DepthBins(tuple(float(edge) for edge in bins), beyond_last=False)


class DistanceBinnedAccumulator:
    """One :class:`AnomalyMetricAccumulator` per depth range."""

    def __init__(
        self,
        bins: DepthBins | Sequence[float] = DEFAULT_DISTANCE_BINS,
        mode: AccumulatorMode = "exact",
        bits: int = 20,
        ignore_index: int = IGNORE_INDEX,
    ):
        self.bins = _as_bins(bins)
        self.ignore_index = ignore_index
        self.accumulators = [
            AnomalyMetricAccumulator(mode, bits=bits, ignore_index=ignore_index) for _ in self.bins.ranges
        ]

    def update(self, scores: np.ndarray, labels: np.ndarray, depth: np.ndarray) -> None:
        scores = np.asarray(scores)
        labels = np.asarray(labels)
        if np.shape(depth) != scores.shape:
            raise ValueError(f"depth {np.shape(depth)} and scores {scores.shape} differ in shape")
        range_index = self.bins.assign(depth)
        for index, accumulator in enumerate(self.accumulators):
            in_range = range_index == index
            if in_range.any():
                accumulator.update(scores[in_range], labels[in_range])

    def merge(self, other: DistanceBinnedAccumulator) -> None:
        if other.bins != self.bins:
            raise ValueError(
                f"cannot merge distance accumulators with edges {other.bins.ranges} and {self.bins.ranges}"
            )
        for mine, theirs in zip(self.accumulators, other.accumulators, strict=True):
            mine.merge(theirs)

    def compute(self) -> list[dict]:
        """Per range ``{"range_m": [lo, hi], "ap", "auroc", "fpr95", "threshold_at_tpr95", "n_pos",
        "n_neg"}``; the four metrics are None where the range lacks anomaly or inlier pixels."""
        results = []
        for (low, high), accumulator in zip(self.bins.ranges, self.accumulators, strict=True):
            if accumulator.n_pos and accumulator.n_neg:
                metrics = accumulator.compute()
            else:
                metrics = dict.fromkeys(("ap", "auroc", "fpr95", "threshold_at_tpr95"))
                metrics.update(n_pos=accumulator.n_pos, n_neg=accumulator.n_neg)
            results.append({"range_m": [low, high], **metrics})
        return results


def per_distance_anomaly_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    depth: np.ndarray,
    bins: DepthBins | Sequence[float] = DEFAULT_DISTANCE_BINS,
    ignore_index: int = IGNORE_INDEX,
) -> list[dict]:
    """Anomaly metrics within each depth range (metres); see :meth:`DistanceBinnedAccumulator.compute`."""
    accumulator = DistanceBinnedAccumulator(bins, mode="exact", ignore_index=ignore_index)
    accumulator.update(scores, labels, depth)
    return accumulator.compute()
