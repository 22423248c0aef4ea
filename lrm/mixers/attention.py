"""Attention: the pieces every attention mixer shares and its kernels.

One file for how attention is computed, in reading order:

* shared pieces: ``AttentionBase`` (QKV / output projections, rotary positions, option checks,
  FLOP accounting for the projections; every attention mixer subclasses it) and
  ``dense_attention``, the O(L*S) masked oracle every efficient kernel is tested against (its
  softmax, ``masks.masked_softmax``, is shared with the kernels and the caches);
* ``attention_impl``: the one choice of kernel for ``global`` and ``local``, from the platform,
  the compute dtype and the shapes (each mixer's ``choose_impl`` calls it once per call);
* the fused paths behind ``impl="auto"`` on accelerators (cuDNN, Pallas splash);
* the block-sparse kernel shared by ``local``, ``random`` and ``bigbird``;
* decoding pieces: one token's projections at a traced position, its attention over cached
  keys, and the output projection (used by ``global``'s ``step`` in ``global_attention.py``,
  ``local``'s in ``local.py``, ``random``'s and ``bigbird``'s in ``sparse.py``).

The mixers live in their own files: ``global`` (``global_attention.py``), ``local``
(``local.py``), ``random`` and ``bigbird`` (``sparse.py``).

Inside the kernels tensors use the layout ``[B, N, L, H]`` so that every einsum has its batch
dimensions leading and contracts the last one (no transposes inside dots). Letters follow the
legend in ``base.py``; S is a cache's key slots.

The choice of kernel
--------------------

``global`` and ``local`` take ``impl="auto"`` (their default); ``attention_impl`` decides:

  platform global (full attention)        local (sliding window, no global tokens)
  cpu      xla (dot_product_attention)     blocked (lrm's O(L*w) kernel)
  gpu      cudnn if cuDNN takes it, else   cudnn if causal and cuDNN takes it, else blocked
           xla
  tpu      splash (Pallas), else xla       splash (Pallas, LocalMask), else blocked

* ``cudnn``: ``jax.nn.dot_product_attention(implementation="cudnn")``, cuDNN's flash
  attention (its sliding window is left-only, so only a causal window runs there). It takes
  bfloat16/float16 only and some head dims; whether it takes a shape is asked of JAX itself
  by tracing the call (``jax.eval_shape``), so a float32 run, an old GPU or a missing cuDNN
  falls back. Padding goes in as key lengths (``mask.sum(-1)``): it reads the mask as "real
  tokens first", which is how every lrm task pads (masks are built from lengths); an explicit
  ``impl="xla"`` honours any mask.
* ``splash``: the Pallas TPU splash-attention kernel, padding by segment ids (exact for any
  mask), the sequence and the head dim padded to multiples of 128 (TPU lanes). Traced for
  TPU it is the Mosaic kernel (a ``tpu_custom_call``); traced for any other platform (only
  when asked for, ``impl="splash"``: the tests) it runs in Pallas interpret mode.

The platform is the target's (``base.target()``): this machine's backend, or the one a
``with lrm.mixers.for_platform("tpu"):`` block traces for. So a CPU host lowering the train
step for a TPU (``scripts/export_step.py``) gets splash in Mosaic, and lowering for ``"cuda"``
gets the fallback of a GPU without cuDNN (JAX needs cuDNN itself to trace a cuDNN call).

``lrm.mixers.impl_of(mixer, dtype, length)`` names the path a mixer runs for that input (what
the trainer records in results.json, per layer); ``mixer.impl`` is the float32 answer.

The block step (hand-written VJP)
---------------------------------

``block_attend(q, k, v, biases, extras)``: each of Q query blocks of T queries reads its own U
keys (gathered by the caller: a band of neighbours, random blocks, or the whole sequence for
global rows), with additive score biases (0 allowed, ``MASKED_LOGIT`` not), plus optional
extra score columns whose logits the caller computed (global keys, summary slots). One
softmax spans a row's U keys and all its extra columns; the output is ``P V`` over the U keys
and the extras' probabilities, whose values the caller applies (so their gradients are
ordinary autodiff).

Why a custom VJP: autodiff of a masked softmax re-reads the ``[B, N, Q, T, U]`` scores many
times (selects, the max's and the sum's transposes), the largest tensors of the kernel. The
backward here is FlashAttention's (Dao et al. 2022, arXiv:2205.14135, Algorithm 4, without
its tiling): ``dP = dO V^T``, ``delta = rowsum(dO * O) + rowsum(P_x * dP_x)`` over the
extras, ``dS = P * (dP - delta)``, then ``dQ = dS K``, ``dK = dS^T Q``, ``dV = P^T dO``: three
passes over the scores instead of about ten. Masked entries have ``P = 0`` exactly (``exp``
of a -1e30 logit underflows), so their gradients are exactly zero; a row whose every entry
is masked gets uniform weights: finite, and such rows (padding) are discarded by callers.

The block-sparse kernel
-----------------------

The (padded) sequence is cut into W blocks of T tokens. Each query block reads only the key
blocks its pattern allows: a band of neighbours (static slices), a table of gathered blocks
(random blocks) and a few shared key positions (global tokens), so time and memory are
linear in L and no L x S matrix is formed. Query blocks that attend to every key (global
rows) go through ``full_rows``, a slice of the dense oracle. Everything is tested against
``dense_attention`` with the masks of ``masks.py``.

Decoding
--------

A cache keeps keys already rotated at their own absolute positions (RoPE makes a score depend
on the offset only, so stored keys never change). ``rotary_at`` rotates by a position that is
traced under jit and reproduces ``rotary``'s float64 angles to float32 rounding at any
position below ``2**21``: the angle of ``pos = sum_l d_l 128**l`` is put together from three
float64 tables of 128 digits by the angle-addition formulas. (A float32 ``pos * freq`` would
be off by ``pos * 6e-8`` radians: 2e-3 at 32K tokens.) ``global`` keeps every past key and
value, ``[B*N, S, H]`` up to ``max_len``, and a step attends its query to all of them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType

from lrm.mixers import masks
from lrm.mixers.base import MASKED_LOGIT, Mixer, target
from lrm.mixers.masks import masked_softmax

F32 = jnp.float32


# ---- shared by every attention mixer: projections, rotary positions, the dense oracle ------------
# XLA's cost model charges about this many flops per score element for mask + softmax
# (select, max, subtract, exp, select, sum, divide, ...): calibrated against cost_analysis
# at dim=64, L=256; tests/test_attention.py checks every mixer total to 15%.
SOFTMAX_FLOPS = 8


def dense_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked softmax attention; the oracle. ``q [B, N, L, H]``, ``k, v [B, N, S, H]``, ``mask``
  broadcastable to ``[B, N, L, S]`` (True = may attend). ``q`` is pre-scaled.
  Returns float32 ``[B, N, L, H]``."""
  s = jnp.einsum("BNLH,BNSH->BNLS", q, k, preferred_element_type=jnp.float32)  # [B, N, L, S]
  (p,) = masked_softmax([(s, mask)])
  return jnp.einsum("BNLS,BNSH->BNLH", p.astype(v.dtype), v, preferred_element_type=jnp.float32)


