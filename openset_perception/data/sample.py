"""The record every dataset reader yields, the dataset description, and the Dataset protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

IGNORE_LABEL = 255
ANOMALY = 1
INLIER = 0


@dataclass
class Sample:
    """One frame: image plus whichever ground truths the dataset has.

    image     HxWx3 uint8 RGB.
    semantic  HxW uint8 train ids, 255 ignore, K = unknown where the dataset has K+1 labels; or None.
    anomaly   HxW uint8, 1 anomaly / 0 inlier / 255 ignore; or None.
    depth     HxW float32 metres, NaN where invalid; or None.
    instances HxW integer instance ids of the anomalies (0 = none), where a dataset has them; or None.
    """

    image: np.ndarray
    semantic: np.ndarray | None = None
    anomaly: np.ndarray | None = None
    depth: np.ndarray | None = None
    name: str = ""
    instances: np.ndarray | None = None


@dataclass
class DatasetInfo:
    """What a dataset provides.

    class_names are the K known classes (train ids 0..K-1); palette has one RGB colour per known class.
    camera holds optional intrinsics/extrinsics such as {"focal_px": ..., "height_m": ...}.
    """

    class_names: list[str]
    palette: list[tuple[int, int, int]]
    has_semantic: bool = False
    has_anomaly: bool = False
    has_depth: bool = False
    camera: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __post_init__(self) -> None:
        self.palette = [tuple(int(c) for c in colour) for colour in self.palette]  # type: ignore[misc]
        if len(self.palette) != len(self.class_names):
            raise ValueError(
                f"palette has {len(self.palette)} colours but there are {len(self.class_names)} classes"
            )
        for colour in self.palette:
            if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
                raise ValueError(f"palette colour {colour} is not an RGB triple in 0..255")


@runtime_checkable
class Dataset(Protocol):
    """Random-access collection of Samples."""

    info: DatasetInfo

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


def validate_sample(sample: Sample, info: DatasetInfo | None = None) -> None:
    """Raise ValueError with a clear message if a Sample's arrays have the wrong shape or dtype.

    With info, also checks that semantic ids are < K+1 or 255 and that anomaly values are 0, 1 or 255.
    """
    label = f"sample {sample.name!r}"
    image = sample.image
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"{label}: image must be an HxWx3 array, got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{label}: image must be uint8, got {image.dtype}")
    height, width = image.shape[:2]
    for field_name, dtype in (("semantic", np.uint8), ("anomaly", np.uint8), ("depth", np.float32)):
        array = getattr(sample, field_name)
        if array is None:
            continue
        if not isinstance(array, np.ndarray) or array.shape != (height, width):
            shape = getattr(array, "shape", type(array).__name__)
            raise ValueError(f"{label}: {field_name} must have shape {(height, width)}, got {shape}")
        if array.dtype != dtype:
            raise ValueError(f"{label}: {field_name} must be {np.dtype(dtype)}, got {array.dtype}")
    instances = sample.instances
    if instances is not None and (
        not isinstance(instances, np.ndarray)
        or instances.shape != (height, width)
        or instances.dtype.kind not in "iu"
    ):
        shape = getattr(instances, "shape", type(instances).__name__)
        raise ValueError(
            f"{label}: instances must be an integer array of shape {(height, width)}, got {shape}"
        )
    if sample.anomaly is not None:
        anomaly = sample.anomaly
        bad = (anomaly != INLIER) & (anomaly != ANOMALY) & (anomaly != IGNORE_LABEL)
        if bad.any():
            found = np.unique(anomaly[bad]).tolist()
            raise ValueError(f"{label}: anomaly values must be 0, 1 or 255, found {found}")
    if info is not None and sample.semantic is not None:
        bad_ids = sample.semantic[(sample.semantic > info.num_classes) & (sample.semantic != IGNORE_LABEL)]
        if bad_ids.size:
            raise ValueError(
                f"{label}: semantic ids must be < {info.num_classes + 1} or 255, "
                f"found {np.unique(bad_ids).tolist()}"
            )
