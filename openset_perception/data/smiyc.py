"""SegmentMeIfYouCan (SMIYC) AnomalyTrack and ObstacleTrack, validation frames.

Layout, as the benchmark's archives unpack (dataset_AnomalyTrack/, dataset_ObstacleTrack/ is ROOT)::

    ROOT/images/NAME.jpg|webp|png                 RGB (AnomalyTrack ships .jpg, ObstacleTrack .webp)
    ROOT/labels_masks/NAME_labels_semantic.png    uint8: 0 not anomaly, 1 anomaly, 255 void

Only the validation frames have labels; images without a label (the hidden test set) are left out.
Frames are sorted by NAME. ObstacleTrack uses the same values: its labels mark the drivable road as 0,
obstacles on it as 1 and everything off the road as void. Anomaly labels only; the class names are the
19 Cityscapes classes the benchmark's models are trained on.
"""

from __future__ import annotations

from pathlib import Path

from openset_perception.data.fishyscapes import AnomalyMaskDataset

LABEL_SUFFIX = "_labels_semantic.png"


class SmiycAnomalyTrack(AnomalyMaskDataset):
    """SMIYC RoadAnomaly21 validation frames; see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        super().__init__(root / "images", root / "labels_masks", LABEL_SUFFIX, labelled_only=True)


class SmiycObstacleTrack(AnomalyMaskDataset):
    """SMIYC RoadObstacle21 validation frames; see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        super().__init__(root / "images", root / "labels_masks", LABEL_SUFFIX, labelled_only=True)
