"""Component-level metrics (SMIYC sIoU / PPV / F1) on hand-made masks and against a direct implementation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from openset_perception.component_metrics import (
    SIOU_THRESHOLDS,
    ComponentMetricAccumulator,
    ComponentSettings,
    frame_components,
    summarize,
)
from openset_perception.depth import DepthBins
from openset_perception.metrics import AnomalyMetricAccumulator

NO_LIMITS = ComponentSettings(min_segment_px=0, min_instance_px=0)


def _canvas(shape=(20, 30)) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(shape, np.uint8), np.zeros(shape, bool)


def test_split_prediction_scores_by_hand() -> None:
    labels, pred = _canvas()
    labels[2:12, 2:12] = 1  # one 100 px instance
    pred[2:12, 0:6] = True  # 40 px on the instance, 20 on the background
    pred[2:12, 8:12] = True  # 40 px on the instance; two columns of gap: a second segment
    frame = frame_components(pred, labels, NO_LIMITS)
    # sIoU = (40 + 40) / (100 + 20); PPV 40/60 and 40/40
    np.testing.assert_allclose(frame.instance_siou, [80 / 120])
    np.testing.assert_allclose(sorted(frame.segment_ppv), [40 / 60, 1.0])
    summary = summarize(frame.instance_siou, frame.segment_ppv)
    by_t = {entry["siou_threshold"]: entry for entry in summary["per_threshold"]}
    assert (by_t[0.65]["tp"], by_t[0.65]["fn"], by_t[0.65]["fp"], by_t[0.65]["f1"]) == (1, 0, 0, 1.0)
    assert (by_t[0.7]["tp"], by_t[0.7]["fn"], by_t[0.7]["fp"], by_t[0.7]["f1"]) == (0, 1, 1, 0.0)
    assert summary["f1_mean"] == pytest.approx(9 / 11)


def test_merged_prediction_does_not_count_the_other_instance_against_either() -> None:
    labels, pred = _canvas()
    labels[2:7, 2:7] = 1  # instance A, 25 px
    labels[2:7, 10:15] = 1  # instance B, 25 px
    pred[2:7, 2:15] = True  # one segment over both: 50 px on instances, 15 on the background between
    frame = frame_components(pred, labels, NO_LIMITS)
    # sIoU(A) = 25 / (25 + 15): B's pixels are not in A's union (the SMIYC adjustment)
    np.testing.assert_allclose(frame.instance_siou, [25 / 40, 25 / 40])
    np.testing.assert_allclose(frame.segment_ppv, [50 / 65])


def test_touching_instances_are_one_component_unless_an_instance_image_separates_them() -> None:
    labels, pred = _canvas()
    labels[2:6, 2:6] = 1
    labels[6:10, 6:10] = 1  # touches the first at a corner: 8-connected
    pred[2:6, 2:6] = True
    from_mask = frame_components(pred, labels, NO_LIMITS)
    np.testing.assert_allclose(from_mask.instance_siou, [16 / 32])
    instances = np.zeros(labels.shape, np.int32)
    instances[2:6, 2:6] = 7
    instances[6:10, 6:10] = 9
    from_image = frame_components(pred, labels, NO_LIMITS, instances=instances)
    np.testing.assert_allclose(sorted(from_image.instance_siou), [0.0, 1.0])
    np.testing.assert_allclose(from_image.instance_pixels, [16, 16])


def test_void_removes_predictions_before_labelling_and_from_every_count() -> None:
    labels, pred = _canvas()
    labels[2:12, 2:12] = 1
    labels[:, 20:] = 255  # void strip
    pred[2:12, 2:12] = True
    pred[0:10, 18:26] = True  # a segment mostly on void: 20 px remain (columns 18, 19)
    pred[12:20, 22:30] = True  # entirely on void: no segment at all
    frame = frame_components(pred, labels, NO_LIMITS)
    np.testing.assert_allclose(frame.instance_siou, [1.0])
    assert sorted(frame.segment_pixels.tolist()) == [20, 100]
    np.testing.assert_allclose(sorted(frame.segment_ppv), [0.0, 1.0])


def test_tiny_instances_become_void_and_tiny_segments_are_dropped() -> None:
    settings = ComponentSettings(min_segment_px=10, min_instance_px=10)
    labels, pred = _canvas()
    labels[2:12, 2:12] = 1  # 100 px: kept
    labels[15:17, 20:23] = 1  # 6 px: made void
    pred[2:12, 2:12] = True
    pred[15:17, 20:23] = True  # exactly on the tiny instance: its pixels are void, no FP
    pred[0:2, 25:28] = True  # 6 px false positive: under min_segment_px, dropped
    frame = frame_components(pred, labels, settings)
    np.testing.assert_allclose(frame.instance_siou, [1.0])
    np.testing.assert_allclose(frame.segment_ppv, [1.0])
    # Without the limits both tiny regions count
    plain = frame_components(pred, labels, NO_LIMITS)
    assert plain.instance_siou.size == 2 and plain.segment_ppv.size == 3


def _direct(pred: np.ndarray, labels: np.ndarray, settings: ComponentSettings) -> tuple[list, list]:
    """sIoU and PPV straight from the definitions, one component at a time (scipy's labelling)."""
    eight = np.ones((3, 3), int)
    gt, n_gt = ndimage.label(labels == 1, eight)
    void = labels == 255
    for k in range(1, n_gt + 1):
        if np.count_nonzero(gt == k) < settings.min_instance_px:
            void |= gt == k
    segments, n_seg = ndimage.label(pred & (labels != 255), eight)
    for j in range(1, n_seg + 1):
        if np.count_nonzero(segments == j) < settings.min_segment_px:
            segments[segments == j] = 0
    roi = ~void
    siou = []
    for k in range(1, n_gt + 1):
        instance = (gt == k) & roi
        if not instance.any():
            continue
        touching = set(np.unique(segments[instance])) - {0}
        union_pred = np.isin(segments, list(touching)) & roi
        others = (gt > 0) & (gt != k) & roi
        intersection = np.count_nonzero(instance & union_pred)
        union = np.count_nonzero(instance | (union_pred & ~others))
        siou.append(intersection / union)
    ppv = []
    for j in range(1, n_seg + 1):
        segment = (segments == j) & roi
        if segment.any():
            ppv.append(np.count_nonzero(segment & (gt > 0)) / np.count_nonzero(segment))
    return siou, ppv


@pytest.mark.parametrize("seed", range(8))
def test_random_masks_match_the_direct_implementation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (48, 64)
    smooth = lambda: ndimage.gaussian_filter(rng.normal(size=shape), 2.0)  # noqa: E731
    labels = (smooth() > 0.15).astype(np.uint8)
    labels[smooth() > 0.3] = 255
    pred = smooth() > 0.1
    pred |= (labels == 1) & (smooth() > -0.2)
    settings = ComponentSettings(
        min_segment_px=int(rng.integers(0, 20)), min_instance_px=int(rng.integers(0, 20))
    )
    frame = frame_components(pred, labels, settings)
    siou, ppv = _direct(pred, labels, settings)
    assert len(siou) > 0 and len(ppv) > 0
    np.testing.assert_allclose(np.sort(frame.instance_siou), np.sort(siou))
    np.testing.assert_allclose(np.sort(frame.segment_ppv), np.sort(ppv))


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.zeros((40, 60), np.uint8)
    score = rng.normal(size=labels.shape).astype(np.float32)
    depth = np.full(labels.shape, 30.0, np.float32)
    for top, left, z in ((5, 5, 7.0), (20, 30, 22.0)):
        labels[top : top + 10, left : left + 12] = 1
        score[top : top + 10, left : left + 12] += 3.0
        depth[top : top + 10, left : left + 12] = z
    labels[:, 55:] = 255
    return score, labels, depth


def test_deferred_threshold_equals_a_fixed_one_and_bins_by_median_depth() -> None:
    rng = np.random.default_rng(3)
    frames = [_scene(rng) for _ in range(4)]
    bins = DepthBins((0.0, 10.0, 20.0, 30.0), beyond_last=False)
    settings = ComponentSettings(min_segment_px=5, min_instance_px=5)
    deferred = ComponentMetricAccumulator(settings, None, bins)
    fixed = ComponentMetricAccumulator(settings, 1.5, bins)
    for score, labels, depth in frames:
        deferred.update(score, labels, depth)
        fixed.update(score, labels, depth)
    expected = fixed.compute()
    assert deferred.compute(1.5) == expected
    deferred.close()
    assert expected["instances"] == 8
    ranges = {tuple(entry["range_m"]): entry["instances"] for entry in expected["per_distance"]}
    assert ranges == {(0.0, 10.0): 4, (10.0, 20.0): 0, (20.0, 30.0): 4}
    with pytest.raises(ValueError, match="deferred"):
        _deferred_without_threshold()


def _deferred_without_threshold() -> None:
    accumulator = ComponentMetricAccumulator(NO_LIMITS)
    accumulator.update(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8))
    accumulator.compute()


