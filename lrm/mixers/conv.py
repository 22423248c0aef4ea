"""``conv``: a 1D convolution over the sequence, the CNN baseline of the study.

A static kernel of K taps (spaced ``dilation`` apart) slides over L. Depthwise-separable by
default (per-channel taps, then a pointwise D x D Linear), or a full D x D x K conv. Optional
gating multiplies the output by ``sigmoid(Linear(x))`` (a GLU-style gate, as in H3/Hyena).
The kernel does not depend on the content: this is the "static" end of the conv -> dynamic conv
-> involution -> attention spectrum (see ``dynamic.py``). The window convention (output i sees
``i - left + k * dilation``) is ``conv_offsets``, shared with ``dynamic.py``.

Implementations (kernels below; all accumulate in
float32, output in ``x.dtype``): ``direct`` (shift-and-add, O(L K D)), ``fft`` (O(n log n D),
overlap-save for long L) and ``toeplitz`` (blocked band matmuls, depthwise only).
``auto`` = direct for K <= 16 taps, else fft (cuFFT on GPU, pocketfft on CPU) -- except on
TPU, where toeplitz feeds the MXU and FFTs are slow (reasoned, not measured). We never use
XLA's grouped conv (``feature_group_count``): its gradient is far slower than fft and
toeplitz at long K (``xla_conv`` in the README's benchmarks). The full (non-depthwise)
conv runs ``lax.conv_general_dilated`` (``direct``, a real dense conv, no feature groups) or
``fft``; ``auto`` picks direct for it.

Kernels
-------

Static 1D convolution kernels of the ``conv`` mixer: shift-and-add, blocked Toeplitz, dense.

All take ``x [B, L, D]``, a kernel ``w [K, D]`` (depthwise) or ``[K, D, E]`` (full) and the
window ``(left, right, dilation)`` of ``conv_offsets``: output i sees inputs
``i - left + k * dilation`` for k in 0..K-1, zero outside the sequence. They accumulate in
float32 (``ACC``) and return float32. The FFT forms follow them.

  depthwise_direct    shift-and-add over K static slices: O(L K D) FLOPs, O(L D) memory.
                      Hand-written VJP: autodiff of the K slices fuses the K kernel-gradient
                      reductions into one loop that is slow on CPU; a ``lax.scan`` over the
                      taps runs them one by one.
  depthwise_toeplitz  blocks of T outputs; each is a per-channel matmul of a ``[T, U]`` banded
                      Toeplitz matrix (built from the kernel by a pad/tile/reshape skew, no
                      gather) with the ``U = c * T`` inputs it reads, ``c = 1 + ceil(span/T)``.
                      O(L U D) FLOPs. Hand-written VJP: dx is the same op with the kernel
                      flipped, the kernel gradient one batched matmul read along its diagonals
                      (autodiff goes through the skew's transpose and a tap-major layout).
  full_direct         the dense D x E conv, ``lax.conv_general_dilated`` (no feature groups).

FFT kernels
-----------

FFT forms of the ``conv`` mixer's kernels (same window convention as the direct kernels).

The (dilated, flipped) kernel and the input are transformed at a 2,3,5-smooth size
``n >= L + (K-1)*dilation``, multiplied per frequency and transformed back: O(n log n D)
FLOPs, O(n D) memory, any dilation. Beyond ``FFT_CHUNK`` points (or 4x the kernel span) the
depthwise form switches to overlap-save, linear in L: one long FFT costs O(L log L) and its
working set falls out of cache (see the README's benchmarks). Transforms run in float32.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from lrm.mixers.base import Mixer, check_int, target, zero_padded
from lrm.registry import register

# ---- kernels -------------------------------------------------------------------------------------
ACC = jnp.float32  # accumulation dtype of every conv path


def conv_offsets(kernel_size: int, dilation: int, causal: bool) -> tuple[int, int]:
  """(left, right) reach in tokens of a K-tap window with the given dilation.

  Causal: ``left = (K - 1) * dilation``, right = 0. Centred: ``(K - 1) // 2`` taps on the
  left, the rest on the right, so an even K reaches one tap further right (XLA ``SAME``).
  """
  span = (kernel_size - 1) * dilation
  left = span if causal else (kernel_size - 1) // 2 * dilation
  return left, span - left


def dilate(w: jax.Array, dilation: int) -> jax.Array:
  """Insert ``dilation - 1`` zeros between taps: ``[K, ...] -> [(K-1)*dil + 1, ...]``."""
  if dilation == 1:
    return w
  K = w.shape[0]
  wz = jnp.pad(w[:, None], [(0, 0), (0, dilation - 1)] + [(0, 0)] * (w.ndim - 1))  # [K, dil, ...]
  return wz.reshape(K * dilation, *w.shape[1:])[: (K - 1) * dilation + 1]


def pad_len(x: jax.Array, left: int, right: int, value: float | bool = 0) -> jax.Array:
  """Pad axis 1 (the sequence) of ``x [B, L, ...]`` with ``value``."""
  pads = [(0, 0), (left, right)] + [(0, 0)] * (x.ndim - 2)
  return jnp.pad(x, pads, constant_values=value)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_direct(x: jax.Array, w: jax.Array, left: int, right: int, dilation: int) -> jax.Array:
  """``y[:, i] = sum_k w[k] * x[:, i - left + k*dilation]``; x ``[B, L, D]``, w ``[K, D]``."""
  L = x.shape[1]
  xp = pad_len(x, left, right).astype(ACC)  # [B, L + span, D]
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
  xp = pad_len(x, left, right).astype(ACC)  # [B, L + span, D]
  g = g.astype(ACC)

  def tap(_, k):  # one reduction per tap, as its own loop (see module docstring)
    xs = jax.lax.dynamic_slice_in_dim(xp, k * dilation, L, axis=1)  # [B, L, D]
    return None, jnp.sum(g * xs, axis=(0, 1))

  dw = jax.lax.scan(tap, None, jnp.arange(w.shape[0]))[1]  # [K, D]
  return dx, dw.astype(w.dtype)


depthwise_direct.defvjp(_direct_fwd, _direct_bwd)


def toeplitz_block(span: int) -> int:
  """Block size T for a kernel span (K-1)*dil+1: a quarter of it, clamped to [16, 64].

  A small T wastes fewer FLOPs (U / span -> 1) but copies the input c = 1 + span/T times
  into windows and makes more, smaller matmuls; a quarter of the span, clamped, was the
  fastest forward+backward on CPU at a long kernel.
  """
  return int(min(64, max(16, 1 << max(span // 4 - 1, 1).bit_length())))


def skew(u: jax.Array, T: int) -> jax.Array:
  """``[U, D] -> [T, U, D]`` with ``out[t, s] = u[s - t]`` (0 where s < t), by pad/tile/reshape.

  Row t of the tiled buffer starts t entries earlier in a period of U + T, so it is u shifted
  right by t, the wrapped-in entries coming from the zero padding.
  """
  U, D = u.shape
  g = jnp.pad(u, ((0, T), (0, 0)))  # [U + T, D]
  flat = jnp.broadcast_to(g, (T, U + T, D)).reshape(T * (U + T), D)[: T * (U + T - 1)]
  return flat.reshape(T, U + T - 1, D)[:, :U]  # [T, U, D]


def toeplitz_shape(length: int, kernel_size: int, dilation: int) -> tuple[int, int, int]:
  """(T, c, nb): block size, input blocks per output block, number of output blocks."""
  span = (kernel_size - 1) * dilation + 1
  T = toeplitz_block(span)
  return T, 1 + -(-(span - 1) // T), -(-length // T)


def _toeplitz_windows(x: jax.Array, left: int, T: int, c: int, nb: int) -> jax.Array:
  """``[B, L, D] -> [D, B, W, U]``: output block b's inputs = padded blocks b..b+c-1."""
  B, L, D = x.shape
  xp = pad_len(x, left, (nb + c - 1) * T - L - left)  # [B, (W+c-1)*T, D]
  xt = jnp.transpose(xp, (2, 0, 1)).reshape(D, B, nb + c - 1, T)  # channel-major for the matmul
  return jnp.concatenate([xt[:, :, j : j + nb] for j in range(c)], axis=3)  # [D, B, W, U]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_toeplitz(
  x: jax.Array, w: jax.Array, left: int, right: int, dilation: int
) -> jax.Array:
  """Blocked-Toeplitz form of ``depthwise_direct`` (per-channel [T, U] band matmuls)."""
  B, L, D = x.shape
  T, c, nb = toeplitz_shape(L, w.shape[0], dilation)
  U = c * T
  win = _toeplitz_windows(x, left, T, c, nb)  # [D, B, W, U]
  taps = dilate(w, dilation).astype(x.dtype)  # [span, D]
  band = skew(jnp.pad(taps, ((0, U - taps.shape[0]), (0, 0))), T)  # [T, U, D]
  y = jnp.einsum("DBWU,TUD->DBWT", win, band, preferred_element_type=ACC)
  return jnp.transpose(y.reshape(D, B, nb * T), (1, 2, 0))[:, :L]  # [B, L, D]


