"""Baselines: what a user would pick instead of an lrm mixer, as registered mixers.

  dpa_full   ``jax.nn.dot_product_attention`` (XLA path) inside the same QKV/output
             projections as the attention mixers; the baseline of the ``global`` preset.
  dpa_local  the same with ``local_window_size=(w, w)`` (``(w, 0)`` causal); the baseline of
             ``local``. XLA's path computes the whole L x L score matrix and only masks it.
             Both take ``implementation="cudnn"`` (cuDNN flash attention, GPU, bfloat16; its
             window is causal only): ``dpa_full:implementation=cudnn``.
  xla_conv   XLA's grouped convolution (what ``nnx.Conv(feature_group_count=D)`` runs) with the
             ``conv`` mixer's bias and pointwise Linear; the baseline of ``conv``.

They are registered (mixers and presets, so they follow the presets' receptive-field rule)
only when ``benchmarks/`` is imported: the package's generic mixer tests never see them.
Each names the preset it is a baseline of (``baseline_of``) and returns that preset's spec at
its own reach (``reference_spec``); the benchmark derives its ratio pairs from the first and
counts the reference's analytic FLOPs as the useful work of the second.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.mixers import Mixer, presets
from lrm.mixers.attention import rotary as rope
from lrm.mixers.base import zero_padded
from lrm.registry import register


class Baseline(Mixer):
  """A benchmark baseline of the preset ``baseline_of`` (not a mixer to train with)."""

  baseline_of: str = ""

  def reference_spec(self) -> dict:
    """The spec of the ``baseline_of`` preset with this baseline's reach."""
    raise NotImplementedError  # abstract: every baseline overrides this


class DotProductAttention(Baseline):
  """QKV/out projections around ``jax.nn.dot_product_attention(implementation="xla")``.

  The projections are laid out as in lrm's attention mixers (one ``[D, 3D]`` Linear split
  into q, k, v, then heads, rotary positions by the same function), so copying a mixer's
  parameters gives the same function.
  """

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    num_heads: int,
    window: int | None,
    rotary: bool = False,
    implementation: str = "xla",
  ):
    name = type(self).registered_name
    if implementation not in ("xla", "cudnn"):
      raise ValueError(f"{name}: implementation must be xla or cudnn, got {implementation!r}")
    self.implementation = implementation
    if num_heads < 1 or dim % num_heads:
      raise ValueError(f"{name}: dim={dim} is not divisible by num_heads={num_heads}; change one")
    self.dim, self.causal, self.num_heads, self.window = dim, causal, num_heads, window
    self.rotary = rotary
    self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
    self.out = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    B, L, D = x.shape
    qkv = self.qkv(x).reshape(B, L, 3 * self.num_heads, D // self.num_heads)  # [B, L, 3N, H]
    q, k, v = jnp.split(qkv, 3, axis=2)  # [B, L, N, H] each
    if self.rotary:
      pos = np.arange(L)
      turn = lambda a: jnp.moveaxis(rope(jnp.moveaxis(a, 1, 2), pos), 2, 1)  # noqa: E731
      q, k = turn(q), turn(k)
    win = None if self.window is None else (self.window, 0 if self.causal else self.window)
    key_mask = None if mask is None else mask[:, None, None, :].astype(bool)  # [B, 1, 1, S]
    y = jax.nn.dot_product_attention(  # [B, L, N, H]
      q,
      k,
      v,
      mask=key_mask,
      is_causal=self.causal,
      local_window_size=win,
      implementation=self.implementation,
    )
    return self.out(y.reshape(B, L, D))

  def flops(self, length: int) -> int:
    """FLOPs of XLA's dense path: projections, then all L x L scores, window or not.

    A multiply-add is 2; softmax is ~5 per score, biases and q-scaling 5 per token-channel.
    """
    L, D = length, self.dim
    rope = 6 * L * D if self.rotary else 0  # q and k: 4 multiplies + 2 adds per pair
    return 8 * L * D * D + 5 * L * D + rope + L * L * (4 * D + 5 * self.num_heads)

  def receptive_field(self) -> tuple[int, int] | None:
    if self.window is None:
      return super().receptive_field()  # the whole sequence (the whole past, if causal)
    return self.window, 0 if self.causal else self.window

  def choose_impl(self, dtype: jnp.dtype = jnp.float32, length: int | None = None) -> str:
    return "xla_dense" if self.implementation == "xla" else "cudnn"


@register("mixer", "dpa_full")
class FullDotProductAttention(DotProductAttention):
  """Full attention through ``jax.nn.dot_product_attention``."""

  baseline_of = "global"

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    num_heads: int = 4,
    rotary: bool = False,
    implementation: str = "xla",
  ):
    super().__init__(
      dim,
      causal=causal,
      rngs=rngs,
      num_heads=num_heads,
      window=None,
      rotary=rotary,
      implementation=implementation,
    )

  def reference_spec(self) -> dict:
    return presets.spec(
      self.baseline_of, heads=self.num_heads, causal=self.causal, rotary=self.rotary
    )


