"""``conv``: a 1D convolution over the sequence, the CNN baseline of the study.

A static kernel of K taps (spaced ``dilation`` apart) slides over L. Depthwise-separable by
default (per-channel taps, then a pointwise D x D Linear), or a full D x D x K conv. Optional
gating multiplies the output by ``sigmoid(Linear(x))`` (a GLU-style gate, as in H3/Hyena).
The kernel does not depend on the content: this is the "static" end of the conv -> dynamic conv
-> involution -> attention spectrum (see ``dynamic.py``).

Conventions (shared with ``dynamic.py``): output i sees inputs ``i - left + k * dilation`` for
k in 0..K-1. Causal: ``left = (K - 1) * dilation``, right = 0. Centred: ``(K - 1) // 2`` taps
on the left, the rest on the right, so an even K reaches one tap further right (XLA ``SAME``).

Implementations of the depthwise conv (all accumulate in float32, output in ``x.dtype``):
  direct    shift-and-add over K static slices, O(L K D) FLOPs, O(L D) memory; any dilation.
            Its VJP is hand-written: autodiff of the K slices fuses K reductions into one slow
            loop on CPU (4 ms/tap at L=4096, D=256), a ``lax.scan`` over taps does 0.4 ms/tap.
  fft       rfft of x and the (dilated) kernel at n >= L + (K-1)*dilation (next 2,3,5-smooth
            size), multiply, irfft, slice. O(n log n D) FLOPs, O(n D) memory; any dilation.
  toeplitz  blocks of T outputs; each block is a per-channel matmul of a [T, S] banded Toeplitz
            matrix (built from the kernel by a pad/tile/reshape skew, no gather) with the S
            inputs it needs. O(L S D) FLOPs with S = T * (1 + ceil((K-1)*dil / T)), O(L S D / T)
            memory for the windows. Hand-written VJP: dx is the same op, kernel flipped; the
            kernel gradient is one more batched matmul read along its diagonals.
We never use XLA's grouped conv (``feature_group_count``): on CPU at K=257, L=4096, D=256 its
fwd+bwd took 2.2 s against 21 ms (fft) and 0.11 s (toeplitz). ``auto`` = direct for K <= 16
taps, else fft (measured fastest on CPU at every L tried; cuFFT on GPU) -- except on TPU, where
toeplitz feeds the MXU and FFTs are slow (reasoned, not measured). The full (non-depthwise)
conv runs ``lax.conv_general_dilated`` (``direct``, a real dense conv, no feature groups) or
``fft`` (its kernel spectrum is [n/2+1, D, D]: memory-hungry); ``auto`` picks direct for it.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.mixers.base import Mixer, zero_padded
from lrm.registry import register

IMPLS = ("auto", "direct", "fft", "toeplitz")
DIRECT_MAX_TAPS = 16  # auto: shift-and-add up to this many taps, a long-kernel path beyond
ACC = jnp.float32  # accumulation dtype of every conv path


def conv_offsets(kernel_size: int, dilation: int, causal: bool) -> tuple[int, int]:
  """(left, right) reach in tokens of a K-tap window with the given dilation."""
  span = (kernel_size - 1) * dilation
  left = span if causal else (kernel_size - 1) // 2 * dilation
  return left, span - left


def next_fast_len(n: int) -> int:
  """Smallest 2,3,5-smooth integer >= n (FFT sizes that pocketfft/cuFFT handle fastest)."""
  best = 1 << max(n - 1, 0).bit_length()
  p5 = 1
  while p5 < best:
    p35 = p5
    while p35 < best:
      p = p35
      while p < n:
        p *= 2
      best = min(best, p)
      p35 *= 3
    p5 *= 5
  return best


def dilate(w: jax.Array, dilation: int) -> jax.Array:
  """Insert ``dilation - 1`` zeros between taps: ``[K, ...] -> [(K-1)*dil + 1, ...]``."""
  if dilation == 1:
    return w
  K = w.shape[0]
  wz = jnp.pad(w[:, None], [(0, 0), (0, dilation - 1)] + [(0, 0)] * (w.ndim - 1))  # [K, dil, ...]
  return wz.reshape(K * dilation, *w.shape[1:])[: (K - 1) * dilation + 1]


def _pad_len(x: jax.Array, left: int, right: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (left, right), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_direct(x: jax.Array, w: jax.Array, left: int, right: int, dilation: int) -> jax.Array:
  """``y[:, i] = sum_k w[k] * x[:, i - left + k*dilation]``; x ``[B, L, D]``, w ``[K, D]``."""
  L = x.shape[1]
  xp = _pad_len(x, left, right).astype(ACC)  # [B, L + span, D]
  y = jnp.zeros(x.shape, ACC)
  for k in range(w.shape[0]):
    y = y + xp[:, k * dilation : k * dilation + L] * w[k].astype(ACC)
  return y


def _direct_fwd(x, w, left, right, dilation):
  return depthwise_direct(x, w, left, right, dilation), (x, w)


def _direct_bwd(left, right, dilation, res, g):
  x, w = res
  L = x.shape[1]
  # dx is the same conv with the kernel flipped and the padding swapped.
  dx = depthwise_direct(g, w[::-1], right, left, dilation).astype(x.dtype)
  xp = _pad_len(x, left, right).astype(ACC)  # [B, L + span, D]
  g = g.astype(ACC)

  def tap(_, k):  # one reduction per tap, as its own loop (see module docstring)
    xs = jax.lax.dynamic_slice_in_dim(xp, k * dilation, L, axis=1)  # [B, L, D]
    return None, jnp.sum(g * xs, axis=(0, 1))

  dw = jax.lax.scan(tap, None, jnp.arange(w.shape[0]))[1]  # [K, D]
  return dx, dw.astype(w.dtype)


depthwise_direct.defvjp(_direct_fwd, _direct_bwd)


def fft_size(length: int, kernel_size: int, dilation: int) -> int:
  return next_fast_len(length + (kernel_size - 1) * dilation)


FFT_CHUNK = 1024  # FFT window: beyond it (or 4x the kernel span), overlap-save, linear in L


def fft_plan(length: int, kernel_size: int, dilation: int, chunk: int = FFT_CHUNK) -> tuple:
  """``(n, step, chunks)``: one FFT of size n over the whole sequence (``chunks == 1``), or
  overlap-save with FFTs of size n, each giving ``step = n - span`` outputs."""
  span = (kernel_size - 1) * dilation
  n = fft_size(length, kernel_size, dilation)
  if n <= max(chunk, 4 * span):
    return n, length, 1
  n = next_fast_len(max(chunk, 4 * span))
  step = n - span
  return n, step, -(-length // step)


def depthwise_fft(
  x: jax.Array, w: jax.Array, left: int, right: int, dilation: int, chunk: int = FFT_CHUNK
) -> jax.Array:
  """FFT form of ``depthwise_direct`` (float32 transforms).

  Long sequences use overlap-save: windows of n = step + span inputs, one FFT each, keeping
  the ``step`` outputs that did not wrap around; one long FFT would cost O(L log L) and fall
  out of cache (measured on CPU: 2.6-2.9x time per doubling of L beyond 8K; with 1024-point
  windows, linear).
  """
  B, L, D = x.shape
  K = w.shape[0]
  span = (K - 1) * dilation
  n, step, chunks = fft_plan(L, K, dilation, chunk)
  # Correlation -> convolution: flip the dilated kernel (length span + 1).
  g = dilate(w.astype(ACC), dilation)[::-1]  # [span + 1, D]
  gf = jnp.fft.rfft(g, n, axis=0)  # [n//2+1, D]
  if chunks == 1:
    xf = jnp.fft.rfft(x.astype(ACC), n, axis=1)  # [B, n//2+1, D]
    y = jnp.fft.irfft(xf * gf[None], n, axis=1)  # [B, n, D]
    return y[:, right : right + L]
  # xp[i + t] for t in [0, span] feeds output i; pad so that chunks + 1 blocks of `step` fit.
  xp = jnp.pad(x.astype(ACC), ((0, 0), (left, (chunks + 1) * step - L - left), (0, 0)))
  blocks = xp.reshape(B, chunks + 1, step, D)  # [B, W+1, step, D]
  win = jnp.concatenate([blocks[:, :chunks], blocks[:, 1:, :span]], axis=2)  # [B, W, n, D]
  wf = jnp.fft.rfft(win, n, axis=2)  # [B, W, n//2+1, D]
  y = jnp.fft.irfft(wf * gf[None, None], n, axis=2)[:, :, span:]  # [B, W, step, D]
  return y.reshape(B, chunks * step, D)[:, :L]


def toeplitz_block(span: int) -> int:
  """Block size T for a kernel span (K-1)*dil+1: a quarter of it, clamped to [16, 64].

  Measured fwd+bwd at D=256, K=257, L=4096 (single-thread CPU): T=32/64/128/256 took
  108/99/131/281 ms. Small T wastes fewer FLOPs (S/span -> 1) but copies the input
  c = 1 + span/T times into windows and makes more, smaller matmuls.
  """
  return int(min(64, max(16, 1 << max(span // 4 - 1, 1).bit_length())))


def skew(u: jax.Array, T: int) -> jax.Array:
  """``[S, D] -> [T, S, D]`` with ``out[t, s] = u[s - t]`` (0 where s < t), by pad/tile/reshape.

  Row t of the tiled buffer starts t entries earlier in a period of S + T, so it is u shifted
  right by t, the wrapped-in entries coming from the zero padding.
  """
  S, D = u.shape
  g = jnp.pad(u, ((0, T), (0, 0)))  # [S + T, D]
  flat = jnp.broadcast_to(g, (T, S + T, D)).reshape(T * (S + T), D)[: T * (S + T - 1)]
  return flat.reshape(T, S + T - 1, D)[:, :S]  # [T, S, D]


def toeplitz_shape(length: int, kernel_size: int, dilation: int) -> tuple[int, int, int]:
  """(T, c, nb): block size, input blocks per output block, number of output blocks."""
  span = (kernel_size - 1) * dilation + 1
  T = toeplitz_block(span)
  return T, 1 + -(-(span - 1) // T), -(-length // T)


def _toeplitz_windows(x: jax.Array, left: int, T: int, c: int, nb: int) -> jax.Array:
  """``[B, L, D] -> [D, B, W, S]``: output block b's inputs = padded blocks b..b+c-1."""
  B, L, D = x.shape
  xp = _pad_len(x, left, (nb + c - 1) * T - L - left)  # [B, (nb+c-1)*T, D]
  xt = jnp.transpose(xp, (2, 0, 1)).reshape(D, B, nb + c - 1, T)  # channel-major for the matmul
  return jnp.concatenate([xt[:, :, j : j + nb] for j in range(c)], axis=3)  # [D, B, W, S]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_toeplitz(
  x: jax.Array, w: jax.Array, left: int, right: int, dilation: int
) -> jax.Array:
  """Blocked-Toeplitz form of ``depthwise_direct`` (per-channel [T, S] band matmuls)."""
  B, L, D = x.shape
  T, c, nb = toeplitz_shape(L, w.shape[0], dilation)
  S = c * T
  win = _toeplitz_windows(x, left, T, c, nb)  # [D, B, W, S]
  u = dilate(w, dilation).astype(x.dtype)
  band = skew(jnp.pad(u, ((0, S - u.shape[0]), (0, 0))), T)  # [T, S, D]
  y = jnp.einsum("DBWS,TSD->DBWT", win, band, preferred_element_type=ACC)
  return jnp.transpose(y.reshape(D, B, nb * T), (1, 2, 0))[:, :L]  # [B, L, D]


