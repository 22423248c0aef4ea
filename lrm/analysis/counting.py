"""Parameter and FLOP counts: analytic (from the mixers' formulas) and XLA's own count.

Convention: a multiply-add is 2 FLOPs; the analytic counts cover the matmuls/convolutions
that dominate (elementwise work such as softmax, norms and activations is not counted), so
they sit a few percent below XLA's ``cost_analysis()['flops']``, which counts everything the
compiled program executes (including masked-out scores of a dense kernel).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from lrm.mixers.base import param_count

__all__ = ["forward_flops", "param_count", "train_flops_per_token", "xla_flops"]


def forward_flops(model: nnx.Module, length: int) -> int:
  """Analytic forward FLOPs of a whole model (encoder + head, or an encoder) for one example."""
  return int(model.flops(length))


def train_flops_per_token(model: nnx.Module, length: int) -> float:
  """Training FLOPs per input token: forward + backward ~= 3x forward (Kaplan et al. 2020)."""
  tokens = model.tokens_per_example(length) if hasattr(model, "tokens_per_example") else length
  return 3.0 * forward_flops(model, length) / tokens


def xla_flops(fn: Callable[..., Any], *args: Any) -> float:
  """FLOPs XLA counts for ``jax.jit(fn)(*args)`` (compiled program, CPU included)."""
  return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])
