"""StreetHazards (CARLA street scenes with inserted anomalies), semantic labels with an unknown class.

Layout, as streethazards_train.tar and streethazards_test.tar unpack into one ROOT::

    ROOT/train/images/training/<town>/NAME.png          split train (alias training)
    ROOT/train/annotations/training/<town>/NAME.png
    ROOT/train/images/validation/<town>/NAME.png        split val (alias validation)
    ROOT/train/annotations/validation/<town>/NAME.png
    ROOT/test/images/test/<town>/NAME.png               split test (default; towns t5, t6)
    ROOT/test/annotations/test/<town>/NAME.png

Frames are sorted by town, then file name; a frame's name is ``<town>_<NAME stem>``.

Annotation values are 1-based (hendrycks/anomaly-seg subtracts 1): 1 unlabeled, 2 building, 3 fence,
4 other, 5 pedestrian, 6 pole, 7 road line, 8 road, 9 sidewalk, 10 vegetation, 11 car, 12 wall,
13 traffic sign, 14 anomaly (test split only). Mapping, as in the DenseHybrid reference code
(matejgrcic/DenseHybrid, data/datasets/street_hazards): K = 12 known classes with "unlabeled" kept as a
trained "background" class and "other" ignored:

    value      1   2   3   4    5   6   7   8   9   10  11  12  13  14  0 / >14
    semantic   0   1   2   255  3   4   5   6   7   8   9   10  11  12  255
    anomaly    0   0   0   255  0   0   0   0   0   0   0   0   0   1   255

so the anomaly class is the unknown train id K = 12 of the open-set labels.
"""

from __future__ import annotations

from pathlib import Path

from openset_perception.data.cityscapes import lookup_table, require_dir
from openset_perception.data.image_files import read_png, read_rgb
from openset_perception.data.sample import ANOMALY, INLIER, DatasetInfo, Sample, validate_sample

STREETHAZARDS_CLASSES: tuple[str, ...] = (
    "background",
    "building",
    "fence",
    "pedestrian",
    "pole",
    "road line",
    "road",
    "sidewalk",
    "vegetation",
    "car",
    "wall",
    "traffic sign",
)
# Colours of the dataset's own class list (hendrycks/anomaly-seg).
STREETHAZARDS_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (70, 70, 70),
    (190, 153, 153),
    (220, 20, 60),
    (153, 153, 153),
    (157, 234, 50),
    (128, 64, 128),
    (244, 35, 232),
    (107, 142, 35),
    (0, 0, 142),
    (102, 102, 156),
    (220, 220, 0),
)
OTHER_VALUE = 4
ANOMALY_VALUE = 14
_KNOWN_VALUES = [value for value in range(1, ANOMALY_VALUE) if value != OTHER_VALUE]
VALUE_TO_TRAIN_ID = lookup_table(
    {value: train_id for train_id, value in enumerate(_KNOWN_VALUES)}
    | {ANOMALY_VALUE: len(STREETHAZARDS_CLASSES)}
)
VALUE_TO_ANOMALY = lookup_table(dict.fromkeys(_KNOWN_VALUES, INLIER) | {ANOMALY_VALUE: ANOMALY})
# split name -> (top folder, split folder)
SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "training": ("train", "training"),
    "val": ("train", "validation"),
    "validation": ("train", "validation"),
    "test": ("test", "test"),
}


class StreetHazardsDataset:
    """StreetHazards frames: 12-class train ids (12 = anomaly) and anomaly labels (see module docstring)."""

    def __init__(self, root: str | Path, split: str = "test") -> None:
        if split not in SPLIT_FOLDERS:
            choices = ", ".join(SPLIT_FOLDERS)
            raise ValueError(f"unknown StreetHazards split '{split}'; choose one of {choices}")
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {self.root}")
        top, folder = SPLIT_FOLDERS[split]
        image_dir = require_dir(self.root / top / "images" / folder, f"images of split '{split}'")
        annotation_dir = require_dir(
            self.root / top / "annotations" / folder, f"annotations of split '{split}'"
        )
        self.image_paths = sorted(image_dir.glob("*/*.png"))
        if not self.image_paths:
            raise FileNotFoundError(f"no images found: expected {image_dir}/<town>/*.png")
        self.annotation_paths = [annotation_dir / path.parent.name / path.name for path in self.image_paths]
        for image, annotation in zip(self.image_paths, self.annotation_paths, strict=True):
            if not annotation.is_file():
                raise FileNotFoundError(f"image {image} has no annotation: expected {annotation}")
        self.names = [f"{path.parent.name}_{path.stem}" for path in self.image_paths]
        self.info = DatasetInfo(
            class_names=list(STREETHAZARDS_CLASSES),
            palette=list(STREETHAZARDS_PALETTE),
            has_semantic=True,
            has_anomaly=True,
        )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Sample:
        values = read_png(self.annotation_paths[index])
        sample = Sample(
            image=read_rgb(self.image_paths[index]),
            semantic=VALUE_TO_TRAIN_ID[values],
            anomaly=VALUE_TO_ANOMALY[values],
            name=self.names[index],
        )
        validate_sample(sample, self.info)
        return sample
