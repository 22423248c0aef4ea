"""``dynamic_conv`` and ``involution``: convolutions whose kernel is predicted per token.

Between a static conv (one kernel for every position, ``conv.py``) and attention (weights from
query-key content over the whole sequence) sit kernels generated from the current token alone
and applied over a fixed window of K taps, shared by the channels of each of N heads/groups:
  dynamic_conv  (Wu et al. 2019) as published: a GLU input projection u = a * sigmoid(b)
                with [a, b] = Linear(x) (D -> 2D); taps = softmax over the window of
                Linear(u_i); mixes u; then an output projection. Content-dependent,
                normalised, local. ``glu=False`` is the ablation without the gate: a plain
                value projection, taps from x.
  involution    (Li et al. 2021) taps = Linear(ReLU(Linear(x_i))) (bottleneck D -> D/r -> N*K,
                no softmax), applied to x itself; then an output projection.

Window: output i sees ``i - left + k`` for k in 0..K-1, with (left, right) as for ``conv``
(causal: the K-1 previous tokens and itself; centred otherwise, even K reaching one further
right). Padding: padded inputs are zeroed before mixing, and ``dynamic_conv`` renormalises its
softmax over the real, in-sequence taps only (out-of-range taps get weight 0, not a share of
the softmax as in fairseq); a row with no real tap (a padded query) gets all-zero weights.

Implementations (kernels below, all accumulating in float32): ``unfold``
(shift-and-weight, O(L K D)), ``blocked`` (per-block band matmuls, O(L (T+K) D)) and ``dense``
(the [B, N, L, S] banded matrix gathered from the taps: the O(L^2 D) oracle). ``auto`` =
unfold for K <= 128, else blocked: on CPU, unfold was faster for short kernels and the
band matmuls for long ones, although they compute more FLOPs.

Kernels
-------

Kernels of ``dynamic_conv`` and ``involution``: per-token taps applied over a K-tap window.

Every function mixes values ``v [B, L, N, H]`` with per-token taps ``w [B, L, N, K]``:
``y[:, i] = sum_k w[:, i, :, k] * v[:, i - left + k]`` (the window of
``conv.conv_offsets`` with dilation 1), accumulating in float32.

  unfold_mix   shift-and-weight over K static slices: O(L K D) FLOPs, O(L N K) extra memory.
               Hand-written VJP: dv is a shift-and-add with the window flipped, and the tap
               gradient a blocked matmul read along its diagonals (autodiff makes K separate
               reductions over H, which are slow on CPU).
  blocked_mix  per block of T tokens, a ``[T, U]`` band of taps (row-skewed by pad/reshape)
               times the ``U = c * T`` tokens of its window: O(L (T + K) D) FLOPs.
  band_matrix  the oracle's ``[B, N, L, S]`` banded matrix, gathered from the taps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.mixers.base import MASKED_LOGIT, Mixer, check_int, zero_padded
from lrm.mixers.conv import (
  ACC,
  conv_offsets,
  fill_window,
  pad_len,
  push_window,
  toeplitz_block,
  window_cache,
)
from lrm.registry import register


# ---- kernels -------------------------------------------------------------------------------------
def _shift_mix(w: jax.Array, v: jax.Array, left: int, right: int) -> jax.Array:
  """``y[:, i] = sum_k w[:, i, :, k] * v[:, i - left + k]``; w [B, L, N, K], v [B, L, N, H]."""
  L, K = v.shape[1], w.shape[-1]
  vp = pad_len(v.astype(ACC), left, right)  # [B, L + K - 1, N, H]
  y = jnp.zeros(v.shape, ACC)
  for k in range(K):
    y = y + w[..., k, None].astype(ACC) * vp[:, k : k + L]
  return y


def block_geometry(length: int, kernel_size: int) -> tuple[int, int, int]:
  """(T, c, nb): block size, blocks per window (U = c * T), number of blocks."""
  T = toeplitz_block(kernel_size)
  return T, 1 + -(-(kernel_size - 1) // T), -(-length // T)


def _windows(v: jax.Array, left: int, T: int, c: int, nb: int) -> jax.Array:
  """``[B, L, N, H] -> [B, W, U, N, H]``: block b's window = padded tokens bT-left..+U."""
  B, L, N, H = v.shape
  vp = pad_len(v, left, (nb + c - 1) * T - L - left)  # [B, (W+c-1)*T, N, H]
  vb = vp.reshape(B, nb + c - 1, T, N, H)
  return jnp.concatenate([vb[:, j : j + nb] for j in range(c)], axis=2)  # [B, W, U, N, H]


