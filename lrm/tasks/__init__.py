"""Tasks: registered by short name, each owning its data, head, loss and metrics.

To add a task, write one file with a ``Task`` subclass decorated
``@register("task", "<name>")`` (constructor keyword options = the ``data`` config section),
import it below, and add its tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lrm import registry
from lrm.tasks.base import SPLITS, DataError, Task


def names() -> list[str]:
  return registry.names("task")


def build(spec: Mapping[str, Any]) -> Task:
  """``build({"name": "listops", "path": ..., ...})``: options are the task's data options."""
  return registry.build("task", spec)


__all__ = ["SPLITS", "DataError", "Task", "build", "names"]
