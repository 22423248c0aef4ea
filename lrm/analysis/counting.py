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

__all__ = ["forward_flops", "model_costs", "param_count", "train_flops_per_token", "xla_flops"]
NO_EMBEDDING = ("embedding", "pos")  # token and position tables (lookups: no compute)


def forward_flops(model: nnx.Module, length: int) -> int:
  """Analytic forward FLOPs of a whole model (encoder + head, or an encoder) for one example."""
  return int(model.flops(length))


def train_flops_per_token(model: nnx.Module, length: int) -> float:
  """Training FLOPs per input token: forward + backward ~= 3x forward (Kaplan et al. 2020)."""
  tokens = model.tokens_per_example(length) if hasattr(model, "tokens_per_example") else length
  return 3.0 * forward_flops(model, length) / tokens


def model_costs(model: nnx.Module, length: int) -> dict[str, float | int]:
  """The cost names every report uses (results.json, study cells, budgets), at ``length``.

  ``params`` / ``params_non_embedding`` (without the token and position tables);
  ``encoder_forward_flops_per_token``: the blocks (mixers + MLPs), no embedding or head;
  ``forward_flops_per_token``: the whole model (encoder + head) per input token;
  ``train_flops_per_token``: forward + backward, 3x the forward.
  """
  total = embedding = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param)):
    total += int(leaf.size)
    if any(getattr(k, "key", None) in NO_EMBEDDING for k in path):
      embedding += int(leaf.size)
  train = train_flops_per_token(model, length)
  return {
    "params": total,
    "params_non_embedding": total - embedding,
    "encoder_forward_flops_per_token": model.encoder.flops(length) / length,
    "forward_flops_per_token": train / 3.0,
    "train_flops_per_token": train,
    "seq_len": length,
  }


def xla_flops(fn: Callable[..., Any], *args: Any) -> float:
  """FLOPs XLA counts for ``jax.jit(fn)(*args)`` (compiled program, CPU included)."""
  return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])
