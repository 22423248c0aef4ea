"""``dynamic_conv`` and ``involution``: convolutions whose kernel is predicted per token.

Between a static conv (one kernel for every position, ``conv.py``) and attention (weights from
query-key content over the whole sequence) sit kernels generated from the current token alone
and applied over a fixed window of K taps, shared by the channels of each of N heads/groups:
  dynamic_conv  (Wu et al. 2019) taps = softmax over the window of Linear(x_i); mixes a value
                projection; then an output projection. Content-dependent, normalised, local.
  involution    (Li et al. 2021) taps = Linear(ReLU(Linear(x_i))) (bottleneck D -> D/r -> N*K,
                no softmax), applied to x itself; then an output projection.

Window: output i sees ``i - left + k`` for k in 0..K-1, with (left, right) as for ``conv``
(causal: the K-1 previous tokens and itself; centred otherwise, even K reaching one further
right). Padding: padded inputs are zeroed before mixing, and ``dynamic_conv`` renormalises its
softmax over the real, in-sequence taps only (out-of-range taps get weight 0, not a share of
the softmax as in fairseq); a row with no real tap (a padded query) gets all-zero weights.

Implementations (all accumulate in float32): ``unfold`` = shift-and-weight over K static slices
(O(L K D) FLOPs, O(L N K) extra memory) with a hand-written VJP whose tap gradient is a blocked
matmul (autodiff's K reductions over H are 10-100x slower on CPU); ``blocked`` = per block of T
tokens a [T, S] band of taps (row-skewed by pad/reshape) times the S-token window,
O(L (T+K) D) FLOPs; ``dense`` = the [B, N, L, L] banded matrix gathered from the taps
(the oracle: O(L^2 D) FLOPs, O(N L^2) memory).
``auto`` = unfold for K <= 128, else blocked (measured on CPU at L=4096, D=256: unfold is
2x faster at K=7..65, blocked 4x faster at K=257).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.mixers.base import Mixer, zero_padded
from lrm.mixers.conv import conv_offsets, toeplitz_block
from lrm.registry import register

IMPLS = ("auto", "unfold", "blocked", "dense")
UNFOLD_MAX_TAPS = 128
ACC = jnp.float32
NEG = -1e30  # masked logit: finite, so a row with no real tap stays NaN-free


def _pad_len(x: jax.Array, left: int, right: int, value: float | bool = 0) -> jax.Array:
  pads = [(0, 0), (left, right)] + [(0, 0)] * (x.ndim - 2)
  return jnp.pad(x, pads, constant_values=value)


def _shift_mix(w: jax.Array, v: jax.Array, left: int, right: int) -> jax.Array:
  """``y[:, i] = sum_k w[:, i, :, k] * v[:, i - left + k]``; w [B, L, N, K], v [B, L, N, H]."""
  L, K = v.shape[1], w.shape[-1]
  vp = _pad_len(v.astype(ACC), left, right)  # [B, L + K - 1, N, H]
  y = jnp.zeros(v.shape, ACC)
  for k in range(K):
    y = y + w[..., k, None].astype(ACC) * vp[:, k : k + L]
  return y


def block_geometry(length: int, kernel_size: int) -> tuple[int, int, int]:
  """(T, c, nb): block size, blocks per window (S = c * T), number of blocks."""
  T = toeplitz_block(kernel_size)
  return T, 1 + -(-(kernel_size - 1) // T), -(-length // T)


def _windows(v: jax.Array, left: int, T: int, c: int, nb: int) -> jax.Array:
  """``[B, L, N, H] -> [B, W, S, N, H]``: block b's window = padded tokens bT-left..+S."""
  B, L, N, H = v.shape
  vp = _pad_len(v, left, (nb + c - 1) * T - L - left)  # [B, (nb+c-1)*T, N, H]
  vb = vp.reshape(B, nb + c - 1, T, N, H)
  return jnp.concatenate([vb[:, j : j + nb] for j in range(c)], axis=2)  # [B, W, S, N, H]


def _blocks(x: jax.Array, T: int, nb: int) -> jax.Array:
  """``[B, L, ...] -> [B, W, T, ...]`` (zero-padded to nb * T)."""
  x = _pad_len(x, 0, nb * T - x.shape[1])
  return x.reshape(x.shape[0], nb, T, *x.shape[2:])


