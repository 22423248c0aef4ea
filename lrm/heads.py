"""Heads: causal LM, sequence classification, dual encoder. Any mixer works with any head.

Each head owns an ``Encoder`` and is the whole model a task trains. Every head counts its
own analytic forward FLOPs (``flops(L)``: encoder + head, a multiply-add is 2) and says how
many input tokens one example has (``tokens_per_example(L)``), so cost reports never ask
which head they hold.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lrm.model import Encoder

POOLS = ("mean", "cls")


def pool(h: jax.Array, mask: jax.Array | None, how: str) -> jax.Array:
  """``[B, L, D] -> [B, D]``: mean over real tokens, or the first token (``cls``)."""
  if how == "cls":
    return h[:, 0]
  if mask is None:
    return h.mean(axis=1)
  w = mask.astype(h.dtype)[..., None]  # [B, L, 1]
  return (h * w).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1.0)


class LanguageModel(nnx.Module):
  """Causal LM: ``tokens [B, L] -> logits [B, L, V]``; output layer optionally tied."""

  def __init__(self, encoder: Encoder, vocab_size: int, *, tie: bool = True, rngs: nnx.Rngs):
    if not encoder.causal:
      raise ValueError("a language model needs a causal encoder (causal=True)")
    self.encoder = encoder
    self.tie = tie
    self.out = None if tie else nnx.Linear(encoder.dim, vocab_size, use_bias=False, rngs=rngs)

  def __call__(self, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    return self.logits(self.encoder(tokens, mask))  # [B, L, V]

  def logits(self, h: jax.Array) -> jax.Array:
    """Features ``[..., D]`` (all positions ``[B, L, D]`` or one ``[B, D]``) -> ``[..., V]``."""
    if self.tie:
      return h @ self.encoder.embed.embedding[...].T.astype(h.dtype)
    return self.out(h)

  def flops(self, length: int) -> int:
    """Encoder + the output projection to the vocabulary, for one sequence."""
    vocab = self.encoder.embed.num_embeddings
    return self.encoder.flops(length) + 2 * length * self.encoder.dim * vocab

  def tokens_per_example(self, length: int) -> int:
    return length


class Classifier(nnx.Module):
  """Sequence classification: pool the encoder's features, then an MLP."""

  def __init__(self, encoder: Encoder, num_classes: int, *, pool: str = "mean", rngs: nnx.Rngs):
    if pool not in POOLS:
      raise ValueError(f"unknown pool '{pool}'; choose one of {', '.join(POOLS)}")
    self.encoder, self.pool = encoder, pool
    d = encoder.dim
    self.hidden = nnx.Linear(d, d, rngs=rngs)
    self.out = nnx.Linear(d, num_classes, rngs=rngs)

  def __call__(self, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    u = pool(self.encoder(tokens, mask), mask, self.pool)  # [B, D]
    return self.out(jax.nn.gelu(self.hidden(u)))  # [B, C]

  def flops(self, length: int) -> int:
    """Encoder + the pooled MLP head (pooling itself is not counted), for one sequence."""
    d = self.encoder.dim
    return self.encoder.flops(length) + 2 * d * d + 2 * d * self.out.out_features

  def tokens_per_example(self, length: int) -> int:
    return length


class DualEncoder(nnx.Module):
  """Two-document matching with one shared encoder and no cross-attention.

  Features ``[u, v, u*v, u-v]`` of the pooled documents go through an MLP.
  """

  def __init__(self, encoder: Encoder, num_classes: int, *, pool: str = "mean", rngs: nnx.Rngs):
    if pool not in POOLS:
      raise ValueError(f"unknown pool '{pool}'; choose one of {', '.join(POOLS)}")
    self.encoder, self.pool = encoder, pool
    d = encoder.dim
    self.hidden = nnx.Linear(4 * d, d, rngs=rngs)
    self.out = nnx.Linear(d, num_classes, rngs=rngs)

  def __call__(
    self, tokens1: jax.Array, mask1: jax.Array, tokens2: jax.Array, mask2: jax.Array
  ) -> jax.Array:
    u = pool(self.encoder(tokens1, mask1), mask1, self.pool)  # [B, D]
    v = pool(self.encoder(tokens2, mask2), mask2, self.pool)  # [B, D]
    feats = jnp.concatenate([u, v, u * v, u - v], axis=-1)  # [B, 4D]
    return self.out(jax.nn.gelu(self.hidden(feats)))  # [B, C]

  def flops(self, length: int) -> int:
    """Two encoder passes (one per document) + the matching MLP, for one pair."""
    d = self.encoder.dim
    return 2 * self.encoder.flops(length) + 2 * 4 * d * d + 2 * d * self.out.out_features

  def tokens_per_example(self, length: int) -> int:
    return 2 * length  # two documents of ``length`` tokens
