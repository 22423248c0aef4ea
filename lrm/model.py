"""The one shared encoder: embedding + positions, pre-norm residual blocks, final norm.

Every mixer plugs in here through a spec dict; a list of specs is cycled over depth
(``[local, local, global]`` gives a hybrid stack). Heads live in ``lrm/heads.py``.

Decoding (causal encoders; the mixer contract is in ``lrm/mixers/base.py``)::

  cache = encoder.init_cache(batch, max_len)             # one mixer cache per block
  h, cache = encoder.prefill(tokens, cache)              # [B, P] -> [B, P, D], positions 0..P-1
  h_t, cache = encoder.decode_step(tokens_t, cache, pos) # [B] -> [B, D] at position ``pos``

Decoding runs in eval mode: dropout is never applied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm import mixers
from lrm.mixers.base import DecodeError

Cache = list[dict[str, jax.Array]]  # one mixer cache per block

POSITIONS = ("learned", "sinusoidal", "rotary", "none")


def layer_specs(mixer: Mapping[str, Any] | Sequence[Mapping[str, Any]], depth: int) -> list[dict]:
  """One mixer spec per layer: a single spec is repeated, a list is cycled over depth. A
  stack longer than ``depth`` is refused: its last layers would be dropped without a word."""
  pattern = [mixer] if isinstance(mixer, Mapping) else list(mixer)
  if not pattern:
    raise ValueError("model.mixer is an empty list; give a spec dict or a non-empty list of them")
  if len(pattern) > depth:
    names = "+".join(str(s.get("name", "?")) for s in pattern)
    raise ValueError(
      f"model.mixer is a stack of {len(pattern)} layers ({names}) but model.depth={depth} "
      f"would drop the last {len(pattern) - depth}; set model.depth >= {len(pattern)}"
    )
  return [dict(pattern[i % len(pattern)]) for i in range(depth)]


def sinusoidal_table(length: int, dim: int) -> np.ndarray:
  """Fixed sin/cos position table ``[L, D]`` (Vaswani et al. 2017)."""
  pos = np.arange(length)[:, None]
  freq = np.exp(-math.log(10_000.0) * np.arange(0, dim, 2) / dim)[None, :]
  table = np.zeros((length, dim), np.float32)
  table[:, 0::2] = np.sin(pos * freq)
  table[:, 1::2] = np.cos(pos * freq)[:, : dim // 2]
  return table


class MLP(nnx.Module):
  def __init__(self, dim: int, hidden: int, dropout: float, *, rngs: nnx.Rngs):
    self.up = nnx.Linear(dim, hidden, rngs=rngs)
    self.down = nnx.Linear(hidden, dim, rngs=rngs)
    self.drop = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down(self.drop(jax.nn.gelu(self.up(x))))  # [B, L, D]


class Block(nnx.Module):
  """``x + mixer(norm(x))`` then ``x + mlp(norm(x))``."""

  def __init__(self, dim: int, mixer: mixers.Mixer, mlp_dim: int, dropout: float, *, rngs):
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.mixer = mixer
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.mlp = MLP(dim, mlp_dim, dropout, rngs=rngs) if mlp_dim > 0 else None
    self.drop = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    x = x + self.drop(self.mixer(self.norm1(x), mask))  # [B, L, D]
    if self.mlp is not None:
      x = x + self.drop(self.mlp(self.norm2(x)))
    return x

  def _finish(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """The residual add after the mixer and the MLP branch, without dropout (decoding)."""
    x = x + y
    if self.mlp is not None:
      x = x + self.mlp(self.norm2(x))
    return x

  def prefill(self, x: jax.Array, cache: dict) -> tuple[jax.Array, dict]:
    y, cache = self.mixer.prefill(self.norm1(x), cache)  # [B, P, D]
    return self._finish(x, y), cache

  def step(self, x: jax.Array, cache: dict, pos: jax.Array) -> tuple[jax.Array, dict]:
    y, cache = self.mixer.step(self.norm1(x), cache, pos)  # [B, D]
    return self._finish(x, y), cache


def _call_block(block: Block, x: jax.Array, mask: jax.Array | None) -> jax.Array:
  return block(x, mask)


# The block's activations are recomputed in the backward pass (the same dropout masks: the
# RNG state is an input). XLA's CPU compiler drops the optimisation barriers that keep the
# recomputation from being merged back into the forward pass unless told not to: see
# ``lrm.train.step.compiler_options``.
remat_block = nnx.remat(_call_block)


class Encoder(nnx.Module):
  """Token ids ``[B, L]`` -> features ``[B, L, D]``.

  Args:
    vocab_size: number of token ids.
    dim: model width D.
    depth: number of blocks.
    mixer: a mixer spec dict, or a list of specs cycled over depth.
    causal: whether every mixer must be causal (language modelling).
    max_len: longest sequence (for learned/sinusoidal positions).
    positions: "learned", "sinusoidal", "rotary" or "none". "rotary" adds no table here: the
      attention specs carry ``rotary=True`` (``lrm.mixers.with_run_options`` writes it).
    mlp_ratio: hidden width of the MLP as a multiple of D (0 removes the MLP).
    mlp_dim: hidden width of the MLP in units; overrides ``mlp_ratio`` when > 0 (budget
      matching uses it to hit a parameter or FLOP target finely).
    dropout: dropout rate on embeddings and residual branches.
    remat: recompute each block's activations in the backward pass instead of keeping them
      (``nnx.remat`` per block): training memory holds one block's activations plus the
      block inputs, for about one more forward pass of compute.
  """

  def __init__(
    self,
    *,
    vocab_size: int,
    dim: int,
    depth: int,
    mixer: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    causal: bool,
    max_len: int,
    positions: str = "learned",
    mlp_ratio: int = 4,
    mlp_dim: int = 0,
    dropout: float = 0.0,
    remat: bool = False,
    rngs: nnx.Rngs,
  ):
    if positions not in POSITIONS:
      raise ValueError(f"unknown positions '{positions}'; choose one of {', '.join(POSITIONS)}")
    self.dim, self.depth, self.causal, self.max_len = dim, depth, causal, max_len
    self.positions, self.remat = positions, bool(remat)
    self.embed = nnx.Embed(vocab_size, dim, rngs=rngs)
    if positions == "learned":
      init = nnx.initializers.normal(0.02)
      self.pos = nnx.Param(init(rngs.params(), (max_len, dim)))
    elif positions == "sinusoidal":
      self.pos = nnx.Variable(jnp.asarray(sinusoidal_table(max_len, dim)))
    else:
      self.pos = None
    self.drop = nnx.Dropout(dropout, rngs=rngs)
    blocks = []
    for i, spec in enumerate(layer_specs(mixer, depth)):
      m = mixers.build(spec, dim=dim, causal=causal, rngs=rngs, layer_idx=i)
      blocks.append(Block(dim, m, mlp_dim or mlp_ratio * dim, dropout, rngs=rngs))
    self.blocks = nnx.List(blocks)
    self.norm = nnx.LayerNorm(dim, rngs=rngs)

  def embed_tokens(self, tokens: jax.Array, start: int | jax.Array = 0) -> jax.Array:
    """Token + position embedding of ``tokens [B, L]`` at positions ``start .. start+L-1``
    -> ``[B, L, D]``: the one embedding path of the forward, ``prefill`` and ``decode_step``
    (``start`` may be traced)."""
    L = tokens.shape[1]
    if L > self.max_len and self.pos is not None:
      raise ValueError(f"sequence length {L} exceeds the encoder's max_len {self.max_len}")
    # nnx.Embed fixes its output dtype when built (float32), which would lift a bfloat16 run
    # (parameters cast by the train step) back to float32 activations: every matmul in
    # float32 and no bfloat16 kernel (cuDNN) chosen. The table's own dtype is the run's.
    table = self.embed.embedding[...]
    x = self.embed(tokens).astype(table.dtype)  # [B, L, D]
    if self.pos is not None:
      rows = jax.lax.dynamic_slice_in_dim(self.pos[...], start, L)  # [L, D]
      x = x + rows.astype(x.dtype)
    return self.drop(x)

  def run_blocks(
    self, x: jax.Array, mask: jax.Array | None = None, *, intermediates: bool = False
  ) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
    """Blocks + final norm on embeddings ``x: [B, L, D]``; optionally every block's output."""
    outs = []
    for block in self.blocks:
      x = remat_block(block, x, mask) if self.remat else block(x, mask)  # [B, L, D]
      outs.append(x)
    y = self.norm(x)
    return (y, outs) if intermediates else y

  def __call__(
    self, tokens: jax.Array, mask: jax.Array | None = None, *, intermediates: bool = False
  ) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
    return self.run_blocks(self.embed_tokens(tokens), mask, intermediates=intermediates)

  # ---- decoding ----------------------------------------------------------------------------

  def init_cache(self, batch: int, max_len: int) -> Cache:
    """Empty decoding caches for ``batch`` sequences of up to ``max_len`` tokens."""
    if not self.causal:
      raise self.blocks[0].mixer.decode_error()  # "... is bidirectional; ..."
    self._check_len(max_len, "max_len")
    return [b.mixer.init_cache(batch, max_len) for b in self.blocks]

  def cache_bytes(self, batch: int, max_len: int) -> int:
    """Bytes of ``init_cache(batch, max_len)`` over every block."""
    return sum(b.mixer.cache_bytes(batch, max_len) for b in self.blocks)

  def _check_len(self, length: int, what: str) -> None:
    if self.pos is not None and length > self.max_len:
      raise DecodeError(
        f"{what} {length} exceeds the encoder's max_len {self.max_len} ({self.positions} "
        "positions have no row beyond it); use a shorter prompt or fewer new tokens"
      )

  def prefill(self, tokens: jax.Array, cache: Cache) -> tuple[jax.Array, Cache]:
    """Prompt ``tokens: [B, P]`` at positions 0..P-1 -> (features ``[B, P, D]``, caches)."""
    self._check_len(tokens.shape[1], "prompt length")
    x = self.embed_tokens(tokens)  # [B, P, D]
    new = []
    for block, c in zip(self.blocks, cache, strict=True):
      x, c = block.prefill(x, c)
      new.append(c)
    return self.norm(x), new

  def decode_step(self, tokens: jax.Array, cache: Cache, pos: jax.Array) -> tuple[jax.Array, Cache]:
    """One token per sequence ``tokens: [B]`` at position ``pos`` -> (features ``[B, D]``,
    caches). A concrete ``pos`` is checked against ``max_len``; a traced one cannot be (the
    caller checks the total length, as ``lrm.decode.generate`` does)."""
    if not isinstance(pos, jax.core.Tracer):
      self._check_len(int(pos) + 1, "position")
    pos = jnp.asarray(pos, jnp.int32)
    x = self.embed_tokens(tokens[:, None], pos)[:, 0]  # [B, D]
    new = []
    for block, c in zip(self.blocks, cache, strict=True):
      x, c = block.step(x, c, pos)
      new.append(c)
    return self.norm(x), new

  def mixer_list(self) -> list[mixers.Mixer]:
    return [b.mixer for b in self.blocks]

  def flops(self, length: int) -> int:
    """Analytic forward FLOPs for one sequence (mixers + MLPs; embeddings excluded)."""
    total = 0
    for b in self.blocks:
      total += b.mixer.flops(length)
      if b.mlp is not None:
        total += 2 * 2 * length * self.dim * b.mlp.up.out_features
    return int(total)