def _toeplitz_fwd(x, w, left, right, dilation):
  return depthwise_toeplitz(x, w, left, right, dilation), (x, w)


def _toeplitz_bwd(left, right, dilation, res, g):
  x, w = res
  B, L, D = x.shape
  K = w.shape[0]
  span = (K - 1) * dilation + 1
  dx = depthwise_toeplitz(g, w[::-1], right, left, dilation)  # flipped kernel, swapped pads
  T, c, nb = toeplitz_shape(L, K, dilation)
  U = c * T
  gb = jnp.transpose(pad_len(g, 0, nb * T - L), (2, 0, 1)).reshape(D, B, nb, T)  # [D, B, W, T]
  p = jnp.einsum("DBWT,DBWU->DTU", gb, _toeplitz_windows(x, left, T, c, nb))  # band gradient
  # band[t, s] = taps[s - t]: dtaps[r] = sum_t p[t, t + r], read by re-striding rows to U + 1.
  diag = jnp.pad(p.reshape(D, T * U), ((0, 0), (0, T))).reshape(D, T, U + 1)[:, :, :span]
  dw = diag.sum(1)[:, ::dilation].T  # [K, D]
  return dx.astype(x.dtype), dw.astype(w.dtype)


depthwise_toeplitz.defvjp(_toeplitz_fwd, _toeplitz_bwd)


