"""Threshold calibration: the stored threshold flags the target share of anomaly pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, TINY_PALETTE, make_tiny_card, make_tiny_model
from test_evaluate import write_tiny_dataset

from openset_perception.checkpoint import load_checkpoint, read_model_card, save_checkpoint
from openset_perception.cli.main import main
from openset_perception.data import DatasetInfo, FolderDataset, Sample
from openset_perception.engine import Segmenter
from openset_perception.evaluation.calibrate import (
    CalibrationError,
    calibrate_threshold,
    threshold_at_tpr,
    write_calibrated_checkpoint,
)
from openset_perception.metrics import AnomalyMetricAccumulator, anomaly_metrics


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("calibration_data"), seed=1)


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint: Path) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def pooled_scores(segmenter: Segmenter, dataset_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The engine's scores and the anomaly labels of all labelled pixels of the calibration set."""
    dataset = FolderDataset(dataset_root)
    scores, labels = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        scores.append(segmenter.segment([sample.image]).anomaly_score[0].ravel())
        labels.append(sample.anomaly.ravel())
    scores_flat, labels_flat = np.concatenate(scores), np.concatenate(labels)
    keep = labels_flat != 255
    return scores_flat[keep], labels_flat[keep]


def test_threshold_at_tpr_hand_computed() -> None:
    accumulator = AnomalyMetricAccumulator("exact")
    # Descending: .9 P, .7 P, .4 N, .35 P, .3 N, .2 N, .1 N.
    accumulator.update(
        np.array([0.9, 0.7, 0.4, 0.35, 0.3, 0.2, 0.1], np.float32), np.array([1, 1, 0, 1, 0, 0, 0], np.uint8)
    )
    assert threshold_at_tpr(accumulator, 1 / 3) == pytest.approx((0.9, 1 / 3, 0.0))
    assert threshold_at_tpr(accumulator, 0.5) == pytest.approx((0.7, 2 / 3, 0.0))
    assert threshold_at_tpr(accumulator, 0.95) == pytest.approx((0.35, 1.0, 0.25))
    with pytest.raises(ValueError, match="TPR"):
        threshold_at_tpr(accumulator, 0.0)
    inliers_only = AnomalyMetricAccumulator("exact")
    inliers_only.update(np.zeros(3, np.float32), np.zeros(3, np.uint8))
    with pytest.raises(CalibrationError, match="0 anomaly"):
        threshold_at_tpr(inliers_only, 0.95)


@pytest.mark.parametrize("tpr", [0.95, 0.8])
def test_calibrated_threshold_reaches_target_tpr(segmenter, dataset_root, pooled_scores, tpr) -> None:
    scores, labels = pooled_scores
    anomaly_scores = scores[labels == 1]

    exact, metrics = calibrate_threshold(segmenter, FolderDataset(dataset_root), tpr=tpr, mode="exact")
    assert np.mean(anomaly_scores >= exact) >= tpr
    # No higher threshold reaches the target: the next larger pixel score already misses it.
    next_higher = scores[scores > exact].min()
    assert np.mean(anomaly_scores >= next_higher) < tpr
    assert metrics["tpr"] == pytest.approx(np.mean(anomaly_scores >= exact), abs=1e-12)
    assert metrics["fpr"] == pytest.approx(np.mean(scores[labels == 0] >= exact), abs=1e-12)
    if tpr == 0.95:
        assert exact == anomaly_metrics(scores, labels)["threshold_at_tpr95"]

    binned, _ = calibrate_threshold(segmenter, FolderDataset(dataset_root), tpr=tpr, batch_size=3)
    assert np.mean(anomaly_scores >= binned) >= tpr
    assert binned <= exact


def test_dataset_without_anomalies_cannot_calibrate(segmenter: Segmenter) -> None:
    class KnownOnly:
        info = DatasetInfo(TINY_CLASSES, TINY_PALETTE, has_semantic=True)

        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> Sample:
            image = np.full((40, 48, 3), 60 * index, np.uint8)
            return Sample(image, semantic=np.full((40, 48), index, np.uint8), name=f"known_{index}")

    with pytest.raises(CalibrationError, match="0 anomaly"):
        calibrate_threshold(segmenter, KnownOnly())


def test_write_calibrated_checkpoint_keeps_weights_and_metrics(tmp_path: Path) -> None:
    card = make_tiny_card(threshold=None, metrics={"validation": {"ap": 0.5}})
    source = tmp_path / "source.safetensors"
    save_checkpoint(source, make_tiny_model(card, seed=3), card)
    target = tmp_path / "calibrated.safetensors"

    write_calibrated_checkpoint(source, target, -3.25, 0.9, {"threshold": -3.25, "fpr": 0.1})
    calibrated = read_model_card(target)
    assert (calibrated.threshold, calibrated.threshold_tpr) == (-3.25, 0.9)
    assert calibrated.score_method == card.score_method
    assert calibrated.metrics == {"validation": {"ap": 0.5}, "calibration": {"threshold": -3.25, "fpr": 0.1}}
    assert read_model_card(source).threshold is None
    source_model, _ = load_checkpoint(source)
    target_model, _ = load_checkpoint(target)
    for (name, expected), actual in zip(
        source_model.state_dict().items(), target_model.state_dict().values(), strict=True
    ):
        assert torch.equal(expected, actual), name
    assert Segmenter.from_checkpoint(target, device="cpu").threshold == -3.25


