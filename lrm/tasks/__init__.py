"""Tasks: registered by short name, each owning its data, head, loss and metrics.

To add a task, write one file with a ``Task`` subclass decorated
``@register("task", "<name>")`` (constructor keyword options = the ``data`` config section),
and add its tests: every module in this folder is imported automatically. ``CausalTask``
(``base.py``) brings the LM head; ``ClassificationTask`` (``classify.py``) the classifier
head and loss, and ``TableTask`` also the setup of data read from split files.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from lrm import registry
from lrm.data import DataError
from lrm.tasks.base import SPLITS, CausalTask, Task


def _import_all() -> None:
  for info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{info.name}")


_import_all()


def names() -> list[str]:
  return registry.names("task")


def build(spec: Mapping[str, Any]) -> Task:
  """``build({"name": "listops", "path": ..., ...})``: options are the task's data options."""
  return registry.build("task", spec)


__all__ = ["SPLITS", "CausalTask", "DataError", "Task", "build", "names"]