def skew_rows(w: jax.Array, S: int) -> jax.Array:
  """``[..., T, K] -> [..., T, S]`` with ``out[t, s] = w[t, s - t]`` (0 off the band).

  Each row is padded to S + 1; re-reading the flat buffer with rows of S shifts row t right
  by t, the entries wrapped in from the row above being padding (needs S >= T + K - 1).
  """
  *lead, T, K = w.shape
  r = jnp.pad(w, [(0, 0)] * len(lead) + [(0, 0), (0, S + 1 - K)])  # [..., T, S + 1]
  return r.reshape(*lead, T * (S + 1))[..., : T * S].reshape(*lead, T, S)


def unskew_rows(p: jax.Array, K: int) -> jax.Array:
  """Inverse read of ``skew_rows``: ``[..., T, S] -> [..., T, K]``, ``out[t, k] = p[t, t + k]``."""
  *lead, T, S = p.shape
  f = jnp.pad(p.reshape(*lead, T * S), [(0, 0)] * len(lead) + [(0, T)])
  return f.reshape(*lead, T, S + 1)[..., :K]


def blocked_mix(w: jax.Array, v: jax.Array, left: int, right: int) -> jax.Array:
  """Same result as ``_shift_mix`` as batched [T, S] x [S, H] matmuls per block and head."""
  B, L, N, H = v.shape
  T, c, nb = block_geometry(L, w.shape[-1])
  win = _windows(v.astype(ACC), left, T, c, nb)  # [B, W, S, N, H]
  wb = jnp.moveaxis(_blocks(w.astype(ACC), T, nb), 3, 2)  # [B, W, N, T, K]
  band = skew_rows(wb, c * T)  # [B, W, N, T, S]
  y = jnp.einsum("BWNTS,BWSNH->BWTNH", band, win)
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
  gp = _pad_len(g.astype(ACC), right, left)  # [B, L + K - 1, N, H]
  wp = _pad_len(w.astype(ACC), right, left)  # [B, L + K - 1, N, K]
  dv = jnp.zeros(v.shape, ACC)
  for k in range(K):
    s = K - 1 - k
    dv = dv + gp[:, s : s + L] * wp[:, s : s + L, :, k, None]
  # dw[i, k] = <g_i, v_{i-left+k}>: per block, P = G Win^T [T, S], then read its diagonals.
  T, c, nb = block_geometry(L, K)
  win = _windows(v.astype(ACC), left, T, c, nb)  # [B, W, S, N, H]
  p = jnp.einsum("BWTNH,BWSNH->BWNTS", _blocks(g.astype(ACC), T, nb), win)
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
  mp = _pad_len(mask, left, right, False)  # [B, L + K - 1]
  return jnp.stack([mp[:, k : k + length] for k in range(K)], axis=-1)  # [B, L, K]


def _check(kind: str, dim: int, kernel_size: int, num_heads: int, impl: str) -> None:
  for name, value in (("kernel_size", kernel_size), ("num_heads", num_heads)):
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
      raise ValueError(f"{kind} option {name} must be an integer >= 1, got {value!r}")
  if dim % num_heads:
    raise ValueError(f"{kind}: num_heads={num_heads} must divide dim={dim}; change one of them")
  if impl not in IMPLS:
    raise ValueError(f"{kind} impl '{impl}' is unknown; choose one of {', '.join(IMPLS)}")


