"""Dataset metrics from per-frame engine outputs and ground truth, independent of where frames come from.

Dataset evaluation, threshold calibration and rosbag evaluation all feed frames into one
:class:`EvaluationAccumulator` and get the report schema of :mod:`openset_perception.evaluation.report`.

Ground-truth rules:

- Closed-set mIoU compares the argmax with the semantic labels; unknown pixels (label K) are ignored.
- Open-set metrics compare the open-set map with the semantic labels, where anomaly pixels (anomaly
  ground truth 1) also count as unknown; they are reported once some ground truth marked a pixel unknown.
- Without anomaly ground truth, a frame's anomaly labels come from its semantic labels: 1 where K,
  0 where known, ignore where 255.

In ``binned`` mode the anomaly metrics use fixed-size histograms on the observed score range, so memory
does not grow with the number of frames; ``exact`` mode keeps every labelled pixel (4 bytes each) and
equals the one-shot metric functions; ``smiyc`` reproduces the SegmentMeIfYouCan evaluator's
quantisation. ``protocol="per-image"`` averages per-frame anomaly metrics instead of pooling pixels.
``two_fold`` adds the two-fold open-set protocol (:func:`~openset_perception.metrics.two_fold_open_miou`):
frames alternate between two folds, kept on disk (score, prediction, label: 6 bytes a pixel) until the
end, when each fold's TPR-95 threshold is applied to the other.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from openset_perception.component_metrics import (
    DEFAULT_COMPONENT_OPTIONS,
    ComponentMetricAccumulator,
    ComponentOptions,
)
from openset_perception.depth_bins import DepthBins
from openset_perception.metrics import (
    DEFAULT_BINNED_BITS,
    DEFAULT_DISTANCE_EDGES_M,
    IGNORE_INDEX,
    AccumulatorMode,
    AnomalyMetricAccumulator,
    ConfusionMatrixAccumulator,
    CurvePoints,
    DistanceBinnedAccumulator,
    OpenSetImage,
    Protocol,
    anomaly_labels_from_open_target,
    confusion_matrix,
    miou,
    open_set_metrics,
    two_fold_open_miou,
)

# 2**20 bins of two uint32 counts: 8 MiB for the pooled metrics and 8 MiB per depth range (72 MiB for
# the nine default ranges); the per-distance metrics meet the same accuracy as the pooled ones.
ANOMALY_BITS = DEFAULT_BINNED_BITS
DISTANCE_BITS = DEFAULT_BINNED_BITS
SKIPPED_NAMES_SHOWN = 20


class _FoldFrames:
    """Frames of one two-fold fold on disk (float32 score, uint8 prediction and target), re-iterable."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def add(self, score: np.ndarray, closed_pred: np.ndarray, target: np.ndarray) -> None:
        np.savez(
            self.folder / f"{self.count:07d}.npz",
            score=np.asarray(score, np.float32),
            closed_pred=np.asarray(closed_pred, np.uint8),
            target=np.asarray(target, np.uint8),
        )
        self.count += 1

    def __iter__(self) -> Iterator[OpenSetImage]:
        for index in range(self.count):
            with np.load(self.folder / f"{index:07d}.npz") as frame:
                yield OpenSetImage(frame["score"], frame["closed_pred"], frame["target"])