def _toeplitz_fwd(x, w, left, right, dilation):
  return depthwise_toeplitz(x, w, left, right, dilation), (x, w)


def _toeplitz_bwd(left, right, dilation, res, g):
  # Hand-written: autodiff's band gradient goes through the skew's transpose and a
  # tap-major layout, 1.6x slower overall (single-thread CPU, K=257, L=4096, D=256).
  x, w = res
  B, L, D = x.shape
  K = w.shape[0]
  span = (K - 1) * dilation + 1
  dx = depthwise_toeplitz(g, w[::-1], right, left, dilation)  # flipped kernel, swapped pads
  T, c, nb = toeplitz_shape(L, K, dilation)
  S = c * T
  gb = jnp.transpose(_pad_len(g, 0, nb * T - L), (2, 0, 1)).reshape(D, B, nb, T)  # [D, B, W, T]
  p = jnp.einsum("DBWT,DBWS->DTS", gb, _toeplitz_windows(x, left, T, c, nb))  # band gradient
  # band[t, s] = u[s - t]: du[r] = sum_t p[t, t + r], read by re-striding rows to S + 1.
  diag = jnp.pad(p.reshape(D, T * S), ((0, 0), (0, T))).reshape(D, T, S + 1)[:, :, :span]
  dw = diag.sum(1)[:, ::dilation].T  # [K, D]
  return dx.astype(x.dtype), dw.astype(w.dtype)


