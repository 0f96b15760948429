"""Dataset evaluation: metrics equal independent computations on the engine's own outputs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY_CLASSES, TINY_PALETTE
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from openset_perception.data import DatasetInfo, FolderDataset, Sample, write_folder_dataset
from openset_perception.engine import Segmenter
from openset_perception.evaluation.accumulate import EvaluationAccumulator
from openset_perception.evaluation.evaluate import evaluate_dataset

K = len(TINY_CLASSES)
FRAME_SIZES = [(64, 96)] * 5 + [(48, 80)]  # the odd size forces a batch boundary


def make_tiny_frames(seed: int = 0) -> list[Sample]:
    """Blocky random labels, one unknown rectangle (semantic K, anomaly 1), ignore rows, depth 2-60 m."""
    rng = np.random.default_rng(seed)
    samples = []
    for index, (height, width) in enumerate(FRAME_SIZES):
        blocks = rng.integers(0, K, (height // 8 + 1, width // 8 + 1))
        semantic = np.kron(blocks, np.ones((8, 8), np.int64))[:height, :width].astype(np.uint8)
        image = np.asarray(TINY_PALETTE, np.uint8)[semantic]
        image = np.clip(image + rng.normal(0, 25, image.shape), 0, 255).astype(np.uint8)
        anomaly = np.zeros((height, width), np.uint8)
        top, left = rng.integers(4, height - 24), rng.integers(4, width - 32)
        anomaly[top : top + 18, left : left + 26] = 1
        image[anomaly == 1] = rng.integers(0, 256, (int(anomaly.sum()), 3), dtype=np.uint8)
        semantic[anomaly == 1] = K
        semantic[-3:] = 255
        anomaly[-3:] = 255
        depth = rng.uniform(2.0, 60.0, (height, width)).astype(np.float32)
        depth[:4] = np.nan
        samples.append(Sample(image, semantic, anomaly, depth, name=f"frame_{index:02d}"))
    return samples


def write_tiny_dataset(root: Path, seed: int = 0) -> Path:
    return write_folder_dataset(make_tiny_frames(seed), root, DatasetInfo(TINY_CLASSES, TINY_PALETTE))


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_dataset"))


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint: Path, dataset_root: Path) -> Segmenter:
    segmenter = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
    # A threshold inside this random model's score range, so open-set maps hold both kinds of label.
    first = FolderDataset(dataset_root)[0]
    segmenter.threshold = float(np.quantile(segmenter.segment([first.image]).anomaly_score, 0.8))
    return segmenter


@pytest.fixture(scope="module")
def exact_run(segmenter: Segmenter, dataset_root: Path, tmp_path_factory: pytest.TempPathFactory):
    out_dir = tmp_path_factory.mktemp("exact_eval")
    metrics = evaluate_dataset(
        segmenter, FolderDataset(dataset_root), out_dir, save_scores=True, mode="exact", progress=False
    )
    return metrics, out_dir


@pytest.fixture(scope="module")
def engine_outputs(segmenter: Segmenter, dataset_root: Path) -> list[tuple[Sample, object]]:
    dataset = FolderDataset(dataset_root)
    return [(dataset[i], segmenter.segment([dataset[i].image])) for i in range(len(dataset))]


def _pooled(out_dir: Path, engine_outputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Saved scores, anomaly labels and depth of all frames, flattened."""
    scores, labels, depth = [], [], []
    for sample, _ in engine_outputs:
        scores.append(np.load(out_dir / "scores" / f"{sample.name}.npy").ravel())
        labels.append(sample.anomaly.ravel())
        depth.append(sample.depth.ravel())
    return np.concatenate(scores), np.concatenate(labels), np.concatenate(depth)


def _reference_anomaly(scores: np.ndarray, labels: np.ndarray) -> dict:
    keep = labels != 255
    scores, positive = scores[keep], labels[keep] == 1
    fpr, tpr, _ = roc_curve(positive, scores, drop_intermediate=False)
    return {
        "ap": average_precision_score(positive, scores),
        "auroc": roc_auc_score(positive, scores),
        "fpr95": fpr[np.argmax(tpr >= 0.95)],
    }