def _blocks(x: jax.Array, T: int, nb: int) -> jax.Array:
  """``[B, L, ...] -> [B, W, T, ...]`` (zero-padded to nb * T)."""
  x = pad_len(x, 0, nb * T - x.shape[1])
  return x.reshape(x.shape[0], nb, T, *x.shape[2:])


def skew_rows(w: jax.Array, U: int) -> jax.Array:
  """``[..., T, K] -> [..., T, U]`` with ``out[t, s] = w[t, s - t]`` (0 off the band).

  Each row is padded to U + 1; re-reading the flat buffer with rows of U shifts row t right
  by t, the entries wrapped in from the row above being padding (needs U >= T + K - 1).
  """
  *lead, T, K = w.shape
  r = jnp.pad(w, [(0, 0)] * len(lead) + [(0, 0), (0, U + 1 - K)])  # [..., T, U + 1]
  return r.reshape(*lead, T * (U + 1))[..., : T * U].reshape(*lead, T, U)


def unskew_rows(p: jax.Array, K: int) -> jax.Array:
  """Inverse read of ``skew_rows``: ``[..., T, U] -> [..., T, K]``, ``out[t, k] = p[t, t + k]``."""
  *lead, T, U = p.shape
  f = jnp.pad(p.reshape(*lead, T * U), [(0, 0)] * len(lead) + [(0, T)])
  return f.reshape(*lead, T, U + 1)[..., :K]


def blocked_mix(w: jax.Array, v: jax.Array, left: int, right: int) -> jax.Array:
  """Same result as ``_shift_mix`` as batched [T, U] x [U, H] matmuls per block and head."""
  B, L, N, H = v.shape
  T, c, nb = block_geometry(L, w.shape[-1])
  win = _windows(v.astype(ACC), left, T, c, nb)  # [B, W, U, N, H]
  wb = jnp.moveaxis(_blocks(w.astype(ACC), T, nb), 3, 2)  # [B, W, N, T, K]
  band = skew_rows(wb, c * T)  # [B, W, N, T, U]
  y = jnp.einsum("BWNTU,BWUNH->BWTNH", band, win)
  return y.reshape(B, nb * T, N, H)[:, :L]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def unfold_mix(w: jax.Array, v: jax.Array, left: int, right: int) -> jax.Array:
  """``_shift_mix`` with a fast hand-written VJP."""
  return _shift_mix(w, v, left, right)


def _unfold_fwd(w, v, left, right):
  return unfold_mix(w, v, left, right), (w, v)


def _unfold_bwd(left, right, res, g):
  w, v = res
  B, L, N, H = v.shape
  K = w.shape[-1]
  # dv[j] = sum_k (g * w_k)[j + left - k]: shift-and-add, the window flipped.
  gp = pad_len(g.astype(ACC), right, left)  # [B, L + K - 1, N, H]
  wp = pad_len(w.astype(ACC), right, left)  # [B, L + K - 1, N, K]
  dv = jnp.zeros(v.shape, ACC)
  for k in range(K):
    s = K - 1 - k
    dv = dv + gp[:, s : s + L] * wp[:, s : s + L, :, k, None]
  # dw[i, k] = <g_i, v_{i-left+k}>: per block, P = G Win^T [T, U], then read its diagonals.
  T, c, nb = block_geometry(L, K)
  win = _windows(v.astype(ACC), left, T, c, nb)  # [B, W, U, N, H]
  p = jnp.einsum("BWTNH,BWUNH->BWNTU", _blocks(g.astype(ACC), T, nb), win)
  dw = jnp.moveaxis(unskew_rows(p, K), 2, 3).reshape(B, nb * T, N, K)[:, :L]
  return dw.astype(w.dtype), dv.astype(v.dtype)