def test_best_pixel_f1_is_the_maximum_over_all_thresholds() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < 0.2).astype(np.uint8)
    scores = (rng.normal(size=2000) + 1.5 * labels).astype(np.float32)
    accumulator = AnomalyMetricAccumulator("exact")
    accumulator.update(scores, labels)
    metrics = accumulator.compute()
    f1, threshold = metrics["best_f1"], metrics["best_f1_threshold"]
    brute = []
    for t in np.unique(scores):
        flagged = scores >= t
        tp = np.count_nonzero(flagged & (labels == 1))
        brute.append((2 * tp / (np.count_nonzero(flagged) + np.count_nonzero(labels)), t))
    best = max(brute)
    assert f1 == pytest.approx(best[0])
    assert threshold == pytest.approx(best[1])


def test_siou_thresholds_are_the_benchmarks() -> None:
    np.testing.assert_allclose(SIOU_THRESHOLDS, np.linspace(0.25, 0.75, 11))


@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_pixel_f1_at_a_fixed_threshold_counts_the_pixels_at_or_above_it(mode: str) -> None:
    rng = np.random.default_rng(1)
    labels = (rng.random(3000) < 0.1).astype(np.uint8)
    scores = np.round(rng.normal(size=3000) + 2.0 * labels, 2).astype(np.float32)
    accumulator = AnomalyMetricAccumulator(mode)
    accumulator.update(scores, labels)
    for threshold in (float(np.median(scores)), 1.0, 2.5):
        flagged = scores >= threshold
        tp = np.count_nonzero(flagged & (labels == 1))
        expected = 2 * tp / (np.count_nonzero(flagged) + np.count_nonzero(labels))
        # Binned: the bin holding the threshold counts as below it (a few tied pixels here).
        tolerance = 1e-2 if mode == "binned" else 1e-12
        assert accumulator.f1_at(threshold) == pytest.approx(expected, abs=tolerance)
    assert accumulator.f1_at(float(scores.max()) + 1.0) is None
