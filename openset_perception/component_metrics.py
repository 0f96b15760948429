"""Component-level anomaly metrics as the SegmentMeIfYouCan benchmark defines them (sIoU, PPV, F1).

Per frame, at one pixel threshold (a pixel is predicted anomalous when ``score >= threshold``, the
project's rule):

- ground-truth instances are the 8-connected components of the anomaly pixels (label 1), or the
  instances of an instance label image where a dataset has one; instances under ``min_instance_px``
  pixels are made void;
- predicted segments are the 8-connected components of the prediction with the void pixels (label 255)
  removed; segments under ``min_segment_px`` pixels are dropped;
- everything is then counted inside the region of interest (pixels that are not void);
- sIoU of ground-truth instance k with the predicted segments P(k) that touch it:
  |k ∩ P(k)| / |k ∪ (P(k) \\ other instances)|, i.e. pixels of P(k) on other ground-truth instances
  do not count against k; with the pixel counts this is |k ∩ P(k)| / (|k| + |P(k) ∩ background|);
- PPV of a predicted segment: the fraction of its pixels on any ground-truth instance;
- at each sIoU threshold t in 0.25, 0.30, ..., 0.75: TP = instances with sIoU >= t, FN = the others,
  FP = predicted segments with PPV < t; F1 = 2 TP / (2 TP + FN + FP), and the mean F1 over the t.

Frames are pooled: counts sum over frames, means run over all instances / segments. Per distance,
every instance and segment goes into the depth bin of its median valid depth (``DepthBins``).

The SMIYC pixel threshold is the one that maximises pixel-level F1 over the dataset, known only once
every frame has been seen. :class:`ComponentMetricAccumulator` therefore either scores each frame at
once (a fixed threshold) or spools the frames to a temporary folder on disk and scores them at
``compute`` (memory stays flat; the disk holds 5 bytes per pixel, 9 with depth, until then).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from openset_perception.depth_bins import DepthBins
from openset_perception.objects import label_components, per_component_median

VOID = 255
SIOU_THRESHOLDS = tuple(round(0.25 + 0.05 * i, 2) for i in range(11))


@dataclass(frozen=True)
class ComponentSettings:
    min_segment_px: int = 500
    min_instance_px: int = 100
    siou_thresholds: tuple[float, ...] = SIOU_THRESHOLDS

    def __post_init__(self) -> None:
        if self.min_segment_px < 0 or self.min_instance_px < 0:
            raise ValueError(
                f"component size limits must be >= 0, got {self.min_segment_px}, {self.min_instance_px}"
            )
        if not self.siou_thresholds or not all(0 < t <= 1 for t in self.siou_thresholds):
            raise ValueError(f"sIoU thresholds must lie in (0, 1], got {self.siou_thresholds}")


# The benchmark's two tracks: AnomalyTrack (large objects) and ObstacleTrack (small road obstacles).
TRACKS = {
    "anomaly": ComponentSettings(min_segment_px=500, min_instance_px=100),
    "obstacle": ComponentSettings(min_segment_px=50, min_instance_px=10),
}


@dataclass(frozen=True)
class FrameComponents:
    """Records of one frame's instances and segments (those with pixels in the region of interest)."""

    instance_siou: np.ndarray  # (n,) float64
    instance_pixels: np.ndarray  # (n,) int64
    instance_depth_m: np.ndarray  # (n,) float64 median valid depth, NaN without
    segment_ppv: np.ndarray  # (m,) float64
    segment_pixels: np.ndarray  # (m,) int64
    segment_depth_m: np.ndarray  # (m,) float64


