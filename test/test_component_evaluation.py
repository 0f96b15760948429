"""Component-level metrics inside evaluation: threshold choice, report section and plot, CLI, instances."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CLASSES, TINY_PALETTE

from openset_perception.component_metrics import (
    ComponentMetricAccumulator,
    ComponentOptions,
    ComponentSettings,
    parse_component_options,
)
from openset_perception.data.folder import FolderDataset, write_folder_dataset
from openset_perception.data.sample import DatasetInfo, Sample
from openset_perception.depth import DepthBins
from openset_perception.evaluation.accumulate import EvaluationAccumulator
from openset_perception.evaluation.report import write_report

K = len(TINY_CLASSES)
SMALL = ComponentSettings(min_segment_px=4, min_instance_px=4)
EDGES = (5.0, 10.0, 15.0, 20.0)


def _frames(count: int = 5) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    frames = []
    for _ in range(count):
        labels = np.zeros((40, 64), np.uint8)
        score = rng.normal(0.0, 1.0, labels.shape).astype(np.float32)
        depth = np.full(labels.shape, 18.0, np.float32)
        for top, left, z in ((4, 4, 7.0), (22, 36, 12.0)):
            labels[top : top + 9, left : left + 11] = 1
            score[top : top + 9, left : left + 11] += rng.uniform(1.0, 4.0)
            depth[top : top + 9, left : left + 11] = z
        labels[:, -4:] = 255
        frames.append((score, labels, depth))
    return frames


def _accumulate(options: ComponentOptions) -> EvaluationAccumulator:
    accumulator = EvaluationAccumulator(TINY_CLASSES, depth_edges=EDGES, components=options)
    for score, labels, depth in _frames():
        accumulator.update(score, None, None, gt_anomaly=labels, depth=depth)
    return accumulator


def test_default_threshold_is_the_best_pixel_f1_and_results_equal_a_fixed_run_there() -> None:
    accumulator = _accumulate(ComponentOptions(None, SMALL))
    section = accumulator.compute()["components"]
    pooled = accumulator.anomaly.compute()
    f1, threshold = pooled["best_f1"], pooled["best_f1_threshold"]
    assert section["threshold_source"] == "best pixel F1"
    assert section["pixel_threshold"] == threshold and section["pixel_f1"] == pytest.approx(f1)
    direct = ComponentMetricAccumulator(SMALL, threshold, DepthBins(EDGES, beyond_last=False))
    for score, labels, depth in _frames():
        direct.update(score, labels, depth)
    expected = direct.compute()
    assert {key: section[key] for key in expected} == expected
    assert section["instances"] == 10
    by_range = {tuple(entry["range_m"]): entry["instances"] for entry in section["per_distance"]}
    assert by_range == {(5.0, 10.0): 5, (10.0, 15.0): 5, (15.0, 20.0): 0}


def test_fixed_threshold_reports_the_pixel_f1_there() -> None:
    section = _accumulate(ComponentOptions(1.0, SMALL)).compute()["components"]
    assert section["threshold_source"] == "fixed" and section["pixel_threshold"] == 1.0
    flagged = tp = positives = 0
    for score, labels, _ in _frames():
        keep = labels != 255
        predicted = (score >= 1.0) & keep
        flagged += np.count_nonzero(predicted)
        tp += np.count_nonzero(predicted & (labels == 1))
        positives += np.count_nonzero(labels == 1)
    assert section["pixel_f1"] == pytest.approx(2 * tp / (flagged + positives), rel=1e-6)


def test_report_has_the_section_and_the_per_distance_plot(tmp_path: Path) -> None:
    accumulator = _accumulate(ComponentOptions(None, SMALL))
    written = write_report(accumulator.compute(), tmp_path, curves=accumulator.curves())
    report = written["report"].read_text()
    assert "## Component-level metrics (SegmentMeIfYouCan)" in report and "sIoU threshold" in report
    assert written["components_per_distance"].is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["components"]["per_threshold"]) == 11


def test_calibration_accumulator_has_no_component_metrics() -> None:
    accumulator = EvaluationAccumulator(TINY_CLASSES, components=None)
    score, labels, depth = _frames(1)[0]
    accumulator.update(score, None, None, gt_anomaly=labels, depth=depth)
    assert accumulator.compute()["components"] is None


def test_instance_images_travel_through_the_folder_dataset_into_the_metrics(tmp_path: Path) -> None:
    image = np.zeros((20, 30, 3), np.uint8)
    anomaly = np.zeros((20, 30), np.uint8)
    anomaly[2:8, 2:8] = anomaly[8:14, 8:14] = 1  # touching diagonally: one component without ids
    instances = np.zeros((20, 30), np.uint16)
    instances[2:8, 2:8], instances[8:14, 8:14] = 3, 4
    root = write_folder_dataset(
        [Sample(image, anomaly=anomaly, instances=instances, name="a")],
        tmp_path / "ds",
        DatasetInfo(TINY_CLASSES, TINY_PALETTE),
    )
    sample = FolderDataset(root)[0]
    np.testing.assert_array_equal(sample.instances, instances)
    score = np.where(sample.anomaly == 1, 5.0, -5.0).astype(np.float32)
    for ids, expected in ((None, 1), (sample.instances, 2)):
        accumulator = EvaluationAccumulator(TINY_CLASSES, components=ComponentOptions(0.0, SMALL))
        accumulator.update(score, None, None, gt_anomaly=sample.anomaly, gt_instances=ids)
        section = accumulator.compute()["components"]
        assert section["instances"] == expected and section["f1_mean"] == 1.0


def test_cli_options() -> None:
    assert parse_component_options("best-f1", "anomaly", None).threshold is None
    assert parse_component_options("card", "obstacle", 0.5) == ComponentOptions(
        0.5, ComponentSettings(min_segment_px=50, min_instance_px=10)
    )
    assert parse_component_options("-2.5", "anomaly", None).threshold == -2.5
    for threshold, card in (("card", None), ("nan", None), ("high", 1.0)):
        with pytest.raises(ValueError, match="--threshold"):
            parse_component_options(threshold, "anomaly", card)


def test_cli_evaluate_reports_component_metrics(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    from openset_perception.cli.main import main

    rng = np.random.default_rng(0)
    samples = []
    for index in range(3):
        image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
        anomaly = np.zeros((64, 96), np.uint8)
        anomaly[10:40, 20:60] = 1
        depth = np.full((64, 96), 9.0, np.float32)
        samples.append(Sample(image, anomaly=anomaly, depth=depth, name=f"f{index}"))
    root = write_folder_dataset(samples, tmp_path / "ds", DatasetInfo(TINY_CLASSES, TINY_PALETTE))
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--dataset", "folder", "--root", str(root)]
    assert main([*argv, "--out", str(out), "--threshold", "card", "--no-progress"]) == 0
    components = json.loads((out / "metrics.json").read_text())["components"]
    assert components["pixel_threshold"] == 0.0 and components["threshold_source"] == "fixed"  # tiny card: 0
    assert components["instances"] == 3
    assert "Component-level" in (out / "report.md").read_text()
    assert main([*argv, "--out", str(tmp_path / "bad"), "--threshold", "high", "--no-progress"]) == 2
    assert "--threshold must be" in capsys.readouterr().err