def full_direct(x: jax.Array, w: jax.Array, left: int, right: int, dilation: int) -> jax.Array:
  """Dense conv, ``w: [K, D, E]``, same window convention (XLA conv, no groups)."""
  return jax.lax.conv_general_dilated(
    x,
    w.astype(x.dtype),
    window_strides=(1,),
    padding=[(left, right)],
    rhs_dilation=(dilation,),
    dimension_numbers=("NWC", "WIO", "NWC"),  # XLA's layout letters, not the legend's
    preferred_element_type=ACC,
  )


# ---- decoding: the window of past inputs a causal K-tap conv keeps (O(K D), never L) --------


def window_cache(batch: int, span: int, shape: tuple[int, ...], dtype) -> dict[str, jax.Array]:
  """The cache of a causal window reaching ``span`` tokens back: the last ``span`` inputs,
  ``[B, span, ...]``, zeros before the sequence starts (the parallel forward's zero padding)."""
  return {"window": jnp.zeros((batch, span, *shape), dtype)}


def push_window(cache: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, dict]:
  """Append the current input ``x [B, ...]``: returns the whole window ``[B, span + 1, ...]``
  (oldest first, so entry j is position ``pos - span + j``) and the cache without its oldest."""
  past = cache["window"]
  window = jnp.concatenate([past, x[:, None].astype(past.dtype)], axis=1)
  return window, {"window": window[:, 1:]}


def fill_window(cache: dict[str, jax.Array], u: jax.Array) -> dict[str, jax.Array]:
  """The cache after a prompt ``u [B, P, ...]`` at positions 0..P-1: its last ``span`` inputs,
  zero-padded on the left when the prompt is shorter than the window."""
  past = cache["window"]
  span = past.shape[1]
  if span == 0:
    return {"window": past}
  u = pad_len(u.astype(past.dtype), max(span - u.shape[1], 0), 0)
  return {"window": u[:, u.shape[1] - span :]}


# ---- fft kernels ---------------------------------------------------------------------------------
FFT_CHUNK = 1024  # FFT window: beyond it (or 4x the kernel span), overlap-save, linear in L


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