def ground_truth_instances(labels: np.ndarray, instances: np.ndarray | None = None) -> np.ndarray:
    """int64 instance ids (0 = none) of the anomaly pixels: an instance image's ids or 8-connected components.

    With an instance image, anomaly pixels it leaves at 0 belong to no known instance and come back as -1
    (made void by :func:`frame_components`).
    """
    anomaly = labels == 1
    if instances is None:
        return label_components(anomaly).labels.astype(np.int64)
    if instances.shape != labels.shape:
        raise ValueError(f"instance image {instances.shape} and labels {labels.shape} differ in shape")
    if instances.min(initial=0) < 0:
        raise ValueError("instance ids must be >= 0")
    values, compact = np.unique(np.where(anomaly, instances.astype(np.int64), 0), return_inverse=True)
    compact = compact.reshape(labels.shape).astype(np.int64)
    if values[0] != 0:  # no pixel outside the instances: index 0 is an instance, not "none"
        compact += 1
    return np.where(anomaly & (instances == 0), -1, compact)


def frame_components(
    prediction: np.ndarray,
    labels: np.ndarray,
    settings: ComponentSettings = TRACKS["anomaly"],
    instances: np.ndarray | None = None,
    depth_m: np.ndarray | None = None,
) -> FrameComponents:
    """Records of one frame: ``prediction`` HxW bool, ``labels`` HxW 0 / 1 / 255, optional ids, depth."""
    labels = np.asarray(labels)
    if prediction.shape != labels.shape or (depth_m is not None and depth_m.shape != labels.shape):
        raise ValueError(f"prediction {prediction.shape}, labels {labels.shape} and depth differ in shape")
    void = labels == VOID
    gt = ground_truth_instances(labels, instances)
    void |= gt < 0
    gt = np.maximum(gt, 0)
    gt_sizes = np.bincount(gt.reshape(-1))
    small = gt_sizes < settings.min_instance_px
    small[0] = False
    void |= small[gt]

    segments = label_components(prediction & (labels != VOID))
    kept = np.concatenate(([False], segments.pixels >= settings.min_segment_px))
    pred = np.where(kept[segments.labels], segments.labels, 0).astype(np.int64)

    roi = ~void
    g = np.where(roi, gt, 0).reshape(-1)
    p = np.where(roi, pred, 0).reshape(-1)
    selected = np.flatnonzero((g > 0) | (p > 0))
    g_sel, p_sel = g[selected], p[selected]
    n_gt, n_pred = int(gt_sizes.size - 1), int(segments.count)
    pair, pair_pixels = np.unique(g_sel * (n_pred + 1) + p_sel, return_counts=True)
    pair_gt, pair_pred = pair // (n_pred + 1), pair % (n_pred + 1)

    instance_size = np.bincount(pair_gt, weights=pair_pixels, minlength=n_gt + 1)
    segment_size = np.bincount(pair_pred, weights=pair_pixels, minlength=n_pred + 1)
    overlap = (pair_gt > 0) & (pair_pred > 0)
    on_background = np.bincount(
        pair_pred[pair_gt == 0], weights=pair_pixels[pair_gt == 0], minlength=n_pred + 1
    )
    intersection = np.bincount(pair_gt[overlap], weights=pair_pixels[overlap], minlength=n_gt + 1)
    # Only the touching segments' background pixels enlarge an instance's union.
    spill = np.bincount(pair_gt[overlap], weights=on_background[pair_pred[overlap]], minlength=n_gt + 1)

    instance_ids = np.flatnonzero(instance_size[1:]) + 1
    segment_ids = np.flatnonzero(segment_size[1:]) + 1
    siou = intersection[instance_ids] / (instance_size[instance_ids] + spill[instance_ids])
    ppv = (segment_size[segment_ids] - on_background[segment_ids]) / segment_size[segment_ids]

    instance_depth = np.full(instance_ids.size, np.nan)
    segment_depth = np.full(segment_ids.size, np.nan)
    if depth_m is not None:
        depth = depth_m.reshape(-1)[selected].astype(np.float64)
        with_depth = np.isfinite(depth) & (depth > 0)
        for ids, labels_sel, count, out in (
            (instance_ids, g_sel, n_gt, instance_depth),
            (segment_ids, p_sel, n_pred, segment_depth),
        ):
            chosen = with_depth & (labels_sel > 0)
            out[:] = per_component_median(labels_sel[chosen], depth[chosen], count)[ids - 1]
    return FrameComponents(
        instance_siou=siou,
        instance_pixels=instance_size[instance_ids].astype(np.int64),
        instance_depth_m=instance_depth,
        segment_ppv=ppv,
        segment_pixels=segment_size[segment_ids].astype(np.int64),
        segment_depth_m=segment_depth,
    )


