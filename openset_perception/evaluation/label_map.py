"""Semantic ground truth in the model's taxonomy: the one place dataset label ids become the model's.

Evaluation data is often labelled with other ids than the model's train ids (Cityscapes train ids on
a bag, an 8-class model). A label map file (``--label-map FILE``) is a YAML mapping from the data's
semantic ids (0-254) to the model's: a class id 0..K-1, K for "unknown" (an anomaly class) or 255
for "ignore"::

    0: 0      # road -> road
    1: 1      # sidewalk -> sidewalk
    11: 255   # person: not a class of the model, ignored
    19: 8     # the data's anomaly class -> unknown (K = 8)

Ids the map does not list are ignored (255), with one warning per run naming them.

Without a label map, labels are used as they are when they fit the model (0..K-1, K unknown, 255
ignore). A frame whose labels do not fit, or data that declares another number of classes, loses
only its semantic labels: semantic metrics are computed from the frames that fit, anomaly metrics
from every frame, and one warning per run says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from openset_perception.config import ConfigError

LOGGER = logging.getLogger(__name__)
IGNORE = 255
_SHOWN_IDS = 10
_SHOWN_FRAMES = 20


@dataclass(frozen=True)
class LabelMap:
    """A lookup table over the 256 possible uint8 labels, from a validated label map file."""

    path: Path
    lookup: np.ndarray  # (256,) uint8: data id -> model id
    listed: np.ndarray  # (256,) bool: ids the file maps (255 always counts as listed)

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        return self.lookup[labels]


def load_label_map(path: str | Path, num_classes: int) -> LabelMap:
    """Read and validate a label map for a ``num_classes``-class model; ConfigError names the bad key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"label map not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: a label map is a non-empty mapping of dataset ids to model class ids")
    lookup = np.full(256, IGNORE, np.uint8)
    listed = np.zeros(256, bool)
    listed[IGNORE] = True
    for key, value in data.items():
        if not _is_int(key) or not 0 <= key < IGNORE:
            raise ConfigError(f"{path}: key {key!r}: dataset ids are integers 0-254")
        if not _is_int(value) or not (0 <= value <= num_classes or value == IGNORE):
            raise ConfigError(
                f"{path}: key {key}: {value!r} is not a class of the {num_classes}-class model "
                f"(0-{num_classes - 1}, {num_classes} = unknown, {IGNORE} = ignore)"
            )
        lookup[key] = value
        listed[key] = True
    return LabelMap(path, lookup, listed)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class SemanticGroundTruth:
    """Turns each frame's semantic labels into the model's ids, or drops them; see the module docstring.

    ``declared_classes``: the class names the data declares (a dataset's info, a bag's custom data),
    when it declares any. Call once per frame; :meth:`record` adds what happened to the metrics.
    """

    def __init__(
        self,
        model_classes: Sequence[str],
        label_map: LabelMap | None = None,
        declared_classes: Sequence[str] | None = None,
    ) -> None:
        self.num_classes = len(model_classes)
        self.label_map = label_map
        self.unusable_frames: list[str] = []
        self._warned = False
        self._unmapped_warned = False
        self._mismatch: str | None = None
        if label_map is not None or declared_classes is None:
            return
        if len(declared_classes) != self.num_classes:
            self._mismatch = (
                f"the data has {len(declared_classes)} classes ({', '.join(declared_classes)}), the model "
                f"{self.num_classes} ({', '.join(model_classes)})"
            )
            self._warn(self._mismatch)
        elif list(declared_classes) != list(model_classes):
            LOGGER.warning(
                "data classes %s differ in name from the model's %s; comparing ids as they are",
                list(declared_classes),
                list(model_classes),
            )

    def __call__(self, labels: np.ndarray | None, frame: str) -> np.ndarray | None:
        """The frame's labels in the model's ids, or None when they cannot be compared with the model."""
        if labels is None:
            return None
        labels = np.asarray(labels)
        if self.label_map is not None:
            self._note_unmapped(labels)
            return self.label_map(labels)
        if self._mismatch is None:
            outside = (labels > self.num_classes) & (labels != IGNORE)
            if not outside.any():
                return labels
            ids = np.unique(labels[outside]).tolist()
            self._warn(
                f"frame {frame} has semantic labels {_preview(ids)} outside the model's "
                f"{self.num_classes} classes (0-{self.num_classes - 1}, {self.num_classes} = unknown, "
                f"{IGNORE} = ignore)"
            )
        self.unusable_frames.append(frame)
        return None

    def record(self, metrics: dict) -> None:
        """Note the label map and the frames whose semantic labels were dropped in ``metrics``."""
        metrics["settings"]["label_map"] = None if self.label_map is None else str(self.label_map.path)
        if self.unusable_frames:
            frames = metrics["frames"]
            frames["semantic labels unusable"] = len(self.unusable_frames)
            shown = ", ".join(self.unusable_frames[:_SHOWN_FRAMES])
            more = len(self.unusable_frames) - _SHOWN_FRAMES
            frames["semantic labels unusable in"] = shown + (f", ... (+{more})" if more > 0 else "")

    def _warn(self, reason: str) -> None:
        if self._warned:
            return
        self._warned = True
        LOGGER.warning(
            "%s: semantic metrics skip such frames (warned once per run), anomaly metrics keep them; "
            "--label-map FILE maps the data's ids to the model's",
            reason,
        )

    def _note_unmapped(self, labels: np.ndarray) -> None:
        assert self.label_map is not None
        if self._unmapped_warned:
            return
        unmapped = ~self.label_map.listed[labels]
        if unmapped.any():
            self._unmapped_warned = True
            LOGGER.warning(
                "label map %s does not list the ids %s (first seen here; warned once per run): ignored",
                self.label_map.path,
                _preview(np.unique(labels[unmapped]).tolist()),
            )


def _preview(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:_SHOWN_IDS]))
    return f"[{shown}{', ...' if len(ids) > _SHOWN_IDS else ''}]"