class _TwoFold:
    """Alternates frames between two on-disk folds and runs the two-fold protocol at the end."""

    def __init__(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="two_fold_")
        root = Path(self._directory.name)
        self.folds = []
        for name in ("a", "b"):
            (root / name).mkdir()
            self.folds.append(_FoldFrames(root / name))
        self._next = 0

    def add(self, score: np.ndarray, closed_pred: np.ndarray, target: np.ndarray) -> None:
        self.folds[self._next].add(score, closed_pred, target)
        self._next = 1 - self._next

    def compute(self, num_known: int, mode: AccumulatorMode) -> dict:
        """Flat ``two_fold_*`` entries for the segmentation section; a reason when folds cannot be used."""
        try:
            result = two_fold_open_miou(self.folds[0], self.folds[1], num_known, mode=mode)
        except ValueError as error:  # a fold without anomaly or inlier pixels has no threshold
            return {"two_fold_error": str(error)}
        return {
            "two_fold_open_miou": result["open_miou"],
            "two_fold_unknown_iou": result["unknown_iou"],
            "two_fold_macro_f1": result["macro_f1"],
            "two_fold_folds": [
                {key: fold[key] for key in ("calibration_fold", "evaluation_fold", "threshold", "n_images")}
                | {key: fold[key] for key in ("open_miou", "unknown_iou", "macro_f1")}
                for fold in result["folds"]
            ],
        }


