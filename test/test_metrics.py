"""Metrics against scikit-learn, brute-force references and hand-computed examples."""

import itertools
import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from openset_perception.depth import DepthBins
from openset_perception.metrics import (
    SUMMARY_KEYS,
    AnomalyMetricAccumulator,
    ConfusionMatrixAccumulator,
    DistanceBinnedAccumulator,
    OpenSetImage,
    anomaly_metrics,
    confusion_matrix,
    miou,
    open_miou,
    open_set_metrics,
    per_distance_anomaly_metrics,
    two_fold_open_miou,
)


def brute_force_fpr95(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(FPR, threshold) at the first threshold, scanning down the unique scores, with TPR >= 0.95."""
    keep = labels != 255
    scores, positive = scores[keep], labels[keep] == 1
    for threshold in np.unique(scores)[::-1]:
        flagged = scores >= threshold
        if np.count_nonzero(flagged & positive) / np.count_nonzero(positive) >= 0.95:
            return np.count_nonzero(flagged & ~positive) / np.count_nonzero(~positive), float(threshold)
    raise AssertionError("TPR never reaches 0.95")


def assert_matches_references(scores: np.ndarray, labels: np.ndarray, result: dict) -> None:
    keep = labels != 255
    assert result["n_pos"] == np.count_nonzero(labels[keep] == 1)
    assert result["n_neg"] == np.count_nonzero(labels[keep] == 0)
    assert result["ap"] == pytest.approx(average_precision_score(labels[keep], scores[keep]), abs=1e-9)
    assert result["auroc"] == pytest.approx(roc_auc_score(labels[keep], scores[keep]), abs=1e-9)
    fpr95, threshold = brute_force_fpr95(scores, labels)
    assert result["fpr95"] == pytest.approx(fpr95, abs=1e-12)
    assert result["threshold_at_tpr95"] == threshold


def mixture(rng: np.random.Generator, n: int, anomaly_rate: float = 0.1, separation: float = 1.5):
    labels = (rng.random(n) < anomaly_rate).astype(np.uint8)
    scores = rng.normal(size=n) + separation * labels
    return scores, labels


def adversarial_case(name: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(ADVERSARIAL_CASES.index(name))
    if name == "continuous_float32":
        scores, labels = mixture(rng, 3000)
        return scores.astype(np.float32), labels
    if name == "rounded_one_decimal":
        scores, labels = mixture(rng, 5000)
        return np.round(scores, 1), labels
    if name == "all_equal":
        return np.full(500, 0.25, np.float32), (rng.random(500) < 0.3).astype(np.uint8)
    if name == "ignore_pixels_2d":
        scores, labels = mixture(rng, 60 * 50)
        labels[rng.random(labels.size) < 0.2] = 255
        return np.round(scores, 2).reshape(60, 50), labels.reshape(60, 50)
    if name == "two_values_mixed_labels":
        labels = (rng.random(1000) < 0.5).astype(np.uint8)
        return rng.integers(0, 2, 1000).astype(np.float64), labels
    if name == "single_anomaly":
        scores, labels = mixture(rng, 800, anomaly_rate=0.0)
        labels[17] = 1
        return scores, labels
    if name == "perfect_separation_with_negative_zero":
        labels = np.repeat(np.array([0, 1], np.uint8), 200)
        scores = np.where(labels == 1, rng.random(400) + 1.0, -rng.random(400))
        scores[:50] = -0.0
        return scores, labels
    raise KeyError(name)


ADVERSARIAL_CASES = [
    "continuous_float32",
    "rounded_one_decimal",
    "all_equal",
    "ignore_pixels_2d",
    "two_values_mixed_labels",
    "single_anomaly",
    "perfect_separation_with_negative_zero",
]


@pytest.mark.parametrize("case", ADVERSARIAL_CASES)
def test_anomaly_metrics_match_sklearn_and_brute_force(case):
    scores, labels = adversarial_case(case)
    assert_matches_references(scores, labels, anomaly_metrics(scores, labels))


def test_hand_computed_anomaly_metrics():
    # Thresholds 0.9 (1 TP), 0.5 (tie: +1 TP +1 FP), 0.1 (+1 FP): precisions 1, 2/3, 1/2 at recalls .5, 1, 1.
    scores = np.array([0.9, 0.5, 0.5, 0.1, 0.7])
    labels = np.array([1, 1, 0, 0, 255])
    result = anomaly_metrics(scores, labels)
    assert result["ap"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # ROC points (0, .5), (.5, 1), (1, 1): area 0.5 * 0.75 + 0.5 * 1.
    assert result["auroc"] == pytest.approx(0.875)
    assert result["fpr95"] == 0.5
    assert result["threshold_at_tpr95"] == 0.5
    assert (result["n_pos"], result["n_neg"]) == (2, 2)


def test_ten_million_pixels_fast_and_correct():
    rng = np.random.default_rng(7)
    scores, labels = mixture(rng, 10_000_000)
    scores = np.round(scores, 1).astype(np.float32)
    labels[rng.random(labels.size) < 0.05] = 255
    start = time.perf_counter()
    result = anomaly_metrics(scores, labels)
    # Generous bound for a shared CPU; catches anything worse than one sort.
    assert time.perf_counter() - start < 20.0
    assert_matches_references(scores, labels, result)


@pytest.mark.parametrize(
    ("labels", "message"),
    [(np.zeros(10, np.uint8), "anomaly pixels"), (np.ones(10, np.uint8), "inlier pixels")],
)
def test_missing_class_raises(labels, message):
    with pytest.raises(ValueError, match=message):
        anomaly_metrics(np.linspace(0, 1, 10), labels)


def test_only_ignored_pixels_raise():
    with pytest.raises(ValueError, match="anomaly pixels"):
        anomaly_metrics(np.arange(4.0), np.full(4, 255))


@pytest.mark.parametrize(
    ("scores", "labels"),
    [
        (np.array([0.1, np.nan, 0.3]), np.array([0, 1, 0])),
        (np.array([0.1, 0.2, 0.3]), np.array([0, 2, 1])),
        (np.array([0.1, 0.2, 0.3]), np.array([0, 1])),
    ],
)
def test_invalid_inputs_raise(scores, labels):
    with pytest.raises(ValueError):
        anomaly_metrics(scores, labels)


def test_nan_in_ignored_pixels_is_fine():
    result = anomaly_metrics(np.array([0.1, np.nan, 0.9]), np.array([0, 255, 1]))
    assert result["ap"] == 1.0


def chunks(scores: np.ndarray, labels: np.ndarray, sizes: list[int]):
    bounds = np.cumsum([0, *sizes])
    for start, stop in itertools.pairwise(bounds):
        yield scores[start:stop], labels[start:stop]


def test_streaming_exact_equals_one_shot():
    rng = np.random.default_rng(3)
    scores, labels = mixture(rng, 20_000)
    scores = np.round(scores, 2).astype(np.float32)
    labels[rng.random(labels.size) < 0.1] = 255
    expected = anomaly_metrics(scores, labels)

    first, second = AnomalyMetricAccumulator("exact"), AnomalyMetricAccumulator("exact")
    for index, (chunk_scores, chunk_labels) in enumerate(chunks(scores, labels, [7000, 1, 0, 5999, 7000])):
        # Out-of-order merging must not matter: ties are grouped, never ordered.
        target = first if index % 2 else second
        target.update(chunk_scores.reshape(-1, 1), chunk_labels.reshape(-1, 1))
    first.merge(second)
    assert first.compute() == expected
    assert first.compute() == expected  # repeated compute after the internal concatenation


def realistic_distributions(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    n = 1_000_000
    inlier_modes = rng.choice([-12.0, -9.0, -7.5], size=n)
    labels = (rng.random(n) < 0.03).astype(np.uint8)
    hybrid_like = np.where(labels == 1, rng.normal(-4.0, 2.0, n), inlier_modes + rng.normal(0, 1.2, n))
    msp_like = np.clip(np.where(labels == 1, rng.normal(-0.6, 0.2, n), rng.normal(-0.95, 0.1, n)), -1, 0)
    crossing_zero, crossing_labels = mixture(rng, n, anomaly_rate=0.2, separation=0.8)
    return {
        "hybrid_like": (hybrid_like.astype(np.float32), labels),
        "msp_like": (msp_like.astype(np.float32), labels),
        "crossing_zero": (crossing_zero.astype(np.float32), crossing_labels),
    }


def brute_force_rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    flagged = scores >= threshold
    positive = labels == 1
    return flagged[positive].mean(), flagged[~positive].mean()


def test_binned_within_a_tenth_of_a_point_of_exact():
    rng = np.random.default_rng(11)
    for name, (scores, labels) in realistic_distributions(rng).items():
        exact = anomaly_metrics(scores, labels)
        binned = AnomalyMetricAccumulator("binned")
        for chunk_scores, chunk_labels in chunks(scores, labels, [250_000] * 4):
            binned.update(chunk_scores, chunk_labels)
        result = binned.compute()
        for key in ("ap", "auroc", "fpr95"):
            assert abs(result[key] - exact[key]) <= 1e-3, (name, key, result[key], exact[key])
        assert (result["n_pos"], result["n_neg"]) == (exact["n_pos"], exact["n_neg"])
        # The reported threshold reproduces the reported operating point on the raw scores.
        tpr, fpr = brute_force_rates(scores, labels, result["threshold_at_tpr95"])
        assert tpr >= 0.95
        assert fpr == pytest.approx(result["fpr95"], abs=1e-12)


def test_binned_is_exact_when_each_value_has_its_own_bin():
    # The range [-8, 1024] in 2**19 bins of width 2**-9: every value has its own bin, -0.0 and 0.0 share one.
    scores = np.array([-8.0, -2.0, -0.5, -0.0, 0.0, 0.25, 1.0, 4.0, 4.0, 1024.0], np.float32)
    labels = np.array([0, 0, 1, 0, 0, 0, 1, 1, 0, 1], np.uint8)
    binned = AnomalyMetricAccumulator("binned")
    binned.update(scores, labels)
    result, exact = binned.compute(), anomaly_metrics(scores, labels)
    assert exact["threshold_at_tpr95"] == -0.5
    for key in (*SUMMARY_KEYS, "n_pos", "n_neg"):
        assert result[key] == exact[key], key
    # A bin edge off the scores lies just below them and flags the same pixels.
    shifted = scores + np.float32(2**-11)
    binned = AnomalyMetricAccumulator("binned")
    binned.update(shifted, labels)
    threshold = binned.compute()["threshold_at_tpr95"]
    assert shifted[2] - 2**-9 < threshold <= shifted[2]
    np.testing.assert_array_equal(shifted >= threshold, shifted >= shifted[2])


def test_binned_merge_equals_single_accumulator():
    rng = np.random.default_rng(5)
    scores, labels = mixture(rng, 50_000)
    whole, left, right = (AnomalyMetricAccumulator("binned", bits=16) for _ in range(3))
    whole.update(scores, labels)
    left.update(scores[:20_000], labels[:20_000])
    right.update(scores[20_000:], labels[20_000:])
    left.merge(right)
    assert left.compute() == whole.compute()
    with pytest.raises(ValueError):
        left.merge(AnomalyMetricAccumulator("exact"))


def test_curves_are_downsampled_operating_points():
    rng = np.random.default_rng(9)
    scores, labels = mixture(rng, 20_000)
    accumulator = AnomalyMetricAccumulator("exact")
    accumulator.update(scores, labels)
    curves = accumulator.curves(max_points=200)
    assert 100 <= curves.thresholds.size <= 200
    assert np.all(np.diff(curves.thresholds) < 0)
    assert curves.tpr[-1] == 1.0 and curves.fpr[-1] == 1.0
    # Every retained point is a true operating point of the raw data.
    for index in range(0, curves.thresholds.size, 37):
        flagged = scores >= curves.thresholds[index]
        assert curves.tpr[index] == pytest.approx(flagged[labels == 1].mean())
        assert curves.fpr[index] == pytest.approx(flagged[labels == 0].mean())
        assert curves.precision[index] == pytest.approx(labels[flagged].mean())
    small = AnomalyMetricAccumulator("exact")
    small.update(np.array([0.1, 0.5, 0.9]), np.array([0, 1, 1]))
    np.testing.assert_array_equal(small.curves().thresholds, [0.9, 0.5, 0.1])


# --- segmentation -----------------------------------------------------------------------------------


def test_confusion_matrix_matches_loop_and_streams():
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 5, (40, 30)).astype(np.uint8)
    target = rng.integers(0, 5, (40, 30)).astype(np.uint8)
    target[rng.random(target.shape) < 0.1] = 255
    expected = np.zeros((5, 5), np.int64)
    for t, p in zip(target.ravel(), pred.ravel(), strict=True):
        if t != 255:
            expected[t, p] += 1
    np.testing.assert_array_equal(confusion_matrix(pred, target, 5), expected)
    accumulator = ConfusionMatrixAccumulator(5)
    accumulator.update(pred[:10], target[:10])
    accumulator.update(pred[10:], target[10:])
    np.testing.assert_array_equal(accumulator.matrix, expected)
    with pytest.raises(ValueError, match="prediction"):
        confusion_matrix(np.array([0, 5]), np.array([0, 1]), 5)


def test_miou_hand_computed_three_classes():
    target = np.array([0, 0, 0, 1, 1, 2, 2, 2, 255])
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 0, 1])
    conf = confusion_matrix(pred, target, 3)
    np.testing.assert_array_equal(conf, [[2, 1, 0], [0, 1, 1], [1, 0, 2]])
    mean, per_class = miou(conf)
    # IoU_0 = 2 / (2 + 1 FP + 1 FN), IoU_1 = 1 / (1 + 1 + 1), IoU_2 = 2 / (2 + 1 + 1).
    np.testing.assert_allclose(per_class, [0.5, 1 / 3, 0.5])
    assert mean == pytest.approx(4 / 9)
    # A class absent from both prediction and target is undefined and left out of the mean.
    mean_with_absent, per_class_with_absent = miou(confusion_matrix(pred, target, 4))
    assert np.isnan(per_class_with_absent[3])
    assert mean_with_absent == pytest.approx(4 / 9)


def test_open_miou_hand_computed():
    # K = 2 known classes, label 2 = unknown.
    target = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 255])
    pred = np.array([0, 0, 0, 2, 1, 1, 0, 2, 2, 1, 2])
    result = open_miou(pred, target, num_known=2)
    # class 0: TP 3, FP 1 (a class-1 pixel), FN 1 (predicted unknown) -> 3/5
    # class 1: TP 2, FP 1 (an unknown pixel), FN 1 (predicted 0)       -> 2/4
    # unknown: TP 2, FP 1, FN 1 (the ignored pixel does not count)     -> 2/4
    np.testing.assert_allclose(result["per_class_open_iou"], [0.6, 0.5])
    assert result["open_miou"] == pytest.approx(0.55)
    assert result["unknown_iou"] == pytest.approx(0.5)
    # F1 = 2TP / (2TP + FP + FN): 6/8 and 4/6.
    np.testing.assert_allclose(result["per_class_f1"], [0.75, 2 / 3])
    assert result["macro_f1"] == pytest.approx(17 / 24)


def test_open_miou_of_perfect_detector_equals_closed_miou():
    rng = np.random.default_rng(4)
    num_known = 4
    target = rng.integers(0, num_known, (50, 60)).astype(np.uint8)
    closed_pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, num_known, target.shape))
    anomaly = np.zeros(target.shape, bool)
    anomaly[10:20, 15:40] = True
    target[rng.random(target.shape) < 0.05] = 255
    target_open = np.where(anomaly, num_known, target)
    perfect_open_pred = np.where(anomaly, num_known, closed_pred)

    closed_miou, closed_per_class = miou(
        confusion_matrix(closed_pred, np.where(anomaly, 255, target), num_known)
    )
    result = open_miou(perfect_open_pred, target_open, num_known)
    assert result["open_miou"] == pytest.approx(closed_miou, abs=1e-12)
    np.testing.assert_allclose(result["per_class_open_iou"], closed_per_class, atol=1e-12)
    # Missing an anomaly pixel makes it a false positive of its predicted class.
    perfect_open_pred[12, 20] = closed_pred[12, 20]
    assert open_miou(perfect_open_pred, target_open, num_known)["open_miou"] < closed_miou


def test_open_set_metrics_needs_k_plus_one_square():
    with pytest.raises(ValueError):
        open_set_metrics(np.zeros((3, 3), np.int64), num_known=3)


def two_fold_case():
    fold_a = [
        OpenSetImage(
            score=np.array([[0.1, 0.2, 0.3, 0.4, 0.8, 0.9]]),
            closed_pred=np.array([[0, 1, 1, 1, 0, 1]]),
            target=np.array([[0, 0, 1, 1, 2, 2]]),
        )
    ]
    fold_b = [
        OpenSetImage(
            score=np.array([[0.5, 0.85, 0.7, 0.95]]),
            closed_pred=np.array([[0, 0, 1, 0]]),
            target=np.array([[0, 0, 2, 2]]),
        ),
        OpenSetImage(
            score=np.array([[0.1, 0.9, 0.6, 0.3]]),
            closed_pred=np.array([[1, 1, 0, 0]]),
            target=np.array([[1, 1, 2, 255]]),
        ),
    ]
    return fold_a, fold_b


def test_two_fold_open_miou_hand_computed():
    fold_a, fold_b = two_fold_case()
    result = two_fold_open_miou(fold_a, fold_b, num_known=2)
    a_to_b, b_to_a = result["folds"]
    # Fold A anomalies score 0.8, 0.9: TPR reaches 1 at 0.8. Fold B anomalies 0.95, 0.7, 0.6 (negatives
    # 0.9, 0.85 interleave): TPR reaches 1 only at 0.6.
    assert (a_to_b["calibration_fold"], a_to_b["threshold"], a_to_b["n_images"]) == ("a", 0.8, 2)
    assert (b_to_a["calibration_fold"], b_to_a["threshold"], b_to_a["n_images"]) == ("b", 0.6, 1)
    # B at 0.8 -> (target, pred) pairs (0,0) (0,2) (2,1) (2,2) (1,1) (1,2) (2,0):
    # class 0: 1 / (1 + 1 + 1), class 1: 1 / (1 + 1 + 1), unknown: 1 / (1 + 2 + 2), F1 1/2 and 1/2.
    np.testing.assert_allclose(a_to_b["per_class_open_iou"], [1 / 3, 1 / 3])
    assert a_to_b["unknown_iou"] == pytest.approx(1 / 5)
    assert a_to_b["macro_f1"] == pytest.approx(0.5)
    # A at 0.6 -> (0,0) (0,1) (1,1) (1,1) (2,2) (2,2): class 0: 1/2, class 1: 2/3, unknown: 1, F1 2/3, 4/5.
    np.testing.assert_allclose(b_to_a["per_class_open_iou"], [1 / 2, 2 / 3])
    assert b_to_a["unknown_iou"] == pytest.approx(1.0)
    assert b_to_a["macro_f1"] == pytest.approx(11 / 15)
    # Weights: 2 images for the evaluation on B, 1 for A.
    assert result["open_miou"] == pytest.approx((2 * 1 / 3 + 7 / 12) / 3)
    assert result["unknown_iou"] == pytest.approx((2 * 1 / 5 + 1) / 3)
    assert result["macro_f1"] == pytest.approx((2 * 0.5 + 11 / 15) / 3)
    # Closed set, unknown pixels ignored: class 0 row (3, 1), class 1 row (0, 4) -> (3/4 + 4/5) / 2.
    assert result["miou"] == pytest.approx(0.775)


def test_two_fold_rejects_one_shot_iterators():
    fold_a, fold_b = two_fold_case()
    with pytest.raises(TypeError, match="re-iterable"):
        two_fold_open_miou(iter(fold_a), fold_b, num_known=2)


# --- per distance -----------------------------------------------------------------------------------


def depth_case(rng: np.random.Generator, n: int = 40_000):
    scores, labels = mixture(rng, n, anomaly_rate=0.15)
    scores = np.round(scores, 2)
    labels[rng.random(n) < 0.05] = 255
    depth = rng.uniform(-5.0, 60.0, n)
    depth[rng.random(n) < 0.05] = np.nan
    depth[rng.random(n) < 0.02] = np.inf
    depth[rng.random(n) < 0.02] = 0.0
    depth[:100] = 10.0  # exactly on an edge: belongs to [10, 15)
    return scores, labels, depth


def test_per_distance_matches_masked_one_shot():
    rng = np.random.default_rng(6)
    scores, labels, depth = depth_case(rng)
    results = per_distance_anomaly_metrics(scores, labels, depth)
    assert [entry["range_m"] for entry in results] == [[5.0 * i, 5.0 * i + 5] for i in range(1, 10)]
    for entry in results:
        low, high = entry["range_m"]
        in_range = (depth >= low) & (depth < high)
        assert entry == {"range_m": [low, high], **anomaly_metrics(scores[in_range], labels[in_range])}


def test_per_distance_empty_ranges_report_none_and_counts():
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.7])
    labels = np.array([1, 0, 1, 0, 0, 255])
    depth = np.array([3.0, 3.5, 7.0, 7.5, 12.0, np.nan])
    results = per_distance_anomaly_metrics(scores, labels, depth, bins=[0.0, 5.0, 10.0, 15.0, 20.0])
    assert results[0]["ap"] == 1.0 and results[1]["fpr95"] == 0.0
    # [10, 15): one inlier, no anomaly. [15, 20): nothing at all.
    assert results[2] == {"range_m": [10.0, 15.0], **dict.fromkeys(SUMMARY_KEYS), "n_pos": 0, "n_neg": 1}
    assert (results[3]["ap"], results[3]["n_pos"], results[3]["n_neg"]) == (None, 0, 0)


def test_distance_accumulator_streams_and_merges():
    rng = np.random.default_rng(8)
    scores, labels, depth = depth_case(rng)
    expected = per_distance_anomaly_metrics(scores, labels, depth)
    first, second = DistanceBinnedAccumulator(), DistanceBinnedAccumulator()
    first.update(scores[:15_000], labels[:15_000], depth[:15_000])
    second.update(scores[15_000:], labels[15_000:], depth[15_000:])
    first.merge(second)
    assert first.compute() == expected

    binned = DistanceBinnedAccumulator(mode="binned")
    binned.update(scores.reshape(200, 200), labels.reshape(200, 200), depth.reshape(200, 200))
    for entry, exact in zip(binned.compute(), expected, strict=True):
        # 20-bit bins are 2**-11 of the magnitude wide, so every multiple of 0.01 below 20 has its own bin.
        for key in ("ap", "auroc", "fpr95", "n_pos", "n_neg"):
            assert entry[key] == exact[key]


@pytest.mark.parametrize("edges", [(5.0,), (5.0, 5.0), (10.0, 5.0), (0.0, np.inf), (-5.0, 5.0)])
def test_distance_bins_reject_bad_edges(edges):
    with pytest.raises(ValueError):
        DepthBins(edges)


def test_distance_bins_assign():
    bins = DepthBins((5.0, 10.0, 20.0), beyond_last=False)
    depth = np.array([4.99, 5.0, 9.99, 10.0, 19.99, 20.0, np.nan, np.inf, -7.0, 0.0])
    np.testing.assert_array_equal(bins.assign(depth), [-1, 0, 0, 1, 1, -1, -1, -1, -1, -1])
    # Depth 0 is invalid (zero disparity) even when a range starts at 0 m.
    np.testing.assert_array_equal(
        DepthBins((0.0, 5.0), beyond_last=False).assign(np.array([0.0, -0.0, 1e-3, 4.0])), [-1, -1, 0, 0]
    )
