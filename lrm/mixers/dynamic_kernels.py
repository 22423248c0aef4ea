"""Kernels of ``dynamic_conv`` and ``involution``: per-token taps applied over a K-tap window.

Every function mixes values ``v [B, L, N, H]`` with per-token taps ``w [B, L, N, K]``:
``y[:, i] = sum_k w[:, i, :, k] * v[:, i - left + k]`` (the window of
``conv_kernels.conv_offsets`` with dilation 1), accumulating in float32.

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

from lrm.mixers.conv_kernels import ACC, pad_len, toeplitz_block


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
