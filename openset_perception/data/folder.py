"""Generic on-disk dataset layout, its reader and its writer.

Layout::

    ROOT/dataset.yaml        class_names, palette, optional camera; written by write_folder_dataset
    ROOT/images/NAME.png|jpg RGB
    ROOT/semantic/NAME.png   optional, uint8 train ids, 255 ignore
    ROOT/anomaly/NAME.png    optional, uint8 0 inlier / 1 anomaly / 255 ignore
    ROOT/depth/NAME.png      optional, uint16 millimetres, 0 = invalid
    ROOT/instances/NAME.png  optional, uint16 anomaly instance ids, 0 = none (component-level metrics)

Frames are the image files sorted by NAME. An optional folder that exists must hold a PNG for every
image. Depth is stored as round(metres * 1000); values that are NaN, infinite, below 0.5 mm or beyond
65.535 m are written as 0 and read back as NaN. Far depths are made invalid rather than clipped because
a clipped value would be a wrong distance; per-distance evaluation stops at 50 m, so nothing it uses is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from openset_perception.atomic import atomic_write_png, atomic_write_text
from openset_perception.data.image_files import read_png, read_rgb
from openset_perception.data.sample import DatasetInfo, Sample, validate_sample

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
OPTIONAL_FIELDS = ("semantic", "anomaly", "depth", "instances")
INFO_FILE = "dataset.yaml"
MAX_DEPTH_MM = np.iinfo(np.uint16).max


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct, deterministic colours for datasets that ship no palette."""
    hues = (np.arange(num_classes) * 0.618033988749895) % 1.0
    hsv = np.stack([hues * 180, np.full(num_classes, 200), np.full(num_classes, 230)], axis=-1)
    rgb = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]
    return [(int(r), int(g), int(b)) for r, g, b in rgb]


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """float32 metres (NaN invalid) -> uint16 millimetres (0 invalid), see the module docstring."""
    with np.errstate(invalid="ignore", over="ignore"):
        millimetres = np.rint(depth.astype(np.float64) * 1000.0)
        valid = np.isfinite(millimetres) & (millimetres >= 1) & (millimetres <= MAX_DEPTH_MM)
    return np.where(valid, millimetres, 0).astype(np.uint16)


def millimetres_to_depth(millimetres: np.ndarray) -> np.ndarray:
    """uint16 millimetres (0 invalid) -> float32 metres (NaN invalid)."""
    depth = millimetres.astype(np.float32) / np.float32(1000.0)
    depth[millimetres == 0] = np.nan
    return depth


def read_info_file(path: Path) -> DatasetInfo:
    """Read class names, palette and camera from a dataset.yaml."""
    with path.open() as stream:
        content: Any = yaml.safe_load(stream)
    if not isinstance(content, dict) or not isinstance(content.get("class_names"), list):
        raise ValueError(f"{path}: expected a mapping with a 'class_names' list")
    class_names = [str(name) for name in content["class_names"]]
    palette = content.get("palette") or default_palette(len(class_names))
    return DatasetInfo(class_names=class_names, palette=palette, camera=content.get("camera"))


