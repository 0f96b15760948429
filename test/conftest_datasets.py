"""Tiny fake copies of the public benchmarks' on-disk layouts, with the Samples their readers must yield.

The expected labels and depths are computed here from label tables transcribed independently of the
readers (from the datasets' documentation), so a test comparing a reader's output with ``samples`` checks
the reader's mapping. Use the ``fake_dataset`` fixture: ``fake = fake_dataset("cityscapes")``, then
``open_dataset(fake.name, fake.root, fake.split)`` must yield ``fake.samples`` in order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from openset_perception.data.sample import Sample

HEIGHT, WIDTH = 33, 65

# Cityscapes labelId -> trainId for the 19 evaluated classes; every other id is ignore (255).
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES_CAMERA = {"baseline": 0.209313, "fx": 2262.52, "fy": 2265.3017905988554}
# LostAndFound: free space (1) inlier, hazards anomaly, non-hazard objects / background / other ignore.
LAF_NON_HAZARDS = {31, 33, 34, 36, 37, 38, 39}
LAF_HAZARDS = set(range(2, 44)) - LAF_NON_HAZARDS
LAF_CAMERA = {"baseline": 0.21409, "fx": 2268.36, "fy": 2225.54}
# StreetHazards annotation value -> (train id, anomaly): 'other' (4), 0 and > 14 ignored, 14 = anomaly.
STREETHAZARDS_VALUES = {
    1: (0, 0), 2: (1, 0), 3: (2, 0), 5: (3, 0), 6: (4, 0), 7: (5, 0), 8: (6, 0),
    9: (7, 0), 10: (8, 0), 11: (9, 0), 12: (10, 0), 13: (11, 0), 14: (12, 1),
}  # fmt: skip


@dataclass
class FakeDataset:
    """A fake benchmark on disk: open it as ``open_dataset(name, root, split)``; samples in reading order."""

    name: str
    root: Path
    split: str | None
    samples: list[Sample]
    camera: dict[str, float] | None = None


def _map(values: np.ndarray, table: Mapping[int, int]) -> np.ndarray:
    mapped = np.full(values.shape, 255, np.uint8)
    for source, target in table.items():
        mapped[values == source] = target
    return mapped


def _write(path: Path, array: np.ndarray, *params: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array, list(params)), path


def _write_rgb(path: Path, rgb: np.ndarray) -> np.ndarray:
    """Write an RGB image (WebP lossless); returns the RGB a reader must return (JPEG: the decoded file)."""
    params = (cv2.IMWRITE_WEBP_QUALITY, 101) if path.suffix == ".webp" else ()
    _write(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), *params)
    if path.suffix == ".jpg":
        return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return rgb


def _random_rgb(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _write_camera(path: Path, camera: Mapping[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "extrinsic": {"baseline": camera["baseline"], "pitch": 0.05, "roll": 0.0, "x": 1.7, "yaw": 0.0},
        "intrinsic": {"fx": camera["fx"], "fy": camera["fy"], "u0": WIDTH / 2, "v0": HEIGHT / 2},
    }
    path.write_text(json.dumps(content))


def _random_disparity_png(rng: np.random.Generator) -> np.ndarray:
    """uint16 disparity PNG values; row 0 starts with 0, 1, 257 for hand-checked pixels."""
    png = rng.integers(0, 30000, (HEIGHT, WIDTH)).astype(np.uint16)
    png[rng.random((HEIGHT, WIDTH)) < 0.1] = 0
    png[0, :3] = [0, 1, 257]
    return png


def _expected_depth(disparity: np.ndarray, baseline: float, focal: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        depth = baseline * focal / disparity.astype(np.float64)
    depth[disparity <= 0] = np.nan
    return depth.astype(np.float32)


def write_fake_cityscapes(
    root: Path, split: str = "val", depth: bool = True, label_kind: str = "labelIds"
) -> FakeDataset:
    """Three frames in two cities, written out of order. Labels: random label ids 0-33, row 0 of every
    frame starting with ids 7, 0, 33, 9 (train ids 0, 255, 18, 255), or train ids with label_kind
    'labelTrainIds'. Depth: Cityscapes disparity (p - 1) / 256 and depth = baseline * fx / disparity."""
    rng = np.random.default_rng(1)
    written = ["zurich_000000_000019", "aachen_000001_000019", "aachen_000000_000019"]
    samples = {}
    for name in written:
        city = name.split("_")[0]
        image = _write_rgb(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", _random_rgb(rng))
        label_ids = rng.integers(0, 34, (HEIGHT, WIDTH)).astype(np.uint8)
        label_ids[0, :4] = [7, 0, 33, 9]
        semantic = _map(label_ids, CITYSCAPES_TRAIN_IDS)
        stored = label_ids if label_kind == "labelIds" else semantic
        _write(root / "gtFine" / split / city / f"{name}_gtFine_{label_kind}.png", stored)
        sample = Sample(image=image, semantic=semantic, name=name)
        if depth:
            png = _random_disparity_png(rng)
            _write(root / "disparity" / split / city / f"{name}_disparity.png", png)
            _write_camera(root / "camera" / split / city / f"{name}_camera.json", CITYSCAPES_CAMERA)
            disparity = np.where(png > 0, (png.astype(np.float64) - 1) / 256, 0)
            sample.depth = _expected_depth(disparity, CITYSCAPES_CAMERA["baseline"], CITYSCAPES_CAMERA["fx"])
        samples[name] = sample
    camera = (
        {"focal_px": CITYSCAPES_CAMERA["fx"], "baseline_m": CITYSCAPES_CAMERA["baseline"]} if depth else None
    )
    return FakeDataset("cityscapes", root, split, [samples[name] for name in sorted(samples)], camera)


def write_fake_lostandfound(
    root: Path, split: str = "test", depth: bool = True, label_kind: str = "labelIds"
) -> FakeDataset:
    """Three frames in two sequences, written out of order. Labels: random label ids 0-49 (row 0 starting
    0, 1, 2, 31, 43, 44 -> anomaly 255, 0, 1, 255, 1, 255), or train ids 0, 1, 2, 255 with label_kind
    'labelTrainIds'. Depth: disparity = p / 256, depth = baseline * (fx + fy) / 2 / disparity."""
    rng = np.random.default_rng(2)
    written = [
        "04_Maurener_Weg_8_000002_000140",
        "01_Hanns_Klemm_Str_45_000000_000200",
        "01_Hanns_Klemm_Str_45_000000_000100",
    ]
    samples = {}
    for name in written:
        sequence = name.rsplit("_", 2)[0]
        image = _write_rgb(
            root / "leftImg8bit" / split / sequence / f"{name}_leftImg8bit.png", _random_rgb(rng)
        )
        if label_kind == "labelIds":
            labels = rng.integers(0, 50, (HEIGHT, WIDTH)).astype(np.uint8)
            labels[0, :6] = [0, 1, 2, 31, 43, 44]
            anomaly = _map(labels, {1: 0} | dict.fromkeys(LAF_HAZARDS, 1))
        else:
            labels = rng.choice(np.array([0, 1, 2, 255], np.uint8), (HEIGHT, WIDTH))
            anomaly = _map(labels, {1: 0, 2: 1})
        _write(root / "gtCoarse" / split / sequence / f"{name}_gtCoarse_{label_kind}.png", labels)
        sample = Sample(image=image, anomaly=anomaly, name=name)
        if depth:
            png = _random_disparity_png(rng)
            _write(root / "disparity" / split / sequence / f"{name}_disparity.png", png)
            _write_camera(root / "camera" / split / sequence / f"{name}_camera.json", LAF_CAMERA)
            focal = (LAF_CAMERA["fx"] + LAF_CAMERA["fy"]) / 2
            sample.depth = _expected_depth(png.astype(np.float64) / 256, LAF_CAMERA["baseline"], focal)
        samples[name] = sample
    camera = None
    if depth:
        camera = {"focal_px": (LAF_CAMERA["fx"] + LAF_CAMERA["fy"]) / 2, "baseline_m": LAF_CAMERA["baseline"]}
    return FakeDataset("lostandfound", root, split, [samples[name] for name in sorted(samples)], camera)


def _random_anomaly(rng: np.random.Generator) -> np.ndarray:
    return rng.choice(np.array([0, 1, 255], np.uint8), (HEIGHT, WIDTH), p=[0.6, 0.2, 0.2])


def write_fake_fishyscapes(root: Path, subset: str = "LostAndFound", nested: bool = False) -> FakeDataset:
    """Three frames in ROOT/original + ROOT/labels (ROOT/<subset>/... when nested), labels 0 / 1 / 255."""
    rng = np.random.default_rng(3)
    folder = root / subset if nested else root
    samples = {}
    for name in ["0002_04_Maurener_Weg_8_000002_000140", "0000_01_Hanns_Klemm_Str_000100", "0001_x"]:
        image = _write_rgb(folder / "original" / f"{name}.png", _random_rgb(rng))
        anomaly = _random_anomaly(rng)
        _write(folder / "labels" / f"{name}.png", anomaly)
        samples[name] = Sample(image=image, anomaly=anomaly, name=name)
    registry_name = "fishyscapes_laf" if subset == "LostAndFound" else "fishyscapes_static"
    return FakeDataset(registry_name, root, None, [samples[name] for name in sorted(samples)])


def write_fake_smiyc(root: Path, track: str = "anomaly") -> FakeDataset:
    """Two labelled validation frames plus one unlabelled test image (left out by the reader).

    AnomalyTrack images are .jpg (expected image: the decoded JPEG) and .png; ObstacleTrack images are
    lossless .webp.
    """
    rng = np.random.default_rng(4)
    if track == "anomaly":
        labelled, unlabelled = ["validation0001.png", "validation0000.jpg"], "test0000.jpg"
    else:
        labelled, unlabelled = ["validation_12.webp", "validation_1.webp"], "test_1.webp"
    _write_rgb(root / "images" / unlabelled, _random_rgb(rng))
    samples = {}
    for file_name in labelled:
        name = Path(file_name).stem
        image = _write_rgb(root / "images" / file_name, _random_rgb(rng))
        anomaly = _random_anomaly(rng)
        _write(root / "labels_masks" / f"{name}_labels_semantic.png", anomaly)
        samples[name] = Sample(image=image, anomaly=anomaly, name=name)
    return FakeDataset(f"smiyc_{track}", root, None, [samples[name] for name in sorted(samples)])


def write_fake_streethazards(root: Path, split: str = "test") -> FakeDataset:
    """Three frames in two towns (RGBA images, as CARLA writes them), annotation values 0-15 with row 0
    starting 14, 4, 1, 13, 0, 5 (semantic 12, 255, 0, 11, 255, 3; anomaly 1, 255, 0, 0, 255, 0)."""
    rng = np.random.default_rng(5)
    folders = {"test": ("test", "test"), "train": ("train", "training"), "val": ("train", "validation")}
    top, folder = folders[split]
    towns = ("t6", "t5") if split == "test" else ("t2", "t1")
    samples = {}
    for town, file_name in [(towns[0], "100.png"), (towns[1], "300.png"), (towns[1], "1000.png")]:
        rgb = _random_rgb(rng)
        bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
        _write(root / top / "images" / folder / town / file_name, bgra)
        values = rng.integers(0, 16, (HEIGHT, WIDTH)).astype(np.uint8)
        values[0, :6] = [14, 4, 1, 13, 0, 5]
        _write(root / top / "annotations" / folder / town / file_name, values)
        semantic = _map(values, {value: ids[0] for value, ids in STREETHAZARDS_VALUES.items()})
        anomaly = _map(values, {value: ids[1] for value, ids in STREETHAZARDS_VALUES.items()})
        name = f"{town}_{Path(file_name).stem}"
        samples[f"{town}/{file_name}"] = Sample(image=rgb, semantic=semantic, anomaly=anomaly, name=name)
    return FakeDataset("streethazards", root, split, [samples[key] for key in sorted(samples)])


FAKE_BUILDERS: dict[str, Callable[..., FakeDataset]] = {
    "cityscapes": write_fake_cityscapes,
    "lostandfound": write_fake_lostandfound,
    "fishyscapes_laf": partial(write_fake_fishyscapes, subset="LostAndFound"),
    "fishyscapes_static": partial(write_fake_fishyscapes, subset="Static"),
    "smiyc_anomaly": partial(write_fake_smiyc, track="anomaly"),
    "smiyc_obstacle": partial(write_fake_smiyc, track="obstacle"),
    "streethazards": write_fake_streethazards,
}


@pytest.fixture
def fake_dataset(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., FakeDataset]:
    """``fake_dataset(name, **options)`` writes a fake copy of benchmark ``name`` (a registry name in
    FAKE_BUILDERS; options as the matching write_fake_* function) into a fresh folder."""

    def make(name: str, **options: Any) -> FakeDataset:
        return FAKE_BUILDERS[name](tmp_path_factory.mktemp(name), **options)

    return make
