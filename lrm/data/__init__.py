"""Data loading and generation. Loaders return ``ArrayDataset``s (see ``arrays.py``)."""

from lrm.data.arrays import ArrayDataset

__all__ = ["ArrayDataset"]
