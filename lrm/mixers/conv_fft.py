"""FFT forms of the ``conv`` mixer's kernels (same window convention as ``conv_kernels.py``).

The (dilated, flipped) kernel and the input are transformed at a 2,3,5-smooth size
``n >= L + (K-1)*dilation``, multiplied per frequency and transformed back: O(n log n D)
FLOPs, O(n D) memory, any dilation. Beyond ``FFT_CHUNK`` points (or 4x the kernel span) the
depthwise form switches to overlap-save, linear in L: one long FFT costs O(L log L) and its
working set falls out of cache (see the README's benchmarks). Transforms run in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from lrm.mixers.conv_kernels import ACC, dilate

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
  """FFT form of ``conv_kernels.depthwise_direct``; x ``[B, L, D]``, w ``[K, D]``.

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
  """FFT form of ``conv_kernels.full_direct``: per-frequency D x E complex matmul.

  The kernel spectrum is ``[F, D, E]``: memory-hungry for long sequences.
  """
  L, K = x.shape[1], w.shape[0]
  n = fft_size(L, K, dilation)
  g = dilate(w.astype(ACC), dilation)[::-1]  # [span + 1, D, E]
  xf = jnp.fft.rfft(x.astype(ACC), n, axis=1)  # [B, F, D]
  gf = jnp.fft.rfft(g, n, axis=0)  # [F, D, E]
  y = jnp.fft.irfft(jnp.einsum("BFD,FDE->BFE", xf, gf), n, axis=1)  # [B, n, E]
  return y[:, right : right + L]