class FolderDataset:
    """Reads the folder layout described in the module docstring.

    class_names / palette / camera override dataset.yaml; class_names is required when it is missing.
    """

    def __init__(
        self,
        root: str | Path,
        class_names: Sequence[str] | None = None,
        palette: Sequence[tuple[int, int, int]] | None = None,
        camera: dict[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} does not exist or is not a directory")
        image_dir = self.root / "images"
        if not image_dir.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} has no images/ folder ({image_dir})")
        self._image_paths = self._index_images(image_dir)
        self.names = sorted(self._image_paths)
        self._field_dirs = {
            field: self.root / field for field in OPTIONAL_FIELDS if (self.root / field).is_dir()
        }
        self.info = self._resolve_info(class_names, palette, camera)

    @staticmethod
    def _index_images(image_dir: Path) -> dict[str, Path]:
        paths: dict[str, Path] = {}
        for path in image_dir.iterdir():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.stem in paths:
                raise ValueError(f"two images named {path.stem!r} in {image_dir}: {paths[path.stem]}, {path}")
            paths[path.stem] = path
        return paths

    def _resolve_info(
        self,
        class_names: Sequence[str] | None,
        palette: Sequence[tuple[int, int, int]] | None,
        camera: dict[str, Any] | None,
    ) -> DatasetInfo:
        info_path = self.root / INFO_FILE
        from_file = read_info_file(info_path) if info_path.is_file() else None
        if class_names is not None:
            names = list(class_names)
        elif from_file is not None:
            names = from_file.class_names
        else:
            raise FileNotFoundError(f"{info_path} does not exist; create it or pass class_names")
        if palette is not None:
            colours = list(palette)
        elif from_file is not None and len(from_file.palette) == len(names):
            colours = from_file.palette
        else:
            colours = default_palette(len(names))
        return DatasetInfo(
            class_names=names,
            palette=colours,
            has_semantic="semantic" in self._field_dirs,
            has_anomaly="anomaly" in self._field_dirs,
            has_depth="depth" in self._field_dirs,
            camera=camera if camera is not None else (from_file.camera if from_file else None),
        )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} frames in {self.root}")
        name = self.names[index]
        sample = Sample(image=read_rgb(self._image_paths[name]), name=name)
        if "semantic" in self._field_dirs:
            sample.semantic = read_png(self._field_dirs["semantic"] / f"{name}.png", np.uint8)
        if "anomaly" in self._field_dirs:
            sample.anomaly = read_png(self._field_dirs["anomaly"] / f"{name}.png", np.uint8)
        if "depth" in self._field_dirs:
            millimetres = read_png(self._field_dirs["depth"] / f"{name}.png", np.uint16)
            sample.depth = millimetres_to_depth(millimetres)
        if "instances" in self._field_dirs:
            sample.instances = read_png(self._field_dirs["instances"] / f"{name}.png", np.uint16)
        validate_sample(sample)
        return sample


def write_folder_dataset(samples: Iterable[Sample], root: str | Path, info: DatasetInfo) -> Path:
    """Write samples (streamed, any iterable) and info in the folder layout; returns the root.

    Which optional folders are written follows the first sample; every later sample must have the same
    fields. Images are written as PNG, so the round trip is lossless.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    header: dict[str, Any] = {
        "class_names": list(info.class_names),
        "palette": [list(colour) for colour in info.palette],
    }
    if info.camera is not None:
        header["camera"] = dict(info.camera)
    atomic_write_text(root / INFO_FILE, yaml.safe_dump(header, sort_keys=False))

    present: tuple[str, ...] | None = None
    seen_names: set[str] = set()
    for sample in samples:
        validate_sample(sample, info)
        name = sample.name
        if not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"sample name {name!r} is not a plain file name")
        if name in seen_names:
            raise ValueError(f"duplicate sample name {name!r}")
        seen_names.add(name)
        fields = tuple(field for field in OPTIONAL_FIELDS if getattr(sample, field) is not None)
        if present is None:
            present = fields
            for field in present:
                (root / field).mkdir(exist_ok=True)
        elif fields != present:
            raise ValueError(f"sample {name!r} has fields {fields}, earlier samples had {present}")
        atomic_write_png(root / "images" / f"{name}.png", cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
        if sample.semantic is not None:
            atomic_write_png(root / "semantic" / f"{name}.png", sample.semantic)
        if sample.anomaly is not None:
            atomic_write_png(root / "anomaly" / f"{name}.png", sample.anomaly)
        if sample.depth is not None:
            atomic_write_png(root / "depth" / f"{name}.png", depth_to_millimetres(sample.depth))
        if sample.instances is not None:
            atomic_write_png(root / "instances" / f"{name}.png", sample.instances.astype(np.uint16))
    return root
