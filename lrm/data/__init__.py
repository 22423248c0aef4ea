"""Data loading and generation. Loaders return ``ArrayDataset``s (see ``arrays.py``)."""

from lrm.data.arrays import ArrayDataset


class DataError(ValueError):
  """Bad or missing data; the message names the file, line and problem."""


__all__ = ["ArrayDataset", "DataError"]
