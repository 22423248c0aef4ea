"""Sequence classification: the shared loss and head (ListOps, Text, Image, Retrieval, ...).

``ClassificationTask`` computes cross-entropy and accuracy from ``logits(model, batch)``, an
overridable hook (retrieval's dual encoder reads two documents there), and builds a pooled
``heads.Classifier`` through ``build_head``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lrm import heads
from lrm.model import Encoder
from lrm.tasks.base import Sums, Task, length_mask


def classification_sums(logits: jax.Array, labels: jax.Array, valid: jax.Array) -> Sums:
  """Cross-entropy and accuracy totals over the valid rows of a batch."""
  w = valid.astype(jnp.float32)  # [B]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  n = w.sum()
  return {"loss": ((ce * w).sum(), n), "accuracy": ((correct * w).sum(), n)}


class ClassificationTask(Task):
  """A task whose batches hold ``inputs [B, L]``, ``lengths [B]`` and ``label [B]``."""

  main_metric = "accuracy"
  main_mode = "max"

  def build_head(self, encoder: Encoder, options: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
    pool = options.get("pool", "mean")
    return heads.Classifier(encoder, self.num_classes, pool=pool, rngs=rngs)

  def logits(self, model: nnx.Module, batch: Mapping[str, jax.Array]) -> jax.Array:
    """``[B, C]`` class scores of a batch."""
    tokens = batch["inputs"].astype(jnp.int32)  # [B, L] (stored compactly, e.g. uint8)
    mask = length_mask(batch["lengths"], tokens.shape[1])  # [B, L]
    return model(tokens, mask)  # [B, C]

  def loss(self, model: nnx.Module, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, Sums]:
    sums = classification_sums(self.logits(model, batch), batch["label"], batch["valid"])
    total, n = sums["loss"]
    return total / jnp.maximum(n, 1.0), sums
