"""``gated_conv``: a short convolution gated by a projection of the input (BaseConv).

Zoology's BaseConv (Arora et al. 2023) and the short-conv half of H3 (Fu et al. 2023) and
Hyena (Poli et al. 2023) multiply a convolution of the input elementwise by a projection of
the same input. That multiplicative interaction lets a static kernel select content (the
gate is a function of the token, the taps are not), which an ungated ``conv`` cannot::

  g, u = Linear(x)            # [B, L, 2D] split in two
  y = Out(g * conv(u))        # depthwise K taps, then a D x D output projection

The conv is the ``conv`` mixer's depthwise kernel with the same window convention and
receptive-field rule (K = 2w + 1 centred, w + 1 causal; ``conv.conv_offsets``) and the
same implementations (``direct``, ``fft``, ``toeplitz``; ``auto`` picks as ``conv`` does). The
gate is pointwise, so the field is exactly the kernel's. ``impl="dense"`` is the oracle: the
conv as an explicit ``[L, S, D]`` banded Toeplitz matrix (``banded_matrix``), O(L^2 D).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.mixers import presets
from lrm.mixers.base import Mixer, check_int, target, zero_padded
from lrm.mixers.conv import (
  ACC,
  KERNELS,
  conv_offsets,
  depthwise_flops,
  fill_window,
  push_window,
  resolve_impl,
  window_cache,
)
from lrm.registry import register


def banded_matrix(w: jax.Array, length: int, left: int, dilation: int = 1) -> jax.Array:
  """Oracle of a depthwise conv: ``w [K, D] -> [L, S, D]`` with ``out[i, j] = w[k]`` where
  ``j = i - left + k * dilation`` (0 elsewhere), so that ``y = einsum("LSD,BSD->BLD", out, x)``.

  K=2, left=1 (causal), L=3, one channel::

    w1 0  0
    w0 w1 0
    0  w0 w1
  """
  K = w.shape[0]
  off = np.arange(length)[None, :] - np.arange(length)[:, None] + left  # [L, S]
  tap = off // dilation
  inside = (off >= 0) & (off % dilation == 0) & (tap < K)
  band = jnp.take(w, np.where(inside, tap, 0), axis=0)  # [L, S, D]
  return jnp.where(inside[..., None], band, jnp.zeros((), w.dtype))


def dense_conv(x: jax.Array, w: jax.Array, left: int, dilation: int = 1) -> jax.Array:
  """``x [B, L, D]`` through the banded matrix of ``w [K, D]``: float32 ``[B, L, D]``."""
  band = banded_matrix(w.astype(ACC), x.shape[1], left, dilation)  # [L, S, D]
  return jnp.einsum("LSD,BSD->BLD", band, x.astype(ACC))


@register("mixer", "gated_conv")
class GatedConv(Mixer):
  """BaseConv-style gated depthwise convolution: ``[B, L, D] -> [B, L, D]``.

  Args:
    dim: model width D.
    causal: left-padded window (output i sees i-(K-1)*dilation..i) instead of centred.
    kernel_size: taps K.
    dilation: spacing between taps.
    impl: "auto", "direct", "fft", "toeplitz" (the ``conv`` kernels) or "dense" (the oracle).
  """

  IMPLS = ("auto", "direct", "fft", "toeplitz", "dense")

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    kernel_size: int = 3,
    dilation: int = 1,
    impl: str = "auto",
  ):
    super().__init__(dim, causal=causal, layer_idx=layer_idx, impl=impl)
    check_int("gated_conv", "kernel_size", kernel_size, 1)
    check_int("gated_conv", "dilation", dilation, 1)
    self.kernel_size, self.dilation = int(kernel_size), int(dilation)
    self.left, self.right = conv_offsets(self.kernel_size, self.dilation, self.causal)
    self.proj = nnx.Linear(dim, 2 * dim, rngs=rngs)  # gate and conv input
    init = nnx.initializers.normal(kernel_size**-0.5)
    self.kernel = nnx.Param(init(rngs.params(), (kernel_size, dim)))  # [K, D]
    self.bias = nnx.Param(jnp.zeros((dim,)))
    self.out = nnx.Linear(dim, dim, rngs=rngs)

  def choose_impl(self, dtype: jnp.dtype = jnp.float32, length: int | None = None) -> str:
    """``auto``: the ``conv`` kernels' rule (``conv.resolve_impl``)."""
    return resolve_impl(self.requested_impl, self.kernel_size, True, target().platform)

  def receptive_field(self) -> tuple[int, int]:
    return self.left, self.right

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    gate, u = jnp.split(self.proj(x), 2, axis=-1)  # [B, L, D] each
    u = zero_padded(u, mask)  # the projection's bias must not leak from padded tokens
    w, impl = self.kernel[...], self.choose_impl(x.dtype, x.shape[1])
    if impl == "dense":
      y = dense_conv(u, w, self.left, self.dilation)  # [B, L, D] float32
    else:
      y = KERNELS[(True, impl)](u, w, self.left, self.right, self.dilation)
    y = (y + self.bias[...]).astype(x.dtype) * gate
    return self.out(y).astype(x.dtype)

  # ---- decoding: the last (K - 1) * dilation conv inputs u, O(K D) per layer ----

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    if not self.causal:
      raise self.decode_error()
    return window_cache(batch, self.left, (self.dim,), dtype)

  def step(
    self, x: jax.Array, cache: dict[str, jax.Array], pos: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.causal:
      raise self.decode_error()
    gate, u = jnp.split(self.proj(x), 2, axis=-1)  # [B, D] each
    window, cache = push_window(cache, u)  # [B, left + 1, D]
    taps = window[:, :: self.dilation].astype(ACC)  # [B, K, D]
    y = jnp.einsum("BKD,KD->BD", taps, self.kernel[...].astype(ACC))
    y = (y + self.bias[...]).astype(x.dtype) * gate
    return self.out(y).astype(x.dtype), cache

  def prefill(
    self, x: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The parallel forward over the prompt ``x [B, P, D]``; the cache keeps the tail of u."""
    if not self.causal:
      raise self.decode_error()
    u = jnp.split(self.proj(x), 2, axis=-1)[1]  # [B, P, D]
    return self(x), fill_window(cache, u)

  def flops(self, length: int, impl: str | None = None) -> int:
    impl = impl or self.impl
    """Forward FLOPs for one sequence (the dense oracle counts its full L x S band)."""
    L, D = length, self.dim
    if impl == "dense":
      conv = 3 * L * L * D  # the band's select and its matmul
    else:
      conv = depthwise_flops(impl, L, self.kernel_size, self.dilation, D)
    proj = 2 * L * D * 2 * D + 2 * L * D  # input projection and its bias
    out = 2 * L * D * D + L * D
    return int(proj + conv + 2 * L * D + out)  # + conv bias and gate product

  def algorithmic_flops(self, length: int) -> int:
    """The operator's own work (``lrm.analysis.counting``): the direct K-tap count (2KD
    per token, depthwise), whatever kernel runs."""
    return self.flops(length, impl="direct")


presets.register("gated_conv", lambda r: dict(name="gated_conv", kernel_size=r.kernel))
