"""MAD's synthetic suite (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
Architectures", arXiv 2403.17844) as six lrm tasks.

* ``mad_in_context_recall``: in-context recall, multi-query (MAD ``in-context-recall``).
* ``mad_noisy_recall``: the same with pairs replaced by noise tokens (``noisy-in-context-recall``).
* ``mad_fuzzy_recall``: keys and values of 1-3 tokens (``fuzzy-in-context-recall``).
* ``mad_selective_copy``: copy the content tokens scattered among blanks (``selective-copying``).
* ``mad_compression``: reconstruct the sequence from one position's features (``compression``).
* ``mad_memorization``: a fixed key->value map stored in the weights (``memorization``).

Layouts, ids and worked examples are in ``lrm/data/mad_gen.py``; the defaults are MAD's
baseline settings (``configs/tasks/*.yml``), its difficulty settings are variants of
``experiments/mad.py``. Data is generated in memory from ``(seed, split)``: byte-identical per
seed, no files. Batches hold ``inputs, targets, weights, distance [B, L]`` and ``lengths [B]``
(the recall family also ``next``), as ``recall``'s; the metrics are ``recall``'s too
(``accuracy`` per answer, ``exact`` per example, accuracy per distance bucket).

Loss. MAD trains the recall family by next-token prediction on *every* position and scores
only the asked ones; ``loss_positions="all"`` does that (``loss`` is then the all-position
loss and ``answer_loss`` the loss on the asked positions), ``"targets"`` (the default) trains
on the asked positions only. Selective copying, compression and memorization train on their
targets in MAD as well, so they have no such option.

Compression. MAD trains it with an encoder-decoder (``mad/model/auto_encoder.py``): the
encoder's output at the last position (the compression token) is the whole code; a fixed
sinusoidal embedding of each output position is added to that one vector and a two-layer MLP
decoder (norm, linear, GELU, twice; then norm and the output layer) produces every position's
logits. ``Compressor`` below is that head around lrm's (causal) ``Encoder``, so any mixer is
tested by what its last position can carry; the loss and metrics are the common ones with
every position asked.

Reference levels (the plots' lines): ``chance`` (a uniform guess among the symbols an answer
can be) and, for the recall family, ``context_guess`` (the whole past: the study report's
"guess among the context" column) and ``guess_w<r>`` for each distance bucket edge ``r``: a
uniform guess among the value ids in reach (``lrm/data/guess.py``), on the test split.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lrm.data import guess, mad_gen
from lrm.data.arrays import ArrayDataset
from lrm.model import Encoder, sinusoidal_table
from lrm.registry import register
from lrm.tasks.base import SPLITS, DataError, Sums, length_mask
from lrm.tasks.recall import PositionAnswerTask

LOSS_POSITIONS = ("targets", "all")
BUCKETS = (8, 32, 128)


class MadTask(PositionAnswerTask):
  """Shared: split generation (train vs evaluation draws), the two losses, guess levels."""

  values: tuple[int, int] | None = None  # value ids (inclusive) for the guess-in-reach lines
  loss_positions = "targets"

  def __init__(
    self,
    *,
    path: str,
    seed: int,
    sizes: Mapping[str, int],
    distance_buckets: Sequence[int],
    loss_positions: str = "targets",
  ):
    self.refuse_path(path)
    if loss_positions not in LOSS_POSITIONS:
      raise DataError(
        f"{self._name}: loss_positions='{loss_positions}'; use one of {', '.join(LOSS_POSITIONS)}"
      )
    self.loss_positions = loss_positions
    self._levels: dict[str, float] | None = None
    super().__init__(seed=seed, sizes=sizes, distance_buckets=distance_buckets)

  def _arrays(self, n: int, seed: list[int], training: bool) -> dict[str, np.ndarray]:
    raise NotImplementedError  # abstract: each task generates its own layout

  def _options(self, make: Any, **opts: Any) -> None:
    """Validate ``opts`` with the generator's check (a DataError naming the task)."""
    try:
      make(**opts)
    except ValueError as e:
      raise DataError(f"{self._name}: {e}") from None

  def setup(self) -> None:
    if self._data:
      return
    t0 = time.perf_counter()
    for i, split in enumerate(SPLITS):  # split i is drawn from the stream (seed, i)
      arrays = self._arrays(self.sizes[split], [self.seed, i], split == "train")
      self._data[split] = ArrayDataset(arrays)
    total = sum(self.sizes.values())
    print(f"{self._name}: generated {total} examples in {time.perf_counter() - t0:.2f}s")

  def loss(self, model: nnx.Module, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, Sums]:
    tokens = batch["inputs"].astype(jnp.int32)  # [B, L]
    mask = length_mask(batch["lengths"], tokens.shape[1])  # [B, L]
    logits = model(tokens, mask)  # [B, L, V]
    # the answer metrics of ``recall`` on the logits computed once (the model is not rerun)
    loss, sums = super().loss(lambda *_: logits, batch)
    if self.loss_positions == "targets":
      return loss, sums
    w = (mask * batch["valid"][:, None]).astype(jnp.float32)  # [B, L] every real position
    nxt = batch["next"].astype(jnp.int32)  # [B, L] the stream's next token
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), nxt)
    sums["answer_loss"] = sums["loss"]
    sums["loss"] = ((ce * w).sum(), w.sum())
    return (ce * w).sum() / jnp.maximum(w.sum(), 1.0), sums

  def metric_order(self) -> list[str]:
    return ["loss", "accuracy", "exact", "answer_loss", *super().metric_order()[3:]]

  def guess_levels(self) -> dict[str, float]:
    """``context_guess`` and ``guess_w<r>`` (each bucket edge r) on the test split (once)."""
    if self.values is None:
      return {}
    if self._levels is None:
      self._levels = guess.guess_levels(
        self.dataset("test").arrays, self.values, reaches=self.buckets
      )
    return self._levels

  def reference_levels(self) -> dict[str, dict[str, float]]:
    levels = super().reference_levels()
    levels["accuracy"].update(self.guess_levels())
    if self.loss_positions == "all":  # log(answers) is the chance of the asked positions only
      levels["answer_loss"] = levels.pop("loss")
    return levels