class EvaluationAccumulator:
    """Streaming dataset metrics over frames of maps (engine outputs) and their ground truth."""

    def __init__(
        self,
        class_names: Sequence[str],
        depth_edges: Sequence[float] = DEFAULT_DISTANCE_EDGES_M,
        mode: AccumulatorMode = "binned",
        protocol: Protocol = "pooled",
        two_fold: bool = False,
        components: ComponentOptions | None = DEFAULT_COMPONENT_OPTIONS,
    ) -> None:
        self.class_names = list(class_names)
        self.num_known = len(self.class_names)
        self.mode = mode
        self.protocol = protocol
        self.per_distance = DistanceBinnedAccumulator(
            tuple(depth_edges), mode=mode, bits=DISTANCE_BITS, protocol=protocol
        )
        # Exact pooled metrics read the depth ranges' stored scores too, so each pixel is stored once:
        # this accumulator then holds only the pixels outside every depth range.
        self._shares_distance_pixels = mode == "exact" and protocol == "pooled"
        self._pooled_rest = AnomalyMetricAccumulator(mode, bits=ANOMALY_BITS, protocol=protocol)
        self.two_fold = _TwoFold() if two_fold else None
        self.closed_confusion = ConfusionMatrixAccumulator(self.num_known)
        self.open_confusion = ConfusionMatrixAccumulator(self.num_known + 1)
        # Component-level (SMIYC) metrics; None switches them off (threshold calibration needs none).
        self.component_options = components
        self.components = None
        if components is not None:
            bins = DepthBins(tuple(float(edge) for edge in depth_edges), beyond_last=False)
            self.components = ComponentMetricAccumulator(components.settings, components.threshold, bins)
        self.latency_ms: dict[str, list[float]] = {}
        self.skipped: dict[str, list[str]] = {}
        self.counts: Counter[str] = Counter()

    def update(
        self,
        score: np.ndarray,
        semantic_pred: np.ndarray | None,
        open_pred: np.ndarray | None,
        gt_anomaly: np.ndarray | None = None,
        gt_semantic: np.ndarray | None = None,
        depth: np.ndarray | None = None,
        gt_instances: np.ndarray | None = None,
    ) -> None:
        """Add one frame. All maps are HxW; predictions may be None (calibration needs only scores).

        ``gt_instances`` (instance ids, 0 = none) separates touching anomalies for the component metrics;
        without it, ground-truth instances are the connected components of the anomaly pixels.

        Raises ValueError for mismatched shapes or invalid labels and then leaves the totals unchanged.
        """
        score = np.asarray(score)
        _check_shapes(
            score.shape,
            semantic_pred=semantic_pred,
            open_pred=open_pred,
            gt_anomaly=gt_anomaly,
            gt_semantic=gt_semantic,
            depth=depth,
            gt_instances=gt_instances,
        )
        if not np.isfinite(score).all():
            raise ValueError("anomaly scores must be finite")
        if gt_anomaly is not None:
            _check_anomaly_labels(gt_anomaly)

        # Everything that can reject the frame runs before any total changes.
        closed = open_set = None
        open_target = None
        if gt_semantic is not None:
            open_target = _open_target(gt_semantic, gt_anomaly, self.num_known)
            if semantic_pred is not None:
                closed_target = np.where(open_target == self.num_known, IGNORE_INDEX, open_target)
                closed = confusion_matrix(semantic_pred, closed_target, self.num_known)
            if open_pred is not None:
                open_set = confusion_matrix(open_pred, open_target, self.num_known + 1)
        labels = gt_anomaly
        if labels is None and open_target is not None:
            labels = anomaly_labels_from_open_target(open_target, self.num_known)

        self.counts["evaluated"] += 1
        if gt_semantic is not None:
            self.counts["with_semantic_gt"] += 1
            self.counts["unknown_gt_pixels"] += int(np.count_nonzero(open_target == self.num_known))
        if closed is not None:
            self.closed_confusion.matrix += closed
        if open_set is not None:
            self.open_confusion.matrix += open_set
        if self.two_fold is not None and open_target is not None and semantic_pred is not None:
            self.two_fold.add(score, semantic_pred, open_target)
        if labels is not None:
            self.counts["with_anomaly_gt"] += 1
            outside_ranges = labels
            if depth is not None:
                self.per_distance.update(score, labels, depth)
                if self._shares_distance_pixels:
                    in_range = self.per_distance.bins.assign(depth) >= 0
                    outside_ranges = np.where(in_range, np.asarray(IGNORE_INDEX, np.uint8), labels)
            self._pooled_rest.update(score, outside_ranges)
            if self.components is not None:
                self.components.update(score, labels, depth, gt_instances)
        if depth is not None:
            self.counts["with_depth"] += 1

    @property
    def anomaly(self) -> AnomalyMetricAccumulator:
        """The pooled anomaly metrics over every frame's labelled pixels."""
        if self._shares_distance_pixels:
            return self._pooled_rest.combined(self.per_distance.accumulators)
        return self._pooled_rest

    def add_latency(self, timings_ms: Mapping[str, float]) -> None:
        """Record one inference call's stage timings; a ``total`` stage sums them."""
        for stage, milliseconds in timings_ms.items():
            self.latency_ms.setdefault(stage, []).append(float(milliseconds))
        if timings_ms:
            self.latency_ms.setdefault("total", []).append(float(sum(timings_ms.values())))

    def skip(self, reason: str, name: str = "") -> None:
        """Count a frame that could not be evaluated, under a short reason."""
        self.skipped.setdefault(reason, []).append(name)

    @property
    def num_skipped(self) -> int:
        return sum(len(names) for names in self.skipped.values())

    def compute(self) -> dict:
        """Metrics in the report schema; sections without the ground truth they need are None."""
        anomaly = self._anomaly()
        return {
            "anomaly": anomaly,
            "segmentation": self._segmentation(),
            "per_distance": self._per_distance(),
            "components": self._components(anomaly),
            "latency_ms": self._latency() or None,
            "frames": self._frames(),
            "skipped_frames": {reason: list(names) for reason, names in self.skipped.items()},
        }

    def curves(self, max_points: int = 1000) -> CurvePoints | None:
        """PR / ROC points for the plots; None without both anomaly and inlier pixels or per image."""
        anomaly = self.anomaly
        if not (anomaly.n_pos and anomaly.n_neg) or self.protocol != "pooled":
            return None
        return anomaly.curves(max_points)

    def _anomaly(self) -> dict | None:
        anomaly = self.anomaly
        if not (anomaly.n_pos and anomaly.n_neg):
            return None
        try:
            return anomaly.compute()
        except ValueError:  # per image: no single image has both classes
            return None

    def _components(self, anomaly: dict | None) -> dict | None:
        """Component metrics at the fixed threshold or at the one with the best pixel F1 (``anomaly``'s)."""
        if self.components is None or self.component_options is None or not self.components.frames:
            return None
        if anomaly is None:
            return None
        if self.component_options.threshold is None:
            pixel_f1, threshold = anomaly["best_f1"], anomaly["best_f1_threshold"]
            if threshold is None:  # per-image protocol: no pooled operating point to pick
                return None
            section = self.components.compute(threshold)
        else:
            section = self.components.compute()
            pixel_f1 = self.anomaly.f1_at(self.component_options.threshold)
        assert section is not None
        return {"threshold_source": self.component_options.threshold_source, "pixel_f1": pixel_f1, **section}

    def _segmentation(self) -> dict | None:
        if not self.counts["with_semantic_gt"]:
            return None
        section: dict = {}
        if self.closed_confusion.matrix.any():
            mean_iou, per_class = miou(self.closed_confusion.matrix)
            section["miou"] = mean_iou
            section["per_class_iou"] = dict(zip(self.class_names, per_class.tolist(), strict=True))
        if self.counts["unknown_gt_pixels"] and self.open_confusion.matrix.any():
            open_set = open_set_metrics(self.open_confusion.matrix, self.num_known)
            section["open_miou"] = open_set["open_miou"]
            section["unknown_iou"] = open_set["unknown_iou"]
            section["macro_f1"] = open_set["macro_f1"]
            for key in ("per_class_open_iou", "per_class_f1"):
                section[key] = dict(zip(self.class_names, open_set[key], strict=True))
        if self.two_fold is not None and self.counts["unknown_gt_pixels"]:
            section.update(self.two_fold.compute(self.num_known, self.mode))
        return section or None

    def _per_distance(self) -> list[dict] | None:
        with_data = any(acc.n_pos + acc.n_neg for acc in self.per_distance.accumulators)
        return self.per_distance.compute() if with_data else None

    def _latency(self) -> dict[str, dict[str, float]]:
        return {
            stage: {
                "p50": float(np.percentile(values, 50)),
                "p95": float(np.percentile(values, 95)),
                "mean": float(np.mean(values)),
                "calls": len(values),
            }
            for stage, values in self.latency_ms.items()
        }

    def _frames(self) -> dict[str, int | str]:
        counted = ("evaluated", "with_semantic_gt", "with_anomaly_gt", "with_depth")
        frames: dict[str, int | str] = {key: self.counts[key] for key in counted}
        frames["skipped"] = self.num_skipped
        for reason, names in self.skipped.items():
            frames[f"skipped: {reason}"] = len(names)
        names = [name for reason_names in self.skipped.values() for name in reason_names]
        if names:
            shown = ", ".join(names[:SKIPPED_NAMES_SHOWN])
            more = len(names) - SKIPPED_NAMES_SHOWN
            frames["skipped frames"] = shown + (f", ... (+{more})" if more > 0 else "")
        return frames


