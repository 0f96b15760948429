"""LostAndFound: small road obstacles, with stereo depth for per-distance evaluation.

Layout (the official archives unpacked into one ROOT, Cityscapes-style)::

    ROOT/leftImg8bit/<split>/<sequence>/<frame>_leftImg8bit.png
    ROOT/gtCoarse/<split>/<sequence>/<frame>_gtCoarse_labelTrainIds.png  used when present
    ROOT/gtCoarse/<split>/<sequence>/<frame>_gtCoarse_labelIds.png       otherwise
    ROOT/disparity/<split>/<sequence>/<frame>_disparity.png              optional; depth when it exists
    ROOT/camera/<split>/<sequence>/<frame>_camera.json                   required with disparity/

<split> is train or test (default test; Fishyscapes Lost & Found is a subset of test). Frames are sorted by
sequence, then file name. Anomaly labels only (1 anomaly, 0 inlier, 255 ignore), from the coarse labels of
the LostAndFound label table:

- label ids: 1 (free space, i.e. the road) -> inlier; the hazard ids 2-30, 32, 35, 40-43 (crates, pylons,
  tyres, toys, dogs, kid dummies, ...) -> anomaly; 0 (unlabelled, ego vehicle, border, background), the
  "random non-hazards" 31, 33, 34, 36-39 (lying marker poles, posts, timber, wheel caps, thin wood) and
  anything else -> ignore;
- train ids (the table's trainId column): 1 free space -> inlier, 2 hazard -> anomaly, 0 and 255 -> ignore.

Depth as in the DenseHybrid per-distance evaluation: disparity = PNG value / 256, depth = baseline * f /
disparity with f = (fx + fy) / 2 from the frame's camera JSON (baseline from its extrinsics); zero
disparity is invalid (NaN). With depth, ``info.camera`` holds ``focal_px`` and ``baseline_m`` of the first
frame's camera file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from openset_perception.data.cityscapes import (
    StereoCamera,
    cityscapes_info,
    first_camera_info,
    index_stereo_split,
    lookup_table,
    read_camera,
)
from openset_perception.data.image_files import read_png, read_rgb
from openset_perception.data.sample import ANOMALY, INLIER, Sample, validate_sample
from openset_perception.depth import depth_from_disparity

FREE_SPACE_ID = 1
NON_HAZARD_IDS = frozenset({31, 33, 34, 36, 37, 38, 39})
HAZARD_IDS = frozenset(range(2, 44)) - NON_HAZARD_IDS
LABEL_ID_TO_ANOMALY = lookup_table({FREE_SPACE_ID: INLIER} | dict.fromkeys(HAZARD_IDS, ANOMALY))
TRAIN_ID_TO_ANOMALY = lookup_table({1: INLIER, 2: ANOMALY})


def focal_px(camera: StereoCamera) -> float:
    return (camera.fx + camera.fy) / 2


def lostandfound_depth(disparity_png: np.ndarray, camera: StereoCamera) -> np.ndarray:
    """disparity = p / 256; depth = baseline * (fx + fy) / 2 / disparity; p = 0 -> NaN."""
    return depth_from_disparity(disparity_png.astype(np.float32) / 256, camera.baseline_m, focal_px(camera))


class LostAndFoundDataset:
    """LostAndFound frames: anomaly labels and, where disparity is present, depth (see module docstring)."""

    LABEL_SUFFIXES = ("_gtCoarse_labelTrainIds.png", "_gtCoarse_labelIds.png")

    def __init__(self, root: str | Path, split: str = "test") -> None:
        self.root = Path(root)
        self.split = split
        self.frames = index_stereo_split(self.root, split, "gtCoarse", self.LABEL_SUFFIXES)
        camera = first_camera_info(self.frames, focal_px)
        self.info = cityscapes_info(has_anomaly=True, has_depth=camera is not None, camera=camera)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Sample:
        frame = self.frames[index]
        labels = read_png(frame.label)
        is_train_ids = frame.label.name.endswith(self.LABEL_SUFFIXES[0])
        table = TRAIN_ID_TO_ANOMALY if is_train_ids else LABEL_ID_TO_ANOMALY
        sample = Sample(image=read_rgb(frame.image), anomaly=table[labels], name=frame.name)
        if frame.disparity is not None and frame.camera is not None:
            sample.depth = lostandfound_depth(read_png(frame.disparity, np.uint16), read_camera(frame.camera))
        validate_sample(sample, self.info)
        return sample