depthwise_toeplitz.defvjp(_toeplitz_fwd, _toeplitz_bwd)


def full_direct(x: jax.Array, w: jax.Array, left: int, right: int, dilation: int) -> jax.Array:
  """Dense conv, ``w: [K, D_in, D_out]``, same window convention (XLA conv, no groups)."""
  return jax.lax.conv_general_dilated(
    x,
    w.astype(x.dtype),
    window_strides=(1,),
    padding=[(left, right)],
    rhs_dilation=(dilation,),
    dimension_numbers=("NWC", "WIO", "NWC"),
    preferred_element_type=ACC,
  )


def full_fft(x: jax.Array, w: jax.Array, left: int, right: int, dilation: int) -> jax.Array:
  """FFT form of ``full_direct``: per-frequency D x D complex matmul."""
  L, K = x.shape[1], w.shape[0]
  n = fft_size(L, K, dilation)
  g = dilate(w.astype(ACC), dilation)[::-1]  # [Kd, D, D]
  xf = jnp.fft.rfft(x.astype(ACC), n, axis=1)  # [B, F, D]
  gf = jnp.fft.rfft(g, n, axis=0)  # [F, D, D]
  y = jnp.fft.irfft(jnp.einsum("BFD,FDE->BFE", xf, gf), n, axis=1)  # [B, n, D]
  return y[:, right : right + L]


