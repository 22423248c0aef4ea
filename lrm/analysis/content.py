"""Content dependence: how much a mixer's effective kernel changes from position to position.

For one mixer layer with input ``x [1, L, D]`` (real activations), the effective kernel of
output position i at offset o is the size of the Jacobian block ``d y_i / d x_{i+o}``
(Frobenius norm), normalised over offsets. A convolution's kernel depends only on the offset,
so it is the same at every position (variation 0); attention, dynamic convolution and
involution compute a new kernel from the content at each position. ``variation`` is the mean
total-variation distance between each position's kernel and the average kernel (0..1).

``EffectiveKernels.to_dict()`` is plain JSON (a study stores it in each cell's cell.json, and
its report draws the panel from there without JAX).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.model import Encoder


@dataclass
class EffectiveKernels:
  offsets: np.ndarray  # [K] offsets o (input position = i + o)
  positions: np.ndarray  # [P] output positions i
  kernels: np.ndarray  # [P, K] normalised |d y_i / d x_{i+o}|
  variation: float  # mean TV distance to the mean kernel, 0 = static kernel

  def to_dict(self) -> dict[str, Any]:
    """JSON-able: ``offsets``, ``positions``, ``kernels`` (rows per position), ``variation``."""
    return {
      "offsets": [int(o) for o in self.offsets],
      "positions": [int(p) for p in self.positions],
      "kernels": np.round(self.kernels, 6).tolist(),
      "variation": self.variation,
    }


def mixer_input(encoder: Encoder, tokens: jax.Array, layer: int, mask=None) -> jax.Array:
  """The activations that block ``layer`` (0-based) feeds its mixer: ``norm1(h_{layer})``."""
  encoder.eval()
  x = encoder.embed_tokens(tokens)  # [B, L, D]
  for block in list(encoder.blocks)[:layer]:
    x = block(x, mask)
  return encoder.blocks[layer].norm1(x)


def sample_positions(length: int, radius: int, count: int = 24) -> np.ndarray:
  """About ``count`` output positions whose whole ±radius window lies inside the sequence
  (every position when the sequence is shorter than the window)."""
  if length <= 2 * radius:
    return np.arange(length)
  return np.arange(radius, length - radius, max(1, (length - 2 * radius) // count))


def effective_kernels(
  mixer, x: jax.Array, positions: np.ndarray, radius: int, mask=None
) -> EffectiveKernels:
  """Effective kernels of ``mixer`` on input ``x [1, L, D]`` at ``positions``, offsets ±radius."""
  L = x.shape[1]
  offsets = np.arange(-radius, radius + 1)
  graphdef, state = nnx.split(mixer)

  @jax.jit
  def jacobian_norms(state, x, i):  # [L]: |d y_i / d x_j| for every input position j
    def out_i(z):
      y = nnx.merge(graphdef, state)(z, mask)[0]  # [L, D]
      return jax.lax.dynamic_index_in_dim(y, i, keepdims=False)  # [D]

    jac = jax.jacrev(out_i)(x)[:, 0]  # [D_out, L, D_in]
    return jnp.sqrt((jac**2).sum(axis=(0, 2)))

  rows = []
  for i in positions:
    norms = np.asarray(jacobian_norms(state, x, int(i)))
    idx = i + offsets
    ok = (idx >= 0) & (idx < L)
    row = np.zeros(len(offsets))
    row[ok] = norms[idx[ok]]
    rows.append(row / max(row.sum(), 1e-30))
  kernels = np.stack(rows)  # [P, K]
  mean = kernels.mean(axis=0, keepdims=True)
  variation = float(0.5 * np.abs(kernels - mean).sum(axis=1).mean())
  return EffectiveKernels(offsets, np.asarray(positions), kernels, variation)


def layer_kernels(encoder: Encoder, tokens: jax.Array, layer: int, radius: int) -> EffectiveKernels:
  """Effective kernels of block ``layer``'s mixer on real ``tokens [1, L]``, at positions
  sampled by ``sample_positions``."""
  x = mixer_input(encoder, tokens, layer=layer)  # [1, L, D]
  positions = sample_positions(tokens.shape[1], radius)
  return effective_kernels(encoder.blocks[layer].mixer, x, positions, radius)