def fft_size(length: int, kernel_size: int, dilation: int) -> int:
  return next_fast_len(length + (kernel_size - 1) * dilation)


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


def fft_flops(n: int) -> float:
  """Conventional cost of one real FFT of size n: 2.5 n log2 n (half a complex FFT)."""
  return 2.5 * n * math.log2(n)


def depthwise_fft(
  x: jax.Array, w: jax.Array, left: int, right: int, dilation: int, chunk: int = FFT_CHUNK
) -> jax.Array:
  """FFT form of ``depthwise_direct``; x ``[B, L, D]``, w ``[K, D]``.

  Long sequences use overlap-save: W windows of n = step + span inputs, one FFT each,
  keeping the ``step`` outputs that did not wrap around.
  """
  B, L, D = x.shape
  K = w.shape[0]
  span = (K - 1) * dilation
  n, step, chunks = fft_plan(L, K, dilation, chunk)
  # Correlation -> convolution: flip the dilated kernel (length span + 1).
  g = dilate(w.astype(ACC), dilation)[::-1]  # [span + 1, D]
  gf = jnp.fft.rfft(g, n, axis=0)  # [F, D]
  if chunks == 1:
    xf = jnp.fft.rfft(x.astype(ACC), n, axis=1)  # [B, F, D]
    y = jnp.fft.irfft(xf * gf[None], n, axis=1)  # [B, n, D]
    return y[:, right : right + L]
  # xp[i + t] for t in [0, span] feeds output i; pad so that chunks + 1 blocks of `step` fit.
  xp = jnp.pad(x.astype(ACC), ((0, 0), (left, (chunks + 1) * step - L - left), (0, 0)))
  blocks = xp.reshape(B, chunks + 1, step, D)  # [B, W+1, step, D]
  win = jnp.concatenate([blocks[:, :chunks], blocks[:, 1:, :span]], axis=2)  # [B, W, n, D]
  wf = jnp.fft.rfft(win, n, axis=2)  # [B, W, F, D]
  y = jnp.fft.irfft(wf * gf[None, None], n, axis=2)[:, :, span:]  # [B, W, step, D]
  return y.reshape(B, chunks * step, D)[:, :L]


def full_fft(x: jax.Array, w: jax.Array, left: int, right: int, dilation: int) -> jax.Array:
  """FFT form of ``full_direct``: per-frequency D x E complex matmul.

  The kernel spectrum is ``[F, D, E]``: memory-hungry for long sequences.
  """
  L, K = x.shape[1], w.shape[0]
  n = fft_size(L, K, dilation)
  g = dilate(w.astype(ACC), dilation)[::-1]  # [span + 1, D, E]
  xf = jnp.fft.rfft(x.astype(ACC), n, axis=1)  # [B, F, D]
  gf = jnp.fft.rfft(g, n, axis=0)  # [F, D, E]
  y = jnp.fft.irfft(jnp.einsum("BFD,FDE->BFE", xf, gf), n, axis=1)  # [B, n, E]
  return y[:, right : right + L]


# ---- the mixer -----------------------------------------------------------------------------------
DIRECT_MAX_TAPS = 16  # auto: shift-and-add up to this many taps, a long-kernel path beyond

