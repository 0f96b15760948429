"""Importers for published checkpoints; importing this package registers every format."""

from openset_perception.weights_import.base import (
    FORMATS,
    ImportSummary,
    WeightFormat,
    WeightImportError,
    fold_two_channel_ood_head,
    get_format,
    import_weights,
    read_state_dict,
    register,
)

__all__ = [
    "FORMATS",
    "ImportSummary",
    "WeightFormat",
    "WeightImportError",
    "fold_two_channel_ood_head",
    "get_format",
    "import_weights",
    "read_state_dict",
    "register",
]

# Importing a format module registers its formats.
from openset_perception.weights_import import densehybrid, swiftnet  # noqa: F401
