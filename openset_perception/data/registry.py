"""Datasets by name: ``open_dataset('cityscapes', '/data/cityscapes', 'val')``.

Readers are imported on first use, so a tool that reads one dataset never imports the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openset_perception.data.sample import Dataset

# name -> (module, factory name, whether the factory takes a split)
_READERS: dict[str, tuple[str, str, bool]] = {
    "folder": ("openset_perception.data.folder", "FolderDataset", False),
    "synthetic_streets": ("openset_perception.data.registry", "_synthetic_streets_split", True),
    "cityscapes": ("openset_perception.data.cityscapes", "CityscapesDataset", True),
    "fishyscapes_laf": ("openset_perception.data.fishyscapes", "FishyscapesLostAndFound", False),
    "fishyscapes_static": ("openset_perception.data.fishyscapes", "FishyscapesStatic", False),
    "smiyc_anomaly": ("openset_perception.data.smiyc", "SmiycAnomalyTrack", False),
    "smiyc_obstacle": ("openset_perception.data.smiyc", "SmiycObstacleTrack", False),
    "streethazards": ("openset_perception.data.streethazards", "StreetHazardsDataset", True),
    "lostandfound": ("openset_perception.data.lostandfound", "LostAndFoundDataset", True),
}
DATASET_NAMES = tuple(_READERS)


def _synthetic_streets_split(root: Path, split: str | None = None) -> Dataset:
    """A folder written by ``make-streets``: ROOT/<split> in the generic layout (default: test)."""
    from openset_perception.data.folder import FolderDataset

    folder = Path(root) / (split or "test")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist: synthetic_streets reads ROOT/<split> (the split is appended to "
            f"the root), so pass the folder make-streets wrote, e.g. "
            f"'openset-perception make-streets --out {root}' then --root {root}"
        )
    return FolderDataset(folder)


def _factory(name: str) -> tuple[Callable[..., Dataset], bool]:
    if name not in _READERS:
        raise ValueError(f"unknown dataset '{name}'; choose one of {', '.join(DATASET_NAMES)}")
    module_name, attribute, takes_split = _READERS[name]
    return getattr(importlib.import_module(module_name), attribute), takes_split


def open_dataset(name: str, root: str | Path, split: str | None = None, **kwargs: Any) -> Dataset:
    """Open dataset ``name`` at ``root``; a missing root raises FileNotFoundError naming it.

    ``split`` goes to readers with splits (None: the reader's default) and is an error for the others.
    """
    factory, takes_split = _factory(name)
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset root not found: {root}")
    if takes_split:
        return factory(root, split, **kwargs) if split is not None else factory(root, **kwargs)
    if split is not None:
        raise ValueError(f"dataset '{name}' has no splits (got split '{split}'); point the root at the data")
    return factory(root, **kwargs)