# ---- the recall family ----------------------------------------------------------------------
@register("task", "mad_in_context_recall")
class MadRecallTask(MadTask):
  """In-context recall (MAD); layout in ``lrm/data/mad_gen.py``.

  Options:
    vocab_size: every id; keys and values split the ids left by noise (and the copy token).
    seq_len: tokens per stream (even); the model reads ``seq_len - 1`` (``seq_len`` without
      ``multi_query``).
    multi_query: ask every repeated key (MAD's benchmark); else only the final key, after a
      copy token.
    noise_vocab_size, frac_noise: noise ids taken from the vocabulary, and the probability
      that a pair is replaced by two of them (``mad_noisy_recall``'s defaults: 16, 0.2).
    loss_positions: "targets" (train on the asked positions) or "all" (MAD: every next token).
    distance_buckets: edges of the per-distance accuracy metrics and the guess-in-reach lines.
    num_train, num_val, num_test: split sizes; seed: generation seed.
    path: must be empty (the data is generated in memory).
  """

  _name = "mad_in_context_recall"

  def __init__(
    self,
    *,
    path: str = "",
    vocab_size: int = 16,
    seq_len: int = 128,
    multi_query: bool = True,
    noise_vocab_size: int = 0,
    frac_noise: float = 0.0,
    loss_positions: str = "targets",
    distance_buckets: Sequence[int] = BUCKETS,
    num_train: int = 12_800,
    num_val: int = 1_280,
    num_test: int = 1_280,
    seed: int = 0,
  ):
    self.opts = dict(
      vocab_size=int(vocab_size),
      seq_len=int(seq_len),
      noise_vocab_size=int(noise_vocab_size),
      frac_noise=float(frac_noise),
      multi_query=bool(multi_query),
    )
    self._options(mad_gen.check_recall_options, **self.opts)
    sizes = {"train": num_train, "validation": num_val, "test": num_test}
    super().__init__(
      path=path,
      seed=seed,
      sizes=sizes,
      distance_buckets=distance_buckets,
      loss_positions=loss_positions,
    )
    self.ids = mad_gen.recall_ids(
      self.opts["vocab_size"], self.opts["noise_vocab_size"], self.opts["multi_query"]
    )
    self.seq_len = self.opts["seq_len"] - (1 if multi_query else 0)
    self.num_classes = self.opts["vocab_size"]
    self.answers = self.ids["num_values"]
    k = self.ids["num_keys"]
    self.values = (k, k + self.answers - 1)

  def _arrays(self, n: int, seed: list[int], training: bool) -> dict[str, np.ndarray]:
    return mad_gen.recall_arrays(n, seed=seed, **self.opts)

  def vocab(self) -> dict[str, Any]:
    out: dict[str, Any] = {"size": self.num_classes, "keys": [0, self.values[0] - 1]}
    out["values"] = list(self.values)
    if self.opts["noise_vocab_size"]:
      s = self.ids["noise_start"]
      out["noise"] = [s, s + self.opts["noise_vocab_size"] - 1]
    if not self.opts["multi_query"]:
      out["copy"] = self.ids["copy"]
    return out


