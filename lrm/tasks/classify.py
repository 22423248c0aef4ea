"""Shared loss and metrics for sequence-classification tasks (ListOps, Text, Image, ...)."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lrm.tasks.base import Sums, Task


def length_mask(lengths: jax.Array, seq_len: int) -> jax.Array:
  """``[B] -> [B, L]`` boolean mask, True on the first ``lengths[b]`` positions."""
  return jnp.arange(seq_len)[None, :] < lengths[:, None]


def classification_sums(logits: jax.Array, labels: jax.Array, valid: jax.Array) -> Sums:
  """Cross-entropy and accuracy totals over the valid rows of a batch."""
  w = valid.astype(jnp.float32)  # [B]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  n = w.sum()
  return {"loss": ((ce * w).sum(), n), "accuracy": ((correct * w).sum(), n)}


class ClassificationTask(Task):
  """A task whose batches hold ``inputs [B, L]``, ``lengths [B]`` and ``label [B]``."""

  head = "classify"
  main_metric = "accuracy"
  main_mode = "max"

  def loss(self, model: nnx.Module, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, Sums]:
    tokens = batch["inputs"].astype(jnp.int32)  # [B, L] (stored compactly, e.g. uint8)
    mask = length_mask(batch["lengths"], tokens.shape[1])  # [B, L]
    logits = model(tokens, mask)  # [B, C]
    sums = classification_sums(logits, batch["label"], batch["valid"])
    total, n = sums["loss"]
    return total / jnp.maximum(n, 1.0), sums