KERNELS = {  # (depthwise, impl) -> kernel
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


def depthwise_flops(impl: str, length: int, kernel_size: int, dilation: int, dim: int) -> float:
  """Forward FLOPs of one depthwise K-tap conv over ``length`` tokens and ``dim`` channels by
  ``impl`` (direct, toeplitz or fft; 2.5 n log2 n per real FFT)."""
  L, K, D = length, kernel_size, dim
  if impl == "direct":
    return 2 * K * L * D
  if impl == "toeplitz":
    T, c, nb = toeplitz_shape(L, K, dilation)
    return 2 * nb * T * c * T * D
  n, _, chunks = fft_plan(L, K, dilation)
  # per window: transforms of x and y and a complex product (6 flops) per frequency;
  # the kernel is transformed once
  return chunks * (fft_flops(n) * 2 * D + 6 * (n // 2 + 1) * D) + fft_flops(n) * D


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

  IMPLS = ("auto", "direct", "fft", "toeplitz")

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
    super().__init__(dim, causal=causal, layer_idx=layer_idx, impl=impl)
    check_int("conv", "kernel_size", kernel_size, 1)
    check_int("conv", "dilation", dilation, 1)
    if impl == "toeplitz" and not depthwise:
      raise ValueError("conv: impl 'toeplitz' needs depthwise=True; use 'direct' or 'fft'")
    self.kernel_size, self.dilation, self.depthwise = (
      int(kernel_size),
      int(dilation),
      bool(depthwise),
    )
    self.left, self.right = conv_offsets(self.kernel_size, self.dilation, self.causal)
    fan_in = kernel_size if depthwise else kernel_size * dim
    shape = (kernel_size, dim) if depthwise else (kernel_size, dim, dim)  # [K, D] or [K, D, E]
    self.kernel = nnx.Param(nnx.initializers.normal(fan_in**-0.5)(rngs.params(), shape))
    self.bias = nnx.Param(jnp.zeros((dim,)))
    self.pointwise = nnx.Linear(dim, dim, rngs=rngs) if depthwise else None
    self.gate = nnx.Linear(dim, dim, rngs=rngs) if gate else None

  def choose_impl(self, dtype: jnp.dtype = jnp.float32, length: int | None = None) -> str:
    """``auto``: ``resolve_impl`` (see the module docstring)."""
    return resolve_impl(self.requested_impl, self.kernel_size, self.depthwise, target().platform)

  def receptive_field(self) -> tuple[int, int]:
    return self.left, self.right

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    h = zero_padded(x, mask)  # [B, L, D]; padded tokens contribute nothing
    conv = KERNELS[(self.depthwise, self.choose_impl(x.dtype, x.shape[1]))]
    y = conv(h, self.kernel[...], self.left, self.right, self.dilation)  # [B, L, D] float32
    y = (y + self.bias[...]).astype(x.dtype)
    if self.pointwise is not None:
      y = self.pointwise(y)
    if self.gate is not None:
      y = y * jax.nn.sigmoid(self.gate(h))
    return y.astype(x.dtype)

  # ---- decoding: the last (K - 1) * dilation inputs, O(K D) per layer ----

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    if not self.causal:
      raise self.decode_error()
    return window_cache(batch, self.left, (self.dim,), dtype)

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.causal:
      raise self.decode_error()
    window, cache = push_window(cache, x)  # [B, left + 1, D]
    taps = window[:, :: self.dilation].astype(ACC)  # [B, K, D]
    w = self.kernel[...].astype(ACC)
    if self.depthwise:
      y = jnp.einsum("BKD,KD->BD", taps, w)
    else:
      y = jnp.einsum("BKD,KDE->BE", taps, w)
    y = (y + self.bias[...]).astype(x.dtype)  # [B, D]
    if self.pointwise is not None:
      y = self.pointwise(y)
    if self.gate is not None:
      y = y * jax.nn.sigmoid(self.gate(x))
    return y.astype(x.dtype), cache

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The parallel forward over the prompt ``x [B, P, D]``; the cache keeps its tail."""
    if not self.causal:
      raise self.decode_error()
    return self(x), fill_window(cache, x)

  def flops(self, length: int, impl: str | None = None) -> int:
    """Forward FLOPs for one sequence. FFT paths use 2.5 n log2 n per real transform."""
    L, D, K, dil, impl = length, self.dim, self.kernel_size, self.dilation, impl or self.impl
    if self.depthwise:
      total = depthwise_flops(impl, L, K, dil, D)
    elif impl == "direct":
      total = 2 * K * L * D * D
    else:
      n = fft_size(L, K, dil)
      # transforms of x and y, a complex multiply-add (8) per frequency and channel pair,
      # and the D x D kernels' transforms
      total = fft_flops(n) * 2 * D + 8 * (n // 2 + 1) * D * D + fft_flops(n) * D * D
    total += L * D  # bias
    if self.pointwise is not None:
      total += 2 * L * D * D + L * D
    if self.gate is not None:
      total += 2 * L * D * D + 3 * L * D  # matmul, bias, sigmoid, product
    return int(total)

  def algorithmic_flops(self, length: int) -> int:
    """The operator's own work (``lrm.analysis.counting``): the direct K-tap count (2KD
    per token, depthwise), whatever kernel runs."""
    return self.flops(length, impl="direct")
