"""Report writer: JSON round trip, Markdown content, PNG plots."""

import json
import math

import numpy as np
import pytest

from openset_perception.evaluation.report import jsonable, write_report
from openset_perception.metrics import SUMMARY_KEYS, AnomalyMetricAccumulator, per_distance_anomaly_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_inputs():
    rng = np.random.default_rng(0)
    labels = (rng.random(20_000) < 0.2).astype(np.uint8)
    scores = (rng.normal(size=labels.size) + 2.0 * labels).astype(np.float32)
    depth = rng.uniform(1.0, 45.0, labels.size)
    accumulator = AnomalyMetricAccumulator()
    accumulator.update(scores, labels)
    metrics = {
        "anomaly": accumulator.compute(),
        "segmentation": {
            "miou": np.float64(0.71234),
            "open_miou": 0.5,
            "unknown_iou": np.float32(0.25),
            "macro_f1": 0.625,
            "per_class_iou": {"road": 0.9, "car": np.nan},
            "per_class_open_iou": {"road": 0.85, "car": None},
        },
        # Depth stops at 45 m, so the 50-60 m range is empty and reports None.
        "per_distance": per_distance_anomaly_metrics(
            scores, labels, depth, bins=[0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
        ),
        "latency_ms": {
            "forward": {"p50": np.float64(12.3456), "p95": 15.5},
            "score": {"p50": 0.75, "p95": 1.25},
        },
        "frames": {"evaluated": np.int64(42), "skipped": 0},
    }
    return metrics, accumulator.curves(max_points=300)


def test_metrics_json_round_trips(tmp_path):
    metrics, curves = make_inputs()
    written = write_report(metrics, tmp_path, curves=curves, title="Toy run")
    loaded = json.loads(written["metrics"].read_text())
    assert loaded == jsonable(metrics)
    assert loaded["anomaly"]["ap"] == metrics["anomaly"]["ap"]
    assert isinstance(loaded["segmentation"]["miou"], float)
    assert isinstance(loaded["frames"]["evaluated"], int)
    assert loaded["segmentation"]["per_class_iou"] == {"road": 0.9, "car": None}
    assert loaded["segmentation"]["unknown_iou"] == 0.25
    assert loaded["per_distance"][0]["range_m"] == [0.0, 10.0]
    assert loaded["per_distance"][-1] == {
        "range_m": [50.0, 60.0],
        **dict.fromkeys(SUMMARY_KEYS),
        "n_pos": 0,
        "n_neg": 0,
    }
    # No temporary files are left behind by the atomic writes.
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in written.values())


def test_jsonable_converts_numpy_and_non_finite():
    converted = jsonable(
        {"a": (np.float32(1.5), np.inf), 3: np.array([1, 2]), "b": np.bool_(True), "c": math.nan}
    )
    assert converted == {"a": [1.5, None], "3": [1, 2], "b": True, "c": None}
    assert type(converted["3"][0]) is int


def test_markdown_contains_the_numbers(tmp_path):
    metrics, curves = make_inputs()
    text = write_report(metrics, tmp_path, curves=curves, title="Toy run")["report"].read_text()
    assert text.startswith("# Toy run")
    anomaly = metrics["anomaly"]
    for value in (anomaly["ap"], anomaly["auroc"], anomaly["fpr95"]):
        assert f"{100 * value:.2f}" in text
    assert "| mIoU (%) | 71.23 |" in text
    assert "| open-mIoU (%) | 50.00 |" in text
    assert "| car | n/a | n/a |" in text
    assert "| road | 90.00 | 85.00 |" in text
    for entry in metrics["per_distance"]:
        low, high = entry["range_m"]
        row = f"| {low:g}-{high:g} | "
        assert row + ("n/a" if entry["ap"] is None else f"{100 * entry['ap']:.2f}") in text
    assert "| forward | 12.35 | 15.5 |" in text
    assert "| evaluated | 42 |" in text
    for name in ("pr_curve.png", "roc_curve.png", "per_distance.png"):
        assert f"]({name})" in text


def test_plots_are_non_empty_pngs(tmp_path):
    metrics, curves = make_inputs()
    written = write_report(metrics, tmp_path, curves={"hybrid": curves, "copy": curves})
    for name in ("pr_curve", "roc_curve", "per_distance"):
        data = written[name].read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 5_000


def test_sections_and_plots_are_optional(tmp_path):
    written = write_report({"anomaly": {"msp": {"ap": 0.1, "auroc": None}}}, tmp_path / "nested")
    assert set(written) == {"metrics", "report"}
    text = written["report"].read_text()
    assert "| msp | 10.00 | n/a |" in text
    assert "Segmentation" not in text and "Plots" not in text
    assert json.loads(written["metrics"].read_text()) == {"anomaly": {"msp": {"ap": 0.1, "auroc": None}}}


def test_rewrite_replaces_previous_report(tmp_path):
    write_report({"frames": {"evaluated": 1}}, tmp_path)
    write_report({"frames": {"evaluated": 2}}, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"frames": {"evaluated": 2}}


def test_rejects_unserialisable_values(tmp_path):
    with pytest.raises(TypeError):
        write_report({"frames": {"bad": object()}}, tmp_path)
    assert not (tmp_path / "metrics.json").exists()
