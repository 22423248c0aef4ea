"""Measured receptive field: which input positions an output position depends on.

The measurement differentiates a chosen output position of each layer with respect to the
encoder's input embeddings (``x0 = embed(tokens)``): the receptive field after layer l is
the set of input positions s with ``d out_l[i] / d x0[s] != 0``. It works for any mixer or
stack because it only uses gradients; the analytic reach comes from each mixer's
``receptive_field()`` (left, right) and adds up over layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.model import Encoder


@dataclass
class Field:
  """Receptive field of one output position after one layer."""

  layer: int  # 1-based block index
  mixer: str
  measured: tuple[int, int]  # (first, last) input position with a nonzero gradient
  size: int  # number of input positions with a nonzero gradient
  contiguous: bool  # measured positions form one interval
  analytic: tuple[int, int]  # (first, last) from the mixers' declared reach, clipped to [0, L)

  @property
  def analytic_size(self) -> int:
    return self.analytic[1] - self.analytic[0] + 1

  def to_dict(self) -> dict[str, Any]:
    """JSON-able, with ``analytic_size`` (what a study's cell.json stores)."""
    return {**asdict(self), "analytic_size": self.analytic_size}


def analytic_reach(encoder: Encoder) -> list[tuple[int | None, int | None]]:
  """Cumulative (left, right) reach after each block; None = unbounded."""
  out, left, right = [], 0, 0
  for m in encoder.mixer_list():
    rf = m.receptive_field()
    if rf is None:
      left = right = None
    elif left is not None:
      left, right = left + rf[0], right + rf[1]
    out.append((left, right))
  return out


def dependence(
  encoder: Encoder, tokens: jax.Array, position: int, mask: jax.Array | None = None
) -> np.ndarray:
  """``[depth, L]`` gradient magnitudes of each block's output at ``position`` w.r.t. x0."""
  encoder.eval()
  x0 = encoder.embed_tokens(tokens)  # [1, L, D]
  direction = jax.random.normal(jax.random.key(0), (x0.shape[-1],), x0.dtype)
  graphdef, state = nnx.split(encoder)

  @jax.jit
  def rows(state: nnx.State, x: jax.Array) -> jax.Array:
    enc = nnx.merge(graphdef, state)

    def layer_out(x: jax.Array, layer: int) -> jax.Array:
      _, outs = enc.run_blocks(x, mask, intermediates=True)
      return jnp.sum(outs[layer][0, position] * direction)

    grads = [jax.grad(layer_out)(x, layer) for layer in range(len(enc.blocks))]  # [1, L, D] each
    return jnp.stack([jnp.abs(g[0]).sum(-1) for g in grads])  # [depth, L]

  return np.asarray(rows(state, x0))


def measure(
  encoder: Encoder,
  length: int,
  position: int | None = None,
  seed: int = 0,
  threshold: float = 1e-5,
) -> list[Field]:
  """Measured vs analytic receptive field of output ``position`` after each block.

  An input position counts when its gradient exceeds ``threshold`` times the largest one:
  FFT-based kernels leave float32 round-off (~1e-7 relative) at every position.
  """
  if position is None:
    position = length // 2
  if not 0 <= position < length:
    raise ValueError(
      f"position {position} is outside [0, {length}); pick --position below {length}"
    )
  vocab = encoder.embed.num_embeddings
  tokens = jax.random.randint(jax.random.key(seed), (1, length), 0, vocab)
  dep = dependence(encoder, tokens, position)
  fields = []
  for layer, (row, (left, right)) in enumerate(zip(dep, analytic_reach(encoder), strict=True)):
    nz = np.flatnonzero(row > threshold * row.max())
    first, last = (int(nz[0]), int(nz[-1])) if nz.size else (position, position)
    lo = 0 if left is None else max(0, position - left)
    hi = length - 1 if right is None else min(length - 1, position + right)
    name = getattr(encoder.blocks[layer].mixer, "registered_name", "?")
    fields.append(
      Field(
        layer=layer + 1,
        mixer=name,
        measured=(first, last),
        size=int(nz.size),
        contiguous=bool(nz.size == 0 or nz.size == last - first + 1),
        analytic=(lo, hi),
      )
    )
  return fields


def format_table(fields: list[Field], position: int, length: int) -> str:
  lines = [
    f"receptive field of output position {position} (sequence length {length})",
    f"{'layer':>5}  {'mixer':<14} {'measured':>16} {'size':>6}  {'analytic':>16} {'size':>6}",
  ]
  for f in fields:
    m = f"[{f.measured[0]}, {f.measured[1]}]" + ("" if f.contiguous else "*")
    a = f"[{f.analytic[0]}, {f.analytic[1]}]"
    lines.append(f"{f.layer:>5}  {f.mixer:<14} {m:>16} {f.size:>6}  {a:>16} {f.analytic_size:>6}")
  if any(not f.contiguous for f in fields):
    lines.append("* the measured positions are not one contiguous interval")
  return "\n".join(lines)


def build_encoder_for_measurement(model: nnx.Module) -> Encoder:
  """The encoder inside a head model (or the encoder itself)."""
  return model if isinstance(model, Encoder) else model.encoder
