"""Cityscapes, and the Cityscapes file conventions the other benchmark readers share.

Layout (the official archives leftImg8bit_trainvaltest, gtFine_trainvaltest and, for depth,
disparity_trainvaltest and camera_trainvaltest unpacked into one ROOT)::

    ROOT/leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png
    ROOT/gtFine/<split>/<city>/<frame>_gtFine_labelTrainIds.png  used when present: 19 train ids, 255 ignore
    ROOT/gtFine/<split>/<city>/<frame>_gtFine_labelIds.png       otherwise, mapped by CITYSCAPES_LABELS
    ROOT/disparity/<split>/<city>/<frame>_disparity.png          optional; depth when this folder exists
    ROOT/camera/<split>/<city>/<frame>_camera.json               required with disparity/

<split> is train, val (default) or test. Frames are sorted by city, then file name; a frame's name is
``<frame>`` (the city is part of it). Depth follows the Cityscapes README: disparity = (p - 1) / 256 for
16-bit PNG values p > 0 (p = 0 invalid), depth = baseline * fx / disparity in metres, NaN where invalid.
With depth, ``info.camera`` holds ``focal_px`` and ``baseline_m`` of the first frame's camera file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from openset_perception.data.image_files import read_png, read_rgb
from openset_perception.data.sample import IGNORE_LABEL, DatasetInfo, Sample, validate_sample
from openset_perception.depth import depth_from_disparity

IMAGE_SUFFIX = "_leftImg8bit.png"
DISPARITY_SUFFIX = "_disparity.png"
CAMERA_SUFFIX = "_camera.json"

# (label id, name, train id) from the official cityscapesScripts labels.py; "license plate" (id -1)
# never occurs in the labelIds PNGs.
CITYSCAPES_LABELS: tuple[tuple[int, str, int], ...] = (
    (0, "unlabeled", 255),
    (1, "ego vehicle", 255),
    (2, "rectification border", 255),
    (3, "out of roi", 255),
    (4, "static", 255),
    (5, "dynamic", 255),
    (6, "ground", 255),
    (7, "road", 0),
    (8, "sidewalk", 1),
    (9, "parking", 255),
    (10, "rail track", 255),
    (11, "building", 2),
    (12, "wall", 3),
    (13, "fence", 4),
    (14, "guard rail", 255),
    (15, "bridge", 255),
    (16, "tunnel", 255),
    (17, "pole", 5),
    (18, "polegroup", 255),
    (19, "traffic light", 6),
    (20, "traffic sign", 7),
    (21, "vegetation", 8),
    (22, "terrain", 9),
    (23, "sky", 10),
    (24, "person", 11),
    (25, "rider", 12),
    (26, "car", 13),
    (27, "truck", 14),
    (28, "bus", 15),
    (29, "caravan", 255),
    (30, "trailer", 255),
    (31, "train", 16),
    (32, "motorcycle", 17),
    (33, "bicycle", 18),
)
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(
    name for _, name, train_id in sorted(CITYSCAPES_LABELS, key=lambda label: label[2]) if train_id != 255
)
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)


def lookup_table(mapping: Mapping[int, int], default: int = IGNORE_LABEL) -> np.ndarray:
    """A 256-entry uint8 table: ``table[labels]`` maps every uint8 value, unlisted values to ``default``."""
    table = np.full(256, default, dtype=np.uint8)
    for source, target in mapping.items():
        table[source] = target
    return table


LABEL_ID_TO_TRAIN_ID = lookup_table({label_id: train_id for label_id, _, train_id in CITYSCAPES_LABELS})


def cityscapes_info(**fields: Any) -> DatasetInfo:
    """DatasetInfo with the 19 Cityscapes classes (also for benchmarks meant for Cityscapes models)."""
    return DatasetInfo(class_names=list(CITYSCAPES_CLASSES), palette=list(CITYSCAPES_PALETTE), **fields)


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a FileNotFoundError naming it."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: expected the folder {path}")
    return path


@dataclass(frozen=True)
class StereoCamera:
    """The parts of a Cityscapes-format camera JSON that depth needs."""

    baseline_m: float
    fx: float
    fy: float


def read_camera(path: Path) -> StereoCamera:
    """``{"extrinsic": {"baseline": ...}, "intrinsic": {"fx": ..., "fy": ...}}`` as written by Cityscapes."""
    try:
        content = json.loads(path.read_text())
        extrinsic, intrinsic = content["extrinsic"], content["intrinsic"]
        return StereoCamera(float(extrinsic["baseline"]), float(intrinsic["fx"]), float(intrinsic["fy"]))
    except (KeyError, TypeError, ValueError) as error:
        expected = "extrinsic.baseline, intrinsic.fx and intrinsic.fy"
        raise ValueError(f"{path}: expected {expected} ({error!r})") from error


def cityscapes_depth(disparity_png: np.ndarray, camera: StereoCamera) -> np.ndarray:
    """Cityscapes disparity encoding: d = (p - 1) / 256 for p > 0; depth = baseline * fx / d, NaN invalid."""
    disparity = np.where(disparity_png > 0, (disparity_png.astype(np.float32) - 1) / 256, 0)
    return depth_from_disparity(disparity, camera.baseline_m, camera.fx)


@dataclass(frozen=True)
class StereoFrame:
    """The files of one frame in a Cityscapes-format split; disparity and camera are None without depth."""

    name: str
    image: Path
    label: Path
    disparity: Path | None
    camera: Path | None


def index_stereo_split(
    root: Path, split: str, label_folder: str, label_suffixes: Sequence[str]
) -> list[StereoFrame]:
    """Frames of ROOT/leftImg8bit/<split>/<group>/*_leftImg8bit.png, sorted by group and file name.

    A frame's label is the first of ``label_suffixes`` that exists in ROOT/<label_folder>/<split>/<group>.
    Disparity and camera files are indexed when ROOT/disparity/<split> exists; then every frame needs both.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    image_dir = require_dir(root / "leftImg8bit" / split, f"images of split '{split}'")
    label_dir = require_dir(root / label_folder / split, f"labels of split '{split}'")
    disparity_dir = root / "disparity" / split
    with_depth = disparity_dir.is_dir()
    camera_dir = require_dir(root / "camera" / split, "camera files") if with_depth else None
    image_paths = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not image_paths:
        raise FileNotFoundError(f"no images found: expected {image_dir}/<group>/*{IMAGE_SUFFIX}")
    frames = []
    for image_path in image_paths:
        group, name = image_path.parent.name, image_path.name[: -len(IMAGE_SUFFIX)]
        candidates = [label_dir / group / f"{name}{suffix}" for suffix in label_suffixes]
        label = next((path for path in candidates if path.is_file()), None)
        if label is None:
            expected = " or ".join(map(str, candidates))
            raise FileNotFoundError(f"no label for frame {name}: expected {expected}")
        disparity = camera = None
        if camera_dir is not None:
            disparity = disparity_dir / group / f"{name}{DISPARITY_SUFFIX}"
            camera = camera_dir / group / f"{name}{CAMERA_SUFFIX}"
            for path in (disparity, camera):
                if not path.is_file():
                    raise FileNotFoundError(f"frame {name} has no {path.name}: expected {path}")
        frames.append(StereoFrame(name, image_path, label, disparity, camera))
    return frames


def first_camera_info(
    frames: Sequence[StereoFrame], focal: Callable[[StereoCamera], float]
) -> dict[str, float] | None:
    """``focal_px`` and ``baseline_m`` of the first frame's camera file; None without depth."""
    if frames[0].camera is None:
        return None
    camera = read_camera(frames[0].camera)
    return {"focal_px": focal(camera), "baseline_m": camera.baseline_m}


class CityscapesDataset:
    """Cityscapes frames: 19-class train ids and, where disparity is present, depth (see module docstring)."""

    LABEL_SUFFIXES = ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png")

    def __init__(self, root: str | Path, split: str = "val") -> None:
        self.root = Path(root)
        self.split = split
        self.frames = index_stereo_split(self.root, split, "gtFine", self.LABEL_SUFFIXES)
        camera = first_camera_info(self.frames, lambda stereo: stereo.fx)
        self.info = cityscapes_info(has_semantic=True, has_depth=camera is not None, camera=camera)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Sample:
        frame = self.frames[index]
        labels = read_png(frame.label)
        is_train_ids = frame.label.name.endswith(self.LABEL_SUFFIXES[0])
        sample = Sample(
            image=read_rgb(frame.image),
            semantic=labels if is_train_ids else LABEL_ID_TO_TRAIN_ID[labels],
            name=frame.name,
        )
        if frame.disparity is not None and frame.camera is not None:
            sample.depth = cityscapes_depth(read_png(frame.disparity, np.uint16), read_camera(frame.camera))
        validate_sample(sample, self.info)
        return sample