unfold_mix.defvjp(_unfold_fwd, _unfold_bwd)


def band_index(length: int, kernel_size: int, left: int) -> tuple[np.ndarray, np.ndarray]:
  """``[L, S]`` constants: the tap k linking query l to key s, and whether it is in the window."""
  off = np.arange(length)[None, :] - np.arange(length)[:, None] + left  # [L, S]
  inside = (off >= 0) & (off < kernel_size)
  return np.where(inside, off, 0), inside


def band_matrix(w: jax.Array, left: int) -> jax.Array:
  """Oracle: ``w [B, L, N, K] -> [B, N, L, S]`` with ``out[.., l, s] = w[:, l, :, s - l + left]``
  inside the window and 0 outside (a gather: independent of the shift/skew paths)."""
  B, L, N, K = w.shape
  idx, inside = band_index(L, K, left)
  a = jnp.take_along_axis(w, jnp.asarray(idx)[None, :, None, :], axis=-1)  # [B, L, N, S]
  return jnp.where(jnp.asarray(inside)[None, :, None], a, 0.0).transpose(0, 2, 1, 3)


def tap_valid(mask: jax.Array | None, length: int, left: int, right: int) -> jax.Array:
  """``[B|1, L, K]`` bool: tap k of query i is an in-sequence (and real, if masked) token."""
  K = left + right + 1
  if mask is None:
    pos = np.arange(length)[:, None] - left + np.arange(K)  # [L, K]
    return jnp.asarray((pos >= 0) & (pos < length))[None]
  mp = pad_len(mask, left, right, False)  # [B, L + K - 1]
  return jnp.stack([mp[:, k : k + length] for k in range(K)], axis=-1)  # [B, L, K]


# ---- the mixer -----------------------------------------------------------------------------------
UNFOLD_MAX_TAPS = 128