@register("mixer", "dpa_local")
class LocalDotProductAttention(DotProductAttention):
  """Sliding-window attention through ``local_window_size`` (a mask on the full matrix)."""

  baseline_of = "local"

  def __init__(
    self,
    dim: int,
    *,
    causal: bool,
    rngs: nnx.Rngs,
    layer_idx: int = 0,
    window: int = 128,
    num_heads: int = 4,
    rotary: bool = False,
    implementation: str = "xla",
  ):
    super().__init__(
      dim,
      causal=causal,
      rngs=rngs,
      num_heads=num_heads,
      window=window,
      rotary=rotary,
      implementation=implementation,
    )

  def reference_spec(self) -> dict:
    reach = dict(window=self.window, heads=self.num_heads, causal=self.causal, rotary=self.rotary)
    return presets.spec(self.baseline_of, **reach)


@register("mixer", "xla_conv")
class GroupedConv(Baseline):
  """Depthwise conv by XLA's ``feature_group_count``, + bias, + pointwise Linear.

  Output i sees inputs i-(K-1)..i (causal) or ``(K-1)//2`` left and the rest right (XLA's
  ``SAME``), the same taps as the ``conv`` mixer, which computes the same function.
  """

  baseline_of = "conv"

  def __init__(
    self, dim: int, *, causal: bool, rngs: nnx.Rngs, layer_idx: int = 0, kernel_size: int = 3
  ):
    if kernel_size < 1:
      raise ValueError(f"xla_conv: kernel_size must be at least 1, got {kernel_size}")
    self.dim, self.causal, self.kernel_size = dim, causal, kernel_size
    pad = [(kernel_size - 1, 0)] if causal else "SAME"
    self.conv = nnx.Conv(dim, dim, (kernel_size,), feature_group_count=dim, padding=pad, rngs=rngs)
    self.pointwise = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    return self.pointwise(self.conv(zero_padded(x, mask)))  # [B, L, D]

  def flops(self, length: int) -> int:
    L, D = length, self.dim
    return 2 * self.kernel_size * L * D + L * D + 2 * L * D * D + L * D

  def receptive_field(self) -> tuple[int, int]:
    K = self.kernel_size
    return (K - 1, 0) if self.causal else ((K - 1) // 2, K // 2)

  def reference_spec(self) -> dict:
    K = self.kernel_size  # the preset's rule: K = w + 1 causal, 2w + 1 centred
    window = K - 1 if self.causal else (K - 1) // 2
    return presets.spec(self.baseline_of, window=window, causal=self.causal)

  def choose_impl(self, dtype: jnp.dtype = jnp.float32, length: int | None = None) -> str:
    return "xla_grouped_conv"


# The same receptive-field rule as the presets they stand beside.
presets.register(
  "dpa_full", lambda r: dict(name="dpa_full", num_heads=r.heads, rotary=r.rotary), windowed=False
)
presets.register(
  "dpa_local",
  lambda r: dict(name="dpa_local", window=r.window, num_heads=r.heads, rotary=r.rotary),
)
presets.register("xla_conv", lambda r: dict(name="xla_conv", kernel_size=r.kernel))