def test_recalibration_marks_what_it_invalidates(tmp_path: Path) -> None:
    before = {
        "validation": {"ap": 0.5, "miou": 0.7, "open_miou": 0.6},
        "test": {"ap": 0.4, "open_miou": 0.55, "open_set_threshold": 1.5, "dataset": "held-out"},
        "calibration": {"threshold": 1.5},
    }
    card = make_tiny_card(threshold=1.5, metrics=before)
    source = tmp_path / "source.safetensors"
    save_checkpoint(source, make_tiny_model(card, seed=3), card)

    same_score = tmp_path / "same.safetensors"
    write_calibrated_checkpoint(source, same_score, 2.0, 0.9, {"threshold": 2.0}, data={"dataset": "folder"})
    metrics = read_model_card(same_score).metrics
    assert metrics["validation"] == {"ap": 0.5, "miou": 0.7}  # threshold-free values stay
    assert metrics["test"] == {"ap": 0.4, "dataset": "held-out"}
    assert metrics["calibration"] == {"threshold": 2.0, "data": {"dataset": "folder"}}
    assert metrics["superseded"]["validation"] == {"open_miou": 0.6}
    assert metrics["superseded"]["test"] == {"open_miou": 0.55, "open_set_threshold": 1.5}
    assert "previous threshold" in metrics["superseded"]["reason"]

    other_score = tmp_path / "other.safetensors"
    write_calibrated_checkpoint(same_score, other_score, -3.0, 0.9, {"threshold": -3.0}, score_method="msp")
    metrics = read_model_card(other_score).metrics
    assert set(metrics) == {"calibration", "superseded"}  # nothing measured with the old score remains
    assert metrics["superseded"]["validation"] == {"ap": 0.5, "miou": 0.7}
    assert "score method changed" in metrics["superseded"]["reason"]


def test_info_shows_every_metric_section_in_percent(tmp_path: Path, capsys) -> None:
    metrics = {"validation": {"ap": 0.5}, "test": {"ap": 0.8422, "fpr95": 0.0073, "dataset": "held-out"}}
    card = make_tiny_card(threshold=1.5, threshold_tpr=0.95, metrics=metrics)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, make_tiny_model(card, seed=3), card)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TPR 95.00%" in out
    assert "validation:   ap 50.00%" in out
    assert "test:         ap 84.22%, fpr95 0.73%, dataset held-out" in out


def test_info_reads_a_flow_checkpoint(tmp_path: Path, capsys) -> None:
    from openset_perception.flows import build_flow
    from openset_perception.training.flow_negatives import save_flow

    flow = build_flow("realnvp")
    path = tmp_path / "flow.safetensors"
    save_flow(path, flow, "realnvp", {})
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "flow:         realnvp" in out
    assert f"{sum(p.numel() for p in flow.state_dict().values()):,}" in out


def test_cli_reports_missing_inputs_in_one_line(
    tiny_checkpoint: Path, dataset_root, tmp_path, capsys
) -> None:
    out = str(tmp_path / "out.safetensors")
    missing_checkpoint = ["--checkpoint", str(tmp_path / "nope.safetensors"), "--dataset", "folder"]
    missing_root = ["--checkpoint", str(tiny_checkpoint), "--dataset", "folder"]
    cases = [
        (
            ["calibrate", *missing_checkpoint, "--root", str(dataset_root), "--out", out],
            "checkpoint not found",
        ),
        (["calibrate", *missing_root, "--root", str(tmp_path / "absent"), "--out", out], "does not exist"),
        (["evaluate", *missing_checkpoint, "--root", str(dataset_root)], "checkpoint not found"),
        (["evaluate", *missing_root, "--root", str(tmp_path / "absent")], "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and message in error, argv
    assert not Path(out).exists()


def test_cli_calibrate_end_to_end(tiny_checkpoint: Path, dataset_root, segmenter, tmp_path) -> None:
    pytest.importorskip("openset_perception.data.registry", reason="dataset registry not written yet")
    out = tmp_path / "calibrated.safetensors"
    argv = [
        "calibrate",
        "--checkpoint",
        str(tiny_checkpoint),
        "--dataset",
        "folder",
        "--root",
        str(dataset_root),
    ]
    assert main([*argv, "--tpr", "0.9", "--out", str(out), "--no-progress"]) == 0
    expected, _ = calibrate_threshold(segmenter, FolderDataset(dataset_root), tpr=0.9)
    card = read_model_card(out)
    assert (card.threshold, card.threshold_tpr) == (expected, 0.9)
    assert card.metrics["calibration"]["frames"] == len(FolderDataset(dataset_root))
    assert card.metrics["calibration"]["data"] == {"dataset": "folder", "root": str(dataset_root)}
