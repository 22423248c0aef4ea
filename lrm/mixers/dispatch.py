"""Which attention kernel runs: the accelerator fast paths behind ``impl="auto"``.

``global`` and ``local`` take ``impl="auto"`` (their default) and ask ``choose`` at trace time,
from the backend, the compute dtype and the shapes:

  backend  global (full attention)        local (sliding window, no global tokens)
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
  mask), the sequence and the head dim padded to multiples of 128 (TPU lanes). Off TPU it
  runs in Pallas interpret mode (how the tests compare it with the dense oracle on CPU).

``impl_of(mixer, dtype, length)`` names the path a mixer runs for that input (what the
trainer records in results.json, per layer); ``mixer.impl`` is the float32 answer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import AxisType

FUSED = ("cudnn", "splash")
GPU_BACKENDS = ("gpu", "cuda", "rocm")
CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
LANES = 128  # TPU lanes: splash's tile along the sequence; both L and H are padded to it


def choose(
  backend: str,
  *,
  fallback: str,
  dtype: jnp.dtype,
  causal: bool,
  window: int | None,
  head_dim: int,
  length: int,
  cudnn_ok: Callable[..., bool] | None = None,
  splash_ok: Callable[[], bool] | None = None,
) -> str:
  """The fast path for this backend and input, or ``fallback`` ("xla" / "blocked").

  ``window=None`` is full attention. ``cudnn_ok``/``splash_ok`` default to asking JAX (tests
  pass stand-ins to check the decision for a backend this machine does not have).
  """
  if backend in GPU_BACKENDS:
    cudnn_ok = cudnn_supports if cudnn_ok is None else cudnn_ok
    if jnp.dtype(dtype) in CUDNN_DTYPES and (window is None or causal):
      if cudnn_ok(jnp.dtype(dtype).name, head_dim, causal, window, length):
        return "cudnn"
  elif backend == "tpu":
    if (splash_available if splash_ok is None else splash_ok)():
      return "splash"
  return fallback


def resolve(mixer: object, dtype: jnp.dtype, length: int | None, *, window: int | None) -> str:
  """What ``mixer`` (``global`` or ``local``) runs for ``dtype`` inputs of ``length`` tokens."""
  asked, extra = mixer.requested_impl, getattr(mixer, "global_tokens", 0)
  if asked in FUSED and extra:
    raise ValueError(f"local: impl='{asked}' has no global tokens; use impl='auto' or 'blocked'")
  if asked != "auto":
    return asked
  fallback = "xla" if window is None else "blocked"
  if extra:
    return fallback  # window + global tokens: only the blocked kernel has that pattern
  if window is not None and length:
    window = min(window, length - 1)
  return choose(
    jax.default_backend(),
    fallback=fallback,
    dtype=dtype,
    causal=mixer.causal,
    window=window,
    head_dim=mixer.head_dim,
    length=length or 1024,
  )


def global_impl(mixer: object, dtype: jnp.dtype, length: int | None = None) -> str:
  return resolve(mixer, dtype, length, window=None)


def local_impl(mixer: object, dtype: jnp.dtype, length: int | None = None) -> str:
  return resolve(mixer, dtype, length, window=mixer.window)


RESOLVERS = {"global": global_impl, "local": local_impl}


def impl_of(mixer: object, dtype: jnp.dtype, length: int) -> str:
  """The path ``mixer`` runs for ``dtype`` inputs of ``length`` tokens on this backend."""
  resolve_fn = RESOLVERS.get(getattr(mixer, "registered_name", ""))
  return resolve_fn(mixer, dtype, length) if resolve_fn else mixer.impl


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


# ---- the fused paths ------------------------------------------------------------------------
def attend(
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
  interpret = jax.default_backend() != "tpu"

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