KERNELS = {
  (True, "direct"): depthwise_direct,
  (True, "fft"): depthwise_fft,
  (True, "toeplitz"): depthwise_toeplitz,
  (False, "direct"): full_direct,
  (False, "fft"): full_fft,
}


def resolve_impl(impl: str, kernel_size: int, depthwise: bool, backend: str) -> str:
  """The path ``auto`` picks (see module docstring); explicit names pass through."""
  if impl != "auto":
    return impl
  if not depthwise or kernel_size <= DIRECT_MAX_TAPS:
    return "direct"
  return "toeplitz" if backend == "tpu" else "fft"


def fft_flops(n: int) -> float:
  """Conventional cost of one real FFT of size n: 2.5 n log2 n (half a complex FFT)."""
  return 2.5 * n * math.log2(n)


def _check_int(name: str, value: object, low: int) -> None:
  if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
    raise ValueError(f"conv option {name} must be an integer >= {low}, got {value!r}")


@register("mixer", "conv")
class Conv(Mixer):
  """1D convolution mixer: ``[B, L, D] -> [B, L, D]`` (see module docstring).

  Args:
    dim: model width D.
    causal: left-padded window (output i sees i-(K-1)*dilation..i) instead of centred.
    kernel_size: number of taps K.
    dilation: spacing between taps.
    depthwise: per-channel taps + pointwise Linear (True) or a full D x D x K conv (False).
    gate: multiply the output by ``sigmoid(Linear(x))``.
    impl: "auto", "direct", "fft" or "toeplitz" (depthwise only).
  """

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    kernel_size: int = 3,
    dilation: int = 1,
    depthwise: bool = True,
    gate: bool = False,
    impl: str = "auto",
  ):
    _check_int("dim", dim, 1)
    _check_int("kernel_size", kernel_size, 1)
    _check_int("dilation", dilation, 1)
    if impl not in IMPLS:
      raise ValueError(f"conv impl '{impl}' is unknown; choose one of {', '.join(IMPLS)}")
    if impl == "toeplitz" and not depthwise:
      raise ValueError("conv impl 'toeplitz' needs depthwise=True; use 'direct' or 'fft'")
    self.dim, self.causal, self.layer_idx = dim, bool(causal), layer_idx
    self.kernel_size, self.dilation = int(kernel_size), int(dilation)
    self.depthwise, self.requested_impl = bool(depthwise), impl
    self.left, self.right = conv_offsets(self.kernel_size, self.dilation, self.causal)
    self._impl = resolve_impl(impl, self.kernel_size, self.depthwise, jax.default_backend())
    fan_in = kernel_size if depthwise else kernel_size * dim
    shape = (kernel_size, dim) if depthwise else (kernel_size, dim, dim)
    self.kernel = nnx.Param(nnx.initializers.normal(fan_in**-0.5)(rngs.params(), shape))
    self.bias = nnx.Param(jnp.zeros((dim,)))
    self.pointwise = nnx.Linear(dim, dim, rngs=rngs) if depthwise else None
    self.gate = nnx.Linear(dim, dim, rngs=rngs) if gate else None

  @property
  def impl(self) -> str:
    return self._impl

  def receptive_field(self) -> tuple[int, int]:
    return self.left, self.right

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    h = zero_padded(x, mask)  # [B, L, D]; padded tokens contribute nothing
    conv = KERNELS[(self.depthwise, self._impl)]
    y = conv(h, self.kernel[...], self.left, self.right, self.dilation)  # [B, L, D] float32
    y = (y + self.bias[...]).astype(x.dtype)
    if self.pointwise is not None:
      y = self.pointwise(y)
    if self.gate is not None:
      y = y * jax.nn.sigmoid(self.gate(h))
    return y.astype(x.dtype)

  def flops(self, length: int) -> int:
    """Forward FLOPs for one sequence. FFT paths use 2.5 n log2 n per real transform."""
    L, D, K, dil = length, self.dim, self.kernel_size, self.dilation
    if self._impl == "direct":
      taps = 2 * K * L * D
      total = taps * D if not self.depthwise else taps
    elif self._impl == "toeplitz":
      T, c, nb = toeplitz_shape(L, K, dil)
      total = 2 * nb * T * c * T * D
    else:
      n, _, chunks = fft_plan(L, K, dil) if self.depthwise else (fft_size(L, K, dil), L, 1)
      F = n // 2 + 1
      kernels = D if self.depthwise else D * D
      # Per window: transforms of x and y, and the complex product per frequency (6 flops
      # depthwise, 8 per multiply-add full); the kernel is transformed once.
      per_window = fft_flops(n) * 2 * D + (6 if self.depthwise else 8) * F * kernels
      total = chunks * per_window + fft_flops(n) * kernels
    total += L * D  # bias
    if self.pointwise is not None:
      total += 2 * L * D * D + L * D
    if self.gate is not None:
      total += 2 * L * D * D + 3 * L * D  # matmul, bias, sigmoid, product
    return int(total)
