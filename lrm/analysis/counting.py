"""Parameter and FLOP counts: analytic (from the mixers' formulas) and XLA's own count.

Convention: a multiply-add is 2 FLOPs; the analytic counts cover the matmuls/convolutions
that dominate (elementwise work such as softmax, norms and activations is not counted), so
they sit a few percent below XLA's ``cost_analysis()['flops']``, which counts everything the
compiled program executes (including masked-out scores of a dense kernel).

Two counts per mixer: ``flops(length)`` is what its kernel executes (a blocked local kernel
scores whole blocks, a dense causal one the full L x L square), and
``algorithmic_flops(length)`` the work of the operator itself (keys actually inside the
window, L(L+1)/2 pairs of causal attention, 2KD per token for a K-tap depthwise conv); a
mixer without one is charged its ``flops``. Budgets and ``train_flops_per_token`` use the
algorithmic count, so a kernel's waste is not charged to the idea; the executed count is
reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from lrm.mixers.base import param_count

__all__ = [
  "algorithmic_forward_flops",
  "forward_flops",
  "model_costs",
  "param_count",
  "train_flops_per_token",
  "xla_flops",
]
NO_EMBEDDING = ("embedding", "pos")  # token and position tables (lookups: no compute)


def forward_flops(model: nnx.Module, length: int) -> int:
  """Analytic forward FLOPs of a whole model (encoder + head, or an encoder) for one example."""
  return int(model.flops(length))


def mixer_algorithmic_flops(mixer: nnx.Module, length: int) -> int:
  """A mixer's ``algorithmic_flops`` (its ``flops`` for mixers that define none)."""
  return int(getattr(mixer, "algorithmic_flops", mixer.flops)(length))


def algorithmic_forward_flops(model: nnx.Module, length: int) -> int:
  """``forward_flops`` with every mixer charged its algorithmic count instead of its kernel's."""
  encoder = getattr(model, "encoder", model)
  delta = sum(
    mixer_algorithmic_flops(b.mixer, length) - int(b.mixer.flops(length)) for b in encoder.blocks
  )
  return forward_flops(model, length) + int(delta)


def _tokens(model: nnx.Module, length: int) -> int:
  return model.tokens_per_example(length) if hasattr(model, "tokens_per_example") else length


def train_flops_per_token(model: nnx.Module, length: int, algorithmic: bool = False) -> float:
  """Training FLOPs per input token: forward + backward ~= 3x forward (Kaplan et al. 2020);
  executed (the kernels' count) unless ``algorithmic``."""
  fwd = algorithmic_forward_flops if algorithmic else forward_flops
  return 3.0 * fwd(model, length) / _tokens(model, length)


def model_costs(model: nnx.Module, length: int) -> dict[str, float | int]:
  """The cost names every report uses (results.json, study cells, budgets), at ``length``.

  ``params`` / ``params_non_embedding`` (without the token and position tables);
  ``encoder_forward_flops_per_token``: the blocks (mixers + MLPs), no embedding or head,
  algorithmic;
  ``forward_flops_per_token``: the whole model (encoder + head) per input token, algorithmic;
  ``train_flops_per_token``: forward + backward, 3x the forward, algorithmic (the budget);
  ``executed_train_flops_per_token``: the same with the kernels' executed counts.
  """
  total = embedding = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param)):
    total += int(leaf.size)
    if any(getattr(k, "key", None) in NO_EMBEDDING for k in path):
      embedding += int(leaf.size)
  train = train_flops_per_token(model, length, algorithmic=True)
  return {
    "params": total,
    "params_non_embedding": total - embedding,
    "encoder_forward_flops_per_token": algorithmic_forward_flops(model.encoder, length) / length,
    "forward_flops_per_token": train / 3.0,
    "train_flops_per_token": train,
    "executed_train_flops_per_token": train_flops_per_token(model, length),
    "seq_len": length,
  }


def xla_flops(fn: Callable[..., Any], *args: Any) -> float:
  """FLOPs XLA counts for ``jax.jit(fn)(*args)`` (compiled program, CPU included)."""
  return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])
