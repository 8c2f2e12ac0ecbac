"""Data sources, registered by kind. Importing this package registers the built-in kinds."""

from . import clones, real, teachers  # noqa: F401
from .dataset import Dataset, FiniteDataConfig, Split, build_data, from_tensors, validate_dataset
from .loader import BatchLoader

__all__ = [
    "BatchLoader",
    "Dataset",
    "FiniteDataConfig",
    "Split",
    "build_data",
    "from_tensors",
    "validate_dataset",
]
