"""Label taxonomies: ``--label-map`` maps the data's semantic ids to the model's; without it, labels the
model does not know cost the semantic metrics only, with one warning per run."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_card, make_tiny_model
from test_bags import assert_close

from openset_perception.bags.writer import START_STAMP_NS, BagWriter, write_dataset_bag, write_sample
from openset_perception.checkpoint import save_checkpoint
from openset_perception.cli.main import main
from openset_perception.config import ConfigError
from openset_perception.data import STREET_CLASSES, STREET_PALETTE, SyntheticStreets, write_folder_dataset
from openset_perception.engine import Segmenter
from openset_perception.evaluation.evaluate import evaluate_dataset
from openset_perception.evaluation.label_map import load_label_map

FRAMES = 6
K = len(STREET_CLASSES)
OFFSET = 20  # the "dataset" numbers the street classes from 20 on: none of its ids is the model's
WARNING = "outside the model's"


class ListDataset:
    def __init__(self, samples, info) -> None:
        self.samples, self.info = list(samples), info

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.samples[index]


@pytest.fixture(scope="module")
def streets() -> ListDataset:
    dataset = SyntheticStreets(FRAMES, seed=5, height=48, width=64, anomalies=True)
    return ListDataset([dataset[i] for i in range(FRAMES)], dataset.info)


def _renumbered(streets: ListDataset) -> ListDataset:
    """The same frames with semantic ids 0..K (K = unknown) moved to OFFSET..OFFSET+K; 255 stays."""
    samples = []
    for sample in streets.samples:
        semantic = np.where(sample.semantic == 255, 255, sample.semantic + OFFSET).astype(np.uint8)
        samples.append(dataclasses.replace(sample, semantic=semantic))
    return ListDataset(samples, streets.info)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, streets: ListDataset) -> Path:
    card = make_tiny_card(class_names=list(STREET_CLASSES), palette=STREET_PALETTE)
    model = make_tiny_model(card)
    scores = Segmenter(model, card, device="cpu").segment([streets[0].image]).anomaly_score
    card.threshold = float(np.quantile(scores, 0.8))
    path = tmp_path_factory.mktemp("label_map_checkpoint") / "streets_tiny.safetensors"
    save_checkpoint(path, model, card)
    return path


@pytest.fixture(scope="module")
def reference(checkpoint: Path, streets: ListDataset, tmp_path_factory: pytest.TempPathFactory) -> dict:
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
    out = tmp_path_factory.mktemp("reference")
    return evaluate_dataset(segmenter, streets, out, mode="exact", progress=False)


def _label_map_file(path: Path) -> Path:
    path.write_text("".join(f"{OFFSET + i}: {i}\n" for i in range(K + 1)))
    return path


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and WARNING in r.getMessage()
    ]


def _run(command: list[str], out: Path) -> dict:
    assert main([*command, "--out", str(out), "--exact", "--device", "cpu", "--no-progress"]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_eval_bag_keeps_anomaly_metrics_and_warns_once_without_a_label_map(
    checkpoint: Path, streets: ListDataset, reference: dict, tmp_path: Path, caplog
) -> None:
    bag = tmp_path / "bag"
    with BagWriter(bag) as writer:  # another tool's bag: labels in its own ids, no class list
        for index, sample in enumerate(_renumbered(streets).samples):
            write_sample(writer, sample, "camera", START_STAMP_NS + index * 100_000_000)
    command = ["eval-bag", str(bag), "--checkpoint", str(checkpoint)]
    with caplog.at_level(logging.WARNING):
        metrics = _run(command, tmp_path / "plain")
    assert len(_warnings(caplog)) == 1
    assert metrics["frames"]["evaluated"] == FRAMES and metrics["frames"]["skipped"] == 0
    assert metrics["frames"]["semantic labels unusable"] == FRAMES
    assert metrics["segmentation"] is None
    assert_close(metrics["anomaly"], reference["anomaly"], "anomaly")

    mapped = _run([*command, "--label-map", str(_label_map_file(tmp_path / "map.yaml"))], tmp_path / "mapped")
    assert_close(mapped["segmentation"], reference["segmentation"], "segmentation")
    assert_close(mapped["anomaly"], reference["anomaly"], "anomaly")
    assert mapped["settings"]["label_map"] == str(tmp_path / "map.yaml")
    assert "semantic labels unusable" not in mapped["frames"]


def test_evaluate_maps_a_dataset_with_another_class_list(
    checkpoint: Path, streets: ListDataset, reference: dict, tmp_path: Path, caplog
) -> None:
    """A dataset declaring K + OFFSET classes: without a map one warning and anomaly metrics only."""
    renumbered = _renumbered(streets)
    names = [f"class_{i}" for i in range(K + OFFSET)]
    info = dataclasses.replace(
        streets.info, class_names=names, palette=[(i, i, i) for i in range(K + OFFSET)]
    )
    root = write_folder_dataset(renumbered.samples, tmp_path / "data", info)
    command = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--root", str(root)]
    with caplog.at_level(logging.WARNING):
        plain = _run(command, tmp_path / "plain")
    assert len([r for r in caplog.records if "semantic metrics skip" in r.getMessage()]) == 1
    assert plain["segmentation"] is None and plain["frames"]["semantic labels unusable"] == FRAMES
    assert_close(plain["anomaly"], reference["anomaly"], "anomaly")

    mapped = _run([*command, "--label-map", str(_label_map_file(tmp_path / "map.yaml"))], tmp_path / "mapped")
    assert_close(mapped["segmentation"], reference["segmentation"], "segmentation")
    assert_close(mapped["anomaly"], reference["anomaly"], "anomaly")


def test_ids_the_map_does_not_list_are_ignored(
    streets: ListDataset, checkpoint: Path, tmp_path: Path
) -> None:
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
    partial = tmp_path / "partial.yaml"
    partial.write_text("0: 0\n1: 1\n")  # only road and sidewalk
    label_map = load_label_map(partial, K)
    labels = np.array([[0, 1, 2], [255, 7, 1]], np.uint8)
    assert label_map(labels).tolist() == [[0, 1, 255], [255, 255, 1]]
    metrics = evaluate_dataset(segmenter, streets, tmp_path / "eval", progress=False, label_map=label_map)
    assert set(metrics["segmentation"]["per_class_iou"]) == set(STREET_CLASSES)
    assert metrics["frames"]["with_semantic_gt"] == FRAMES


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("road: 0\n", "key 'road'"),
        ("0: 9\n", "key 0: 9 is not a class"),
        ("3: -1\n", "key 3: -1"),
        ("255: 0\n", "key 255"),
        ("true: 0\n", "key True"),
        ("4: car\n", "key 4: 'car'"),
        ("- 0\n- 1\n", "non-empty mapping"),
        ("", "non-empty mapping"),
        ("0: [1\n", "not valid YAML"),
    ],
)
def test_a_bad_label_map_names_the_bad_key(
    content: str, named: str, checkpoint: Path, streets: ListDataset, tmp_path: Path, capsys
) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"map\.yaml") as caught:
        load_label_map(path, K)
    assert named in str(caught.value)
    bag = tmp_path / "bag"
    write_dataset_bag(streets, bag, max_frames=1, progress=False)
    out = tmp_path / "out"
    command = [
        "eval-bag",
        str(bag),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--label-map",
        str(path),
    ]
    assert main(command) == 2
    assert named in capsys.readouterr().err
    assert not out.exists()