def test_report_files_and_anomaly_metrics_equal_saved_scores(exact_run, engine_outputs) -> None:
    metrics, out_dir = exact_run
    for name in ("metrics.json", "report.md", "pr_curve.png", "roc_curve.png", "per_distance.png"):
        assert (out_dir / name).stat().st_size > 0, name
    assert json.loads((out_dir / "metrics.json").read_text()) == metrics
    for sample, result in engine_outputs:
        np.testing.assert_array_equal(
            np.load(out_dir / "scores" / f"{sample.name}.npy"), result.anomaly_score[0]
        )

    scores, labels, _ = _pooled(out_dir, engine_outputs)
    expected = _reference_anomaly(scores, labels)
    for key, value in expected.items():
        assert metrics["anomaly"][key] == pytest.approx(value, abs=1e-9), key
    assert metrics["anomaly"]["n_pos"] == np.count_nonzero(labels == 1)
    assert metrics["frames"]["evaluated"] == len(FRAME_SIZES)
    assert metrics["frames"]["with_depth"] == len(FRAME_SIZES)
    assert metrics["frames"]["skipped"] == 0
    assert "## Anomaly detection" in (out_dir / "report.md").read_text()


def test_per_distance_equals_direct_computation(exact_run, engine_outputs) -> None:
    metrics, out_dir = exact_run
    scores, labels, depth = _pooled(out_dir, engine_outputs)
    entries = metrics["per_distance"]
    assert [entry["range_m"] for entry in entries] == [[lo, lo + 5.0] for lo in range(5, 50, 5)]
    for entry in entries:
        low, high = entry["range_m"]
        in_range = (depth >= low) & (depth < high)
        expected = _reference_anomaly(scores[in_range], labels[in_range])
        for key in ("ap", "fpr95"):
            assert entry[key] == pytest.approx(expected[key], abs=1e-9), (low, key)


def _iou(pred: np.ndarray, target: np.ndarray, label: int) -> float:
    valid = target != 255
    predicted, actual = (pred == label) & valid, target == label
    union = np.count_nonzero(predicted | actual)
    return np.count_nonzero(predicted & actual) / union if union else math.nan


def test_segmentation_metrics_equal_engine_outputs(exact_run, engine_outputs, segmenter: Segmenter) -> None:
    metrics, _ = exact_run
    semantic_pred = np.concatenate([result.semantic[0].ravel() for _, result in engine_outputs])
    open_pred = np.concatenate([result.open_set[0].ravel() for _, result in engine_outputs])
    target = np.concatenate([sample.semantic.ravel() for sample, _ in engine_outputs])
    assert 0 < np.mean(open_pred == K) < 1

    closed_target = np.where(target == K, 255, target)
    closed_iou = [_iou(semantic_pred, closed_target, c) for c in range(K)]
    open_iou = [_iou(open_pred, target, c) for c in range(K + 1)]
    segmentation = metrics["segmentation"]
    assert segmentation["miou"] == pytest.approx(np.nanmean(closed_iou), abs=1e-12)
    assert list(segmentation["per_class_iou"]) == TINY_CLASSES
    assert list(segmentation["per_class_iou"].values()) == pytest.approx(closed_iou, abs=1e-12)
    assert segmentation["open_miou"] == pytest.approx(np.nanmean(open_iou[:K]), abs=1e-12)
    assert segmentation["unknown_iou"] == pytest.approx(open_iou[K], abs=1e-12)
    assert segmentation["open_set_threshold"] == segmenter.threshold


def test_binned_mode_and_batching_agree_with_exact(
    exact_run, segmenter: Segmenter, dataset_root, tmp_path
) -> None:
    exact, _ = exact_run
    binned = evaluate_dataset(
        segmenter, FolderDataset(dataset_root), tmp_path, batch_size=4, mode="binned", progress=False
    )
    for key in ("ap", "auroc", "fpr95"):
        assert binned["anomaly"][key] == pytest.approx(exact["anomaly"][key], abs=1e-3), key
    for binned_entry, exact_entry in zip(binned["per_distance"], exact["per_distance"], strict=True):
        assert binned_entry["ap"] == pytest.approx(exact_entry["ap"], abs=1e-3)
    assert binned["segmentation"]["miou"] == pytest.approx(exact["segmentation"]["miou"], abs=1e-3)
    # Batches of 4 same-size frames, then the 5th alone (the 6th has another size): 3 engine calls.
    assert binned["latency_ms"]["network"]["calls"] == 3
    assert binned["settings"]["mode"] == "binned"


