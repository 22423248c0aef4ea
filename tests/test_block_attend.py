"""The hand-written VJPs of the block step (``lrm/mixers/attention.py``) against autodiff.

The mixers' oracle tests (``test_attention.py``) compare each kernel with the dense masked
oracle; both go through ``AttentionBase.project``, so ``unstack``'s backward is checked here
on its own, and ``block_attend`` (scores, biases, extra columns) against ``masked_softmax``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from lrm.mixers.attention import block_attend, unstack
from lrm.mixers.base import MASKED_LOGIT
from lrm.mixers.masks import masked_softmax


def _normal(seed, *shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def test_unstack_gradient_equals_autodiff_of_indexing():
  x, r = _normal(0, 3, 2, 5, 4), _normal(1, 3, 2, 5, 4)

  def loss(split, x):
    q, k, v = split(x)
    return jnp.sum(q * r[0] + (k * v) * r[1] + jnp.sin(v) * r[2])

  plain = jax.grad(lambda x: loss(lambda a: (a[0], a[1], a[2]), x))(x)
  fast = jax.jit(jax.grad(lambda x: loss(unstack, x)))(x)
  np.testing.assert_allclose(fast, plain, rtol=1e-6, atol=1e-6)
  # an unused slice gets a zero cotangent
  g = jax.grad(lambda x: jnp.sum(unstack(x)[0] * r[0]))(x)
  np.testing.assert_array_equal(g[1:], 0.0)


def _reference(q, k, v, biases, extras):
  """attend by autodiff-able plain code: ``masked_softmax`` over the biased scores and extras."""
  s = jnp.einsum("BNQTH,BNQUH->BNQTU", q, k) + sum(biases)
  parts = [(s, s > MASKED_LOGIT / 2)] + [(x, x > MASKED_LOGIT / 2) for x in extras]
  probs = masked_softmax(parts)
  return jnp.einsum("BNQTU,BNQUH->BNQTH", probs[0], v), probs[1:]


def test_attend_forward_and_gradients_equal_autodiff():
  """Biases (a shared [T, U] rule and a per-block key bias with masked keys), one extra
  column set with masked entries; cotangents on the output and on the extras' probabilities."""
  B, N, Q, T, U, H, G = 2, 2, 3, 4, 8, 5, 3
  q, k, v = _normal(0, B, N, Q, T, H), _normal(1, B, N, Q, U, H), _normal(2, B, N, Q, U, H)
  rule = np.where(np.arange(U)[None, :] <= np.arange(T)[:, None] + 4, 0.0, MASKED_LOGIT)
  keys = jnp.where(_normal(3, B, 1, Q, 1, U) > -0.8, 0.0, MASKED_LOGIT)
  biases = [jnp.asarray(rule, jnp.float32), keys]
  x = jnp.where(_normal(4, B, N, Q, T, G) > -0.5, _normal(5, B, N, Q, T, G), MASKED_LOGIT)
  ro, rx = _normal(6, B, N, Q, T, H), _normal(7, B, N, Q, T, G)

  def loss(fn, q, k, v, x):
    o, (px,) = fn(q, k, v, biases, [x])
    return jnp.sum(o * ro) + jnp.sum(px * rx), (o, px)

  grads = jax.grad(loss, argnums=(1, 2, 3, 4), has_aux=True)
  (g1, (o1, p1)), (g2, (o2, p2)) = (
    jax.jit(grads, static_argnums=0)(block_attend, q, k, v, x),
    grads(_reference, q, k, v, x),
  )
  np.testing.assert_allclose(o1, o2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)
  for a, b in zip(g1, g2, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  masked = np.asarray(x) == MASKED_LOGIT
  assert not np.asarray(g1[3])[masked].any()  # masked extras get exactly zero gradient
