"""Evaluation metrics: anomaly detection, closed/open-set segmentation and per-distance breakdowns.

Anomaly conventions: labels 1 = anomaly (the positive class), 0 = inlier, ``ignore_index`` dropped;
higher score = more anomalous; a pixel is flagged when ``score >= threshold``. All pixels that share a
score form one operating point, so results never depend on pixel order. Rates are fractions in [0, 1]
computed over all pixels pooled (``protocol="pooled"``, as the SMIYC / Fishyscapes evaluation does) or
per image and averaged (``protocol="per-image"``, as DenseHybrid reports StreetHazards).

Segmentation conventions: confusion matrices are indexed ``[target, prediction]``; open-set maps use
labels 0..K-1 for known classes and K for "unknown"; undefined per-class values (class absent from both
prediction and target) are NaN and left out of the means.

This module needs numpy only (no torch), so evaluation tools import it cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from openset_perception.depth_bins import DepthBins

IGNORE_INDEX = 255
TARGET_TPR = 0.95
# Operating points reported besides FPR95: FPR at these TPRs, TPR at these FPRs (fractions).
FPR_AT_TPR = (0.80, 0.90, 0.95, 0.99)
TPR_AT_FPR = (0.01, 0.05)
DEFAULT_DISTANCE_EDGES_M = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0)
DEFAULT_BINNED_BITS = 20
# SegmentMeIfYouCan's pixel metrics: per frame this many score-quantile bin edges, half from each class.
SMIYC_BINS_PER_FRAME = 768
AccumulatorMode = Literal["exact", "binned", "smiyc"]
Protocol = Literal["pooled", "per-image"]
ACCUMULATOR_MODES: tuple[AccumulatorMode, ...] = ("exact", "binned", "smiyc")
PROTOCOLS: tuple[Protocol, ...] = ("pooled", "per-image")


def _percent_key(prefix: str, fraction: float) -> str:
    return f"{prefix}{round(100 * fraction):d}"


SUMMARY_KEYS = (
    "ap",
    "auroc",
    "fpr95",
    "threshold_at_tpr95",
    *(_percent_key("fpr_at_tpr", tpr) for tpr in FPR_AT_TPR),
    *(_percent_key("tpr_at_fpr", fpr) for fpr in TPR_AT_FPR),
    "best_f1",
    "best_f1_threshold",
)
"""Every value :func:`anomaly_metrics` reports besides the pixel counts ``n_pos`` and ``n_neg``."""


# ---------------------------------------------------------------------------------------------------
# Anomaly detection: AP, AUROC, FPR at 95% TPR and the other operating points
# ---------------------------------------------------------------------------------------------------


class _OperatingPoints(NamedTuple):
    """Operating points by descending threshold with cumulative counts of flagged pixels (from the top)."""

    thresholds: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray


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


def best_f1(
    thresholds: np.ndarray, true_positives: np.ndarray, false_positives: np.ndarray, n_pos: int
) -> tuple[float, float]:
    """(highest pixel F1, its threshold) over operating points given by cumulative counts.

    F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (TP + FP + n_pos); of equal F1 values the first point (the
    highest threshold) wins, as ``argmax`` picks in the SegmentMeIfYouCan code.
    """
    true_positives = np.asarray(true_positives, dtype=np.float64)
    f1 = 2.0 * true_positives / (true_positives + np.asarray(false_positives, dtype=np.float64) + n_pos)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


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


def _check_both_classes(n_pos: int, n_neg: int) -> None:
    if n_pos == 0:
        raise ValueError(f"anomaly metrics need anomaly pixels (label 1): got 0 anomaly, {n_neg} inlier")
    if n_neg == 0:
        raise ValueError(f"anomaly metrics need inlier pixels (label 0): got {n_pos} anomaly, 0 inlier")


class _CurveScan:
    """Every summary of a curve, accumulated over blocks of operating points by descending threshold.

    AP is the step sum of (R_n - R_{n-1}) P_n, AUROC the trapezoid rule from (0, 0), FPR at a TPR the
    first point (by descending threshold) whose TPR reaches it, TPR at an FPR the last point whose FPR
    stays within it (TPR 0 above every score when none does).
    """

    def __init__(self, n_pos: int, n_neg: int, tpr_targets: Sequence[float]) -> None:
        _check_both_classes(n_pos, n_neg)
        self.n_pos, self.n_neg = n_pos, n_neg
        self.tpr_targets = tuple(tpr_targets)
        self.at_tpr: dict[float, tuple[float, float, float]] = {}  # target -> (threshold, TPR, FPR)
        self.at_fpr = {target: (0.0, math.inf) for target in TPR_AT_FPR}  # target -> (TPR, threshold)
        self.ap = 0.0
        self.auroc = 0.0
        self.best_f1 = (-1.0, math.nan)
        self._last_tpr = 0.0
        self._last_fpr = 0.0

    def add(self, points: _OperatingPoints) -> None:
        if points.thresholds.size == 0:
            return
        tpr = points.true_positives / self.n_pos
        fpr = points.false_positives / self.n_neg
        precision = points.true_positives / (points.true_positives + points.false_positives)
        previous_tpr = np.concatenate(([self._last_tpr], tpr[:-1]))
        previous_fpr = np.concatenate(([self._last_fpr], fpr[:-1]))
        self.ap += float(np.sum((tpr - previous_tpr) * precision))
        self.auroc += float(np.sum((fpr - previous_fpr) * (tpr + previous_tpr))) / 2.0
        for target in self.tpr_targets:
            index = int(np.searchsorted(tpr, target, side="left"))
            if target not in self.at_tpr and index < tpr.size:
                self.at_tpr[target] = (float(points.thresholds[index]), float(tpr[index]), float(fpr[index]))
        for target in TPR_AT_FPR:
            within = int(np.searchsorted(fpr, target, side="right"))
            if within:
                self.at_fpr[target] = (float(tpr[within - 1]), float(points.thresholds[within - 1]))
        block_best = best_f1(points.thresholds, points.true_positives, points.false_positives, self.n_pos)
        if block_best[0] > self.best_f1[0]:
            self.best_f1 = block_best
        self._last_tpr, self._last_fpr = float(tpr[-1]), float(fpr[-1])

    def summary(self) -> dict:
        threshold_95, _, fpr_95 = self.at_tpr[TARGET_TPR]
        result = {"ap": self.ap, "auroc": self.auroc, "fpr95": fpr_95, "threshold_at_tpr95": threshold_95}
        result.update({_percent_key("fpr_at_tpr", tpr): self.at_tpr[tpr][2] for tpr in FPR_AT_TPR})
        result.update({_percent_key("tpr_at_fpr", fpr): self.at_fpr[fpr][0] for fpr in TPR_AT_FPR})
        result["best_f1"], result["best_f1_threshold"] = self.best_f1
        return {**result, "n_pos": self.n_pos, "n_neg": self.n_neg}


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Distinct values of an ascending array, without the copy and sort of ``np.unique``."""
    if values.size < 2:
        return values
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