def summarize(
    instance_siou: np.ndarray, segment_ppv: np.ndarray, thresholds: Sequence[float] = SIOU_THRESHOLDS
) -> dict:
    """TP / FN / FP / F1 per sIoU threshold, mean F1, mean sIoU and mean PPV of pooled records."""
    per_threshold = []
    for t in thresholds:
        tp = int(np.count_nonzero(instance_siou >= t))
        fn = int(instance_siou.size - tp)
        fp = int(np.count_nonzero(segment_ppv < t))
        denominator = 2 * tp + fn + fp
        per_threshold.append(
            {
                "siou_threshold": float(t),
                "tp": tp,
                "fn": fn,
                "fp": fp,
                "f1": 2 * tp / denominator if denominator else None,
            }
        )
    f1 = [entry["f1"] for entry in per_threshold]
    return {
        "f1_mean": float(np.mean(f1)) if all(v is not None for v in f1) else None,
        "siou_mean": float(np.mean(instance_siou)) if instance_siou.size else None,
        "ppv_mean": float(np.mean(segment_ppv)) if segment_ppv.size else None,
        "instances": int(instance_siou.size),
        "segments": int(segment_ppv.size),
        "per_threshold": per_threshold,
    }


@dataclass
class _Records:
    """Per-instance and per-segment records of all frames so far (the only state that grows)."""

    parts: list[FrameComponents] = field(default_factory=list)

    def add(self, frame: FrameComponents) -> None:
        if frame.instance_siou.size or frame.segment_ppv.size:
            self.parts.append(frame)

    def column(self, name: str) -> np.ndarray:
        arrays = [getattr(part, name) for part in self.parts]
        return np.concatenate(arrays) if arrays else np.zeros(0)