class WindowMixer(Mixer):
  """Shared machinery: per-token kernels ``[B, L, N, K]`` applied to values ``[B, L, N, H]``."""

  kind = "window mixer"

  def _setup(self, dim: int, causal: bool, kernel_size: int, num_heads: int, impl: str) -> None:
    _check(self.kind, dim, kernel_size, num_heads, impl)
    self.dim, self.causal = dim, bool(causal)
    self.kernel_size, self.num_heads, self.requested_impl = int(kernel_size), num_heads, impl
    self.left, self.right = conv_offsets(self.kernel_size, 1, self.causal)
    if impl == "auto":
      impl = "unfold" if kernel_size <= UNFOLD_MAX_TAPS else "blocked"
    self._impl = impl

  @property
  def impl(self) -> str:
    return self._impl

  def receptive_field(self) -> tuple[int, int]:
    return self.left, self.right

  def _mix(self, w: jax.Array, v: jax.Array) -> jax.Array:
    """Windowed mixing by the fast path (w ``[B, L, N, K]``, v ``[B, L, N, H]``)."""
    mix = unfold_mix if self._impl == "unfold" else blocked_mix
    return mix(w, v, self.left, self.right)  # [B, L, N, H] float32

  def _dense(self, a: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.einsum("BNLS,BSNH->BLNH", a, v.astype(ACC))  # [B, L, N, H]

  def _mix_flops(self, length: int) -> float:
    L, D, K = length, self.dim, self.kernel_size
    if self._impl == "unfold":
      return 2 * L * K * D
    if self._impl == "blocked":
      T, c, nb = block_geometry(L, K)
      return 2 * nb * T * c * T * D
    return 2 * L * L * D  # the gathered [L, L] band (no FLOPs) times the values


@register("mixer", "dynamic_conv")
class DynamicConv(WindowMixer):
  """Dynamic convolution (Wu et al. 2019): softmax taps predicted from each token.

  Args:
    dim: model width D.
    causal: window of the K-1 previous tokens and itself (else centred).
    kernel_size: taps K.
    num_heads: N heads; each shares its taps across its D/N channels.
    impl: "auto", "unfold", "blocked" or "dense" (the O(L^2) oracle).
  """

  kind = "dynamic_conv"

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    kernel_size: int = 3,
    num_heads: int = 4,
    impl: str = "auto",
  ):
    self._setup(dim, causal, kernel_size, num_heads, impl)
    self.value = nnx.Linear(dim, dim, rngs=rngs)
    self.taps = nnx.Linear(dim, num_heads * kernel_size, rngs=rngs)
    self.out = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    B, L, D = x.shape
    N, K = self.num_heads, self.kernel_size
    h = zero_padded(x, mask)  # [B, L, D]
    v = self.value(h).reshape(B, L, N, D // N)  # [B, L, N, H]
    logits = self.taps(h).astype(ACC).reshape(B, L, N, K)  # [B, L, N, K]
    if self._impl == "dense":
      # Oracle: scatter the logits into the L x L band and softmax over every allowed key.
      s = band_matrix(logits, self.left)  # [B, N, L, S]
      allowed = jnp.asarray(band_index(L, K, self.left)[1])[None, None]  # [1, 1, L, S]
      if mask is not None:
        allowed = allowed & mask[:, None, None, :]
      a = jax.nn.softmax(jnp.where(allowed, s, NEG), axis=-1) * allowed
      y = self._dense(a, v)
    else:
      valid = tap_valid(mask, L, self.left, self.right)[:, :, None]  # [B, L, 1, K]
      w = jax.nn.softmax(jnp.where(valid, logits, NEG), axis=-1) * valid  # [B, L, N, K]
      y = self._mix(w, v)
    return self.out(y.reshape(B, L, D).astype(x.dtype)).astype(x.dtype)

  def flops(self, length: int) -> int:
    L, D, NK = length, self.dim, self.num_heads * self.kernel_size
    proj = 2 * (2 * L * D * D + L * D) + 2 * L * D * NK + L * NK
    softmax = 5 * L * NK if self._impl != "dense" else 5 * L * L * self.num_heads
    return int(proj + softmax + self._mix_flops(L))


@register("mixer", "involution")
class Involution(WindowMixer):
  """1D involution (Li et al. 2021): taps from a bottleneck MLP of each token, no softmax.

  Args:
    dim: model width D.
    causal: window of the K-1 previous tokens and itself (else centred).
    kernel_size: taps K.
    num_heads: G groups; each shares its taps across its D/G channels.
    reduction: bottleneck ratio r of the kernel generator (hidden width max(1, D // r)).
    impl: "auto", "unfold", "blocked" or "dense" (the O(L^2) oracle).
  """

  kind = "involution"

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
    self._setup(dim, causal, kernel_size, num_heads, impl)
    if not isinstance(reduction, int | np.integer) or isinstance(reduction, bool) or reduction < 1:
      raise ValueError(f"involution option reduction must be an integer >= 1, got {reduction!r}")
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
    if self._impl == "dense":
      y = self._dense(band_matrix(w, self.left), v)  # [B, L, N, H]
    else:
      y = self._mix(w, v)
    return self.out(y.reshape(B, L, D).astype(x.dtype)).astype(x.dtype)

  def flops(self, length: int) -> int:
    L, D, R, NK = length, self.dim, self.hidden, self.num_heads * self.kernel_size
    proj = 2 * L * D * R + 2 * L * R + 2 * L * R * NK + L * NK + 2 * L * D * D + L * D
    return int(proj + self._mix_flops(L))