@register("task", "mad_noisy_recall")
class MadNoisyRecallTask(MadRecallTask):
  """Noisy in-context recall (MAD): ``mad_in_context_recall`` with MAD's noisy baseline as defaults
  (32 ids of which 16 are noise, a pair replaced by noise with probability 0.2)."""

  _name = "mad_noisy_recall"

  def __init__(
    self,
    *,
    path: str = "",
    vocab_size: int = 32,
    seq_len: int = 128,
    multi_query: bool = True,
    noise_vocab_size: int = 16,
    frac_noise: float = 0.2,
    loss_positions: str = "targets",
    distance_buckets: Sequence[int] = BUCKETS,
    num_train: int = 12_800,
    num_val: int = 1_280,
    num_test: int = 1_280,
    seed: int = 0,
  ):
    super().__init__(
      path=path,
      vocab_size=vocab_size,
      seq_len=seq_len,
      multi_query=multi_query,
      noise_vocab_size=noise_vocab_size,
      frac_noise=frac_noise,
      loss_positions=loss_positions,
      distance_buckets=distance_buckets,
      num_train=num_train,
      num_val=num_val,
      num_test=num_test,
      seed=seed,
    )


@register("task", "mad_fuzzy_recall")
class MadFuzzyRecallTask(MadTask):
  """Fuzzy in-context recall (MAD); layout in ``lrm/data/mad_gen.py``.

  Options:
    vocab_size: every id (the top one pads; key and value token ids split the rest).
    seq_len: tokens the model reads (streams are left-padded to it).
    k_motif_size, v_motif_size: longest key and value motifs (tokens); evaluation keys are
      always ``k_motif_size`` long.
    multi_query, noise_vocab_size, frac_noise, loss_positions, distance_buckets, num_train,
      num_val, num_test, seed, path: as for ``mad_in_context_recall`` (MAD's benchmark uses
      no noise here).
  """

  _name = "mad_fuzzy_recall"

  def __init__(
    self,
    *,
    path: str = "",
    vocab_size: int = 16,
    seq_len: int = 128,
    k_motif_size: int = 3,
    v_motif_size: int = 3,
    multi_query: bool = True,
    noise_vocab_size: int = 0,
    frac_noise: float = 0.0,
    loss_positions: str = "targets",
    distance_buckets: Sequence[int] = BUCKETS,
    num_train: int = 12_800,
    num_val: int = 1_280,
    num_test: int = 1_280,
    seed: int = 0,
  ):
    self.opts = dict(
      vocab_size=int(vocab_size),
      seq_len=int(seq_len),
      k_motif_size=int(k_motif_size),
      v_motif_size=int(v_motif_size),
      noise_vocab_size=int(noise_vocab_size),
      frac_noise=float(frac_noise),
      multi_query=bool(multi_query),
    )
    self._options(mad_gen.check_fuzzy_options, **self.opts)
    sizes = {"train": num_train, "validation": num_val, "test": num_test}
    super().__init__(
      path=path,
      seed=seed,
      sizes=sizes,
      distance_buckets=distance_buckets,
      loss_positions=loss_positions,
    )
    self.ids = mad_gen.fuzzy_ids(vocab_size, noise_vocab_size, multi_query)
    self.seq_len = self.opts["seq_len"]
    self.num_classes = self.opts["vocab_size"]
    self.answers = self.ids["num_values"]
    k = self.ids["num_keys"]
    self.values = (k, k + self.answers - 1)

  def _arrays(self, n: int, seed: list[int], training: bool) -> dict[str, np.ndarray]:
    return mad_gen.fuzzy_arrays(n, seed=seed, training=training, **self.opts)

  def vocab(self) -> dict[str, Any]:
    out: dict[str, Any] = {"size": self.num_classes, "pad": self.ids["pad"]}
    out.update(keys=[0, self.values[0] - 1], values=list(self.values))
    if self.opts["noise_vocab_size"]:
      s = self.ids["noise_start"]
      out["noise"] = [s, s + self.opts["noise_vocab_size"] - 1]
    if not self.opts["multi_query"]:
      out["copy"] = self.ids["copy"]
    return out


