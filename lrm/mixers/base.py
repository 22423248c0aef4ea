"""The mixer contract, shared by every token mixer.

Dimension legend (used in einsum strings and shape comments across lrm):
  B batch, L query length, S key length, D model width, N heads, H head dim,
  K kernel/window size, C classes, V vocab, W number of blocks, T block size.

A mixer is an ``nnx.Module`` mapping ``x: [B, L, D] -> [B, L, D]``. It takes an optional
padding mask ``[B, L]`` (True = real token): padded positions must neither influence real
ones nor produce NaN (their own outputs may be anything finite). A mixer is causal (output
i depends only on inputs <= i) or bidirectional, fixed at construction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):
  """Base class: subclasses implement ``__call__`` and ``flops``.

  Subclasses set ``self.causal`` and ``self.dim`` in ``__init__`` and may override
  ``receptive_field`` (analytic per-layer reach) and ``impl`` (which kernel runs).
  """

  causal: bool
  dim: int

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    raise NotImplementedError  # abstract: every registered mixer overrides this

  def flops(self, length: int) -> int:
    """Analytic forward FLOPs for one sequence of ``length`` tokens (a multiply-add is 2)."""
    raise NotImplementedError  # abstract: every registered mixer overrides this

  def num_params(self) -> int:
    return param_count(self)

  def receptive_field(self) -> tuple[int, int] | None:
    """(left, right) reach of one layer in tokens; None means the whole sequence."""
    return None

  @property
  def impl(self) -> str:
    """Name of the implementation that runs (e.g. ``"blocked"``, ``"fft"``)."""
    return "default"


def param_count(module: nnx.Module) -> int:
  return int(sum(p.size for p in jax.tree.leaves(nnx.state(module, nnx.Param))))


def zero_padded(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Zero the padded positions of ``x: [B, L, D]`` (mask ``[B, L]``, True = real)."""
  if mask is None:
    return x
  return jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))
