"""One decode-benchmark cell: a model's jitted decode step at one batch size and context.

``benchmarks/decode.py`` says what is measured and why; this module holds the step, the cache
fill and the cell's timing loop.
"""

from __future__ import annotations

import os
import time
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx


def loadavg() -> list[float]:
  return [round(v, 2) for v in os.getloadavg()]


@partial(jax.jit, static_argnums=0, donate_argnums=3)
def _step(graphdef, state, tokens, cache, pos):
  """One generated token per sequence: ``tokens [B]`` at ``pos`` -> (next tokens, cache)."""
  model = nnx.merge(graphdef, state)
  h, cache = model.encoder.decode_step(tokens, cache, pos)  # [B, D]
  return jnp.argmax(model.logits(h), axis=-1).astype(jnp.int32), cache  # [B]


@jax.jit
def _random_fill(cache, key):
  """Every floating array of the cache filled with N(0, 1) values (ints and flags kept): a
  block of 4093 draws repeated (drawing gigabytes would take longer than the steps)."""
  leaves, tree = jax.tree.flatten(cache)
  keys = jax.random.split(key, len(leaves))
  out = [
    jnp.resize(jax.random.normal(k, (min(a.size, 4093),), a.dtype), a.shape)
    if jnp.issubdtype(a.dtype, jnp.floating)
    else a
    for k, a in zip(keys, leaves, strict=True)
  ]
  return jax.tree.unflatten(tree, out)


class Cell:
  """One (batch, context) decode cell of one model: its cache, compiled step and timings."""

  def __init__(
    self, graphdef, state, batch: int, ctx: int, *, sample_ms: float, span: int,
    cover_budget_s: float, repeats: int,
  ):  # fmt: skip
    self.graphdef, self.state, self.batch, self.ctx = graphdef, state, batch, ctx
    model = nnx.merge(graphdef, state)
    # Positions cycle over ctx .. ctx+span-1: a mixer whose step cost depends on the position
    # (hyena adds a finished block of C tokens by an FFT every C steps) is averaged over them.
    self.span = max(1, min(span, ctx // 8))
    cache = model.encoder.init_cache(batch, ctx + self.span)
    self.cache = jax.block_until_ready(_random_fill(cache, jax.random.key(ctx)))
    self.tokens = jnp.zeros((batch,), jnp.int32)
    self.positions = [jnp.asarray(ctx + i, jnp.int32) for i in range(self.span)]
    self.i = 0
    t0 = time.perf_counter()
    self.run(1)  # compiles (a cache of another length is another shape)
    self.compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    self.run(1)
    step_s = max(time.perf_counter() - t0, 1e-6)
    self.n = max(1, round(sample_ms / 1e3 / step_s))
    if step_s * self.span <= cover_budget_s:  # cheap steps: cover every position
      self.n = max(self.n, -(-self.span // repeats))
    self.samples_ms: list[float] = []
    self.load: list[list[float]] = [loadavg()]

  def run(self, n: int) -> None:
    for _ in range(n):
      pos = self.positions[self.i % self.span]
      self.tokens, self.cache = _step(self.graphdef, self.state, self.tokens, self.cache, pos)
      self.i += 1
    jax.block_until_ready(self.tokens)

  def sample(self, timed: bool) -> None:
    self.run(1)  # untimed: the first step after another cell's finds cold CPU caches
    t0 = time.perf_counter()
    self.run(self.n)
    if timed:
      self.samples_ms.append(1e3 * (time.perf_counter() - t0) / self.n)