class _GrowingArray:
    """A 1-D array that grows in place: the buffer is reallocated (a remap of its pages for large
    arrays, no second copy), and one run of ``append``s never holds more than 1.25x its values."""

    GROWTH = 1.25
    MIN_CAPACITY = 1 << 14

    def __init__(self) -> None:
        self._buffer = np.empty(0, np.float32)
        self.size = 0

    @property
    def values(self) -> np.ndarray:
        return self._buffer[: self.size]

    @property
    def nbytes(self) -> int:
        return self._buffer.nbytes

    def append(self, values: np.ndarray) -> None:
        dtype = np.result_type(self._buffer.dtype, values.dtype)
        if dtype != self._buffer.dtype:
            self._buffer = self._buffer.astype(dtype)  # float64 input: a one-time widening
        needed = self.size + values.size
        if needed > self._buffer.size:
            capacity = max(needed, int(self._buffer.size * self.GROWTH), self.MIN_CAPACITY)
            self._buffer.resize(capacity, refcheck=False)  # no views of the buffer outlive a call
        self._buffer[self.size : needed] = values
        self.size = needed

    def widen(self, dtype: np.dtype) -> None:
        if dtype != self._buffer.dtype:
            self._buffer = self._buffer.astype(dtype)


class _ExactStore:
    """Every non-ignored score, anomaly and inlier pixels apart so labels cost no memory: 4 bytes a
    pixel for float32 scores (float64 input stays float64), 5 at most while growing. Sorted in place
    once metrics are asked for; operating points are then read in blocks, so computing them needs
    little memory beyond the store."""

    BLOCK = 1 << 20

    def __init__(self) -> None:
        self._scores = {True: _GrowingArray(), False: _GrowingArray()}
        self._sorted_size = {True: 0, False: 0}

    def update(self, scores: np.ndarray, positive: np.ndarray) -> None:
        if not np.issubdtype(scores.dtype, np.floating):
            scores = scores.astype(np.float64)
        self._scores[True].append(scores[positive])
        self._scores[False].append(scores[~positive])

    def merge(self, other: _ExactStore) -> None:
        for label in (True, False):
            self._scores[label].append(other._scores[label].values)

    def _sorted_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(anomaly scores, inlier scores), ascending, in one common dtype."""
        dtype = np.result_type(self._scores[True].values.dtype, self._scores[False].values.dtype)
        for label, scores in self._scores.items():
            scores.widen(dtype)
            if self._sorted_size[label] != scores.size:
                scores.values.sort()
                self._sorted_size[label] = scores.size
        return self._scores[True].values, self._scores[False].values

    def state_bytes(self) -> int:
        return sum(scores.nbytes for scores in self._scores.values())

    def counts(self) -> tuple[int, int]:
        return self._scores[True].size, self._scores[False].size

    def blocks(self) -> Iterator[_OperatingPoints]:
        return _exact_blocks([self._sorted_scores()], self.BLOCK)


class _CombinedExact:
    """Several exact stores read as one, without copying their scores (pooled metrics over the depth
    ranges' stores)."""

    def __init__(self, stores: Sequence[_ExactStore]) -> None:
        self.stores = list(stores)

    def state_bytes(self) -> int:
        return sum(store.state_bytes() for store in self.stores)

    def counts(self) -> tuple[int, int]:
        totals = [store.counts() for store in self.stores]
        return sum(pos for pos, _ in totals), sum(neg for _, neg in totals)

    def blocks(self) -> Iterator[_OperatingPoints]:
        return _exact_blocks([store._sorted_scores() for store in self.stores], _ExactStore.BLOCK)


def _exact_blocks(parts: Sequence[tuple[np.ndarray, np.ndarray]], block: int) -> Iterator[_OperatingPoints]:
    """Operating points of ascending (anomaly, inlier) score arrays, top down, about ``block`` at a time.

    Each block takes the scores >= a cut value, so equal scores never straddle two blocks.
    """
    positives = [part[0] for part in parts]
    negatives = [part[1] for part in parts]
    arrays = positives + negatives
    step = max(1, block // len(arrays))
    n_pos, n_neg = sum(a.size for a in positives), sum(a.size for a in negatives)
    tops = [a.size for a in arrays]  # scores at index >= top are above the current block
    flagged_pos = flagged_neg = 0  # pixels above the current block
    while any(tops):
        cut = max(a[top - step] if top > step else -np.inf for a, top in zip(arrays, tops, strict=True))
        lows = [int(np.searchsorted(a[:top], cut, side="left")) for a, top in zip(arrays, tops, strict=True)]
        slabs = [a[low:top] for a, low, top in zip(arrays, lows, tops, strict=True)]
        values = np.unique(np.concatenate([_sorted_unique(slab) for slab in slabs]))[::-1]
        counts = [slab.size - np.searchsorted(slab, values, side="left") for slab in slabs]
        true_positives = flagged_pos + sum(counts[: len(positives)])
        false_positives = flagged_neg + sum(counts[len(positives) :])
        yield _OperatingPoints(
            values, np.asarray(true_positives, np.int64), np.asarray(false_positives, np.int64)
        )
        flagged_pos += sum(slab.size for slab in slabs[: len(positives)])
        flagged_neg += sum(slab.size for slab in slabs[len(positives) :])
        tops = lows
    assert (flagged_pos, flagged_neg) == (n_pos, n_neg)


class _RangeBinnedHistogram:
    """Anomaly / inlier counts in ``2 ** bits`` bins of width ``2 ** exponent`` placed on the observed
    score range, so the resolution follows the scores whatever their offset and scale.

    Bin ``i`` holds the scores with ``floor(score * 2 ** -exponent) == i``: scaling by a power of two is
    exact, so ``score >= i * 2 ** exponent`` holds exactly for the scores of bins ``>= i`` and the bin's
    lower edge reproduces its operating point. The first frame's range fills up to half the bins;
    when a frame falls outside the window, the exponent grows by the fewest steps that fit everything
    and each new bin is the exact union of old ones (a bin ``i`` goes to ``i >> steps``), so the
    observed range always spans more than an eighth of the bins (typically a quarter to all of them).
    Counts start as uint32 and widen to int64 before they could overflow.
    """

    def __init__(self, bits: int) -> None:
        if not 8 <= bits <= 24:
            raise ValueError(f"binned accumulator bits must be in [8, 24], got {bits}")
        self.bits = bits
        self.n_bins = 1 << bits
        self._counts = np.zeros((self.n_bins, 2), np.uint32)  # [:, 0] inliers, [:, 1] anomalies
        self._exponent: int | None = None
        self._first = 0  # bin index of row 0
        self._low = math.inf  # observed score range
        self._high = -math.inf
        self._total = 0
        self._float32_scores = True

    @staticmethod
    def _bin(value: float, exponent: int) -> int:
        return math.floor(math.ldexp(value, -exponent))

    def _exponent_for(self, low: float, high: float, capacity: int) -> int:
        """Smallest exponent whose bins put [low, high] into ``capacity`` bins; never finer than float64
        resolves at this magnitude, so bin indices stay below 2**53 and exact in float64."""
        magnitude = max(abs(low), abs(high))
        # 2 ** -exponent must stay finite: at most 2 ** 1022.
        exponent = max(math.frexp(magnitude)[1] - 52, -1022)
        if high > low:
            exponent = max(exponent, math.frexp((high - low) / capacity)[1] - 1)
        while self._bin(high, exponent) - self._bin(low, exponent) + 1 > capacity:
            exponent += 1
        return exponent

    def _window_for(self, exponent: int) -> int:
        """First bin of a window that centres the observed range."""
        low_bin, high_bin = self._bin(self._low, exponent), self._bin(self._high, exponent)
        return low_bin - (self.n_bins - (high_bin - low_bin + 1)) // 2

    def _regridded(self, exponent: int, first: int) -> np.ndarray:
        """These counts in the bins of ``exponent`` (>= the current one) starting at bin ``first``."""
        assert self._exponent is not None
        occupied = np.flatnonzero(self._counts.any(axis=1))
        counts = np.zeros_like(self._counts)
        if occupied.size:
            # Rows ascend with the old bins, so each new bin sums one run of them.
            rows = ((occupied + self._first) >> (exponent - self._exponent)) - first
            starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 1))
            counts[rows[starts]] = np.add.reduceat(self._counts[occupied], starts, axis=0)
        return counts

    def _cover(self, low: float, high: float) -> None:
        """Make the window hold [low, high] besides everything counted so far."""
        # While every pixel so far has one score, the bins may start afresh from the new range.
        single_value = self._low if self._exponent is not None and self._low == self._high else None
        self._low, self._high = min(self._low, low), max(self._high, high)
        if self._exponent is None or single_value is not None:
            held = self._counts.sum(axis=0, dtype=np.int64)
            self._exponent = self._exponent_for(self._low, self._high, self.n_bins // 2)
            self._first = self._window_for(self._exponent)
            if single_value is not None:
                self._counts[:] = 0
                self._counts[self._bin(single_value, self._exponent) - self._first] = held
            return
        if self._first <= self._bin(low, self._exponent) and self._bin(high, self._exponent) < (
            self._first + self.n_bins
        ):
            return
        exponent = max(self._exponent, self._exponent_for(self._low, self._high, self.n_bins))
        first = self._window_for(exponent)
        self._counts = self._regridded(exponent, first)
        self._exponent, self._first = exponent, first

    def _widen_if_needed(self, added: int) -> None:
        if self._total + added > np.iinfo(self._counts.dtype).max:
            self._counts = self._counts.astype(np.int64)
        self._total += added

    def update(self, scores: np.ndarray, positive: np.ndarray) -> None:
        if scores.size == 0:
            return
        self._float32_scores &= scores.dtype.itemsize <= 4
        low, high = float(scores.min()), float(scores.max())
        self._cover(low, high)
        assert self._exponent is not None
        # Scaling by a power of two is exact in float32 too while the factor is a normal float32;
        # float32 halves the memory traffic of the engine's scores.
        narrow = scores.dtype.itemsize <= 4 and -126 <= -self._exponent <= 127
        scaled = scores.astype(np.float32 if narrow else np.float64)
        scaled *= scaled.dtype.type(math.ldexp(1.0, -self._exponent))
        np.floor(scaled, out=scaled)
        lowest = self._bin(low, self._exponent)
        # One bincount over (bin, label) pairs, on the band of bins this frame touches.
        pairs = scaled.astype(np.int64)  # integers below 2**53: exact
        pairs -= lowest
        pairs <<= 1
        pairs += positive
        counts = np.bincount(pairs)
        self._widen_if_needed(scores.size)
        flat = self._counts.reshape(-1)
        start = 2 * (lowest - self._first)
        flat[start : start + counts.size] += counts.astype(flat.dtype)

    def merge(self, other: _RangeBinnedHistogram) -> None:
        if other.bits != self.bits:
            raise ValueError(f"cannot merge binned accumulators with {self.bits} and {other.bits} bits")
        if other._exponent is None:
            return
        self._float32_scores &= other._float32_scores
        if self._exponent is None:
            self._exponent, self._first = other._exponent, other._first
            self._low, self._high = other._low, other._high
        self._low, self._high = min(self._low, other._low), max(self._high, other._high)
        exponent = max(
            self._exponent, other._exponent, self._exponent_for(self._low, self._high, self.n_bins)
        )
        first = self._window_for(exponent)
        mine, theirs = self._regridded(exponent, first), other._regridded(exponent, first)
        self._exponent, self._first = exponent, first
        self._widen_if_needed(other._total)
        self._counts = mine.astype(self._counts.dtype) + theirs.astype(self._counts.dtype)

    def state_bytes(self) -> int:
        return self._counts.nbytes

    def counts(self) -> tuple[int, int]:
        totals = self._counts.sum(axis=0, dtype=np.int64)
        return int(totals[1]), int(totals[0])

    def blocks(self) -> Iterator[_OperatingPoints]:
        if self._exponent is None:
            return
        occupied = np.flatnonzero(self._counts.any(axis=1))[::-1]
        thresholds = np.ldexp((occupied + self._first).astype(np.float64), self._exponent)
        if self._float32_scores:
            # The smallest float32 >= the edge flags the same float32 scores and survives a cast.
            rounded = thresholds.astype(np.float32)
            thresholds = np.where(rounded < thresholds, np.nextafter(rounded, np.float32(np.inf)), rounded)
        counts = self._counts[occupied].astype(np.int64)
        yield _OperatingPoints(thresholds, np.cumsum(counts[:, 1]), np.cumsum(counts[:, 0]))


class _SmiycQuantileBins:
    """The SegmentMeIfYouCan evaluator's quantisation, to predict its leaderboard digits.

    Per frame: scores cast to float16; bin edges at ``SMIYC_BINS_PER_FRAME // 2`` quantiles of the
    anomaly scores and as many of the inlier scores, plus the frame's range widened by
    ``max(1 % of it, 0.01)``; pixels counted per bin (``np.histogram``) with the bin's lower edge as its
    threshold. Frames are merged by sorting all lower edges; equal edges form one operating point.
    """

    def __init__(self) -> None:
        self._thresholds: list[np.ndarray] = []
        self._positives: list[np.ndarray] = []
        self._negatives: list[np.ndarray] = []

    def update(self, scores: np.ndarray, positive: np.ndarray) -> None:
        if scores.size == 0:
            return
        half = np.asarray(scores, dtype=np.float16)
        if not np.isfinite(half).all():
            raise ValueError(
                "--smiyc-compatible scores must fit float16 (|score| <= 65504), as SMIYC stores them"
            )
        anomaly, inlier = half[positive], half[~positive]
        low, high = half.min(), half.max()
        margin = np.maximum((high - low) * np.float16(0.01), np.float16(0.01))
        parts = [np.array([low - margin, high + margin], np.float16)]
        for values in (anomaly, inlier):
            if values.size:
                parts.append(
                    np.quantile(values, np.linspace(0, 1, min(SMIYC_BINS_PER_FRAME // 2, values.size)))
                )
        edges = np.unique(np.concatenate(parts))
        self._thresholds.append(edges[:-1].astype(np.float64))
        self._positives.append(np.histogram(anomaly, bins=edges)[0])
        self._negatives.append(np.histogram(inlier, bins=edges)[0])

    def merge(self, other: _SmiycQuantileBins) -> None:
        self._thresholds += other._thresholds
        self._positives += other._positives
        self._negatives += other._negatives

    def state_bytes(self) -> int:
        return sum(array.nbytes for array in (*self._thresholds, *self._positives, *self._negatives))

    def counts(self) -> tuple[int, int]:
        return int(sum(c.sum() for c in self._positives)), int(sum(c.sum() for c in self._negatives))

    def blocks(self) -> Iterator[_OperatingPoints]:
        if not self._thresholds:
            return
        thresholds = np.concatenate(self._thresholds)
        order = np.argsort(thresholds, kind="stable")[::-1]
        thresholds = thresholds[order]
        true_positives = np.cumsum(np.concatenate(self._positives)[order])
        false_positives = np.cumsum(np.concatenate(self._negatives)[order])
        # The last entry of each run of equal edges closes its operating point; runs adding no pixel
        # repeat the point above them and are dropped.
        ends = np.append(np.flatnonzero(thresholds[1:] != thresholds[:-1]), thresholds.size - 1)
        flagged = true_positives[ends] + false_positives[ends]
        keep = np.diff(np.concatenate(([0], flagged))) > 0
        ends = ends[keep]
        yield _OperatingPoints(thresholds[ends], true_positives[ends], false_positives[ends])


def _take(points: _OperatingPoints, index: np.ndarray) -> _OperatingPoints:
    return _OperatingPoints(*(array[index] for array in points))


_Store = _ExactStore | _CombinedExact | _RangeBinnedHistogram | _SmiycQuantileBins


def _new_store(mode: AccumulatorMode, bits: int) -> _Store:
    if mode == "exact":
        return _ExactStore()
    if mode == "binned":
        return _RangeBinnedHistogram(bits)
    if mode == "smiyc":
        return _SmiycQuantileBins()
    raise ValueError(f"accumulator mode must be one of {', '.join(ACCUMULATOR_MODES)}, got {mode!r}")


def _summarise(store: _Store, tpr_targets: Sequence[float] = FPR_AT_TPR) -> _CurveScan:
    scan = _CurveScan(*store.counts(), (*tpr_targets, TARGET_TPR))
    for points in store.blocks():
        scan.add(points)
    return scan


def anomaly_metrics(scores: np.ndarray, labels: np.ndarray, ignore_index: int = IGNORE_INDEX) -> dict:
    """Exact anomaly metrics over all non-ignored pixels; keys :data:`SUMMARY_KEYS`, ``n_pos``, ``n_neg``.

    AP uses step interpolation (sum of (R_n - R_{n-1}) P_n), AUROC the trapezoid rule, FPR95 (and FPR
    at the other TPRs) the first operating point by descending threshold with TPR >= the target, TPR at
    an FPR the last point whose FPR stays within it, best F1 the highest 2TP / (2TP + FP + FN). Raises
    ValueError without anomaly or inlier pixels.
    """
    accumulator = AnomalyMetricAccumulator("exact", ignore_index=ignore_index)
    accumulator.update(scores, labels)
    return accumulator.compute()


class _PerImageMeans:
    """Metrics of each image on its own, averaged over the images that have both classes."""

    def __init__(self, ignore_index: int) -> None:
        self.ignore_index = ignore_index
        self.sums = dict.fromkeys(SUMMARY_KEYS, 0.0)
        self.n_images = 0
        self.images_without_both = 0

    def update(self, scores: np.ndarray, positive: np.ndarray) -> None:
        n_positive = int(np.count_nonzero(positive))
        if n_positive == 0 or n_positive == positive.size:
            self.images_without_both += 1
            return
        store = _ExactStore()
        store.update(scores, positive)
        summary = _summarise(store).summary()
        for key in SUMMARY_KEYS:
            self.sums[key] += summary[key]
        self.n_images += 1

    def merge(self, other: _PerImageMeans) -> None:
        for key in SUMMARY_KEYS:
            self.sums[key] += other.sums[key]
        self.n_images += other.n_images
        self.images_without_both += other.images_without_both

    def summary(self) -> dict:
        if not self.n_images:
            raise ValueError("per-image anomaly metrics need an image with both anomaly and inlier pixels")
        means: dict = {key: total / self.n_images for key, total in self.sums.items()}
        # Thresholds of different images do not average into an operating point.
        means["threshold_at_tpr95"] = means["best_f1_threshold"] = None
        return {**means, "n_images": self.n_images, "images_without_both_classes": self.images_without_both}


class AnomalyMetricAccumulator:
    """Streaming anomaly metrics; ``compute()`` returns the keys of :func:`anomaly_metrics`.

    ``mode``:

    - ``"exact"`` keeps every non-ignored score (4 bytes a pixel for float32, labels implicit) and
      equals the one-shot function;
    - ``"binned"`` keeps ``2 ** bits`` bins placed on the observed score range (uint32 counts, 8 MiB at
      20 bits, int64 past 4 G pixels), whatever the scores' offset and scale; each occupied bin is one
      operating point whose threshold, the bin's lower edge, reproduces it exactly;
    - ``"smiyc"`` reproduces the SegmentMeIfYouCan evaluator's float16 per-frame quantile bins.

    ``protocol="per-image"`` computes each update's metrics exactly on their own and averages them over
    the updates with both classes (thresholds are then None; ``mode`` is not used).
    """

    def __init__(
        self,
        mode: AccumulatorMode = "exact",
        bits: int = DEFAULT_BINNED_BITS,
        ignore_index: int = IGNORE_INDEX,
        protocol: Protocol = "pooled",
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self._store = _new_store(mode, bits)
        self._per_image = _PerImageMeans(ignore_index) if protocol == "per-image" else None
        self.mode = mode
        self.protocol = protocol
        self.ignore_index = ignore_index
        self.n_pos = 0
        self.n_neg = 0

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        kept_scores, positive = _valid_pixels(scores, labels, self.ignore_index)
        n_positive = int(np.count_nonzero(positive))
        self.n_pos += n_positive
        self.n_neg += positive.size - n_positive
        if self._per_image is not None:
            self._per_image.update(kept_scores, positive)
        else:
            self._store.update(kept_scores, positive)

    def merge(self, other: AnomalyMetricAccumulator) -> None:
        """Add another accumulator's pixels to this one (same mode, protocol, bits and ignore index)."""
        if (other.mode, other.protocol, other.ignore_index) != (self.mode, self.protocol, self.ignore_index):
            raise ValueError(
                f"cannot merge a {other.mode} {other.protocol} accumulator (ignore {other.ignore_index}) "
                f"into a {self.mode} {self.protocol} one (ignore {self.ignore_index})"
            )
        if self._per_image is not None and other._per_image is not None:
            self._per_image.merge(other._per_image)
        else:
            self._store.merge(other._store)  # type: ignore[arg-type]
        self.n_pos += other.n_pos
        self.n_neg += other.n_neg

    def combined(self, others: Sequence[AnomalyMetricAccumulator]) -> AnomalyMetricAccumulator:
        """A read-only accumulator over this one's pixels and ``others``'; in exact pooled mode it shares
        their stored scores instead of copying them. Update the originals, not the result."""
        combined = AnomalyMetricAccumulator(self.mode, ignore_index=self.ignore_index, protocol=self.protocol)
        every = [self, *others]
        if self.mode == "exact" and self._per_image is None:
            combined._store = _CombinedExact([accumulator._store for accumulator in every])  # type: ignore[misc]
            combined.n_pos = sum(accumulator.n_pos for accumulator in every)
            combined.n_neg = sum(accumulator.n_neg for accumulator in every)
        else:
            for accumulator in every:
                combined.merge(accumulator)
        return combined

    @property
    def state_bytes(self) -> int:
        """Memory held for the metrics (the bins, or the stored scores)."""
        return 0 if self._per_image is not None else self._store.state_bytes()

    def compute(self) -> dict:
        if self._per_image is not None:
            return {**self._per_image.summary(), "n_pos": self.n_pos, "n_neg": self.n_neg}
        return _summarise(self._store).summary()

    def at_tpr(self, tpr: float) -> tuple[float, float, float]:
        """(threshold, its TPR, its FPR) at the first operating point whose TPR >= ``tpr``."""
        if not 0.0 < tpr <= 1.0:
            raise ValueError(f"target TPR must be in (0, 1], got {tpr}")
        self._pooled_only("an operating point")
        return _summarise(self._store, (tpr,)).at_tpr[tpr]

    def f1_at(self, threshold: float) -> float | None:
        """Pixel-level F1 of ``score >= threshold``; None when no pixel scores that high."""
        self._pooled_only("an F1 at a threshold")
        n_pos, _ = self._store.counts()
        reached = None
        for points in self._store.blocks():  # descending thresholds, cumulative counts
            flagged = np.flatnonzero(points.thresholds >= threshold)
            if flagged.size:
                last = flagged[-1]
                reached = (float(points.true_positives[last]), float(points.false_positives[last]))
            if flagged.size < points.thresholds.size:
                break
        if reached is None:
            return None
        true_positives, false_positives = reached
        return 2.0 * true_positives / (true_positives + false_positives + n_pos)

    def _pooled_only(self, what: str) -> None:
        if self._per_image is not None:
            raise ValueError(f"{what} needs pooled pixels; this accumulator averages per image")

    def curves(self, max_points: int = 1000) -> CurvePoints:
        """At most ``max_points`` operating points, spread evenly in both TPR and FPR."""
        if max_points < 4:
            raise ValueError(f"max_points must be at least 4, got {max_points}")
        self._pooled_only("curves")
        n_pos, n_neg = self._store.counts()
        _check_both_classes(n_pos, n_neg)
        targets = np.linspace(0.0, 1.0, (max_points - 2) // 2)
        found = {"tpr": np.zeros(targets.size, bool), "fpr": np.zeros(targets.size, bool)}
        everything: list[_OperatingPoints] = []  # every point, while they fit in max_points
        selected: list[_OperatingPoints] = []
        n_points = 0
        for block_index, points in enumerate(self._store.blocks()):
            n_points += points.thresholds.size
            if n_points <= max_points:
                everything.append(points)
            picked = [np.zeros(1 if block_index == 0 else 0, np.int64)]
            for name, counts, total in (
                ("tpr", points.true_positives, n_pos),
                ("fpr", points.false_positives, n_neg),
            ):
                index = np.searchsorted(counts / total, targets, side="left")
                hit = (index < counts.size) & ~found[name]
                found[name] |= hit
                picked.append(index[hit])
            selected.append(_take(points, np.unique(np.concatenate(picked))))
            last = _take(points, np.array([points.thresholds.size - 1]))
        blocks = everything if n_points <= max_points else [*selected, last]
        thresholds, true_positives, false_positives = (
            np.concatenate(arrays) for arrays in zip(*blocks, strict=True)
        )
        # Blocks are disjoint and descending; only the closing point may repeat a selected one.
        _, first = np.unique(thresholds, return_index=True)
        keep = np.sort(first)
        thresholds, true_positives, false_positives = (
            thresholds[keep],
            true_positives[keep],
            false_positives[keep],
        )
        return CurvePoints(
            thresholds=thresholds,
            tpr=true_positives / n_pos,
            fpr=false_positives / n_neg,
            precision=true_positives / (true_positives + false_positives),
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
        bits: int = DEFAULT_BINNED_BITS,
        ignore_index: int = IGNORE_INDEX,
        protocol: Protocol = "pooled",
    ):
        self.bins = _as_bins(bins)
        self.ignore_index = ignore_index
        self.accumulators = [
            AnomalyMetricAccumulator(mode, bits=bits, ignore_index=ignore_index, protocol=protocol)
            for _ in self.bins.ranges
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
        """Per range ``{"range_m": [lo, hi], **anomaly metrics}``; the metrics (:data:`SUMMARY_KEYS`) are
        None where the range lacks anomaly or inlier pixels (per image: in every image)."""
        results = []
        for (low, high), accumulator in zip(self.bins.ranges, self.accumulators, strict=True):
            try:
                metrics = accumulator.compute()
            except ValueError:
                metrics = dict.fromkeys(SUMMARY_KEYS)
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
