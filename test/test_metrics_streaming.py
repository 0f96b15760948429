"""Streaming anomaly metrics: binned vs exact whatever the scores' offset and scale, the exact store's
blocks and memory, the per-image protocol, SMIYC parity and the import without torch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from openset_perception import metrics
from openset_perception.evaluation.accumulate import EvaluationAccumulator
from openset_perception.metrics import (
    SUMMARY_KEYS,
    AnomalyMetricAccumulator,
    anomaly_metrics,
    best_f1,
    two_fold_open_miou,
)

RATE_KEYS = [key for key in SUMMARY_KEYS if "threshold" not in key]
# TPR at a fixed FPR moves by whole anomaly pixels: where a range has few of them, one pixel that shares a
# bin with the crossing inliers exceeds 1e-4, so these get a tolerance of 1e-4 or two anomaly pixels.
PIXEL_LIMITED_KEYS = [key for key in RATE_KEYS if key.startswith("tpr_at_fpr")]
FIXTURES = Path(__file__).parent / "fixtures"
TOLERANCE = 1e-4  # 0.01 percentage points


def frames_for(case: str, n_frames: int = 6, shape: tuple[int, int] = (300, 400)):
    """(score, label, depth) frames of a two-Gaussian mixture, transformed per case."""
    rng = np.random.default_rng(sum(map(ord, case)))
    anomaly_rate = 0.001 if case == "rare_positives" else 0.1
    result = []
    for _ in range(n_frames):
        labels = (rng.random(shape) < anomaly_rate).astype(np.uint8)
        z = rng.normal(size=shape) + 1.5 * labels
        if case == "heavy_ties":
            z = np.round(z, 1)
        if case == "float16":
            z = z.astype(np.float16).astype(np.float64)
        transform = {
            "shift_plus_100": lambda x: x + 100.0,
            "shift_minus_100": lambda x: x - 100.0,
            "scale_0.01": lambda x: 0.01 * x,
            "scale_100": lambda x: 100.0 * x,
            "scale_0.01_shift_30": lambda x: 0.01 * x + 30.0,
        }.get(case, lambda x: x)
        scores = transform(z).astype(np.float16 if case == "float16" else np.float32)
        if case == "void_10_percent":
            labels[rng.random(shape) < 0.1] = 255
        depth = rng.uniform(1.0, 55.0, shape)
        depth[rng.random(shape) < 0.05] = np.nan
        result.append((scores, labels, depth))
    return result


CASES = [
    "continuous",
    "heavy_ties",
    "void_10_percent",
    "rare_positives",
    "float16",
    "shift_plus_100",
    "shift_minus_100",
    "scale_0.01",
    "scale_100",
    "scale_0.01_shift_30",
]


def assert_within_bound(binned: dict, exact: dict) -> None:
    """Every difference <= 1e-4 (two anomaly pixels for TPR at a fixed FPR, see PIXEL_LIMITED_KEYS)."""
    for key in RATE_KEYS:
        bound = max(TOLERANCE, 2 / exact["n_pos"]) if key in PIXEL_LIMITED_KEYS else TOLERANCE
        assert abs(binned[key] - exact[key]) <= bound, (binned.get("range_m"), key, binned[key], exact[key])


@pytest.mark.parametrize("case", CASES)
def test_binned_within_a_hundredth_of_a_point_of_exact_per_distance_included(case):
    accumulators = {
        mode: EvaluationAccumulator(["road", "car"], mode=mode) for mode in ("exact", "binned")
    }
    for scores, labels, depth in frames_for(case):
        for accumulator in accumulators.values():
            accumulator.update(scores, None, None, gt_anomaly=labels, depth=depth)
    exact, binned = (accumulator.compute() for accumulator in accumulators.values())
    assert_within_bound(binned["anomaly"], exact["anomaly"])
    assert exact["per_distance"] is not None
    compared = 0
    for binned_range, exact_range in zip(binned["per_distance"], exact["per_distance"], strict=True):
        assert (binned_range["n_pos"], binned_range["n_neg"]) == (exact_range["n_pos"], exact_range["n_neg"])
        if exact_range["ap"] is None:
            continue
        compared += 1
        assert_within_bound(binned_range, exact_range)
    assert compared >= 5


@pytest.mark.parametrize("case", ["continuous", "shift_plus_100", "scale_0.01_shift_30"])
def test_binned_thresholds_reproduce_their_operating_points(case):
    frames = frames_for(case, n_frames=3)
    accumulator = AnomalyMetricAccumulator("binned")
    for scores, labels, _ in frames:
        accumulator.update(scores, labels)
    result = accumulator.compute()
    scores = np.concatenate([frame[0].ravel() for frame in frames])
    labels = np.concatenate([frame[1].ravel() for frame in frames])
    for rate_key, threshold_key in (("fpr95", "threshold_at_tpr95"), ("best_f1", "best_f1_threshold")):
        # The threshold survives a cast to the scores' float32, as the engine compares.
        flagged = scores >= np.float32(result[threshold_key])
        tp = np.count_nonzero(flagged & (labels == 1))
        fp = np.count_nonzero(flagged & (labels == 0))
        if rate_key == "fpr95":
            assert tp / np.count_nonzero(labels == 1) >= 0.95
            assert fp / np.count_nonzero(labels == 0) == pytest.approx(result["fpr95"], abs=1e-15)
        else:
            assert 2 * tp / (tp + fp + np.count_nonzero(labels == 1)) == pytest.approx(
                result["best_f1"], abs=1e-15
            )


def test_binned_range_growth_and_merge_stay_within_the_bound():
    # A narrow first frame, then frames that drift and widen the range 16-fold: several exact
    # re-binnings (window moves and coarser bins), and merges of accumulators on different grids.
    rng = np.random.default_rng(1)
    frames = []
    for spread, offset in ((0.25, 0.0), (0.5, 1.0), (1.0, -2.0), (2.0, 3.0), (4.0, 0.0)):
        labels = (rng.random(200_000) < 0.1).astype(np.uint8)
        scores = offset + spread * (rng.normal(size=labels.size) + 1.5 * labels)
        frames.append((scores.astype(np.float32), labels))
    exact, streamed, left, right = (
        AnomalyMetricAccumulator(mode) for mode in ("exact", "binned", "binned", "binned")
    )
    for index, (scores, labels) in enumerate(frames):
        exact.update(scores, labels)
        streamed.update(scores, labels)
        (left if index % 2 else right).update(scores, labels)
    left.merge(right)
    expected = exact.compute()
    for result in (streamed.compute(), left.compute()):
        assert_within_bound(result, expected)
        assert (result["n_pos"], result["n_neg"]) == (expected["n_pos"], expected["n_neg"])


def test_binned_memory_is_constant_and_exact_needs_four_bytes_a_pixel():
    rng = np.random.default_rng(2)
    binned, exact = AnomalyMetricAccumulator("binned"), AnomalyMetricAccumulator("exact")
    sizes = []
    for _ in range(20):
        labels = (rng.random(50_000) < 0.1).astype(np.uint8)
        scores = rng.normal(size=labels.size).astype(np.float32) * rng.uniform(0.1, 10.0)
        binned.update(scores, labels)
        exact.update(scores, labels)
        sizes.append(binned.state_bytes)
    assert set(sizes) == {2 * 4 * 2**metrics.DEFAULT_BINNED_BITS}
    stored = 4 * 20 * 50_000
    assert stored <= exact.state_bytes <= 1.25 * stored
    exact.compute()  # sorted in place: no second copy
    assert stored <= exact.state_bytes <= 1.25 * stored


def test_exact_blocks_equal_a_single_pass(monkeypatch):
    rng = np.random.default_rng(3)
    labels = (rng.random(30_000) < 0.2).astype(np.uint8)
    scores = np.round(rng.normal(size=labels.size) + labels, 2).astype(np.float32)  # ties across block cuts
    expected = anomaly_metrics(scores, labels)
    one_pass = AnomalyMetricAccumulator("exact")
    one_pass.update(scores, labels)
    expected_curves = one_pass.curves(max_points=100)
    monkeypatch.setattr(metrics._ExactStore, "BLOCK", 97)
    blocked = AnomalyMetricAccumulator("exact")
    blocked.update(scores[:10_000], labels[:10_000])
    blocked.update(scores[10_000:], labels[10_000:])
    result = blocked.compute()
    for key in SUMMARY_KEYS:
        assert result[key] == pytest.approx(expected[key], abs=1e-12), key
    assert result["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    curves = blocked.curves(max_points=100)
    assert curves.thresholds.size <= 100
    assert np.all(np.diff(curves.thresholds) < 0)
    assert curves.tpr[-1] == curves.fpr[-1] == 1.0
    np.testing.assert_array_equal(curves.thresholds, expected_curves.thresholds)


def test_operating_points_against_brute_force():
    rng = np.random.default_rng(4)
    labels = (rng.random(5000) < 0.3).astype(np.uint8)
    scores = np.round(rng.normal(size=labels.size) + labels, 1)
    result = anomaly_metrics(scores, labels)
    positive = labels == 1
    points = []
    for threshold in np.unique(scores)[::-1]:
        flagged = scores >= threshold
        tp, fp = np.count_nonzero(flagged & positive), np.count_nonzero(flagged & ~positive)
        points.append(
            (threshold, tp / positive.sum(), fp / (~positive).sum(), 2 * tp / (tp + fp + positive.sum()))
        )
    for target in metrics.FPR_AT_TPR:
        first = next(point for point in points if point[1] >= target)
        assert result[f"fpr_at_tpr{round(100 * target)}"] == first[2]
    for target in metrics.TPR_AT_FPR:
        within = [point for point in points if point[2] <= target]
        assert result[f"tpr_at_fpr{round(100 * target)}"] == (within[-1][1] if within else 0.0)
    best = max(points, key=lambda point: point[3])
    assert (result["best_f1"], result["best_f1_threshold"]) == pytest.approx((best[3], best[0]))
    assert result["fpr_at_tpr95"] == result["fpr95"]
    # The public helper on counts gives the same, first of equal values winning.
    # F1 2/3, 1/2, 2/3 at thresholds 3, 2, 1.
    assert best_f1(np.array([3.0, 2.0, 1.0]), np.array([1, 1, 2]), np.array([0, 1, 2]), 2) == (
        pytest.approx(2 / 3),
        3.0,
    )


def test_per_image_protocol_averages_frames_with_both_classes():
    rng = np.random.default_rng(5)
    accumulator = AnomalyMetricAccumulator(protocol="per-image")
    per_frame = []
    for index in range(5):
        labels = (rng.random((40, 50)) < 0.2).astype(np.uint8)
        if index == 2:
            labels[:] = 0  # no anomaly: left out of the means, as DenseHybrid's nanmean drops it
        labels[rng.random(labels.shape) < 0.1] = 255
        scores = (rng.normal(size=labels.shape) + (labels == 1)).astype(np.float32)
        accumulator.update(scores, labels)
        keep = labels != 255
        if index != 2:
            per_frame.append(
                (
                    average_precision_score(labels[keep], scores[keep]),
                    roc_auc_score(labels[keep], scores[keep]),
                    anomaly_metrics(scores, labels)["fpr95"],
                )
            )
    result = accumulator.compute()
    expected = np.mean(per_frame, axis=0)
    assert (result["ap"], result["auroc"], result["fpr95"]) == pytest.approx(tuple(expected), abs=1e-12)
    assert (result["n_images"], result["images_without_both_classes"]) == (4, 1)
    assert result["threshold_at_tpr95"] is None
    with pytest.raises(ValueError, match="per image"):
        accumulator.curves()


def smiyc_parity_frames():
    """Six small float16 frames: probabilities, rounded (tied) logits and offset scores, 10 % void."""
    rng = np.random.default_rng(2024)
    frames = []
    for index in range(6):
        labels = (rng.random((48, 64)) < 0.05 + 0.05 * index).astype(np.uint8)
        labels[rng.random(labels.shape) < 0.1] = 255
        logits = rng.normal(size=labels.shape) + 2.0 * (labels == 1)
        if index == 4:
            logits = np.round(logits, 1)
        scores = 0.1 * logits + 5.0 if index == 5 else 1.0 / (1.0 + np.exp(-logits))
        frames.append((scores.astype(np.float16), labels))
    return frames


def test_smiyc_compatible_reproduces_the_official_evaluator():
    # The reference numbers come from the official SMIYC code run on these frames (see "made_by").
    reference = json.loads((FIXTURES / "smiyc_pixel_reference.json").read_text())["reference"]
    smiyc, exact = AnomalyMetricAccumulator("smiyc"), AnomalyMetricAccumulator("exact")
    for scores, labels in smiyc_parity_frames():
        smiyc.update(scores, labels)
        exact.update(scores, labels)
    result = smiyc.compute()
    pairs = {
        "ap": "area_PRC",
        "auroc": "area_ROC",
        "fpr95": "tpr95_fpr",
        "threshold_at_tpr95": "tpr95_threshold",
        "best_f1": "best_f1",
        "best_f1_threshold": "best_f1_threshold",
    }
    for ours, theirs in pairs.items():
        assert result[ours] == pytest.approx(reference[theirs], abs=1e-12), ours
    # The quantisation is visible: exact metrics on the same float16 scores differ.
    assert abs(exact.compute()["ap"] - reference["area_PRC"]) > 1e-5


def test_two_fold_through_the_evaluation_accumulator():
    rng = np.random.default_rng(6)
    accumulator = EvaluationAccumulator(["road", "car"], mode="exact", two_fold=True)
    folds: list[list[metrics.OpenSetImage]] = [[], []]
    for index in range(6):
        semantic = rng.integers(0, 2, (30, 40)).astype(np.uint8)
        semantic[5:12, 10:20] = 2  # unknown
        pred = np.where(rng.random(semantic.shape) < 0.8, semantic % 2, 1 - semantic % 2).astype(np.uint8)
        score = (rng.normal(size=semantic.shape) + 2.0 * (semantic == 2)).astype(np.float32)
        accumulator.update(score, pred, None, gt_semantic=semantic)
        folds[index % 2].append(metrics.OpenSetImage(score, pred, semantic))
    section = accumulator.compute()["segmentation"]
    expected = two_fold_open_miou(folds[0], folds[1], num_known=2)
    assert section["two_fold_open_miou"] == pytest.approx(expected["open_miou"], abs=1e-15)
    assert section["two_fold_unknown_iou"] == pytest.approx(expected["unknown_iou"], abs=1e-15)
    assert [fold["threshold"] for fold in section["two_fold_folds"]] == [
        fold["threshold"] for fold in expected["folds"]
    ]


def test_metrics_imports_without_torch():
    code = (
        "import sys, openset_perception.metrics, openset_perception.evaluation.accumulate; "
        "print('torch' in sys.modules)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"


def test_exact_evaluation_stores_each_pixel_once_with_depth(monkeypatch):
    monkeypatch.setattr(metrics._GrowingArray, "MIN_CAPACITY", 1)
    frames = frames_for("heavy_ties", n_frames=3, shape=(60, 80))
    accumulator = EvaluationAccumulator(["road", "car"], mode="exact")
    for scores, labels, depth in frames:
        accumulator.update(scores, None, None, gt_anomaly=labels, depth=depth)
    all_scores = np.concatenate([frame[0].ravel() for frame in frames])
    all_labels = np.concatenate([frame[1].ravel() for frame in frames])
    expected = anomaly_metrics(all_scores, all_labels)
    result = accumulator.compute()["anomaly"]
    for key in (*SUMMARY_KEYS, "n_pos", "n_neg"):
        assert result[key] == pytest.approx(expected[key], abs=1e-12), key
    labelled = expected["n_pos"] + expected["n_neg"]
    # Pixels inside a depth range live in that range's store only: 4 bytes a labelled pixel in all,
    # plus the growth reserve.
    assert 4 * labelled <= accumulator.anomaly.state_bytes <= 1.25 * 4 * labelled
    curves = accumulator.curves(max_points=50)
    assert curves is not None and curves.tpr[-1] == 1.0