def rotary(x: jax.Array, positions: np.ndarray, base: float = 10_000.0) -> jax.Array:
  """RoPE on ``x [B, N, L, H]`` by absolute ``positions [L]`` (rotate-half pairing)."""
  half = x.shape[-1] // 2
  freq = base ** (-np.arange(half) / half)  # [H/2]
  angle = positions[:, None].astype(np.float64) * freq[None, :]  # [L, H/2]
  cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
  x1, x2 = x[..., :half], x[..., half:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class AttentionBase(Mixer):
  """Projections and bookkeeping shared by all attention mixers (not registered)."""

  RUN_OPTIONS = ("rotary",)

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int,
    num_heads: int,
    rotary: bool,
    impl: str,
  ):
    super().__init__(dim, causal=causal, layer_idx=layer_idx, impl=impl, num_heads=num_heads)
    if rotary and self.head_dim % 2:
      raise ValueError(f"{self.mixer_name()}: rotary needs an even head dim, got {self.head_dim}")
    self.rotary = rotary
    self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
    self.out = nnx.Linear(dim, dim, rngs=rngs)

  def project(self, x: jax.Array, *, rotate: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``x [B, L, D]`` -> q (scaled by 1/sqrt(H)), k, v, each ``[B, N, L, H]``; rotary
    positions (if on) unless ``rotate=False``."""
    B, L, _ = x.shape
    qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, self.head_dim)  # [B, L, 3, N, H]
    q, k, v = unstack(jnp.moveaxis(qkv, (2, 1), (0, 3)))  # each [B, N, L, H]
    if self.rotary and rotate:
      pos = np.arange(L)
      q, k = rotary(q, pos), rotary(k, pos)
    return q * jnp.asarray(1.0 / math.sqrt(self.head_dim), q.dtype), k, v

  def merge(self, o: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """``o [B, N, L, H]`` -> output projection ``[B, L, D]`` in ``dtype``."""
    B, _, L, _ = o.shape
    o = jnp.moveaxis(o, 1, 2).reshape(B, L, self.dim)  # [B, L, D]
    return self.out(o.astype(dtype)).astype(dtype)

  def projection_flops(self, length: int, out_length: int | None = None) -> int:
    """QKV (+ q scaling, rotary) on ``length`` tokens, output projection on ``out_length``."""
    d, out_length = self.dim, length if out_length is None else out_length
    f = 2 * length * d * 3 * d + 3 * length * d + 2 * out_length * d * d + out_length * d
    f += length * d  # q * 1/sqrt(H)
    if self.rotary:
      f += 2 * 3 * length * d  # q and k: 4 mul + 2 add per pair
    return f

  def score_flops(self, pairs: int) -> int:
    """FLOPs of ``pairs`` (query, key) scores per head: QK^T, PV and the masked softmax."""
    return pairs * self.num_heads * (4 * self.head_dim + SOFTMAX_FLOPS)


def key_mask(mask: jax.Array | None, batch: int, length: int) -> jax.Array:
  """Padding mask ``[B, L]`` (True = real), all-True when ``mask`` is None."""
  if mask is None:
    return jnp.ones((batch, length), bool)
  if mask.shape != (batch, length):
    raise ValueError(f"mask shape {mask.shape} does not match x's [B, L] = {(batch, length)}")
  return mask.astype(bool)


# ---- the choice of kernel ------------------------------------------------------------------------
FUSED = ("cudnn", "splash")
GPU_BACKENDS = ("gpu", "cuda", "rocm")
CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
LANES = 128  # TPU lanes: splash's tile along the sequence; both L and H are padded to it


def attention_impl(
  asked: str,
  *,
  platform: str | None = None,
  dtype: jnp.dtype,
  causal: bool,
  window: int | None,
  global_tokens: int,
  head_dim: int,
  length: int | None,
  cudnn_ok: Callable[..., bool] | None = None,
  splash_ok: Callable[[], bool] | None = None,
) -> str:
  """The kernel an attention mixer runs: the one place the choice is made.

  ``asked`` is the mixer's ``impl`` option (anything but ``"auto"`` is returned as it is);
  ``platform`` the target's (None: ``base.target()``, this machine or the ``for_platform``
  being traced for), ``dtype`` the compute dtype, ``window=None`` full attention,
  ``global_tokens`` the window's extra keys (a pattern only the blocked kernel has),
  ``length`` the tokens (None: not known yet). The fallback is ``"xla"`` (full) or
  ``"blocked"`` (window). ``cudnn_ok`` defaults to the target's ``cudnn`` when it says, else
  to asking JAX (which needs cuDNN present: on a CPU host lowering for ``"cuda"`` it answers
  no, so the fallback lowers); ``splash_ok`` to asking JAX; tests pass stand-ins.
  """
  if asked != "auto":
    return asked
  if platform is None:
    here = target()
    platform = here.platform
    if cudnn_ok is None and here.cudnn is not None:
      cudnn_ok = lambda *_: here.cudnn  # noqa: E731
  fallback = "xla" if window is None else "blocked"
  if global_tokens:
    return fallback
  if window is not None and length:
    window = min(window, length - 1)
  length = length or 1024
  if platform in GPU_BACKENDS:
    cudnn_ok = cudnn_supports if cudnn_ok is None else cudnn_ok
    if jnp.dtype(dtype) in CUDNN_DTYPES and (window is None or causal):
      if cudnn_ok(jnp.dtype(dtype).name, head_dim, causal, window, length):
        return "cudnn"
  elif platform == "tpu":
    if (splash_available if splash_ok is None else splash_ok)():
      return "splash"
  return fallback


# ---- the fused paths: cuDNN (GPU), Pallas splash (TPU) -------------------------------------------
@functools.lru_cache(maxsize=256)
def cudnn_supports(
  dtype: str, head_dim: int, causal: bool, window: int | None, length: int
) -> bool:
  """Whether JAX accepts this attention for cuDNN (traced, not run: checks dtype, head dim,
  window, cuDNN presence and version, compute capability)."""
  x = jax.ShapeDtypeStruct((1, length, 1, head_dim), jnp.dtype(dtype))
  lengths = jax.ShapeDtypeStruct((1,), jnp.int32)
  try:
    jax.eval_shape(functools.partial(_cudnn, causal=causal, window=window), x, x, x, lengths)
  except (NotImplementedError, ValueError, RuntimeError, TypeError):
    return False
  return True


@functools.cache
def splash_available() -> bool:
  try:
    from jax.experimental.pallas.ops.tpu import splash_attention  # noqa: F401
  except ImportError:
    return False
  return True


def fused_attend(
  impl: str,
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  valid: jax.Array | None,
  *,
  causal: bool,
  window: int | None = None,
) -> jax.Array:
  """Attention by a fused kernel. ``q`` (pre-scaled), ``k``, ``v``: ``[B, N, L, H]``;
  ``valid [B, L]`` (True = real token) or None; ``window`` the radius w (None: full).
  Returns ``[B, N, L, H]`` in ``q``'s dtype."""
  if impl == "cudnn":
    t = lambda a: jnp.moveaxis(a, 1, 2)  # noqa: E731  [B, N, L, H] <-> [B, L, N, H]
    lengths = None
    if valid is not None:  # real tokens first (see the module docstring); never 0 keys
      lengths = jnp.maximum(valid.sum(-1), 1).astype(jnp.int32)  # [B]
    return t(_cudnn(t(q), t(k), t(v), lengths, causal=causal, window=window))
  if impl == "splash":
    return _splash(q, k, v, valid, causal=causal, window=window)
  raise ValueError(f"unknown fused attention '{impl}'; choose one of {', '.join(FUSED)}")