class _FrameSpool:
    """Frames written to a temporary folder until the pixel threshold is known (memory stays flat)."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="components_")
        self.count = 0

    def save(self, **arrays: np.ndarray | None) -> None:
        present = {name: array for name, array in arrays.items() if array is not None}
        np.savez(Path(self._folder.name) / f"{self.count:08d}.npz", **present)
        self.count += 1

    def frames(self):
        for index in range(self.count):
            with np.load(Path(self._folder.name) / f"{index:08d}.npz") as stored:
                yield {name: stored[name] for name in stored.files}

    def close(self) -> None:
        self._folder.cleanup()


class ComponentMetricAccumulator:
    """Streaming component-level metrics, overall and per distance.

    ``threshold`` fixes the pixel threshold up front (``--threshold``, the card's calibrated value); None
    defers it to :meth:`compute`, which takes the dataset's best-pixel-F1 threshold.
    """

    def __init__(
        self,
        settings: ComponentSettings = TRACKS["anomaly"],
        threshold: float | None = None,
        depth_bins: DepthBins | None = None,
    ) -> None:
        if threshold is not None and math.isnan(threshold):
            raise ValueError("the component threshold must be a number or None, got NaN")
        self.settings = settings
        self.threshold = threshold
        self.depth_bins = depth_bins
        self._records = _Records()
        self._spool: _FrameSpool | None = None
        self.frames = 0

    def update(
        self,
        score: np.ndarray,
        labels: np.ndarray,
        depth_m: np.ndarray | None = None,
        instances: np.ndarray | None = None,
    ) -> None:
        self.frames += 1
        if self.threshold is not None:
            self._records.add(
                frame_components(score >= self.threshold, labels, self.settings, instances, depth_m)
            )
            return
        if self._spool is None:
            self._spool = _FrameSpool()
        self._spool.save(
            score=np.asarray(score, np.float32),
            labels=np.asarray(labels, np.uint8),
            depth=None if depth_m is None else np.asarray(depth_m, np.float32),
            instances=instances,
        )

    def compute(self, threshold: float | None = None) -> dict | None:
        """The metrics; ``threshold`` is required when none was fixed. None before any frame."""
        if self.frames == 0:
            return None
        if self.threshold is None:
            if threshold is None:
                raise ValueError("the pixel threshold was deferred: pass it to compute()")
            self._score_spool(threshold)
        else:
            threshold = self.threshold
        siou, ppv = self._records.column("instance_siou"), self._records.column("segment_ppv")
        result = {
            "pixel_threshold": float(threshold),
            "min_segment_px": self.settings.min_segment_px,
            "min_instance_px": self.settings.min_instance_px,
            "frames": self.frames,
            **summarize(siou, ppv, self.settings.siou_thresholds),
        }
        if self.depth_bins is not None:
            result["per_distance"] = self._per_distance(siou, ppv)
        return result

    def close(self) -> None:
        """Delete the spooled frames (also happens when the accumulator is garbage-collected)."""
        if self._spool is not None:
            self._spool.close()

    def _score_spool(self, threshold: float) -> None:
        """Score the spooled frames at ``threshold``; repeated calls rescore from scratch."""
        self._records = _Records()
        if self._spool is None:
            return
        for frame in self._spool.frames():
            self._records.add(
                frame_components(
                    frame["score"] >= threshold,
                    frame["labels"],
                    self.settings,
                    frame.get("instances"),
                    frame.get("depth"),
                )
            )

    def _per_distance(self, siou: np.ndarray, ppv: np.ndarray) -> list[dict]:
        assert self.depth_bins is not None
        instance_bin = self.depth_bins.assign(self._records.column("instance_depth_m"))
        segment_bin = self.depth_bins.assign(self._records.column("segment_depth_m"))
        results = []
        for index, (low, high) in enumerate(self.depth_bins.ranges):
            summary = summarize(
                siou[instance_bin == index], ppv[segment_bin == index], self.settings.siou_thresholds
            )
            results.append({"range_m": [low, high], **summary})
        return results


@dataclass(frozen=True)
class ComponentOptions:
    """How an evaluation computes component metrics: the pixel threshold (None: best pixel F1) and sizes."""

    threshold: float | None = None
    settings: ComponentSettings = TRACKS["anomaly"]

    @property
    def threshold_source(self) -> str:
        return "best pixel F1" if self.threshold is None else "fixed"


DEFAULT_COMPONENT_OPTIONS = ComponentOptions()  # SMIYC AnomalyTrack sizes at the best-pixel-F1 threshold


def parse_component_options(threshold: str, track: str, card_threshold: float | None) -> ComponentOptions:
    """Options from command-line words: ``threshold`` "best-f1", "card" or a number; ``track`` in TRACKS.

    Raises ValueError (naming the option) for anything else or for "card" without a calibrated threshold.
    """
    if track not in TRACKS:
        raise ValueError(f"--component-track must be one of {', '.join(TRACKS)}, got '{track}'")
    settings = TRACKS[track]
    if threshold == "best-f1":
        return ComponentOptions(None, settings)
    if threshold == "card":
        if card_threshold is None or not math.isfinite(card_threshold):
            raise ValueError("--threshold card: the model card has no calibrated threshold (run calibrate)")
        return ComponentOptions(float(card_threshold), settings)
    try:
        value = float(threshold)
    except ValueError:
        raise ValueError(f"--threshold must be best-f1, card or a number, got '{threshold}'") from None
    if not math.isfinite(value):
        raise ValueError(f"--threshold must be finite, got {threshold}")
    return ComponentOptions(value, settings)
