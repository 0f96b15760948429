"""Datasets: the Sample record, the generic folder layout, procedural street scenes."""

from openset_perception.data.folder import FolderDataset, write_folder_dataset
from openset_perception.data.sample import Dataset, DatasetInfo, Sample, validate_sample

__all__ = [
    "Dataset",
    "DatasetInfo",
    "FolderDataset",
    "Sample",
    "validate_sample",
    "write_folder_dataset",
]