def test_bad_frames_are_skipped_and_named(segmenter: Segmenter, dataset_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(dataset_root, tmp_path / "data"))
    (root / "images" / "frame_02.png").write_bytes(b"not a png")
    bad_labels = cv2.imread(str(root / "semantic" / "frame_04.png"), cv2.IMREAD_UNCHANGED)
    bad_labels[10, 10] = K + 3
    cv2.imwrite(str(root / "semantic" / "frame_04.png"), bad_labels)

    metrics = evaluate_dataset(segmenter, FolderDataset(root), tmp_path / "out", progress=False)
    frames = metrics["frames"]
    # A label the model does not know costs frame_04 its semantic labels only, not the frame.
    assert frames["evaluated"] == len(FRAME_SIZES) - 1
    assert frames["with_semantic_gt"] == len(FRAME_SIZES) - 2
    assert frames["skipped"] == 1
    assert frames["skipped: unreadable sample"] == 1
    assert frames["semantic labels unusable"] == 1
    report = (tmp_path / "out" / "report.md").read_text()
    assert "frame_02" in report and "frame_04" in report
    assert metrics["skipped_frames"]["unreadable sample"][0].startswith("#2")


def test_accumulator_hand_computed() -> None:
    # K = 2; three unknown pixels (label 2), four known, one ignored; anomaly labels derived from K.
    score = np.array([[0.9, 0.35, 0.1, 0.2], [0.7, 0.3, 0.4, 0.05]], np.float32)
    target = np.array([[2, 2, 0, 1], [2, 0, 1, 255]], np.uint8)
    semantic_pred = np.array([[0, 1, 0, 1], [1, 1, 1, 0]], np.uint8)
    open_pred = np.where(score >= 0.5, 2, semantic_pred).astype(np.uint8)
    depth = np.array([[6, 12, 6, 12], [12, 6, 12, np.nan]], np.float32)

    for mode in ("exact", "binned"):
        accumulator = EvaluationAccumulator(["a", "b"], depth_edges=(5, 10, 15), mode=mode)
        accumulator.update(score, semantic_pred, open_pred, gt_semantic=target, depth=depth)
        with pytest.raises(ValueError, match="semantic labels"):
            accumulator.update(score, semantic_pred, open_pred, gt_semantic=np.full_like(target, 5))
        accumulator.add_latency({"network": 10.0, "scoring": 2.0})
        accumulator.add_latency({"network": 20.0, "scoring": 4.0})
        accumulator.skip("unreadable sample", "broken")
        metrics = accumulator.compute()

        # Descending: .9 P, .7 P, .4 N, .35 P, .3 N, .2 N, .1 N.
        anomaly = metrics["anomaly"]
        assert anomaly["ap"] == pytest.approx((1 + 1 + 3 / 4) / 3)
        assert anomaly["auroc"] == pytest.approx(11 / 12)
        assert anomaly["fpr95"] == pytest.approx(1 / 4)
        assert (anomaly["n_pos"], anomaly["n_neg"]) == (3, 4)
        near, far = metrics["per_distance"]
        assert (near["ap"], near["fpr95"]) == pytest.approx((1.0, 0.0))
        assert (far["ap"], far["fpr95"]) == pytest.approx((5 / 6, 1 / 2))

        segmentation = metrics["segmentation"]
        assert segmentation["per_class_iou"] == pytest.approx({"a": 1 / 2, "b": 2 / 3})
        assert segmentation["miou"] == pytest.approx(7 / 12)
        assert segmentation["per_class_open_iou"] == pytest.approx({"a": 1 / 2, "b": 1 / 2})
        assert segmentation["unknown_iou"] == pytest.approx(2 / 3)
        assert segmentation["macro_f1"] == pytest.approx(2 / 3)

        latency = metrics["latency_ms"]
        assert latency["network"]["p50"] == pytest.approx(15.0)
        assert latency["total"]["mean"] == pytest.approx(18.0)
        assert latency["total"]["p95"] == pytest.approx(23.4)
        frames = metrics["frames"]
        assert frames["evaluated"] == frames["with_anomaly_gt"] == frames["with_depth"] == 1
        assert (frames["skipped"], frames["skipped: unreadable sample"]) == (1, 1)


