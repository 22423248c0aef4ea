"""The task contract: a task owns its data, its head, its loss and its metrics.

The trainer never branches on the task. It calls, in order:

  task = lrm.tasks.build({"name": "listops", **config.data})   # options = data config
  task.setup()                     # load / generate data; raise DataError on bad input
  task.vocab()                     # JSON-able vocabulary, saved into the run directory
  model = task.build_model(config.model, rngs)   # Encoder + task.build_head(...)
  task.dataset("train" | "validation" | "test") -> ArrayDataset
  loss, sums = task.loss(model, batch)                         # inside jit
  task.summarize(summed) -> {"accuracy": ..., ...}             # on host, after summing

``sums`` maps a metric name to a pair ``(total, count)`` of scalars; the trainer adds them
over batches (and devices), and ``summarize`` turns totals into final metrics (accuracy,
bits per byte, perplexity ...). Every batch carries ``valid [B]`` (False on the padding rows
of a last eval batch); losses and sums must weight by it.

Each task builds its own head (``build_head``): ``CausalTask`` a language-model head,
``ClassificationTask`` (``classify.py``) a pooled classifier, retrieval a dual encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm import heads
from lrm.data import DataError as DataError  # the contract's error, defined with the data
from lrm.data.arrays import ArrayDataset
from lrm.model import Encoder

SPLITS = ("train", "validation", "test")
HEAD_OPTIONS = ("pool", "tie_embedding")  # ``model`` config keys that go to the head

Sums = dict[str, tuple[jax.Array, jax.Array]]


def length_mask(lengths: jax.Array, seq_len: int) -> jax.Array:
  """``[B] -> [B, L]`` boolean mask, True on the first ``lengths[b]`` positions."""
  return jnp.arange(seq_len)[None, :] < lengths[:, None]


class Task:
  """Base class. Subclasses set the class attributes and implement the methods."""

  causal: bool = False  # LM-style tasks need a causal encoder
  main_metric: str = "accuracy"  # what "best checkpoint" means
  main_mode: str = "max"  # "max" or "min"
  num_classes: int = 0
  seq_len: int = 0  # padded length of every sequence the model sees

  def setup(self) -> None:
    """Load or generate data (idempotent)."""

  def vocab(self) -> dict[str, Any]:
    """JSON-able description of the token ids (sorted, fixed), saved with the run."""
    raise NotImplementedError  # abstract

  @property
  def vocab_size(self) -> int:
    raise NotImplementedError  # abstract

  def dataset(self, split: str) -> ArrayDataset:
    """The split's data; the default serves ``self._data[split]`` filled by ``setup``."""
    self.setup()
    return self._data[split]

  # ---- model -----------------------------------------------------------------------------
  def build_model(self, model_cfg: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
    """Encoder + this task's head, from the ``model`` config section."""
    cfg = dict(model_cfg)
    head_opts = {k: cfg.pop(k) for k in HEAD_OPTIONS if k in cfg}
    enc = Encoder(
      vocab_size=self.vocab_size, causal=self.causal, max_len=self.seq_len, rngs=rngs, **cfg
    )
    return self.build_head(enc, head_opts, rngs)

  def build_head(self, encoder: Encoder, options: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
    """The whole model: ``encoder`` inside this task's head; ``options`` ⊆ ``HEAD_OPTIONS``."""
    raise NotImplementedError  # abstract

  # ---- training ----------------------------------------------------------------------------
  def loss(self, model: nnx.Module, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, Sums]:
    raise NotImplementedError  # abstract

  def summarize(self, sums: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """Default: every metric is total / count, in ``metric_order``."""
    return self.ordered({k: float(t) / max(float(c), 1e-12) for k, (t, c) in sums.items()})

  def metric_order(self) -> list[str]:
    """How reports list the metrics (the rest follow in their own order). Sums come back
    from the devices with sorted keys, so the order is restored here."""
    return ["loss", self.main_metric]

  def ordered(self, metrics: Mapping[str, float]) -> dict[str, float]:
    first = [k for k in self.metric_order() if k in metrics]
    return {k: metrics[k] for k in [*first, *(k for k in metrics if k not in first)]}

  def reference_levels(self) -> dict[str, dict[str, float]]:
    """Known levels to read curves against, ``{metric: {"chance": value, ...}}``."""
    return {}

  def num_tokens(self, batch: Mapping[str, np.ndarray]) -> int:
    """Real (unpadded) tokens in a batch, for throughput."""
    return int(sum(np.asarray(v).sum() for k, v in batch.items() if k.startswith("lengths")))


class CausalTask(Task):
  """A task with a causal encoder and a language-model head: logits ``[B, L, V]``."""

  causal = True

  def build_head(self, encoder: Encoder, options: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
    tie = options.get("tie_embedding", True)
    return heads.LanguageModel(encoder, self.vocab_size, tie=tie, rngs=rngs)