# ---- selective copying, compression, memorization ---------------------------------------------
@register("task", "mad_selective_copy")
class MadSelectiveCopyTask(MadTask):
  """Selective copying (MAD); layout in ``lrm/data/mad_gen.py``.

  Options:
    vocab_size: every id; content ``0 .. vocab_size-3``, blank ``vocab_size-2``, copy
      ``vocab_size-1``.
    seq_len: tokens per example (> 2 * num_tokens_to_copy + 1).
    num_tokens_to_copy: content tokens per example (repeats allowed).
    distance_buckets, num_train, num_val, num_test, seed, path: as for ``mad_in_context_recall``.
  """

  _name = "mad_selective_copy"

  def __init__(
    self,
    *,
    path: str = "",
    vocab_size: int = 16,
    seq_len: int = 256,
    num_tokens_to_copy: int = 16,
    distance_buckets: Sequence[int] = BUCKETS,
    num_train: int = 12_800,
    num_val: int = 1_280,
    num_test: int = 1_280,
    seed: int = 0,
  ):
    self.opts = dict(
      vocab_size=int(vocab_size), seq_len=int(seq_len), num_tokens=int(num_tokens_to_copy)
    )
    self._options(mad_gen.check_copy_options, **self.opts)
    sizes = {"train": num_train, "validation": num_val, "test": num_test}
    super().__init__(path=path, seed=seed, sizes=sizes, distance_buckets=distance_buckets)
    self.seq_len = self.opts["seq_len"]
    self.num_classes = self.opts["vocab_size"]
    self.answers = self.num_classes - 2

  def _arrays(self, n: int, seed: list[int], training: bool) -> dict[str, np.ndarray]:
    return mad_gen.copy_arrays(n, seed=seed, **self.opts)

  def vocab(self) -> dict[str, Any]:
    v = self.num_classes
    return {"size": v, "content": [0, v - 3], "blank": v - 2, "copy": v - 1}