def test_accumulator_without_unknown_labels_reports_no_anomaly_metrics() -> None:
    accumulator = EvaluationAccumulator(["a", "b"])
    labels = np.array([[0, 1], [1, 255]], np.uint8)
    accumulator.update(np.zeros((2, 2), np.float32), labels, labels, gt_semantic=labels)
    metrics = accumulator.compute()
    assert metrics["anomaly"] is None and accumulator.curves() is None
    assert metrics["segmentation"]["miou"] == 1.0
    assert "open_miou" not in metrics["segmentation"]


def test_cli_evaluate_end_to_end(
    tiny_checkpoint: Path, dataset_root: Path, exact_run, tmp_path, capsys
) -> None:
    pytest.importorskip("openset_perception.data.registry", reason="dataset registry not written yet")
    from openset_perception.cli.main import main

    out = tmp_path / "cli_eval"
    argv = [
        "evaluate",
        "--checkpoint",
        str(tiny_checkpoint),
        "--dataset",
        "folder",
        "--root",
        str(dataset_root),
    ]
    assert main([*argv, "--out", str(out), "--batch-size", "2", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"]["evaluated"] == len(FRAME_SIZES)
    assert metrics["anomaly"]["ap"] == pytest.approx(exact_run[0]["anomaly"]["ap"], abs=1e-3)
    assert "AP " in capsys.readouterr().out


def test_cli_evaluate_protocols(tiny_checkpoint: Path, dataset_root: Path, exact_run, tmp_path) -> None:
    pytest.importorskip("openset_perception.data.registry", reason="dataset registry not written yet")
    from openset_perception.cli.main import main

    base = [
        "evaluate",
        "--checkpoint",
        str(tiny_checkpoint),
        "--dataset",
        "folder",
        "--root",
        str(dataset_root),
    ]
    saved = Path(exact_run[1]) / "scores"
    frames = FolderDataset(dataset_root)
    scores = [np.load(saved / f"{frames[i].name}.npy") for i in range(len(frames))]

    out = tmp_path / "per_image"
    assert main([*base, "--out", str(out), "--protocol", "per-image", "--two-fold", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    per_frame_ap = [
        average_precision_score(frames[i].anomaly[frames[i].anomaly != 255], s[frames[i].anomaly != 255])
        for i, s in enumerate(scores)
    ]
    assert metrics["anomaly"]["ap"] == pytest.approx(np.mean(per_frame_ap), abs=1e-9)
    assert metrics["anomaly"]["n_images"] == len(FRAME_SIZES)
    assert metrics["settings"]["protocol"] == "per-image" and metrics["settings"]["two_fold"] is True
    segmentation = metrics["segmentation"]
    assert 0.0 <= segmentation["two_fold_open_miou"] <= 1.0
    assert [fold["n_images"] for fold in segmentation["two_fold_folds"]] == [3, 3]
    assert "two-fold open-mIoU" in (out / "report.md").read_text()

    out = tmp_path / "smiyc"
    assert main([*base, "--out", str(out), "--smiyc-compatible", "--no-progress"]) == 0
    smiyc = json.loads((out / "metrics.json").read_text())
    assert smiyc["settings"]["mode"] == "smiyc"
    assert smiyc["anomaly"]["ap"] == pytest.approx(exact_run[0]["anomaly"]["ap"], abs=0.02)
    with pytest.raises(SystemExit):  # argparse: the two accuracies exclude each other
        main([*base, "--smiyc-compatible", "--exact"])