class WindowMixer(Mixer):
  """Shared machinery: per-token kernels ``[B, L, N, K]`` applied to values ``[B, L, N, H]``."""

  IMPLS = ("auto", "unfold", "blocked", "dense")

  def __init__(
    self, dim: int, *, causal: bool, layer_idx: int, kernel_size: int, num_heads: int, impl: str
  ):
    check_int(self.mixer_name(), "kernel_size", kernel_size, 1)
    super().__init__(dim, causal=causal, layer_idx=layer_idx, impl=impl, num_heads=num_heads)
    self.kernel_size = int(kernel_size)
    self.left, self.right = conv_offsets(self.kernel_size, 1, self.causal)

  def choose_impl(self, dtype: jnp.dtype = ACC, length: int | None = None) -> str:
    """``auto``: unfold up to ``UNFOLD_MAX_TAPS`` taps, else blocked."""
    if self.requested_impl != "auto":
      return self.requested_impl
    return "unfold" if self.kernel_size <= UNFOLD_MAX_TAPS else "blocked"

  def receptive_field(self) -> tuple[int, int]:
    return self.left, self.right

  def _mix(self, w: jax.Array, v: jax.Array, impl: str) -> jax.Array:
    """Windowed mixing by the fast path ``impl`` (w ``[B, L, N, K]``, v ``[B, L, N, H]``)."""
    mix = unfold_mix if impl == "unfold" else blocked_mix
    return mix(w, v, self.left, self.right)  # [B, L, N, H] float32

  def _dense(self, a: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.einsum("BNLS,BSNH->BLNH", a, v.astype(ACC))  # [B, L, N, H]

  # ---- decoding: the last K - 1 values, O(K D) per layer ----

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    if not self.causal:
      raise self.decode_error()
    return window_cache(batch, self.left, (self.dim,), dtype)

  def _step_mix(self, w: jax.Array, window: jax.Array) -> jax.Array:
    """One output: taps ``w [B, N, K]`` over the window of values ``[B, K, D]`` -> ``[B, D]``."""
    B, K, D = window.shape
    v = window.reshape(B, K, self.num_heads, D // self.num_heads).astype(ACC)  # [B, K, N, H]
    return jnp.einsum("BNK,BKNH->BNH", w.astype(ACC), v).reshape(B, D)

  def _mix_flops(self, length: int, impl: str) -> float:
    L, D, K = length, self.dim, self.kernel_size
    if impl == "unfold":
      return 2 * L * K * D
    if impl == "blocked":
      T, c, nb = block_geometry(L, K)
      return 2 * nb * T * c * T * D
    return 2 * L * L * D  # the gathered [L, S] band (no FLOPs) times the values

  def algorithmic_flops(self, length: int) -> int:
    """The operator's own work (``lrm.analysis.counting``): the unfolded K-tap count (2KD
    per token for the taps), whatever kernel runs."""
    return self.flops(length, impl="unfold")


@register("mixer", "dynamic_conv")
class DynamicConv(WindowMixer):
  """Dynamic convolution (Wu et al. 2019): softmax taps predicted from each token.

  Args:
    dim: model width D.
    causal: window of the K-1 previous tokens and itself (else centred).
    kernel_size: taps K.
    num_heads: N heads; each shares its taps across its D/N channels.
    glu: the published GLU input (default: the paper's model, and the multiplicative
      interaction the other gated baselines have); False: a plain value projection.
    impl: "auto", "unfold", "blocked" or "dense" (the O(L^2) oracle).
  """

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    kernel_size: int = 3,
    num_heads: int = 4,
    glu: bool = True,
    impl: str = "auto",
  ):
    super().__init__(
      dim,
      causal=causal,
      layer_idx=layer_idx,
      kernel_size=kernel_size,
      num_heads=num_heads,
      impl=impl,
    )
    self.glu = bool(glu)
    self.value = nnx.Linear(dim, 2 * dim if self.glu else dim, rngs=rngs)
    self.taps = nnx.Linear(dim, num_heads * kernel_size, rngs=rngs)
    self.out = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    B, L, D = x.shape
    N, K = self.num_heads, self.kernel_size
    h, u = self._inputs(zero_padded(x, mask))  # [B, L, D] each
    v = u.reshape(B, L, N, D // N)  # [B, L, N, H]
    logits = self.taps(h).astype(ACC).reshape(B, L, N, K)  # [B, L, N, K]
    impl = self.choose_impl(x.dtype, L)
    if impl == "dense":
      # Oracle: scatter the logits into the L x S band and softmax over every allowed key.
      s = band_matrix(logits, self.left)  # [B, N, L, S]
      allowed = jnp.asarray(band_index(L, K, self.left)[1])[None, None]  # [1, 1, L, S]
      if mask is not None:
        allowed = allowed & mask[:, None, None, :]
      a = jax.nn.softmax(jnp.where(allowed, s, MASKED_LOGIT), axis=-1) * allowed
      y = self._dense(a, v)
    else:
      valid = tap_valid(mask, L, self.left, self.right)[:, :, None]  # [B, L, 1, K]
      w = jax.nn.softmax(jnp.where(valid, logits, MASKED_LOGIT), axis=-1) * valid  # [B, L, N, K]
      y = self._mix(w, v, impl)
    return self.out(y.reshape(B, L, D).astype(x.dtype)).astype(x.dtype)

  def _inputs(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(h, u)``: what predicts the taps and the values mixed, each ``[..., D]``."""
    if self.glu:  # the GLU's output is the conv's input and predicts its taps (fairseq)
      a, b = jnp.split(self.value(x), 2, axis=-1)
      u = a * jax.nn.sigmoid(b)
      return u, u
    return x, self.value(x)

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The parallel forward over the prompt ``x [B, P, D]``; the cache keeps the tail of u."""
    if not self.causal:
      raise self.decode_error()
    return self(x), fill_window(cache, self._inputs(x)[1])

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.causal:
      raise self.decode_error()
    B, D = x.shape
    N, K = self.num_heads, self.kernel_size
    h, u = self._inputs(x)  # [B, D] each
    window, cache = push_window(cache, u)  # [B, K, D]
    logits = self.taps(h).astype(ACC).reshape(B, N, K)  # [B, N, K]
    valid = pos - self.left + jnp.arange(K) >= 0  # [K]: taps before the sequence get weight 0
    w = jax.nn.softmax(jnp.where(valid, logits, MASKED_LOGIT), axis=-1) * valid
    y = self._step_mix(w, window)  # [B, D]
    return self.out(y.astype(x.dtype)).astype(x.dtype), cache

  def flops(self, length: int, impl: str | None = None) -> int:
    impl = impl or self.impl
    L, D, NK = length, self.dim, self.num_heads * self.kernel_size
    value = 2 * L * D * 2 * D + 2 * L * D + 3 * L * D if self.glu else 2 * L * D * D + L * D
    proj = value + 2 * L * D * D + L * D + 2 * L * D * NK + L * NK
    softmax = 5 * L * NK if impl != "dense" else 5 * L * L * self.num_heads
    return int(proj + softmax + self._mix_flops(L, impl))


@register("mixer", "involution")
class Involution(WindowMixer):
  """1D involution (Li et al. 2021): taps from a bottleneck MLP of each token, no softmax.

  Args:
    dim: model width D.
    causal: window of the K-1 previous tokens and itself (else centred).
    kernel_size: taps K.
    num_heads: N groups; each shares its taps across its D/N channels.
    reduction: bottleneck ratio r of the kernel generator (hidden width max(1, D // r)).
    impl: "auto", "unfold", "blocked" or "dense" (the O(L^2) oracle).
  """

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    kernel_size: int = 3,
    num_heads: int = 4,
    reduction: int = 4,
    impl: str = "auto",
  ):
    super().__init__(
      dim,
      causal=causal,
      layer_idx=layer_idx,
      kernel_size=kernel_size,
      num_heads=num_heads,
      impl=impl,
    )
    check_int("involution", "reduction", reduction, 1)
    self.hidden = max(1, dim // reduction)
    self.reduce = nnx.Linear(dim, self.hidden, rngs=rngs)
    # Taps start at std ~ 1/sqrt(hidden * K) so a K-tap window sum starts at unit scale
    # (the paper's BatchNorm would play this role).
    init = nnx.initializers.variance_scaling(1.0 / kernel_size, "fan_in", "truncated_normal")
    self.span = nnx.Linear(self.hidden, num_heads * kernel_size, kernel_init=init, rngs=rngs)
    self.out = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    B, L, D = x.shape
    N, K = self.num_heads, self.kernel_size
    h = zero_padded(x, mask)  # [B, L, D]; padded taps then contribute nothing
    w = self.span(jax.nn.relu(self.reduce(h))).astype(ACC).reshape(B, L, N, K)  # [B, L, N, K]
    v = h.reshape(B, L, N, D // N)  # [B, L, N, H]
    impl = self.choose_impl(x.dtype, L)
    if impl == "dense":
      y = self._dense(band_matrix(w, self.left), v)  # [B, L, N, H]
    else:
      y = self._mix(w, v, impl)
    return self.out(y.reshape(B, L, D).astype(x.dtype)).astype(x.dtype)

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.causal:
      raise self.decode_error()
    B, D = x.shape
    w = self.span(jax.nn.relu(self.reduce(x))).astype(ACC)  # [B, N*K]
    window, cache = push_window(cache, x)  # [B, K, D]; zeros before the sequence
    y = self._step_mix(w.reshape(B, self.num_heads, self.kernel_size), window)  # [B, D]
    return self.out(y.astype(x.dtype)).astype(x.dtype), cache

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The parallel forward over the prompt ``x [B, P, D]``; the cache keeps its tail."""
    if not self.causal:
      raise self.decode_error()
    return self(x), fill_window(cache, x)

  def flops(self, length: int, impl: str | None = None) -> int:
    impl = impl or self.impl
    L, D, NK = length, self.dim, self.num_heads * self.kernel_size
    hid = self.hidden
    proj = 2 * L * D * hid + 2 * L * hid + 2 * L * hid * NK + L * NK + 2 * L * D * D + L * D
    return int(proj + self._mix_flops(L, impl))
