"""Static 1D convolution kernels of the ``conv`` mixer: shift-and-add, blocked Toeplitz, dense.

All take ``x [B, L, D]``, a kernel ``w [K, D]`` (depthwise) or ``[K, D, E]`` (full) and the
window ``(left, right, dilation)`` of ``conv_offsets``: output i sees inputs
``i - left + k * dilation`` for k in 0..K-1, zero outside the sequence. They accumulate in
float32 (``ACC``) and return float32. The FFT forms are in ``conv_fft.py``.

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
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

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