def _cudnn(q, k, v, lengths, *, causal: bool, window: int | None) -> jax.Array:
  """cuDNN flash attention on ``[B, L, N, H]``; a window is causal: keys i-w .. i."""
  return jax.nn.dot_product_attention(
    q,
    k,
    v,
    scale=1.0,
    is_causal=causal,
    key_value_seq_lengths=lengths,
    local_window_size=None if window is None else (window, 0),
    implementation="cudnn",
  )


def _splash(q, k, v, valid, *, causal: bool, window: int | None) -> jax.Array:
  from jax.experimental.pallas.ops.tpu import splash_attention as sa

  B, N, L, H = q.shape
  Lp, Hp = (-(-n // LANES) * LANES for n in (L, H))
  pad = ((0, 0), (0, 0), (0, Lp - L), (0, Hp - H))  # zero head dims change no score
  q, k, v = (jnp.pad(a, pad) for a in (q, k, v))  # [B, N, Lp, Hp]
  real = jnp.ones((B, L), bool) if valid is None else valid.astype(bool)
  # segment 1 = real tokens, 0 = padding (also the tail): padding attends only padding
  seg = jnp.pad(real, ((0, 0), (0, Lp - L))).astype(jnp.int32)  # [B, Lp]
  if window is not None:
    one = sa.LocalMask((Lp, Lp), (window, 0 if causal else window), offset=0)
  else:
    one = sa.CausalMask((Lp, Lp)) if causal else sa.FullMask((Lp, Lp))
  blocks = LANES
  sizes = sa.BlockSizes(
    block_q=blocks,
    block_kv=blocks,
    block_kv_compute=blocks,
    block_q_dkv=blocks,
    block_kv_dkv=blocks,
    block_kv_dkv_compute=blocks,
    block_q_dq=blocks,
    block_kv_dq=blocks,
  )
  interpret = target().platform != "tpu"  # Mosaic for TPU; elsewhere (tests) Pallas' interpreter

  def run(q, k, v, seg):
    kernel = sa.make_splash_mha(
      sa.MultiHeadMask([one] * N),
      block_sizes=sizes,
      head_shards=1,
      q_seq_shards=1,
      interpret=interpret,
    )
    one_row = lambda q, k, v, s: kernel(q, k, v, segment_ids=sa.SegmentIds(s, s))  # noqa: E731
    return jax.vmap(one_row)(q, k, v, seg)  # [b, N, Lp, H]

  devices = jax.device_count()
  if devices > 1 and B % devices == 0:  # a Pallas call is opaque to GSPMD: split the batch
    mesh = jax.make_mesh((devices,), ("batch",), axis_types=(AxisType.Auto,))
    spec = jax.sharding.PartitionSpec("batch")
    run = jax.shard_map(run, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
  out = run(q, k, v, seg)
  return out[:, :, :L, :H].astype(q.dtype)


# ---- the block-sparse kernel of local, random and bigbird: the block step ------------------------


def _dot(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.einsum(spec, a, b, preferred_element_type=F32)


def _probs(q, k, biases, extras):
  """Softmax over the U keys and the extras: (P [B, N, Q, T, U], P_x per extra)."""
  s = _dot("BNQTH,BNQUH->BNQTU", q, k)
  for b in biases:
    s = s + b
  top = s.max(axis=-1, keepdims=True)  # [B, N, Q, T, 1]
  for x in extras:
    top = jnp.maximum(top, x.max(axis=-1, keepdims=True))
  e = jnp.exp(s - top)
  ex = [jnp.exp(x - top) for x in extras]
  denom = e.sum(axis=-1, keepdims=True)
  for a in ex:
    denom = denom + a.sum(axis=-1, keepdims=True)
  inv = 1.0 / denom  # >= 1 entry of a row is exp(0) = 1: no division by zero
  return e * inv, [a * inv for a in ex]


@jax.custom_vjp
def block_attend(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  biases: Sequence[jax.Array],
  extras: Sequence[jax.Array],
) -> tuple[jax.Array, list[jax.Array]]:
  """``q [B, N, Q, T, H]`` (pre-scaled), ``k, v [B, N, Q, U, H]``, ``biases``: float32 arrays
  broadcastable to ``[B, N, Q, T, U]`` (added to the scores; not differentiated), ``extras``:
  float32 logits ``[B, N, Q, T, G]`` (masked entries ``MASKED_LOGIT``).

  Returns ``o = P V`` float32 ``[B, N, Q, T, H]`` and the extras' probabilities."""
  return _forward(q, k, v, biases, extras)[0]


def _forward(q, k, v, biases, extras):
  p, px = _probs(q, k, biases, extras)
  o = _dot("BNQTU,BNQUH->BNQTH", p.astype(v.dtype), v)
  return (o, px), (q, k, v, biases, extras, o, px)


def _backward(res, cts):
  q, k, v, biases, extras, o, px = res
  do, dpx = cts
  p, _ = _probs(q, k, biases, extras)  # recomputed: cheaper than storing P on CPU
  dp = _dot("BNQTH,BNQUH->BNQTU", do, v)
  delta = jnp.sum(do * o, axis=-1, keepdims=True)  # [B, N, Q, T, 1]
  for a, da in zip(px, dpx, strict=True):
    delta = delta + jnp.sum(a * da, axis=-1, keepdims=True)
  ds = p * (dp - delta)
  dq = _dot("BNQTU,BNQUH->BNQTH", ds, k).astype(q.dtype)
  dk = _dot("BNQTU,BNQTH->BNQUH", ds, q).astype(k.dtype)
  dv = _dot("BNQTU,BNQTH->BNQUH", p, do).astype(v.dtype)
  dx = [a * (da - delta) for a, da in zip(px, dpx, strict=True)]
  zeros = [jnp.zeros_like(b) for b in biases]
  return dq, dk, dv, type(biases)(zeros), type(extras)(dx)


block_attend.defvjp(_forward, _backward)


@jax.custom_vjp
def unstack(x: jax.Array) -> tuple[jax.Array, ...]:
  """``x [n, ...]`` -> its n slices along the first axis. The backward stacks the n cotangents
  in one pass; autodiff of indexing pads each into a zero ``[n, ...]`` array and adds them
  (for attention's q, k, v: three passes over ``[3, B, N, L, H]`` and as many copies)."""
  return tuple(x[i] for i in range(x.shape[0]))


unstack.defvjp(lambda x: (unstack(x), None), lambda _, cts: (jnp.stack(cts),))


# ---- the block-sparse kernel: bands, gathered blocks, shared keys, slots -------------------------
def full_rows(
  q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, start: int, stop: int, causal: bool
) -> jax.Array:
  """Queries ``start:stop`` block_attend to every (real, and if causal earlier) key.

  O((stop - start) * S), used for global query rows: one query block of all those rows whose
  keys are the whole sequence (no copy). Returns float32 ``[B, N, stop-start, H]``."""
  qb = q[:, :, None, start:stop]  # [B, N, 1, T, H], T = stop - start
  key = jnp.where(valid, 0.0, MASKED_LOGIT)[:, None, None, None, :]  # [B, 1, 1, 1, S]
  biases = [key]
  if causal:
    rule = np.arange(k.shape[2])[None, :] <= np.arange(start, stop)[:, None]  # [T, S]
    biases.append(np.where(rule, 0.0, MASKED_LOGIT).astype(np.float32))
  o, _ = block_attend(qb, k[:, :, None], v[:, :, None], biases, [])
  return o[:, :, 0]


def _band(xb: jax.Array, first: int, count: int, offsets: Sequence[int]) -> jax.Array:
  """Blocks ``c + o`` for query blocks c in ``first:first+count``, each offset o in order.

  ``xb [B, N, W, T, ...]`` -> ``[B, N, Q, O*T, ...]`` (Q = count, O = len(offsets)); blocks outside
  ``0..W-1`` come out as zeros (callers mask them). Static slices, no gather.
  """
  W = xb.shape[2]
  lo = max(0, -(first + min(offsets)))
  hi = max(0, first + count - 1 + max(offsets) - (W - 1))
  pad = [(0, 0)] * xb.ndim
  pad[2] = (lo, hi)
  mod = masks.array_module(xb)  # numpy for static position bookkeeping
  xpad = mod.pad(xb, pad)
  pieces = [xpad[:, :, first + o + lo : first + o + lo + count] for o in offsets]
  return mod.concatenate(pieces, axis=3)


def _positions(x: jax.Array, idx: np.ndarray) -> jax.Array:
  """``x[:, :, idx]`` (``[B, N, G, ...]``), as static slices, one per contiguous run of ``idx``."""
  cuts = np.flatnonzero(np.diff(idx) != 1) + 1
  runs = np.split(idx, cuts)
  return jnp.concatenate([x[:, :, r[0] : r[-1] + 1] for r in runs], axis=2)


def _take(xb: jax.Array, table: jax.Array) -> jax.Array:
  """``xb [B, N, W, T, ...]`` gathered by ``table [Q, R]`` -> ``[B, N, Q, R*T, ...]``."""
  g = masks.array_module(xb, table).take(xb, table, axis=2)  # [B, N, Q, R, T, ...]
  return g.reshape(*g.shape[:3], -1, *g.shape[5:])


def block_sparse_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  valid: jax.Array,
  *,
  block: int,
  first: int,
  count: int,
  causal: bool,
  offsets: Sequence[int] = (0,),
  band_ok: np.ndarray | None = None,
  window: int | None = None,
  min_key: int = 0,
  table: jax.Array | np.ndarray | None = None,
  table_ok: jax.Array | np.ndarray | None = None,
  shared: np.ndarray | None = None,
  slots: tuple[jax.Array, jax.Array, jax.Array] | None = None,
) -> jax.Array:
  """Block-sparse attention for query blocks ``first .. first+count-1``: O(count*T*keys).

  ``q, k, v [B, N, W*T, H]`` (already padded to whole blocks, q pre-scaled), ``valid
  [B, W*T]`` key padding mask. Query block c (one of Q = ``count``) sees U + G keys:

  * band: key blocks ``c + o`` for ``o in offsets`` (sliced; ``band_ok [Q, O]`` drops
    single entries, e.g. a window block that is also a global block);
  * table: key blocks ``table [Q, R]`` (gathered; ``table_ok`` marks real entries);
  * shared: key positions ``shared [G]`` that every query sees (global columns), appended to
    every block's keys (causal ones inside the query blocks: extra score columns);
  * slots: G extra keys per query given by their scores: ``(scores [B, N, W*T, G] float32,
    values [B, N, W*T|1, G, H], ok [B, 1, W*T|1, G])`` (per query position, or one set for
    all; ``local.py``).

  Band, table and shared keys together are the U = (O + R) * T + G keys of the block.
  Token-level rules on top: causal ``j <= i``; ``window``: ``|i - j| <= window`` and
  ``min_key``: ``j >= min_key`` for band keys. One softmax spans all keys (and slots) of a row.
  Returns float32 ``[B, N, Q*T, H]``.
  """
  B, N, Lp, H = q.shape
  T, W = block, Lp // block
  blocks = lambda a: a.reshape(a.shape[0], a.shape[1], W, T, *a.shape[3:])  # [B, N, W, T, ...]
  qb = q[:, :, first * T : (first + count) * T].reshape(B, N, count, T, H)  # [B, N, Q, T, H]
  kv_valid = blocks(valid[:, None])  # [B, 1, W, T]
  pos = np.arange(Lp).reshape(1, 1, W, T)  # [1, 1, W, T]
  qblock = first + np.arange(count)[:, None]  # [Q, 1]
  xp = masks.array_module(table, table_ok)  # jnp only for a traced (resampled) table
  ks, vs, keyv, keyok, rel = [], [], [], [], []  # per key source (band, table)
  if offsets:
    O = len(offsets)
    ks.append(_band(blocks(k), first, count, offsets))  # [B, N, Q, O*T, H]
    vs.append(_band(blocks(v), first, count, offsets))
    keyv.append(_band(kv_valid, first, count, offsets))  # [B, 1, Q, O*T]
    ok = np.ones((count, O), bool) if band_ok is None else band_ok
    ok = np.repeat(ok, T, axis=1)  # [Q, O*T]
    if min_key:
      ok = ok & (_band(pos, first, count, offsets)[0, 0] >= min_key)
    keyok.append(ok)
    # token rules depend on kpos - qpos = o*T + u - t only: one [T, O*T] table for every block
    d = (np.asarray(offsets)[:, None] * T + np.arange(T)).reshape(1, -1) - np.arange(T)[:, None]
    rule = np.ones_like(d, bool)
    if causal:
      rule &= d <= 0
    if window is not None:
      rule &= np.abs(d) <= window
    rel.append(np.where(rule, 0.0, MASKED_LOGIT).astype(np.float32))
  if table is not None and table.shape[1]:
    if window is not None or min_key:
      raise ValueError("block_sparse_attention: window and min_key apply to band keys only")
    ks.append(_take(blocks(k), table))  # [B, N, Q, R*T, H]
    vs.append(_take(blocks(v), table))
    keyv.append(_take(kv_valid, table))  # [B, 1, Q, R*T]
    ok = table_ok
    if causal:  # a table never holds its query's own block (masks.*_candidates): whole blocks
      if xp is np and np.any(table_ok & (table == qblock)):
        raise ValueError("block_sparse_attention: a causal table lists its query's own block")
      ok = ok & (table < qblock)
    keyok.append(xp.repeat(ok, T, axis=1))  # [Q, R*T]
    rel.append(np.zeros((T, table.shape[1] * T), np.float32))
  has_shared = shared is not None and len(shared) > 0
  # shared keys join every block's keys, unless causal ones fall inside the queries' blocks
  # (learned tokens): then their scores go in as extra columns with a token-level rule
  late = has_shared and causal and shared.max() >= first * T
  if has_shared and not late:
    bcast = lambda a: jnp.broadcast_to(a[:, :, None], (*a.shape[:2], count, *a.shape[2:]))  # noqa: E731
    ks.append(bcast(_positions(k, shared)))  # [B, N, Q, G, H]
    vs.append(bcast(_positions(v, shared)))
    keyv.append(bcast(_positions(valid[:, None], shared)))  # [B, 1, Q, G]
    keyok.append(np.ones((count, len(shared)), bool))
    rel.append(np.zeros((T, len(shared)), np.float32))
  kg, vg = jnp.concatenate(ks, axis=3), jnp.concatenate(vs, axis=3)  # [B, N, Q, U, H]
  allowed = jnp.concatenate(keyv, axis=3) & xp.concatenate(keyok, axis=1)  # [B, 1, Q, U]
  biases = [
    np.concatenate(rel, axis=1),  # [T, U]
    jnp.where(allowed, 0.0, MASKED_LOGIT)[:, :, :, None, :],  # [B, 1, Q, 1, U]
  ]
  extras = []
  if late:
    kh, vh = _positions(k, shared), _positions(v, shared)  # [B, N, G, H]
    sh = jnp.einsum("BNQTH,BNGH->BNQTG", qb, kh, preferred_element_type=jnp.float32)
    qpos = (first * T + np.arange(count * T)).reshape(count, T, 1)  # [Q, T, 1]
    mh = _positions(valid[:, None], shared)[:, :, None, None, :] & (shared <= qpos)
    extras.append(jnp.where(mh, sh, MASKED_LOGIT))  # [B, N, Q, T, G]
  if slots is not None:
    ss, svs, sok = (
      a if a.shape[2] == 1 else a[:, :, first * T : (first + count) * T] for a in slots
    )
    extras.append(
      jnp.where(_query_blocks(sok, count, T), _query_blocks(ss, count, T), MASKED_LOGIT)
    )
  o, probs = block_attend(qb, kg, vg, biases, extras)  # [B, N, Q, T, H]
  if late:
    o = o + jnp.einsum("BNQTG,BNGH->BNQTH", probs[0], vh.astype(jnp.float32))
  o = o.reshape(B, N, count * T, H)
  if slots is not None:
    o = o + slot_values(probs[-1].reshape(B, N, count * T, -1), svs)
  return o


def _query_blocks(x: jax.Array, count: int, T: int) -> jax.Array:
  """``[B, N|1, Q*T|1, G] -> [B, N|1, Q|1, T|1, G]`` (a broadcast axis stays one)."""
  if x.shape[2] == 1:
    return x[:, :, :, None]
  return x.reshape(x.shape[0], x.shape[1], count, T, x.shape[3])


def slot_values(p: jax.Array, vs: jax.Array) -> jax.Array:
  """Probabilities ``p [B, N, L, G]`` of summary slots (``local.py``) times their values
  ``vs [B, N, L|1, G, H]`` -> ``[B, N, L, H]``."""
  if vs.shape[2] == 1:
    return jnp.einsum("BNLG,BNGH->BNLH", p, vs[:, :, 0])
  return jnp.einsum("BNLG,BNLGH->BNLH", p, vs)


# ---- decoding pieces: one token against cached keys ----------------------------------------------
DIGIT_BITS, DIGITS = 7, 3  # positions < 2**21


def rotary_at(x: jax.Array, pos: jax.Array, base: float = 10_000.0) -> jax.Array:
  """``attention.rotary`` of one token ``x [B, N, H]`` at position ``pos`` (int scalar array)."""
  half = x.shape[-1] // 2
  freq = base ** (-np.arange(half) / half)  # [H/2], float64
  cos, sin = jnp.ones((half,), F32), jnp.zeros((half,), F32)
  for level in range(DIGITS):
    angle = (np.arange(2**DIGIT_BITS) << (DIGIT_BITS * level))[:, None] * freq  # [128, H/2]
    digit = (pos >> (DIGIT_BITS * level)) & (2**DIGIT_BITS - 1)
    c = jnp.asarray(np.cos(angle).astype(np.float32))[digit]  # [H/2]
    s = jnp.asarray(np.sin(angle).astype(np.float32))[digit]
    cos, sin = cos * c - sin * s, sin * c + cos * s
  x1, x2 = x[..., :half], x[..., half:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def project_one(
  m, x: jax.Array, pos: jax.Array, *, rotate: bool = True
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``AttentionBase.project`` of one token ``x [B, D]`` at ``pos``: q (scaled), k, v, each
  ``[B, N, H]``; rotary positions (if the mixer has them) unless ``rotate=False``."""
  B = x.shape[0]
  qkv = m.qkv(x).reshape(B, 3, m.num_heads, m.head_dim)  # [B, 3, N, H]
  q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
  if m.rotary and rotate:
    q, k = rotary_at(q, pos), rotary_at(k, pos)
  return q * jnp.asarray(1.0 / math.sqrt(m.head_dim), q.dtype), k, v


def rows(a: jax.Array) -> jax.Array:
  """``[B, N, ...] -> [B*N, ...]``: caches keep batch and heads as one axis of rows.

  With a batch of one, XLA (CPU) drops the unit axis of a ``[1, N, S, H]`` cache by a
  bitcast, then fuses the step's write into that bitcast and into the cache output alike and
  copies the whole cache several times per token (measured: 130 ms instead of 7 ms per step
  at S = 32K, D = 256); ``[B*N, S, H]`` needs no bitcast."""
  return a.reshape(-1, *a.shape[2:])


def attend_one(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  ok: jax.Array,
  extras: Sequence[tuple[jax.Array, jax.Array]] = (),
) -> tuple[jax.Array, list[jax.Array]]:
  """One query per row over S cached keys: ``q [B*N, H]``, ``k, v [B*N, S, H]``, ``ok``
  broadcastable to ``[B*N, S]`` (True = visible); ``extras``: ``(scores [B*N, G], ok)`` in the
  same softmax. Returns float32 ``o = P V [B*N, H]`` and the extras' probabilities."""
  s = jnp.matmul(k, q[:, :, None], preferred_element_type=F32)[:, :, 0]  # [B*N, S]
  p, *px = masked_softmax([(s, ok), *extras])
  o = jnp.matmul(p[:, None].astype(v.dtype), v, preferred_element_type=F32)  # [B*N, 1, H]
  return o[:, 0], px


def merge_one(m, o: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """``o [B*N, H]`` -> the output projection ``[B, D]`` in ``dtype`` (``AttentionBase.merge``)."""
  return m.out(o.reshape(-1, m.dim).astype(dtype)).astype(dtype)


def write_at(buf: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
  """``buf [B*N, S, ...]`` with slot ``index`` (traced) set to ``new [B*N, ...]``."""
  start = (0, index) + (0,) * (buf.ndim - 2)
  return jax.lax.dynamic_update_slice(buf, new[:, None].astype(buf.dtype), start)
