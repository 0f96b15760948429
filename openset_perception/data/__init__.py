"""Datasets: the Sample record, the generic folder layout, procedural street scenes."""

from openset_perception.data.folder import FolderDataset, write_folder_dataset
from openset_perception.data.sample import Dataset, DatasetInfo, Sample, validate_sample
from openset_perception.data.synthetic_streets import (
    STREET_CLASSES,
    STREET_PALETTE,
    SyntheticStreets,
    random_negative_patch,
    write_synthetic_streets,
)

__all__ = [
    "STREET_CLASSES",
    "STREET_PALETTE",
    "Dataset",
    "DatasetInfo",
    "FolderDataset",
    "Sample",
    "SyntheticStreets",
    "random_negative_patch",
    "validate_sample",
    "write_folder_dataset",
    "write_synthetic_streets",
]