class Compressor(nnx.Module):
  """Encoder-decoder through the last position (MAD's AutoEncoder): ``[B, L] -> [B, L, V]``.

  ``z = encoder(tokens)[last]``; for every output position j, ``x_j = z + sin_pos(j)``, then
  ``(LayerNorm, Linear, GELU) x 2``, LayerNorm and the output layer (tied to the token
  embedding with ``tie=True``). The position table is fixed, so the decoder can only tell
  positions apart; all content must pass through ``z``.
  """

  def __init__(self, encoder: Encoder, vocab_size: int, *, tie: bool, rngs: nnx.Rngs):
    d = encoder.dim
    self.encoder, self.tie = encoder, tie
    self.norm1, self.fc1 = nnx.LayerNorm(d, rngs=rngs), nnx.Linear(d, d, rngs=rngs)
    self.norm2, self.fc2 = nnx.LayerNorm(d, rngs=rngs), nnx.Linear(d, d, rngs=rngs)
    self.norm_out = nnx.LayerNorm(d, rngs=rngs)
    self.out = None if tie else nnx.Linear(d, vocab_size, rngs=rngs)

  def __call__(self, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    h = self.encoder(tokens, mask)  # [B, L, D]
    b, length, d = h.shape
    last = (mask.sum(axis=1) - 1) if mask is not None else jnp.full((b,), length - 1)
    z = h[jnp.arange(b), last]  # [B, D] the compression token's features
    x = z[:, None, :] + jnp.asarray(sinusoidal_table(length, d), h.dtype)[None]  # [B, L, D]
    x = jax.nn.gelu(self.fc1(self.norm1(x)))
    x = jax.nn.gelu(self.fc2(self.norm2(x)))
    x = self.norm_out(x)
    if self.tie:
      return x @ self.encoder.embed.embedding[...].T.astype(x.dtype)  # [B, L, V]
    return self.out(x)

  def flops(self, length: int) -> int:
    """Encoder + the decoder MLP and output layer at every one of the ``length`` positions."""
    d, v = self.encoder.dim, self.encoder.embed.num_embeddings
    return self.encoder.flops(length) + length * (2 * 2 * d * d + 2 * d * v)

  def tokens_per_example(self, length: int) -> int:
    return length


@register("task", "mad_compression")
class MadCompressionTask(MadTask):
  """Compression (MAD): reconstruct every input from the compression token's features.

  Options:
    vocab_size: every id; content ``0 .. vocab_size-2``, compression token ``vocab_size-1``.
    seq_len: tokens per example, the compression token last.
    distance_buckets, num_train, num_val, num_test, seed, path: as for ``mad_in_context_recall``.
  The head is ``Compressor`` (module docstring); ``model.tie_embedding`` ties its output layer.
  """

  _name = "mad_compression"

  def __init__(
    self,
    *,
    path: str = "",
    vocab_size: int = 16,
    seq_len: int = 32,
    distance_buckets: Sequence[int] = BUCKETS,
    num_train: int = 12_800,
    num_val: int = 1_280,
    num_test: int = 1_280,
    seed: int = 0,
  ):
    self.opts = dict(vocab_size=int(vocab_size), seq_len=int(seq_len))
    self._options(lambda **o: mad_gen.compression_arrays(1, seed=0, **o), **self.opts)
    sizes = {"train": num_train, "validation": num_val, "test": num_test}
    super().__init__(path=path, seed=seed, sizes=sizes, distance_buckets=distance_buckets)
    self.seq_len = self.opts["seq_len"]
    self.num_classes = self.opts["vocab_size"]
    self.answers = self.num_classes - 1

  def _arrays(self, n: int, seed: list[int], training: bool) -> dict[str, np.ndarray]:
    return mad_gen.compression_arrays(n, seed=seed, **self.opts)

  def build_head(self, encoder: Encoder, options: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
    if "pool" in options:
      raise ValueError("mad_compression: model.pool does not apply (the code is the last token)")
    return Compressor(encoder, self.vocab_size, tie=options.get("tie_embedding", True), rngs=rngs)

  def vocab(self) -> dict[str, Any]:
    v = self.num_classes
    return {"size": v, "content": [0, v - 2], "compression": v - 1}


@register("task", "mad_memorization")
class MadMemorizationTask(MadTask):
  """Memorization (MAD): one fixed key->value map, asked at the insert token after each key.

  Options:
    vocab_size: every id; keys ``0 .. K-1`` (``K = (vocab_size-1)//2``), values up to
      ``vocab_size-2``, insert token ``vocab_size-1``.
    seq_len: tokens per example (even: ``seq_len/2`` key-insert pairs).
    distance_buckets, num_train, num_val, num_test, seed, path: as for
      ``mad_in_context_recall``; the map is drawn from the stream ``(seed, 3)`` and shared by
      every split.
  """

  _name = "mad_memorization"

  def __init__(
    self,
    *,
    path: str = "",
    vocab_size: int = 256,
    seq_len: int = 32,
    distance_buckets: Sequence[int] = BUCKETS,
    num_train: int = 256,
    num_val: int = 1_280,
    num_test: int = 1_280,
    seed: int = 0,
  ):
    self.opts = dict(vocab_size=int(vocab_size), seq_len=int(seq_len))
    sizes = {"train": num_train, "validation": num_val, "test": num_test}
    super().__init__(path=path, seed=seed, sizes=sizes, distance_buckets=distance_buckets)
    self.kv_map = mad_gen.memorization_map(self.opts["vocab_size"], self.seed)
    self._options(
      lambda **o: mad_gen.memorization_arrays(1, seed=0, kv_map=self.kv_map, **o), **self.opts
    )
    self.seq_len = self.opts["seq_len"]
    self.num_classes = self.opts["vocab_size"]
    self.answers = len(self.kv_map)  # the values the map uses

  def _arrays(self, n: int, seed: list[int], training: bool) -> dict[str, np.ndarray]:
    return mad_gen.memorization_arrays(n, seed=seed, kv_map=self.kv_map, **self.opts)

  def vocab(self) -> dict[str, Any]:
    v, k = self.num_classes, len(self.kv_map)
    return {"size": v, "keys": [0, k - 1], "values": [k, v - 2], "insert": v - 1}
