"""The step every block-sparse attention kernel shares, with a hand-written VJP.

``attend(q, k, v, biases, extras)``: each of Q query blocks of T queries reads its own U keys
(gathered by the caller: a band of neighbours, random blocks, or the whole sequence for
global rows), with additive score biases (0 allowed, ``MASKED_LOGIT`` not), plus optional
extra score columns whose logits the caller computed (global keys, summary slots). One
softmax spans a row's U keys and all its extra columns; the output is ``P V`` over the U keys
and the extras' probabilities, whose values the caller applies (so their gradients are
ordinary autodiff).

Why a custom VJP: autodiff of a masked softmax re-reads the ``[B, N, Q, T, U]`` scores many
times (selects, the max's and the sum's transposes), the largest tensors of the kernel. The
backward here is FlashAttention's (Dao et al. 2022, arXiv:2205.14135, Algorithm 4, without
its tiling): ``dP = dO V^T``, ``delta = rowsum(dO * O) + rowsum(P_x * dP_x)`` over the
extras, ``dS = P * (dP - delta)``, then ``dQ = dS K``, ``dK = dS^T Q``, ``dV = P^T dO``: three
passes over the scores instead of about ten. Masked entries have ``P = 0`` exactly (``exp``
of a -1e30 logit underflows), so their gradients are exactly zero; a row whose every entry
is masked gets uniform weights: finite, and such rows (padding) are discarded by callers.
Letters follow the legend in ``base.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

F32 = jnp.float32


def _dot(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.einsum(spec, a, b, preferred_element_type=F32)


def _probs(q, k, biases, extras):
  """Softmax over the U keys and the extras: (P [B, N, Q, T, U], P_x per extra)."""
  s = _dot("BNQTH,BNQUH->BNQTU", q, k)
  for b in biases:
    s = s + b
  top = s.max(axis=-1, keepdims=True)  # [B, N, Q, T, 1]
  for x in extras:
    top = jnp.maximum(top, x.max(axis=-1, keepdims=True))
  e = jnp.exp(s - top)
  ex = [jnp.exp(x - top) for x in extras]
  denom = e.sum(axis=-1, keepdims=True)
  for a in ex:
    denom = denom + a.sum(axis=-1, keepdims=True)
  inv = 1.0 / denom  # >= 1 entry of a row is exp(0) = 1: no division by zero
  return e * inv, [a * inv for a in ex]


@jax.custom_vjp
def attend(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  biases: Sequence[jax.Array],
  extras: Sequence[jax.Array],
) -> tuple[jax.Array, list[jax.Array]]:
  """``q [B, N, Q, T, H]`` (pre-scaled), ``k, v [B, N, Q, U, H]``, ``biases``: float32 arrays
  broadcastable to ``[B, N, Q, T, U]`` (added to the scores; not differentiated), ``extras``:
  float32 logits ``[B, N, Q, T, G]`` (masked entries ``MASKED_LOGIT``).

  Returns ``o = P V`` float32 ``[B, N, Q, T, H]`` and the extras' probabilities."""
  return _forward(q, k, v, biases, extras)[0]


def _forward(q, k, v, biases, extras):
  p, px = _probs(q, k, biases, extras)
  o = _dot("BNQTU,BNQUH->BNQTH", p.astype(v.dtype), v)
  return (o, px), (q, k, v, biases, extras, o, px)


def _backward(res, cts):
  q, k, v, biases, extras, o, px = res
  do, dpx = cts
  p, _ = _probs(q, k, biases, extras)  # recomputed: cheaper than storing P on CPU
  dp = _dot("BNQTH,BNQUH->BNQTU", do, v)
  delta = jnp.sum(do * o, axis=-1, keepdims=True)  # [B, N, Q, T, 1]
  for a, da in zip(px, dpx, strict=True):
    delta = delta + jnp.sum(a * da, axis=-1, keepdims=True)
  ds = p * (dp - delta)
  dq = _dot("BNQTU,BNQUH->BNQTH", ds, k).astype(q.dtype)
  dk = _dot("BNQTU,BNQTH->BNQUH", ds, q).astype(k.dtype)
  dv = _dot("BNQTU,BNQTH->BNQUH", p, do).astype(v.dtype)
  dx = [a * (da - delta) for a, da in zip(px, dpx, strict=True)]
  zeros = [jnp.zeros_like(b) for b in biases]
  return dq, dk, dv, type(biases)(zeros), type(extras)(dx)


attend.defvjp(_forward, _backward)


@jax.custom_vjp
def unstack(x: jax.Array) -> tuple[jax.Array, ...]:
  """``x [n, ...]`` -> its n slices along the first axis. The backward stacks the n cotangents
  in one pass; autodiff of indexing pads each into a zero ``[n, ...]`` array and adds them
  (for attention's q, k, v: three passes over ``[3, B, N, L, H]`` and as many copies)."""
  return tuple(x[i] for i in range(x.shape[0]))


unstack.defvjp(lambda x: (unstack(x), None), lambda _, cts: (jnp.stack(cts),))
