"""Data sources, registered by kind. Importing this package registers the built-in kinds."""

from . import clones, real  # noqa: F401
from .dataset import Dataset, FiniteDataConfig, Split, from_tensors, validate_dataset
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


def build_data(cfg) -> Dataset:
    """The dataset a `data` config section describes."""
    from ..registry import DATA

    return DATA.builder(cfg.kind)(cfg)
