"""`evaluate` end to end on a fake copy of every public benchmark layout: the metrics it writes equal
metrics computed directly from the engine's scores on the reader's frames."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_model

from openset_perception.checkpoint import ModelCard
from openset_perception.data.registry import open_dataset
from openset_perception.engine import Segmenter
from openset_perception.evaluation.evaluate import evaluate_dataset
from openset_perception.metrics import anomaly_metrics
from openset_perception.models import ArchitectureSpec

pytest_plugins = ["conftest_datasets"]

LAYOUTS = [
    "cityscapes",
    "lostandfound",
    "fishyscapes_laf",
    "fishyscapes_static",
    "smiyc_anomaly",
    "smiyc_obstacle",
    "streethazards",
]


def _anomaly_truth(sample, num_known: int) -> np.ndarray | None:
    if sample.anomaly is not None:
        return sample.anomaly
    if sample.semantic is None or not (sample.semantic == num_known).any():
        return None
    return np.where(sample.semantic == 255, 255, (sample.semantic == num_known).astype(np.uint8))


@pytest.mark.parametrize("name", LAYOUTS)
def test_evaluate_matches_direct_metrics(name: str, fake_dataset, tmp_path: Path) -> None:
    fake = fake_dataset(name)
    dataset = open_dataset(fake.name, fake.root, fake.split)
    info = dataset.info
    spec = ArchitectureSpec("swiftnet_rn18", len(info.class_names), {"width": 0.125})
    card = ModelCard(
        architecture=spec, class_names=list(info.class_names), palette=list(info.palette), threshold=0.0
    )
    segmenter = Segmenter(make_tiny_model(card), card, device="cpu")

    written = evaluate_dataset(segmenter, dataset, tmp_path / "out", mode="exact", progress=False)
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["frames"]["evaluated"] == len(dataset) == len(fake.samples)

    scores, truths = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        truth = _anomaly_truth(sample, len(info.class_names))
        if truth is not None:
            scores.append(segmenter.segment([sample.image]).anomaly_score[0].ravel())
            truths.append(truth.ravel())
    labels = np.concatenate(truths) if truths else np.zeros(0)
    has_both = bool(truths) and (labels == 1).any() and (labels == 0).any()
    assert has_both == (name != "cityscapes")  # every anomaly benchmark is really compared
    if has_both:
        direct = anomaly_metrics(np.concatenate(scores), labels)
        for key in ("ap", "auroc", "fpr95"):
            assert on_disk["anomaly"][key] == pytest.approx(direct[key], abs=1e-9), key
            assert written["anomaly"][key] == pytest.approx(direct[key], abs=1e-9), key
    else:
        assert not on_disk.get("anomaly")
    if info.has_semantic:
        assert 0.0 <= on_disk["segmentation"]["miou"] <= 1.0
