"""Baselines for the benchmark: what a user would pick instead of the lrm mixers.

``dpa_full`` / ``dpa_local`` wrap ``jax.nn.dot_product_attention`` (XLA path, with
``local_window_size=(w, w)`` for the local one) in the same QKV/output projections as the
attention mixers; ``xla_conv`` is XLA's grouped (depthwise) convolution with the same
pointwise Linear as the ``conv`` mixer. They are not registered mixers (so the generic mixer
tests never see them) but follow the same call/``flops``/``impl`` contract.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lrm import mixers

BASELINES = ("dpa_full", "dpa_local", "xla_conv")


def baseline_spec(name: str, overrides: dict[str, Any], *, heads: int, window: int) -> dict:
  """Spec of a baseline with the CLI's window/heads, validated against its options."""
  spec: dict[str, Any] = {"name": name}
  if name.startswith("dpa_"):
    spec["num_heads"] = heads
  if name == "dpa_local":
    spec["window"] = window
  if name == "xla_conv":
    spec["kernel_size"] = 2 * window + 1
  unknown = sorted(set(overrides) - set(spec))
  if unknown:
    raise ValueError(f"baseline '{name}' takes only {sorted(set(spec) - {'name'})}: {unknown}")
  return spec | overrides


class DotProductAttention(nnx.Module):
  """QKV/out projections around ``jax.nn.dot_product_attention`` (XLA path).

  The XLA path materialises the full [L, S] score matrix even with ``local_window_size``
  (it only masks), which is exactly what the blocked mixers are compared against.
  """

  def __init__(self, dim: int, *, num_heads: int, window: int | None, causal: bool, rngs):
    if dim % num_heads:
      raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}; change one")
    self.dim, self.num_heads, self.window, self.causal = dim, num_heads, window, causal
    self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
    self.out = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    B, L, D = x.shape
    qkv = self.qkv(x).reshape(B, L, 3 * self.num_heads, D // self.num_heads)  # [B, L, 3N, H]
    q, k, v = jnp.split(qkv, 3, axis=2)  # [B, L, N, H] each
    win = None if self.window is None else (self.window, 0 if self.causal else self.window)
    key_mask = None if mask is None else mask[:, None, None, :]  # [B, 1, 1, S]
    y = jax.nn.dot_product_attention(  # [B, L, N, H]
      q, k, v, mask=key_mask, is_causal=self.causal, local_window_size=win, implementation="xla"
    )
    return self.out(y.reshape(B, L, D))

  def flops(self, length: int) -> int:
    """FLOPs XLA's dense path does: projections, then all L x L scores (window or not).

    A multiply-add is 2; softmax is ~5 per score, biases and q-scaling 5 per token-channel.
    """
    L, D = length, self.dim
    return 8 * L * D * D + 5 * L * D + L * L * (4 * D + 5 * self.num_heads)

  def num_params(self) -> int:
    return mixers.param_count(self)

  @property
  def impl(self) -> str:
    return "xla_dense"


class GroupedConv(nnx.Module):
  """Depthwise conv by XLA's ``feature_group_count`` + bias + pointwise Linear."""

  def __init__(self, dim: int, *, kernel_size: int, causal: bool, rngs):
    self.dim, self.kernel_size = dim, kernel_size
    pad = [(kernel_size - 1, 0)] if causal else "SAME"
    self.conv = nnx.Conv(dim, dim, (kernel_size,), feature_group_count=dim, padding=pad, rngs=rngs)
    self.pointwise = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    if mask is not None:
      x = jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))  # padding must not leak in
    return self.pointwise(self.conv(x))  # [B, L, D]

  def flops(self, length: int) -> int:
    L, D = length, self.dim
    return 2 * self.kernel_size * L * D + L * D + 2 * L * D * D + L * D

  def num_params(self) -> int:
    return mixers.param_count(self)

  @property
  def impl(self) -> str:
    return "xla_grouped_conv"


def reference_spec(spec: dict) -> dict | None:
  """The efficient lrm mixer computing the same thing as a dense one (None: ``spec`` is it).

  Its analytic FLOPs are the "useful" work: what the pattern needs, without the masked-out
  scores a dense implementation also computes.
  """
  if spec["name"] == "dpa_full":
    return {"name": "global", "num_heads": spec["num_heads"]}
  if spec["name"] == "dpa_local":
    return {"name": "local", "window": spec["window"], "num_heads": spec["num_heads"]}
  if spec.get("impl") == "dense":
    return {k: v for k, v in spec.items() if k != "impl"}
  return None


def build_module(spec: dict, *, dim: int, causal: bool, rngs: nnx.Rngs) -> nnx.Module:
  """A registered mixer or a baseline from its spec."""
  opts = {k: v for k, v in spec.items() if k != "name"}
  if spec["name"] in ("dpa_full", "dpa_local"):
    return DotProductAttention(dim, causal=causal, rngs=rngs, **({"window": None} | opts))
  if spec["name"] == "xla_conv":
    return GroupedConv(dim, causal=causal, rngs=rngs, **opts)
  return mixers.build(spec, dim=dim, causal=causal, rngs=rngs, layer_idx=0)
