"""Decoding for ``hyena``, exact, with the long convolution cut into blocks of T tokens.

The implicit filter has no finite recurrent form, so output t needs every past input:
``y_t = sum_{j <= t} h[t - j] z_j``. Summing that at every step costs O(L D) per token. Here
the past is split at the start of the current block of T tokens (an online convolution in the
manner of FutureFill, Agarwal et al. 2024):

* ``future [S, B*D]``: for every output position, the sum over the inputs of the blocks
  already completed. When a block completes, its T inputs are convolved with the whole filter
  by one FFT of size ``n >= S + T - 1`` and added to every later position.
* ``block [T, B*D]``: the current block's inputs; a step adds their T terms directly.

So a step costs O(T D), plus, at the last token of each block, O(S log S D): about
O(sqrt(S log S) D) per token on average with ``T ~ sqrt(S log2 S)``; the memory stays O(S D)
(``future`` replaces the inputs). FFT round-off makes outputs equal to the forward's to
~1e-7 relative, like the forward's own FFT path. The cache also holds the short conv's last
K-1 projections, the filter's first T lags and the transform of the whole filter (the forward
at length ``max_len``: lags are normalised by the length). Rows are ``[S, B*D]``, batch and
channels as one axis (see ``attention_cache.rows`` for why a unit batch axis is avoided).
Letters follow the legend in ``base.py``; S is ``max_len``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from lrm.mixers.conv_fft import next_fast_len
from lrm.mixers.conv_kernels import depthwise_direct, push_window, window_cache

F32 = jnp.float32


def block_size(max_len: int) -> int:
  """T, the tokens per block: the power of two nearest ``sqrt(S log2 S)`` (balances T D per
  token against an FFT of size ~S every T tokens), at most S."""
  target = math.sqrt(max_len * max(math.log2(max_len), 1.0))
  return int(min(max_len, 2 ** round(math.log2(target))))


def _apply(rows: jax.Array, hf: jax.Array, n: int, out_len: int) -> jax.Array:
  """Inputs ``rows [R, B*D]`` at offsets 0..R-1 convolved with a filter whose size-n transform
  is ``hf [F, D]``: ``[out_len, B*D]`` float32 at offsets 0..out_len-1."""
  D = hf.shape[1]
  rf = jnp.fft.rfft(rows.astype(F32), n, axis=0)  # [F, B*D]
  prod = (rf.reshape(rf.shape[0], -1, D) * hf[:, None]).reshape(rf.shape)
  return jnp.fft.irfft(prod, n, axis=0)[:out_len]


def _conv(rows: jax.Array, h: jax.Array, out_len: int) -> jax.Array:
  """``y[t] = sum_{i <= t} h[t - i] rows[i]`` for ``t < out_len``; ``h [>= out_len, D]``."""
  n = next_fast_len(rows.shape[0] + out_len - 1)
  return _apply(rows, jnp.fft.rfft(h[:out_len], n, axis=0), n, out_len)


class HyenaDecoding:
  """``init_cache``, ``step`` and ``prefill`` of ``Hyena`` (a mixin)."""

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    if not self.causal:
      raise self.decode_error()
    S, T = max_len, block_size(max_len)
    h = self.filter(S).astype(F32)  # [S, D], lags 0..S-1
    return {
      "future": jnp.zeros((S, batch * self.dim), F32),  # [S, B*D]
      "block": jnp.zeros((T, batch * self.dim), dtype),  # [T, B*D]
      "filter": h[:T],  # [T, D]
      "filter_f": jnp.fft.rfft(h, next_fast_len(S + T - 1), axis=0),  # [F, D] complex
      **window_cache(batch, self.left, (3 * self.dim,), dtype),
    }

  def _gates(self, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Short-conv outputs ``[..., 3D]`` -> (``x0``, the long conv's input ``z = x1 * v``)."""
    x0, x1, v = jnp.split(u + self.short_bias[...], 3, axis=-1)  # float32
    return x0, x1 * v

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.causal:
      raise self.decode_error()
    window, short = push_window({"window": cache["window"]}, self.proj(x))  # [B, K, 3D]
    x0, z = self._gates(jnp.einsum("BKD,KD->BD", window.astype(F32), self.short[...].astype(F32)))
    (S, _), (T, _), B = cache["future"].shape, cache["block"].shape, x.shape[0]
    c, u = pos // T, pos % T
    block = jax.lax.dynamic_update_slice(
      cache["block"], z.reshape(1, -1).astype(cache["block"].dtype), (u, 0)
    )
    lag = u - jnp.arange(T)  # [T]: rows after u hold the previous block (masked)
    h = jnp.where((lag >= 0)[:, None], cache["filter"][jnp.clip(lag, 0, T - 1)], 0.0)  # [T, D]
    inner = jnp.sum(jnp.tile(h, (1, B)) * block.astype(F32), axis=0)  # [B*D]

    def flush(future: jax.Array) -> jax.Array:  # the completed block into every later row
      n = next_fast_len(S + T - 1)  # as init_cache
      add = jnp.roll(_apply(block, cache["filter_f"], n, S), c * T, axis=0)  # [S, B*D]
      return future + jnp.where((jnp.arange(S) >= (c + 1) * T)[:, None], add, 0.0)

    # a loop that runs once at the block's last token, else never: the buffer stays in place
    # (a lax.cond copied it every step)
    _, future = jax.lax.while_loop(
      lambda carry: carry[0], lambda carry: (False, flush(carry[1])), (u == T - 1, cache["future"])
    )
    # read after the flush, which leaves this block's rows alone (reading before it made XLA
    # copy the buffer to keep the old one alive)
    done = jax.lax.dynamic_index_in_dim(future, pos, 0, keepdims=False)  # [B*D]
    y = (done + inner).reshape(B, -1) + self.skip[...] * z
    out = self.out((x0 * y).astype(x.dtype)).astype(x.dtype)
    new = {"future": future, "block": block, "filter": cache["filter"]}
    return out, {**new, "filter_f": cache["filter_f"], **short}

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A prompt ``x [B, P, D]`` by the parallel forward (with the filter of ``max_len``): the
    completed blocks go into ``future`` in one FFT, the rest into ``block``."""
    if not self.causal:
      raise self.decode_error()
    (B, P, _), (S, _), (T, _) = x.shape, cache["future"].shape, cache["block"].shape
    p = self.proj(x)  # [B, P, 3D]
    x0, z = self._gates(depthwise_direct(p, self.short[...], self.left, self.right, 1))
    rows = jnp.swapaxes(z, 0, 1).reshape(P, -1)  # [P, B*D]
    h = self.filter(S).astype(F32)  # [S, D]
    y = jnp.swapaxes(_conv(rows, h, P).reshape(P, B, -1), 0, 1) + self.skip[...] * z
    out = self.out((x0 * y).astype(x.dtype)).astype(x.dtype)
    full = P // T * T  # inputs of completed blocks
    future = _conv(rows[:full], h, S) if full else cache["future"]
    tail = rows[full:].astype(cache["block"].dtype)  # [P - full, B*D]
    block = jax.lax.dynamic_update_slice_in_dim(cache["block"], tail, 0, 0)
    past = jnp.concatenate([cache["window"], p.astype(cache["window"].dtype)], axis=1)
    new = {"future": future, "block": block, "filter": cache["filter"]}
    return out, {**new, "filter_f": cache["filter_f"], "window": past[:, P:]}