def _check_shapes(shape: tuple[int, ...], **maps: np.ndarray | None) -> None:
    if len(shape) != 2:
        raise ValueError(f"score map must be HxW, got shape {shape}")
    for name, array in maps.items():
        if array is not None and np.shape(array) != shape:
            raise ValueError(f"{name} has shape {np.shape(array)}, the score map {shape}")


def _check_anomaly_labels(labels: np.ndarray) -> None:
    bad = (labels != 0) & (labels != 1) & (labels != IGNORE_INDEX)
    if bad.any():
        raise ValueError(f"anomaly labels must be 0, 1 or {IGNORE_INDEX}, found {np.unique(labels[bad])}")


def _open_target(semantic: np.ndarray, anomaly: np.ndarray | None, num_known: int) -> np.ndarray:
    """Semantic labels with anomaly pixels set to K; labels above K (other than ignore) are rejected."""
    semantic = np.asarray(semantic)
    bad = (semantic > num_known) & (semantic != IGNORE_INDEX)
    if bad.any():
        raise ValueError(
            f"semantic labels must lie in [0, {num_known}] or equal {IGNORE_INDEX}, "
            f"found {np.unique(semantic[bad]).tolist()}"
        )
    if anomaly is None:
        return semantic
    return np.where(anomaly == 1, np.asarray(num_known, semantic.dtype), semantic)
