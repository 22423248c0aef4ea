"""``conv``: a 1D convolution over the sequence, the CNN baseline of the study.

A static kernel of K taps (spaced ``dilation`` apart) slides over L. Depthwise-separable by
default (per-channel taps, then a pointwise D x D Linear), or a full D x D x K conv. Optional
gating multiplies the output by ``sigmoid(Linear(x))`` (a GLU-style gate, as in H3/Hyena).
The kernel does not depend on the content: this is the "static" end of the conv -> dynamic conv
-> involution -> attention spectrum (see ``dynamic.py``). The window convention (output i sees
``i - left + k * dilation``) is ``conv_kernels.conv_offsets``, shared with ``dynamic.py``.

Implementations (kernels in ``conv_kernels.py`` and ``conv_fft.py``; all accumulate in
float32, output in ``x.dtype``): ``direct`` (shift-and-add, O(L K D)), ``fft`` (O(n log n D),
overlap-save for long L) and ``toeplitz`` (blocked band matmuls, depthwise only).
``auto`` = direct for K <= 16 taps, else fft (cuFFT on GPU, pocketfft on CPU) -- except on
TPU, where toeplitz feeds the MXU and FFTs are slow (reasoned, not measured). We never use
XLA's grouped conv (``feature_group_count``): its gradient is far slower than fft and
toeplitz at long K (``xla_conv`` in the README's benchmarks). The full (non-depthwise)
conv runs ``lax.conv_general_dilated`` (``direct``, a real dense conv, no feature groups) or
``fft``; ``auto`` picks direct for it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lrm.mixers.base import Mixer, check_int, zero_padded
from lrm.mixers.conv_fft import depthwise_fft, fft_flops, fft_plan, fft_size, full_fft
from lrm.mixers.conv_kernels import (
  ACC,
  conv_offsets,
  depthwise_direct,
  depthwise_toeplitz,
  fill_window,
  full_direct,
  push_window,
  toeplitz_shape,
  window_cache,
)
from lrm.registry import register

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
    self._impl = resolve_impl(impl, self.kernel_size, self.depthwise, jax.default_backend())
    fan_in = kernel_size if depthwise else kernel_size * dim
    shape = (kernel_size, dim) if depthwise else (kernel_size, dim, dim)  # [K, D] or [K, D, E]
    self.kernel = nnx.Param(nnx.initializers.normal(fan_in**-0.5)(rngs.params(), shape))
    self.bias = nnx.Param(jnp.zeros((dim,)))
    self.pointwise = nnx.Linear(dim, dim, rngs=rngs) if depthwise else None
    self.gate = nnx.Linear(dim, dim, rngs=rngs) if gate else None

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

  def flops(self, length: int) -> int:
    """Forward FLOPs for one sequence. FFT paths use 2.5 n log2 n per real transform."""
    L, D, K, dil = length, self.dim, self.kernel_size, self.dilation
    if self.depthwise:
      total = depthwise_flops(self._impl, L, K, dil, D)
    elif self._impl == "direct":
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
    impl, self._impl = self._impl, "direct"
    try:
      return self.flops(length)
    finally:
      self._impl = impl
